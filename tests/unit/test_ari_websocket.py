"""EventListener against a loopback aiohttp WebSocket server playing ARI's /ari/events.

Each accepted connection runs the next script from ``FakeEvents.scripts`` (the
last one repeats). Waits are on conditions, with a generous cap only so that a
broken listener fails the test instead of hanging it; nothing asserts durations.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import WSMsgType, web

from ari_agent.ari import websocket
from ari_agent.ari.events import Event, StasisEnd, StasisStart, UnknownEvent
from ari_agent.ari.websocket import EventListener

USER = "agent"
PASSWORD = "s3cr3t-Pa55word"
APP = "ai-agent"
CAP = 10.0  # safety cap for waits, never a measured expectation

Script = Callable[[web.WebSocketResponse], Awaitable[None]]


def stasis_start(channel_id: str) -> str:
    return json.dumps(
        {
            "type": "StasisStart",
            "timestamp": "2024-05-29T13:34:56.800+0000",
            "args": ["frontdesk"],
            "channel": {
                "id": channel_id,
                "name": f"PJSIP/caller-{channel_id}",
                "state": "Ring",
                "caller": {"name": "", "number": "5551234"},
                "connected": {"name": "", "number": ""},
                "accountcode": "",
                "dialplan": {"context": "from-caller", "exten": "100", "priority": 2},
                "creationtime": "2024-05-29T13:34:56.789+0000",
                "language": "en",
            },
            "asterisk_id": "02:42:ac:11:00:02",
            "application": APP,
        }
    )


def stasis_end(channel_id: str) -> str:
    start = json.loads(stasis_start(channel_id))
    return json.dumps({"type": "StasisEnd", "application": APP, "channel": start["channel"]})


@dataclass
class FakeEvents:
    url: str = ""
    scripts: list[Script] = field(default_factory=list)
    reject_first: int = 0  # answer 401 to this many handshakes first
    attempts: int = 0
    accepted: int = 0
    queries: list[dict[str, str]] = field(default_factory=list)
    auth_headers: list[str] = field(default_factory=list)
    autoping: bool = True
    sockets: list[web.WebSocketResponse] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    hang_handshake: bool = False  # accept TCP, never answer the upgrade

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.attempts += 1
        if self.hang_handshake:
            await self.release.wait()
            return web.Response(status=503)
        self.queries.append(dict(request.query))
        self.auth_headers.append(request.headers.get("Authorization", ""))
        good = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if self.attempts <= self.reject_first or request.headers.get("Authorization") != good:
            return web.json_response({"message": "Authentication required"}, status=401)
        ws = web.WebSocketResponse(autoping=self.autoping)
        await ws.prepare(request)
        self.sockets.append(ws)
        index = min(self.accepted, len(self.scripts) - 1)
        self.accepted += 1
        await self.scripts[index](ws)
        return ws

    async def hold(self, ws: web.WebSocketResponse) -> None:
        """Keep the connection open (reading, so pings are answered) until teardown."""
        reader = asyncio.ensure_future(_drain(ws))
        await self.release.wait()
        reader.cancel()
        await ws.close()


async def _drain(ws: web.WebSocketResponse) -> None:
    async for msg in ws:
        if msg.type == WSMsgType.PING:  # only seen with autoping off
            await ws.pong(msg.data)


@pytest.fixture
async def server() -> AsyncIterator[FakeEvents]:
    fake = FakeEvents()
    app = web.Application()
    app.router.add_get("/ari/events", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    fake.url = f"http://127.0.0.1:{port}"
    yield fake
    fake.release.set()
    for ws in fake.sockets:
        await ws.close()
    await runner.cleanup()


@dataclass
class Recorder:
    """Callbacks for the listener that write down what happened, in order."""

    log: list[str] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    connected_seen: list[bool] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    listener: EventListener | None = None

    async def _note(self, entry: str) -> None:
        self.log.append(entry)
        async with self.changed:
            self.changed.notify_all()

    async def on_event(self, event: Event) -> None:
        self.events.append(event)
        ident = event.channel.id if isinstance(event, StasisStart | StasisEnd) else type(event).__name__
        await self._note(f"{type(event).__name__}:{ident}")

    async def on_connect(self) -> None:
        await self._note("connect")

    def on_disconnect(self) -> None:
        assert self.listener is not None
        self.connected_seen.append(self.listener.connected)
        self.log.append("disconnect")

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        async def _wait() -> None:
            async with self.changed:
                await self.changed.wait_for(predicate)

        await asyncio.wait_for(_wait(), CAP)


async def poll(predicate: Callable[[], bool]) -> None:
    """Wait for a condition that no callback announces (counters)."""

    async def _poll() -> None:
        while not predicate():  # noqa: ASYNC110 - counters have no event to wait on
            await asyncio.sleep(0.005)

    await asyncio.wait_for(_poll(), CAP)


@pytest.fixture
async def make_listener(server: FakeEvents) -> AsyncIterator[Callable[..., tuple[EventListener, Recorder]]]:
    made: list[EventListener] = []

    def make(url: str | None = None, password: str = PASSWORD, **kw: Any) -> tuple[EventListener, Recorder]:
        rec = Recorder()
        kw.setdefault("backoff_initial", 0.01)
        kw.setdefault("backoff_max", 0.05)
        listener = EventListener(
            url or server.url,
            USER,
            password,
            APP,
            kw.pop("on_event", rec.on_event),
            on_connect=rec.on_connect,
            on_disconnect=rec.on_disconnect,
            **kw,
        )
        rec.listener = listener
        made.append(listener)
        return listener, rec

    yield make
    for listener in made:
        await listener.stop()


# --------------------------------------------------------------------------- tests


async def test_events_arrive_in_order_and_garbage_is_counted(
    server: FakeEvents, make_listener: Callable[..., tuple[EventListener, Recorder]]
) -> None:
    async def script(ws: web.WebSocketResponse) -> None:
        await ws.send_str(stasis_start("c1"))
        await ws.send_str("this is not json")
        await ws.send_str(stasis_start("c2"))
        await ws.send_str('{"type": "StasisStart", "application": "ai-agent"}')  # no channel
        await ws.send_bytes(b"\xff\xfe")
        await ws.send_str(json.dumps({"type": "PlaybackStarted", "playback": {"id": "p"}}))
        await ws.send_str(stasis_end("c1"))
        await server.hold(ws)

    server.scripts = [script]
    listener, rec = make_listener()
    assert not listener.connected
    listener.start()
    await rec.wait_for(lambda: len(rec.events) == 4)
    assert rec.log == [
        "connect",
        "StasisStart:c1",
        "StasisStart:c2",
        "UnknownEvent:UnknownEvent",
        "StasisEnd:c1",
    ]
    assert isinstance(rec.events[2], UnknownEvent) and rec.events[2].type == "PlaybackStarted"
    assert listener.decode_errors == 3
    assert listener.connected
    assert listener.reconnects == 0
    assert server.queries == [{"app": APP, "subscribeAll": "false"}]


async def test_auth_goes_in_header_not_url(
    server: FakeEvents, make_listener: Callable[..., tuple[EventListener, Recorder]]
) -> None:
    server.scripts = [server.hold]
    listener, rec = make_listener(url=server.url + "/ari/")
    assert listener.url == server.url.replace("http://", "ws://") + "/ari/events"
    assert PASSWORD not in listener.url
    listener.start()
    await rec.wait_for(lambda: "connect" in rec.log)
    assert server.auth_headers == ["Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()]


async def test_handler_exception_does_not_stop_later_events(
    server: FakeEvents,
    make_listener: Callable[..., tuple[EventListener, Recorder]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def script(ws: web.WebSocketResponse) -> None:
        for cid in ("c1", "boom", "c3"):
            await ws.send_str(stasis_start(cid))
        await server.hold(ws)

    server.scripts = [script]
    rec_holder: list[Recorder] = []

    async def on_event(event: Event) -> None:
        if isinstance(event, StasisStart) and event.channel.id == "boom":
            raise RuntimeError("handler bug")
        await rec_holder[0].on_event(event)

    listener, rec = make_listener(on_event=on_event)
    rec_holder.append(rec)
    listener.start()
    await rec.wait_for(lambda: len(rec.events) == 2)
    assert rec.log == ["connect", "StasisStart:c1", "StasisStart:c3"]
    assert listener.handler_errors == 1
    assert "handler bug" in caplog.text


async def test_handler_exceptions_reach_the_error_counter(
    server: FakeEvents, make_listener: Callable[..., tuple[EventListener, Recorder]]
) -> None:
    async def script(ws: web.WebSocketResponse) -> None:
        await ws.send_str(stasis_start("boom"))
        await ws.send_str(stasis_start("c2"))
        await server.hold(ws)

    server.scripts = [script]
    counted: list[str] = []
    seen: list[str] = []

    async def on_event(event: Event) -> None:
        if isinstance(event, StasisStart) and event.channel.id == "boom":
            raise RuntimeError("handler bug")
        seen.append(type(event).__name__)

    listener, rec = make_listener(on_event=on_event, on_error=counted.append)
    listener.start()
    await rec.wait_for(lambda: bool(seen))
    assert counted == ["ari_handler"]


async def test_reader_is_not_blocked_by_a_slow_handler(
    server: FakeEvents, make_listener: Callable[..., tuple[EventListener, Recorder]]
) -> None:
    async def script(ws: web.WebSocketResponse) -> None:
        for i in range(50):
            await ws.send_str(stasis_start(f"c{i}"))
        await server.hold(ws)

    server.scripts = [script]
    gate = asyncio.Event()
    handled: list[str] = []

    async def on_event(event: Event) -> None:
        await gate.wait()
        assert isinstance(event, StasisStart)
        handled.append(event.channel.id)

    listener, _ = make_listener(on_event=on_event)
    listener.start()
    # The first event is stuck in the handler; the reader still takes in all the rest.
    await poll(lambda: listener.backlog == 49)
    assert handled == []
    gate.set()
    await poll(lambda: len(handled) == 50)
    assert handled == [f"c{i}" for i in range(50)]


async def test_on_connect_runs_before_the_connections_events(
    server: FakeEvents, make_listener: Callable[..., tuple[EventListener, Recorder]]
) -> None:
    async def script(ws: web.WebSocketResponse) -> None:
        await ws.send_str(stasis_start("c1"))
        await server.hold(ws)

    server.scripts = [script]
    gate = asyncio.Event()
    order: list[str] = []

    async def on_connect() -> None:
        await gate.wait()  # a reconcile that takes a while
        order.append("reconciled")

    async def on_event(event: Event) -> None:
        order.append(type(event).__name__)

    listener = EventListener(
        server.url,
        USER,
        PASSWORD,
        APP,
        on_event,
        on_connect=on_connect,
        backoff_initial=0.01,
        backoff_max=0.05,
    )
    listener.start()
    try:
        await poll(lambda: listener.backlog == 1)
        assert order == []
        gate.set()
        await poll(lambda: len(order) == 2)
        assert order == ["reconciled", "StasisStart"]
    finally:
        await listener.stop()


async def test_server_close_reconnects_and_connected_flips(
    server: FakeEvents, make_listener: Callable[..., tuple[EventListener, Recorder]]
) -> None:
    async def first(ws: web.WebSocketResponse) -> None:
        await ws.send_str(stasis_start("c1"))
        await ws.close()

    async def second(ws: web.WebSocketResponse) -> None:
        await ws.send_str(stasis_end("c1"))
        await server.hold(ws)

    server.scripts = [first, second]
    listener, rec = make_listener()
    listener.start()
    await rec.wait_for(lambda: len(rec.events) == 2)
    # on_disconnect is immediate (readiness must drop at once); the queued items keep their order.
    assert [entry for entry in rec.log if entry != "disconnect"] == [
        "connect",
        "StasisStart:c1",
        "connect",
        "StasisEnd:c1",
    ]
    assert rec.log.count("disconnect") == 1
    assert rec.connected_seen == [False]
    assert listener.connected
    assert listener.reconnects == 1
    assert server.accepted == 2


async def test_backoff_retries_until_the_server_accepts(
    server: FakeEvents,
    make_listener: Callable[..., tuple[EventListener, Recorder]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    server.scripts = [server.hold]
    server.reject_first = 3
    listener, rec = make_listener()
    listener.start()
    await rec.wait_for(lambda: "connect" in rec.log)
    assert server.attempts == 4
    assert listener.reconnects == 3
    assert caplog.text.count(f"ARI credentials rejected for user {USER}") == 3
    assert PASSWORD not in caplog.text
    assert base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode() not in caplog.text
    assert rec.log == ["connect"]  # no disconnect reported for attempts that never connected


async def test_wrong_password_keeps_retrying_without_crashing(
    server: FakeEvents,
    make_listener: Callable[..., tuple[EventListener, Recorder]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    server.scripts = [server.hold]
    wrong = "wr0ng-password"
    listener, rec = make_listener(password=wrong)
    listener.start()
    await poll(lambda: server.attempts >= 3)
    assert not listener.connected
    assert rec.log == []
    assert "ARI credentials rejected for user agent" in caplog.text
    assert wrong not in caplog.text


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_connection_refused_is_retried(
    make_listener: Callable[..., tuple[EventListener, Recorder]],
) -> None:
    listener, rec = make_listener(url=f"http://127.0.0.1:{_closed_port()}")
    listener.start()
    await poll(lambda: listener.reconnects >= 3)
    assert not listener.connected
    assert rec.log == []


async def test_client_pings_and_drops_a_silent_server(
    server: FakeEvents, make_listener: Callable[..., tuple[EventListener, Recorder]]
) -> None:
    pings: list[int] = []

    async def deaf(ws: web.WebSocketResponse) -> None:
        # Reads pings but never answers them: a half-dead peer.
        async for msg in ws:
            if msg.type == WSMsgType.PING:
                pings.append(server.accepted)

    server.autoping = False
    server.scripts = [deaf, server.hold]
    listener, rec = make_listener(heartbeat=0.05)
    listener.start()
    await rec.wait_for(lambda: rec.log.count("connect") == 2)
    assert pings and pings[0] == 1
    assert rec.log[:3] == ["connect", "disconnect", "connect"]
    assert listener.reconnects >= 1


async def test_stop_is_clean_and_idempotent(
    server: FakeEvents, make_listener: Callable[..., tuple[EventListener, Recorder]]
) -> None:
    server.scripts = [server.hold]
    listener, rec = make_listener()
    listener.start()
    listener.start()  # second start is a no-op
    await rec.wait_for(lambda: "connect" in rec.log)
    assert server.accepted == 1
    await listener.stop()
    assert not listener.connected
    assert rec.log == ["connect", "disconnect"]
    leftovers = [t for t in asyncio.all_tasks() if t.get_name().startswith("ari-")]
    assert leftovers == []
    await listener.stop()
    assert rec.log == ["connect", "disconnect"]


async def test_stop_before_any_connection(
    make_listener: Callable[..., tuple[EventListener, Recorder]],
) -> None:
    listener, rec = make_listener(url=f"http://127.0.0.1:{_closed_port()}")
    listener.start()
    await asyncio.sleep(0)
    await listener.stop()
    assert [t for t in asyncio.all_tasks() if t.get_name().startswith("ari-")] == []
    assert rec.log == []


def test_bad_backoff_is_refused() -> None:
    async def on_event(event: Event) -> None:
        return None

    with pytest.raises(ValueError, match="backoff"):
        EventListener(
            "http://127.0.0.1:8088", USER, PASSWORD, APP, on_event, backoff_initial=2, backoff_max=1
        )


async def test_handshake_that_never_completes_is_retried(
    server: FakeEvents,
    make_listener: Callable[..., tuple[EventListener, Recorder]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(websocket, "_HANDSHAKE_TIMEOUT", 0.05)
    server.hang_handshake = True
    server.scripts = [server.hold]
    listener, rec = make_listener()
    listener.start()
    # The server's count, not the listener's: a reconnect is counted before its handshake
    # reaches the server (one CI run saw reconnects 2 with the second still on its way).
    await poll(lambda: server.attempts >= 2)
    assert listener.reconnects >= 1
    assert not listener.connected
    assert rec.log == []
