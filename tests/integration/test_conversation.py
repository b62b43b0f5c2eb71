"""Conversation features through a real Asterisk: DTMF, tools, reprompt, max duration."""

from __future__ import annotations

import urllib.parse
from pathlib import Path

import pytest

from tests.integration.lab import AgentFactory, AgentProcess, Lab

LEADS = """
[profiles.leads]
greeting = "Hello, this is the callback line. How can I help?"
fallback_reply = "Sorry, I can only arrange a call back."
tools = ["hangup", "transfer", "capture", "set_variable"]
capture_fields = ["callback_number"]
filler_after_ms = 0

[profiles.leads.destinations.reception]
extension = "200"

[[profiles.leads.intents]]
name = "callback"
examples = ["i would like a call back", "please call me back"]
reply = "Sure. What number should we call you on?"
capture = "callback_number"

[[profiles.leads.intents]]
name = "number"
examples = ["five five five one two three four"]
reply = "Thank you. Anything else?"
result = "callback"

[[profiles.leads.intents]]
name = "reception"
examples = ["reception please"]
reply = "Connecting you now."
action = "transfer"
destination = "reception"
dtmf = "0"

[[profiles.leads.intents]]
name = "goodbye"
examples = ["goodbye"]
reply = "Goodbye."
action = "hangup"
"""

NUMBER = "five five five one two three four"


def start_with_config(agent_factory: AgentFactory, toml: str, name: str) -> AgentProcess:
    path = Path(agent_factory.workdir) / f"{name}.toml"
    path.write_text(toml, encoding="utf-8")
    return agent_factory.start({"AGENT_CONFIG": str(path)})


def agent_lines(record: dict[str, object]) -> list[str]:
    turns = record["turns"]
    assert isinstance(turns, list)
    return [t["text"] for t in turns if t["role"] == "agent"]


def test_capture_and_result_reach_the_dialplan_after_hangup(lab: Lab, agent_factory: AgentFactory) -> None:
    agent = start_with_config(agent_factory, LEADS, "leads")
    handle = lab.place_call(["i would like a call back", NUMBER, "goodbye"], context="lab-leads")
    event = lab.wait_dialplan_event(handle.number, "hangup", timeout=120)
    assert event.fields["AI_AGENT_STATUS"] == "COMPLETED"
    assert event.fields["AI_AGENT_RESULT"] == "callback"
    assert urllib.parse.unquote(event.fields["AI_FIELD_CALLBACK_NUMBER"]) == NUMBER
    record = agent.record_for(handle.number)
    assert record["fields"] == {"callback_number": NUMBER}
    assert agent_lines(record)[-1] == "Goodbye."
    assert record["end_reason"] == "hangup_by_agent"


def test_dtmf_transfers_with_fields_set(lab: Lab, agent_factory: AgentFactory) -> None:
    agent = start_with_config(agent_factory, LEADS, "leads")
    handle = lab.place_call(["i would like a call back", NUMBER, "dtmf:0"], context="lab-leads")
    event = lab.wait_dialplan_event(handle.number, "reception", timeout=120)
    assert event.fields["AI_AGENT_STATUS"] == "TRANSFERRED"
    assert event.fields["AI_AGENT_RESULT"] == "callback"
    assert urllib.parse.unquote(event.fields["AI_FIELD_CALLBACK_NUMBER"]) == NUMBER
    record = agent.record_for(handle.number, timeout=20)
    users = [t["text"] for t in record["turns"] if t["role"] == "user"]
    assert users[-1] == "caller pressed 0"
    assert agent_lines(record)[-1] == "Connecting you now."
    assert record["end_reason"] == "transferred"


def test_idle_caller_is_reprompted_then_let_go(lab: Lab, agent_factory: AgentFactory) -> None:
    agent = start_with_config(
        agent_factory, "[profiles.frontdesk]\nidle_timeout_s = 2\nmax_reprompts = 1\n", "idle"
    )
    handle = lab.place_call([], tail=30)
    event = lab.wait_dialplan_event(handle.number, "hangup", timeout=60)
    assert event.fields["AI_AGENT_STATUS"] == "COMPLETED"
    record = agent.record_for(handle.number)
    assert agent_lines(record) == [
        "Thank you for calling Riverside Dental. How can I help you?",
        "Are you still there?",
        "I will end the call now. Goodbye.",
    ]
    assert record["end_reason"] == "hangup_by_agent"


def test_maximum_duration_ends_the_call(lab: Lab, agent_factory: AgentFactory) -> None:
    agent = start_with_config(agent_factory, "[profiles.frontdesk]\nmax_duration_s = 6\n", "maxdur")
    handle = lab.place_call([], tail=40)
    event = lab.wait_dialplan_event(handle.number, "hangup", timeout=60)
    assert event.fields["AI_AGENT_STATUS"] == "COMPLETED"
    record = agent.record_for(handle.number)
    assert agent_lines(record)[-1] == "We have reached the time limit for this call. Goodbye."
    assert record["end_reason"] == "hangup_by_agent"


