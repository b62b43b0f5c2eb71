"""Provider interfaces: speech-to-text, language model, text-to-speech.

Every interface is a template method: the public method owns timeouts and
error wrapping; an adapter implements only the ``_``-prefixed hooks. Audio
crossing these interfaces is always PCM16 mono, little-endian (native numpy
int16 bytes), at the sample rate named in the call.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Literal, TypeVar

from ari_agent.errors import AgentError
from ari_agent.leads.dialog import LeadSpec
from providers.options import ProviderOptions

log = logging.getLogger(__name__)

T = TypeVar("T")


class ProviderError(AgentError):
    """A provider failed. ``retryable`` says whether trying again may help."""

    def __init__(self, message: str, *, provider: str, retryable: bool, status: int | None = None) -> None:
        self.provider = provider
        self.retryable = retryable
        self.status = status
        super().__init__(f"{provider}: {message}")

    @classmethod
    def from_status(cls, provider: str, status: int, message: str) -> ProviderError:
        # 4xx means our request is wrong and will stay wrong, except a
        # request timeout or a rate limit, which pass with time.
        retryable = status >= 500 or status in (408, 429)
        return cls(f"HTTP {status}: {message}", provider=provider, retryable=retryable, status=status)


class ProviderTimeout(ProviderError):
    def __init__(self, provider: str, what: str, seconds: float) -> None:
        super().__init__(f"{what} timed out after {seconds:g} s", provider=provider, retryable=True)


def as_provider_error(provider: str, exc: Exception) -> ProviderError:
    """An adapter bug or an SDK failure becomes a ProviderError, so it never kills the call."""
    if isinstance(exc, ProviderError):
        return exc
    return ProviderError(f"{type(exc).__name__}: {exc}", provider=provider, retryable=True)


async def guarded_call(
    awaitable: Awaitable[T],
    *,
    provider: str,
    what: str,
    timeout: float | None = None,  # noqa: ASYNC109
) -> T:
    """Await an adapter hook with a deadline (None: none); any failure becomes a ProviderError."""
    try:
        if timeout is None:
            return await awaitable
        return await asyncio.wait_for(awaitable, timeout)
    except ProviderError:
        raise
    except TimeoutError as exc:
        if timeout is None:
            raise as_provider_error(provider, exc) from exc
        raise ProviderTimeout(provider, what, timeout) from None
    except Exception as exc:
        raise as_provider_error(provider, exc) from exc


async def guarded_stream(
    stream: AsyncIterator[T], *, provider: str, what: str, first_timeout: float | None
) -> AsyncGenerator[T, None]:
    """Re-yield ``stream`` with a deadline on its first item (None: none) and errors as ProviderError."""
    iterator = stream.__aiter__()
    first = True
    try:
        while True:
            try:
                if first and first_timeout is not None:
                    item = await asyncio.wait_for(anext(iterator), first_timeout)
                    first = False
                else:
                    item = await anext(iterator)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise ProviderTimeout(provider, what, first_timeout or 0.0) from None
            except ProviderError:
                raise
            except Exception as exc:
                raise as_provider_error(provider, exc) from exc
            yield item
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()


# --------------------------------------------------------------------------
# Shared data


@dataclass(frozen=True)
class Intent:
    """One entry of a dialog script: what callers say and how the agent answers."""

    name: str
    examples: tuple[str, ...]
    reply: str
    action: Literal["none", "hangup", "transfer"] = "none"
    destination: str | None = None  # a transfer destination name
    dtmf: str | None = None  # a digit that selects this intent
    result: str | None = None  # sets AI_AGENT_RESULT (tool set_variable)
    capture: str | None = None  # the caller's next answer is captured into this field
    # More key phrases that mean this intent ("opening hours"): matched like
    # examples, but meant to be found inside longer sentences.
    synonyms: tuple[str, ...] = ()

    @property
    def phrases(self) -> tuple[str, ...]:
        """Examples and synonyms: everything said that selects this intent."""
        return (*self.examples, *self.synonyms)


@dataclass(frozen=True)
class ProviderContext:
    """What a provider factory gets to build a provider for one profile."""

    profile: str
    language: str = "en-US"
    voice: str | None = None
    instructions: str = ""
    # Phrases callers are expected to say: a grammar for offline STT,
    # keyword hints for cloud STT.
    hints: tuple[str, ...] = ()
    intents: tuple[Intent, ...] = ()
    fallback_reply: str = ""
    lead: LeadSpec | None = None  # lead capture to completion (a dialog provider drives it)
    options: Mapping[str, Any] = field(default_factory=dict)
    # The other languages the profile may switch to (BCP-47 tags, e.g. "es"): a recogniser that
    # can tell languages apart listens for these besides ``language``.
    languages: tuple[str, ...] = ()


# --------------------------------------------------------------------------
# Speech-to-text


@dataclass(frozen=True)
class AudioSpec:
    """How audio crosses a provider boundary: PCM16 mono little-endian, or G.711 µ-law."""

    encoding: Literal["pcm16", "mulaw"] = "pcm16"
    sample_rate: int = 16000


PCM16_16K = AudioSpec()
PCM16_8K = AudioSpec("pcm16", 8000)
MULAW_8K = AudioSpec("mulaw", 8000)


@dataclass(frozen=True)
class Transcript:
    text: str  # empty when nothing usable was recognised
    confidence: float | None = None
    is_final: bool = True
    language: str | None = None  # the caller's language, as a BCP-47 tag, when the provider reports it


@dataclass(frozen=True)
class STTCapabilities:
    streaming: bool = False  # a live stream with interim results
    endpointing: bool = False  # the provider itself tells when the caller's turn ended
    # finalize() gives the final of what was pushed so far and the stream goes on (later audio,
    # later finals): the core may finalize at the caller's first pause, before the end of turn
    # is decided, instead of after it. A recogniser that decodes whole utterances must not.
    segments: bool = False
    input_specs: tuple[AudioSpec, ...] = (PCM16_16K,)  # what stream() accepts, preferred first
    # Hears only the phrases it was given (the profile's hints), not free speech: a lead's
    # free-text, email or date answers, or a spoken number, cannot reach it (`check` warns).
    grammar_only: bool = False
    # Final transcripts carry the language the caller spoke (FinalTranscript.language), so the
    # core can switch a profile's languages mid-call.
    reports_language: bool = False
    # The languages it can hear (primary subtags, e.g. "en"); None: any it is configured for.
    hears: tuple[str, ...] | None = None


# Events of a live recognition stream.
@dataclass(frozen=True)
class InterimTranscript:
    text: str


@dataclass(frozen=True)
class FinalTranscript:
    """A finished stretch of the caller's speech; a turn may have several."""

    text: str
    confidence: float | None = None
    language: str | None = None  # BCP-47, when the provider reports it (reports_language)


