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
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from ari_agent.errors import AgentError

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


async def guarded_stream(
    stream: AsyncIterator[T], *, provider: str, what: str, first_timeout: float
) -> AsyncIterator[T]:
    """Re-yield ``stream`` with a deadline on its first item and errors as ProviderError."""
    iterator = stream.__aiter__()
    first = True
    try:
        while True:
            try:
                if first:
                    item = await asyncio.wait_for(anext(iterator), first_timeout)
                    first = False
                else:
                    item = await anext(iterator)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise ProviderTimeout(provider, what, first_timeout) from None
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
    options: Mapping[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------
# Speech-to-text


@dataclass(frozen=True)
class Transcript:
    text: str  # empty when nothing usable was recognised
    confidence: float | None = None
    is_final: bool = True


@dataclass(frozen=True)
class STTCapabilities:
    streaming: bool = False
    endpointing: bool = False


class STT(ABC):
    name: str = "stt"
    capabilities: STTCapabilities = STTCapabilities()
    timeout: float = 10.0

    async def prepare(self) -> None:
        """Load models or open pools before the first call (off the event loop)."""
        await self._prepare()

    async def recognize(self, pcm: bytes, sample_rate: int) -> Transcript:
        """Transcribe one finished utterance."""
        try:
            return await asyncio.wait_for(self._recognize(pcm, sample_rate), self.timeout)
        except TimeoutError:
            raise ProviderTimeout(self.name, "recognition", self.timeout) from None
        except Exception as exc:
            raise as_provider_error(self.name, exc) from exc

    async def aclose(self) -> None:
        await self._aclose()

    async def _prepare(self) -> None:
        return None

    async def _aclose(self) -> None:
        return None

    @abstractmethod
    async def _recognize(self, pcm: bytes, sample_rate: int) -> Transcript: ...


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
    first_token_timeout: float = 10.0

    async def prepare(self) -> None:
        await self._prepare()

    async def chat(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec] = ()
    ) -> AsyncIterator[LLMEvent]:
        """Stream the reply: text deltas and tool calls, in order."""
        async for event in guarded_stream(
            self._chat(messages, tools),
            provider=self.name,
            what="first token",
            first_timeout=self.first_token_timeout,
        ):
            yield event

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
    first_audio_timeout: float = 10.0

    async def prepare(self, phrases: Sequence[str], sample_rate: int) -> None:
        """Warm up, and synthesise phrases known ahead (greeting, replies) into a cache."""
        await self._prepare(phrases, sample_rate)

    async def synthesize(self, text: str, sample_rate: int) -> AsyncIterator[bytes]:
        """Stream PCM16 mono chunks at ``sample_rate``."""
        async for chunk in guarded_stream(
            self._synthesize(text, sample_rate),
            provider=self.name,
            what="first audio",
            first_timeout=self.first_audio_timeout,
        ):
            if chunk:
                yield chunk

    async def aclose(self) -> None:
        await self._aclose()

    async def _prepare(self, phrases: Sequence[str], sample_rate: int) -> None:
        return None

    async def _aclose(self) -> None:
        return None

    @abstractmethod
    def _synthesize(self, text: str, sample_rate: int) -> AsyncIterator[bytes]: ...
