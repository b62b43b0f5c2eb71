"""OpenAILLM through the real openai SDK against the wire-level fake on loopback."""

from __future__ import annotations

import pytest

from providers.base import Message, ProviderContext, ProviderError, TextDelta, ToolCall, ToolSpec
from providers.openai.llm import OpenAILLM
from tests.fakes.openai_server import ChatReply, FakeOpenAI, Fault, fake_fixture

KEY = "sk-test-llm-0123456789abcdef"


fake = fake_fixture(KEY)


def make(url: str, **options: object) -> OpenAILLM:
    return OpenAILLM.create(ProviderContext("test", options={"base_url": url, **options}))


async def collect(llm: OpenAILLM, tools: tuple[ToolSpec, ...] = ()) -> list[TextDelta | ToolCall]:
    history = [Message("system", "Be brief."), Message("user", "When do you open?")]
    try:
        return [event async for event in llm.chat(history, tools)]
    finally:
        await llm.aclose()


async def test_streams_text_in_pieces(fake: tuple[FakeOpenAI, str]) -> None:
    server, url = fake
    server.chat_replies.append(ChatReply(text="We open at nine."))
    events = await collect(make(url, model="test-model", temperature=0.2, max_tokens=50))
    assert all(isinstance(e, TextDelta) for e in events)
    assert len(events) > 1  # streamed, not one block
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "We open at nine."
    body = server.requests[-1].body
    assert body["model"] == "test-model"
    assert body["stream"] is True
    assert body["temperature"] == 0.2
    assert body["max_tokens"] == 50
    assert body["messages"][1] == {"role": "user", "content": "When do you open?"}


async def test_tool_calls_are_assembled_from_deltas(fake: tuple[FakeOpenAI, str]) -> None:
    server, url = fake
    server.chat_replies.append(
        ChatReply(
            text="Transferring you.",
            tool_calls=[
                ("transfer", {"destination": "sales", "reason": "a long reason to split"}),
                ("hangup", {}),
            ],
        )
    )
    spec = ToolSpec(
        "transfer",
        "Transfer the caller",
        {"type": "object", "properties": {"destination": {"type": "string"}}, "required": ["destination"]},
    )
    events = await collect(make(url), (spec, ToolSpec("hangup", "End the call")))
    calls = [e for e in events if isinstance(e, ToolCall)]
    assert calls == [
        ToolCall("transfer", {"destination": "sales", "reason": "a long reason to split"}, "call_0"),
        ToolCall("hangup", {}, "call_1"),
    ]
    assert isinstance(events[0], TextDelta)
    sent_tools = server.requests[-1].body["tools"]
    assert sent_tools[0] == {
        "type": "function",
        "function": {
            "name": "transfer",
            "description": "Transfer the caller",
            "parameters": dict(spec.parameters),
        },
    }


async def test_bad_tool_arguments_are_not_retryable(fake: tuple[FakeOpenAI, str]) -> None:
    server, url = fake
    server.chat_replies.append(ChatReply(text="", tool_calls=[("transfer", '{"destination": "sa')]))
    with pytest.raises(ProviderError) as info:
        await collect(make(url), (ToolSpec("transfer", "t"),))
    assert not info.value.retryable
    assert "not JSON" in str(info.value)


@pytest.mark.parametrize(("status", "retryable"), [(429, True), (500, True), (401, False), (400, False)])
async def test_http_errors_map_to_retryable(
    fake: tuple[FakeOpenAI, str], status: int, retryable: bool
) -> None:
    server, url = fake
    server.chat_replies.append(ChatReply(fault=Fault(status=status)))
    with pytest.raises(ProviderError) as info:
        await collect(make(url))
    assert info.value.retryable is retryable
    assert info.value.status == status
    assert len(server.requests) == 1  # the SDK did not retry on its own


async def test_429_then_200_succeeds_on_the_next_call(fake: tuple[FakeOpenAI, str]) -> None:
    server, url = fake
    server.chat_replies.extend([ChatReply(fault=Fault(status=429)), ChatReply(text="Fine now.")])
    with pytest.raises(ProviderError):
        await collect(make(url))
    events = await collect(make(url))
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Fine now."


async def test_wrong_key_is_401_not_retryable(
    fake: tuple[FakeOpenAI, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, url = fake
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-key-zzzzzzzz")
    with pytest.raises(ProviderError) as info:
        await collect(make(url))
    assert info.value.status == 401
    assert not info.value.retryable
    assert "sk-wrong-key-zzzzzzzz" not in str(info.value)


async def test_connection_reset_mid_stream_is_retryable(fake: tuple[FakeOpenAI, str]) -> None:
    server, url = fake
    server.chat_replies.append(ChatReply(text="one two three four", fault=Fault(reset_after_chunks=2)))
    with pytest.raises(ProviderError) as info:
        await collect(make(url))
    assert info.value.retryable


async def test_connection_refused_is_retryable() -> None:
    llm = OpenAILLM.create(ProviderContext("test", options={"base_url": "http://127.0.0.1:9/v1"}))
    with pytest.raises(ProviderError) as info:
        await collect(llm)
    assert info.value.retryable


async def test_keyless_server_gets_a_placeholder_bearer(
    fake: tuple[FakeOpenAI, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ollama and friends ignore the key, but the SDK insists on one.
    server, url = fake
    server.api_key = None
    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.setenv("OPENAI_API_KEY_FILE", "/nonexistent")
    events = await collect(make(url, model="llama3.2"))
    assert events
    assert server.requests[-1].headers["authorization-present"] == "True"


def test_check_reports_missing_key_unless_a_keyless_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY_FILE", "/nonexistent")
    assert any("OPENAI_API_KEY" in p for p in OpenAILLM.check(ProviderContext("p")))
    ollama = {"base_url": "http://localhost:11434/v1"}
    assert OpenAILLM.check(ProviderContext("p", options=ollama)) == []
    required = {**ollama, "api_key_required": True}
    assert any("OPENAI_API_KEY" in p for p in OpenAILLM.check(ProviderContext("p", options=required)))
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    assert OpenAILLM.check(ProviderContext("p")) == []


def test_registry_builds_every_openai_stage(monkeypatch: pytest.MonkeyPatch) -> None:
    from providers import registry
    from providers.openai.realtime import OpenAIRealtime
    from providers.openai.stt import OpenAISTT
    from providers.openai.tts import OpenAITTS

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    ctx = ProviderContext("p", voice="verse", options={"model": "m1", "tts_model": "t1"})
    assert isinstance(registry.create_llm("openai", ctx), OpenAILLM)
    tts = registry.create_tts("openai", ctx)
    assert isinstance(tts, OpenAITTS) and tts.voice == "verse" and tts.model == "t1"
    assert isinstance(registry.create_stt("openai", ctx), OpenAISTT)
    assert isinstance(registry.create_realtime("openai", ctx), OpenAIRealtime)
    for stage in ("stt", "llm", "tts", "realtime"):
        assert registry.check(stage, "openai", ctx) == []  # type: ignore[arg-type]
    bad = ProviderContext("p", options={"stt_turn_detection": "semantic_vad"})
    assert any("stt_turn_detection" in p for p in registry.check("stt", "openai", bad))
