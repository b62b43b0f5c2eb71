"""Azure live speech-to-text: a push stream in the call's own format, continuous recognition.

The SDK calls back on its own threads; every callback is handed to the
event loop with ``call_soon_threadsafe`` and turned into speech events there,
in order: ``recognizing`` -> InterimTranscript, ``recognized`` ->
FinalTranscript + EndOfTurn (Azure ends a phrase on its own silence timer),
``canceled`` -> ProviderError.

Azure has no "finalize now": ``finalize`` answers at once with an empty
final when nothing has been heard since the last phrase, and otherwise lets
the phrase in progress end on Azure's silence timer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Final, Self

from providers.azure import check as check_settings
from providers.azure import settings
from providers.azure.options import AzureOptions
from providers.azure.sdk import Recognition, SdkBackend, SpeechBackend
from providers.base import (
    MULAW_8K,
    PCM16_8K,
    PCM16_16K,
    STT,
    AudioSpec,
    EndOfTurn,
    FinalTranscript,
    InterimTranscript,
    ProviderContext,
    ProviderError,
    ProviderSpeechStarted,
    SpeechEvent,
    SpeechStream,
    STTCapabilities,
    Transcript,
)

log = logging.getLogger(__name__)


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


_NO_MATCH: Final = _Marker("NO_MATCH")
_STOPPED: Final = _Marker("STOPPED")

_Item = SpeechEvent | ProviderError | _Marker


class AzureSTT(STT):
    name = "azure"
    Options = AzureOptions
    capabilities = STTCapabilities(
        streaming=True, endpointing=True, input_specs=(MULAW_8K, PCM16_16K, PCM16_8K)
    )

    def __init__(self, backend: SpeechBackend, *, language: str = "en-US") -> None:
        self.backend = backend
        self.language = language

    @classmethod
    def create(cls, ctx: ProviderContext) -> Self:
        return cls(SdkBackend(settings(ctx.options)), language=ctx.language)

    @classmethod
    def check(cls, ctx: ProviderContext) -> list[str]:
        return check_settings(ctx.options)

    def __repr__(self) -> str:
        return f"AzureSTT(language={self.language!r})"

    async def _open_stream(self, spec: AudioSpec) -> AzureSpeechStream:
        stream = AzureSpeechStream(self.name, spec, asyncio.get_running_loop())
        # Starting blocks on SDK setup: off the loop.
        stream.recognition = await asyncio.to_thread(
            self.backend.start_recognition, spec, self.language, stream
        )
        return stream

    async def _recognize(self, pcm: bytes, sample_rate: int) -> Transcript:
        spec = AudioSpec("pcm16", sample_rate)
        if spec not in self.capabilities.input_specs:
            raise ProviderError(f"sample rate {sample_rate} not offered", provider=self.name, retryable=False)
        stream = await self._open_stream(spec)
        try:
            stream.push(pcm)
            stream.push(bytes(sample_rate))  # half a second of silence closes the phrase
            async for event in stream.events():
                if isinstance(event, FinalTranscript):
                    return Transcript(event.text, event.confidence)
        finally:
            await stream.aclose()
        return Transcript("")


class AzureSpeechStream(SpeechStream):
    """A recognition session; also the callbacks object the SDK (or a fake) calls from its threads."""

    def __init__(self, provider: str, spec: AudioSpec, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(provider, spec)
        self.recognition: Recognition | None = None
        self._loop = loop
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._heard = False  # recognizing results since the last phrase ended (loop thread only)
        self._finalize_pending = False

    # ---- SDK threads

    def _post(self, item: _Item) -> None:
        try:
            self._loop.call_soon_threadsafe(self._deliver, item)
        except RuntimeError:
            pass  # the loop is closed: the call is over

    def on_recognizing(self, text: str) -> None:
        if text:
            self._post(InterimTranscript(text))

    def on_recognized(self, text: str) -> None:
        self._post(FinalTranscript(text) if text else _NO_MATCH)

    def on_speech_started(self) -> None:
        self._post(ProviderSpeechStarted())

    def on_canceled(self, reason: str, retryable: bool) -> None:
        self._post(
            ProviderError(f"recognition canceled: {reason}", provider=self.provider, retryable=retryable)
        )

    def on_stopped(self) -> None:
        self._post(_STOPPED)

    # ---- loop thread

    def _deliver(self, item: _Item) -> None:
        if isinstance(item, InterimTranscript):
            self._heard = True
        elif isinstance(item, FinalTranscript):
            self._end_phrase(item)
            return
        elif item is _NO_MATCH:
            # Noise: a turn only if the session is waiting for one.
            if self._finalize_pending:
                self._end_phrase(FinalTranscript(""))
            self._heard = False
            return
        self._queue.put_nowait(item)

    def _end_phrase(self, final: FinalTranscript) -> None:
        self._heard = False
        self._finalize_pending = False
        self._queue.put_nowait(final)
        self._queue.put_nowait(EndOfTurn())

    def _push(self, audio: bytes) -> None:
        if self.recognition is not None:
            self.recognition.write(audio)

    async def _finalize(self) -> None:
        if self._heard:
            self._finalize_pending = True
        else:
            self._end_phrase(FinalTranscript(""))

    async def _events(self) -> AsyncIterator[SpeechEvent]:
        while True:
            item = await self._queue.get()
            if isinstance(item, ProviderError):
                raise item
            if isinstance(item, _Marker):
                if self.closed:
                    return
                raise ProviderError(
                    "recognition stopped by the service", provider=self.provider, retryable=True
                )
            yield item

    async def _aclose(self) -> None:
        recognition, self.recognition = self.recognition, None
        try:
            if recognition is not None:
                await asyncio.to_thread(recognition.stop)
        finally:
            self._queue.put_nowait(_STOPPED)  # wakes a reader still waiting
