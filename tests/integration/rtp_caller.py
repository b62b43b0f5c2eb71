"""A simulated caller whose audio path is a UDP socket in the test process.

The lab's scripted caller (``Lab.place_call``) runs inside Asterisk, so a
test only sees what it heard after the call. ``RtpCaller`` instead places a
call whose far end is this process: on the lab's agent Asterisk, under its
own ARI application (never the agent's), it originates
``Local/<extension>@<context>/n``; once the agent answers, the Local channel's
``;1`` leg enters our application and we bridge it with an ExternalMedia
channel (µ-law, PT 0 both ways, 8 kHz) pointed at our UDP socket::

    agent <-RTP-> Asterisk [agent's bridge] Local;2 ~ Local;1 [our bridge] ExternalMedia <-RTP-> RtpCaller

Every packet is stamped on the ``time.monotonic()`` clock the moment it is
sent, or by the kernel the moment it arrived, so a test measures what a
caller would: when its own speech ended and when the agent's voice came
back. Like a real phone, the caller sends a frame every 20 ms on absolute
deadlines for the whole call (silence when it has nothing to say).
Everything sent and received is kept, so a failing test can ``dump_wav``
the call.

    async with RtpCaller.connect(lab) as call:
        greeting = await call.wait_agent_speech(timeout=10)
        said = await call.say("what time do you open")
        reply_at = await call.wait_agent_speech(after=said.last_sent)
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import math
import random
import socket
import struct
import subprocess
import time
import uuid
import wave
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import numpy as np
import soxr
import webrtcvad

from ari_agent.media.codecs import ulaw_decode, ulaw_encode
from providers.local.tts import parse_wav, trim_silence

if TYPE_CHECKING:
    from tests.integration.lab import Lab


RATE = 8000
FRAME_S = 0.020
SPF = 160  # samples per 20 ms frame at 8 kHz
PT_ULAW = 0
PT_CN = 13
LOUD_DBFS = -45.0  # a frame above this is speech; the agent's silence is digital zero
# The agent's VAD defaults: webrtcvad aggressiveness 2 above a -50 dBFS floor.
VAD_AGGRESSIVENESS = 2
VAD_FLOOR_DBFS = -50.0
APP_PREFIX = "lab-rtp-caller"
_RTP_HEADER = struct.Struct("!BBHII")
# A late sender wake-up this far behind re-anchors the clock instead of bursting.
_MAX_LATE_S = 0.06

FrameSource = Callable[[np.ndarray], "np.ndarray | None"]


class RtpCallerError(Exception):
    """The simulated caller could not do what the test asked; the message says why."""


def level_dbfs(pcm: np.ndarray) -> float:
    """RMS level of int16 samples in dBFS (about -150 for digital silence)."""
    if pcm.size == 0:
        return -150.0
    samples = pcm.astype(np.float64)
    rms = math.sqrt(float(np.dot(samples, samples)) / samples.size)
    return 20.0 * math.log10(max(rms, 1e-3) / 32768.0)


@functools.lru_cache(maxsize=128)
def _espeak(text: str, voice: str, speed: int) -> bytes:
    out = subprocess.run(
        ["espeak-ng", "--stdout", "-v", voice, "-s", str(speed)],
        input=text.encode("utf-8"),
        capture_output=True,
        check=True,
    ).stdout
    samples, rate = parse_wav(out)
    samples = trim_silence(samples, rate, keep_ms=0)
    return np.asarray(soxr.resample(samples, rate, RATE), dtype=np.int16).tobytes()


async def speech(text: str, *, voice: str = "en-us", speed: int = 150) -> np.ndarray:
    """``text`` spoken by espeak-ng: 8 kHz int16, leading/trailing silence cut (cached)."""
    pcm = await asyncio.to_thread(_espeak, text, voice, speed)
    return np.frombuffer(pcm, dtype=np.int16)


def speakerphone_echo(gain_db: float) -> FrameSource:
    """A continuous source that returns each received frame attenuated by ``gain_db`` (negative)."""
    gain = 10 ** (gain_db / 20)

    def echo(frame: np.ndarray) -> np.ndarray:
        return (frame.astype(np.float32) * gain).astype(np.int16)

    return echo


def room_echo(gain_db: float, reverb_ms: float = 100.0, seed: int = 3) -> FrameSource:
    """A speakerphone in a room: each received frame returned through a decaying reverb tail.

    Unlike :func:`speakerphone_echo` (a scaled copy) this is what a correlation
    guard cannot recognise: the room smears the agent's voice over ``reverb_ms``.
    """
    rng = np.random.default_rng(seed)
    n = int(RATE * reverb_ms / 1000)
    ir = rng.standard_normal(n) * np.exp(-6.9 * np.arange(n) / n)
    ir[0] = 1.0
    ir *= 10 ** (gain_db / 20) / np.sqrt(np.sum(ir**2))
    tail = np.zeros(n - 1)

    def echo(frame: np.ndarray) -> np.ndarray:
        nonlocal tail
        out = np.convolve(frame.astype(np.float64), ir)
        out[: tail.size] += tail
        tail = np.concatenate((out[frame.size :], np.zeros(max(0, n - 1 - (out.size - frame.size)))))[: n - 1]
        return np.clip(out[: frame.size], -32768, 32767).astype(np.int16)

    return echo


def cough(ms: int = 250, seed: int = 7) -> np.ndarray:
    """A cough-like burst: sharp attack, fast decay, noise with the low end taken out (8 kHz)."""
    n = RATE * ms // 1000
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    envelope = np.minimum(t / (RATE * 0.01), 1.0) * np.exp(-t / (RATE * 0.08))
    noise = np.convolve(np.diff(rng.standard_normal(n), prepend=0.0), np.ones(4) / 4, mode="same")
    return (noise * envelope * 9000).astype(np.int16)


@dataclass(frozen=True)
class Received:
    at: float  # time.monotonic() on arrival
    seq: int
    timestamp: int
    marker: bool
    pcm: np.ndarray  # int16, 8 kHz
    level: float  # dBFS


def last_voiced_frame(frames: list[np.ndarray]) -> int:
    """Index of the last 20 ms frame a VAD like the agent's calls speech (-1: none).

    espeak-ng's last phoneme fades out: the agent's end of turn counts from
    here, not from the last packet of the utterance.
    """
    vad = webrtcvad.Vad(VAD_AGGRESSIVENESS)
    for i in range(len(frames) - 1, -1, -1):
        frame = frames[i]
        if level_dbfs(frame) > VAD_FLOOR_DBFS and vad.is_speech(frame.astype("<i2").tobytes(), RATE):
            return i
    return -1


@dataclass(frozen=True)
class Said:
    """When an utterance went out: send times of its first, last voiced and last packets."""

    first_sent: float
    last_sent: float
    frames: int
    last_voiced_sent: float  # the last frame a VAD calls speech (last_sent if none)

    @property
    def duration(self) -> float:
        return self.last_sent - self.first_sent + FRAME_S


@dataclass
class _Utterance:
    frames: int
    last_voiced: int
    done: asyncio.Future[Said]
    sent: int = 0
    first_sent: float = 0.0
    last_voiced_sent: float = 0.0


@dataclass
class _SentFrame:
    at: float
    pcm: np.ndarray
    speech: bool


@dataclass
class _Rtp:
    """The caller's own RTP sender state (sans-IO: builds datagrams)."""

    ssrc: int = field(default_factory=lambda: random.getrandbits(32))
    seq: int = field(default_factory=lambda: random.getrandbits(16))
    timestamp: int = field(default_factory=lambda: random.getrandbits(32))
    first: bool = True

    def skip(self) -> None:
        """A frame not sent (silence suppressed): time moves on, the next packet starts a talkspurt."""
        self.timestamp = (self.timestamp + SPF) & 0xFFFFFFFF
        self.first = True

    def packet(self, payload: bytes) -> bytes:
        marker = 0x80 if self.first else 0
        self.first = False
        header = _RTP_HEADER.pack(0x80, marker | PT_ULAW, self.seq, self.timestamp, self.ssrc)
        self.seq = (self.seq + 1) & 0xFFFF
        self.timestamp = (self.timestamp + SPF) & 0xFFFFFFFF
        return header + payload


