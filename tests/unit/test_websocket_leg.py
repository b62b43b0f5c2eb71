"""The chan_websocket leg against a loopback WebSocket server speaking as Asterisk 22.10.1 does.

The server is real (aiohttp), the messages are those seen from the real
module (test_wsmedia has the vectors); the calls through the real Asterisk
are in tests/integration/test_transports.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import numpy as np
import pytest
from aiohttp import WSMsgType, web

from ari_agent.errors import MediaError
from ari_agent.media import inbound
from ari_agent.media.clock import ReceiveClock
from ari_agent.media.leg import DropCounters
from ari_agent.media.websocket_leg import DROP_GARBAGE, SLIN16, WebSocketLeg, media_base, media_url, wire_for
from ari_agent.media.ws_outbound import BATCH_FRAMES

START = (
    "MEDIA_START connection_id:{cid} channel:WebSocket/INCOMING/0x1 channel_id:m1 "
    "format:{fmt} optimal_frame_size:{size} ptime:20"
)


@dataclass
class FakeAsterisk:
    """One /media/<id> endpoint: says MEDIA_START, keeps what it gets, sends what a test asks."""

    fmt: str = "slin16"
    size: int = 640
    first: str | None = None  # sent instead of MEDIA_START
    media: list[bytes] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    ws: web.WebSocketResponse | None = None
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    got: asyncio.Event = field(default_factory=asyncio.Event)

    async def handler(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.ws = ws
        first = self.first or START.format(cid=request.match_info["cid"], fmt=self.fmt, size=self.size)
        await ws.send_str(first)
        self.connected.set()
        async for message in ws:
            if message.type == WSMsgType.BINARY:
                self.media.append(message.data)
            elif message.type == WSMsgType.TEXT:
                self.commands.append(message.data)
            self.got.set()
        return ws

    async def wait_for(self, check: object, timeout: float = 3.0) -> None:  # noqa: ASYNC109
        assert callable(check)
        async with asyncio.timeout(timeout):
            while not check():
                self.got.clear()
                await self.got.wait()


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeAsterisk, str]]:
    asterisk = FakeAsterisk()
    app = web.Application()
    app.router.add_get("/media/{cid}", asterisk.handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield asterisk, f"http://127.0.0.1:{port}"
    await runner.cleanup()


def make_leg(heard: list[np.ndarray], counters: DropCounters | None = None) -> WebSocketLeg:
    return WebSocketLeg(SLIN16, heard.append, counters, jitter_ms=0, clock=ReceiveClock())


def test_media_url_and_formats() -> None:
    assert media_url("http://127.0.0.1:8088", "abc") == "ws://127.0.0.1:8088/media/abc"
    assert media_url("https://pbx:8089/", "abc") == "wss://pbx:8089/media/abc"
    assert media_url("wss://pbx:8089", "abc") == "wss://pbx:8089/media/abc"
    assert media_base("http://pbx:8088/ari/") == "http://pbx:8088"
    assert media_base("https://proxy/pbx1/ari") == "https://proxy/pbx1"
    assert media_base("http://127.0.0.1:8088") == "http://127.0.0.1:8088"
    assert wire_for("slin16").bytes_per_frame == 640 and wire_for("slin16").outbound.sample_rate == 16000
    assert wire_for("ulaw").bytes_per_frame == 160


async def test_audio_both_ways_marks_and_control(fake: tuple[FakeAsterisk, str]) -> None:
    asterisk, base = fake
    heard: list[np.ndarray] = []
    counters = DropCounters()
    leg = make_leg(heard, counters)
    start = await leg.connect(media_url(base, "c1"))
    assert start.connection_id == "c1" and start.optimal_frame_size == 640
    out = leg.make_outbound()
    out.start()
    ws = asterisk.ws
    assert ws is not None
    try:
        # Inbound: little-endian slin16, split across messages, reaches the call as 16 kHz PCM.
        samples = (np.arange(640, dtype=np.int16) * 7).astype("<i2").tobytes()
        await ws.send_bytes(samples[:700])
        await ws.send_bytes(samples[700:])
        await asyncio.sleep(0.15)
        got = np.concatenate(heard) if heard else np.zeros(0, np.int16)
        assert leg.packets_in == 2 and got[:640].tolist() == (np.arange(640) * 7).tolist()
        # Outbound: a second of speech leaves at once, in batches of whole frames, each marked.
        tag = object()
        out.enqueue(np.full(16000, 1000, np.int16), tag)
        await asterisk.wait_for(lambda: sum(len(m) for m in asterisk.media) >= 50 * 640)
        assert all(len(m) % 640 == 0 and len(m) <= BATCH_FRAMES * 640 for m in asterisk.media)
        marks = [c for c in asterisk.commands if c.startswith("MARK_MEDIA ")]
        assert len(marks) == len(asterisk.media) and marks[-1] == "MARK_MEDIA 0-50"
        assert out.speaking  # sent is not heard
        # Asterisk played the first 20 frames: what was heard follows its marks.
        await ws.send_str("MEDIA_MARK_PROCESSED 0-20")
        await asyncio.sleep(0.05)
        assert 20 <= out.frames_sent(tag) <= 25
        # The turn engine's pause, resume and stop are Asterisk's.
        out.pause()
        out.resume()
        out.pause()
        assert out.flush() >= 20
        await asterisk.wait_for(lambda: asterisk.commands[-1] == "CONTINUE_MEDIA")
        tail = [c for c in asterisk.commands if not c.startswith("MARK_MEDIA")]
        assert tail == ["PAUSE_MEDIA", "CONTINUE_MEDIA", "PAUSE_MEDIA", "FLUSH_MEDIA", "CONTINUE_MEDIA"]
        await asyncio.wait_for(out.wait_idle(), 1)
        # A mark from before the flush says nothing about what is sent after it.
        await ws.send_str("MEDIA_MARK_PROCESSED 0-50")
        # DTMF is ARI's: this copy is counted, not passed on; garbage costs only itself.
        await ws.send_str("DTMF_END digit:5 channel_id:m1")
        await ws.send_str("{not json")
        await ws.send_bytes(b"\x01")  # not whole samples
        await ws.send_str("ERROR channel_id:m1 error_text:something")
        await asyncio.sleep(0.1)
        assert leg.inbound.quality()["telephone_events"] == 1
        assert counters.counts == {DROP_GARBAGE: 2}
        assert leg.asterisk_errors == 1
        assert not leg.disconnected
        summary = out.summary()
        assert summary["pauses"] == 2 and summary["flushes"] == 1 and summary["marks_processed"] == 1
    finally:
        await out.stop()
        leg.close()
        await leg.closed_io()
    assert leg.closed
    assert inbound.AUDIO == "audio"


async def test_xoff_holds_sending_until_xon(fake: tuple[FakeAsterisk, str]) -> None:
    asterisk, base = fake
    leg = make_leg([])
    await leg.connect(media_url(base, "c2"))
    out = leg.make_outbound()
    out.start()
    ws = asterisk.ws
    assert ws is not None
    try:
        await ws.send_str("MEDIA_XOFF")
        await asyncio.sleep(0.05)
        out.enqueue(np.full(3200, 500, np.int16))  # 10 frames
        await asyncio.sleep(0.2)
        assert asterisk.media == [] and out.xoffs == 1 and out.speaking
        await ws.send_str("MEDIA_XON")
        await asterisk.wait_for(lambda: sum(len(m) for m in asterisk.media) == 10 * 640)
    finally:
        await out.stop()
        leg.close()
        await leg.closed_io()


async def test_a_start_that_does_not_fit_is_a_media_error(fake: tuple[FakeAsterisk, str]) -> None:
    asterisk, base = fake
    asterisk.fmt, asterisk.size = "ulaw", 160
    leg = make_leg([])
    with pytest.raises(MediaError, match="ulaw in 160-byte frames"):
        await leg.connect(media_url(base, "c3"))
    asterisk.first = "MEDIA_XON"
    with pytest.raises(MediaError, match="before MEDIA_START"):
        await make_leg([]).connect(media_url(base, "c4"))
    with pytest.raises(MediaError, match="cannot open") as err:
        await make_leg([]).connect("ws://127.0.0.1:1/media/secret-id", connect_timeout=2)
    assert "secret-id" not in str(err.value)
    with pytest.raises(MediaError, match="HTTP 404") as err:
        await make_leg([]).connect(base.replace("http", "ws", 1) + "/nowhere/secret-id")
    assert "secret-id" not in str(err.value)


async def test_asterisk_hanging_up_ends_sending_quietly(fake: tuple[FakeAsterisk, str]) -> None:
    asterisk, base = fake
    leg = make_leg([])
    await leg.connect(media_url(base, "c5"))
    out = leg.make_outbound()
    out.start()
    assert asterisk.ws is not None
    await asterisk.ws.close()
    await asyncio.sleep(0.1)
    assert leg.disconnected
    out.enqueue(np.full(3200, 500, np.int16))
    await asyncio.wait_for(out.wait_idle(), 1)  # nothing to wait for: nobody can hear it
    assert not leg.send(bytes(640))
    await out.stop()
    leg.close()
    await leg.closed_io()


class SlowLink:
    """A link whose media sends wait for the test (a frame batch on its way at a barge-in)."""

    def __init__(self) -> None:
        self.sent: list[str | int] = []
        self.gate = asyncio.Event()

    async def send_media(self, data: bytes) -> None:
        await self.gate.wait()
        self.sent.append(len(data))

    async def send_command(self, line: str) -> None:
        self.sent.append(line)


async def test_a_flush_while_a_batch_is_on_its_way_still_flushes_asterisk() -> None:
    from ari_agent.media.ws_outbound import WebSocketOutbound

    link = SlowLink()
    out = WebSocketOutbound(link, SLIN16)
    out.start()
    try:
        out.enqueue(np.full(3200, 900, np.int16))  # 10 frames: the first batch goes out at once
        await asyncio.sleep(0.05)
        assert out.flush() == 5  # the 5 still here; the 5 on the wire are not counted as sent yet
        link.gate.set()
        await asyncio.wait_for(out.wait_idle(), 1)
        await asyncio.sleep(0.05)
        # The batch reached Asterisk before FLUSH_MEDIA, which drops it; no mark for it, nothing heard.
        assert link.sent == [5 * 640, "FLUSH_MEDIA"]
        assert not out.speaking and out.playout.sent == 0
    finally:
        await out.stop()