@dataclass(frozen=True)
class EndOfTurn:
    """The provider's own endpointing says the caller finished their turn."""


@dataclass(frozen=True)
class ProviderSpeechStarted:
    """The provider heard speech start (its own VAD)."""


SpeechEvent = InterimTranscript | FinalTranscript | EndOfTurn | ProviderSpeechStarted


E = TypeVar("E")


class LiveStream(ABC, Generic[E]):
    """A live provider connection for one call: ``push`` never blocks; ``events`` until ``aclose``."""

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.closed = False

    def push(self, audio: bytes) -> None:
        if not self.closed:
            self._push(audio)

    async def events(self) -> AsyncIterator[E]:
        # No first-item deadline: a silent caller legitimately produces nothing.
        stream = guarded_stream(self._events(), provider=self.provider, what="events", first_timeout=None)
        try:
            async for event in stream:
                yield event
        finally:
            await stream.aclose()

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            await self._aclose()
        except Exception as exc:
            log.debug("closing %s: %s", self.provider, exc)

    @abstractmethod
    def _push(self, audio: bytes) -> None: ...

    @abstractmethod
    def _events(self) -> AsyncIterator[E]: ...

    async def _aclose(self) -> None:
        return None


class SpeechStream(LiveStream[SpeechEvent]):
    """Live recognition for one call.

    ``push`` takes audio in the stream's ``spec``; ``finalize`` asks for the
    final transcript of what was pushed since the last turn (the local end of
    turn); ``events`` yields results until ``aclose``.
    """

    def __init__(self, provider: str, spec: AudioSpec) -> None:
        super().__init__(provider)
        self.spec = spec

    async def finalize(self) -> None:
        await guarded_call(self._finalize(), provider=self.provider, what="finalize")

    def retract(self, size: int) -> bool:
        """Take back the last ``size`` bytes pushed, if not recognised yet; False when too late.

        A live recogniser has already heard them: only a stream that buffers the turn can.
        """
        return False

    @abstractmethod
    async def _finalize(self) -> None: ...


