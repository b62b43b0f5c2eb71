"""Azure streaming speech: raw PCM16 at the call's rate, chunk by chunk as it is synthesised.

The SDK delivers audio in ``synthesizing`` events on its own threads; they
are handed to the event loop with ``call_soon_threadsafe``. A consumer that
stops early (barge-in) stops the synthesis.
Options (``[options.azure]``): ``voice`` (else the profile's voice).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Final, Self

from providers.azure import check as check_settings
from providers.azure import settings
from providers.azure.options import AzureOptions
from providers.azure.sdk import OUTPUT_FORMATS, SdkBackend, SpeechBackend
from providers.base import TTS, ProviderContext, ProviderError

log = logging.getLogger(__name__)

_DONE: Final = object()


class _Sink:
    """The callbacks of one synthesis, called on SDK threads."""

    def __init__(self, provider: str, loop: asyncio.AbstractEventLoop) -> None:
        self.provider = provider
        self.queue: asyncio.Queue[bytes | ProviderError | object] = asyncio.Queue()
        self._loop = loop

    def _post(self, item: bytes | ProviderError | object) -> None:
        try:
            self._loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:
            pass  # the loop is closed: the call is over

    def on_audio(self, chunk: bytes) -> None:
        if chunk:
            self._post(chunk)

    def on_done(self) -> None:
        self._post(_DONE)

    def on_canceled(self, reason: str, retryable: bool) -> None:
        self._post(
            ProviderError(f"synthesis canceled: {reason}", provider=self.provider, retryable=retryable)
        )


class AzureTTS(TTS):
    name = "azure"
    Options = AzureOptions

    def __init__(self, backend: SpeechBackend, *, voice: str | None = None, language: str = "en-US") -> None:
        self.backend = backend
        self.voice = voice
        self.language = language

    @classmethod
    def create(cls, ctx: ProviderContext) -> Self:
        voice = ctx.options.get("voice") or ctx.voice
        return cls(
            SdkBackend(settings(ctx.options)), voice=str(voice) if voice else None, language=ctx.language
        )

    @classmethod
    def check(cls, ctx: ProviderContext) -> list[str]:
        return check_settings(ctx.options)

    def __repr__(self) -> str:
        return f"AzureTTS(voice={self.voice!r})"

    async def _synthesize(self, text: str, sample_rate: int) -> AsyncIterator[bytes]:
        if sample_rate not in OUTPUT_FORMATS:
            raise ProviderError(f"sample rate {sample_rate} not offered", provider=self.name, retryable=False)
        sink = _Sink(self.name, asyncio.get_running_loop())
        synthesis = await asyncio.to_thread(
            self.backend.start_synthesis, text, sample_rate, self.voice, self.language, sink
        )
        finished = False
        carry = b""  # a sample split across two chunks
        try:
            while True:
                item = await sink.queue.get()
                if isinstance(item, ProviderError):
                    finished = True
                    raise item
                if item is _DONE:
                    finished = True
                    return
                assert isinstance(item, bytes)
                data = carry + item
                cut = len(data) - len(data) % 2
                carry = data[cut:]
                if cut:
                    yield data[:cut]
        finally:
            if not finished:
                # Barge-in or cancellation: stop the service rendering audio nobody hears.
                await asyncio.to_thread(synthesis.stop)
