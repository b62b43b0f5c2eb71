"""The audio front end: echo cancellation and noise suppression before the echo guard, VAD and STT.

Per call, each inbound 20 ms frame of caller audio (16 kHz PCM16) goes
through up to two stages of WebRTC's audio processing module (APM, from the
``livekit`` wheel, run in-process, no server):

- **echo cancellation** (AEC3, with a high-pass filter): subtracts the
  agent's own voice coming back from the caller's side. Its reference is
  exactly what the agent sent (8 kHz frames as they left the pacer, with
  their send times, :meth:`AudioFrontEnd.sent`). It runs only while the
  agent has sent sound in the last ``hold_s`` (echo needs a source); in
  between neither stream is fed, so the two stay aligned and the filter it
  learnt is kept for the next time (measured: it still converges).
- **noise suppression** (WebRTC NS, with a high-pass filter): lowers
  stationary noise (hiss, hum, fans) that makes the VAD start turns. It
  runs on every frame that is not digital silence, and its output feeds the
  voice detector only: measured on the offline recogniser, suppressed audio
  cost words (most under a babble of voices, which it does not remove),
  while brown noise's false starts fell from 24 a minute to none
  (``tests/bench/bench_frontend.py``).

The echo guard (``echo.py``) stays behind both: what the canceller leaves
is still judged there. Sans-IO: frames and times in, frames out; the work is
tens of microseconds per frame (``tests/bench/bench_frontend.py``), done in
the caller's thread. The reference is fed one 20 ms frame per inbound frame
(the oldest one sent by then, silence when the agent sent nothing), so the
two streams run at the same rate whatever the pacer's and the receive
clock's jitter.
"""

from __future__ import annotations

import importlib.util
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ari_agent.errors import ConfigError

if TYPE_CHECKING:
    from ari_agent.profiles import ProfileConfig

RATE = 16000  # the caller's audio, as the pipeline sees it
REF_RATE = 8000  # what the pacer reports it sent
SUB_MS = 10  # APM works on 10 ms frames
FRAME_SAMPLES = RATE // 50
FRAME_BYTES = FRAME_SAMPLES * 2
SUB = RATE * SUB_MS // 1000
REF_SUB = REF_RATE * SUB_MS // 1000
HOLD_S = 1.0  # the canceller runs this long after the agent's last sound (echo delay + tail)
REF_LOUD = 30.0  # RMS of a sent frame that counts as sound (int16; silence and dither are below)
MAX_BACKLOG = 10  # reference frames waiting (200 ms): beyond that the oldest are dropped

INSTALL_HINT = "pip install 'ari-agent[audio]' (the livekit wheel)"
_ZERO_REF = bytes(REF_SUB * 2)


def frontend_missing() -> str | None:
    """What the front end lacks on this machine (one line), or None when it can run."""
    if importlib.util.find_spec("livekit") is None or importlib.util.find_spec("livekit.rtc") is None:
        return (
            "echo cancellation and noise suppression need the livekit package (not installed): "
            + INSTALL_HINT
        )
    return None


def wanted_stages(profile: ProfileConfig) -> list[str]:
    """The profile fields that turn a front-end stage on."""
    return [f for f in ("echo_cancellation", "noise_suppression") if getattr(profile, f)]


@dataclass
class StageStats:
    frames: int = 0  # 20 ms frames this stage processed
    ns: int = 0  # CPU time spent, nanoseconds (thread time)

    @property
    def us_per_frame(self) -> float:
        return self.ns / self.frames / 1000 if self.frames else 0.0


