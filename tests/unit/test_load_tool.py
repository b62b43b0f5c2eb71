"""``ari-agent load``: the SIPp scenario and the verdict, on plain data."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from ari_agent.ops.load import LoadOptions, sipp_command
from ari_agent.ops.loadplan import CallPlan, Target, parse_log, scenario, timeline
from ari_agent.ops.loadreport import expected_reply, normalize, peak_concurrent, percentile, verdict
from ari_agent.profiles import builtin_profiles

REPLY = "We are open Monday to Friday, from nine in the morning to five in the evening."


def _scenario(plan: CallPlan, *, auth: bool = False) -> ET.Element:
    text = scenario(
        plan, tag="9123", question_wav="/w/q.wav", goodbye_wav="/w/g.wav", call_wav="/w/c.wav",
        question_s=1.5, goodbye_s=0.5, auth=auth,
    )  # fmt: skip
    return ET.fromstring(text)


def _plays(root: ET.Element) -> list[str]:
    return [e.attrib["rtp_stream"] for e in root.iter("exec")]


def test_target_parses_ext_host_port() -> None:
    assert Target.parse("100@127.0.0.1:15060") == Target("100", "127.0.0.1", 15060)
    assert Target.parse("s@10.0.0.5") == Target("s", "10.0.0.5", 5060)
    assert Target.parse("100@[::1]:5070").hostport == "[::1]:5070"
    bad_targets = (
        "100",
        "@127.0.0.1",
        "100@pbx.example.com",
        "100@127.0.0.1:0",
        "10 0@1.2.3.4",
        "1@1.2.3.4:x",
    )
    for bad in bad_targets:
        with pytest.raises(ValueError):
            Target.parse(bad)


def test_streaming_callers_play_one_file_holding_the_whole_timeline() -> None:
    plan = CallPlan(greeting_wait=6, reply_wait=5, hangup_wait=4)
    root = _scenario(plan)
    assert _plays(root) == ["/w/c.wav,1,0"]
    assert not list(root.iter("pause"))
    bye = next(e for e in root.iter("recv") if e.attrib.get("request") == "BYE")
    # The BYE is awaited from the answer on: the whole timeline, goodbye and hang-up wait included.
    assert bye.attrib["timeout"] == str(round((6 + 1.5 + 5 + 0.5 + 4) * 1000))
    assert sum(s.seconds for s in timeline(plan, 1.5, 0.5)) == 17


def test_silent_callers_play_only_the_utterances_with_pauses_between() -> None:
    root = _scenario(CallPlan(greeting_wait=6, reply_wait=5, hangup_wait=4, silent_between=True))
    assert _plays(root) == ["/w/q.wav,1,0", "/w/g.wav,1,0"]
    assert [p.attrib["milliseconds"] for p in root.iter("pause")] == ["6000", "6500", "500"]
    bye = next(e for e in root.iter("recv") if e.attrib.get("request") == "BYE")
    assert bye.attrib["timeout"] == "4000" and bye.attrib["ontimeout"] == "1"


def test_the_caller_number_carries_the_runs_tag() -> None:
    root = _scenario(CallPlan())
    invite = next(iter(root.iter("send"))).text or ""
    assert "<sip:9123[call_number]@" in invite and "m=audio [rtpstream_audio_port] RTP/AVP 0" in invite
    with pytest.raises(ValueError):
        scenario(
            CallPlan(), tag="x1", question_wav="", goodbye_wav="", call_wav="", question_s=1, goodbye_s=2
        )


def test_parse_log_groups_events_by_call() -> None:
    assert parse_log("1 answered\n2 answered\n1 agent-bye\nnoise\n\n2 our-bye\n") == {
        1: {"answered", "agent-bye"},
        2: {"answered", "our-bye"},
    }


def test_percentile_nearest_rank() -> None:
    assert percentile([5, 1, 3, 2, 4], 50) == 3
    assert percentile([5, 1, 3, 2, 4], 95) == 5
    assert percentile([7], 50) == 7
    with pytest.raises(ValueError):
        percentile([], 50)


def _record(
    heard: str = "what time do you open", reply: str | None = REPLY, end: str = "hangup_by_agent"
) -> Any:
    turns: list[dict[str, Any]] = [{"role": "agent", "text": "Hello."}, {"role": "user", "text": heard}]
    if reply is None:
        return {"profile": "frontdesk", "turns": turns, "end_reason": end}  # nothing after the question
    turns.append({"role": "agent", "text": reply, "timings": {"turn_latency_ms": 600.0}})
    turns += [
        {"role": "user", "text": "goodbye"},
        {"role": "agent", "text": "Goodbye.", "timings": {"turn_latency_ms": 400.0}},
    ]
    return {"profile": "frontdesk", "turns": turns, "end_reason": end}


EXPECT = expected_reply(builtin_profiles(), "What time do you open?")


def _verdict(events: dict[int, set[str]], records: dict[int, Any], **kw: Any) -> Any:
    defaults: dict[str, Any] = {"cpu_seconds": 1.0, "wall_seconds": 20.0, "sipp_exit": 0, "agent_alive": True}
    return verdict(len(events) or 2, events, records, EXPECT, **{**defaults, **kw})


def test_all_calls_right() -> None:
    report = _verdict({1: {"answered"}, 2: {"answered"}}, {1: _record(), 2: _record()})
    assert report.ok and report.right == 2 and report.agent_hangups == 2
    assert sorted(report.latencies_ms) == [400, 400, 600, 600]
    assert report.cpu_per_call == 0.5
    assert report.to_json()["turn_latency_ms"] == {"count": 4, "p50": 400.0, "p95": 600.0, "max": 600.0}


def test_expected_reply_comes_from_the_records_profile_intent() -> None:
    assert EXPECT({"profile": "frontdesk"}) == REPLY
    assert EXPECT({"profile": "nosuch"}) is None
    assert expected_reply(builtin_profiles(), "is the parking free")({"profile": "frontdesk"}) is None
    assert normalize("Hello, World!") == "hello world"


def test_a_wrong_answer_fails_and_is_named() -> None:
    wrong = _record(heard="where are you", reply="We are at 12 Harbour Street, next to the library.")
    report = _verdict({1: {"answered"}, 2: {"answered"}}, {1: _record(), 2: wrong})
    assert not report.ok and [v.call_number for v in report.wrong] == [2]
    assert any("1 wrong answer(s) (calls 2)" in p and "Harbour" in p for p in report.problems)


def test_answered_calls_without_a_record_fail_the_run() -> None:
    # The agent is down: the dialplan's fallback answers, the agent writes nothing.
    report = _verdict({1: {"answered"}, 2: {"answered"}}, {}, agent_alive=False, cpu_seconds=None)
    assert not report.ok
    assert report.problems[0] == "the agent stopped answering its health check during the run"
    assert any("2 answered call(s) have no record from the agent" in p for p in report.problems)
    assert report.cpu_per_call is None


def test_unanswered_no_reply_and_no_hangup_each_fail() -> None:
    report = _verdict(
        {1: set(), 2: {"answered"}, 3: {"answered"}},
        {2: _record(reply=None), 3: _record(end="hangup_by_caller")},
    )
    text = " | ".join(report.problems)
    assert "1 of 3 calls were not answered" in text
    assert "1 call(s) got no reply to the question (calls 2)" in text
    assert "1 call(s) not hung up by the agent after goodbye (calls 3)" in text
    relaxed = _verdict({1: {"answered"}}, {1: _record(end="hangup_by_caller")}, require_hangup=False)
    assert relaxed.ok


def test_without_turn_texts_answers_are_not_judged_but_the_rest_is() -> None:
    blind = _record()
    for turn in blind["turns"]:
        turn["text"] = None
    report = _verdict({1: {"answered"}}, {1: blind})
    assert report.ok and not report.judged and report.to_json()["right_answers"] is None


def test_sipp_always_gets_a_concurrency_limit() -> None:
    def limit(**kw: Any) -> str:
        cmd = sipp_command(
            "sipp", LoadOptions(Target("100", "127.0.0.1"), **kw), Path("s.xml"), Path("l"), "127.0.0.1", 60
        )
        return cmd[cmd.index("-l") + 1]

    # Left to itself SIPp held 3 calls at once whatever the rate (seen with 4 calls at 1/s).
    assert limit(calls=50) == "50"
    assert limit(calls=50, max_concurrent=10) == "10"


def test_peak_concurrent_from_the_records_times() -> None:
    def call(start: str, end: str) -> dict[str, str]:
        return {"started_at": f"2026-01-01T00:00:{start}.000Z", "ended_at": f"2026-01-01T00:00:{end}.000Z"}

    assert peak_concurrent([]) == 0
    assert peak_concurrent([call("01", "05"), call("02", "06"), call("03", "04")]) == 3
    # One ends as the next starts: never two at once.
    assert peak_concurrent([call("01", "03"), call("03", "05"), {"started_at": None}]) == 1
    # In a report BUSY hand-backs are not held calls.
    held = {n: {**_record(), **call("01", "09")} for n in (1, 2)}
    busy = {3: {**_record(), **call("02", "02"), "end_reason": "busy"}}
    assert _verdict({1: {"answered"}, 2: {"answered"}, 3: {"answered"}}, held | busy).peak_concurrent == 2


def test_a_right_reply_cut_short_by_the_caller_is_not_a_wrong_answer() -> None:
    late = _record(reply="We are open Monday to Friday, from nine")
    late["turns"][2]["interrupted"] = True
    report = _verdict({1: {"answered"}}, {1: late})
    assert [v.answer for v in report.verdicts] == ["cut"] and report.wrong == []
    assert any("1 right answer(s) cut short" in p and "p95 600 ms" in p for p in report.problems)
    # Interrupted, but not the start of the right reply: wrong.
    other = _record(reply="We are at 12 Harbour")
    other["turns"][2]["interrupted"] = True
    assert [v.answer for v in _verdict({1: {"answered"}}, {1: other}).verdicts] == ["wrong"]


def _requests(root: ET.Element) -> list[str]:
    """The first line and CSeq of every message the scenario sends."""
    out = []
    for send in root.iter("send"):
        lines = [ln.strip() for ln in (send.text or "").strip().splitlines()]
        cseq = next((ln for ln in lines if ln.startswith("CSeq:")), "")
        out.append(f"{lines[0].split()[0]} {cseq} {'auth' if '[authentication]' in lines else ''}".strip())
    return out


def test_without_auth_the_invite_goes_once() -> None:
    root = _scenario(CallPlan())
    assert _requests(root) == ["INVITE CSeq: 1 INVITE", "ACK CSeq: 1 ACK", "SIP/2.0", "BYE CSeq: 2 BYE"]
    assert not [r for r in root.iter("recv") if r.attrib.get("auth")]


def test_with_auth_the_challenge_is_acked_and_the_invite_sent_again_with_the_digest() -> None:
    root = _scenario(CallPlan(), auth=True)
    assert _requests(root) == [
        "INVITE CSeq: 1 INVITE",
        "ACK CSeq: 1 ACK",  # the challenge's ACK: the first INVITE's transaction
        "INVITE CSeq: 2 INVITE auth",
        "ACK CSeq: 2 ACK",
        "SIP/2.0",
        "BYE CSeq: 3 BYE",
    ]
    challenges = [r for r in root.iter("recv") if r.attrib.get("auth") == "true"]
    assert [r.attrib["response"] for r in challenges] == ["401", "407"]
    # A 401 jumps past the 407; one of the two must come (the 407 is not optional).
    assert challenges[0].attrib["optional"] == "true" and "optional" not in challenges[1].attrib
    labels = [e.attrib["id"] for e in root.iter("label")]
    assert challenges[0].attrib["next"] in labels
    # The challenge's ACK carries the INVITE's Via (its branch), not a new one.
    ack = list(root.iter("send"))[1].text or ""
    assert "[last_Via:]" in ack and "[branch]" not in ack


def test_sipp_gets_the_credentials_and_the_local_address() -> None:
    def cmd(**kw: Any) -> list[str]:
        opts = LoadOptions(Target("100", "127.0.0.1"), **kw)
        return sipp_command("sipp", opts, Path("s.xml"), Path("l"), "127.0.0.2", 60)

    plain = cmd()
    assert "-au" not in plain and "-ap" not in plain
    assert plain[plain.index("-i") + 1] == plain[plain.index("-mi") + 1] == "127.0.0.2"
    authed = cmd(auth_user="1001", auth_password="s3cret")
    assert authed[authed.index("-au") + 1] == "1001" and authed[authed.index("-ap") + 1] == "s3cret"


def test_a_password_without_a_user_or_a_bad_local_address_is_refused_before_any_call() -> None:
    from ari_agent.config import Settings
    from ari_agent.ops.load import LoadError, run_load

    for kw, said in (
        ({"auth_password": "x"}, "both --auth-user and --auth-password"),
        ({"auth_user": "1001"}, "both --auth-user and --auth-password"),
        ({"local_ip": "my-host"}, "is not an IP address"),
    ):
        with pytest.raises(LoadError, match=said):
            run_load(Settings(), LoadOptions(Target("100", "127.0.0.1"), **kw))
