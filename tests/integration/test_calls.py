"""The agent answering real calls through a real Asterisk 22 (Local and SIP)."""

from __future__ import annotations

import json
import os
import re
import socket
import struct
import subprocess
import sys
import time
from typing import Any

import pytest

from tests.integration.lab import AgentFactory, AgentProcess, CallHandle, Lab, metric, voiced_segments

GREETING = "Thank you for calling Riverside Dental. How can I help you?"
HOURS = "We are open Monday to Friday, from nine in the morning to five in the evening."
ADDRESS = "We are at 12 Harbour Street, next to the library."
RECEPTION = "Let me put you through to reception."
GOODBYE = "Thank you for calling. Goodbye."
FALLBACK = "Sorry, I can help with opening hours, our address, or booking an appointment."


def agent_lines(record: dict[str, Any]) -> list[str]:
    return [t["text"] for t in record["turns"] if t["role"] == "agent"]


def heard_turns(lab: Lab, handle: CallHandle) -> set[int]:
    """Turns (0 = before the first phrase) after which the caller heard the agent speak.

    Judged live by the lab while the call runs, so the last reply before a
    hang-up may be missed; ``spoken_segments`` reads the finished recording.
    """
    return {int(e.fields["n"]) for e in lab.dialplan_events(handle.number) if e.kind == "caller-heard-start"}


def spoken_segments(handle: CallHandle) -> int:
    """Separate stretches of speech in what the caller heard."""
    return len(voiced_segments(handle.recording_path))


def status_after_stasis(lab: Lab, number: str) -> str | None:
    for event in lab.dialplan_events(number):
        if event.kind in ("stasis-return", "hangup", "reception"):
            return event.fields.get("AI_AGENT_STATUS")
    return None


def agent_leftovers(lab: Lab) -> tuple[list[str], list[str]]:
    """Bridges and channels of the agent's (ids marked aia-) still on the Asterisk."""
    bridges = [b["id"] for b in lab.ari("GET", "/bridges") if b["id"].startswith("aia-")]
    channels = [c["id"] for c in lab.ari("GET", "/channels") if c["id"].startswith("aia-")]
    return bridges, channels


def test_local_call_answers_each_intent_and_goodbye_hangs_up(lab: Lab, agent: AgentProcess) -> None:
    phrases = ["what time do you open", "where are you located", "is the parking free", "goodbye"]
    handle = lab.place_call(phrases, via="local")
    lab.wait_call_ended(handle, timeout=120)
    record = agent.record_for(handle.number)

    assert agent_lines(record) == [GREETING, HOURS, ADDRESS, FALLBACK, GOODBYE]
    assert record["end_reason"] == "hangup_by_agent"
    assert record["caller"]["number"] == handle.number
    assert record["profile"] == "frontdesk"
    assert record["channel_id"] and record["call_id"]
    assert record["started_at"].endswith("Z") and record["ended_at"] >= record["started_at"]
    users = [t["text"] for t in record["turns"] if t["role"] == "user"]
    assert users[:2] == ["what time do you open", "where are you located"]
    # The caller really heard the agent: after the greeting and after every phrase.
    assert heard_turns(lab, handle) >= {0, 1, 2, 3}
    assert spoken_segments(handle) >= 5
    assert status_after_stasis(lab, handle.number) == "COMPLETED"
    # The agent, not the caller script, ended the call: the script had a tail to wait.
    assert not any(e.kind == "caller-hangup" for e in lab.dialplan_events(handle.number))
    # Per-call RTP quality: loopback loses nothing, so the MOS estimate is near the top.
    assert metric(agent, "ari_agent_call_mos_count") == 1
    assert metric(agent, "ari_agent_call_mos_sum") > 4.0
    assert metric(agent, "ari_agent_call_rtp_loss_ratio_sum") == 0
    # Logs: JSON lines, the call's lines carry its id, no caller number and no transcript.
    lines = agent.log_path.read_text(encoding="utf-8").splitlines()
    entries = [json.loads(line) for line in lines if line.strip()]
    call_lines = [e for e in entries if e["logger"].startswith("ari_agent.conversation")]
    assert call_lines and all(e.get("call_id") == record["call_id"] for e in call_lines)
    text = "\n".join(lines)
    assert handle.number not in text
    assert "what time do you open" not in text and "Harbour Street" not in text


def test_greeting_plays_at_true_speed(lab: Lab, agent: AgentProcess) -> None:
    """Asterisk plays 16 kHz L16 sent with PT 11 at half speed, silently; the agent must not."""
    handle = lab.place_call([], via="local", tail=1.0)
    lab.wait_call_ended(handle, timeout=60)
    segments = voiced_segments(handle.recording_path)
    assert segments, "the caller heard nothing"
    start, end = segments[0]
    # espeak-ng speaks the greeting in about 3.6 s; at half speed it would be over 7 s.
    assert 2.5 < end - start < 5.0, segments