class AudioFrontEnd:
    """One call's front end. ``sent`` for every frame the agent sends, ``process`` for every frame heard."""

    def __init__(
        self, *, echo_cancellation: bool = True, noise_suppression: bool = True, hold_s: float = HOLD_S
    ) -> None:
        missing = frontend_missing()
        if missing is not None:
            raise RuntimeError(missing)
        from livekit import rtc  # deferred: an optional extra

        self._rtc: Any = rtc
        self.hold_s = hold_s
        self._aec: Any = (
            rtc.AudioProcessingModule(echo_cancellation=True, high_pass_filter=True)
            if echo_cancellation
            else None
        )
        self._ns: Any = (
            rtc.AudioProcessingModule(noise_suppression=True, high_pass_filter=True)
            if noise_suppression
            else None
        )
        self._ref: deque[tuple[float, bytes]] = deque()
        self._last_sound: float | None = None
        self.echo = StageStats()
        self.noise = StageStats()
        self.ref_dropped = 0  # reference frames dropped from a backlog (streams out of step)

    @property
    def echo_cancellation(self) -> bool:
        return self._aec is not None

    @property
    def noise_suppression(self) -> bool:
        return self._ns is not None

    def sent(self, pcm8k: np.ndarray, at: float) -> None:
        """One 20 ms frame (8 kHz int16) as it left for the caller, at monotonic time ``at``."""
        if self._aec is None:
            return
        samples = pcm8k.astype(np.int16, copy=False)
        loud = float(np.dot(samples, samples.astype(np.float32))) >= REF_LOUD**2 * samples.size
        if loud:
            self._last_sound = at
        if loud or self._ref:  # quiet frames matter only between sounds
            self._ref.append((at, samples.astype("<i2").tobytes()))

    def cancelling(self, at: float) -> bool:
        """Whether the canceller runs for a frame heard at ``at``."""
        return self._last_sound is not None and at - self._last_sound <= self.hold_s

    def process(self, frame: bytes, at: float) -> tuple[bytes, bytes]:
        """One inbound 20 ms frame (16 kHz PCM16) heard at ``at``: (for the recogniser, for the VAD).

        The recogniser gets the frame with the echo removed; the voice
        detector gets it with the noise suppressed too (measured: suppression
        cuts the turns noise starts, but costs the recogniser words).
        """
        if len(frame) != FRAME_BYTES:
            raise ValueError(f"frame of {len(frame)} bytes is not 20 ms of PCM16 at {RATE} Hz")
        out = frame
        if self._aec is not None:
            if self.cancelling(at):
                out = self._cancel(out, self._due(at))
            else:
                while self._ref and self._ref[0][0] <= at:  # quiet: nothing to cancel
                    self._ref.popleft()
        if self._ns is not None and any(out):
            return out, self._suppress(out)
        return out, out

    def _due(self, at: float) -> bytes:
        """The reference for this inbound frame: the oldest frame sent by ``at``, or silence."""
        ref = self._ref
        due = 0
        for sent_at, _ in ref:
            if sent_at > at:
                break
            due += 1
        if due > MAX_BACKLOG:
            for _ in range(due - MAX_BACKLOG):
                ref.popleft()
            self.ref_dropped += due - MAX_BACKLOG
            due = MAX_BACKLOG
        if not due:
            return bytes(REF_SUB * 4)
        return ref.popleft()[1]

    def _cancel(self, frame: bytes, reference: bytes) -> bytes:
        return self._apm(self._aec, frame, reference, self.echo)

    def _suppress(self, frame: bytes) -> bytes:
        return self._apm(self._ns, frame, None, self.noise)

    def _apm(self, apm: Any, frame: bytes, reference: bytes | None, stats: StageStats) -> bytes:
        """One 20 ms frame through an APM as two 10 ms halves (the reference's first, if any)."""
        started = time.thread_time_ns()
        rtc = self._rtc
        near = bytearray(frame)
        for half in range(2):
            if reference is not None:
                far = bytearray(reference[half * REF_SUB * 2 : (half + 1) * REF_SUB * 2])
                apm.process_reverse_stream(rtc.AudioFrame(far, REF_RATE, 1, REF_SUB))
            piece = bytearray(near[half * SUB * 2 : (half + 1) * SUB * 2])
            apm.process_stream(rtc.AudioFrame(piece, RATE, 1, SUB))
            near[half * SUB * 2 : (half + 1) * SUB * 2] = piece
        stats.frames += 1
        stats.ns += time.thread_time_ns() - started
        return bytes(near)


def front_end_for(profile: ProfileConfig, profile_name: str) -> AudioFrontEnd | None:
    """The front end a profile asks for (None when both stages are off).

    Raises ConfigError naming the profile field when a stage is on and the
    package is missing (``check`` reports the same before any call).
    """
    stages = wanted_stages(profile)
    if not stages:
        return None
    missing = frontend_missing()
    if missing is not None:
        raise ConfigError(f"profiles.{profile_name}.{stages[0]}", missing, fix_for(stages))
    return AudioFrontEnd(
        echo_cancellation=profile.echo_cancellation, noise_suppression=profile.noise_suppression
    )


def fix_for(stages: list[str]) -> str:
    return f"{INSTALL_HINT}, or set {' and '.join(f'{s} = false' for s in stages)} in the profile"
