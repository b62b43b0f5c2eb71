"""OpenAIRealtime through the real openai SDK (WebSocket) against the wire-level fake."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np
import pytest

from providers.base import (
    MULAW_8K,
    PCM16_16K,
    AgentAudio,
    AgentTranscript,
    CallerSpeechStarted,
    CallerTranscript,
    ProviderContext,
    ProviderError,
    RealtimeConfig,
    RealtimeEvent,
    RealtimeSession,
    ResponseDone,
    ToolCall,
    ToolSpec,
)
from providers.openai.realtime import PCM16_24K, OpenAIRealtime, RealtimeEvents
from tests.fakes.openai_server import FakeOpenAI, RealtimeReply, fake_fixture, tone_pcm

KEY = "sk-test-realtime-0123456789abcdef"
GUARD = 30  # seconds: only a deadlock guard, never a latency assertion


fake = fake_fixture(KEY)


def make(url: str, **options: object) -> OpenAIRealtime:
    ctx = ProviderContext("test", voice="marin", options={"base_url": url, **options})
    return OpenAIRealtime.create(ctx)


class Reader:
    """Collects a session's events in the background."""

    def __init__(self, session: RealtimeSession) -> None:
        self.events: list[RealtimeEvent] = []
        self.error: BaseException | None = None
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._run(session))

    async def _run(self, session: RealtimeSession) -> None:
        try:
            async for event in session.events():
                self.events.append(event)
                self._changed.set()
        except BaseException as exc:
            self.error = exc
            self._changed.set()

    async def until(self, predicate: Callable[[list[RealtimeEvent]], bool]) -> list[RealtimeEvent]:
        async def wait() -> None:
            while not predicate(self.events):
                if self.error is not None:
                    raise self.error
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(wait(), GUARD)
        return self.events

    async def count(self, kind: type, n: int = 1) -> list[RealtimeEvent]:
        return await self.until(lambda events: sum(isinstance(e, kind) for e in events) >= n)

    def stop(self) -> None:
        self._task.cancel()


async def wait_for_server(condition: Callable[[], bool]) -> None:
    async def poll() -> None:
        # The fake records into plain lists (safe from any thread): polling them is simplest.
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), GUARD)


