"""A fake Azure Speech service behind our SDK seam (``providers.azure.sdk.SpeechBackend``).

Azure's socket protocol is proprietary, so the adapters are driven through
the seam. Like the SDK, the fake calls every callback from threads of its
own, never from the caller's: the adapters must hop to their event loop.

Recognition: audio written is counted; at half of ``bytes_per_phrase`` the
fake reports speech start and a partial result, at ``bytes_per_phrase`` the
phrase (from ``phrases``, in turn). ``cancel_after_bytes`` cancels with
``cancel_code``. Synthesis: ``tts_chunks`` chunks of a tone, then done;
``stop`` ends it early; ``tts_cancel_code`` cancels instead.
"""

from __future__ import annotations

import math
import queue
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Self

import numpy as np
from pydantic import Field

from providers.azure.options import AzureOptions
from providers.azure.sdk import PERMANENT_ERRORS, RecognitionCallbacks, SynthesisCallbacks
from providers.azure.stt import AzureSTT
from providers.azure.tts import AzureTTS
from providers.base import AudioSpec, ProviderContext


@dataclass
class FakeRecognition:
    spec: AudioSpec
    language: str
    callbacks: RecognitionCallbacks
    owner: FakeAzure
    audio_bytes: int = 0
    stopped: bool = False
    stop_thread: int | None = None
    _inbox: queue.Queue[bytes | None] = field(default_factory=queue.Queue)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fake-azure-recognition", daemon=True)
        self._thread.start()

    def write(self, audio: bytes) -> None:
        self._inbox.put(audio)

    def stop(self) -> None:
        self.stop_thread = threading.get_ident()
        self._inbox.put(None)
        if self._thread is not None:
            self._thread.join(5)
        self.stopped = True

    def _call(self, name: str, *args: object) -> None:
        self.owner.callback_threads.add(threading.get_ident())
        getattr(self.callbacks, name)(*args)

    def _run(self) -> None:
        owner = self.owner
        phrase_bytes = 0
        started = False
        while True:
            audio = self._inbox.get()
            if audio is None:
                self._call("on_stopped")
                return
            self.audio_bytes += len(audio)
            phrase_bytes += len(audio)
            if owner.cancel_after_bytes is not None and self.audio_bytes >= owner.cancel_after_bytes:
                code = owner.cancel_code
                self._call("on_canceled", f"{code}: fake cancellation", code not in PERMANENT_ERRORS)
                return
            if owner.bytes_per_phrase is None:
                continue
            if not started and phrase_bytes >= owner.bytes_per_phrase // 2:
                started = True
                self._call("on_speech_started")
                words = owner.upcoming().split()
                self._call("on_recognizing", " ".join(words[: max(1, len(words) // 2)]))
            if phrase_bytes >= owner.bytes_per_phrase:
                self._call("on_recognized", owner.next_phrase())
                phrase_bytes = 0
                started = False


@dataclass
class FakeSynthesis:
    text: str
    sample_rate: int
    voice: str | None
    language: str
    callbacks: SynthesisCallbacks
    owner: FakeAzure
    chunks_sent: int = 0
    stopped: bool = False
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fake-azure-synthesis", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.stopped = True

    def _run(self) -> None:
        owner = self.owner
        owner.callback_threads.add(threading.get_ident())
        if owner.tts_cancel_code is not None:
            code = owner.tts_cancel_code
            self.callbacks.on_canceled(f"{code}: fake cancellation", code not in PERMANENT_ERRORS)
            return
        samples = self.sample_rate // 50  # 20 ms chunks
        for n in range(owner.tts_chunks):
            if self._stop.is_set():
                return
            chunk = b"".join(
                struct.pack(
                    "<h", int(8000 * math.sin(2 * math.pi * 440 * (n * samples + i) / self.sample_rate))
                )
                for i in range(samples)
            )
            self.callbacks.on_audio(chunk)
            self.chunks_sent += 1
            if owner.tts_delay:
                time.sleep(owner.tts_delay)
        self.callbacks.on_done()


class FakeAzure:
    """A ``SpeechBackend`` whose callbacks come from its own threads."""

    def __init__(
        self,
        phrases: Sequence[str] = ("hello there",),
        *,
        bytes_per_phrase: int | None = None,
        cancel_after_bytes: int | None = None,
        cancel_code: str = "ConnectionFailure",
        tts_chunks: int = 5,
        tts_delay: float = 0.0,
        tts_cancel_code: str | None = None,
    ) -> None:
        self.phrases = list(phrases)
        self.bytes_per_phrase = bytes_per_phrase
        self.cancel_after_bytes = cancel_after_bytes
        self.cancel_code = cancel_code
        self.tts_chunks = tts_chunks
        self.tts_delay = tts_delay
        self.tts_cancel_code = tts_cancel_code
        self.recognitions: list[FakeRecognition] = []
        self.syntheses: list[FakeSynthesis] = []
        self.callback_threads: set[int] = set()
        self._phrase = 0

    def upcoming(self) -> str:
        return self.phrases[self._phrase % len(self.phrases)] if self.phrases else ""

    def next_phrase(self) -> str:
        text = self.upcoming()
        self._phrase += 1
        return text

    def start_recognition(
        self, spec: AudioSpec, language: str, callbacks: RecognitionCallbacks
    ) -> FakeRecognition:
        recognition = FakeRecognition(spec, language, callbacks, self)
        self.recognitions.append(recognition)
        recognition.start()
        return recognition

    def start_synthesis(
        self, text: str, sample_rate: int, voice: str | None, language: str, callbacks: SynthesisCallbacks
    ) -> FakeSynthesis:
        synthesis = FakeSynthesis(text, sample_rate, voice, language, callbacks, self)
        self.syntheses.append(synthesis)
        synthesis.start()
        return synthesis


# --------------------------------------------------------------------------
# For calls through the real Asterisk: the adapters with this fake behind the
# seam, nameable in a profile as "tests.fakes.azure_speech:LabAzureSTT" / ":LabAzureTTS".


class SegmentingRecognition(FakeRecognition):
    """Recognises one phrase per stretch of speech, ended by a pause, as the service does."""

    LOUD_RMS = 500.0
    START_MS = 200
    PAUSE_MS = 300

    def _run(self) -> None:
        owner = self.owner
        rate = self.spec.sample_rate
        loud_ms = quiet_ms = 0.0
        started = False
        while True:
            audio = self._inbox.get()
            if audio is None:
                self._call("on_stopped")
                return
            self.audio_bytes += len(audio)
            if self.spec.encoding != "pcm16" or len(audio) < 2:
                continue
            samples = np.frombuffer(audio[: len(audio) // 2 * 2], dtype="<i2").astype(np.float64)
            ms = samples.size * 1000 / rate
            if float(np.sqrt(np.mean(samples * samples))) > self.LOUD_RMS:
                loud_ms += ms
                quiet_ms = 0.0
            else:
                quiet_ms += ms
            if not started and loud_ms >= self.START_MS:
                started = True
                self._call("on_speech_started")
                self._call("on_recognizing", owner.upcoming().split()[0])
            if started and quiet_ms >= self.PAUSE_MS:
                self._call("on_recognized", owner.next_phrase())
                started = False
                loud_ms = quiet_ms = 0.0


class SegmentingFakeAzure(FakeAzure):
    def start_recognition(
        self, spec: AudioSpec, language: str, callbacks: RecognitionCallbacks
    ) -> FakeRecognition:
        recognition = SegmentingRecognition(spec, language, callbacks, self)
        self.recognitions.append(recognition)
        recognition.start()
        return recognition


class LabAzureSTTOptions(AzureOptions):
    phrases: list[str] = Field(default_factory=lambda: ["hello there"])  # heard, one per utterance


class LabAzureTTSOptions(AzureOptions):
    tts_chunks: int = 60


class LabAzureSTT(AzureSTT):
    Options = LabAzureSTTOptions

    @classmethod
    def create(cls, ctx: ProviderContext) -> Self:
        phrases = [str(p) for p in ctx.options.get("phrases", ["hello there"])]
        return cls(SegmentingFakeAzure(phrases), language=ctx.language)

    @classmethod
    def check(cls, ctx: ProviderContext) -> list[str]:
        return []


class LabAzureTTS(AzureTTS):
    Options = LabAzureTTSOptions

    @classmethod
    def create(cls, ctx: ProviderContext) -> Self:
        return cls(FakeAzure(tts_chunks=int(ctx.options.get("tts_chunks", 60))), language=ctx.language)

    @classmethod
    def check(cls, ctx: ProviderContext) -> list[str]:
        return []
