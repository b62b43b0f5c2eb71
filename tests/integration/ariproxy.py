"""An ARI man-in-the-middle that a test controls, for races made deterministic.

The agent under test is pointed at the proxy (``AGENT_ARI__URL``); the proxy
forwards every REST request and the events WebSocket to the lab's Asterisk.
A test can:

* ``hold(method, pattern)``: let matching requests reach Asterisk at once but
  keep their *responses* until ``release()`` -- the agent then acts on a
  snapshot older than what happened meanwhile (a reconcile's channel list
  taken before a call arrived), or waits in the middle of something (a call in
  admission while SIGTERM comes);
* ``cut_websockets()``: drop the events connections, as a network blip would;
  ``refuse_websockets()``: and refuse new ones (503) until allowed again, so
  an outage lasts as long as the test wants while REST still goes through.
* ``block(seconds)``: cut the whole link for a while -- the events connections
  are dropped and every request (WebSocket or REST) is refused with 503 until
  the time is up.

It runs its own event loop on a thread, so synchronous tests drive it.
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "upgrade", "host", "content-length"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Hold:
    """Responses to requests matching ``method`` and ``pattern`` (path and query) wait for release()."""

    method: str
    pattern: re.Pattern[str]
    limit: int | None  # hold only the first ``limit`` matches
    proxy: AriProxy
    matched: list[str] = field(default_factory=list)
    _released: bool = False

    def matches(self, method: str, target: str) -> bool:
        if method != self.method or not self.pattern.search(target):
            return False
        return self.limit is None or len(self.matched) < self.limit

    def wait_seen(self, count: int = 1, timeout: float = 30.0) -> None:
        """Block until ``count`` matching requests have been answered by Asterisk and are being held."""
        with self.proxy._cond:
            if not self.proxy._cond.wait_for(lambda: len(self.matched) >= count, timeout):
                seen = len(self.matched)
                raise TimeoutError(f"{self.method} {self.pattern.pattern}: {seen} of {count} seen")

    def release(self) -> None:
        self._released = True
        self.proxy._loop.call_soon_threadsafe(self.proxy._gate_changed.set)


class AriProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.port = _free_port()
        self.requests: list[str] = []
        self._holds: list[Hold] = []
        self._cond = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._gate_changed = asyncio.Event()
        self._sockets: set[web.WebSocketResponse] = set()
        self._refusing = False
        self._blocked_until = 0.0  # the loop's clock
        self._thread = threading.Thread(target=self._loop.run_forever, name="ari-proxy", daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> AriProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def close(self) -> None:
        for hold in self._holds:
            hold.release()
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def hold(self, method: str, pattern: str, *, limit: int | None = None) -> Hold:
        hold = Hold(method.upper(), re.compile(pattern), limit, self)
        with self._cond:
            self._holds.append(hold)
        return hold

    def cut_websockets(self) -> int:
        """Close every events WebSocket the agent has through the proxy; how many were open."""
        return asyncio.run_coroutine_threadsafe(self._cut(), self._loop).result(10)

    def refuse_websockets(self, refuse: bool = True) -> None:
        """While set, events WebSocket upgrades get 503 (counted in ``requests`` as ``WS-REFUSED``)."""
        self._refusing = refuse

    def block(self, seconds: float) -> int:
        """Drop the events WebSockets and refuse everything for ``seconds``; how many sockets were open."""

        async def go() -> int:
            self._blocked_until = self._loop.time() + seconds
            return await self._cut()

        return asyncio.run_coroutine_threadsafe(go(), self._loop).result(10)

    def _blocked(self) -> bool:
        return self._loop.time() < self._blocked_until

    def count(self, method: str, pattern: str) -> int:
        rx = re.compile(pattern)
        with self._cond:
            return sum(1 for r in self.requests if r.startswith(method.upper() + " ") and rx.search(r))

    # -- the loop's side

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_route("GET", "/ari/events", self._events)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _close(self) -> None:
        await self._cut()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _cut(self) -> int:
        sockets = list(self._sockets)
        for ws in sockets:
            await ws.close(code=aiohttp.WSCloseCode.GOING_AWAY)
        return len(sockets)

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        target = request.path_qs
        if self._blocked():
            return web.Response(status=503, text="blocked by the test")
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        async with self._session.request(
            request.method, self.upstream + target, data=body or None, headers=headers
        ) as resp:
            payload = await resp.read()
            status = resp.status
            content_type = resp.headers.get("Content-Type")
        with self._cond:
            self.requests.append(f"{request.method} {target}")
            hold = next((h for h in self._holds if h.matches(request.method, target)), None)
            if hold is not None:
                hold.matched.append(target)
            self._cond.notify_all()
        while hold is not None and not hold._released:
            self._gate_changed.clear()
            if hold._released:
                break
            await self._gate_changed.wait()
        response = web.Response(status=status, body=payload)
        if content_type:
            response.headers["Content-Type"] = content_type
        return response

    async def _events(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        if self._blocked():
            return web.Response(status=503, text="blocked by the test")
        if self._refusing:
            with self._cond:
                self.requests.append(f"WS-REFUSED {request.path_qs}")
                self._cond.notify_all()
            return web.Response(status=503, text="refused by the test")
        headers = {k: v for k, v in request.headers.items() if k.lower() == "authorization"}
        try:
            upstream = await self._session.ws_connect(
                self.upstream + "/ari/events", params=dict(request.query), headers=headers
            )
        except aiohttp.WSServerHandshakeError as exc:
            return web.Response(status=exc.status, text=exc.message)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._sockets.add(ws)
        with self._cond:
            self.requests.append(f"WS {request.path_qs}")
            self._cond.notify_all()

        async def down() -> None:
            async for msg in upstream:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    await ws.send_str(msg.data)
                else:
                    break

        async def up() -> None:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    await upstream.send_str(msg.data)
                else:
                    break

        tasks = [asyncio.create_task(down()), asyncio.create_task(up())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            self._sockets.discard(ws)
            await upstream.close()
            await ws.close()
        return ws
