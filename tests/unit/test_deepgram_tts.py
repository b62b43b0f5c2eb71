"""DeepgramTTS through the real deepgram-sdk against a loopback fake of the speak WebSocket."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import numpy as np
import pytest

from providers.base import ProviderContext, ProviderError
from providers.deepgram.tts import DeepgramTTS, strip_wav_header
from tests.fakes.deepgram_server import FakeDeepgram
from tests.fakes.threaded import serve

KEY = "dg-test-key-tts-5e8b1f0a7c"


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPGRAM_API_KEY", KEY)


async def until(predicate: Callable[[], bool], limit: float = 5.0) -> None:
    """Wait for a condition the fake records (the limit only stops a hung test)."""
    async with asyncio.timeout(limit):
        while not predicate():  # noqa: ASYNC110 - the fakes record into lists, with no event to wait on
            await asyncio.sleep(0.01)


def make_tts(http_url: str, voice: str | None = None, **options: object) -> DeepgramTTS:
    url = http_url.replace("http://", "ws://")
    return DeepgramTTS.create(ProviderContext(profile="test", voice=voice, options={"url": url, **options}))


@pytest.mark.parametrize("rate", [8000, 16000])
async def test_speaks_at_the_call_rate(rate: int) -> None:
    fake = FakeDeepgram(tts_ms_per_char=10)
    text = "We open at nine."
    async with serve(fake.app()) as url:
        chunks = [c async for c in make_tts(url).synthesize(text, rate)]
        await until(lambda: "Close" in fake.speaks[0].controls)
    record = fake.speaks[0]
    assert record.query == {"model": "aura-2-thalia-en", "encoding": "linear16", "sample_rate": str(rate)}
    assert record.authorization == f"Token {KEY}"
    assert record.texts == [text]
    assert record.controls == ["Flush", "Close"]
    audio = b"".join(chunks)
    assert len(audio) == record.audio_bytes_sent == 2 * int(rate * 0.010 * len(text))
    assert all(len(c) % 2 == 0 for c in chunks)
    assert np.abs(np.frombuffer(audio, "<i2")).max() > 4000  # the tone, not silence


async def test_voice_names_the_model() -> None:
    fake = FakeDeepgram(tts_ms_per_char=1)
    async with serve(fake.app()) as url:
        [c async for c in make_tts(url, voice="aura-2-orion-en").synthesize("Hi.", 8000)]
    assert fake.speaks[0].query["model"] == "aura-2-orion-en"


async def test_stopping_early_sends_clear() -> None:
    fake = FakeDeepgram(tts_ms_per_char=50, tts_chunk_delay=0.01)
    text = "This is a long answer that the caller interrupts half way through."
    async with serve(fake.app()) as url:
        stream = make_tts(url).synthesize(text, 16000)
        received = [await anext(stream), await anext(stream)]
        await stream.aclose()  # barge-in: the session stops consuming
        await until(lambda: "Clear" in fake.speaks[0].controls)
    record = fake.speaks[0]
    assert len(received) == 2
    assert record.controls[:2] == ["Flush", "Clear"]
    assert record.audio_bytes_sent < 2 * int(16000 * 0.050 * len(text))


async def test_no_audio_yields_nothing() -> None:
    fake = FakeDeepgram(tts_empty=True)
    async with serve(fake.app()) as url:
        chunks = [c async for c in make_tts(url).synthesize("Hello.", 8000)]
    assert chunks == []
    assert fake.speaks[0].controls[0] == "Flush"


async def test_unsupported_rate_is_not_retryable() -> None:
    tts = DeepgramTTS()
    with pytest.raises(ProviderError) as caught:
        [c async for c in tts.synthesize("Hello.", 11025)]
    assert not caught.value.retryable


async def test_rejected_key(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    fake = FakeDeepgram(reject_status=403)
    async with serve(fake.app()) as url:
        tts = make_tts(url)
        with pytest.raises(ProviderError) as caught:
            [c async for c in tts.synthesize("Hello.", 8000)]
    assert caught.value.status == 403 and not caught.value.retryable
    assert KEY not in str(caught.value) and KEY not in repr(tts)
    assert KEY not in caplog.text


def test_wav_header_is_stripped() -> None:
    header = b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00" + bytes(16) + b"data\x00\x00\x00\x00"
    assert strip_wav_header(header + b"\x01\x02") == b"\x01\x02"
    assert strip_wav_header(b"\x01\x02") == b"\x01\x02"
