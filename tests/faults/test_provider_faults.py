"""Provider faults mid-call through the lab's real Asterisk (issue 12, item 5).

Each call gets its first answer normally; the fault comes after, while the
caller is still on the line. The caller must then hear a failover reply (the
next provider in the profile's chain) and the call goes on to its goodbye, or,
with nowhere to fail over to, hear the apology and go back to the dialplan
``FAILED``. The dead air the caller heard (end of its question to the first
sound of the reply, at the caller) is printed for each turn, not asserted.
"""

from __future__ import annotations

from tests.fakes.deepgram_server import FakeDeepgram
from tests.fakes.openai_server import ChatReply, FakeOpenAI, Fault, SpeechReply
from tests.fakes.threaded import serve_in_thread
from tests.integration.lab import AgentFactory, AgentProcess, CallHandle, Lab
from tests.integration.test_cloud_profiles import KEY, agent_lines, assert_no_key_anywhere, start

PHRASES = ["what time do you open", "where are you located", "goodbye"]
HOURS = "We are open from nine to five."
ADDRESS = "We are at 12 Harbour Street."
APOLOGY = "Sorry, I cannot help right now. Please hold."


def _profile(name: str, *, stt: str, llm: str, tts: str, options: str = "") -> str:
    """The three intents the offline recogniser and the scripted dialog know, and the chains given."""
    return f"""
[profiles.{name}]
greeting = "Hello, how can I help?"
stt = {stt}
llm = {llm}
tts = {tts}
filler_after_ms = 0
[[profiles.{name}.intents]]
name = "hours"
examples = ["what time do you open"]
reply = "{HOURS}"
[[profiles.{name}.intents]]
name = "address"
examples = ["where are you located"]
reply = "{ADDRESS}"
[[profiles.{name}.intents]]
name = "bye"
examples = ["goodbye"]
reply = "Goodbye."
action = "hangup"
{options}
"""


def _dead_air(lab: Lab, handle: CallHandle) -> list[float]:
    """Per question: seconds from the caller's last word to the first sound it heard back.

    As the lab's ears tell it: they read the caller's recording, which Asterisk writes in
    bursts of about 0.34 s, so each figure may be late by that much.
    """
    events = lab.dialplan_events(handle.number)
    said = {e.fields.get("n"): e.at for e in events if e.kind == "caller-say-end"}
    heard = {e.fields.get("n"): e.at for e in events if e.kind == "caller-heard-start"}
    return [round(heard[n] - said[n], 2) for n in sorted(said) if n in heard]


def _provider_errors(agent: AgentProcess, stage: str, provider: str) -> float:
    _, text = agent.http_get("/metrics")
    for line in text.splitlines():
        if (
            line.startswith("ari_agent_provider_errors_total{")
            and f'stage="{stage}"' in line
            and f'provider="{provider}"' in line
        ):
            return float(line.split()[-1])
    return 0.0


def _log(agent: AgentProcess) -> str:
    return agent.log_path.read_text(encoding="utf-8", errors="replace")


def _completed(lab: Lab, agent: AgentProcess, handle: CallHandle) -> dict[str, object]:
    event = lab.wait_dialplan_event(handle.number, "hangup", timeout=150)
    record = agent.record_for(handle.number)
    assert event.fields["AI_AGENT_STATUS"] == "COMPLETED", (record, agent.log_tail())
    assert record["end_reason"] == "hangup_by_agent"
    # Never handed back FAILED: whatever the dialplan saw of the call said COMPLETED.
    statuses = {
        e.fields.get("AI_AGENT_STATUS")
        for e in lab.dialplan_events(handle.number)
        if e.kind.startswith("stasis-return")
    }
    assert statuses <= {"COMPLETED"}, statuses
    print(f"dead air at the caller per question (s): {_dead_air(lab, handle)}")
    return record


def test_stt_socket_reset_mid_call_fails_over_and_the_call_goes_on(
    lab: Lab, agent_factory: AgentFactory
) -> None:
    # The agent streams the caller's speech (slin16, 32 000 bytes a second) to the recogniser, about
    # 180 000 bytes for the three phrases: the socket drops after the first question was heard.
    deepgram = FakeDeepgram(
        ["what time do you open", "where are you located", "goodbye"], reset_after_bytes=100_000
    )
    with serve_in_thread(deepgram.app) as url:
        options = f'[profiles.sttreset.options.deepgram]\nurl = "{url.replace("http://", "ws://")}"'
        agent = start(
            agent_factory,
            _profile(
                "sttreset", stt='["deepgram", "local"]', llm='["scripted"]', tts='["local"]', options=options
            ),
            DEEPGRAM_API_KEY="dg-test-key-SECRETVALUE",
        )
        handle = lab.place_call(PHRASES, extension="sttreset", context="lab-profile")
        record = _completed(lab, agent, handle)
    first = deepgram.listens[0]
    assert first.reset, "the fake never dropped the socket"
    assert "Finalize" in first.controls, "the socket dropped before a first turn: not mid-call"
    assert agent_lines(record) == ["Hello, how can I help?", HOURS, ADDRESS, "Goodbye."]
    assert "stream failed" in _log(agent) and "switching provider" in _log(agent)
    assert "dg-test-key-SECRETVALUE" not in agent.log_path.read_text(encoding="utf-8")


