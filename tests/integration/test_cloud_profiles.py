"""Cloud profiles through a real Asterisk, each vendor's SDK talking to a wire-level fake."""

from __future__ import annotations

from pathlib import Path

from tests.fakes.openai_server import ChatReply, FakeOpenAI, Fault, RealtimeReply
from tests.fakes.threaded import serve_in_thread
from tests.integration.lab import AgentFactory, AgentProcess, Lab

KEY = "sk-test-0123456789abcdefSECRETVALUE"


def start(agent_factory: AgentFactory, toml: str, **env: str) -> AgentProcess:
    path = Path(agent_factory.workdir) / "cloud.toml"
    path.write_text(toml, encoding="utf-8")
    return agent_factory.start({"AGENT_CONFIG": str(path), "OPENAI_API_KEY": KEY, **env})


def assert_no_key_anywhere(agent: AgentProcess) -> None:
    assert KEY not in agent.log_path.read_text(encoding="utf-8", errors="replace")
    assert KEY not in str(agent.records())
    assert KEY not in agent.http_get("/metrics")[1]


def agent_lines(record: dict[str, object]) -> list[str]:
    turns = record["turns"]
    assert isinstance(turns, list)
    return [t["text"] for t in turns if t["role"] == "agent"]


def test_openai_realtime_call_over_ulaw(lab: Lab, agent_factory: AgentFactory) -> None:
    fake = FakeOpenAI(api_key=KEY)
    fake.realtime.replies.extend(
        [
            RealtimeReply(text="Thank you for calling. How can I help you?"),
            RealtimeReply(text="We are open from nine to five."),
            RealtimeReply(text="Goodbye.", tool_calls=[("hangup", {})]),
        ]
    )
    with serve_in_thread(fake.app) as url:
        agent = start(
            agent_factory,
            f"""
[profiles.rt]
greeting = "Thank you for calling. How can I help you?"
realtime = ["openai"]
[profiles.rt.options.openai]
base_url = "{url}/v1"
""",
            AGENT_MEDIA__FORMAT="ulaw",
        )
        handle = lab.place_call(["what time do you open", "goodbye"], extension="rt", context="lab-profile")
        event = lab.wait_dialplan_event(handle.number, "hangup", timeout=120)
    assert event.fields["AI_AGENT_STATUS"] == "COMPLETED"
    record = agent.record_for(handle.number)
    assert record["end_reason"] == "hangup_by_agent"
    assert agent_lines(record) == [
        "Thank you for calling. How can I help you?",
        "We are open from nine to five.",
        "Goodbye.",
    ]
    # The call's own µ-law went both ways untouched.
    update = fake.events_of("session.update")[0]["session"]
    assert update["audio"]["input"]["format"]["type"] == "audio/pcmu"
    assert update["audio"]["output"]["format"]["type"] == "audio/pcmu"
    appended = [e["bytes"] for e in fake.events_of("input_audio_buffer.append")]
    assert sum(appended) > 8000  # more than a second of caller audio reached the provider
    assert_no_key_anywhere(agent)


def offline_ears_openai_llm(name: str, url: str) -> str:
    """A profile that hears offline (one phrase) and thinks with the OpenAI fake at ``url``."""
    return f"""
[profiles.{name}]
greeting = "Hello, how can I help?"
stt = ["local"]
llm = ["openai"]
tts = ["local"]
filler_after_ms = 0
[[profiles.{name}.intents]]
name = "hours"
examples = ["what time do you open"]
reply = "unused"
[profiles.{name}.options.openai]
base_url = "{url}/v1"
"""


def test_llm_401_apologises_and_hands_back_failed(lab: Lab, agent_factory: AgentFactory) -> None:
    fake = FakeOpenAI(api_key="sk-the-right-key-is-another-one")
    with serve_in_thread(fake.app) as url:
        agent = start(agent_factory, offline_ears_openai_llm("llm401", url))
        handle = lab.place_call(["what time do you open"], extension="llm401", context="lab-profile", tail=8)
        event = lab.wait_dialplan_event(handle.number, "stasis-return", timeout=90)
    assert event.fields["AI_AGENT_STATUS"] == "FAILED"
    record = agent.record_for(handle.number)
    assert record["end_reason"] == "failed"
    assert agent_lines(record)[-1] == "Sorry, I cannot help right now. Please hold."
    # One request: a 401 is not worth retrying.
    assert len([r for r in fake.requests if r.path.endswith("/chat/completions")]) == 1
    assert_no_key_anywhere(agent)