def parse_packet(data: bytes) -> tuple[int, int, int, bool, bytes]:
    """(payload type, seq, timestamp, marker, payload) of an RTP datagram; ValueError if not RTP."""
    if len(data) < 12:
        raise ValueError(f"datagram of {len(data)} bytes is shorter than an RTP header")
    b0, b1, seq, ts, _ = _RTP_HEADER.unpack_from(data)
    if b0 >> 6 != 2:
        raise ValueError(f"RTP version {b0 >> 6}, expected 2")
    pos = 12 + 4 * (b0 & 0x0F)
    if b0 & 0x10:
        if len(data) < pos + 4:
            raise ValueError("truncated RTP header extension")
        (words,) = struct.unpack_from("!H", data, pos + 2)
        pos += 4 + 4 * words
    end = len(data)
    if b0 & 0x20:
        end -= data[-1]
    if pos > end:
        raise ValueError("RTP header longer than the datagram")
    return b1 & 0x7F, seq, ts, bool(b1 & 0x80), data[pos:end]


class _UdpSocket:
    """The caller's RTP socket, stamping each datagram with the kernel's arrival time.

    The kernel's stamp (SO_TIMESTAMPNS) does not move when this process's
    event loop is late, so arrival times stay true with many calls in one
    process. Linux only (the option number is Linux's).
    """

    SO_TIMESTAMPNS = 35

    def __init__(self, on_datagram: Callable[[bytes, float], None]) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, self.SO_TIMESTAMPNS, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port: int = self.sock.getsockname()[1]
        self._on_datagram = on_datagram
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.sock.fileno(), self._readable)
        self._anc_size = socket.CMSG_SPACE(16)

    def _readable(self) -> None:
        # Realtime (the kernel's clock) to monotonic, once per wake-up.
        offset = time.time() - time.monotonic()
        while True:
            try:
                data, ancillary, _, _ = self.sock.recvmsg(2048, self._anc_size)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # e.g. ICMP port unreachable reported on a later read
            at = time.monotonic()
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == self.SO_TIMESTAMPNS and len(value) >= 16:
                    sec, nsec = struct.unpack_from("qq", value)
                    at = sec + nsec / 1e9 - offset
            self._on_datagram(data, at)

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        with contextlib.suppress(BlockingIOError, ConnectionRefusedError):
            self.sock.sendto(data, addr)

    def close(self) -> None:
        self._loop.remove_reader(self.sock.fileno())
        self.sock.close()


