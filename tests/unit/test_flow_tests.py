"""``ari-agent test`` without Asterisk: the TOML format and its errors, the verdicts, the JUnit XML.

The runs through Asterisk are in tests/integration/test_flow_tests.py.
"""

from __future__ import annotations

import tomllib
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path

import junitparser
import pytest

from ari_agent.cli import main
from ari_agent.ops.flowjudge import ScenarioResult, judge, windows
from ari_agent.ops.flowreport import junit, write_junit
from ari_agent.ops.flowrun import example_files, jobs
from ari_agent.ops.flowspec import FlowFileError, Matcher, load, parse
from ari_agent.ops.testcall import CallResult

GOOD = """\
extension = "100@ai-agent-demo"

[[scenario]]
name = "hours"
[[scenario.step]]
say = "what time do you open"
expect_reply = "nine in the morning"
max_reply_ms = 1500
[[scenario.step]]
dtmf = "0"
expect_end = "transferred"
expect_status = "TRANSFERRED"
expect_destination = "200"
expect_field = { name = "reason", value = "booking" }

[[scenario]]
name = "pause"
extension = "300@other"
[[scenario.step]]
wait = 2
"""


def problems(text: str) -> list[str]:
    with pytest.raises(FlowFileError) as caught:
        parse(text, "flows.toml")
    return caught.value.lines()


# ---------------------------------------------------------------- the format


def test_a_good_file_parses_with_each_scenarios_extension() -> None:
    flows = parse(GOOD)
    hours, pause = flows.scenario
    assert [s.action for s in hours.step] == ["say", "dtmf"]
    assert hours.step[1].expect_field is not None and hours.step[1].expect_field.name == "reason"
    assert pause.step[0].wait == 2.0
    assert [j.target for j in jobs([("f", flows)])] == ["100@ai-agent-demo", "300@other"]
    # --extension replaces the file's default, not a scenario's own.
    assert [j.target for j in jobs([("f", flows)], "s@staging")] == ["s@staging", "300@other"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Syntax: tomllib's line.
        (GOOD.replace("[[scenario.step]]\ndtmf", "[[scenario.step\ndtmf"), "flows.toml:9: not valid TOML"),
        # An unknown key: its own line and field.
        (
            GOOD.replace('expect_end = "transferred"', 'expect_ned = "transferred"'),
            "flows.toml:11: scenario[1].step[2].expect_ned: unknown field",
        ),
        # A wrong type, in the second scenario.
        (GOOD.replace("wait = 2", 'wait = "two"'), "flows.toml:20: scenario[2].step[1].wait:"),
        # A key inside an inline table.
        (
            GOOD.replace('value = "booking"', 'valeu = "booking"'),
            "flows.toml:14: scenario[1].step[2].expect_field.valeu: unknown field",
        ),
        # Two actions in one step: the step's header line.
        (
            GOOD.replace('say = "what time do you open"', 'say = "what time do you open"\ndtmf = "1"'),
            "flows.toml:5: scenario[1].step[1]: a step does exactly one of say, audio, dtmf, wait",
        ),
        (GOOD.replace('"300@other"', '"300"'), "flows.toml:18: scenario[2].extension: should be EXT@CONTEXT"),
        (GOOD.replace('expect_end = "transferred"', 'expect_end = "transfered"'), "flows.toml:11:"),
        (
            GOOD.replace('"nine in the morning"', '"/nine (/"'),
            "flows.toml:7: scenario[1].step[1].expect_reply",
        ),
        (
            GOOD.replace('name = "pause"', 'name = "hours"'),
            "flows.toml:17: scenario[2].name: 'hours' is already",
        ),
        (
            GOOD.replace("wait = 2\n", "wait = 2\nmax_reply_ms = 10\n"),
            "flows.toml:19: scenario[2].step[1]: max_reply_ms needs",
        ),
        ('[[scenario]]\nname = "x"\n', "flows.toml:1: scenario[1].step: Field required"),
    ],
)
def test_a_bad_file_names_the_line_and_field(text: str, expected: str) -> None:
    found = problems(text)
    assert any(line.startswith(expected) for line in found), found


