"""DeepgramSTT through the real deepgram-sdk against a loopback fake of the listen WebSocket."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest

from providers.base import (
    MULAW_8K,
    PCM16_16K,
    EndOfTurn,
    FinalTranscript,
    InterimTranscript,
    ProviderContext,
    ProviderError,
    ProviderSpeechStarted,
    SpeechEvent,
    SpeechStream,
)
from providers.deepgram.stt import DeepgramSTT
from tests.fakes.deepgram_server import FakeDeepgram
from tests.fakes.threaded import serve

KEY = "dg-test-key-7f3a9c2e51b04d68"


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPGRAM_API_KEY", KEY)


async def until(predicate: Callable[[], bool], limit: float = 5.0) -> None:
    """Wait for a condition the fake records (the limit only stops a hung test)."""
    async with asyncio.timeout(limit):
        while not predicate():  # noqa: ASYNC110 - the fakes record into lists, with no event to wait on
            await asyncio.sleep(0.01)


async def collect(stream: SpeechStream, stop: Callable[[SpeechEvent], bool]) -> list[SpeechEvent]:
    events: list[SpeechEvent] = []
    async with asyncio.timeout(10):
        async for event in stream.events():
            events.append(event)
            if stop(event):
                break
    return events


def make_stt(url: str, **options: object) -> DeepgramSTT:
    ctx = ProviderContext(profile="test", language="en-US", options={"url": url, **options})
    return DeepgramSTT.create(ctx)


async def test_mulaw_stream_is_sent_as_is_and_results_become_events() -> None:
    fake = FakeDeepgram(["what time do you open"], bytes_per_turn=1600)
    async with serve(fake.app()) as http_url:
        stt = make_stt(http_url.replace("http://", "ws://"))
        stream = await stt.stream(MULAW_8K)
        for _ in range(10):
            stream.push(b"\xff" * 160)  # 20 ms of µ-law silence
        events = await collect(stream, lambda e: isinstance(e, EndOfTurn))
        await stream.aclose()
        await until(lambda: "CloseStream" in fake.listens[0].controls)

    record = fake.listens[0]
    assert record.query["encoding"] == "mulaw"
    assert record.query["sample_rate"] == "8000"
    assert record.query["model"] == "nova-3"
    assert record.query["language"] == "en-US"
    assert record.query["interim_results"] == "true"
    assert record.query["vad_events"] == "true"
    assert record.query["endpointing"] == "300"
    assert record.query["utterance_end_ms"] == "1000"
    assert record.authorization == f"Token {KEY}"
    assert record.audio_bytes == 1600
    assert isinstance(events[0], ProviderSpeechStarted)
    assert InterimTranscript("what time") in events
    finals = [e for e in events if isinstance(e, FinalTranscript)]
    assert [f.text for f in finals] == ["what time do you open"]
    assert finals[0].confidence == pytest.approx(0.97)
    assert record.controls[-1] == "CloseStream"


async def test_pcm16_stream_and_options_reach_the_query() -> None:
    fake = FakeDeepgram(["hello"])
    async with serve(fake.app()) as http_url:
        stt = make_stt(http_url.replace("http://", "ws://"), model="nova-2-phonecall", endpointing=500)
        stream = await stt.stream(PCM16_16K)
        stream.push(b"\x00\x01" * 320)
        await stream.finalize()
        events = await collect(stream, lambda e: isinstance(e, EndOfTurn))
        await stream.aclose()
    query = fake.listens[0].query
    assert (query["encoding"], query["sample_rate"]) == ("linear16", "16000")
    assert query["model"] == "nova-2-phonecall"
    assert query["endpointing"] == "500"
    assert fake.listens[0].controls[0] == "Finalize"
    assert events[-2:] == [FinalTranscript("hello", pytest.approx(0.97)), EndOfTurn()]


async def test_finalize_with_nothing_said_still_answers() -> None:
    fake = FakeDeepgram(["unused"])
    async with serve(fake.app()) as http_url:
        stream = await make_stt(http_url.replace("http://", "ws://")).stream(PCM16_16K)
        await stream.finalize()
        events = await collect(stream, lambda e: isinstance(e, EndOfTurn))
        await stream.aclose()
    assert events == [FinalTranscript("", pytest.approx(0.97)), EndOfTurn()]


async def test_keepalive_while_the_caller_is_silent() -> None:
    fake = FakeDeepgram()
    async with serve(fake.app()) as http_url:
        stream = await make_stt(http_url.replace("http://", "ws://"), keepalive_s=0.05).stream(PCM16_16K)
        await until(lambda: fake.listens[0].controls.count("KeepAlive") >= 2)
        await stream.aclose()
    assert fake.listens[0].audio_bytes == 0
    assert fake.listens[0].controls[-1] == "CloseStream"


async def test_socket_reset_raises_a_retryable_provider_error() -> None:
    fake = FakeDeepgram(["never said"], bytes_per_turn=100_000, reset_after_bytes=640)
    async with serve(fake.app()) as http_url:
        stream = await make_stt(http_url.replace("http://", "ws://")).stream(PCM16_16K)
        for _ in range(4):
            stream.push(b"\x00\x00" * 320)
        with pytest.raises(ProviderError) as caught:
            await collect(stream, lambda e: False)
        await stream.aclose()
    assert caught.value.retryable
    assert caught.value.provider == "deepgram"
    assert fake.listens[0].reset


async def test_rejected_key_is_not_retryable_and_never_shown(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    fake = FakeDeepgram(reject_status=401)
    async with serve(fake.app()) as http_url:
        stt = make_stt(http_url.replace("http://", "ws://"))
        with pytest.raises(ProviderError) as caught:
            await stt.stream(PCM16_16K)
    assert caught.value.status == 401
    assert not caught.value.retryable
    assert KEY not in str(caught.value) and KEY not in repr(caught.value)
    assert KEY not in repr(stt) and KEY not in str(vars(stt))
    assert KEY not in caplog.text


async def test_batch_recognize_uses_finalize() -> None:
    fake = FakeDeepgram(["can i speak to someone"])
    async with serve(fake.app()) as http_url:
        stt = make_stt(http_url.replace("http://", "ws://"))
        transcript = await stt.recognize(b"\x00\x00" * 8000, 8000)
    assert transcript.text == "can i speak to someone"
    assert fake.listens[0].query["sample_rate"] == "8000"
    assert fake.listens[0].controls[:1] == ["Finalize"]


def test_check_names_the_missing_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEEPGRAM_API_KEY")
    monkeypatch.setenv("DEEPGRAM_API_KEY_FILE", "/nonexistent/key")
    problems = DeepgramSTT.check(ProviderContext(profile="test"))
    assert len(problems) == 1 and "DEEPGRAM_API_KEY" in problems[0]
