"""Voice activity detection with onset and hangover smoothing, for endpointing.

webrtcvad judges each frame; single frames flicker, so speech starts only
after ``onset_ms`` of consecutive voiced frames and ends only after
``hangover_ms`` of consecutive unvoiced ones. Frames quieter than an
energy floor never count as voiced: webrtcvad alone calls some line hiss
speech. The audio of the utterance is kept, from ``preroll_ms`` before the
onset (so the first phoneme is not lost) to ``postroll_ms`` after the last
voiced frame.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np
import webrtcvad

_SAMPLE_RATES = (8000, 16000, 32000, 48000)
_FRAME_MS = (10, 20, 30)


@dataclass(frozen=True)
class SpeechStarted:
    at_ms: int  # stream time of the first voiced frame of the onset


@dataclass(frozen=True)
class SpeechEnded:
    at_ms: int  # stream time where the last voiced frame ended
    speech_ms: int  # voiced audio in the utterance
    # Shorter than min_speech_ms (a click, a cough): no utterance to transcribe,
    # but it still closes the SpeechStarted that came before.
    discarded: bool = False


VadEvent = SpeechStarted | SpeechEnded


class VoiceActivityDetector:
    """Feed PCM16 frames in order; get an event when speech starts or ends."""

    def __init__(
        self,
        sample_rate: int = 16000,
        aggressiveness: int = 2,
        *,
        onset_ms: int = 60,
        hangover_ms: int = 600,
        min_speech_ms: int = 120,
        preroll_ms: int = 200,
        postroll_ms: int = 200,
        energy_floor_dbfs: float = -50.0,
        max_utterance_ms: int = 30_000,
    ) -> None:
        if sample_rate not in _SAMPLE_RATES:
            raise ValueError(f"sample rate {sample_rate} not supported; use one of {_SAMPLE_RATES}")
        if not 0 <= aggressiveness <= 3:
            raise ValueError(f"aggressiveness {aggressiveness} out of range 0..3")
        self.sample_rate = sample_rate
        self.onset_ms = onset_ms
        self.hangover_ms = hangover_ms
        self.min_speech_ms = min_speech_ms
        self.preroll_ms = preroll_ms
        self.postroll_ms = postroll_ms
        self.max_utterance_ms = max_utterance_ms
        # Mean square of int16 samples at the floor: compare squares, skip the sqrt.
        self._floor_ms = (32768.0 * 10 ** (energy_floor_dbfs / 20)) ** 2
        self._vad = webrtcvad.Vad(aggressiveness)
        self.reset()

    def reset(self) -> None:
        self._now_ms = 0
        self._speaking = False
        self._voiced_run_ms = 0
        self._silent_run_ms = 0
        self._speech_ms = 0
        self._last_voiced_end_ms = 0
        self._utt_start_ms = 0
        self._recent: deque[bytes] = deque()
        self._recent_ms = 0
        self._current: list[bytes] = []
        self._tail_bytes = 0  # bytes of _current after the last voiced frame
        self._utterance = b""

    @property
    def speaking(self) -> bool:
        return self._speaking

    @property
    def now_ms(self) -> int:
        """Stream time: milliseconds of audio processed since the start or the last reset."""
        return self._now_ms

    @property
    def speech_ms(self) -> int:
        """Voiced milliseconds in the utterance under way (0 when not speaking)."""
        return self._speech_ms if self._speaking else 0

    @property
    def last_voiced_ms(self) -> int:
        """Stream time at which the last voiced frame ended."""
        return self._last_voiced_end_ms

    def current_audio(self) -> bytes:
        """The utterance under way so far, pre-roll included (empty when not speaking)."""
        return b"".join(self._current) if self._speaking else b""

    def utterance(self) -> bytes:
        """Audio of the last finished utterance (empty if discarded or none yet)."""
        return self._utterance

    def is_voiced(self, frame: bytes) -> bool:
        """One frame's raw decision: loud enough and judged speech by webrtcvad."""
        samples = np.frombuffer(frame, dtype=np.int16).astype(np.float32)
        if float(np.dot(samples, samples)) < self._floor_ms * samples.size:
            return False
        return bool(self._vad.is_speech(frame, self.sample_rate))

    def process(self, frame: bytes) -> VadEvent | None:
        frame_ms = self._check_frame(frame)
        start_ms = self._now_ms
        self._now_ms += frame_ms
        voiced = self.is_voiced(frame)
        if not self._speaking:
            return self._idle(frame, frame_ms, start_ms, voiced)
        return self._in_speech(frame, frame_ms, voiced)

    def _check_frame(self, frame: bytes) -> int:
        samples, odd = divmod(len(frame), 2)
        frame_ms, rest = divmod(samples * 1000, self.sample_rate)
        if odd or rest or frame_ms not in _FRAME_MS:
            raise ValueError(
                f"frame of {len(frame)} bytes is not 10, 20 or 30 ms of PCM16 at {self.sample_rate} Hz"
            )
        return frame_ms

    def _idle(self, frame: bytes, frame_ms: int, start_ms: int, voiced: bool) -> VadEvent | None:
        self._recent.append(frame)
        self._recent_ms += frame_ms
        self._voiced_run_ms = self._voiced_run_ms + frame_ms if voiced else 0
        # Keep the pre-roll plus the onset run itself.
        limit = self.preroll_ms + max(self._voiced_run_ms, self.onset_ms)
        while self._recent and self._recent_ms - self._frame_len_ms(self._recent[0]) >= limit:
            self._recent_ms -= self._frame_len_ms(self._recent.popleft())
        if self._voiced_run_ms < self.onset_ms:
            return None
        self._speaking = True
        self._utt_start_ms = start_ms + frame_ms - self._voiced_run_ms
        self._speech_ms = self._voiced_run_ms
        self._silent_run_ms = 0
        self._last_voiced_end_ms = self._now_ms
        self._current = list(self._recent)
        self._tail_bytes = 0
        self._recent.clear()
        self._recent_ms = 0
        self._voiced_run_ms = 0
        return SpeechStarted(self._utt_start_ms)

    def _in_speech(self, frame: bytes, frame_ms: int, voiced: bool) -> VadEvent | None:
        self._current.append(frame)
        if voiced:
            self._speech_ms += frame_ms
            self._silent_run_ms = 0
            self._last_voiced_end_ms = self._now_ms
            self._tail_bytes = 0
        else:
            self._silent_run_ms += frame_ms
            self._tail_bytes += len(frame)
        too_long = self._now_ms - self._utt_start_ms >= self.max_utterance_ms
        if self._silent_run_ms < self.hangover_ms and not too_long:
            return None
        return self._end()

    def _end(self) -> SpeechEnded:
        audio = b"".join(self._current)
        keep_tail = min(self._tail_bytes, self.postroll_ms * self.sample_rate // 1000 * 2)
        audio = audio[: len(audio) - self._tail_bytes + keep_tail]
        discarded = self._speech_ms < self.min_speech_ms
        self._utterance = b"" if discarded else audio
        event = SpeechEnded(self._last_voiced_end_ms, self._speech_ms, discarded)
        self._speaking = False
        self._current = []
        self._tail_bytes = 0
        self._silent_run_ms = 0
        return event

    def _frame_len_ms(self, frame: bytes) -> int:
        return len(frame) * 500 // self.sample_rate


def dbfs(pcm: bytes) -> float:
    """RMS level of PCM16 audio in dB relative to full scale (-inf for silence)."""
    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float64)
    if samples.size == 0:
        return -math.inf
    rms = math.sqrt(float(np.dot(samples, samples)) / samples.size)
    return 20 * math.log10(rms / 32768.0) if rms else -math.inf
