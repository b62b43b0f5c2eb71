"""OpenAISTT through the real openai SDK: batch uploads and the live transcription session."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from ari_agent.media.codecs import ulaw_encode
from providers.base import (
    MULAW_8K,
    PCM16_16K,
    BufferedSpeechStream,
    EndOfTurn,
    FinalTranscript,
    InterimTranscript,
    ProviderContext,
    ProviderError,
    ProviderSpeechStarted,
    SpeechEvent,
    SpeechStream,
)
from providers.openai.stt import OpenAISTT, TranscriptionEvents, language_code
from tests.fakes.openai_server import FakeOpenAI, Fault, TranscriptionReply, fake_fixture, tone_pcm

KEY = "sk-test-stt-0123456789abcdef"
GUARD = 30  # seconds: a deadlock guard only


fake = fake_fixture(KEY)


def make(url: str, hints: tuple[str, ...] = (), **options: object) -> OpenAISTT:
    ctx = ProviderContext("test", language="en-GB", hints=hints, options={"base_url": url, **options})
    return OpenAISTT.create(ctx)


def utterance(rate: int, speech_ms: int = 400, silence_ms: int = 500) -> np.ndarray:
    loud = np.frombuffer(tone_pcm(speech_ms, rate), dtype=np.int16)
    return np.concatenate([loud, np.zeros(rate * silence_ms // 1000, dtype=np.int16)])


def push(stream: SpeechStream, audio: np.ndarray) -> None:
    frame = stream.spec.sample_rate // 50
    for i in range(0, audio.size, frame):
        chunk = audio[i : i + frame]
        stream.push(ulaw_encode(chunk) if stream.spec.encoding == "mulaw" else chunk.astype("<i2").tobytes())


async def read_until_end_of_turn(stream: SpeechStream) -> list[SpeechEvent]:
    events: list[SpeechEvent] = []

    async def read() -> None:
        async for event in stream.events():
            events.append(event)
            if isinstance(event, EndOfTurn):
                return

    await asyncio.wait_for(read(), GUARD)
    return events


async def test_recognize_uploads_a_wav(fake: tuple[FakeOpenAI, str]) -> None:
    server, url = fake
    server.transcription_replies.append(TranscriptionReply(text=" what time do you open "))
    stt = make(url, hints=("what time do you open", "opening hours"), stt_model="whisper-test")
    pcm = utterance(16000).astype("<i2").tobytes()
    transcript = await stt.recognize(pcm, 16000)
    await stt.aclose()
    assert transcript.text == "what time do you open"
    assert server.transcribed_audio == [(16000, len(pcm) // 2)]
    fields = server.requests[-1].body
    assert fields["model"] == "whisper-test"
    assert fields["language"] == "en"
    assert "opening hours" in fields["prompt"]


@pytest.mark.parametrize(("status", "retryable"), [(429, True), (401, False)])
async def test_recognize_errors(fake: tuple[FakeOpenAI, str], status: int, retryable: bool) -> None:
    server, url = fake
    server.transcription_replies.append(TranscriptionReply(fault=Fault(status=status)))
    stt = make(url)
    with pytest.raises(ProviderError) as info:
        await stt.recognize(bytes(3200), 16000)
    await stt.aclose()
    assert info.value.retryable is retryable


async def test_batch_mode_buffers_turns(fake: tuple[FakeOpenAI, str]) -> None:
    server, url = fake
    stt = make(url, stt_streaming=False)
    assert not stt.capabilities.streaming
    stream = await stt.stream(PCM16_16K)
    assert isinstance(stream, BufferedSpeechStream)
    push(stream, utterance(16000))
    await stream.finalize()
    events = await read_until_end_of_turn(stream)
    await stream.aclose()
    await stt.aclose()
    assert events == [FinalTranscript("hello there"), EndOfTurn()]
    assert server.realtime_connections == []


@pytest.mark.parametrize("spec", [MULAW_8K, PCM16_16K])
async def test_live_stream_with_server_vad(fake: tuple[FakeOpenAI, str], spec: object) -> None:
    server, url = fake
    server.realtime.caller_transcripts.append("can i speak to someone")
    stt = make(url, hints=("can i speak to someone",), silence_duration_ms=200)
    assert stt.capabilities.streaming and stt.capabilities.endpointing
    stream = await stt.stream(spec)  # type: ignore[arg-type]
    audio = utterance(stream.spec.sample_rate)
    push(stream, audio)
    events = await read_until_end_of_turn(stream)
    await stream.aclose()
    await stt.aclose()
    assert isinstance(events[0], ProviderSpeechStarted)
    interims = [e.text for e in events if isinstance(e, InterimTranscript)]
    assert interims[0] == "can" and interims[-1] == "can i speak to someone"
    assert events[-2:] == [FinalTranscript("can i speak to someone"), EndOfTurn()]
    assert server.realtime_connections == [{"intent": "transcription"}]
    session = server.events_of("session.update")[0]["session"]
    assert session["type"] == "transcription"
    fmt = session["audio"]["input"]["format"]
    appended = sum(e["bytes"] for e in server.events_of("input_audio_buffer.append"))
    if spec == MULAW_8K:
        assert fmt == {"type": "audio/pcmu"}
        assert appended == audio.size  # µ-law as is, one byte a sample
    else:
        assert fmt == {"type": "audio/pcm", "rate": 24000}
        # 16 kHz resampled to 24 kHz on the way (the resampler holds back a few ms).
        assert abs(appended / 2 - audio.size * 1.5) < 24000 * 0.03
    assert session["audio"]["input"]["transcription"]["language"] == "en"
    assert session["audio"]["input"]["transcription"]["prompt"] == "can i speak to someone"


async def test_live_stream_without_server_vad_commits_on_finalize(fake: tuple[FakeOpenAI, str]) -> None:
    server, url = fake
    server.realtime.caller_transcripts.append("opening hours")
    stt = make(url, stt_turn_detection="none")
    assert not stt.capabilities.endpointing
    stream = await stt.stream(MULAW_8K)
    push(stream, utterance(8000))
    await stream.finalize()
    events = await read_until_end_of_turn(stream)
    # A second finalize with nothing pushed answers at once with an empty turn.
    await stream.finalize()
    empty = await read_until_end_of_turn(stream)
    await stream.aclose()
    await stt.aclose()
    assert ProviderSpeechStarted() not in events
    assert events[-2:] == [FinalTranscript("opening hours"), EndOfTurn()]
    assert empty == [FinalTranscript(""), EndOfTurn()]
    assert len(server.events_of("input_audio_buffer.commit")) == 1
    assert server.events_of("session.update")[0]["session"]["audio"]["input"]["turn_detection"] is None


async def test_live_stream_rejected_key(
    fake: tuple[FakeOpenAI, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, url = fake
    monkeypatch.setenv("OPENAI_API_KEY", "sk-bad-stt-key-77777")
    stt = make(url)
    with pytest.raises(ProviderError) as info:
        await stt.stream(MULAW_8K)
    await stt.aclose()
    assert not info.value.retryable
    assert "sk-bad-stt-key-77777" not in str(info.value)


def test_transcription_events_mapping() -> None:
    events = TranscriptionEvents("openai")
    assert events({"type": "input_audio_buffer.speech_started", "item_id": "a"}) == [ProviderSpeechStarted()]
    assert events.in_speech
    assert events({"type": "conversation.item.input_audio_transcription.failed", "item_id": "a"}) == [
        FinalTranscript(""),
        EndOfTurn(),
    ]
    assert events({"type": "rate_limits.updated"}) == []
    with pytest.raises(ProviderError):
        events({"type": "error", "error": {"type": "invalid_request_error", "code": "bad", "message": "m"}})


def test_language_code() -> None:
    assert language_code("en-US") == "en"
    assert language_code("pt_BR") == "pt"
    assert language_code("de") == "de"