class STT(ABC):
    name: str = "stt"
    # The options this provider reads (providers.options); None: undeclared, passed on unchecked.
    Options: ClassVar[type[ProviderOptions] | None] = None
    capabilities: STTCapabilities = STTCapabilities()
    timeout: float = 10.0
    connect_timeout: float = 5.0

    @classmethod
    def capabilities_for(cls, ctx: ProviderContext) -> STTCapabilities:
        """What an instance built for ``ctx`` would declare, without building it (``check``)."""
        return cls.capabilities

    async def prepare(self) -> None:
        """Load models or open pools before the first call (off the event loop)."""
        await self._prepare()

    async def recognize(self, pcm: bytes, sample_rate: int) -> Transcript:
        """Transcribe one finished utterance (PCM16)."""
        return await guarded_call(
            self._recognize(pcm, sample_rate), provider=self.name, what="recognition", timeout=self.timeout
        )

    async def stream(self, spec: AudioSpec = PCM16_16K) -> SpeechStream:
        """Open a live recognition stream; providers without one get turn-by-turn recognition."""
        if spec not in self.capabilities.input_specs:
            raise ProviderError(f"audio {spec} not supported", provider=self.name, retryable=False)
        return await guarded_call(
            self._open_stream(spec), provider=self.name, what="connect", timeout=self.connect_timeout
        )

    async def aclose(self) -> None:
        await self._aclose()

    async def _prepare(self) -> None:
        return None

    async def _aclose(self) -> None:
        return None

    async def _open_stream(self, spec: AudioSpec) -> SpeechStream:
        return BufferedSpeechStream(self, spec)

    @abstractmethod
    async def _recognize(self, pcm: bytes, sample_rate: int) -> Transcript: ...


class BufferedSpeechStream(SpeechStream):
    """A stream over ``STT.recognize``: buffers a turn, recognises it on ``finalize``."""

    def __init__(self, stt: STT, spec: AudioSpec) -> None:
        if spec.encoding != "pcm16":
            raise ValueError("turn-by-turn recognition takes PCM16")
        super().__init__(stt.name, spec)
        self._stt = stt
        self._buffer = bytearray()
        self._queue: asyncio.Queue[SpeechEvent | BaseException] = asyncio.Queue()

    def _push(self, audio: bytes) -> None:
        self._buffer += audio

    def retract(self, size: int) -> bool:
        if size <= 0 or size > len(self._buffer):
            return False
        del self._buffer[len(self._buffer) - size :]
        return True

    async def _finalize(self) -> None:
        audio = bytes(self._buffer)
        self._buffer.clear()
        try:
            transcript = await self._stt.recognize(audio, self.spec.sample_rate)
        except ProviderError as exc:
            self._queue.put_nowait(exc)
            return
        self._queue.put_nowait(FinalTranscript(transcript.text, transcript.confidence, transcript.language))
        self._queue.put_nowait(EndOfTurn())

    async def _events(self) -> AsyncIterator[SpeechEvent]:
        while True:
            item = await self._queue.get()
            if isinstance(item, BaseException):
                raise item
            yield item


# --------------------------------------------------------------------------
# Language model


@dataclass(frozen=True)
class Message:
    role: Literal["system", "user", "assistant", "tool"]
    content: str


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    parameters: Mapping[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    call_id: str = ""


LLMEvent = TextDelta | ToolCall


class LLM(ABC):
    name: str = "llm"
    # The options this provider reads (providers.options); None: undeclared, passed on unchecked.
    Options: ClassVar[type[ProviderOptions] | None] = None
    first_token_timeout: float = 10.0

    async def prepare(self) -> None:
        await self._prepare()

    async def chat(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec] = ()
    ) -> AsyncIterator[LLMEvent]:
        """Stream the reply: text deltas and tool calls, in order."""
        stream = guarded_stream(
            self._chat(messages, tools),
            provider=self.name,
            what="first token",
            first_timeout=self.first_token_timeout,
        )
        try:
            async for event in stream:
                yield event
        finally:
            # A consumer that stops early (barge-in) closes the provider's stream now, not at GC.
            await stream.aclose()

    async def aclose(self) -> None:
        await self._aclose()

    async def _prepare(self) -> None:
        return None

    async def _aclose(self) -> None:
        return None

    @abstractmethod
    def _chat(self, messages: Sequence[Message], tools: Sequence[ToolSpec]) -> AsyncIterator[LLMEvent]: ...


# --------------------------------------------------------------------------
# Text-to-speech