TIMED = """
[profiles.{name}]
greeting = "Hello."
stt = ["tests.fakes.timed:TimedSTT"]
llm = ["tests.fakes.timed:TimedLLM"]
tts = ["tests.fakes.timed:TimedTTS"]
filler_after_ms = {filler_after_ms}
[profiles.{name}.options."tests.fakes.timed:TimedSTT"]
text = "what time do you open"
[profiles.{name}.options."tests.fakes.timed:TimedLLM"]
first_token_ms = {first_token_ms}
reply = "{reply}"
"""
LONG_REPLY = (
    "Good question. We are open Monday to Friday, from nine in the morning to five in the evening. "
    "We are closed on weekends and on public holidays, and the phones open at eight."
)


def test_streaming_reply_starts_early_and_adds_little(lab: Lab, agent_factory: AgentFactory) -> None:
    toml = TIMED.format(name="timed", filler_after_ms=0, first_token_ms=300, reply=LONG_REPLY)
    agent = start_with_config(agent_factory, toml, "timed")
    handle = lab.place_call(["what time do you open"], extension="timed", context="lab-profile", tail=2)
    lab.wait_call_ended(handle, timeout=90)
    record = agent.record_for(handle.number)
    reply = [t for t in record["turns"] if t["role"] == "agent"][1]
    timings = reply["timings"]
    print("timings of the reply:", timings)
    # Simulated: STT final 150 ms (before the turn ends), LLM first token 300 ms, TTS first audio 150 ms.
    assert timings["stt_ms"] >= 150
    assert timings["llm_first_token_ms"] >= 300
    # Our own overhead on top of the simulated LLM and TTS latencies (and the 20 ms the
    # first sentence's second word takes to stream) stays small (generous CI bound).
    assert timings["end_to_audio_ms"] < 300 + 20 + 150 + 100
    # The first words played while the model was still writing the rest.
    assert timings["llm_start_to_audio_ms"] < timings["llm_total_ms"]


def test_slow_reply_gets_a_filler_first(lab: Lab, agent_factory: AgentFactory) -> None:
    toml = TIMED.format(name="slow", filler_after_ms=800, first_token_ms=2500, reply=LONG_REPLY)
    agent = start_with_config(agent_factory, toml, "slow")
    handle = lab.place_call(["what time do you open"], extension="slow", context="lab-profile", tail=2)
    lab.wait_call_ended(handle, timeout=90)
    record = agent.record_for(handle.number)
    lines = agent_lines(record)
    assert lines[:2] == ["Hello.", "One moment."]
    assert lines[2].startswith("Good question. We are open Monday to Friday")


# Callers who don't say the script's words (issue 16), on the shipped frontdesk profile.
GREETING = "Thank you for calling Riverside Dental. How can I help you?"
ADDRESS = "We are at 12 Harbour Street, next to the library."
GOODBYE = "Thank you for calling. Goodbye."
FALLBACK = "Sorry, I can help with opening hours, our address, or booking an appointment."


def test_a_greeting_word_before_a_known_question_gets_its_answer(lab: Lab, agent: AgentProcess) -> None:
    handle = lab.place_call(["hi, where are you located"], tail=2)
    lab.wait_call_ended(handle, timeout=90)
    record = agent.record_for(handle.number)
    assert agent_lines(record) == [GREETING, ADDRESS]
    # The offline recogniser hands the dialog the key phrase, not the greeting.
    users = [t["text"] for t in record["turns"] if t["role"] == "user"]
    assert users == ["where are you located"]


# "that's all, thank you, goodbye", "that's all, thanks, goodbye" and "thanks, that's all,
# goodbye" are misses through Asterisk on these machines, every call (heard as "hello oh bye" or
# similar, rejected: the fallback), though the paraphrase bench's rendering of them is understood:
# the offline recogniser's verdict flips with µ-law rounding and a 5 ms shift of the audio. This
# test is about the hang-up after a goodbye said among thanks; the bench keeps the accuracy.
@pytest.mark.parametrize("said", ["okay, thank you, goodbye", "no that's all, thank you"])
def test_a_goodbye_wrapped_in_thanks_ends_the_call(lab: Lab, agent: AgentProcess, said: str) -> None:
    handle = lab.place_call([said], tail=30)
    event = lab.wait_dialplan_event(handle.number, "hangup", timeout=90)
    assert event.fields["AI_AGENT_STATUS"] == "COMPLETED"
    record = agent.record_for(handle.number)
    assert agent_lines(record) == [GREETING, GOODBYE]
    assert record["end_reason"] == "hangup_by_agent"
    # The agent hung up: the caller script still had 30 s to wait.
    assert not any(e.kind == "caller-hangup" for e in lab.dialplan_events(handle.number))


def test_an_out_of_scope_near_miss_gets_the_fallback_reply(lab: Lab, agent: AgentProcess) -> None:
    # Shares "what time" with the hours intent's "what time do you open".
    handle = lab.place_call(["what time is it"], tail=2)
    lab.wait_call_ended(handle, timeout=90)
    record = agent.record_for(handle.number)
    assert agent_lines(record) == [GREETING, FALLBACK]