def test_a_missing_audio_file_is_named_with_its_line(tmp_path: Path) -> None:
    (tmp_path / "hello.wav").write_bytes(b"")
    path = tmp_path / "flows.toml"
    path.write_text(
        '[[scenario]]\nname = "a"\n[[scenario.step]]\naudio = "hello.wav"\n'
        '[[scenario.step]]\naudio = "nope.wav"\n'
    )
    with pytest.raises(FlowFileError) as caught:
        load(path)
    assert caught.value.lines() == [
        f"{path}:6: scenario[1].step[2].audio: no such file: {tmp_path / 'nope.wav'}"
    ]
    path.write_text('[[scenario]]\nname = "a"\n[[scenario.step]]\naudio = "hello.wav"\n')
    assert load(path).scenario[0].step[0].audio == str(tmp_path / "hello.wav")


def test_the_cli_exits_2_on_a_bad_file_naming_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.toml"
    good.write_text(GOOD)
    bad = tmp_path / "bad.toml"
    bad.write_text(GOOD.replace("max_reply_ms = 1500", "max_reply_ms = -1"))
    assert main(["test", str(good), str(bad)]) == 2
    err = capsys.readouterr().err
    assert (
        f"error: {bad}:8: scenario[1].step[1].max_reply_ms: Input should be greater than or equal to 1" in err
    )
    assert str(good) not in err


def test_matching_replies_and_fields() -> None:
    assert Matcher("NINE in the").matches("We are open from nine in the morning")
    assert not Matcher("ten").matches("nine")
    assert Matcher("/open .* to (friday|sunday)/").matches("Open Monday to Friday")
    assert Matcher("Booking").equals(" booking ") and not Matcher("book").equals("booking")
    assert Matcher("/^book/").equals("booking")


# ---------------------------------------------------------------- the shipped examples


def test_the_examples_ship_with_the_package_and_parse(capsys: pytest.CaptureFixture[str]) -> None:
    files = example_files()
    assert files and all("ari_agent/ops/examples" in str(f) for f in files)
    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    assert "ops/examples/*.toml" in pyproject["tool"]["setuptools"]["package-data"]["ari_agent"]
    for path in files:
        flows = load(path)
        # The examples pass on any machine: no reply-time limits in them.
        assert all(step.max_reply_ms is None for s in flows.scenario for step in s.step)
    assert main(["test", "--examples", "--list"]) == 0
    out = capsys.readouterr().out
    assert str(files[0]) in out and "press 0 for reception" in out


def test_no_file_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["test"]) == 2
    assert "usage: ari-agent test" in capsys.readouterr().out


# ---------------------------------------------------------------- verdicts


T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def call(**record: object) -> CallResult:
    """A call of GOOD's first scenario: greeting, hours question at 4 s, dtmf at 10 s."""
    turns = [
        {"role": "agent", "text": "Hello, how can I help?", "at": at(0.2)},
        {"role": "user", "text": "what time do you open", "at": at(6.0)},
        {"role": "agent", "text": "From nine in the morning.", "at": at(6.1)},
        {"role": "user", "text": "caller pressed 0", "at": at(10.1)},
        {"role": "agent", "text": "Let me put you through.", "at": at(10.1)},
    ]
    full = {
        "call_id": "c1",
        "end_reason": "transferred",
        "status": "TRANSFERRED",
        "turns": turns,
        "fields": {"reason": "booking"},
        **record,
    }
    return CallResult(
        answered=True,
        record=full,
        step_started=[T0 + timedelta(seconds=4), T0 + timedelta(seconds=10)],
        step_latencies=[0.42, 0.2],
        status_seen="TRANSFERRED",
        went_to="200@ai-agent-demo",
        hung_up_by="agent",
    )


def verdict(result: CallResult | None, **kwargs: object) -> ScenarioResult:
    return judge("flows.toml", parse(GOOD).scenario[0], "100@ai-agent-demo", result, **kwargs)  # type: ignore[arg-type]


def test_turns_go_to_the_step_whose_window_holds_them() -> None:
    result = call()
    by_step = windows(result.record, result.step_started)
    assert [[t["text"] for t in w] for w in by_step] == [
        ["Hello, how can I help?"],
        ["what time do you open", "From nine in the morning."],
        ["caller pressed 0", "Let me put you through."],
    ]


