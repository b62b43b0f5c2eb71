"""Retries, circuit breakers and fallback chains, over real adapters and loopback fakes where it matters."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Self

import pytest

from providers.azure.tts import AzureTTS
from providers.base import (
    LLM,
    MULAW_8K,
    PCM16_16K,
    STT,
    EndOfTurn,
    FinalTranscript,
    LLMEvent,
    Message,
    ProviderContext,
    ProviderError,
    SpeechEvent,
    SpeechStream,
    TextDelta,
    ToolSpec,
    Transcript,
)
from providers.deepgram.stt import DeepgramSTT
from providers.deepgram.tts import DeepgramTTS
from providers.fallback import AudioConverter, FallbackLLM, FallbackSTT, FallbackTTS, Member
from providers.resilience import BreakerBoard, CircuitBreaker, RetryPolicy, build_chain
from tests.fakes.azure_speech import FakeAzure
from tests.fakes.deepgram_server import FakeDeepgram
from tests.fakes.threaded import serve

KEY = "dg-resilience-key-93be01c7"
FAST = RetryPolicy(attempts=2, base_delay=0.0, max_delay=0.0, jitter=0.0)


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPGRAM_API_KEY", KEY)


async def until(predicate: Callable[[], bool], limit: float = 5.0) -> None:
    """Wait for a condition the fake records (the limit only stops a hung test)."""
    async with asyncio.timeout(limit):
        while not predicate():  # noqa: ASYNC110 - the fakes record into lists, with no event to wait on
            await asyncio.sleep(0.01)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class ScriptLLM(LLM):
    """An LLM whose calls follow a script: an HTTP status to fail with, or a reply."""

    def __init__(self, name: str, script: Sequence[int | str], *, fail_after: int | None = None) -> None:
        self.name = name
        self.script = list(script)
        self.fail_after = fail_after  # fail mid-stream after this many deltas
        self.calls = 0

    @classmethod
    def create(cls, ctx: ProviderContext) -> Self:
        return cls(str(ctx.options["label"]), list(ctx.options["script"]))

    @classmethod
    def check(cls, ctx: ProviderContext) -> list[str]:
        return []

    async def _chat(self, messages: Sequence[Message], tools: Sequence[ToolSpec]) -> AsyncIterator[LLMEvent]:
        step = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        if isinstance(step, int):
            raise ProviderError.from_status(self.name, step, "scripted")
        for n, word in enumerate(step.split()):
            if self.fail_after is not None and n == self.fail_after:
                raise ProviderError("connection reset", provider=self.name, retryable=True)
            yield TextDelta(word)


async def reply(llm: LLM) -> str:
    return " ".join([e.text async for e in llm.chat([Message("user", "hi")]) if isinstance(e, TextDelta)])


def member(
    provider: Any, clock: FakeClock | None = None, threshold: int = 3, policy: RetryPolicy = FAST
) -> Any:
    return Member(provider, CircuitBreaker(threshold, 30.0, clock or FakeClock()), policy)


# ---------------------------------------------------------------- policy, breaker


def test_backoff_doubles_up_to_the_cap_with_jitter_below() -> None:
    policy = RetryPolicy(attempts=5, base_delay=0.1, max_delay=0.3, jitter=0.0)
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == pytest.approx([0.1, 0.2, 0.3, 0.3])
    jittered = RetryPolicy(attempts=5, base_delay=0.1, max_delay=1.0, jitter=0.5)
    rng = random.Random(7)
    delays = [jittered.delay(2, rng) for _ in range(200)]
    assert all(0.1 <= d <= 0.2 for d in delays)
    assert max(delays) - min(delays) > 0.05  # actually spread


async def test_policy_retries_only_retryable_errors() -> None:
    attempts: list[int] = []

    async def flaky(status: int) -> str:
        attempts.append(status)
        if len(attempts) == 1:
            raise ProviderError.from_status("x", status, "first")
        return "ok"

    async def no_sleep(_: float) -> None:
        return None

    policy = RetryPolicy(attempts=3)
    assert await policy.run(lambda: flaky(429), sleep=no_sleep) == "ok"
    assert attempts == [429, 429]
    attempts.clear()
    with pytest.raises(ProviderError):
        await policy.run(lambda: flaky(401), sleep=no_sleep)
    assert attempts == [401]


def test_breaker_opens_half_opens_and_closes() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=3, reset_timeout=30.0, clock=clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.state == "closed"
    breaker.record_failure()
    assert breaker.state == "open" and not breaker.allow()
    clock.now += 29.9
    assert not breaker.allow()
    clock.now += 0.1
    assert breaker.state == "half_open"
    assert breaker.allow()  # the one trial
    assert not breaker.allow()  # nobody else while it runs
    breaker.record_failure()
    assert breaker.state == "open" and not breaker.allow()
    clock.now += 30
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed" and breaker.allow() and breaker.allow()


def test_breaker_trial_released_when_cancelled() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(1, 10.0, clock)
    breaker.record_failure()
    clock.now += 10
    assert breaker.allow()
    breaker.release()
    assert breaker.allow()


# ---------------------------------------------------------------- LLM chains


async def test_llm_429_then_200_is_retried_on_the_same_provider() -> None:
    primary = ScriptLLM("primary", [429, "we open at nine"])
    backup = ScriptLLM("backup", ["backup answer"])
    chain = FallbackLLM([member(primary), member(backup)])
    assert await reply(chain) == "we open at nine"
    assert (primary.calls, backup.calls) == (2, 0)


async def test_llm_401_is_not_retried_and_fails_over() -> None:
    primary = ScriptLLM("primary", [401])
    backup = ScriptLLM("backup", ["backup answer"])
    chain = FallbackLLM([member(primary), member(backup)])
    assert await reply(chain) == "backup answer"
    assert (primary.calls, backup.calls) == (1, 1)


async def test_every_provider_down_is_one_final_error() -> None:
    chain = FallbackLLM([member(ScriptLLM("a", [401])), member(ScriptLLM("b", [503]))])
    with pytest.raises(ProviderError) as caught:
        await reply(chain)
    assert not caught.value.retryable
    assert "a: HTTP 401" in str(caught.value) and "b: HTTP 503" in str(caught.value)


async def test_breaker_skips_a_failing_provider_then_tries_it_again() -> None:
    clock = FakeClock()
    primary = ScriptLLM("primary", [500, 500, 500, 500, "recovered"])
    backup = ScriptLLM("backup", ["backup answer"])
    chain = FallbackLLM([member(primary, clock, threshold=2), member(backup, clock)])
    assert await reply(chain) == "backup answer"  # 2 tries of primary: first failure
    assert await reply(chain) == "backup answer"  # 2 more: the breaker opens
    assert primary.calls == 4
    assert await reply(chain) == "backup answer"
    assert primary.calls == 4  # skipped while open
    clock.now += 30
    assert await reply(chain) == "recovered"  # half-open trial succeeds
    assert chain.members[0].breaker.state == "closed"


async def test_mid_stream_failure_is_raised_not_failed_over() -> None:
    primary = ScriptLLM("primary", ["one two three"], fail_after=2)
    backup = ScriptLLM("backup", ["backup answer"])
    chain = FallbackLLM([member(primary), member(backup)])
    got: list[str] = []
    with pytest.raises(ProviderError):
        async for event in chain.chat([Message("user", "hi")]):
            assert isinstance(event, TextDelta)
            got.append(event.text)
    assert got == ["one", "two"]
    assert backup.calls == 0


# ---------------------------------------------------------------- TTS chains (wire level)


async def test_tts_without_audio_falls_back_to_the_next_tts() -> None:
    silent = FakeDeepgram(tts_empty=True)
    azure = FakeAzure(tts_chunks=3)
    async with serve(silent.app()) as url:
        deepgram = DeepgramTTS(options={"url": url.replace("http://", "ws://")})
        chain = FallbackTTS([member(deepgram), member(AzureTTS(azure))])
        audio = b"".join([c async for c in chain.synthesize("We open at nine.", 8000)])
    assert len(silent.speaks) == 2  # tried, retried, then given up
    assert len(audio) == 3 * 2 * 160
    assert azure.syntheses[0].text == "We open at nine."


async def test_closing_a_tts_chain_clears_deepgram() -> None:
    fake = FakeDeepgram(tts_ms_per_char=50, tts_chunk_delay=0.01)
    async with serve(fake.app()) as url:
        chain = FallbackTTS([member(DeepgramTTS(options={"url": url.replace("http://", "ws://")}))])
        stream = chain.synthesize("An answer long enough to be interrupted by the caller.", 16000)
        await anext(stream)
        await stream.aclose()
        await until(lambda: "Clear" in fake.speaks[0].controls)
    assert fake.speaks[0].audio_bytes_sent < 2 * int(16000 * 0.050 * 54)


# ---------------------------------------------------------------- STT chains (wire level)


async def collect(stream: SpeechStream, stop: Callable[[SpeechEvent], bool]) -> list[SpeechEvent]:
    events: list[SpeechEvent] = []
    async with asyncio.timeout(10):
        async for event in stream.events():
            events.append(event)
            if stop(event):
                break
    return events


async def test_stt_reset_mid_utterance_fails_over_and_the_turn_is_understood(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    broken = FakeDeepgram(["never delivered"], bytes_per_turn=3200, reset_after_bytes=1600)
    backup = FakeDeepgram(["what time do you open"], bytes_per_turn=3200)
    async with serve(broken.app()) as url1, serve(backup.app()) as url2:
        first = DeepgramSTT(options={"url": url1.replace("http://", "ws://")})
        second = DeepgramSTT(options={"url": url2.replace("http://", "ws://")})
        chain = FallbackSTT([member(first), member(second)])
        stream = await chain.stream(PCM16_16K)
        reader = asyncio.create_task(collect(stream, lambda e: isinstance(e, FinalTranscript)))
        for _ in range(5):
            stream.push(b"\x01\x00" * 160)
        await until(lambda: bool(broken.listens) and broken.listens[0].reset)
        for _ in range(5):
            stream.push(b"\x01\x00" * 160)
        events = await reader
        await stream.aclose()
    assert [e.text for e in events if isinstance(e, FinalTranscript)] == ["what time do you open"]
    # The whole turn reached the backup: the part sent before the reset was replayed.
    assert backup.listens[0].audio_bytes == 3200
    assert chain.members[0].breaker._failures == 1
    assert KEY not in caplog.text


async def test_stt_429_on_connect_is_retried() -> None:
    fake = FakeDeepgram(["hello"], reject_status=429, reject_times=1)
    async with serve(fake.app()) as url:
        chain = FallbackSTT([member(DeepgramSTT(options={"url": url.replace("http://", "ws://")}))])
        stream = await chain.stream(MULAW_8K)
        await stream.finalize()
        await collect(stream, lambda e: isinstance(e, EndOfTurn))
        await stream.aclose()
    assert fake.rejected == 1 and len(fake.listens) == 1
    assert fake.listens[0].query["encoding"] == "mulaw"


async def test_stt_401_fails_over_without_retry_and_never_shows_the_key() -> None:
    rejecting = FakeDeepgram(reject_status=401)
    async with serve(rejecting.app()) as url:
        chain = FallbackSTT(
            [
                member(DeepgramSTT(options={"url": url.replace("http://", "ws://")})),
                member(DeepgramSTT(options={"url": url.replace("http://", "ws://")})),
            ]
        )
        with pytest.raises(ProviderError) as caught:
            await chain.stream(PCM16_16K)
    assert rejecting.rejected == 2  # once per provider, no retries
    assert not caught.value.retryable and "HTTP 401" in str(caught.value)
    assert KEY not in str(caught.value)


class PcmOnlySTT(STT):
    """A turn-by-turn STT taking 16 kHz PCM only; reports how many bytes it got."""

    name = "pcm-only"

    async def _recognize(self, pcm: bytes, sample_rate: int) -> Transcript:
        return Transcript(f"{len(pcm)} bytes at {sample_rate}")


async def test_audio_is_converted_for_a_member_that_needs_another_format() -> None:
    down = FakeDeepgram(reject_status=503)
    async with serve(down.app()) as url:
        deepgram = DeepgramSTT(options={"url": url.replace("http://", "ws://")})
        chain = FallbackSTT([member(deepgram), member(PcmOnlySTT())])
        assert chain.capabilities.input_specs[0] == MULAW_8K
        stream = await chain.stream(MULAW_8K)  # the call's µ-law; Deepgram is down
        for _ in range(50):
            stream.push(b"\xff" * 160)  # one second
        await stream.finalize()
        events = await collect(stream, lambda e: isinstance(e, EndOfTurn))
        await stream.aclose()
    text = next(e.text for e in events if isinstance(e, FinalTranscript))
    size, _, rate = text.partition(" bytes at ")
    assert rate == "16000"
    assert 30000 <= int(size) <= 32000  # one second of 16 kHz PCM16, less the filter's delay


def test_converter_round_trip_keeps_the_signal() -> None:
    import numpy as np

    from ari_agent.media.codecs import ulaw_encode

    t = np.arange(8000) / 8000
    tone = (8000 * np.sin(2 * np.pi * 300 * t)).astype(np.int16)
    out = np.frombuffer(AudioConverter(MULAW_8K, PCM16_16K)(ulaw_encode(tone)), "<i2")
    assert abs(len(out) - 16000) < 1000
    assert 5000 < np.abs(out[2000:-2000]).max() < 9000


async def test_build_chain_reads_timeouts_and_retries_from_options() -> None:
    board = BreakerBoard(clock=FakeClock())
    options = {
        "a": {
            "label": "a",
            "script": [429, 429, "late"],
            "first_token_timeout": 2.5,
            "retry_attempts": 3,
            "retry_base_delay": 0,
            "retry_jitter": 0,
        },
        "b": {"label": "b", "script": ["backup"]},
    }
    names = ["tests.unit.test_resilience:ScriptLLM", "tests.unit.test_resilience:ScriptLLM"]
    contexts = iter(
        [
            ProviderContext(profile="p", options=options["a"]),
            ProviderContext(profile="p", options=options["b"]),
        ]
    )
    chain = build_chain("llm", names, lambda name: next(contexts), breakers=board)
    assert isinstance(chain, FallbackLLM)
    first = chain.members[0].provider
    assert first.first_token_timeout == 2.5
    assert await reply(chain) == "late"  # three tries allowed by its options
    assert set(board.states()) == {"p:llm:tests.unit.test_resilience:ScriptLLM"}


class KeepsPcmSTT(STT):
    """A turn-by-turn STT that keeps the audio it was asked to recognise."""

    name = "keeps-pcm"

    def __init__(self) -> None:
        self.heard: list[bytes] = []

    async def _recognize(self, pcm: bytes, sample_rate: int) -> Transcript:
        self.heard.append(pcm)
        return Transcript("ok")


async def test_audio_taken_back_through_the_chain_never_reaches_a_turn_by_turn_recogniser() -> None:
    # Issue 12: silence the receive clock filled for a stalled word is retracted before the
    # turn is recognised; the chain passes that on, and its replay buffer forgets it too.
    inner = KeepsPcmSTT()
    chain = FallbackSTT([member(inner)])
    stream = await chain.stream(PCM16_16K)
    word, fill = b"\x01\x02" * 3200, bytes(9600)
    stream.push(word + fill)
    assert stream.retract(len(fill))
    assert not stream.retract(10**6)  # more than was pushed: nothing is taken
    stream.push(word)
    await stream.finalize()
    await collect(stream, lambda e: isinstance(e, EndOfTurn))
    await stream.aclose()
    assert inner.heard == [word + word]


def test_a_scoped_chain_has_its_own_breakers() -> None:
    # A language's voice is the profile's TTS with other options: its failures must not open the
    # breaker of the default voice that every other call of the profile uses.
    board = BreakerBoard(clock=FakeClock())
    name = "tests.unit.test_resilience:ScriptLLM"
    ctx = ProviderContext(profile="p", options={"label": "a", "script": ["x"]})
    default = build_chain("llm", [name], lambda _: ctx, breakers=board)
    spanish = build_chain("llm", [name], lambda _: ctx, breakers=board, scope="es")
    assert default.members[0].breaker is not spanish.members[0].breaker
    assert set(board.states()) == {f"p:llm:{name}", f"p:llm:{name}@es"}
