"""The lab itself, without the agent: real Asterisk, real SIP, real ARI.

A tiny inline ARI client stands in for the agent where a Stasis app is needed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
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
        self,
        kind: str,
        predicate: Callable[[dict[str, Any]], bool] = lambda e: True,
        timeout: float = 20.0,  # noqa: ASYNC109
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
    token = base64.b64encode(f"{lab.ari_user}:{lab.ari_password}".encode()).decode()
    async with aiohttp.ClientSession(headers={"Authorization": f"Basic {token}"}) as session:
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
    print(f"\nlab start-up: {lab.startup_seconds:.1f} s (ports slot {lab.ports.slot})")


def test_sip_call_established_with_each_codec(lab: Lab) -> None:
    """A real PJSIP call per codec to extension 300, which answers and plays a prompt."""
    handles = {
        codec: lab.place_call([], via="sip", codec=codec, extension="300", tail=0.5) for codec in CODECS
    }
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


def test_scripted_caller_takes_turns(lab: Lab) -> None:
    """The caller listens to the greeting, then says each phrase and listens to the reply (extension 301)."""
    phrases = ["hello there", "what time do you open"]
    handle = lab.place_call(phrases, via="sip", codec="alaw", extension="301", tail=0.5)
    outcome = lab.wait_call_ended(handle, timeout=60)
    turns = [
        (e.kind, e.fields.get("n"), e.fields.get("status")) for e in outcome.events if e.instance == "lab"
    ]
    # A turn is over when the far end falls silent: silence in the recording, or (no frames
    # on either side: Asterisk's default, no transmit_silence) a recording that stops growing.
    over = {"SILENCE", "QUIET"}
    assert [(kind, n) for kind, n, _ in turns] == [
        ("caller-heard-start", "0"),
        ("caller-heard-end", "0"),
        ("caller-heard-start", "1"),
        ("caller-heard-end", "1"),
        ("caller-heard-start", "2"),
        ("caller-heard-end", "2"),
    ], turns
    assert all(status in over for kind, _, status in turns if kind == "caller-heard-end"), turns
    kinds = outcome.kinds()
    assert kinds.index("caller-say-end") < kinds.index("caller-hangup")
    assert [e.kind for e in outcome.events].count("test-301-reply") == 2
    # Heard: the greeting and two replies; said: two phrases.
    assert len(voiced_segments(handle.recording_path)) == 3, voiced_segments(handle.recording_path)
    assert len(voiced_segments(handle.sent_path)) == 2, voiced_segments(handle.sent_path)


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
    assert returned.fields == {
        "STASISSTATUS": "SUCCESS",
        "AI_AGENT_STATUS": "FAILED",
        "AI_AGENT_RESULT": "",
    }, returned.raw
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
        await ari.ok(
            "POST", f"/channels/{channel_id}/variable", variable="AI_AGENT_STATUS", value="TRANSFERRED"
        )
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


@dataclasses.dataclass
class RoundTrip:
    received_pts: set[int]
    received_sizes: set[int]
    heard: list[tuple[float, float]]  # voiced segments of the caller's recording
    peak_hz: float  # dominant frequency of the longest one (0 if none)


async def external_media_round_trip(lab: Lab, fmt: str, send_pt: int, send_rate: int) -> RoundTrip:
    """A Local call bridged to an ExternalMedia channel of ``fmt`` whose far end is this test.

    Sends 1.5 s of a 1 kHz tone (``send_rate`` Hz, payload type ``send_pt``)
    and reports what Asterisk sent and what the caller heard.
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
            # The caller talks from the start: without transmit_silence (Asterisk's default) a
            # silent caller makes Asterisk send the ExternalMedia channel nothing at all.
            handle = lab.place_call(
                ["one two three four five six seven"],
                via="local",
                listen_first=False,
                noise_timeout=10,
                silence_ms=800,
                tail=0.5,
            )
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
                format=fmt,
            )
            await ari.wait_event("StasisStart", lambda e: e["channel"]["id"] == em_id)
            await ari.ok("POST", f"/bridges/{bridge_id}/addChannel", channel=em_id)
            variable = await ari.ok("GET", f"/channels/{em_id}/variable", variable="UNICASTRTP_LOCAL_PORT")
            async with asyncio.timeout(5):
                received.append(await loop.sock_recvfrom(sock, 2048))
            source = received[0][1]
            assert source == ("127.0.0.1", int(variable["value"]))
            t = np.arange(int(1.5 * send_rate)) / send_rate
            pcm = (0.3 * 32767 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)
            payload = pcm.astype(">i2").tobytes() if fmt.startswith("slin") else _ulaw(pcm)
            per_frame = send_rate // 50
            width = len(payload) // len(pcm)
            started = time.monotonic()
            for n, offset in enumerate(range(0, len(payload), per_frame * width)):
                chunk = payload[offset : offset + per_frame * width]
                await loop.sock_sendto(
                    sock, _rtp(send_pt, n, n * per_frame, 0x1234ABCD, chunk, n == 0), source
                )
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
    heard = voiced_segments(handle.recording_path)
    peak = 0.0
    if heard:
        samples, rate = read_wav(handle.recording_path)
        a, b = max(heard, key=lambda s: s[1] - s[0])
        middle = samples[int((a + 0.2) * rate) : int((b - 0.2) * rate)]
        if len(middle) > rate // 10:
            spectrum = np.abs(np.fft.rfft(middle * np.hanning(len(middle))))
            peak = float(np.argmax(spectrum) * rate / len(middle))
    return RoundTrip(
        received_pts={data[1] & 0x7F for data, _ in received},
        received_sizes={len(data) - 12 for data, _ in received},
        heard=heard,
        peak_hz=peak,
    )


