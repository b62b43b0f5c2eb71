"""The verdict of one call-flow scenario: its steps against what the call did. Pure: no IO.

What the agent said and understood comes from its call record (the same
record ``ari-agent call`` prints): each of its turns is given to the step
whose time window holds the turn's start (from when the caller began that
step to when it began the next; the greeting comes before the first). How
fast the reply came is measured on the caller's side (:class:`CallResult`);
where the call went and the ``AI_AGENT_STATUS`` the dialplan saw come from
Asterisk's events on the agent's side of the call, else from the record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ari_agent.ops.flowspec import Matcher, Scenario, Step
from ari_agent.ops.testcall import CallResult

NO_RECORD = "no call record of the agent (point AGENT_RECORDS__DIR or AGENT_STORE__PATH at the agent's)"
NO_TEXT = "(turn texts not stored: set AGENT_RECORDS__DIR, or AGENT_STORE__TEXT=true on the agent)"


@dataclass(frozen=True)
class Failure:
    check: str  # the expectation: expect_reply, max_reply_ms, ...
    expected: str
    got: str

    def __str__(self) -> str:
        return f"{self.check}: expected {self.expected}, got {self.got}"


@dataclass
class StepResult:
    number: int  # 1-based
    label: str  # say 'what time do you open', dtmf '0', wait 2 s
    ran: bool = False
    heard: str | None = None  # what the agent said in reply (its record's turns in the step's window)
    understood: str | None = None  # what the agent heard the caller say
    latency_ms: float | None = None  # end of the caller's step to the first sound of the reply
    failures: list[Failure] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.ran and not self.failures


@dataclass
class ScenarioResult:
    file: str
    name: str
    target: str
    steps: list[StepResult]
    seconds: float = 0.0
    error: str | None = None  # the call could not be placed or went wrong
    call_id: str | None = None
    end_reason: str | None = None
    status: str | None = None
    went_to: str | None = None
    greeting: str | None = None

    @property
    def passed(self) -> bool:
        return self.error is None and all(s.passed for s in self.steps)

    @property
    def failed_steps(self) -> list[StepResult]:
        return [s for s in self.steps if not s.passed]


def _at(turn: dict[str, Any]) -> datetime | None:
    value = turn.get("at")
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _texts(turns: list[dict[str, Any]]) -> str | None:
    if not turns:
        return ""
    texts = [t.get("text") for t in turns]
    if any(not isinstance(t, str) for t in texts):
        return None  # not stored
    return " ".join(str(t) for t in texts)


def windows(record: dict[str, Any] | None, started: list[datetime]) -> list[list[dict[str, Any]]]:
    """The record's turns by step: index 0 before the first step (the greeting), then one per step."""
    out: list[list[dict[str, Any]]] = [[] for _ in range(len(started) + 1)]
    turns = record.get("turns") if record else None
    for turn in turns if isinstance(turns, list) else []:
        at = _at(turn) if isinstance(turn, dict) else None
        if at is None:
            continue
        slot = sum(1 for begin in started if at >= begin)
        out[slot].append(turn)
    return out


def _quote(text: str | None) -> str:
    return "(nothing)" if text == "" else NO_TEXT if text is None else repr(text)


def _call_checks(step: Step, result: CallResult, scenario: ScenarioResult) -> list[Failure]:
    record = result.record
    failures = []
    if step.expect_end is not None:
        got = repr(scenario.end_reason) if record is not None else NO_RECORD
        if record is None or scenario.end_reason != step.expect_end:
            failures.append(Failure("expect_end", repr(step.expect_end), got))
    if step.expect_status is not None and scenario.status != step.expect_status:
        failures.append(
            Failure(
                "expect_status",
                repr(step.expect_status),
                repr(scenario.status) if scenario.status else "none",
            )
        )
    if step.expect_field is not None:
        name, want = step.expect_field.name, step.expect_field.value
        fields = record.get("fields") if record is not None else None
        value = fields.get(name) if isinstance(fields, dict) else None
        if not isinstance(value, str) or not Matcher(want).equals(value):
            got = NO_RECORD if record is None else repr(value) if value is not None else "not captured"
            failures.append(Failure("expect_field", f"{name} = {want!r}", got))
    if step.expect_destination is not None:
        want = step.expect_destination
        went = scenario.went_to
        exten = went.partition("@")[0] if went else None
        if went is None or want not in (went, exten):
            got = repr(went) if went else f"no transfer (end: {scenario.end_reason or 'unknown'})"
            failures.append(Failure("expect_destination", repr(want), got))
    return failures


def judge(
    file: str,
    scenario: Scenario,
    target: str,
    result: CallResult | None,
    *,
    error: str | None = None,
    seconds: float = 0.0,
) -> ScenarioResult:
    steps = [StepResult(i + 1, step.label) for i, step in enumerate(scenario.step)]
    out = ScenarioResult(file, scenario.name, target, steps, seconds=seconds, error=error)
    if result is None or error is not None:
        for step in steps:
            step.failures.append(Failure("call", "the call to run", error or "no call"))
        return out
    record = result.record
    if record is not None:
        out.call_id = record.get("call_id")
        out.end_reason = record.get("end_reason")
    out.status = result.status_seen or (record.get("status") if record is not None else None)
    out.went_to = result.went_to
    by_step = windows(record, result.step_started)
    out.greeting = _texts([t for t in by_step[0] if t.get("role") == "agent"]) if record else None
    for i, (spec, step) in enumerate(zip(scenario.step, steps, strict=True)):
        if i >= len(result.step_started):
            step.failures.append(Failure("run", "the step to run", "the call had ended before it"))
            continue
        step.ran = True
        turns = by_step[i + 1]
        if record is not None:
            step.heard = _texts([t for t in turns if t.get("role") == "agent"])
            step.understood = _texts([t for t in turns if t.get("role") == "user"])
        latency = result.step_latencies[i] if i < len(result.step_latencies) else None
        step.latency_ms = round(latency * 1000) if latency is not None else None
        if spec.expect_reply is not None:
            if record is None:
                step.failures.append(Failure("expect_reply", repr(spec.expect_reply), NO_RECORD))
            elif step.heard is None or not Matcher(spec.expect_reply).matches(step.heard):
                step.failures.append(Failure("expect_reply", repr(spec.expect_reply), _quote(step.heard)))
        if spec.max_reply_ms is not None:
            if step.latency_ms is None:
                step.failures.append(Failure("max_reply_ms", f"<= {spec.max_reply_ms} ms", "no reply heard"))
            elif step.latency_ms > spec.max_reply_ms:
                step.failures.append(
                    Failure("max_reply_ms", f"<= {spec.max_reply_ms} ms", f"{step.latency_ms:.0f} ms")
                )
        step.failures.extend(_call_checks(spec, result, out))
    return out
