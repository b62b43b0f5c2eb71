"""Outbound RTP pacing: one 20 ms frame per deadline on an absolute monotonic grid.

Deadlines are ``talkspurt_start + n * 20 ms``, so sleep overshoot never
accumulates into drift. A wake-up that comes late sends one frame only and
re-aligns to the grid (no catch-up burst: Asterisk's jitter buffer handles a
gap better than a burst). When nothing is queued the task waits on an event,
so an idle call costs no wake-ups at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections import deque
from collections.abc import Callable, Hashable

import numpy as np

from ari_agent.media.codecs import FRAME_MS, SESSION_SAMPLE_RATE, Pcm, WireFormat, pcm_from_bytes
from ari_agent.media.resample import StreamResampler
from ari_agent.media.rtp import RtpPacket

log = logging.getLogger(__name__)

_PERIOD = FRAME_MS / 1000.0


class OutboundPacer:
    """Turns 16 kHz PCM into paced RTP packets (or bare frames) for one call."""

    def __init__(
        self,
        endpoint_send: Callable[[bytes], object],
        wire: WireFormat,
        ssrc: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        *,
        first_sequence: int | None = None,
        first_timestamp: int | None = None,
        on_sent: Callable[[Hashable | None], None] | None = None,
        on_audio_sent: Callable[[Pcm, float], None] | None = None,
        rtp: bool = True,
    ) -> None:
        self._send = endpoint_send
        # False: send() gets each bare 20 ms frame (a transport with its own framing, AudioSocket).
        self.rtp = rtp
        # A leg may send in another format than it receives (slin16: 8 kHz back).
        self.wire = wire = wire.outbound
        self.ssrc = ssrc if ssrc is not None else random.getrandbits(32)
        self._clock = clock
        self.on_sent = on_sent
        # Gets each frame's audio (at the wire rate) as it leaves: the echo guard's reference.
        self.on_audio_sent = on_audio_sent
        self._spf = wire.samples_per_frame
        # Random starts (RFC 3550 5.1) mean any call may cross both wraps.
        self._seq = random.getrandbits(16) if first_sequence is None else first_sequence
        self._ts_base = random.getrandbits(32) if first_timestamp is None else first_timestamp
        self._frames: deque[tuple[bytes, Hashable | None]] = deque()
        self._carry: Pcm = np.zeros(0, dtype=np.int16)
        self._resampler = StreamResampler(SESSION_SAMPLE_RATE, wire.sample_rate)
        self._sent_by_tag: dict[Hashable, int] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._marker_next = True
        self._paused = False
        self._task: asyncio.Task[None] | None = None
        self._t0 = 0.0
        self._last_index: int | None = None
        self._last_send_at: float | None = None
        self.packets_sent = 0
        self.late_ticks = 0  # late wake-ups that made the pacer skip grid points
        self.skipped_ticks = 0  # grid points skipped in total
        self.send_errors = 0

    # feeding

    def enqueue(self, pcm: Pcm | bytes, tag: Hashable | None = None, *, final: bool = True) -> int:
        """Queue 16 kHz PCM16 (int16 array or native bytes); return the number of frames queued.

        ``final=False`` marks a chunk of a longer stream: a partial last frame
        is held back for the next chunk instead of being padded with silence.
        """
        if isinstance(pcm, bytes | bytearray | memoryview):
            pcm = pcm_from_bytes(bytes(pcm))
        wire_pcm = self._resampler.process(pcm)
        if final and not self._resampler.passthrough:
            wire_pcm = np.concatenate((wire_pcm, self._resampler.flush()))
        buf = np.concatenate((self._carry, wire_pcm)) if self._carry.size else wire_pcm
        whole, rest = divmod(buf.size, self._spf)
        if rest and final:
            buf = np.concatenate((buf, np.zeros(self._spf - rest, dtype=np.int16)))
            whole += 1
            rest = 0
        self._carry = buf[whole * self._spf :].copy() if rest else np.zeros(0, dtype=np.int16)
        if whole == 0:
            return 0
        payload = self.wire.encode(np.ascontiguousarray(buf[: whole * self._spf]))
        size = self.wire.bytes_per_frame
        self._frames.extend((payload[i * size : (i + 1) * size], tag) for i in range(whole))
        self._idle.clear()
        self._wake.set()
        return whole

    def enqueue_encoded(self, payload: bytes, tag: Hashable | None = None) -> int:
        """Queue audio already in the outbound wire format (e.g. µ-law from a provider that speaks it).

        A trailing partial frame is padded with the format's silence.
        """
        size = self.wire.bytes_per_frame
        whole, rest = divmod(len(payload), size)
        if rest:
            payload += bytes([self.wire.silence_byte]) * (size - rest)
            whole += 1
        if whole == 0:
            return 0
        self._frames.extend((payload[i * size : (i + 1) * size], tag) for i in range(whole))
        self._idle.clear()
        self._wake.set()
        return whole

    def pause(self) -> None:
        """Hold what is queued, unsent (the caller may be interrupting); ``resume`` sends it on."""
        self._paused = True

    def resume(self) -> None:
        if self._paused:
            self._paused = False
            self._wake.set()

    @property
    def paused(self) -> bool:
        return self._paused

    def flush(self) -> int:
        """Drop everything queued at once (barge-in); return the number of frames dropped."""
        dropped = len(self._frames)
        self._paused = False
        self._frames.clear()
        self._carry = np.zeros(0, dtype=np.int16)
        self._resampler.reset()
        self._marker_next = True
        self._idle.set()
        return dropped

    # state

    @property
    def queued_ms(self) -> int:
        return len(self._frames) * FRAME_MS

    @property
    def speaking(self) -> bool:
        return bool(self._frames)

    def frames_sent(self, tag: Hashable) -> int:
        """Frames of ``tag`` actually sent so far (times 20 ms: what the caller heard)."""
        return self._sent_by_tag.get(tag, 0)

    async def wait_idle(self) -> None:
        """Return once the queue has drained (last frame sent) or was flushed."""
        await self._idle.wait()

    # task

    def start(self) -> None:
        if self._task is not None and not self._task.done():
            return
        self._t0 = self._clock()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="rtp-pacer")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._idle.set()

    async def _run(self) -> None:
        deadline: float | None = None
        while True:
            if self._paused:
                # Held: the queue is kept, and sending starts a new talkspurt when it resumes.
                self._marker_next = True
                self._wake.clear()
                await self._wake.wait()
                deadline = None
                continue
            if not self._frames:
                self._marker_next = True
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                deadline = None
                continue
            if deadline is None:
                deadline = self._talkspurt_start()
            delay = deadline - self._clock()
            if delay > 0:
                await asyncio.sleep(delay)
            if not self._frames or self._paused:  # flushed or paused while we slept
                continue
            now = self._clock()
            frame, tag = self._frames.popleft()
            self._emit(frame, tag, now)
            lateness = now - deadline
            # Next grid point at least half a period away: late or not, packets stay >= 10 ms apart.
            steps = 1 if lateness < _PERIOD / 2 else math.ceil((lateness + _PERIOD / 2) / _PERIOD)
            if steps > 1:
                self.late_ticks += 1
                self.skipped_ticks += steps - 1
            deadline += steps * _PERIOD

    def _talkspurt_start(self) -> float:
        now = self._clock()
        if self._last_send_at is not None and now < self._last_send_at + _PERIOD:
            return self._last_send_at + _PERIOD
        return now

    def _emit(self, frame: bytes, tag: Hashable | None, now: float) -> None:
        marker = self._marker_next
        if marker or self._last_index is None:
            # New talkspurt: move the RTP clock on by the wall time that passed, so it stays true.
            wall_index = round((now - self._t0) / _PERIOD)
            index = wall_index if self._last_index is None else max(self._last_index + 1, wall_index)
        else:
            index = self._last_index + 1
        if self.rtp:
            data = RtpPacket(
                payload_type=self.wire.send_payload_type,
                sequence=self._seq,
                timestamp=(self._ts_base + index * self._spf) & 0xFFFF_FFFF,
                ssrc=self.ssrc,
                payload=frame,
                marker=marker,
            ).serialize()
        else:
            data = frame
        try:
            self._send(data)
        except Exception:
            self.send_errors += 1
            if self.send_errors == 1:
                log.exception("media send failed (further failures only counted)")
        self._seq = (self._seq + 1) & 0xFFFF
        self._last_index = index
        self._last_send_at = now
        self._marker_next = False
        self.packets_sent += 1
        if tag is not None:
            self._sent_by_tag[tag] = self._sent_by_tag.get(tag, 0) + 1
        if self.on_sent is not None:
            try:
                self.on_sent(tag)
            except Exception:
                log.exception("on_sent callback failed")
        if self.on_audio_sent is not None:
            try:
                self.on_audio_sent(self.wire.decode(frame), now)
            except Exception:
                log.exception("on_audio_sent callback failed")