def _ulaw(pcm: np.ndarray) -> bytes:
    x = pcm.astype(np.int32)
    sign = np.where(x < 0, 0x80, 0)
    mag = np.minimum(np.abs(x), 32635) + 0x84
    exponent = np.floor(np.log2(mag)).astype(np.int32) - 7
    mantissa = (mag >> (exponent + 3)) & 0x0F
    encoded: bytes = (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8).tobytes()
    return encoded


async def test_external_media_ulaw_round_trip(lab: Lab) -> None:
    trip = await external_media_round_trip(lab, "ulaw", send_pt=0, send_rate=8000)
    assert trip.received_pts == {0} and trip.received_sizes == {160}, trip
    assert len(trip.heard) == 1 and 1.3 < trip.heard[0][1] - trip.heard[0][0] < 1.7, trip
    assert abs(trip.peak_hz - 1000) < 30, trip


async def test_external_media_slin16_facts(lab: Lab) -> None:
    """What the media plane must know about slin16 on Asterisk 22.10.1 (silent failures otherwise).

    Asterisk sends slin16 as dynamic payload type 118, 640-byte (20 ms) payloads.
    Sent back with a dynamic type (118) it is dropped: the caller hears nothing.
    Sent back with static L16 (11) it is accepted but decoded as 8 kHz slin, so
    16 kHz audio plays at half speed (a 1 kHz tone is heard at 500 Hz, twice as
    long); 8 kHz audio with type 11 is heard intact.
    """
    dynamic = await external_media_round_trip(lab, "slin16", send_pt=118, send_rate=16000)
    assert dynamic.received_pts == {118} and dynamic.received_sizes == {640}, dynamic
    assert dynamic.heard == [], dynamic
    static16 = await external_media_round_trip(lab, "slin16", send_pt=11, send_rate=16000)
    # Twice as long as the 1.5 s sent (the upper bound is loose: with no frames flowing while the
    # caller is silent, the recording is not continuous and the playout tail varies).
    assert len(static16.heard) == 1 and 2.8 < static16.heard[0][1] - static16.heard[0][0] < 4.0, static16
    assert abs(static16.peak_hz - 500) < 20, static16
    static8 = await external_media_round_trip(lab, "slin16", send_pt=11, send_rate=8000)
    assert abs(static8.peak_hz - 1000) < 30, static8