class RtpCaller:
    """One call into the lab's agent Asterisk, its audio sent and received here.

    Use :meth:`connect`; times are ``time.monotonic()`` seconds.
    """

    def __init__(
        self, lab: Lab, *, number: str, loud_dbfs: float = LOUD_DBFS, silence_suppression: bool = False
    ) -> None:
        self.lab = lab
        self.number = number
        self.loud_dbfs = loud_dbfs
        # Like a phone with silence suppression or Opus DTX: no packet at all while there is
        # nothing to say (the timestamp moves on, the sequence number does not).
        self.silence_suppression = silence_suppression
        self.suppressed_frames = 0
        tag = uuid.uuid4().hex[:10]
        # An application of its own per call: events of one call never reach another.
        self.app = f"{APP_PREFIX}-{tag}"
        self.channel_id = f"rtpc-{tag}"
        self.media_channel_id = f"rtpc-{tag}-m"
        self.bridge_id = f"rtpc-{tag}-b"
        self.received: list[Received] = []
        self.sent: list[_SentFrame] = []
        self.answered_at: float | None = None
        self.started_at = time.monotonic()
        self.ended = asyncio.Event()  # our leg left our application (the agent hung up, or we did)
        self.unknown_packets = 0
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._transport: _UdpSocket | None = None
        self.send_lateness: list[float] = []  # seconds each frame went out after its deadline
        self._remote: tuple[str, int] | None = None
        self._rtp = _Rtp()
        self._speech: deque[tuple[np.ndarray, _Utterance]] = deque()
        self._source: FrameSource | None = None
        self._source_delay = 0.0
        self._echo: deque[tuple[float, np.ndarray]] = deque()
        self._stasis: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._rx_event = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self._hung_up = False

    # ------------------------------------------------------------ setup

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(
        cls,
        lab: Lab,
        *,
        extension: str = "100",
        context: str = "ai-agent-demo",
        caller_number: str | None = None,
        answer_timeout: float = 30.0,
        loud_dbfs: float = LOUD_DBFS,
        silence_suppression: bool = False,
    ) -> AsyncIterator[RtpCaller]:
        """Place the call and yield once audio flows both ways; always hangs up and cleans up."""
        caller = cls(
            lab,
            number=caller_number or lab.new_number(),
            loud_dbfs=loud_dbfs,
            silence_suppression=silence_suppression,
        )
        try:
            await caller._start(extension, context, answer_timeout)
            yield caller
        finally:
            await caller.close()

    async def _start(self, extension: str, context: str, answer_timeout: float) -> None:
        self._transport = _UdpSocket(self._on_datagram)
        rtp_port = self._transport.port
        credentials = f"{self.lab.ari_user}:{self.lab.ari_password}"
        self._http = aiohttp.ClientSession(
            headers={"Authorization": "Basic " + base64.b64encode(credentials.encode()).decode()},
            timeout=aiohttp.ClientTimeout(total=10),
        )
        ws_url = self.lab.ari_url.replace("http://", "ws://") + "/ari/events"
        self._ws = await self._http.ws_connect(
            ws_url,
            params={
                "app": self.app,
                "api_key": credentials,
                "subscribeAll": "false",
            },
            heartbeat=20,
        )
        self._tasks.append(asyncio.create_task(self._read_events(), name=f"{self.app}-events"))
        answered = self._expect_stasis(self.channel_id)
        await self._ari(
            "POST",
            "/channels",
            endpoint=f"Local/{extension}@{context}/n",
            app=self.app,
            appArgs="caller",
            callerId=f'"RTP caller" <{self.number}>',
            timeout=str(int(answer_timeout)),
            channelId=self.channel_id,
            otherChannelId=f"{self.channel_id}-2",
        )
        try:
            await asyncio.wait_for(answered, answer_timeout + 5)
        except TimeoutError:
            raise RtpCallerError(
                f"call {self.number} to {extension}@{context} not answered in {answer_timeout:g} s"
            ) from None
        self.answered_at = time.monotonic()
        await self._ari("POST", "/bridges", type="mixing", bridgeId=self.bridge_id)
        await self._ari("POST", f"/bridges/{self.bridge_id}/addChannel", channel=self.channel_id)
        media_up = self._expect_stasis(self.media_channel_id)
        media = await self._ari(
            "POST",
            "/channels/externalMedia",
            app=self.app,
            channelId=self.media_channel_id,
            external_host=f"127.0.0.1:{rtp_port}",
            format="ulaw",
            encapsulation="rtp",
            transport="udp",
            direction="both",
        )
        variables = media.get("channelvars") or {}
        host = variables.get("UNICASTRTP_LOCAL_ADDRESS")
        port = variables.get("UNICASTRTP_LOCAL_PORT")
        if not host or not port:
            raise RtpCallerError(f"ExternalMedia channel gave no RTP address: {variables}")
        self._remote = (str(host), int(port))
        # Asterisk refuses to bridge the media channel before it is in Stasis itself.
        await asyncio.wait_for(media_up, 10)
        await self._ari("POST", f"/bridges/{self.bridge_id}/addChannel", channel=self.media_channel_id)
        self._tasks.append(asyncio.create_task(self._send_loop(), name=f"{self.app}-send"))

    def _expect_stasis(self, channel_id: str) -> asyncio.Future[dict[str, Any]]:
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._stasis[channel_id] = fut
        return fut

    async def _ari(self, method: str, path: str, **params: str) -> Any:
        assert self._http is not None
        url = f"{self.lab.ari_url}/ari{path}"
        async with self._http.request(method, url, params=params) as resp:
            body = await resp.text()
            if not 200 <= resp.status < 300:
                raise RtpCallerError(f"ARI {method} {path} -> {resp.status}: {body[:300]}")
            return json.loads(body) if body else None

    async def _read_events(self) -> None:
        assert self._ws is not None
        async for msg in self._ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            event = json.loads(msg.data)
            kind = event.get("type")
            channel = (event.get("channel") or {}).get("id")
            if kind == "StasisStart" and channel in self._stasis:
                fut = self._stasis.pop(channel)
                if not fut.done():
                    fut.set_result(event)
            elif kind in ("StasisEnd", "ChannelDestroyed") and channel == self.channel_id:
                self.ended.set()
                for fut in self._stasis.values():
                    if not fut.done():
                        fut.set_exception(RtpCallerError(f"call {self.number} ended during setup: {kind}"))
        self.ended.set()

    # ------------------------------------------------------------ sending

    async def _send_loop(self) -> None:
        assert self._transport is not None and self._remote is not None
        t0 = time.monotonic()
        n = 0
        while not self._closed:
            n += 1
            deadline = t0 + n * FRAME_S
            delay = deadline - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -_MAX_LATE_S:
                t0 = time.monotonic() - n * FRAME_S  # as a phone would: a gap, not a burst
                deadline = t0 + n * FRAME_S
            self._send_frame()
            self.send_lateness.append(max(0.0, self.sent[-1].at - deadline))

    def _send_frame(self) -> None:
        assert self._transport is not None and self._remote is not None
        frame: np.ndarray
        utterance: _Utterance | None = None
        if self._speech:
            frame, utterance = self._speech.popleft()
        else:
            frame = np.zeros(SPF, dtype=np.int16)
        now = time.monotonic()
        echo = self._due_echo(now)
        if echo is not None:
            frame = np.clip(frame.astype(np.int32) + echo, -32768, 32767).astype(np.int16)
        elif utterance is None and self.silence_suppression:
            self._rtp.skip()
            self.suppressed_frames += 1
            self.sent.append(_SentFrame(now, frame, False))
            return
        payload = ulaw_encode(frame)
        at = time.monotonic()
        self._transport.sendto(self._rtp.packet(payload), self._remote)
        self.sent.append(_SentFrame(at, frame, utterance is not None))
        if utterance is not None:
            utterance.sent += 1
            if utterance.sent == 1:
                utterance.first_sent = at
            if utterance.sent == utterance.last_voiced + 1:
                utterance.last_voiced_sent = at
            if utterance.sent == utterance.frames and not utterance.done.done():
                voiced = utterance.last_voiced_sent if utterance.last_voiced >= 0 else at
                utterance.done.set_result(Said(utterance.first_sent, at, utterance.frames, voiced))

    def _due_echo(self, now: float) -> np.ndarray | None:
        # One frame per tick, oldest first; a backlog (arrival bursts) is trimmed so the delay holds.
        while len(self._echo) > 5:
            self._echo.popleft()
        if self._echo and self._echo[0][0] <= now:
            return self._echo.popleft()[1].astype(np.int32)
        return None

    async def say(
        self, audio: str | np.ndarray, *, sample_rate: int = 16000, voice: str = "en-us", speed: int = 150
    ) -> Said:
        """Send speech (text through espeak-ng, or int16 PCM at ``sample_rate``) paced as a phone would.

        Returns once its last packet is sent. Utterances queue behind one another.
        """
        if isinstance(audio, str):
            pcm = await speech(audio, voice=voice, speed=speed)
        elif sample_rate != RATE:
            pcm = np.asarray(soxr.resample(audio.astype(np.int16), sample_rate, RATE), dtype=np.int16)
        else:
            pcm = audio.astype(np.int16)
        if pcm.size == 0:
            raise RtpCallerError("nothing to say: the audio is empty")
        frames = -(-pcm.size // SPF)
        padded = np.zeros(frames * SPF, dtype=np.int16)
        padded[: pcm.size] = pcm
        chunks = [padded[i * SPF : (i + 1) * SPF] for i in range(frames)]
        utterance = _Utterance(frames, last_voiced_frame(chunks), asyncio.get_running_loop().create_future())
        self._speech.extend((chunk, utterance) for chunk in chunks)
        return await utterance.done

    def play_continuous(self, source: FrameSource | None, *, delay_ms: float = 0.0) -> None:
        """Mix ``source(received_frame)`` into what is sent, ``delay_ms`` after each frame arrived.

        For a speakerphone echo: ``play_continuous(speakerphone_echo(-12), delay_ms=40)``.
        ``None`` stops it. Mixed with speech from :meth:`say` when both play.
        """
        self._source = source
        self._source_delay = delay_ms / 1000
        self._echo.clear()

    # ------------------------------------------------------------ receiving

    def _on_datagram(self, data: bytes, at: float) -> None:
        try:
            pt, seq, ts, marker, payload = parse_packet(data)
        except ValueError:
            self.unknown_packets += 1
            return
        if pt != PT_ULAW:
            if pt != PT_CN:
                self.unknown_packets += 1
            return
        pcm = ulaw_decode(payload)
        self.received.append(Received(at, seq, ts, marker, pcm, level_dbfs(pcm)))
        if self._source is not None:
            out = self._source(pcm)
            if out is not None:
                self._echo.append((at + self._source_delay, out))
        self._rx_event.set()

    async def _wait_until(self, check: Callable[[], float | None], timeout: float, what: str) -> float:  # noqa: ASYNC109
        deadline = time.monotonic() + timeout
        while True:
            result = check()
            if result is not None:
                return result
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"call {self.number}: no {what} within {timeout:g} s "
                    f"({len(self.received)} packets received, ended={self.ended.is_set()})"
                )
            self._rx_event.clear()
            with contextlib.suppress(TimeoutError):
                # Wake on packets, and on the clock for silence (no packets at all).
                await asyncio.wait_for(self._rx_event.wait(), min(remaining, 0.02))

    def loud(self, after: float = 0.0, before: float = math.inf) -> list[Received]:
        """Packets louder than the speech threshold that arrived in (after, before]."""
        return [p for p in self.received if after < p.at <= before and p.level > self.loud_dbfs]

    def packets(self, after: float = 0.0, before: float = math.inf) -> list[Received]:
        """Packets of any level that arrived in (after, before]."""
        return [p for p in self.received if after < p.at <= before]

    async def wait_agent_speech(self, timeout: float = 10.0, *, after: float | None = None) -> float:  # noqa: ASYNC109
        """Arrival time of the first loud packet after ``after`` (default: now)."""
        return await self._wait_first(self.loud_dbfs, timeout, after, "agent speech")

    async def wait_agent_audio(self, timeout: float = 10.0, *, after: float | None = None) -> float:  # noqa: ASYNC109
        """Arrival time of the first packet of any level after ``after`` (default: now).

        Asterisk forwards only what the agent sends, and the agent sends only
        while it talks, so this is the start of its talkspurt (a TTS's lead-in
        silence included).
        """
        return await self._wait_first(-math.inf, timeout, after, "agent audio")

    async def _wait_first(self, min_dbfs: float, timeout: float, after: float | None, what: str) -> float:  # noqa: ASYNC109
        since = time.monotonic() if after is None else after
        start = 0

        def check() -> float | None:
            nonlocal start
            packets = self.received
            for i in range(start, len(packets)):
                if packets[i].at > since and packets[i].level > min_dbfs:
                    return packets[i].at
            start = len(packets)
            return None

        return await self._wait_until(check, timeout, what)

    async def wait_agent_silence(
        self,
        min_silence_ms: float = 500.0,
        timeout: float = 30.0,  # noqa: ASYNC109
        *,
        after: float | None = None,
    ) -> float:
        """Arrival time of the last loud packet after ``after`` once ``min_silence_ms`` passed with none.

        If nothing loud arrived after ``after`` it returns ``after``.
        """
        since = time.monotonic() if after is None else after
        gap = min_silence_ms / 1000

        def check() -> float | None:
            last = since
            for packet in reversed(self.received):
                if packet.at <= since:
                    break
                if packet.level > self.loud_dbfs:
                    last = packet.at
                    break
            return last if time.monotonic() - last >= gap else None

        return await self._wait_until(check, timeout, f"{min_silence_ms:g} ms of agent silence")

    async def wait_greeting(self) -> None:
        """The agent's first utterance, heard to its end (700 ms of quiet)."""
        await self.wait_agent_speech(timeout=15)
        await self.wait_agent_silence(min_silence_ms=700, timeout=20)

    async def ask(self, question: str) -> Said:
        """Say ``question`` and wait for the agent's whole reply to it."""
        said = await self.say(question)
        await self.wait_agent_speech(timeout=20, after=said.last_sent)
        await self.wait_agent_silence(min_silence_ms=700, timeout=30)
        return said

    def agent_speech_segments(
        self, *, min_gap_ms: float = 400.0, min_len_ms: float = 100.0, after: float = 0.0
    ) -> list[tuple[float, float]]:
        """(first, last + 20 ms) arrival times of stretches of agent speech; short pauses merged."""
        segments: list[list[float]] = []
        for packet in self.loud(after):
            if segments and packet.at - segments[-1][1] < min_gap_ms / 1000:
                segments[-1][1] = packet.at + FRAME_S
            else:
                segments.append([packet.at, packet.at + FRAME_S])
        return [(a, b) for a, b in segments if b - a >= min_len_ms / 1000]

    def arrival_intervals(
        self, *, after: float = 0.0, before: float = math.inf, max_gap_ms: float = 200.0
    ) -> list[float]:
        """Seconds between consecutive received packets within talkspurts (longer gaps left out)."""
        times = [p.at for p in self.received if after < p.at <= before]
        gaps = np.diff(np.asarray(times)) if len(times) > 1 else np.zeros(0)
        return [float(g) for g in gaps if g <= max_gap_ms / 1000]

    # ------------------------------------------------------------ ending

    async def hangup(self) -> None:
        """Hang up our leg (the agent sees the caller hang up)."""
        if self._hung_up or self._http is None:
            return
        self._hung_up = True
        for path in (f"/channels/{self.channel_id}", f"/channels/{self.media_channel_id}"):
            with contextlib.suppress(RtpCallerError, aiohttp.ClientError, TimeoutError):
                await self._ari("DELETE", path)
        with contextlib.suppress(RtpCallerError, aiohttp.ClientError, TimeoutError):
            await self._ari("DELETE", f"/bridges/{self.bridge_id}")

    async def wait_ended(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Until our leg leaves the application (the agent hung up or handed the call on)."""
        await asyncio.wait_for(self.ended.wait(), timeout)

    async def close(self) -> None:
        if self._closed:
            return
        try:
            await self.hangup()
        finally:
            self._closed = True
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if self._ws is not None:
                await self._ws.close()
            if self._http is not None:
                await self._http.close()
            if self._transport is not None:
                self._transport.close()

    def dump_wav(self, path: str | Path) -> Path:
        """Stereo 8 kHz WAV on the call's own timeline: left what was sent, right what was received."""
        path = Path(path)
        events = [f.at for f in self.sent] + [p.at for p in self.received]
        if not events:
            raise RtpCallerError("nothing was sent or received")
        t0 = min(events)
        length = int((max(events) - t0) * RATE) + SPF
        out = np.zeros((length, 2), dtype=np.int16)
        for col, items in (
            (0, [(f.at, f.pcm) for f in self.sent]),
            (1, [(p.at, p.pcm) for p in self.received]),
        ):
            for at, pcm in items:
                start = int((at - t0) * RATE)
                out[start : start + pcm.size, col] = pcm[: length - start]
        path.parent.mkdir(parents=True, exist_ok=True)
        with wave.open(str(path), "wb") as w:
            w.setnchannels(2)
            w.setsampwidth(2)
            w.setframerate(RATE)
            w.writeframes(out.astype("<i2").tobytes())
        return path
