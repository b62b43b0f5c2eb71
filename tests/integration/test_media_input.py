"""Callers as real networks send them, through the real Asterisk at its defaults.

A leg that sends nothing between words (silence suppression, DTX, no
``transmit_silence``), and a relay between Asterisk and the agent that
reorders, duplicates, drops, suppresses silence with comfort noise, sends
RTCP and telephone-events on the RTP port, wraps sequence numbers and
timestamps and changes SSRC mid-call.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.integration.lab import AgentFactory, AgentProcess, Lab
from tests.integration.rtp_caller import RtpCaller
from tests.integration.rtp_relay import ImpairingRelay, Plan
from tests.integration.test_calls import ADDRESS, GOODBYE, GREETING, HOURS


def _metrics(agent: AgentProcess) -> dict[str, float]:
    status, body = agent.http_get("/metrics")
    assert status == 200
    values: dict[str, float] = {}
    for line in body.splitlines():
        m = re.match(r"^(ari_agent_[a-z_]+(?:\{[^}]*\})?) ([0-9.e+-]+)$", line)
        if m:
            values[m.group(1)] = float(m.group(2))
    return values


async def test_caller_silent_on_the_wire_between_words_gets_every_answer(
    lab: Lab, agent: AgentProcess, tmp_path: Path
) -> None:
    async with RtpCaller.connect(lab, silence_suppression=True) as call:
        try:
            await call.wait_greeting()
            await call.ask("what time do you open")
            await call.ask("where are you located")
            said = await call.say("goodbye")
            await call.wait_ended(timeout=30)
        except BaseException:
            call.dump_wav(tmp_path / "call.wav")
            raise
        suppressed = call.suppressed_frames
        assert said.last_sent > 0

    # The caller really sent nothing while silent: most of the call.
    assert suppressed > 200
    record = agent.record_for(call.number, timeout=20)
    assert [t["text"] for t in record["turns"] if t["role"] == "user"] == [
        "what time do you open",
        "where are you located",
        "goodbye",
    ]
    replies = [t for t in record["turns"] if t["role"] == "agent"]
    assert [t["text"] for t in replies] == [GREETING, HOURS, ADDRESS, GOODBYE]
    # Every reply to the caller has its turn latency: the end of speech was found without packets.
    for reply in replies[1:]:
        assert reply["timings"]["turn_latency_ms"] > 0, reply
    assert record["end_reason"] == "hangup_by_agent"
    media = record["media"]
    assert media["gaps"] >= 3  # before each question and before goodbye
    assert media["lost"] == 0 and media["received"] > 100
    assert _metrics(agent)['ari_agent_rtp_inbound_gaps_total{transport="rtp"}'] >= media["gaps"]


async def test_impaired_rtp_is_heard_and_counted_exactly(
    lab: Lab, agent_factory: AgentFactory, tmp_path: Path
) -> None:
    # A small port range of the agent's own, which the relay listens on at 127.0.0.2.
    low = lab.ports.agent_media[0] + 900
    ports = range(low, low + 4)
    with ImpairingRelay(ports, plan=Plan(seed=8)) as relay:
        agent = agent_factory.start(
            {
                "AGENT_MEDIA__ADVERTISE_HOST": "127.0.0.2",
                "AGENT_MEDIA__PORT_MIN": str(ports.start),
                "AGENT_MEDIA__PORT_MAX": str(ports.stop - 1),
            }
        )
        async with RtpCaller.connect(lab) as call:
            try:
                await call.wait_greeting()
                await call.ask("what time do you open")
                await call.ask("where are you located")
                await call.say("goodbye")
                await call.wait_ended(timeout=30)
            except BaseException:
                call.dump_wav(tmp_path / "call.wav")
                raise
        record = agent.record_for(call.number, timeout=20)
        relay.wait_idle()
        counts = relay.counts
        metrics = _metrics(agent)

    assert not relay.errors
    # The call was answered correctly through all of it.
    assert [t["text"] for t in record["turns"] if t["role"] == "agent"] == [GREETING, HOURS, ADDRESS, GOODBYE]
    assert record["end_reason"] == "hangup_by_agent"
    # The relay did every kind of damage it was asked to, wraps included.
    assert counts.ssrc_changes == 1 and counts.seq_wraps >= 1 and counts.ts_wraps >= 1
    assert counts.duplicates >= 1 and counts.reordered >= 3 and counts.lost_as_seen() >= 1
    assert counts.comfort_noise >= 3 and counts.rtcp >= 3 and counts.telephone_events == 3
    media = record["media"]
    # Loss as injected; duplicates counted and not taken for received packets; no phantom
    # loss from the SSRC change or the wraps.
    assert media["lost"] == counts.lost_as_seen()
    assert media["duplicates"] == counts.duplicates
    assert media["ssrc_changes"] == 1
    assert media["comfort_noise"] == counts.comfort_noise
    assert media["telephone_events"] == counts.telephone_events
    # Each packet kind has its count in /metrics.
    dropped = 'ari_agent_rtp_packets_dropped_total{{reason="{}",transport="rtp"}}'.format
    events = 'ari_agent_rtp_inbound_events_total{{kind="{}",transport="rtp"}}'.format
    assert metrics[dropped("rtcp")] == counts.rtcp
    assert metrics[dropped("duplicate")] == counts.duplicates
    assert metrics[events("comfort_noise")] == counts.comfort_noise
    assert metrics[events("telephone_event")] == counts.telephone_events
    assert metrics[events("ssrc_change")] == 1
    # A lost frame is concealed unless the clock had already filled its time (after a silence).
    concealed = metrics.get(events("concealed"), 0)
    assert concealed == media["concealed"] <= counts.lost_as_seen()


async def test_rtp_bound_dual_stack_answers_an_ipv4_asterisk(
    lab: Lab, agent_factory: AgentFactory, tmp_path: Path
) -> None:
    # Bound on "::" (IPv6 and IPv4), with an IPv4 Asterisk: packets come from ::ffff:127.0.0.1.
    agent = agent_factory.start({"AGENT_MEDIA__BIND_HOST": "::", "AGENT_MEDIA__ADVERTISE_HOST": "127.0.0.1"})
    async with RtpCaller.connect(lab) as call:
        try:
            await call.wait_greeting()
            await call.ask("what time do you open")
            await call.hangup()
        except BaseException:
            call.dump_wav(tmp_path / "call.wav")
            raise
    record = agent.record_for(call.number, timeout=20)
    assert HOURS in [t["text"] for t in record["turns"] if t["role"] == "agent"]
    assert record["media"]["received"] > 50
    wrong_source = 'ari_agent_rtp_packets_dropped_total{reason="wrong_source",transport="rtp"}'
    assert _metrics(agent).get(wrong_source, 0) == 0


@pytest.mark.parametrize(
    ("question", "stall_at_loud"),
    [
        # 300 ms stalls where, with the fill left in, the offline recogniser misheard (found
        # by putting the fill at every 20 ms of the utterances as the agent got them): inside
        # "goodbye" 12 loud packets in, rejected (the agent never hung up); inside the question
        # 51 loud packets in, heard as "what time do you close".
        (None, 12),
        ("what time do you open", 51),
    ],
    ids=["in-goodbye", "in-question"],
)
async def test_a_stall_in_mid_word_does_not_reach_the_recogniser_as_a_pause(
    lab: Lab, agent_factory: AgentFactory, tmp_path: Path, question: str | None, stall_at_loud: int
) -> None:
    # Issue 12: under CPU load the caller's packets sometimes came 0.2-0.6 s late in a burst.
    # The receive clock fills silence while it waits; once the late audio came, that silence
    # stayed inside the word, and the offline recogniser rejected "goodbye" (the agent did not
    # hang up) or heard a question as "bye" (and hung up on the caller).
    low = lab.ports.agent_media[0] + 910
    ports = range(low, low + 4)
    plan = Plan(
        loss=0.0,
        duplicate=0.0,
        reorder=0.0,
        silent_peak=0,  # no silence suppression: the stall alone
        rtcp_every=10**9,
        ssrc_change_after=10**9,
        stall_ms=300,
        stall_at_loud=stall_at_loud,
    )
    with ImpairingRelay(ports, plan=plan) as relay:
        agent = agent_factory.start(
            {
                "AGENT_MEDIA__ADVERTISE_HOST": "127.0.0.2",
                "AGENT_MEDIA__PORT_MIN": str(ports.start),
                "AGENT_MEDIA__PORT_MAX": str(ports.stop - 1),
                "AGENT_STORE__TEXT": "true",
            }
        )
        async with RtpCaller.connect(lab) as call:
            try:
                await call.wait_greeting()
                if question is not None:
                    await call.ask(question)
                await call.say("goodbye")
                await call.wait_ended(timeout=30)
            except BaseException:
                call.dump_wav(tmp_path / "call.wav")
                raise
        record = agent.record_for(call.number, timeout=20)
        relay.wait_idle()

    assert not relay.errors
    assert relay.counts.stalled >= 10  # the path did stall, with the word in flight
    media = record["media"]
    assert media["late_fills"] >= 1 and media["lost"] == 0
    # The silence filled while waiting was taken back once the late audio came ...
    assert media["late_fill_retracted_ms"] >= 200, media
    # ... and the words were heard whole: the right answer, then goodbye and the hang-up.
    said = [t["text"] for t in record["turns"] if t["role"] == "user"]
    assert said == [*([question] if question else []), "goodbye"], record["turns"]
    replies = [t["text"] for t in record["turns"] if t["role"] == "agent"]
    assert replies == [GREETING, *([HOURS] if question else []), GOODBYE]
    assert record["end_reason"] == "hangup_by_agent"
