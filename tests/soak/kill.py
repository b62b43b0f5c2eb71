"""The soak's kill phase: ``kill -9`` of the agent with 20 callers in conversation, then a restart.

The issue's promise (item 2): the restarted agent hands every parked caller
back to the dialplan (``FAILED``) within 10 s, and leaves none of the dead
agent's bridges or ExternalMedia channels behind. The callers are SIP calls
from the lab's caller Asterisk (about 2 % of a core each, where Local
channels cost 7 %), each in the middle of asking questions when the agent dies.

Hand-back times are taken from the dialplan's own ``stasis-return`` events
(millisecond timestamps from the agent's Asterisk), from the moment of the
kill and from the moment the restarted agent answered ``/readyz``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

from ari_agent.ops.loadreport import percentile
from tests.integration.lab import AgentFactory, AgentProcess, DialplanEvent, Lab

HAND_BACK_DEADLINE_S = 10.0
# Long enough that every caller is still asking when the agent dies (the last one is placed
# about 10 s after the first).
PHRASES = ["what time do you open", "where are you located", "what time do you open", "goodbye"]


@dataclasses.dataclass
class KillResult:
    callers: int
    active_at_kill: int
    bridges_at_kill: int
    ready_after_kill_s: float  # kill -> the restarted agent ready
    back_from_kill_s: list[float]  # per caller: kill -> stasis-return
    back_from_ready_s: list[float]  # per caller: restarted agent ready -> stasis-return
    statuses: dict[str, int]
    leftovers: tuple[list[str], list[str]]
    records_failed: int
    problems: list[str]

    def to_json(self) -> dict[str, Any]:
        def stats(values: list[float]) -> dict[str, float] | None:
            if not values:
                return None
            return {
                "p50": round(percentile(values, 50), 2),
                "p95": round(percentile(values, 95), 2),
                "max": round(max(values), 2),
            }

        return {
            "callers": self.callers,
            "active_at_kill": self.active_at_kill,
            "bridges_at_kill": self.bridges_at_kill,
            "ready_after_kill_s": round(self.ready_after_kill_s, 2),
            "back_from_kill_s": stats(self.back_from_kill_s),
            "back_from_ready_s": stats(self.back_from_ready_s),
            "statuses": self.statuses,
            "leftovers": {"bridges": self.leftovers[0], "channels": self.leftovers[1]},
            "records_failed": self.records_failed,
            "problems": self.problems,
        }


def leftovers(lab: Lab) -> tuple[list[str], list[str]]:
    """Bridges and channels of the agent's (ids marked aia-) still on the Asterisk."""
    bridges = [b["id"] for b in lab.ari("GET", "/bridges") if b["id"].startswith("aia-")]
    channels = [c["id"] for c in lab.ari("GET", "/channels") if c["id"].startswith("aia-")]
    return bridges, channels


def _active(agent: AgentProcess) -> int:
    status, body = agent.http_get("/calls")
    return body.count('"call_id"') if status == 200 else 0


def _wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g} s")
        time.sleep(0.2)


def _first(lab: Lab, kind: str) -> dict[str, DialplanEvent]:
    """The first event of ``kind`` per caller number (one read of the event log for all callers)."""
    found: dict[str, DialplanEvent] = {}
    for event in lab.dialplan_events():
        if event.kind == kind:
            found.setdefault(event.number, event)
    return found


def run_kill(lab: Lab, factory: AgentFactory, env: dict[str, str], callers: int = 20) -> KillResult:
    """Start an agent, bring ``callers`` into conversation, kill -9 it, restart, time the hand-backs."""
    records_dir = factory.workdir / f"kill-records-{int(time.time())}"
    env = {**env, "AGENT_CALLS__MAX_CONCURRENT": str(max(callers, 1))}
    first = factory.start(env, records_dir=records_dir)
    handles = []
    for _ in range(callers):
        handles.append(lab.place_call(PHRASES, via="sip", turn_timeout=30, max_duration=180))
        time.sleep(0.5)  # 2 new calls a second: the caller Asterisk's call-file spool keeps up
    problems: list[str] = []
    _wait(lambda: _active(first) >= callers, 60, f"{callers} calls active in the agent")
    _wait(lambda: len(leftovers(lab)[0]) >= callers, 20, f"{callers} bridges of the agent")
    # In conversation: every caller has started asking (the greeting is behind them).
    numbers = {h.number for h in handles}
    _wait(
        lambda: numbers <= set(_first(lab, "caller-say-start")), 60, "every caller asking its first question"
    )
    active, bridges = _active(first), len(leftovers(lab)[0])
    print(f"  [kill] {active} calls active, {bridges} bridges: kill -9", flush=True)
    killed_wall, killed = time.time(), time.monotonic()
    first.kill()
    second = factory.start(env, records_dir=records_dir)
    ready_wall = killed_wall + (time.monotonic() - killed)
    try:
        _wait(
            lambda: numbers <= set(_first(lab, "stasis-return")),
            HAND_BACK_DEADLINE_S + 20,
            "every caller back in the dialplan",
        )
    except TimeoutError as exc:
        problems.append(str(exc))
    returned = _first(lab, "stasis-return")
    events = [returned.get(n) for n in sorted(numbers)]
    back = [e.at - killed_wall for e in events if e is not None]
    from_ready = [e.at - ready_wall for e in events if e is not None]
    statuses: dict[str, int] = {}
    for e in events:
        status = e.fields.get("AI_AGENT_STATUS", "?") if e is not None else "not back"
        statuses[status] = statuses.get(status, 0) + 1
    if statuses.get("FAILED", 0) != callers:
        problems.append(f"hand-back statuses {statuses}, not {callers} FAILED")
    late = [t for t in from_ready if t > HAND_BACK_DEADLINE_S]
    if late:
        problems.append(f"{len(late)} caller(s) back later than {HAND_BACK_DEADLINE_S:g} s after the restart")
    # The dead agent's bridges and media channels: the restart's reconcile removes them.
    time.sleep(1.0)
    left = leftovers(lab)
    if left != ([], []):
        problems.append(f"left on the Asterisk: {len(left[0])} bridges, {len(left[1])} channels")
    failed_records = 0
    for handle in handles:
        try:
            record = second.record_for(handle.number, timeout=10)
        except Exception as exc:  # one missing record is a finding of the phase, not its end
            problems.append(f"call {handle.number}: {exc}"[:200])
            continue
        failed_records += record.get("end_reason") == "failed"
    if failed_records != callers:
        problems.append(f"{failed_records} of {callers} records say failed")
    lab.hangup_all()
    second.stop()
    return KillResult(
        callers,
        active,
        bridges,
        ready_wall - killed_wall,
        back,
        from_ready,
        statuses,
        left,
        failed_records,
        problems,
    )


def print_kill(result: KillResult) -> None:
    j = result.to_json()
    print(
        f"kill -9 with {result.callers} callers ({result.active_at_kill} active, "
        f"{result.bridges_at_kill} bridges): restarted agent ready {j['ready_after_kill_s']} s after the kill"
    )
    for label, key in (("from the kill", "back_from_kill_s"), ("from ready", "back_from_ready_s")):
        s = j[key]
        figures = f"p50 {s['p50']} p95 {s['p95']} max {s['max']} s" if s else "-"
        print(f"  back in the dialplan {label:14} {figures}")
    print(
        f"  statuses {result.statuses}; records failed {result.records_failed}/{result.callers}; "
        f"left over: {len(result.leftovers[0])} bridges, {len(result.leftovers[1])} channels"
    )
    for problem in result.problems:
        print(f"  problem: {problem}")