def test_booking_transfers_to_reception(lab: Lab, agent: AgentProcess) -> None:
    handle = lab.place_call(["i want to book an appointment"], via="local")
    lab.wait_dialplan_event(handle.number, "reception", timeout=60)
    record = agent.record_for(handle.number, timeout=20)
    assert agent_lines(record) == [GREETING, RECEPTION]
    assert record["end_reason"] == "transferred"
    assert status_after_stasis(lab, handle.number) == "TRANSFERRED"
    # The reply was heard in full before the transfer.
    assert heard_turns(lab, handle) >= {0, 1}


@pytest.mark.parametrize("codec", ["ulaw", "alaw", "g722"])
def test_sip_call_per_codec(lab: Lab, agent: AgentProcess, codec: str) -> None:
    handle = lab.place_call(["what is your address", "goodbye"], via="sip", codec=codec)
    outcome = lab.wait_call_ended(handle, timeout=120)
    answered = [e for e in outcome.events if e.kind == "caller-answered"]
    assert answered and codec in answered[0].fields["codec"]
    record = agent.record_for(handle.number)
    assert agent_lines(record) == [GREETING, ADDRESS, GOODBYE]
    assert record["end_reason"] == "hangup_by_agent"
    assert heard_turns(lab, handle) >= {0, 1}
    assert spoken_segments(handle) >= 3


def test_twenty_concurrent_sip_calls(lab: Lab, agent: AgentProcess) -> None:
    questions = [
        ("what time do you open", HOURS),
        ("where are you located", ADDRESS),
        ("what is your address", ADDRESS),
        ("when are you open", HOURS),
    ]
    handles: list[tuple[CallHandle, str]] = []
    for i in range(20):
        question, reply = questions[i % len(questions)]
        handles.append((lab.place_call([question, "goodbye"], via="sip", codec="ulaw"), reply))
        time.sleep(0.25)  # started over a few seconds, as real traffic would be
    for handle, _ in handles:
        lab.wait_call_ended(handle, timeout=240)
    wrong = []
    for handle, reply in handles:
        record = agent.record_for(handle.number, timeout=20)
        if agent_lines(record) != [GREETING, reply, GOODBYE] or record["end_reason"] != "hangup_by_agent":
            wrong.append((handle.number, agent_lines(record), record["end_reason"]))
    assert not wrong, wrong
    deadline = time.monotonic() + 10
    while agent_leftovers(lab) != ([], []) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert agent_leftovers(lab) == ([], [])
    status, body = agent.http_get("/calls")
    assert status == 200 and body.strip() == "[]"


def test_restart_hands_parked_callers_back(lab: Lab, agent_factory: AgentFactory) -> None:
    records_dir = agent_factory.workdir / "restart-records"
    first = agent_factory.start(records_dir=records_dir)
    # Callers that say nothing stay in the conversation.
    handles = [lab.place_call([], via="local", tail=60, max_duration=90) for _ in range(2)]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status, body = first.http_get("/calls")
        if status == 200 and body.count('"call_id"') == 2:
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"the calls never became active: {body}")
    # A call shows in /calls as soon as it is admitted; its bridge follows a moment later.
    deadline = time.monotonic() + 10
    while len(agent_leftovers(lab)[0]) < 2:
        assert time.monotonic() < deadline, "expected the agent's bridges while calls are up"
        time.sleep(0.2)
    first.kill()
    second = agent_factory.start(records_dir=records_dir)
    ready_at = time.monotonic()
    for handle in handles:
        event = lab.wait_dialplan_event(handle.number, "stasis-return", timeout=10)
        assert event.fields["AI_AGENT_STATUS"] == "FAILED"
    assert time.monotonic() - ready_at < 10
    assert agent_leftovers(lab) == ([], [])
    for handle in handles:
        assert second.record_for(handle.number)["end_reason"] == "failed"


def _media_port(lab: Lab) -> int:
    """The agent's RTP port, from the ExternalMedia channel's name (UnicastRTP/host:port-...)."""
    for channel in lab.ari("GET", "/channels"):
        match = re.match(r"UnicastRTP/127\.0\.0\.1:(\d+)-", channel["name"])
        if match:
            return int(match.group(1))
    raise AssertionError("no ExternalMedia channel found")


