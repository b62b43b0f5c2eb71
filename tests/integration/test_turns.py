"""Turn-taking through the real Asterisk: the turn model, a pause mid-number, the early start."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.integration.lab import AgentFactory, Lab, metric_sum
from tests.integration.rtp_caller import RtpCaller
from tests.integration.test_calls import ADDRESS, HOURS
from tests.integration.test_conversation import start_with_config

TIMED_STT = "tests.fakes.timed:TimedSTT"


def _user_turns(record: dict[str, object]) -> list[dict[str, object]]:
    turns = record["turns"]
    assert isinstance(turns, list)
    return [t for t in turns if t["role"] == "user"]


async def test_turn_model_ends_a_complete_question_sooner_than_silence(
    lab: Lab, agent_factory: AgentFactory, tmp_path: Path
) -> None:
    toml = """
[profiles.frontdesk]
end_of_turn = "model"
end_of_turn_ms = 800
"""
    agent = start_with_config(agent_factory, toml, "model")
    async with RtpCaller.connect(lab) as call:
        try:
            await call.wait_greeting()
            await call.ask("what time do you open")
            await call.hangup()
        except BaseException:
            call.dump_wav(tmp_path / "call.wav")
            raise
    record = agent.record_for(call.number, timeout=20)
    [question] = _user_turns(record)
    assert question["text"] == "what time do you open"
    assert question["ended_by"] == "model", question
    assert isinstance(question["silence_frames"], int) and question["silence_frames"] < 800 // 20
    assert HOURS in [t["text"] for t in record["turns"] if t["role"] == "agent"]  # type: ignore[index]
    assert metric_sum(agent, 'ari_agent_turn_ends_total{profile="frontdesk",reason="model"}') == 1


async def test_a_caller_who_pauses_mid_number_is_not_cut_off(
    lab: Lab, agent_factory: AgentFactory, tmp_path: Path
) -> None:
    number = "my phone number is five five five two one three four five six"
    toml = f"""
[profiles.frontdesk]
end_of_turn = "model"
end_of_turn_ms = 600
turn_max_wait_ms = 2500
stt = ["{TIMED_STT}"]
[profiles.frontdesk.options."{TIMED_STT}"]
text = "{number}"
segments = false  # one final for the whole turn: the fake has one text for it
"""
    agent = start_with_config(agent_factory, toml, "midnumber")
    async with RtpCaller.connect(lab) as call:
        try:
            await call.wait_greeting()
            first = await call.say("my phone number is five five five, two one")
            await asyncio.sleep(1.0)  # a second to find the rest, longer than end_of_turn_ms
            second = await call.say("three four five six")
            await call.wait_agent_speech(timeout=20, after=second.last_sent)
            await call.wait_agent_silence(min_silence_ms=700, timeout=30)
            spoke_in_the_pause = call.loud(after=first.last_sent, before=second.first_sent)
            await call.hangup()
        except BaseException:
            call.dump_wav(tmp_path / "call.wav")
            raise
    assert not spoke_in_the_pause  # the agent did not answer half a number
    record = agent.record_for(call.number, timeout=20)
    turns = _user_turns(record)
    assert [t["text"] for t in turns] == [number]  # one turn, the whole number
    assert turns[0]["ended_by"] in ("model", "max_wait")


async def test_early_start_answers_and_a_changed_final_cancels_it(
    lab: Lab, agent_factory: AgentFactory, tmp_path: Path
) -> None:
    # The recogniser's interim says "what time do you open" both times; the final of the
    # second question says something else: that early reply must never be spoken.
    toml = f"""
[profiles.frontdesk]
early_start = true
stt = ["{TIMED_STT}"]
[profiles.frontdesk.options."{TIMED_STT}"]
texts = ["what time do you open", "where are you located"]
interim = "what time do you open"
interim_after_ms = 300
"""
    agent = start_with_config(agent_factory, toml, "early")
    async with RtpCaller.connect(lab) as call:
        try:
            await call.wait_greeting()
            await call.ask("what time do you open")
            await call.ask("where are you")
            await call.hangup()
        except BaseException:
            call.dump_wav(tmp_path / "call.wav")
            raise
    record = agent.record_for(call.number, timeout=20)
    assert [t["text"] for t in _user_turns(record)] == ["what time do you open", "where are you located"]
    replies = [t["text"] for t in record["turns"] if t["role"] == "agent"]  # type: ignore[index]
    assert replies[1:] == [HOURS, ADDRESS]
    assert metric_sum(agent, 'ari_agent_early_starts_total{outcome="used",profile="frontdesk"}') == 1
    assert metric_sum(agent, 'ari_agent_early_starts_total{outcome="wasted",profile="frontdesk"}') == 1
