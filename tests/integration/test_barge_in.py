"""Barge-in and echo through a real Asterisk, with a caller that timestamps its own RTP.

Bounds on time are generous (Asterisk shares two cores with the tests); the
figures themselves come from ``make bench``.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import numpy as np
import pytest

from tests.integration.lab import AgentFactory, AgentProcess, Lab
from tests.integration.rtp_caller import RtpCaller, speakerphone_echo, speech

HOURS = "We are open Monday to Friday, from nine in the morning to five in the evening."
ADDRESS = "We are at 12 Harbour Street, next to the library."


def metric(agent: AgentProcess, name: str) -> float:
    _, text = agent.http_get("/metrics")
    found = re.search(rf"^{re.escape(name)}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def agent_turns(record: dict[str, object]) -> list[dict[str, object]]:
    turns = record["turns"]
    assert isinstance(turns, list)
    return [t for t in turns if t["role"] == "agent"]


async def ask_and_wait_for_reply(call: RtpCaller, question: str) -> float:
    said = await call.say(question)
    return await call.wait_agent_speech(timeout=15, after=said.last_sent)


async def test_caller_talking_over_a_reply_stops_it(lab: Lab, agent: AgentProcess, tmp_path: Path) -> None:
    async with RtpCaller.connect(lab) as call:
        try:
            await call.wait_agent_speech(timeout=15)
            await call.wait_agent_silence(min_silence_ms=700, timeout=20)
            reply_at = await ask_and_wait_for_reply(call, "what time do you open")
            await asyncio.sleep(1.5)  # well into the five-second reply
            said = await call.say("where are you located")
            await call.wait_agent_speech(timeout=15, after=said.last_sent)
            await call.wait_agent_silence(min_silence_ms=700, timeout=20)
        except BaseException:
            call.dump_wav(tmp_path / "barge-in.wav")
            raise
        # The hours reply's audio stopped soon after the caller started talking.
        cut = call.loud(after=reply_at, before=said.last_sent)
        assert cut, "the reply never played"
        stopped_after = cut[-1].at - said.first_sent
        print(f"agent audio stopped {stopped_after * 1000:.0f} ms after the caller started")
        assert stopped_after < 1.0

    record = agent.record_for(call.number, timeout=20)
    replies = agent_turns(record)
    hours = next(t for t in replies if str(t["text"]).startswith("We are open") or t.get("interrupted"))
    assert hours["interrupted"] is True
    heard = str(hours["text"])
    assert heard and HOURS.startswith(heard) and len(heard) < len(HOURS)
    assert replies[-1]["text"] == ADDRESS
    assert metric(agent, "ari_agent_barge_ins_total") == 1
    # Agent side: caller onset -> outbound flushed, under the CI bound.
    reaction = metric(agent, "ari_agent_barge_in_reaction_seconds_sum")
    assert 0 < reaction < 0.5


async def test_short_noise_bursts_do_not_interrupt(lab: Lab, agent: AgentProcess, tmp_path: Path) -> None:
    voiced = await speech("ahh")
    rate = 8000
    # The loudest 100 ms of a real voice: a cough-length burst that webrtcvad calls speech.
    window = rate // 10
    energy = np.convolve(voiced.astype(np.float64) ** 2, np.ones(window), mode="valid")
    start = int(np.argmax(energy))
    burst = voiced[start : start + window]
    async with RtpCaller.connect(lab) as call:
        try:
            await call.wait_agent_speech(timeout=15)
            await call.wait_agent_silence(min_silence_ms=700, timeout=20)
            reply_at = await ask_and_wait_for_reply(call, "what time do you open")
            for _ in range(3):
                await asyncio.sleep(0.6)
                await call.say(burst, sample_rate=rate)
            end = await call.wait_agent_silence(min_silence_ms=700, timeout=20)
        except BaseException:
            call.dump_wav(tmp_path / "bursts.wav")
            raise
        assert end - reply_at > 3.5  # the whole reply played
    record = agent.record_for(call.number, timeout=20)
    hours = agent_turns(record)[1]
    assert hours["text"] == HOURS and "interrupted" not in hours
    assert metric(agent, "ari_agent_barge_ins_total") == 0


@pytest.mark.parametrize(("gain_db", "delay_ms"), [(-6, 20), (-20, 80)])
async def test_own_echo_does_not_interrupt_but_the_caller_does(
    lab: Lab, agent: AgentProcess, tmp_path: Path, gain_db: int, delay_ms: int
) -> None:
    async with RtpCaller.connect(lab) as call:
        call.play_continuous(speakerphone_echo(gain_db), delay_ms=delay_ms)
        try:
            await call.wait_agent_speech(timeout=15)
            await call.wait_agent_silence(min_silence_ms=700, timeout=20)
            reply_at = await ask_and_wait_for_reply(call, "what time do you open")
            end = await call.wait_agent_silence(min_silence_ms=700, timeout=20)
            assert end - reply_at > 3.5, "the echo cut the reply short"
            # A real barge-in during the echo still works.
            address_at = await ask_and_wait_for_reply(call, "where are you located")
            await asyncio.sleep(1.0)
            said = await call.say("what time do you open")
            await call.wait_agent_speech(timeout=15, after=said.last_sent)
            await call.wait_agent_silence(min_silence_ms=700, timeout=20)
        except BaseException:
            call.dump_wav(tmp_path / "echo.wav")
            raise
        assert address_at < said.first_sent
    record = agent.record_for(call.number, timeout=20)
    replies = agent_turns(record)
    assert replies[1]["text"] == HOURS and "interrupted" not in replies[1]
    assert replies[2]["interrupted"] is True and ADDRESS.startswith(str(replies[2]["text"]))
    assert replies[3]["text"] == HOURS
    assert metric(agent, "ari_agent_barge_ins_total") == 1


async def test_realtime_barge_in_truncates_at_the_heard_position(
    lab: Lab, agent_factory: AgentFactory, tmp_path: Path
) -> None:
    from tests.fakes.openai_server import FakeOpenAI, RealtimeReply
    from tests.fakes.threaded import serve_in_thread

    key = "sk-test-realtime-0123456789SECRET"
    fake = FakeOpenAI(api_key=key)
    long_reply = RealtimeReply(text=HOURS + " " + HOURS, chunk_ms=100, chunk_delay=0.08)
    fake.realtime.replies.extend(
        [RealtimeReply(text="Hello, how can I help?"), long_reply, RealtimeReply(text=ADDRESS)]
    )
    with serve_in_thread(fake.app) as url:
        config = tmp_path / "rt.toml"
        config.write_text(
            f'[profiles.rt]\ngreeting = "Hello, how can I help?"\nrealtime = ["openai"]\n'
            f'[profiles.rt.options.openai]\nbase_url = "{url}/v1"\n',
            encoding="utf-8",
        )
        agent = agent_factory.start(
            {"AGENT_CONFIG": str(config), "OPENAI_API_KEY": key, "AGENT_MEDIA__FORMAT": "ulaw"}
        )
        async with RtpCaller.connect(lab, extension="rt", context="lab-profile") as call:
            try:
                await call.wait_agent_speech(timeout=20)
                await call.wait_agent_silence(min_silence_ms=700, timeout=20)
                reply_at = await ask_and_wait_for_reply(call, "what time do you open")
                await asyncio.sleep(2.0)
                said = await call.say("where are you located")
                await call.wait_agent_speech(timeout=20, after=said.last_sent)
                await call.wait_agent_silence(min_silence_ms=700, timeout=20)
            except BaseException:
                call.dump_wav(tmp_path / "realtime.wav")
                raise
            heard_s = call.loud(after=reply_at, before=said.last_sent)[-1].at - reply_at
        truncates = fake.events_of("conversation.item.truncate")
        cancels = fake.events_of("response.cancel")
    assert len(truncates) == 1 and cancels
    audio_end_ms = truncates[0]["audio_end_ms"]
    print(f"truncated at {audio_end_ms} ms; the caller heard about {heard_s * 1000:.0f} ms")
    # Where the caller stopped hearing it: at least the 2 s before the barge-in, far from its 10 s end.
    assert 1500 < audio_end_ms < 6000
    assert abs(audio_end_ms - heard_s * 1000) < 1000
    record = agent.record_for(call.number, timeout=20)
    cut = [t for t in agent_turns(record) if t.get("interrupted")]
    assert len(cut) == 1
    assert agent_turns(record)[-1]["text"] == ADDRESS
