"""Providers of known, simulated latency, for benchmarks and timing tests.

They subclass the real interfaces (only the ``_`` hooks are theirs), so the
agent runs them as it runs any provider; a profile names them by
"module:Class"::

    [profiles.bench]
    stt = ["tests.fakes.timed:TimedSTT"]
    llm = ["tests.fakes.timed:TimedLLM"]
    tts = ["tests.fakes.timed:TimedTTS"]

    [profiles.bench.options."tests.fakes.timed:TimedLLM"]
    first_token_ms = 300
    reply = "Sure. We open at nine."

Latencies (defaults are the figures of the benchmark's targets):

* ``TimedSTT``: a streaming recogniser without endpointing of its own. The
  final transcript comes ``final_ms`` (150) after ``finalize()``; its text is
  ``text``, or the next of ``texts`` (cycled). A turn with no audio pushed
  gives an empty final. ``recognize()`` (turn by turn) takes ``final_ms`` too.
  With ``interim`` (or ``interims``, cycled) it also sends that interim
  transcript once per utterance, when ``interim_after_ms`` (300) of audio
  has been pushed, as a streaming service's interim results come.
* ``TimedLLM``: the first token ``first_token_ms`` (300) after ``chat()``,
  then the rest of the reply word by word, one every ``word_ms`` (20); then
  ``tool_calls`` if configured (a list of ``{name, arguments}`` tables).
  The reply is ``reply``, or the next of ``replies`` (cycled).
* ``TimedTTS``: the first chunk ``first_audio_ms`` (150) after
  ``synthesize()``, then the rest. The audio is real espeak-ng speech of the
  text (rendered by the offline TTS, cached), in ``chunk_ms`` (100) chunks,
  paced ``realtime_factor`` (10) times faster than real time, as a streaming
  cloud TTS delivers; ``realtime_factor = 0`` delivers the rest at once.
  Rendering counts inside ``first_audio_ms`` (it takes a few ms, cached).

Timings are measured from the call of the public method, on the event loop's
clock, so an agent that adds nothing would show exactly these figures.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any, Self

from providers.base import (
    LLM,
    PCM16_16K,
    STT,
    TTS,
    AudioSpec,
    EndOfTurn,
    FinalTranscript,
    InterimTranscript,
    LLMEvent,
    Message,
    ProviderContext,
    SpeechEvent,
    SpeechStream,
    STTCapabilities,
    TextDelta,
    ToolCall,
    ToolSpec,
    Transcript,
)
from providers.local.tts import EspeakTTS

DEFAULT_TEXT = "what time do you open"
# One word first: a streaming pipeline has a whole sentence after the first token.
DEFAULT_REPLY = "Sure. We are open from nine in the morning to five in the evening."


def _ms(options: Mapping[str, Any], key: str, default: float) -> float:
    value = float(options.get(key, default))
    if value < 0:
        raise ValueError(f"{key} must be >= 0, got {value}")
    return value


def _cycle(options: Mapping[str, Any], one: str, many: str, default: str) -> Iterator[str]:
    texts = options.get(many)
    if texts is None:
        texts = [options.get(one, default)]
    if isinstance(texts, str) or not texts:
        raise ValueError(f"{many} must be a non-empty list of strings")
    return itertools.cycle([str(t) for t in texts])


async def _sleep_until(deadline: float) -> None:
    delay = deadline - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


def _option_problems(cls: type[Any], ctx: ProviderContext) -> list[str]:
    try:
        cls.create(ctx)
    except (TypeError, ValueError) as exc:
        return [f"profile {ctx.profile}: bad options for {cls.__name__}: {exc}"]
    return []


# -------------------------------------------------------------- speech-to-text


class _TimedSpeechStream(SpeechStream):
    def __init__(self, stt: TimedSTT, spec: AudioSpec) -> None:
        super().__init__(stt.name, spec)
        self._stt = stt
        self._pushed = 0
        self._queue: asyncio.Queue[SpeechEvent] = asyncio.Queue()
        self._pending: set[asyncio.TimerHandle] = set()

    def _push(self, audio: bytes) -> None:
        before = self._pushed
        self._pushed += len(audio)
        threshold = self._stt.interim_bytes
        if threshold and before < threshold <= self._pushed:
            interim = self._stt.next_interim()
            if interim:
                self._queue.put_nowait(InterimTranscript(interim))

    async def _finalize(self) -> None:
        # Like a streaming service: finalize() returns at once, the final follows on the stream.
        text = self._stt.next_text() if self._pushed else ""
        self._pushed = 0
        loop = asyncio.get_running_loop()

        def deliver() -> None:
            self._pending.discard(handle)
            # The same pair as the turn-by-turn stream: a final, then the end of the turn.
            self._queue.put_nowait(FinalTranscript(text, 1.0))
            self._queue.put_nowait(EndOfTurn())

        handle = loop.call_later(self._stt.final_s, deliver)
        self._pending.add(handle)

    async def _events(self) -> AsyncIterator[SpeechEvent]:
        while True:
            yield await self._queue.get()

    async def _aclose(self) -> None:
        for handle in self._pending:
            handle.cancel()
        self._pending.clear()


class TimedSTT(STT):
    name = "timed-stt"
    capabilities = STTCapabilities(streaming=True, endpointing=False, segments=True, input_specs=(PCM16_16K,))

    def __init__(
        self,
        texts: Iterator[str],
        *,
        final_ms: float = 150,
        interims: Iterator[str] | None = None,
        interim_after_ms: float = 300,
        segments: bool = True,
    ) -> None:
        if not segments:
            # Like a recogniser that decodes whole utterances: the core finalizes after the turn.
            self.capabilities = dataclasses.replace(type(self).capabilities, segments=False)
        self.final_s = final_ms / 1000
        self._texts = texts
        self._interims = interims
        # Bytes of 16 kHz PCM16 pushed before the interim goes out (0: never).
        self.interim_bytes = int(interim_after_ms * 32) if interims is not None else 0

    @classmethod
    def create(cls, ctx: ProviderContext) -> Self:
        options = ctx.options
        interims = (
            _cycle(options, "interim", "interims", "")
            if "interim" in options or "interims" in options
            else None
        )
        return cls(
            _cycle(options, "text", "texts", DEFAULT_TEXT),
            final_ms=_ms(options, "final_ms", 150),
            interims=interims,
            interim_after_ms=_ms(options, "interim_after_ms", 300),
            segments=bool(options.get("segments", True)),
        )

    def next_interim(self) -> str:
        return next(self._interims) if self._interims is not None else ""

    @classmethod
    def check(cls, ctx: ProviderContext) -> list[str]:
        return _option_problems(cls, ctx)

    def next_text(self) -> str:
        return next(self._texts)

    async def _recognize(self, pcm: bytes, sample_rate: int) -> Transcript:
        await asyncio.sleep(self.final_s)
        return Transcript(self.next_text() if pcm else "", 1.0)

    async def _open_stream(self, spec: AudioSpec) -> SpeechStream:
        return _TimedSpeechStream(self, spec)


# -------------------------------------------------------------- language model


class TimedLLM(LLM):
    name = "timed-llm"

    def __init__(
        self,
        replies: Iterator[str],
        *,
        first_token_ms: float = 300,
        word_ms: float = 20,
        tool_calls: Sequence[ToolCall] = (),
    ) -> None:
        self.first_token_s = first_token_ms / 1000
        self.word_s = word_ms / 1000
        self.tool_calls = tuple(tool_calls)
        self._replies = replies

    @classmethod
    def create(cls, ctx: ProviderContext) -> Self:
        options = ctx.options
        calls = []
        for i, raw in enumerate(options.get("tool_calls", [])):
            if not isinstance(raw, Mapping) or not isinstance(raw.get("name"), str):
                raise ValueError(f"tool_calls[{i}] must be a table with a name")
            calls.append(ToolCall(raw["name"], dict(raw.get("arguments", {})), f"timed-{i}"))
        return cls(
            _cycle(options, "reply", "replies", DEFAULT_REPLY),
            first_token_ms=_ms(options, "first_token_ms", 300),
            word_ms=_ms(options, "word_ms", 20),
            tool_calls=calls,
        )

    @classmethod
    def check(cls, ctx: ProviderContext) -> list[str]:
        return _option_problems(cls, ctx)

    async def _chat(self, messages: Sequence[Message], tools: Sequence[ToolSpec]) -> AsyncIterator[LLMEvent]:
        started = time.monotonic()
        words = next(self._replies).split()
        await _sleep_until(started + self.first_token_s)
        for i, word in enumerate(words):
            if i:
                # On a grid from the first token: the loop's overshoot does not add up.
                await _sleep_until(started + self.first_token_s + i * self.word_s)
            yield TextDelta(word if i == 0 else " " + word)
        for call in self.tool_calls:
            yield call


# -------------------------------------------------------------- text-to-speech


class TimedTTS(TTS):
    name = "timed-tts"

    def __init__(
        self,
        voice: str | None = None,
        *,
        first_audio_ms: float = 150,
        chunk_ms: int = 100,
        realtime_factor: float = 10.0,
    ) -> None:
        if chunk_ms < 20 or chunk_ms % 20:
            raise ValueError(f"chunk_ms must be a multiple of 20, got {chunk_ms}")
        if realtime_factor < 0:
            raise ValueError(f"realtime_factor must be >= 0, got {realtime_factor}")
        self.first_audio_s = first_audio_ms / 1000
        self.chunk_ms = chunk_ms
        self.realtime_factor = realtime_factor
        self._espeak = EspeakTTS(voice)

    @classmethod
    def create(cls, ctx: ProviderContext) -> Self:
        options = ctx.options
        return cls(
            ctx.voice,
            first_audio_ms=_ms(options, "first_audio_ms", 150),
            chunk_ms=int(options.get("chunk_ms", 100)),
            realtime_factor=float(options.get("realtime_factor", 10.0)),
        )

    @classmethod
    def check(cls, ctx: ProviderContext) -> list[str]:
        return EspeakTTS.check(ctx) + _option_problems(cls, ctx)

    async def _prepare(self, phrases: Sequence[str], sample_rate: int) -> None:
        await self._espeak.prepare(phrases, sample_rate)

    async def _synthesize(self, text: str, sample_rate: int) -> AsyncIterator[bytes]:
        started = time.monotonic()
        pcm = await self._espeak.render(text, sample_rate)
        step = sample_rate * self.chunk_ms // 1000 * 2
        chunk_s = self.chunk_ms / 1000 / self.realtime_factor if self.realtime_factor else 0.0
        for n, i in enumerate(range(0, len(pcm), step)):
            await _sleep_until(started + self.first_audio_s + n * chunk_s)
            yield pcm[i : i + step]