def test_llm_429_then_200_is_retried(lab: Lab, agent_factory: AgentFactory) -> None:
    fake = FakeOpenAI(api_key=KEY)
    fake.chat_replies.extend(
        [ChatReply(fault=Fault(status=429)), ChatReply(text="We are open from nine to five.")]
    )
    with serve_in_thread(fake.app) as url:
        agent = start(agent_factory, offline_ears_openai_llm("llm429", url))
        handle = lab.place_call(["what time do you open"], extension="llm429", context="lab-profile", tail=2)
        lab.wait_call_ended(handle, timeout=90)
    record = agent.record_for(handle.number)
    assert agent_lines(record) == ["Hello, how can I help?", "We are open from nine to five."]
    assert len([r for r in fake.requests if r.path.endswith("/chat/completions")]) == 2
    assert_no_key_anywhere(agent)


def test_deepgram_stt_openai_llm_deepgram_tts_call(lab: Lab, agent_factory: AgentFactory) -> None:
    from tests.fakes.deepgram_server import FakeDeepgram

    deepgram = FakeDeepgram(["what time do you open", "goodbye"])
    openai = FakeOpenAI(api_key=KEY)
    openai.chat_replies.extend(
        [
            ChatReply(text="We are open from nine to five. Anything else?"),
            ChatReply(text="Goodbye.", tool_calls=[("hangup", {})]),
        ]
    )
    with serve_in_thread(deepgram.app) as dg_url, serve_in_thread(openai.app) as oa_url:
        agent = start(
            agent_factory,
            f"""
[profiles.cloud]
greeting = "Hello, how can I help?"
instructions = "You answer for Riverside Dental. The caller is {{caller_number}}."
stt = ["deepgram"]
llm = ["openai"]
tts = ["deepgram"]
filler_after_ms = 0
[profiles.cloud.options.deepgram]
url = "{dg_url.replace("http://", "ws://")}"
[profiles.cloud.options.openai]
base_url = "{oa_url}/v1"
""",
            DEEPGRAM_API_KEY="dg-test-key-SECRETVALUE",
        )
        handle = lab.place_call(
            ["what time do you open", "goodbye"], extension="cloud", context="lab-profile"
        )
        event = lab.wait_dialplan_event(handle.number, "hangup", timeout=120)
    assert event.fields["AI_AGENT_STATUS"] == "COMPLETED"
    record = agent.record_for(handle.number)
    assert [t["text"] for t in record["turns"] if t["role"] == "user"] == ["what time do you open", "goodbye"]
    assert agent_lines(record) == [
        "Hello, how can I help?",
        "We are open from nine to five. Anything else?",
        "Goodbye.",
    ]
    # The call's slin16 went to Deepgram as is: linear16 at 16 kHz, nothing resampled.
    listen = deepgram.listens[0]
    assert listen.query["encoding"] == "linear16" and listen.query["sample_rate"] == "16000"
    assert deepgram.speaks, "Deepgram TTS was never asked to speak"
    # The system prompt got the caller's number templated in.
    chat = next(r for r in openai.requests if r.path.endswith("/chat/completions"))
    assert chat.body["messages"][0]["content"].endswith(f"The caller is {handle.number}.")
    log = agent.log_path.read_text(encoding="utf-8")
    assert "dg-test-key-SECRETVALUE" not in log
    assert_no_key_anywhere(agent)


def test_azure_behind_its_seam_call(lab: Lab, agent_factory: AgentFactory) -> None:
    stt = "tests.fakes.azure_speech:LabAzureSTT"
    tts = "tests.fakes.azure_speech:LabAzureTTS"
    agent = start(
        agent_factory,
        f"""
[profiles.az]
greeting = "Hello, how can I help?"
stt = ["{stt}"]
llm = ["scripted"]
tts = ["{tts}"]
filler_after_ms = 0
fallback_reply = "Sorry?"
[profiles.az.options."{stt}"]
phrases = ["what time do you open", "goodbye"]
[[profiles.az.intents]]
name = "hours"
examples = ["what time do you open"]
reply = "We are open from nine to five."
[[profiles.az.intents]]
name = "bye"
examples = ["goodbye"]
reply = "Goodbye."
action = "hangup"
""",
    )
    handle = lab.place_call(["what time do you open", "goodbye"], extension="az", context="lab-profile")
    event = lab.wait_dialplan_event(handle.number, "hangup", timeout=120)
    record = agent.record_for(handle.number)
    assert event.fields["AI_AGENT_STATUS"] == "COMPLETED", (record, agent.log_tail())
    assert [t["text"] for t in record["turns"] if t["role"] == "user"] == ["what time do you open", "goodbye"]
    assert agent_lines(record) == ["Hello, how can I help?", "We are open from nine to five.", "Goodbye."]
