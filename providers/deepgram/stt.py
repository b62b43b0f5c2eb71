"""Deepgram live speech-to-text over the ``listen`` v1 WebSocket.

The call's own audio goes out as is (µ-law 8 kHz or linear16), so nothing is
resampled for Deepgram. Deepgram's messages become our speech events:

- ``Results`` not final: InterimTranscript; final: FinalTranscript.
- ``speech_final`` (its endpointing), ``UtteranceEnd`` (its word-gap timer)
  or the answer to our ``Finalize``: EndOfTurn, once per turn.
- ``SpeechStarted`` (``vad_events``): ProviderSpeechStarted.

A profile with ``languages`` opens the stream with ``language=multi`` (Nova-3
multilingual): each result's best alternative then lists the languages heard
(``languages``, BCP-47, most words first), and the first becomes the final's
``language``.

Deepgram closes a socket that gets no data for about ten seconds, so a
``KeepAlive`` goes out whenever nothing was pushed for ``keepalive_s``.
Options (``[options.deepgram]``): ``model`` (nova-3), ``endpointing`` (ms, or
false), ``utterance_end_ms``, ``keepalive_s``, ``smart_format``, ``url``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import AsyncExitStack
from typing import Any, Self

from deepgram.core.api_error import ApiError
from websockets.exceptions import ConnectionClosed

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
from providers.deepgram import check_key, connect_error, make_client
from providers.deepgram.options import DeepgramOptions

log = logging.getLogger(__name__)

DEFAULT_MODEL = "nova-3"
_CLOSE_GRACE = 2.0  # seconds for CloseStream to go out and the socket to close


def _flag(value: Any) -> str:
    # Deepgram reads query flags as the strings "true"/"false".
    if isinstance(value, str):
        return value.lower()
    return "true" if value else "false"


class DeepgramSTT(STT):
    name = "deepgram"
    Options = DeepgramOptions
    capabilities = STTCapabilities(
        streaming=True, endpointing=True, segments=True, input_specs=(MULAW_8K, PCM16_16K, PCM16_8K)
    )

    def __init__(
        self, *, language: str = "en-US", options: Mapping[str, Any] | None = None, multilingual: bool = False
    ) -> None:
        self.options = dict(options or {})
        # multi: Deepgram tells the languages apart and says which one each result is in.
        self.language = "multi" if multilingual else language
        self.capabilities = self.capabilities_for_language(self.language)
        self.model = str(self.options.get("model", DEFAULT_MODEL))
        self.keepalive_s = float(self.options.get("keepalive_s", 4.0))
        self._client: Any = None

    @classmethod
    def create(cls, ctx: ProviderContext) -> Self:
        return cls(language=ctx.language, options=ctx.options, multilingual=bool(ctx.languages))

    @classmethod
    def capabilities_for_language(cls, language: str) -> STTCapabilities:
        return dataclasses.replace(cls.capabilities, reports_language=language == "multi")

    @classmethod
    def capabilities_for(cls, ctx: ProviderContext) -> STTCapabilities:
        return cls.capabilities_for_language("multi" if ctx.languages else ctx.language)

    @classmethod
    def check(cls, ctx: ProviderContext) -> list[str]:
        return check_key()

    def __repr__(self) -> str:
        return f"DeepgramSTT(model={self.model!r}, language={self.language!r})"

    def _query(self, spec: AudioSpec) -> dict[str, Any]:
        opts = self.options
        endpointing = opts.get("endpointing", 300)
        return {
            "model": self.model,
            "language": self.language,
            "encoding": "mulaw" if spec.encoding == "mulaw" else "linear16",
            "sample_rate": spec.sample_rate,
            "channels": 1,
            "interim_results": "true",
            "endpointing": _flag(endpointing) if isinstance(endpointing, bool) else int(endpointing),
            "utterance_end_ms": int(opts.get("utterance_end_ms", 1000)),
            "vad_events": "true",
            "smart_format": _flag(opts.get("smart_format", True)),
        }

    async def _open_stream(self, spec: AudioSpec) -> DeepgramSpeechStream:
        if self._client is None:
            self._client = make_client(self.options)
        stream = DeepgramSpeechStream(self.name, spec, self.keepalive_s)
        await stream.open(self._client, self._query(spec))
        return stream

    async def _recognize(self, pcm: bytes, sample_rate: int) -> Transcript:
        # One utterance through a socket of its own: push, Finalize, collect until the answer.
        stream = await self._open_stream(AudioSpec("pcm16", sample_rate))
        texts: list[str] = []
        confidence: float | None = None
        language: str | None = None
        try:
            stream.push(pcm)
            await stream.finalize()
            async for event in stream.events():
                if isinstance(event, FinalTranscript) and event.text:
                    texts.append(event.text)
                    confidence = event.confidence
                    language = event.language or language
                elif isinstance(event, EndOfTurn) and stream.finalized:
                    break
        finally:
            await stream.aclose()
        return Transcript(" ".join(texts), confidence, language=language)


def _language(alternative: Any) -> str | None:
    """The language most of the words were in (``language=multi`` only; absent otherwise)."""
    languages = getattr(alternative, "languages", None) or ()
    first = languages[0] if languages else None
    return first if isinstance(first, str) and first else None


class DeepgramSpeechStream(SpeechStream):
    def __init__(self, provider: str, spec: AudioSpec, keepalive_s: float) -> None:
        super().__init__(provider, spec)
        self._keepalive_s = keepalive_s
        self._stack = AsyncExitStack()
        self._socket: Any = None
        # Audio (bytes) and control messages (their type) in send order; None stops the writer.
        self._outbox: asyncio.Queue[bytes | str | None] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._turn_open = False  # words heard since the last EndOfTurn
        self.finalized = False  # the last EndOfTurn answered our Finalize

    async def open(self, client: Any, query: dict[str, Any]) -> None:
        try:
            self._socket = await self._stack.enter_async_context(client.listen.v1.connect(**query))
        except ApiError as exc:
            raise connect_error(self.provider, exc) from None
        self._writer = asyncio.create_task(self._write(), name=f"{self.provider}-writer")

    def _push(self, audio: bytes) -> None:
        self._outbox.put_nowait(audio)

    async def _finalize(self) -> None:
        self._outbox.put_nowait("Finalize")

    async def _write(self) -> None:
        socket = self._socket
        try:
            while True:
                try:
                    item = await asyncio.wait_for(self._outbox.get(), self._keepalive_s)
                except TimeoutError:
                    await socket.send_keep_alive()
                    continue
                if item is None:
                    return
                if isinstance(item, bytes):
                    await socket.send_media(item)
                elif item == "Finalize":
                    await socket.send_finalize()
                elif item == "CloseStream":
                    await socket.send_close_stream()
                    return
        except ConnectionClosed:
            pass  # the reader reports the lost connection
        except Exception as exc:
            log.warning("%s: sending failed: %s", self.provider, type(exc).__name__)

    async def _events(self) -> AsyncIterator[SpeechEvent]:
        try:
            async for message in self._socket:
                for event in self._translate(message):
                    yield event
        except ConnectionClosed as exc:
            if self.closed:
                return
            raise ProviderError(
                f"connection lost (code {exc.rcvd.code if exc.rcvd else 'none'})",
                provider=self.provider,
                retryable=True,
            ) from None
        if not self.closed:
            raise ProviderError("connection closed by the server", provider=self.provider, retryable=True)

    def _translate(self, message: Any) -> Iterator[SpeechEvent]:
        kind = getattr(message, "type", None)
        if kind == "Results":
            yield from self._results(message)
        elif kind == "UtteranceEnd":
            if self._turn_open:
                self._turn_open = False
                self.finalized = False
                yield EndOfTurn()
        elif kind == "SpeechStarted":
            yield ProviderSpeechStarted()
        elif kind == "Error":
            description = getattr(message, "description", "") or "error"
            raise ProviderError(f"server error: {description}", provider=self.provider, retryable=True)

    def _results(self, message: Any) -> Iterator[SpeechEvent]:
        alternatives = message.channel.alternatives
        best = alternatives[0] if alternatives else None
        text = best.transcript.strip() if best is not None else ""
        if not message.is_final:
            if text:
                self._turn_open = True
                yield InterimTranscript(text)
            return
        from_finalize = bool(message.from_finalize)
        if text or from_finalize:
            # The answer to Finalize comes even when nothing was said: the session waits for it.
            yield FinalTranscript(
                text, best.confidence if best is not None else None, _language(best) if text else None
            )
        if text:
            self._turn_open = True
        if from_finalize or (message.speech_final and self._turn_open):
            self._turn_open = False
            self.finalized = from_finalize
            yield EndOfTurn()

    async def _aclose(self) -> None:
        self._outbox.put_nowait("CloseStream")
        writer = self._writer
        try:
            if writer is not None:
                await asyncio.wait_for(writer, _CLOSE_GRACE)
        except TimeoutError:
            pass  # wait_for cancelled the writer
        finally:
            try:
                await asyncio.wait_for(self._stack.aclose(), _CLOSE_GRACE)
            except (TimeoutError, ConnectionClosed, OSError) as exc:
                log.debug("%s: closing: %s", self.provider, type(exc).__name__)
