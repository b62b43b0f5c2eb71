"""The RTP caller against the real agent, through the real Asterisk.

Assertions are structural (what arrived, in which order), never wall-clock
bounds: Asterisk shares two cores with everything else.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import numpy as np
import pytest

from tests.integration.lab import AgentFactory, AgentProcess, Lab
from tests.integration.rtp_caller import FRAME_S, RtpCaller, speakerphone_echo, speech

HOURS = "We are open Monday to Friday, from nine in the morning to five in the evening."


async def test_greeting_then_reply_to_a_question(lab: Lab, agent: AgentProcess, tmp_path: Path) -> None:
    async with RtpCaller.connect(lab) as call:
        try:
            greeting_at = await call.wait_agent_speech(timeout=15)
            greeting_end = await call.wait_agent_silence(min_silence_ms=700, timeout=20)
            said = await call.say("what time do you open")
            reply_at = await call.wait_agent_speech(timeout=15, after=said.last_sent)
            reply_end = await call.wait_agent_silence(min_silence_ms=700, timeout=20)
        except BaseException:
            call.dump_wav(tmp_path / "call.wav")
            raise
        segments = call.agent_speech_segments()
        sent_speech = [f for f in call.sent if f.speech]
        arrivals = [p.at for p in call.received]
        assert call.answered_at is not None
        answered_at, closed_at = call.answered_at, time.monotonic()

    # Kernel arrival stamps, on the monotonic clock and in order.
    assert answered_at < arrivals[0] and arrivals[-1] < closed_at
    assert all(a <= b for a, b in itertools.pairwise(arrivals))
    assert greeting_at < greeting_end < said.first_sent < said.last_sent < reply_at < reply_end
    # The greeting (about 3.5 s of espeak-ng) and the reply (about 5 s) each arrived as a stretch of speech.
    assert greeting_end - greeting_at > 2.0
    assert reply_end - reply_at > 3.0
    assert len(segments) >= 2
    assert segments[0][0] == greeting_at and segments[-1][0] >= reply_at
    # The caller's own packets: one per 20 ms, the utterance sent in full.
    assert said.frames == len(sent_speech) and said.duration > 0.8
    assert said.first_sent < said.last_voiced_sent <= said.last_sent
    assert said.last_sent - said.first_sent == pytest.approx((said.frames - 1) * FRAME_S, rel=0.25)
    # The agent's talkspurts arrive paced, not in bursts: most gaps are one frame.
    intervals = np.asarray(call.arrival_intervals(after=reply_at, before=reply_end))
    assert intervals.size > 100
    assert 0.015 < float(np.median(intervals)) < 0.025
    # The agent understood: its record has the question and the hours.
    record = agent.record_for(call.number, timeout=20)
    assert [t["text"] for t in record["turns"] if t["role"] == "user"] == ["what time do you open"]
    assert HOURS in [t["text"] for t in record["turns"] if t["role"] == "agent"]
    assert record["end_reason"] == "hangup_by_caller"


async def test_agent_hangup_is_seen_and_wav_dump(lab: Lab, agent: AgentProcess, tmp_path: Path) -> None:
    async with RtpCaller.connect(lab) as call:
        await call.wait_agent_speech(timeout=15)
        await call.wait_agent_silence(min_silence_ms=700, timeout=20)
        await call.say("goodbye")
        await call.wait_ended(timeout=30)
        wav = call.dump_wav(tmp_path / "call.wav")
    assert call.ended.is_set()
    assert wav.stat().st_size > 8000 * 2 * 2  # over a second of stereo audio
    record = agent.record_for(call.number, timeout=20)
    assert record["end_reason"] == "hangup_by_agent"


async def test_echo_source_mixes_received_audio_into_what_is_sent(lab: Lab, agent: AgentProcess) -> None:
    async with RtpCaller.connect(lab) as call:
        call.play_continuous(speakerphone_echo(-12), delay_ms=40)
        first = await call.wait_agent_speech(timeout=15)
        await call.wait_agent_silence(min_silence_ms=700, timeout=20)
        call.play_continuous(None)
        echoed = [f for f in call.sent if f.at > first and np.any(f.pcm)]
        loud_in = [p for p in call.received if p.at >= first and p.level > call.loud_dbfs]
    # Every loud frame heard came back out once, about 12 dB down.
    assert len(echoed) >= 0.9 * len(loud_in)
    rms_in = float(np.sqrt(np.mean(np.concatenate([p.pcm for p in loud_in]).astype(np.float64) ** 2)))
    rms_out = float(np.sqrt(np.mean(np.concatenate([f.pcm for f in echoed]).astype(np.float64) ** 2)))
    assert 20 * np.log10(rms_out / rms_in) == pytest.approx(-12, abs=2)
    assert not any(f.speech for f in call.sent)


async def test_timed_providers_through_the_agent(
    lab: Lab, agent_factory: AgentFactory, tmp_path: Path
) -> None:
    """The providers of known latency load by "module:Class" name and speak their configured texts."""
    config = tmp_path / "bench.toml"
    config.write_text(
        """
[profiles.frontdesk]
greeting = "Hello from the timed profile."
stt = ["tests.fakes.timed:TimedSTT"]
llm = ["tests.fakes.timed:TimedLLM"]
tts = ["tests.fakes.timed:TimedTTS"]

[profiles.frontdesk.options."tests.fakes.timed:TimedSTT"]
texts = ["first question", "second question"]

[profiles.frontdesk.options."tests.fakes.timed:TimedLLM"]
reply = "Sure. This reply comes from the timed language model."
""",
        encoding="utf-8",
    )
    agent = agent_factory.start({"AGENT_CONFIG": str(config)})
    async with RtpCaller.connect(lab) as call:
        await call.wait_agent_speech(timeout=15)
        await call.wait_agent_silence(min_silence_ms=700, timeout=20)
        for text in ("anything at all", "and again"):
            said = await call.say(text)
            reply_at = await call.wait_agent_speech(timeout=15, after=said.last_sent)
            await call.wait_agent_silence(min_silence_ms=700, timeout=20)
            assert reply_at > said.last_sent
        number = call.number
    record = agent.record_for(number, timeout=20)
    turns = [(t["role"], t["text"]) for t in record["turns"]]
    assert turns == [
        ("agent", "Hello from the timed profile."),
        ("user", "first question"),
        ("agent", "Sure. This reply comes from the timed language model."),
        ("user", "second question"),
        ("agent", "Sure. This reply comes from the timed language model."),
    ]


async def test_speech_renders_espeak_at_8k() -> None:
    pcm = await speech("what time do you open")
    assert pcm.dtype == np.int16
    assert 0.6 < pcm.size / 8000 < 3.0
    # Trimmed: the first and last 20 ms are not silent.
    assert np.abs(pcm[:160]).max() > 200 and np.abs(pcm[-160:]).max() > 200
