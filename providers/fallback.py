"""Fallback chains: several providers of one stage behind one provider interface.

Providers are tried in order; one whose circuit breaker is open is skipped;
retryable errors are retried per the member's RetryPolicy before the next
provider is tried. Streams (LLM text, TTS audio) fail over only while nothing
has reached the caller: once audio has been played, switching voices
mid-sentence is worse than the session's own recovery, so a mid-stream
failure is raised. A live STT stream that dies is replaced by the next
provider's stream in place; the audio of the unfinished turn is replayed into
it, so the turn is still understood.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from ari_agent.media.codecs import pcm_from_bytes, ulaw_decode, ulaw_encode
from ari_agent.media.resample import StreamResampler
from providers.base import (
    LLM,
    STT,
    TTS,
    AudioSpec,
    EndOfTurn,
    FinalTranscript,
    LLMEvent,
    Message,
    ProviderError,
    SpeechEvent,
    SpeechStream,
    STTCapabilities,
    ToolSpec,
    Transcript,
    guarded_stream,
)
from providers.resilience import CircuitBreaker, RetryPolicy

log = logging.getLogger(__name__)

P = TypeVar("P", STT, LLM, TTS)
T = TypeVar("T")

REPLAY_SECONDS = 10.0  # the most of an unfinished turn replayed into a new STT stream


@dataclass
class Member(Generic[P]):
    provider: P
    breaker: CircuitBreaker
    policy: RetryPolicy = field(default_factory=RetryPolicy)

    @property
    def name(self) -> str:
        return self.provider.name


def all_failed(chain: str, causes: Sequence[str]) -> ProviderError:
    # Causes are our own ProviderError texts: status and reason, never a key.
    summary = "; ".join(causes) or "no provider"
    return ProviderError(f"every provider failed: {summary}", provider=chain, retryable=False)


async def _aclose(stream: AsyncIterator[T]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()


async def _guarded_call(member: Member[P], action: Callable[[P], Awaitable[T]]) -> T:
    """One member, its breaker and its retries, for a request/response call."""
    if not member.breaker.allow():
        raise ProviderError("circuit open", provider=member.name, retryable=True)
    verdict = False
    try:
        result = await member.policy.run(lambda: action(member.provider))
        member.breaker.record_success()
        verdict = True
        return result
    except ProviderError:
        member.breaker.record_failure()
        verdict = True
        raise
    finally:
        if not verdict:
            member.breaker.release()


async def _stream_with_failover(
    chain: str,
    members: Sequence[Member[P]],
    open_stream: Callable[[P], AsyncIterator[T]],
    *,
    empty_is_failure: bool,
) -> AsyncIterator[T]:
    causes: list[str] = []
    for member in members:
        if not member.breaker.allow():
            causes.append(f"{member.name}: circuit open")
            continue
        verdict = False
        retry = 0
        try:
            while True:
                yielded = False
                stream = open_stream(member.provider)
                try:
                    async for item in stream:
                        if not yielded:
                            yielded = True
                            member.breaker.record_success()
                            verdict = True
                        yield item
                    if not yielded and empty_is_failure:
                        raise ProviderError("returned nothing", provider=member.name, retryable=True)
                except ProviderError as exc:
                    if yielded:
                        # The caller has heard part of it: only the session can recover now.
                        member.breaker.record_failure()
                        raise
                    retry += 1
                    if exc.retryable and retry < member.policy.attempts:
                        wait = member.policy.delay(retry)
                        log.info("%s; retry %d of %d in %.2f s", exc, retry, member.policy.attempts - 1, wait)
                        await asyncio.sleep(wait)
                        continue
                    member.breaker.record_failure()
                    verdict = True
                    causes.append(str(exc))
                    log.warning("%s failed over: %s", chain, exc)
                    break
                finally:
                    # Close now, not at garbage collection: a TTS must hear about barge-in at once.
                    await _aclose(stream)
                if not verdict:
                    member.breaker.record_success()
                    verdict = True
                return
        finally:
            if not verdict:
                member.breaker.release()
    raise all_failed(chain, causes)


def _chain_name(members: Sequence[Member[P]]) -> str:
    if not members:
        raise ValueError("a fallback chain needs at least one provider")
    return ">".join(m.name for m in members)


async def _prepare_all(
    chain: str, members: Sequence[Member[P]], prepare: Callable[[P], Awaitable[None]]
) -> None:
    """Prepare every member; the chain is usable while one of them is."""
    results = await asyncio.gather(*(prepare(m.provider) for m in members), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    for member, result in zip(members, results, strict=True):
        if isinstance(result, BaseException):
            log.warning("%s: %s could not be prepared: %s", chain, member.name, result)
    if len(errors) == len(members):
        raise errors[0]


def _budget(members: Sequence[Member[P]], per_try: Callable[[P], float]) -> float:
    # Long enough for every member to use up its own deadlines and retries.
    return sum(
        per_try(m.provider) * m.policy.attempts + m.policy.max_delay * (m.policy.attempts - 1)
        for m in members
    )


# --------------------------------------------------------------------------
# Language model and text-to-speech


class FallbackLLM(LLM):
    def __init__(self, members: Sequence[Member[LLM]]) -> None:
        self.members = tuple(members)
        self.name = _chain_name(self.members)

    async def _prepare(self) -> None:
        await _prepare_all(self.name, self.members, lambda p: p.prepare())

    async def chat(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec] = ()
    ) -> AsyncIterator[LLMEvent]:
        # No deadline of its own: each member has its first-token deadline.
        inner = guarded_stream(
            self._chat(messages, tools), provider=self.name, what="first token", first_timeout=None
        )
        try:
            async for event in inner:
                yield event
        finally:
            await _aclose(inner)

    def _chat(self, messages: Sequence[Message], tools: Sequence[ToolSpec]) -> AsyncIterator[LLMEvent]:
        return _stream_with_failover(
            self.name, self.members, lambda p: p.chat(messages, tools), empty_is_failure=False
        )

    async def _aclose(self) -> None:
        await asyncio.gather(*(m.provider.aclose() for m in self.members), return_exceptions=True)


class FallbackTTS(TTS):
    def __init__(self, members: Sequence[Member[TTS]]) -> None:
        self.members = tuple(members)
        self.name = _chain_name(self.members)

    async def _prepare(self, phrases: Sequence[str], sample_rate: int) -> None:
        await _prepare_all(self.name, self.members, lambda p: p.prepare(phrases, sample_rate))

    async def synthesize(self, text: str, sample_rate: int) -> AsyncIterator[bytes]:
        inner = guarded_stream(
            self._synthesize(text, sample_rate), provider=self.name, what="first audio", first_timeout=None
        )
        try:
            async for chunk in inner:
                yield chunk
        finally:
            # Close the chain now, not at garbage collection: barge-in must reach the vendor at once.
            await _aclose(inner)

    def _synthesize(self, text: str, sample_rate: int) -> AsyncIterator[bytes]:
        # A TTS that ends without a sample failed as surely as one that raised.
        return _stream_with_failover(
            self.name, self.members, lambda p: p.synthesize(text, sample_rate), empty_is_failure=True
        )

    async def _aclose(self) -> None:
        await asyncio.gather(*(m.provider.aclose() for m in self.members), return_exceptions=True)


# --------------------------------------------------------------------------
# Speech-to-text


def member_spec(stt: STT, spec: AudioSpec) -> AudioSpec:
    """What to send a member for audio arriving as ``spec``: the same, or its preferred PCM16."""
    specs = stt.capabilities.input_specs
    if spec in specs:
        return spec
    return next((s for s in specs if s.encoding == "pcm16"), specs[0])


class AudioConverter:
    """µ-law/PCM16 and sample rate, stateful across the chunks of one stream."""

    def __init__(self, source: AudioSpec, target: AudioSpec) -> None:
        self.source = source
        self.target = target
        self._resampler = StreamResampler(source.sample_rate, target.sample_rate)

    def __call__(self, audio: bytes) -> bytes:
        if self.source == self.target:
            return audio
        pcm = ulaw_decode(audio) if self.source.encoding == "mulaw" else pcm_from_bytes(audio)
        pcm = self._resampler.process(pcm)
        return ulaw_encode(pcm) if self.target.encoding == "mulaw" else pcm.astype("<i2").tobytes()


def _union_specs(members: Sequence[Member[STT]]) -> tuple[AudioSpec, ...]:
    specs: list[AudioSpec] = []
    for member in members:
        specs.extend(s for s in member.provider.capabilities.input_specs if s not in specs)
    return tuple(specs)


def _union_hears(caps: Sequence[STTCapabilities]) -> tuple[str, ...] | None:
    if any(c.hears is None for c in caps):
        return None
    return tuple(dict.fromkeys(code for c in caps for code in c.hears or ()))


class FallbackSTT(STT):
    def __init__(self, members: Sequence[Member[STT]]) -> None:
        self.members = tuple(members)
        self.name = _chain_name(self.members)
        caps = [m.provider.capabilities for m in self.members]
        # The session relies on provider endpointing only if every member does it.
        self.capabilities = STTCapabilities(
            streaming=any(c.streaming for c in caps),
            endpointing=all(c.endpointing for c in caps),
            segments=all(c.segments for c in caps),
            input_specs=_union_specs(self.members),
            # A member that does not report languages just leaves its transcripts without one.
            reports_language=any(c.reports_language for c in caps),
            hears=_union_hears(caps),
        )
        self.timeout = _budget(self.members, lambda p: p.timeout)
        self.connect_timeout = _budget(self.members, lambda p: p.connect_timeout)

    async def _prepare(self) -> None:
        await _prepare_all(self.name, self.members, lambda p: p.prepare())

    async def _recognize(self, pcm: bytes, sample_rate: int) -> Transcript:
        causes: list[str] = []
        for member in self.members:
            try:
                return await _guarded_call(member, lambda p: p.recognize(pcm, sample_rate))
            except ProviderError as exc:
                causes.append(str(exc))
        raise all_failed(self.name, causes)

    async def open_member(self, index: int, spec: AudioSpec) -> SpeechStream:
        target = member_spec(self.members[index].provider, spec)
        return await _guarded_call(self.members[index], lambda p: p.stream(target))

    async def _open_stream(self, spec: AudioSpec) -> SpeechStream:
        causes: list[str] = []
        for index in range(len(self.members)):
            try:
                stream = await self.open_member(index, spec)
            except ProviderError as exc:
                causes.append(str(exc))
                continue
            return _FallbackSpeechStream(self, spec, index, stream)
        raise all_failed(self.name, causes)

    async def _aclose(self) -> None:
        await asyncio.gather(*(m.provider.aclose() for m in self.members), return_exceptions=True)


class _FallbackSpeechStream(SpeechStream):
    def __init__(self, owner: FallbackSTT, spec: AudioSpec, index: int, stream: SpeechStream) -> None:
        super().__init__(owner.name, spec)
        self._owner = owner
        self._index = index
        self._stream: SpeechStream | None = stream
        self._convert = AudioConverter(spec, stream.spec)
        # Audio since the last final transcript, replayed into a replacement stream.
        self._turn = bytearray()
        width = 1 if spec.encoding == "mulaw" else 2
        self._turn_limit = int(REPLAY_SECONDS * spec.sample_rate) * width
        self._finalize_pending = False
        self._switches = 0
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def current(self) -> str:
        """The provider serving the stream now."""
        return self._owner.members[self._index].name

    def _push(self, audio: bytes) -> None:
        self._turn += audio
        excess = len(self._turn) - self._turn_limit
        if excess > 0:
            excess += excess % 2  # keep PCM16 samples whole
            del self._turn[:excess]
        stream = self._stream
        if stream is not None:  # None while switching: the audio waits in the replay buffer
            stream.push(self._convert(audio))

    def retract(self, size: int) -> bool:
        stream = self._stream
        # Only where no conversion stands between the two (a resampler's output is not cut
        # at the same place), and in the replay buffer too, so a replacement hears the same.
        if stream is None or stream.spec != self.spec or size > len(self._turn) or not stream.retract(size):
            return False
        del self._turn[len(self._turn) - size :]
        return True

    async def _finalize(self) -> None:
        self._finalize_pending = True
        stream = self._stream
        if stream is None:
            return  # the replacement is finalized once it is open
        try:
            await stream.finalize()
        except Exception as exc:
            # The events loop sees the same failure, switches and finalizes again.
            log.info("%s: finalize failed: %s", self.current, exc)

    async def _events(self) -> AsyncIterator[SpeechEvent]:
        while True:
            stream = self._stream
            if stream is None:
                raise ProviderError("no stream", provider=self.provider, retryable=False)
            try:
                async for event in stream.events():
                    if isinstance(event, FinalTranscript):
                        self._turn.clear()
                        self._switches = 0
                    elif isinstance(event, EndOfTurn):
                        self._turn.clear()
                        self._finalize_pending = False
                    yield event
                failure = ProviderError("stream ended unexpectedly", provider=stream.provider, retryable=True)
            except ProviderError as exc:
                failure = exc
            if self.closed:
                return
            await self._switch(failure)

    async def _switch(self, failure: ProviderError) -> None:
        members = self._owner.members
        failed = members[self._index]
        failed.breaker.record_failure()
        old, self._stream = self._stream, None
        if old is not None:
            # Closing a dead socket may wait on timeouts: keep it out of the gap.
            task = asyncio.create_task(old.aclose())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        self._switches += 1
        causes = [str(failure)]
        if self._switches > 2 * len(members):
            raise all_failed(self.provider, [*causes, "too many stream failures in one turn"])
        log.warning("%s: %s stream failed (%s); switching provider", self.provider, failed.name, failure)
        # The next providers first, then the earlier ones and the failed one itself (a transient reset).
        order = [*range(self._index + 1, len(members)), *range(self._index + 1)]
        for index in order:
            if self.closed:
                return
            try:
                stream = await self._owner.open_member(index, self.spec)
            except ProviderError as exc:
                causes.append(str(exc))
                continue
            if self.closed:
                await stream.aclose()
                return
            self._index = index
            self._convert = AudioConverter(self.spec, stream.spec)
            if self._turn:
                stream.push(self._convert(bytes(self._turn)))
            self._stream = stream
            log.info("%s: now on %s", self.provider, members[index].name)
            if self._finalize_pending:
                try:
                    await stream.finalize()
                except ProviderError as exc:
                    log.info("%s: finalize failed: %s", members[index].name, exc)
            return
        raise all_failed(self.provider, causes)

    async def _aclose(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            await stream.aclose()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
