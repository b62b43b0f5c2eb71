"""``ari-agent load``'s verdict: SIPp's view of the calls and the agent's call records in, a report out.

Sans-IO: everything is passed in (SIPp's per-call events, the records, the
agent's CPU seconds), so the rules are unit-tested on plain data. The agent's
own records are the witness of what it heard, said and how fast: SIPp only
knows whether a call was answered and who hung up.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# An answer that needs no record text: "not judged" (the store keeps no texts unless asked).
NOT_JUDGED = "not judged"


def normalize(text: str) -> str:
    """Lower case, words only: replies are compared as words, not punctuation."""
    return " ".join(re.findall(r"[a-z0-9']+", text.lower()))


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class CallVerdict:
    call_number: int
    answered: bool
    record: bool
    # "right", "wrong", "missing" (no reply after the question), "cut" (the right reply, cut short
    # when the caller spoke again: it came later than the caller's timeline allowed) or NOT_JUDGED
    answer: str
    heard: str | None  # what the agent heard the caller ask
    replied: str | None
    agent_hung_up: bool
    end_reason: str | None
    latencies_ms: tuple[float, ...]


@dataclass
class LoadReport:
    planned: int
    verdicts: list[CallVerdict]
    cpu_seconds: float | None = None  # the agent process's CPU over the run
    wall_seconds: float = 0.0
    sipp_exit: int = 0
    problems: list[str] = field(default_factory=list)  # reasons the run failed
    peak_concurrent: int = 0  # calls the agent held at once, from its records' start and end

    @property
    def answered(self) -> int:
        return sum(v.answered for v in self.verdicts)

    @property
    def recorded(self) -> int:
        return sum(v.record for v in self.verdicts)

    @property
    def right(self) -> int:
        return sum(v.answer == "right" for v in self.verdicts)

    @property
    def cut(self) -> int:
        return sum(v.answer == "cut" for v in self.verdicts)

    @property
    def wrong(self) -> list[CallVerdict]:
        return [v for v in self.verdicts if v.answer in ("wrong", "missing")]

    @property
    def judged(self) -> bool:
        return any(v.answer != NOT_JUDGED for v in self.verdicts if v.record)

    @property
    def agent_hangups(self) -> int:
        return sum(v.agent_hung_up for v in self.verdicts)

    @property
    def latencies_ms(self) -> list[float]:
        return [ms for v in self.verdicts for ms in v.latencies_ms]

    @property
    def cpu_per_call(self) -> float | None:
        if self.cpu_seconds is None or not self.recorded:
            return None
        return self.cpu_seconds / self.recorded

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        lat = self.latencies_ms
        return {
            "ok": self.ok,
            "problems": self.problems,
            "planned": self.planned,
            "answered": self.answered,
            "recorded": self.recorded,
            "right_answers": self.right if self.judged else None,
            "cut_short": self.cut,
            "wrong_answers": [
                {"call": v.call_number, "heard": v.heard, "replied": v.replied} for v in self.wrong
            ],
            "agent_hangups": self.agent_hangups,
            "turn_latency_ms": (
                {
                    "count": len(lat),
                    "p50": percentile(lat, 50),
                    "p95": percentile(lat, 95),
                    "max": max(lat),
                }
                if lat
                else None
            ),
            "agent_cpu_seconds": None if self.cpu_seconds is None else round(self.cpu_seconds, 3),
            "agent_cpu_seconds_per_call": (
                None if self.cpu_per_call is None else round(self.cpu_per_call, 4)
            ),
            "peak_concurrent": self.peak_concurrent,
            "wall_seconds": round(self.wall_seconds, 1),
            "sipp_exit": self.sipp_exit,
        }


def _reply_after_question(turns: list[dict[str, Any]]) -> tuple[str | None, dict[str, Any] | None]:
    """(what was heard first, the agent's turn that replied to it, if any)."""
    for i, turn in enumerate(turns):
        if turn.get("role") != "user":
            continue
        reply = next((t for t in turns[i + 1 :] if t.get("role") == "agent"), None)
        return turn.get("text"), reply
    return None, None


def _judge(expected: str | None, reply: dict[str, Any] | None) -> str:
    if reply is None:
        return "missing"
    replied = reply.get("text")
    if expected is None or not isinstance(replied, str):
        return NOT_JUDGED
    want, got = normalize(expected), normalize(replied)
    if want in got:
        return "right"
    # The record keeps what the caller heard: a barged-in reply is its first words only.
    if reply.get("interrupted") and got and want.startswith(got):
        return "cut"
    return "wrong"


def _latencies(turns: list[dict[str, Any]]) -> tuple[float, ...]:
    # Replies only (an agent turn after a caller turn); the greeting has no turn latency.
    out = []
    for turn in turns:
        timings = turn.get("timings")
        if turn.get("role") == "agent" and isinstance(timings, dict):
            value = timings.get("turn_latency_ms")
            if isinstance(value, int | float) and not isinstance(value, bool):
                out.append(float(value))
    return tuple(out)


def judge_call(
    call_number: int,
    events: set[str],
    record: Mapping[str, Any] | None,
    expect: Callable[[Mapping[str, Any]], str | None],
) -> CallVerdict:
    """One call: SIPp's events and the agent's record of it (None: the agent has none)."""
    if record is None:
        return CallVerdict(call_number, "answered" in events, False, "missing", None, None, False, None, ())
    raw_turns = record.get("turns")
    turns = [t for t in raw_turns if isinstance(t, dict)] if isinstance(raw_turns, list) else []
    heard, reply = _reply_after_question(turns)
    answer = _judge(expect(record), reply)
    replied = reply.get("text") if reply is not None else None
    end_reason = record.get("end_reason")
    return CallVerdict(
        call_number,
        "answered" in events,
        True,
        answer,
        heard,
        replied if isinstance(replied, str) else None,
        end_reason == "hangup_by_agent",
        end_reason if isinstance(end_reason, str) else None,
        _latencies(turns),
    )


def verdict(
    planned: int,
    sipp_events: Mapping[int, set[str]],
    records: Mapping[int, Mapping[str, Any]],
    expect: Callable[[Mapping[str, Any]], str | None],
    *,
    cpu_seconds: float | None,
    wall_seconds: float,
    sipp_exit: int,
    agent_alive: bool,
    require_hangup: bool = True,
) -> LoadReport:
    """The report and every reason to fail it, most telling first."""
    verdicts = [
        judge_call(n, sipp_events.get(n, set()), records.get(n), expect) for n in range(1, planned + 1)
    ]
    report = LoadReport(planned, verdicts, cpu_seconds, wall_seconds, sipp_exit)
    # A BUSY call is handed back at admission, never held: it does not count towards the peak.
    report.peak_concurrent = peak_concurrent(r for r in records.values() if r.get("end_reason") != "busy")
    problems = report.problems
    if not agent_alive:
        problems.append("the agent stopped answering its health check during the run")
    if report.answered < planned:
        problems.append(f"{planned - report.answered} of {planned} calls were not answered")
    unrecorded = [v.call_number for v in verdicts if v.answered and not v.record]
    if unrecorded:
        problems.append(
            f"{len(unrecorded)} answered call(s) have no record from the agent (calls {_list(unrecorded)}): "
            "answered by someone else (the dialplan's fallback when the agent is down?), or the agent "
            "writes no records here (AGENT_RECORDS__DIR / AGENT_STORE__PATH must be the agent's)"
        )
    missing = [v.call_number for v in verdicts if v.record and v.answer == "missing"]
    if missing:
        problems.append(f"{len(missing)} call(s) got no reply to the question (calls {_list(missing)})")
    wrong = [v for v in verdicts if v.answer == "wrong"]
    if wrong:
        first = wrong[0]
        problems.append(
            f"{len(wrong)} wrong answer(s) (calls {_list([v.call_number for v in wrong])}); call "
            f"{first.call_number} heard {first.heard!r} and replied {first.replied!r}"
        )
    cut = [v.call_number for v in verdicts if v.answer == "cut"]
    if cut:
        lat = report.latencies_ms
        p95 = f"turn latency p95 {percentile(lat, 95):.0f} ms" if lat else "no turn latency recorded"
        problems.append(
            f"{len(cut)} right answer(s) cut short by the caller's next words (calls {_list(cut)}): "
            f"the reply came too late for the caller's timeline ({p95}), or is longer than --reply-wait"
        )
    if require_hangup:
        kept = [v.call_number for v in verdicts if v.record and not v.agent_hung_up]
        if kept:
            problems.append(
                f"{len(kept)} call(s) not hung up by the agent after goodbye (calls {_list(kept)})"
            )
    if sipp_exit not in (0, 1) and not problems:
        problems.append(f"sipp exited with {sipp_exit}")
    return report


def peak_concurrent(records: Iterable[Mapping[str, Any]]) -> int:
    """The most calls open at one time, from the records' ``started_at`` and ``ended_at``."""
    edges: list[tuple[str, int]] = []
    for record in records:
        start, end = record.get("started_at"), record.get("ended_at")
        if isinstance(start, str) and isinstance(end, str):
            # One timestamp format (UTC, ms, Z): they order as text; an end sorts before a start.
            edges += [(start, 1), (end, -1)]
    peak = current = 0
    for _, step in sorted(edges, key=lambda e: (e[0], e[1])):
        current += step
        peak = max(peak, current)
    return peak


def _list(numbers: Sequence[int], most: int = 10) -> str:
    shown = ", ".join(str(n) for n in numbers[:most])
    return shown + (f" and {len(numbers) - most} more" if len(numbers) > most else "")


def expected_reply(profiles: Mapping[str, Any], question: str) -> Callable[[Mapping[str, Any]], str | None]:
    """The reply a record's profile gives to ``question``: the intent that has it as an example.

    ``profiles`` maps names to profiles with ``intents`` (each ``examples`` and ``reply``).
    None when the profile is unknown here or has no such intent (an LLM profile): pass
    ``--expect``.
    """
    wanted = normalize(question)

    def expect(record: Mapping[str, Any]) -> str | None:
        profile = profiles.get(str(record.get("profile")))
        for intent in getattr(profile, "intents", None) or []:
            if any(normalize(e) == wanted for e in intent.examples):
                return str(intent.reply)
        return None

    return expect