def test_llm_429_then_503_mid_call_fails_over_to_the_next_llm(lab: Lab, agent_factory: AgentFactory) -> None:
    fake = FakeOpenAI(api_key=KEY)
    fake.chat_replies.extend(
        [
            ChatReply(text=HOURS),
            # The second question: both tries fail (retryable), so the chain's next LLM answers.
            ChatReply(fault=Fault(status=429)),
            ChatReply(fault=Fault(status=503)),
            ChatReply(text="Goodbye.", tool_calls=[("hangup", {})]),
        ]
    )
    with serve_in_thread(fake.app) as url:
        options = f'[profiles.llmfail.options.openai]\nbase_url = "{url}/v1"'
        agent = start(
            agent_factory,
            _profile(
                "llmfail", stt='["local"]', llm='["openai", "scripted"]', tts='["local"]', options=options
            ),
        )
        handle = lab.place_call(PHRASES, extension="llmfail", context="lab-profile")
        record = _completed(lab, agent, handle)
    assert agent_lines(record) == ["Hello, how can I help?", HOURS, ADDRESS, "Goodbye."]
    assert len([r for r in fake.requests if r.path.endswith("/chat/completions")]) == 4
    # Failed over, not failed: the session never saw an error (the metric counts those).
    assert "failed over" in _log(agent)
    assert _provider_errors(agent, "llm", "openai") == 0
    assert_no_key_anywhere(agent)


def test_llm_401_mid_call_with_no_fallback_apologises_and_hands_back_failed(
    lab: Lab, agent_factory: AgentFactory
) -> None:
    fake = FakeOpenAI(api_key=KEY)
    fake.chat_replies.extend([ChatReply(text=HOURS), ChatReply(fault=Fault(status=401))])
    with serve_in_thread(fake.app) as url:
        options = f'[profiles.llm401mid.options.openai]\nbase_url = "{url}/v1"'
        agent = start(
            agent_factory,
            _profile("llm401mid", stt='["local"]', llm='["openai"]', tts='["local"]', options=options),
        )
        handle = lab.place_call(PHRASES[:2], extension="llm401mid", context="lab-profile", tail=8)
        event = lab.wait_dialplan_event(handle.number, "stasis-return", timeout=120)
    assert event.fields["AI_AGENT_STATUS"] == "FAILED"
    record = agent.record_for(handle.number)
    assert record["end_reason"] == "failed"
    assert agent_lines(record) == ["Hello, how can I help?", HOURS, APOLOGY]
    # The caller heard the apology before the dialplan took over: a reply to question 2.
    heard = [e for e in lab.dialplan_events(handle.number) if e.kind == "caller-heard-start"]
    assert any(e.fields.get("n") == "2" for e in heard), heard
    # A 401 is not retried, and the session counted the failure it apologised for.
    assert len([r for r in fake.requests if r.path.endswith("/chat/completions")]) == 2
    assert _provider_errors(agent, "llm", "openai") == 1, "\n".join(
        ln for ln in agent.http_get("/metrics")[1].splitlines() if "provider_errors" in ln
    )
    print(f"dead air at the caller per question (s): {_dead_air(lab, handle)}")
    assert_no_key_anywhere(agent)


def test_tts_returning_nothing_mid_call_fails_over_to_the_next_tts(
    lab: Lab, agent_factory: AgentFactory
) -> None:
    fake = FakeOpenAI(api_key=KEY)
    # The greeting speaks; the first reply's tries both come back without audio.
    fake.speech_replies.extend([SpeechReply(), SpeechReply(empty=True), SpeechReply(empty=True)])
    with serve_in_thread(fake.app) as url:
        options = f'[profiles.ttsempty.options.openai]\nbase_url = "{url}/v1"'
        agent = start(
            agent_factory,
            _profile(
                "ttsempty", stt='["local"]', llm='["scripted"]', tts='["openai", "local"]', options=options
            ),
        )
        handle = lab.place_call(PHRASES, extension="ttsempty", context="lab-profile")
        record = _completed(lab, agent, handle)
    assert agent_lines(record) == ["Hello, how can I help?", HOURS, ADDRESS, "Goodbye."]
    # Every question got a reply the caller heard: the failover voice for the first one.
    heard = {e.fields.get("n") for e in lab.dialplan_events(handle.number) if e.kind == "caller-heard-start"}
    assert {"1", "2", "3"} <= heard, heard
    assert "failed over" in _log(agent)
    assert _provider_errors(agent, "tts", "openai") == 0
    assert_no_key_anywhere(agent)
