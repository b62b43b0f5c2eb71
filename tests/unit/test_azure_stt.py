"""AzureSTT through the SDK seam, with a fake that calls back from its own threads like the SDK."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from providers.azure.stt import AzureSTT
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
from tests.fakes.azure_speech import FakeAzure

KEY = "az-test-key-0c4e7d19b2a8"


async def collect(stream: SpeechStream, stop: Callable[[SpeechEvent], bool]) -> list[SpeechEvent]:
    events: list[SpeechEvent] = []
    async with asyncio.timeout(10):
        async for event in stream.events():
            events.append(event)
            if stop(event):
                break
    return events


@contextmanager
def refusing_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound, never listening, so nobody else takes it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


async def test_mulaw_push_stream_and_events_from_sdk_threads() -> None:
    fake = FakeAzure(["what time do you open"], bytes_per_phrase=1600)
    stt = AzureSTT(fake, language="en-GB")
    stream = await stt.stream(MULAW_8K)
    for _ in range(10):
        stream.push(b"\xff" * 160)
    events = await collect(stream, lambda e: isinstance(e, EndOfTurn))
    await stream.aclose()

    recognition = fake.recognitions[0]
    assert recognition.spec == MULAW_8K
    assert recognition.language == "en-GB"
    assert recognition.audio_bytes == 1600
    assert events == [
        ProviderSpeechStarted(),
        InterimTranscript("what time"),
        FinalTranscript("what time do you open"),
        EndOfTurn(),
    ]
    # The callbacks really came from other threads, and were delivered in order anyway.
    assert threading.get_ident() not in fake.callback_threads
    assert recognition.stopped
    assert recognition.stop_thread != threading.get_ident()  # stop() blocks: run off the loop


async def test_finalize_with_nothing_heard_answers_at_once() -> None:
    fake = FakeAzure(bytes_per_phrase=None)
    stream = await AzureSTT(fake).stream(PCM16_16K)
    stream.push(bytes(640))
    await stream.finalize()
    events = await collect(stream, lambda e: isinstance(e, EndOfTurn))
    await stream.aclose()
    assert events == [FinalTranscript(""), EndOfTurn()]


async def test_finalize_during_a_phrase_waits_for_it() -> None:
    fake = FakeAzure(["i would like to book a table"], bytes_per_phrase=6400)
    stream = await AzureSTT(fake).stream(PCM16_16K)
    stream.push(bytes(3200))  # half a phrase: Azure is still recognising
    seen = await collect(stream, lambda e: isinstance(e, InterimTranscript))
    await stream.finalize()
    stream.push(bytes(3200))  # the caller's trailing audio ends the phrase
    events = await collect(stream, lambda e: isinstance(e, EndOfTurn))
    await stream.aclose()
    assert seen[-1] == InterimTranscript("i would like")
    assert events == [FinalTranscript("i would like to book a table"), EndOfTurn()]


@pytest.mark.parametrize(
    ("code", "retryable"), [("ConnectionFailure", True), ("AuthenticationFailure", False)]
)
async def test_canceled_becomes_a_provider_error(code: str, retryable: bool) -> None:
    fake = FakeAzure(cancel_after_bytes=320, cancel_code=code)
    stream = await AzureSTT(fake).stream(PCM16_16K)
    stream.push(bytes(640))
    with pytest.raises(ProviderError) as caught:
        await collect(stream, lambda e: False)
    await stream.aclose()
    assert caught.value.retryable is retryable
    assert code in str(caught.value)


async def test_close_ends_the_events() -> None:
    fake = FakeAzure()
    stream = await AzureSTT(fake).stream(PCM16_16K)
    reader = asyncio.create_task(collect(stream, lambda e: False))
    await asyncio.sleep(0)
    await stream.aclose()
    assert await reader == []
    assert fake.recognitions[0].stopped


async def test_batch_recognize() -> None:
    fake = FakeAzure(["can i speak to someone"], bytes_per_phrase=16000)
    transcript = await AzureSTT(fake).recognize(bytes(16000), 16000)
    assert transcript.text == "can i speak to someone"


async def test_real_sdk_path_offline(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The real SDK objects are built and run; the service is a closed loopback port."""
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("AZURE_SPEECH_KEY", KEY)
    with refusing_port() as port:
        ctx = ProviderContext(profile="test", options={"host": f"ws://127.0.0.1:{port}"})
        assert AzureSTT.check(ctx) == []
        stt = AzureSTT.create(ctx)
        stream = await stt.stream(MULAW_8K)
        stream.push(b"\xff" * 1600)
        with pytest.raises(ProviderError) as caught:
            await collect(stream, lambda e: False)
        await stream.aclose()
    assert caught.value.retryable
    assert "ConnectionFailure" in str(caught.value)
    assert KEY not in str(caught.value) and KEY not in repr(stt) and KEY not in repr(stt.backend)
    assert KEY not in caplog.text


def test_check_lists_missing_key_and_region(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AZURE_SPEECH_KEY", "AZURE_SPEECH_REGION"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv(f"{name}_FILE", "/nonexistent/secret")
    problems = AzureSTT.check(ProviderContext(profile="test"))
    assert len(problems) == 2
    assert "AZURE_SPEECH_KEY" in problems[0] and "AZURE_SPEECH_REGION" in problems[1]
    monkeypatch.setenv("AZURE_SPEECH_KEY", KEY)
    monkeypatch.setenv("AZURE_SPEECH_REGION", "westeurope")
    assert AzureSTT.check(ProviderContext(profile="test")) == []