class TTS(ABC):
    name: str = "tts"
    # The options this provider reads (providers.options); None: undeclared, passed on unchecked.
    Options: ClassVar[type[ProviderOptions] | None] = None
    first_audio_timeout: float = 10.0

    async def prepare(self, phrases: Sequence[str], sample_rate: int) -> None:
        """Warm up, and synthesise phrases known ahead (greeting, replies) into a cache."""
        await self._prepare(phrases, sample_rate)

    async def synthesize(self, text: str, sample_rate: int) -> AsyncIterator[bytes]:
        """Stream PCM16 mono chunks at ``sample_rate``."""
        stream = guarded_stream(
            self._synthesize(text, sample_rate),
            provider=self.name,
            what="first audio",
            first_timeout=self.first_audio_timeout,
        )
        try:
            async for chunk in stream:
                if chunk:
                    yield chunk
        finally:
            await stream.aclose()

    async def aclose(self) -> None:
        await self._aclose()

    async def _prepare(self, phrases: Sequence[str], sample_rate: int) -> None:
        return None

    async def _aclose(self) -> None:
        return None

    @abstractmethod
    def _synthesize(self, text: str, sample_rate: int) -> AsyncIterator[bytes]: ...


# --------------------------------------------------------------------------
# Speech-to-speech (realtime)


@dataclass(frozen=True)
class RealtimeCapabilities:
    # Audio the provider takes and gives, preferred first; the session picks
    # the call's own format when listed, so nothing is resampled needlessly.
    audio_specs: tuple[AudioSpec, ...] = (PCM16_16K,)
    turn_detection: tuple[str, ...] = ("server_vad",)


@dataclass(frozen=True)
class RealtimeConfig:
    instructions: str = ""
    voice: str | None = None
    language: str = "en-US"
    tools: tuple[ToolSpec, ...] = ()
    turn_detection: str = "server_vad"  # or "semantic_vad"
    audio: AudioSpec = PCM16_16K  # both directions
    greeting: str = ""  # said first, as is
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AgentAudio:
    audio: bytes  # in the session's AudioSpec
    item_id: str


@dataclass(frozen=True)
class AgentTranscript:
    """What the agent said in one response item (the full text once done)."""

    text: str
    item_id: str


@dataclass(frozen=True)
class CallerSpeechStarted:
    """The provider heard the caller start speaking: barge-in if the agent talks."""


@dataclass(frozen=True)
class CallerTranscript:
    text: str


@dataclass(frozen=True)
class ResponseDone:
    """The agent finished a response (all its audio has been delivered)."""


RealtimeEvent = (
    AgentAudio | AgentTranscript | CallerSpeechStarted | CallerTranscript | ToolCall | ResponseDone
)


class RealtimeSession(LiveStream[RealtimeEvent]):
    """One call's live speech-to-speech conversation; ``push`` takes caller audio in ``config.audio``."""

    def __init__(self, provider: str, config: RealtimeConfig) -> None:
        super().__init__(provider)
        self.config = config

    async def interrupt(self, item_id: str, heard_ms: int) -> None:
        """Barge-in: stop the response and keep only what the caller heard in the history."""
        await guarded_call(self._interrupt(item_id, heard_ms), provider=self.provider, what="interrupt")

    async def tool_result(self, call_id: str, output: str) -> None:
        await guarded_call(self._tool_result(call_id, output), provider=self.provider, what="tool result")

    @abstractmethod
    async def _interrupt(self, item_id: str, heard_ms: int) -> None: ...

    @abstractmethod
    async def _tool_result(self, call_id: str, output: str) -> None: ...


class Realtime(ABC):
    name: str = "realtime"
    # The options this provider reads (providers.options); None: undeclared, passed on unchecked.
    Options: ClassVar[type[ProviderOptions] | None] = None
    capabilities: RealtimeCapabilities = RealtimeCapabilities()
    connect_timeout: float = 10.0

    async def prepare(self) -> None:
        return None

    async def connect(self, config: RealtimeConfig) -> RealtimeSession:
        if config.audio not in self.capabilities.audio_specs:
            raise ProviderError(f"audio {config.audio} not supported", provider=self.name, retryable=False)
        return await guarded_call(
            self._connect(config), provider=self.name, what="connect", timeout=self.connect_timeout
        )

    async def aclose(self) -> None:
        return None

    @abstractmethod
    async def _connect(self, config: RealtimeConfig) -> RealtimeSession: ...
