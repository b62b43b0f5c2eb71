"""Deepgram streaming speech over the ``speak`` v1 WebSocket.

One socket per reply: ``Speak`` the text, ``Flush``, stream the linear16
audio at the call's own rate until ``Flushed``. When the consumer stops
early (barge-in) a ``Clear`` tells Deepgram to stop generating at once.
Options (``[options.deepgram]``): ``tts_model`` (default aura-2-thalia-en;
the profile's ``voice``, when it names an aura model, wins), ``url``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack
from typing import Any, Self

from deepgram.core.api_error import ApiError
from deepgram.speak.v1 import SpeakV1Text
from websockets.exceptions import ConnectionClosed

from providers.base import TTS, ProviderContext, ProviderError
from providers.deepgram import check_key, connect_error, make_client
from providers.deepgram.options import DeepgramOptions

log = logging.getLogger(__name__)

DEFAULT_MODEL = "aura-2-thalia-en"
SAMPLE_RATES = (8000, 16000, 24000, 32000, 48000)  # linear16 rates Deepgram renders natively
_CLEAR_GRACE = 1.0


def strip_wav_header(data: bytes) -> bytes:
    """The samples of a RIFF/WAVE chunk, or ``data`` itself when it has no header."""
    if not data.startswith(b"RIFF"):
        return data
    at = data.find(b"data", 12)
    return data[at + 8 :] if at >= 0 else b""


class DeepgramTTS(TTS):
    name = "deepgram"
    Options = DeepgramOptions

    def __init__(self, *, model: str = DEFAULT_MODEL, options: Mapping[str, Any] | None = None) -> None:
        self.options = dict(options or {})
        self.model = model
        self._client: Any = None

    @classmethod
    def create(cls, ctx: ProviderContext) -> Self:
        model = str(ctx.options.get("tts_model", DEFAULT_MODEL))
        if ctx.voice and ctx.voice.startswith("aura"):
            model = ctx.voice
        return cls(model=model, options=ctx.options)

    @classmethod
    def check(cls, ctx: ProviderContext) -> list[str]:
        return check_key()

    def __repr__(self) -> str:
        return f"DeepgramTTS(model={self.model!r})"

    async def _synthesize(self, text: str, sample_rate: int) -> AsyncIterator[bytes]:
        if sample_rate not in SAMPLE_RATES:
            raise ProviderError(f"sample rate {sample_rate} not offered", provider=self.name, retryable=False)
        if self._client is None:
            self._client = make_client(self.options)
        async with AsyncExitStack() as stack:
            try:
                socket = await stack.enter_async_context(
                    self._client.speak.v1.connect(
                        model=self.model, encoding="linear16", sample_rate=sample_rate
                    )
                )
            except ApiError as exc:
                raise connect_error(self.name, exc) from None
            flushed = False
            try:
                await socket.send_text(SpeakV1Text(type="Speak", text=text))
                await socket.send_flush()
                first = True
                carry = b""  # a sample split across two messages
                async for message in socket:
                    if isinstance(message, bytes):
                        data = carry + (strip_wav_header(message) if first else message)
                        first = False
                        cut = len(data) - len(data) % 2
                        carry = data[cut:]
                        if cut:
                            yield data[:cut]
                    elif getattr(message, "type", None) == "Flushed":
                        flushed = True
                        break
                    elif getattr(message, "type", None) == "Warning":
                        log.warning("%s: %s", self.name, getattr(message, "description", "warning"))
            except ConnectionClosed:
                raise ProviderError("connection lost", provider=self.name, retryable=True) from None
            finally:
                if not flushed:
                    # Barge-in or failure: stop Deepgram generating audio nobody will hear.
                    try:
                        await asyncio.wait_for(socket.send_clear(), _CLEAR_GRACE)
                    except (TimeoutError, ConnectionClosed, OSError):
                        pass
            if not flushed:
                raise ProviderError(
                    "connection closed before the audio was complete", provider=self.name, retryable=True
                )
            try:
                await socket.send_close()
            except (ConnectionClosed, OSError):
                pass