def test_garbage_rtp_is_counted_and_call_goes_on(lab: Lab, agent: AgentProcess) -> None:
    handle = lab.place_call(["what time do you open", "goodbye"], via="local")
    lab.wait_dialplan_event(handle.number, "caller-heard-start", timeout=30)
    assert metric(agent, "ari_agent_rtp_packets_dropped_total", reason="wrong_source", transport="rtp") == 0
    port = _media_port(lab)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _ in range(20):
            sock.sendto(os.urandom(7), ("127.0.0.1", port))  # too short for RTP
            sock.sendto(b"\x00" * 40, ("127.0.0.1", port))  # version 0
            # A well-formed RTP packet from a source that is not Asterisk.
            sock.sendto(struct.pack("!BBHII", 0x80, 0, 1, 2, 3) + b"\xff" * 160, ("127.0.0.1", port))
    lab.wait_call_ended(handle, timeout=120)
    record = agent.record_for(handle.number)
    assert agent_lines(record) == [GREETING, HOURS, GOODBYE]
    # Datagrams from anywhere but the ExternalMedia channel's address are not
    # even parsed (the unit tests cover the reasons behind that check).
    assert metric(agent, "ari_agent_rtp_packets_dropped_total", reason="wrong_source", transport="rtp") >= 60
    assert metric(agent, "ari_agent_rtp_packets_in_total", transport="rtp") > 100
    assert metric(agent, "ari_agent_rtp_packets_out_total", transport="rtp") > 100


def test_unknown_profile_hands_back_failed(lab: Lab, agent: AgentProcess) -> None:
    handle = lab.place_call([], via="local", extension="101", listen_first=False, tail=1)
    event = lab.wait_dialplan_event(handle.number, "stasis-return", timeout=20)
    assert event.fields["AI_AGENT_STATUS"] == "FAILED"
    record = agent.record_for(handle.number)
    assert record["end_reason"] == "failed" and record["profile"] == "nosuch"


def test_over_the_limit_is_busy(lab: Lab, agent_factory: AgentFactory) -> None:
    agent = agent_factory.start({"AGENT_CALLS__MAX_CONCURRENT": "1"})
    first = lab.place_call([], via="local", tail=15)
    lab.wait_dialplan_event(first.number, "caller-heard-start", timeout=30)
    second = lab.place_call([], via="local", listen_first=False, tail=1)
    event = lab.wait_dialplan_event(second.number, "stasis-return", timeout=20)
    assert event.fields["AI_AGENT_STATUS"] == "BUSY"
    assert agent.record_for(second.number)["end_reason"] == "busy"
    status, body = agent.http_get("/calls")
    assert status == 200 and body.count('"call_id"') == 1
    assert "caller" not in body and first.number not in body


def test_health_endpoints(lab: Lab, agent: AgentProcess) -> None:
    assert agent.http_get("/healthz")[0] == 200
    assert agent.http_get("/readyz")[0] == 200
    status, text = agent.http_get("/metrics")
    assert status == 200 and "ari_agent_active_calls" in text


def test_call_store_keeps_timings_and_text_only_when_opted_in(lab: Lab, agent_factory: AgentFactory) -> None:
    import sqlite3

    for opt_in in (False, True):
        agent = agent_factory.start({"AGENT_STORE__TEXT": "true" if opt_in else "false"})
        handle = lab.place_call(["what time do you open", "goodbye"], via="local")
        lab.wait_call_ended(handle, timeout=120)
        record = agent.record_for(handle.number)
        agent.stop()
        db = sqlite3.connect(agent.records_dir / "calls.db")
        try:
            (caller, status) = db.execute(
                "SELECT caller_number, status FROM calls WHERE call_id = ?", (record["call_id"],)
            ).fetchone()
            rows = db.execute(
                "SELECT role, text, turn_latency_ms, llm_first_token_ms"
                " FROM turns WHERE call_id = ? ORDER BY seq",
                (record["call_id"],),
            ).fetchall()
        finally:
            db.close()
        assert caller == handle.number and status == "COMPLETED"
        assert [r[0] for r in rows] == [t["role"] for t in record["turns"]]
        texts = [r[1] for r in rows]
        assert texts == ([t["text"] for t in record["turns"]] if opt_in else [None] * len(rows))
        # The reply to the question carries its per-stage timings.
        hours = [r for r in rows if r[0] == "agent"][1]
        assert hours[2] is not None and hours[2] > 0 and hours[3] is not None
        # `calls show` reads the store and prints the record calls.jsonl has, field for field.
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_")}
        env["AGENT_STORE__PATH"] = str(agent.records_dir / "calls.db")
        shown = subprocess.run(
            [sys.executable, "-m", "ari_agent", "calls", "show", record["call_id"], "--json"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert shown.returncode == 0, shown.stdout + shown.stderr
        expected = json.loads(json.dumps(record))
        if not opt_in:
            for turn in expected["turns"]:
                turn["text"] = None
        assert json.loads(shown.stdout) == expected
        assert expected["media"] and expected["status"] == "COMPLETED"
