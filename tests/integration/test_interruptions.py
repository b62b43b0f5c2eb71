"""False interruptions through the real Asterisk: a cough or a backchannel over the agent.

The agent holds its audio at the caller's first sound and, when no words
come, goes on where it stopped; nothing answers the noise. A real barge-in
(words) still stops it and is answered: test_barge_in.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from tests.integration.lab import AgentProcess, Lab, metric_sum
from tests.integration.rtp_caller import RATE, RtpCaller, cough, speech
from tests.integration.test_calls import GREETING, HOURS


async def _sound_over_the_greeting(
    lab: Lab, agent: AgentProcess, tmp_path: Path, sound: np.ndarray, name: str
) -> dict[str, object]:
    async with RtpCaller.connect(lab) as call:
        try:
            started = await call.wait_agent_speech(timeout=15)
            await asyncio.sleep(1.0)  # into "Riverside Dental"
            said = await call.say(sound, sample_rate=RATE)
            end = await call.wait_agent_silence(min_silence_ms=700, timeout=20)
            # Nothing answers the noise: no fallback reply ("Sorry, I did not catch that").
            await asyncio.sleep(2.5)
            after = call.loud(after=end + 0.05)
        except BaseException:
            call.dump_wav(tmp_path / f"{name}.wav")
            raise
        assert call.loud(after=said.last_sent + 0.1, before=end), "the greeting did not go on after the sound"
        assert end - started > 3.0, "the greeting was cut short"
        assert not after, f"the agent answered the {name} ({len(after)} loud packets after the greeting)"
        gaps = np.diff([p.at for p in call.loud(after=started, before=end)])
        print(f"{name}: longest gap in the greeting {gaps.max() * 1000:.0f} ms")
        await call.hangup()
    record = agent.record_for(call.number, timeout=20)
    turns = record["turns"]
    assert isinstance(turns, list)
    assert [(t["role"], t["text"], t.get("interrupted")) for t in turns] == [("agent", GREETING, None)]
    assert metric_sum(agent, "ari_agent_agent_pauses_total") >= 1  # the sound did reach the engine
    assert metric_sum(agent, "ari_agent_agent_resumes_total") >= 1
    assert metric_sum(agent, "ari_agent_false_interruptions_total") >= 1
    assert metric_sum(agent, "ari_agent_barge_ins_total") == 0
    return record


async def test_a_cough_during_the_greeting_is_followed_by_the_rest_of_it(
    lab: Lab, agent: AgentProcess, tmp_path: Path
) -> None:
    await _sound_over_the_greeting(lab, agent, tmp_path, cough(), "cough")


async def test_a_backchannel_during_the_greeting_is_followed_by_the_rest_of_it(
    lab: Lab, agent: AgentProcess, tmp_path: Path
) -> None:
    await _sound_over_the_greeting(lab, agent, tmp_path, await speech("okay", speed=190), "backchannel")


async def test_a_backchannel_over_a_reply_leaves_the_reply_whole(
    lab: Lab, agent: AgentProcess, tmp_path: Path
) -> None:
    async with RtpCaller.connect(lab) as call:
        try:
            await call.wait_greeting()
            said = await call.say("what time do you open")
            reply_at = await call.wait_agent_speech(timeout=15, after=said.last_sent)
            await asyncio.sleep(1.2)
            await call.say(await speech("mm hmm", speed=190), sample_rate=RATE)
            end = await call.wait_agent_silence(min_silence_ms=700, timeout=20)
            await asyncio.sleep(2.0)
            after = call.loud(after=end + 0.05)
        except BaseException:
            call.dump_wav(tmp_path / "reply.wav")
            raise
        assert end - reply_at > 3.5 and not after
        await call.hangup()
    record = agent.record_for(call.number, timeout=20)
    agent_turns = [t for t in record["turns"] if t["role"] == "agent"]  # type: ignore[union-attr]
    assert agent_turns[-1]["text"] == HOURS and "interrupted" not in agent_turns[-1]
    assert metric_sum(agent, "ari_agent_barge_ins_total") == 0