def push_speech(session: RealtimeSession, rate: int, speech_ms: int = 400, silence_ms: int = 500) -> None:
    frame = rate * 20 // 1000
    loud = np.frombuffer(tone_pcm(speech_ms, rate), dtype=np.int16)
    audio = np.concatenate([loud, np.zeros(rate * silence_ms // 1000, dtype=np.int16)])
    if session.config.audio == MULAW_8K:
        from ari_agent.media.codecs import ulaw_encode

        for i in range(0, audio.size, frame):
            session.push(ulaw_encode(audio[i : i + frame]))
    else:
        for i in range(0, audio.size, frame):
            session.push(audio[i : i + frame].astype("<i2").tobytes())


async def test_session_update_carries_the_profile(fake: tuple[FakeOpenAI, str]) -> None:
    server, url = fake
    tools = (ToolSpec("transfer", "Transfer the caller", {"type": "object", "properties": {}}),)
    config = RealtimeConfig(
        instructions="You are the front desk.",
        tools=tools,
        turn_detection="semantic_vad",
        audio=MULAW_8K,
        language="fr-FR",
    )
    session = await make(url, realtime_model="gpt-realtime-test", eagerness="low").connect(config)
    try:
        await wait_for_server(lambda: bool(server.events_of("session.update")))
    finally:
        await session.aclose()
    assert server.realtime_connections == [{"model": "gpt-realtime-test"}]
    update = server.events_of("session.update")[0]["session"]
    assert update["type"] == "realtime"
    assert update["instructions"] == "You are the front desk."
    assert update["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert update["audio"]["output"] == {"format": {"type": "audio/pcmu"}, "voice": "marin"}
    assert update["audio"]["input"]["turn_detection"]["type"] == "semantic_vad"
    assert update["audio"]["input"]["turn_detection"]["eagerness"] == "low"
    assert update["audio"]["input"]["transcription"]["language"] == "fr"
    assert update["tools"] == [
        {
            "type": "function",
            "name": "transfer",
            "description": "Transfer the caller",
            "parameters": dict(tools[0].parameters),
        }
    ]


async def test_greeting_is_spoken_first(fake: tuple[FakeOpenAI, str]) -> None:
    server, url = fake
    server.realtime.replies.append(RealtimeReply(text="Welcome to the clinic.", audio_ms=600))
    session = await make(url).connect(RealtimeConfig(audio=PCM16_24K, greeting="Welcome to the clinic."))
    reader = Reader(session)
    try:
        events = await reader.count(ResponseDone)
    finally:
        reader.stop()
        await session.aclose()
    create = server.events_of("response.create")[0]
    assert "Welcome to the clinic." in create["response"]["instructions"]
    audio = b"".join(e.audio for e in events if isinstance(e, AgentAudio))
    assert len(audio) == 24000 * 2 * 600 // 1000  # PCM16 24 kHz, all of it
    assert [e.text for e in events if isinstance(e, AgentTranscript)] == ["Welcome to the clinic."]
    assert isinstance(events[-1], ResponseDone)


@pytest.mark.parametrize("spec", [MULAW_8K, PCM16_24K])
async def test_audio_in_audio_out(fake: tuple[FakeOpenAI, str], spec: object) -> None:
    server, url = fake
    server.realtime.caller_transcripts.append("what time do you open")
    server.realtime.replies.append(RealtimeReply(text="At nine.", audio_ms=300))
    assert spec in (MULAW_8K, PCM16_24K)
    config = RealtimeConfig(audio=spec)  # type: ignore[arg-type]
    session = await make(url, silence_duration_ms=200).connect(config)
    reader = Reader(session)
    try:
        push_speech(session, config.audio.sample_rate)
        events = await reader.count(ResponseDone)
    finally:
        reader.stop()
        await session.aclose()
    kinds = [type(e) for e in events]
    assert kinds.index(CallerSpeechStarted) < kinds.index(CallerTranscript) < kinds.index(AgentAudio)
    assert CallerTranscript("what time do you open") in events
    audio = b"".join(e.audio for e in events if isinstance(e, AgentAudio))
    bytes_per_second = 8000 if spec == MULAW_8K else 48000
    assert len(audio) == bytes_per_second * 300 // 1000
    appended = sum(e["bytes"] for e in server.events_of("input_audio_buffer.append"))
    assert appended == bytes_per_second * 900 // 1000  # every pushed byte reached the server
    assert server.events_of("session.update")[0]["session"]["audio"]["input"]["turn_detection"] == {
        "type": "server_vad",
        "create_response": True,
        "interrupt_response": True,
        "silence_duration_ms": 200,
    }


async def test_interrupt_cancels_and_truncates_at_the_heard_position(fake: tuple[FakeOpenAI, str]) -> None:
    server, url = fake
    # A long answer trickled out, so the caller can barge in while it plays.
    server.realtime.replies.append(RealtimeReply(text="A long answer.", audio_ms=5000, chunk_delay=0.05))
    session = await make(url).connect(RealtimeConfig(audio=MULAW_8K, greeting="A long answer."))
    reader = Reader(session)
    try:
        events = await reader.count(AgentAudio, 2)
        item_id = next(e.item_id for e in events if isinstance(e, AgentAudio))
        await session.interrupt(item_id, 180)
        events = await reader.count(ResponseDone)
        await wait_for_server(lambda: bool(server.events_of("conversation.item.truncate")))
        after = len(events)
        await asyncio.sleep(0.2)  # any stray delta would show up here
    finally:
        reader.stop()
        await session.aclose()
    assert server.events_of("response.cancel")
    truncate = server.events_of("conversation.item.truncate")[0]
    assert truncate["item_id"] == item_id
    assert truncate["audio_end_ms"] == 180
    assert truncate["content_index"] == 0
    kinds = [e["type"] for e in server.realtime_events if e["type"] != "input_audio_buffer.append"]
    assert kinds.index("response.cancel") < kinds.index("conversation.item.truncate")
    audio_after_done = [e for e in reader.events[after:] if isinstance(e, AgentAudio)]
    assert audio_after_done == []
    heard = sum(len(e.audio) for e in reader.events if isinstance(e, AgentAudio))
    assert heard < 8000 * 5  # the whole 5 s answer never came


async def test_tool_call_round_trip(fake: tuple[FakeOpenAI, str]) -> None:
    server, url = fake
    server.realtime.replies.extend(
        [
            RealtimeReply(text="", tool_calls=[("transfer", {"destination": "sales"})]),
            RealtimeReply(text="Putting you through.", audio_ms=200),
        ]
    )
    tools = (ToolSpec("transfer", "Transfer"),)
    session = await make(url).connect(RealtimeConfig(audio=PCM16_24K, tools=tools, greeting="Hi."))
    reader = Reader(session)
    try:
        events = await reader.count(ToolCall)
        call = next(e for e in events if isinstance(e, ToolCall))
        assert call.name == "transfer"
        assert call.arguments == {"destination": "sales"}
        assert call.call_id
        await session.tool_result(call.call_id, '{"ok": true}')
        events = await reader.count(ResponseDone, 2)
    finally:
        reader.stop()
        await session.aclose()
    item = server.events_of("conversation.item.create")[0]["item"]
    assert item == {"type": "function_call_output", "call_id": call.call_id, "output": '{"ok": true}'}
    assert len(server.events_of("response.create")) == 2  # greeting, then after the tool result
    assert [e.text for e in events if isinstance(e, AgentTranscript)] == ["Putting you through."]


async def test_session_expiry_is_retryable(fake: tuple[FakeOpenAI, str]) -> None:
    server, url = fake
    server.realtime.expire_after_appends = 1
    session = await make(url).connect(RealtimeConfig(audio=PCM16_24K))
    reader = Reader(session)
    try:
        session.push(bytes(960))
        await wait_for_server(lambda: bool(server.events_of("input_audio_buffer.append")))
        session.push(bytes(960))
        with pytest.raises(ProviderError) as info:
            await reader.until(lambda events: False)
    finally:
        reader.stop()
        await session.aclose()
    assert info.value.retryable
    assert "session_expired" in str(info.value) or "closed" in str(info.value)


@pytest.mark.parametrize(("status", "retryable"), [(401, False), (403, False), (429, True), (503, True)])
async def test_rejected_upgrade(fake: tuple[FakeOpenAI, str], status: int, retryable: bool) -> None:
    server, url = fake
    server.realtime.handshake_status = status
    with pytest.raises(ProviderError) as info:
        await make(url).connect(RealtimeConfig(audio=PCM16_24K))
    assert info.value.retryable is retryable
    assert info.value.status == status


async def test_wrong_key_is_not_retryable(
    fake: tuple[FakeOpenAI, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, url = fake
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-the-right-one-999")
    with pytest.raises(ProviderError) as info:
        await make(url).connect(RealtimeConfig(audio=PCM16_24K))
    assert not info.value.retryable
    assert "sk-not-the-right-one-999" not in str(info.value)


async def test_unsupported_audio_is_refused_before_connecting(fake: tuple[FakeOpenAI, str]) -> None:
    server, url = fake
    with pytest.raises(ProviderError) as info:
        await make(url).connect(RealtimeConfig(audio=PCM16_16K))
    assert not info.value.retryable
    assert server.realtime_connections == []


def test_error_events_map_by_code() -> None:
    events = RealtimeEvents("openai")
    assert (
        events(
            {
                "type": "error",
                "error": {"type": "invalid_request_error", "code": "response_cancel_not_active"},
            }
        )
        == []
    )
    with pytest.raises(ProviderError) as info:
        events(
            {
                "type": "error",
                "error": {"type": "invalid_request_error", "code": "invalid_value", "message": "x"},
            }
        )
    assert not info.value.retryable
    with pytest.raises(ProviderError) as info:
        events({"type": "error", "error": {"type": "server_error", "message": "boom"}})
    assert info.value.retryable
    with pytest.raises(ProviderError):
        events({"type": "response.output_audio.delta", "delta": "not base64!", "item_id": "i"})
