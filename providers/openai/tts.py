"""Text-to-speech over ``audio.speech`` streaming raw PCM (24 kHz, 16-bit little-endian).

Audio is resampled to the call's rate chunk by chunk as the body arrives,
so the first words play while the rest is still being generated.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Self

import numpy as np

from ari_agent.media.resample import StreamResampler
from providers.base import TTS, ProviderContext, ProviderError
from providers.openai._client import OpenAISettings, check, provider_error
from providers.openai.options import OpenAIOptions

log = logging.getLogger(__name__)

DEFAULT_MODEL = "gpt-4o-mini-tts"
DEFAULT_VOICE = "alloy"
SOURCE_RATE = 24000  # what response_format="pcm" always gives


class OpenAITTS(TTS):
    name = "openai"
    Options = OpenAIOptions

    def __init__(
        self, settings: OpenAISettings, *, model: str = DEFAULT_MODEL, voice: str = DEFAULT_VOICE
    ) -> None:
        self.settings = settings
        self.model = model
        self.voice = voice
        self._client = settings.client()

    def __repr__(self) -> str:
        return f"OpenAITTS(model={self.model!r}, voice={self.voice!r}, settings={self.settings!r})"

    @classmethod
    def create(cls, ctx: ProviderContext) -> Self:
        settings = OpenAISettings.from_context(ctx)
        voice = ctx.options.get("voice") or ctx.voice or DEFAULT_VOICE
        return cls(settings, model=str(ctx.options.get("tts_model", DEFAULT_MODEL)), voice=str(voice))

    @classmethod
    def check(cls, ctx: ProviderContext) -> list[str]:
        return check(ctx)

    async def _aclose(self) -> None:
        await self._client.close()

    async def _synthesize(self, text: str, sample_rate: int) -> AsyncIterator[bytes]:
        resampler = StreamResampler(SOURCE_RATE, sample_rate)
        carry = b""  # an odd byte left by a chunk boundary inside a sample
        total = 0
        try:
            async with self._client.audio.speech.with_streaming_response.create(
                model=self.model, voice=self.voice, input=text, response_format="pcm"
            ) as response:
                async for data in response.iter_bytes():
                    data = carry + data
                    cut = len(data) - len(data) % 2
                    carry = data[cut:]
                    if cut:
                        total += cut
                        out = resampler.process(np.frombuffer(data[:cut], dtype="<i2").astype(np.int16))
                        if out.size:
                            yield out.tobytes()
        except Exception as exc:
            raise provider_error(self.name, exc, self.settings) from None
        if total == 0:
            # A 200 with no audio would leave the caller in silence: let the fallback speak.
            raise ProviderError("speech response had no audio", provider=self.name, retryable=True)
        tail = resampler.flush()
        if tail.size:
            yield tail.tobytes()
