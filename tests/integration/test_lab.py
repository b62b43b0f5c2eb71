"""The lab itself, without the agent: real Asterisk, real SIP, real ARI.

A tiny inline ARI client stands in for the agent where a Stasis app is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import numpy as np
from tests.integration.lab import CODECS, DEMO_CONTEXT, Lab, read_wav, rms_dbfs, voiced_segments


class InlineAri:
    """Just enough ARI for these tests: REST calls and an event queue."""

    def __init__(self, lab: Lab, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.lab = lab
        self.session = session
        self.ws = ws
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.events.put_nowait(json.loads(msg.data))

    async def rest(self, method: str, path: str, **params: str) -> tuple[int, Any]:
        async with self.session.request(method, f"{self.lab.ari_url}/ari{path}", params=params) as resp:
            body = await resp.json() if resp.content_type == "application/json" else await resp.text()
            return resp.status, body

    async def ok(self, method: str, path: str, **params: str) -> Any:
        status, body = await self.rest(method, path, **params)
        assert 200 <= status < 300, f"ARI {method} {path} {params} -> {status}: {body}"
        return body

    async def wait_event(
        self, kind: str, predicate: Callable[[dict[str, Any]], bool] = lambda e: True, timeout: float = 20.0
    ) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                event = await self.events.get()
                if event.get("type") == kind and predicate(event):
                    return event

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self.ws.close()


@contextlib.asynccontextmanager
async def inline_ari(lab: Lab) -> AsyncIterator[InlineAri]:
    auth = aiohttp.BasicAuth(lab.ari_user, lab.ari_password)
    async with aiohttp.ClientSession(auth=auth) as session:
        ws = await session.ws_connect(lab.ari_ws_url)
        client = InlineAri(lab, session, ws)
        try:
            yield client
        finally:
            await client.close()


def _is_caller(number: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e.get("channel", {}).get("caller", {}).get("number") == number


def test_lab_started_and_ari_reachable(lab: Lab) -> None:
    info = lab.ari("GET", "/asterisk/info")
    assert info["system"]["version"].startswith("22."), info["system"]
    bad = Lab.__new__(Lab)
    bad.ari_url, bad.ari_user, bad.ari_password = lab.ari_url, lab.ari_user, "wrong"
    assert Lab.ari_request(bad, "GET", "/asterisk/info")[0] == 401
    # The caller instance answers on its own control socket, and the agent
    # instance loaded what the agent needs.
    assert "Asterisk 22" in lab.caller.rx("core show version")
    modules = lab.agent.rx("module show like res_ari_channels")
    assert "Running" in modules, modules
    print(f"\nlab start-up: {lab.startup_seconds:.1f} s (ports slot {lab.ports.slot})")  # type: ignore[attr-defined]


def test_sip_call_established_with_each_codec(lab: Lab) -> None:
    """A real PJSIP call per codec to extension 300, which answers and plays a prompt."""
    handles = {codec: lab.place_call([], via="sip", codec=codec, extension="300", tail=0.5) for codec in CODECS}
    # While the calls are up the agent instance shows them with their codec.
    for codec, handle in handles.items():
        event = lab.wait_dialplan_event(handle.number, "test-300", timeout=20)
        assert event.fields["codec"] == f"({codec})", event.raw
    stats = lab.agent.rx("pjsip show channelstats")
    for codec in CODECS:
        assert codec in stats, stats
    for codec, handle in handles.items():
        outcome = lab.wait_call_ended(handle, timeout=40)
        answered = next(e for e in outcome.events if e.kind == "caller-answered")
        assert answered.fields["codec"] == f"({codec})", answered.raw
        segments = voiced_segments(handle.recording_path)
        heard = sum(b - a for a, b in segments)
        assert heard > 2.0, f"{codec}: caller heard {segments}"
        assert rms_dbfs(handle.recording_path) > -40, codec


async def test_stasis_start_then_continue_to_next_priority(lab: Lab) -> None:
    """StasisStart reaches an ARI app; after `continue` the dialplan sees the variables we set."""
    async with inline_ari(lab) as ari:
        handle = lab.place_call([], via="local", listen_first=True, noise_timeout=10, tail=0.5)
        start = await ari.wait_event("StasisStart", _is_caller(handle.number))
        assert start["args"] == ["frontdesk"]
        assert start["channel"]["dialplan"]["context"] == DEMO_CONTEXT
        channel_id = start["channel"]["id"]
        await ari.ok("POST", f"/channels/{channel_id}/variable", variable="AI_AGENT_STATUS", value="FAILED")
        await ari.ok("POST", f"/channels/{channel_id}/continue")
        await ari.wait_event("StasisEnd", lambda e: e["channel"]["id"] == channel_id)
    returned = await lab.wait_dialplan_event_async(handle.number, "stasis-return", timeout=10)
    assert returned.fields == {"STASISSTATUS": "SUCCESS", "AI_AGENT_STATUS": "FAILED"}, returned.raw
    # FAILED falls back to reception, which answers and plays a prompt.
    reception = await lab.wait_dialplan_event_async(handle.number, "reception", timeout=10)
    assert reception.fields["AI_AGENT_STATUS"] == "FAILED"
    await lab.wait_call_ended_async(handle, timeout=30)
    assert voiced_segments(handle.recording_path), "the caller heard nothing from reception"


async def test_continue_to_extension_200_is_a_transfer(lab: Lab) -> None:
    async with inline_ari(lab) as ari:
        handle = lab.place_call([], via="local", noise_timeout=10, tail=0.5)
        start = await ari.wait_event("StasisStart", _is_caller(handle.number))
        channel_id = start["channel"]["id"]
        await ari.ok("POST", f"/channels/{channel_id}/variable", variable="AI_AGENT_STATUS", value="TRANSFERRED")
        await ari.ok(
            "POST", f"/channels/{channel_id}/continue", context=DEMO_CONTEXT, extension="200", priority="1"
        )
    reception = await lab.wait_dialplan_event_async(handle.number, "reception", timeout=10)
    assert reception.fields["AI_AGENT_STATUS"] == "TRANSFERRED"
    await lab.wait_call_ended_async(handle, timeout=30)
    assert "stasis-return" not in [e.kind for e in lab.dialplan_events(handle.number)]


def test_without_the_app_stasis_fails_over_to_reception(lab: Lab) -> None:
    handle = lab.place_call([], via="local", noise_timeout=10, tail=0.5)
    returned = lab.wait_dialplan_event(handle.number, "stasis-return", timeout=15)
    assert returned.fields["STASISSTATUS"] == "FAILED"
    lab.wait_dialplan_event(handle.number, "reception", timeout=10)
    lab.wait_call_ended(handle, timeout=30)


def _rtp(pt: int, seq: int, ts: int, ssrc: int, payload: bytes, marker: bool = False) -> bytes:
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts, ssrc) + payload


async def test_external_media_slin16_round_trip(lab: Lab) -> None:
    """slin16 ExternalMedia: what Asterisk sends, and that a static payload type gets back to the caller.

    Design note: Asterisk 22.10.1 drops slin16 sent back with a dynamic
    payload type; sent with static L16 (11) it reaches the caller intact.
    """
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    port = sock.getsockname()[1]
    bridge_id, em_id = f"lab-{uuid.uuid4().hex[:12]}", f"lab-em-{uuid.uuid4().hex[:12]}"
    received: list[tuple[bytes, tuple[str, int]]] = []
    try:
        async with inline_ari(lab) as ari:
            handle = lab.place_call([], via="local", noise_timeout=15, silence_ms=800, tail=0.5)
            start = await ari.wait_event("StasisStart", _is_caller(handle.number))
            caller_id = start["channel"]["id"]
            await ari.ok("POST", f"/channels/{caller_id}/answer")
            await ari.ok("POST", "/bridges", type="mixing", bridgeId=bridge_id)
            await ari.ok("POST", f"/bridges/{bridge_id}/addChannel", channel=caller_id)
            await ari.ok(
                "POST",
                "/channels/externalMedia",
                channelId=em_id,
                app=lab.app,
                external_host=f"127.0.0.1:{port}",
                format="slin16",
            )
            await ari.wait_event("StasisStart", lambda e: e["channel"]["id"] == em_id)
            await ari.ok("POST", f"/bridges/{bridge_id}/addChannel", channel=em_id)
            local_port = (await ari.ok("GET", f"/channels/{em_id}/variable", variable="UNICASTRTP_LOCAL_PORT"))[
                "value"
            ]

            async with asyncio.timeout(5):
                received.append(await loop.sock_recvfrom(sock, 2048))
            source = received[0][1]
            assert source == ("127.0.0.1", int(local_port))
            # 1.5 s of a 1 kHz tone at 16 kHz, big-endian, static payload type 11.
            rate, ssrc = 16000, 0x1234ABCD
            t = np.arange(int(1.5 * rate)) / rate
            tone = (0.3 * 32767 * np.sin(2 * np.pi * 1000 * t)).astype(">i2").tobytes()
            frame = rate // 50 * 2
            started = time.monotonic()
            for n, offset in enumerate(range(0, len(tone), frame)):
                packet = _rtp(11, n, n * (rate // 50), ssrc, tone[offset : offset + frame], marker=n == 0)
                await loop.sock_sendto(sock, packet, source)
                await asyncio.sleep(max(0.0, started + (n + 1) * 0.02 - time.monotonic()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.2):
                    while True:
                        received.append(await loop.sock_recvfrom(sock, 2048))
            await lab.wait_call_ended_async(handle, timeout=30)
    finally:
        sock.close()
        for path in (f"/channels/{em_id}", f"/bridges/{bridge_id}"):
            lab.ari_request("DELETE", path)

    payload_types = {data[1] & 0x7F for data, _ in received}
    sizes = {len(data) - 12 for data, _ in received}
    print(f"\nExternalMedia slin16: Asterisk sends payload type(s) {payload_types}, payload bytes {sizes}")
    assert payload_types and all(96 <= pt <= 127 for pt in payload_types), payload_types
    assert sizes == {640}, sizes  # 20 ms of 16 kHz 16-bit
    # The caller heard the tone: about 1.5 s, dominant frequency 1 kHz.
    segments = voiced_segments(handle.recording_path)
    assert segments and 1.2 < max(b - a for a, b in segments) < 1.8, segments
    samples, rate = read_wav(handle.recording_path)
    a, b = max(segments, key=lambda s: s[1] - s[0])
    chunk = samples[int((a + 0.2) * rate) : int((b - 0.2) * rate)]
    spectrum = np.abs(np.fft.rfft(chunk * np.hanning(len(chunk))))
    peak_hz = np.argmax(spectrum) * rate / len(chunk)
    assert abs(peak_hz - 1000) < 30, peak_hz