def test_a_call_that_did_what_was_expected_passes() -> None:
    out = verdict(call())
    assert out.passed, [str(f) for s in out.steps for f in s.failures]
    assert out.steps[0].heard == "From nine in the morning." and out.steps[0].latency_ms == 420
    assert out.greeting == "Hello, how can I help?"


def test_each_wrong_expectation_says_what_was_expected_and_what_came() -> None:
    result = call(end_reason="hangup_by_agent", fields={"reason": "other"})
    result.step_latencies = [1.6, 0.2]
    result.status_seen = "COMPLETED"
    result.went_to = None
    result.record["turns"][2]["text"] = "We are closed."  # type: ignore[index]
    out = verdict(result)
    assert not out.passed
    failures = {f.check: str(f) for s in out.steps for f in s.failures}
    assert failures == {
        "expect_reply": "expect_reply: expected 'nine in the morning', got 'We are closed.'",
        "max_reply_ms": "max_reply_ms: expected <= 1500 ms, got 1600 ms",
        "expect_end": "expect_end: expected 'transferred', got 'hangup_by_agent'",
        "expect_status": "expect_status: expected 'TRANSFERRED', got 'COMPLETED'",
        "expect_field": "expect_field: expected reason = 'booking', got 'other'",
        "expect_destination": "expect_destination: expected '200', got no transfer (end: hangup_by_agent)",
    }


def test_steps_after_the_end_of_the_call_fail_and_texts_not_stored_are_said() -> None:
    result = call()
    result.step_started = result.step_started[:1]
    for turn in result.record["turns"]:  # type: ignore[index]
        turn["text"] = None
    out = verdict(result)
    assert [s.passed for s in out.steps] == [False, False]
    assert "turn texts not stored" in str(out.steps[0].failures[0])
    assert str(out.steps[1].failures[0]) == "run: expected the step to run, got the call had ended before it"


def test_a_call_that_could_not_be_placed_fails_every_step() -> None:
    out = verdict(None, error="100@ai-agent-demo did not answer within 20 s")
    assert not out.passed and all(not s.ran for s in out.steps)


# ---------------------------------------------------------------- JUnit XML


def test_junit_xml_parses_back_with_failures_errors_and_odd_characters(tmp_path: Path) -> None:
    passed = verdict(call(), seconds=12.5)
    failing = call()
    failing.record["turns"][2]["text"] = "We are closed.\x1b[2J\x00"  # type: ignore[index]
    failed = judge("flows.toml", parse(GOOD).scenario[0].model_copy(update={"name": "odd"}), "t", failing)
    errored = judge("other.toml", parse(GOOD).scenario[1], "t", None, error="no answer")
    path = tmp_path / "out" / "junit.xml"
    write_junit([passed, failed, errored], path)

    root = ET.parse(path).getroot()
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("3", "1", "1")
    assert [s.get("name") for s in root.iter("testsuite")] == ["flows.toml", "other.toml"]

    xml = junitparser.JUnitXml.fromfile(str(path))
    cases = {case.name: case for suite in xml for case in suite}
    assert cases["hours"].is_passed and cases["hours"].time == 12.5
    failure = cases["odd"].result[0]
    assert isinstance(failure, junitparser.Failure)
    assert failure.message.startswith("step 1 (say 'what time do you open'): expect_reply: expected")
    assert "\\x1b" in failure.message  # escaped, never raw in the XML
    assert isinstance(cases["pause"].result[0], junitparser.Error)
    assert "agent said: From nine in the morning." in (cases["hours"].system_out or "")
    assert junit([]).getroot().get("tests") == "0"


def test_the_example_in_the_operators_guide_parses() -> None:
    guide = (Path(__file__).resolve().parents[2] / "docs" / "operators.md").read_text()
    section = guide.split("## Call-flow tests in CI", 1)[1]
    example = section.split("```toml\n", 1)[1].split("```", 1)[0]
    flows = parse(example)
    assert [s.name for s in flows.scenario] == [
        "opening hours, then goodbye",
        "press 0 for reception",
        "a callback number",
    ]
