"""OpenAITTS through the real openai SDK against the wire-level fake on loopback."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from providers.base import ProviderContext, ProviderError
from providers.openai.tts import OpenAITTS
from tests.fakes.openai_server import RATE, FakeOpenAI, Fault, SpeechReply, fake_fixture, speech_pcm

KEY = "sk-test-tts-0123456789abcdef"
TEXT = "Thank you for calling. We open at nine."


fake = fake_fixture(KEY)


def make(url: str, voice: str | None = None, **options: object) -> OpenAITTS:
    return OpenAITTS.create(ProviderContext("test", voice=voice, options={"base_url": url, **options}))


async def synthesize(tts: OpenAITTS, rate: int, text: str = TEXT) -> bytes:
    try:
        return b"".join([chunk async for chunk in tts.synthesize(text, rate)])
    finally:
        await tts.aclose()


@pytest.mark.parametrize("rate", [8000, 16000, 24000])
async def test_speech_is_resampled_to_the_call_rate(fake: tuple[FakeOpenAI, str], rate: int) -> None:
    server, url = fake
    pcm = await synthesize(make(url, voice="nova", tts_model="tts-test"), rate)
    source = len(speech_pcm(TEXT)) // 2
    samples = np.frombuffer(pcm, dtype=np.int16)
    assert abs(samples.size - source * rate / RATE) < rate * 0.03  # same duration
    assert np.sqrt(np.mean(samples.astype(np.float64) ** 2)) > 300  # speech, not silence
    body = server.requests[-1].body
    assert body == {"model": "tts-test", "voice": "nova", "input": TEXT, "response_format": "pcm"}


async def test_first_audio_arrives_before_the_body_is_complete(fake: tuple[FakeOpenAI, str]) -> None:
    server, url = fake
    gate = asyncio.Event()
    server.speech_replies.append(SpeechReply(gate=gate))
    tts = make(url)
    stream = tts.synthesize(TEXT, 16000)
    # The server holds everything after its first chunk until the gate opens:
    # a client that waited for the whole body would never get here.
    first = await asyncio.wait_for(anext(stream), 30)
    assert len(first) > 0
    assert not gate.is_set()
    gate.set()
    rest = [chunk async for chunk in stream]
    assert rest
    await tts.aclose()


async def test_default_voice_is_alloy(fake: tuple[FakeOpenAI, str]) -> None:
    server, url = fake
    await synthesize(make(url), 8000, "Hi.")
    assert server.requests[-1].body["voice"] == "alloy"
    assert server.requests[-1].body["model"] == "gpt-4o-mini-tts"


async def test_empty_audio_is_a_retryable_error(fake: tuple[FakeOpenAI, str]) -> None:
    # A 200 with no audio must not become silence on the call: the fallback TTS speaks.
    server, url = fake
    server.speech_replies.append(SpeechReply(empty=True))
    with pytest.raises(ProviderError) as info:
        await synthesize(make(url), 8000)
    assert info.value.retryable
    assert "no audio" in str(info.value)


@pytest.mark.parametrize(("status", "retryable"), [(429, True), (503, True), (401, False)])
async def test_http_errors(fake: tuple[FakeOpenAI, str], status: int, retryable: bool) -> None:
    server, url = fake
    server.speech_replies.append(SpeechReply(fault=Fault(status=status)))
    with pytest.raises(ProviderError) as info:
        await synthesize(make(url), 8000)
    assert info.value.retryable is retryable
    assert info.value.status == status


async def test_reset_mid_body_is_retryable(fake: tuple[FakeOpenAI, str]) -> None:
    server, url = fake
    server.speech_replies.append(SpeechReply(fault=Fault(reset_after_chunks=2)))
    tts = make(url)
    got: list[bytes] = []
    with pytest.raises(ProviderError) as info:
        async for chunk in tts.synthesize(TEXT, 8000):
            got.append(chunk)
    await tts.aclose()
    assert info.value.retryable
    assert got  # the audio before the reset was delivered
