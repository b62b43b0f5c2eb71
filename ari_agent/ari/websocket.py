"""The ARI events WebSocket: connect, keep alive, decode, hand over, reconnect.

Two tasks. The reader only receives frames, decodes them and puts the events on
an unbounded queue, so a slow handler can never stall the socket (and with it
the ping/pong keepalive). The dispatcher drains the queue and awaits the
application's callbacks one at a time, in order.

``on_connect`` runs through the same queue, ahead of every event of the new
connection: the application reconciles its state (the Stasis app is registered
only once this WebSocket is up) before it sees any event of that connection,
and events of the previous connection are all handled before it.

``on_disconnect`` is synchronous and called at once by the reader when a
connection ends (``connected`` is already false), so readiness drops without
waiting for queued events; it may therefore run before the last events of the
lost connection reach ``on_event``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Final

import aiohttp

from ari_agent.ari.client import basic_auth_header, normalize_ari_url
from ari_agent.ari.events import Event, decode_event
from ari_agent.ari.tls import SslArg, tls_problem

__all__ = ["EventListener"]

log = logging.getLogger(__name__)


class _Connected:
    """Queue marker: a new connection is up; run on_connect before its events."""


_CONNECTED: Final = _Connected()

# An Asterisk that accepts TCP but never answers the upgrade must not hang us:
# bound the connect and the wait for the handshake reply (the WebSocket itself then
# lives on heartbeats, since aiohttp lifts the read timeout after the upgrade).
_HANDSHAKE_TIMEOUT = 10.0

# Past this many queued events the application is falling behind; say so once per episode.
_BACKLOG_WARNING = 1000


class EventListener:
    """Receive ARI events for one Stasis application, reconnecting forever until stopped."""

    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        app: str,
        on_event: Callable[[Event], Awaitable[None]],
        *,
        on_connect: Callable[[], Awaitable[None]] | None = None,
        on_disconnect: Callable[[], None] | None = None,
        on_error: Callable[[str], None] | None = None,
        heartbeat: float = 10.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 10.0,
        session: aiohttp.ClientSession | None = None,
        ssl: SslArg = True,
    ) -> None:
        self._ssl = ssl
        if backoff_initial <= 0 or backoff_max < backoff_initial:
            raise ValueError("backoff needs 0 < backoff_initial <= backoff_max")
        root = normalize_ari_url(base_url)
        self._url = ("wss" + root[5:] if root.startswith("https") else "ws" + root[4:]) + "/events"
        self._params = {"app": app, "subscribeAll": "false"}
        self._username = username
        self._headers = {"Authorization": basic_auth_header(username, password)}
        self._app = app
        self._on_event = on_event
        self._on_connect = on_connect
        self._on_disconnect = on_disconnect
        self._on_error = on_error
        self._heartbeat = heartbeat
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._session = session
        self._own_session = session is None

        self._queue: asyncio.Queue[Event | _Connected] = asyncio.Queue()
        self._reader_task: asyncio.Task[None] | None = None
        self._dispatch_task: asyncio.Task[None] | None = None
        self._connected = False
        self._reconnects = 0
        self._decode_errors = 0
        self._handler_errors = 0
        self._backlog_warned = False

    # ------------------------------------------------------------------ state

    @property
    def url(self) -> str:
        """The events WebSocket URL, without query (safe to log)."""
        return self._url

    @property
    def connected(self) -> bool:
        """True while the WebSocket is open."""
        return self._connected

    @property
    def reconnects(self) -> int:
        """Connection attempts made after a failure or a dropped connection."""
        return self._reconnects

    @property
    def decode_errors(self) -> int:
        """Messages that could not be decoded and were skipped."""
        return self._decode_errors

    @property
    def handler_errors(self) -> int:
        """Exceptions raised by on_event / on_connect (logged and survived)."""
        return self._handler_errors

    @property
    def backlog(self) -> int:
        """Events received but not yet handed to on_event."""
        return self._queue.qsize()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the reader and dispatcher tasks (idempotent). Needs a running loop."""
        if self._reader_task is not None and not self._reader_task.done():
            return
        self._reader_task = asyncio.create_task(self._run(), name=f"ari-events-{self._app}")
        self._dispatch_task = asyncio.create_task(self._dispatch(), name=f"ari-dispatch-{self._app}")
        for task in (self._reader_task, self._dispatch_task):
            task.add_done_callback(self._task_ended)

    def _task_ended(self, task: asyncio.Task[None]) -> None:
        # Both loops only end by stop(): one that dies would leave the agent deaf, and say nothing.
        if task.cancelled() or task.exception() is None:
            return
        log.error("%s died; no more ARI events", task.get_name(), exc_info=task.exception())
        self._count("ari_events")

    def _count(self, where: str) -> None:
        if self._on_error is not None:
            self._on_error(where)

    async def stop(self) -> None:
        """Close the connection and end both tasks; events still queued are dropped."""
        for task in (self._reader_task, self._dispatch_task):
            if task is not None and not task.done():
                task.cancel()
        for task in (self._reader_task, self._dispatch_task):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._reader_task = self._dispatch_task = None
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    # ------------------------------------------------------------------ reader

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            if not self._own_session:
                raise RuntimeError("the aiohttp session given to EventListener is closed")
            timeout = aiohttp.ClientTimeout(
                total=None, connect=_HANDSHAKE_TIMEOUT, sock_read=_HANDSHAKE_TIMEOUT
            )
            self._session = aiohttp.ClientSession(timeout=timeout)
        return self._session

    async def _run(self) -> None:
        delay = self._backoff_initial
        first = True
        while True:
            if not first:
                self._reconnects += 1
            first = False
            try:
                async with self._get_session().ws_connect(
                    self._url,
                    params=self._params,
                    headers=self._headers,
                    heartbeat=self._heartbeat,
                    autoping=True,
                    ssl=self._ssl,
                ) as ws:
                    delay = self._backoff_initial
                    self._connected = True
                    log.info("ARI events connected: %s (app %s)", self._url, self._app)
                    self._queue.put_nowait(_CONNECTED)
                    try:
                        await self._read(ws)
                    finally:
                        self._set_disconnected()
                    log.warning(
                        "ARI events connection closed (code %s); reconnecting",
                        ws.close_code,
                    )
            except aiohttp.WSServerHandshakeError as exc:
                if exc.status == 401:
                    log.error("ARI credentials rejected for user %s (HTTP 401); will retry", self._username)
                else:
                    log.warning("ARI events handshake refused: HTTP %s %s", exc.status, exc.message)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                problem = tls_problem(exc, self._url)
                if problem is not None:
                    # Not a network blip: it will not pass by itself, so it is an error each time.
                    log.error("ARI events: %s", problem)
                    self._count("ari_tls")
                else:
                    log.warning("ARI events connection failed: %s: %s", type(exc).__name__, exc)
            except Exception:
                # A forever loop that dies quietly is worse than a noisy one that keeps going.
                log.exception("ARI events loop error")
                self._count("ari_events")
            pause = delay / 2 + random.uniform(0, delay / 2)  # jitter spreads reconnect storms
            log.info("ARI events: reconnecting in %.2f s", pause)
            await asyncio.sleep(pause)
            delay = min(delay * 2, self._backoff_max)

    def _set_disconnected(self) -> None:
        if not self._connected:
            return
        self._connected = False
        if self._on_disconnect is not None:
            try:
                self._on_disconnect()
            except Exception:
                self._handler_errors += 1
                log.exception("ARI on_disconnect callback failed")
                self._count("ari_handler")

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                try:
                    event = decode_event(msg.data)
                except ValueError as exc:
                    self._decode_errors += 1
                    log.debug("ARI event skipped: %s", exc)
                    continue
                self._queue.put_nowait(event)
                self._watch_backlog()
            elif msg.type == aiohttp.WSMsgType.ERROR:
                log.warning("ARI events WebSocket error: %s", ws.exception())
                return

    def _watch_backlog(self) -> None:
        size = self._queue.qsize()
        if size >= _BACKLOG_WARNING and not self._backlog_warned:
            self._backlog_warned = True
            log.warning("ARI event handling is falling behind: %d events queued", size)
        elif size < _BACKLOG_WARNING // 2:
            self._backlog_warned = False

    # ------------------------------------------------------------------ dispatcher

    async def _dispatch(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                if isinstance(item, _Connected):
                    if self._on_connect is not None:
                        await self._on_connect()
                else:
                    await self._on_event(item)
            except Exception:
                self._handler_errors += 1
                what = "on_connect" if isinstance(item, _Connected) else type(item).__name__
                log.exception("ARI event handler failed on %s", what)
                self._count("ari_handler")
