"""A tiny µ-law RTP endpoint for ``doctor`` and ``call``: hears Asterisk, speaks to it.

It binds where the agent binds its media, inside the agent's port range, so
it meets the same firewalls and addresses the agent does. What it hears is
kept as levels per 20 ms packet (and optionally the audio); what it sends is
paced on absolute deadlines like the agent's own pacer, silence between phrases.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import socket
import time
from collections import deque
from collections.abc import Callable

import numpy as np

from ari_agent.media.codecs import ulaw_decode, ulaw_encode
from ari_agent.media.rtp import RtpPacket, parse_rtp

FRAME_SAMPLES = 160  # 20 ms at 8 kHz
FRAME_S = 0.02
PT_ULAW = 0
SILENCE_DBFS = -90.0


def level_dbfs(pcm: np.ndarray) -> float:
    if pcm.size == 0:
        return SILENCE_DBFS
    rms = float(np.sqrt(np.mean(np.square(pcm.astype(np.float64) / 32768.0))))
    return max(20.0 * math.log10(rms), SILENCE_DBFS) if rms > 0 else SILENCE_DBFS


def tone(seconds: float, hz: float = 1000.0, dbfs: float = -12.0, rate: int = 8000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    amplitude = 32767 * 10 ** (dbfs / 20)
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def bind_in_range(host: str, port_min: int, port_max: int) -> socket.socket:
    """A UDP socket on ``host`` at the highest free port of the range (the agent's pool starts low)."""
    last: OSError | None = None
    for port in range(port_max, port_min - 1, -1):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            last = exc
            continue
        sock.setblocking(False)
        return sock
    raise OSError(f"no free UDP port on {host} in {port_min}-{port_max}: {last}")


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, on_packet: Callable[[bytes, tuple[str, int]], None]) -> None:
        self._on_packet = on_packet

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self._on_packet(data, addr)


class RtpProbe:
    """One µ-law RTP leg: counts and measures what arrives, sends PCM paced at 20 ms."""

    def __init__(self, sock: socket.socket, *, keep_audio: bool = False) -> None:
        self.sock = sock
        self.port: int = sock.getsockname()[1]
        self.packets = 0
        self.bad_packets = 0
        self.levels: list[float] = []  # dBFS per received packet, in arrival order
        self.arrivals: list[float] = []  # monotonic time per received packet
        self.keep_audio = keep_audio
        self.audio: list[np.ndarray] = []
        self.remote: tuple[str, int] | None = None  # where to send (Asterisk's end)
        self.first_source: tuple[str, int] | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._seq = random.randrange(1 << 16)
        self._ts = random.randrange(1 << 32)
        self._ssrc = random.randrange(1 << 32)
        self.sent = 0
        self.on_level: Callable[[float, float], None] | None = None  # (monotonic time, dBFS)
        self._queue: deque[tuple[np.ndarray, asyncio.Future[None] | None]] = deque()
        self._stream_task: asyncio.Task[None] | None = None
        self._silence = np.zeros(FRAME_SAMPLES, dtype=np.int16)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self._received), sock=self.sock)
        self._transport = transport

    def close(self) -> None:
        if self._stream_task is not None:
            self._stream_task.cancel()
            self._stream_task = None
        self.flush()
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        else:
            self.sock.close()

    def _received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            packet = parse_rtp(data)
        except ValueError:
            self.bad_packets += 1
            return
        if packet.payload_type != PT_ULAW:
            self.bad_packets += 1
            return
        if self.first_source is None:
            self.first_source = addr
        now = time.monotonic()
        pcm = ulaw_decode(packet.payload)
        level = level_dbfs(pcm)
        self.packets += 1
        self.levels.append(level)
        self.arrivals.append(now)
        if self.keep_audio:
            self.audio.append(pcm)
        if self.on_level is not None:
            self.on_level(now, level)

    def loudest(self, since: int = 0) -> float:
        return max(self.levels[since:], default=SILENCE_DBFS)

    def start_streaming(self) -> None:
        """Send a packet every 20 ms from now on: queued audio, else silence, as a phone does.

        The far end's voice activity detection needs the silence to see where
        speech ends, and a receiver waiting for first media needs the packets.
        """
        if self._transport is None or self.remote is None:
            raise RuntimeError("RtpProbe: start() and a remote address come first")
        if self._stream_task is None:
            self._stream_task = asyncio.create_task(self._stream(), name=f"rtp-probe-{self.port}")

    def play(self, pcm: np.ndarray) -> asyncio.Future[None]:
        """Queue 8 kHz PCM behind what is queued; the future is done once its last packet is sent."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        frames = [pcm[i : i + FRAME_SAMPLES] for i in range(0, len(pcm), FRAME_SAMPLES)]
        for i, frame in enumerate(frames):
            if len(frame) < FRAME_SAMPLES:
                frame = np.concatenate([frame, np.zeros(FRAME_SAMPLES - len(frame), dtype=np.int16)])
            self._queue.append((frame, done if i == len(frames) - 1 else None))
        if not frames:
            done.set_result(None)
        return done

    def flush(self) -> None:
        """Drop queued audio (a hang-up); pending play() futures finish."""
        for _, done in self._queue:
            if done is not None and not done.done():
                done.set_result(None)
        self._queue.clear()

    async def _stream(self) -> None:
        start = time.monotonic()
        n = 0
        talking = False
        while True:
            if self._queue:
                frame, done = self._queue.popleft()
                self._send(frame, marker=not talking)
                talking = True
                if done is not None and not done.done():
                    done.set_result(None)
            else:
                self._send(self._silence, marker=False)
                talking = False
            n += 1
            # Absolute deadlines: a late tick is not made up with a burst.
            delay = start + n * FRAME_S - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                n = int((time.monotonic() - start) / FRAME_S)

    def _send(self, frame: np.ndarray, marker: bool) -> None:
        assert self._transport is not None and self.remote is not None
        packet = RtpPacket(
            payload_type=PT_ULAW,
            sequence=self._seq,
            timestamp=self._ts,
            ssrc=self._ssrc,
            payload=ulaw_encode(frame),
            marker=marker,
        )
        with contextlib.suppress(OSError):  # ICMP unreachable from an earlier packet
            self._transport.sendto(packet.serialize(), self.remote)
        self.sent += 1
        self._seq = (self._seq + 1) & 0xFFFF
        self._ts = (self._ts + FRAME_SAMPLES) & 0xFFFFFFFF
