"""A flood of new calls while others talk (issue 12, item 6), through the lab's real Asterisk.

Three times the call limit arrives in five seconds while two callers are in
conversation: the talking calls keep getting their answers and end with their
goodbye, the flood fills only the free places, and every other new call goes
straight back to the dialplan ``BUSY``. The agent never holds more calls than
its limit.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from ari_agent.ops.loadreport import peak_concurrent
from tests.integration.lab import AgentFactory, AgentProcess, Lab

LIMIT = 4
HOURS = "We are open Monday to Friday"
ADDRESS = "We are at 12 Harbour Street"


def _wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:g} s"
        time.sleep(0.2)


def _active(agent: AgentProcess) -> int:
    return agent.http_get("/calls")[1].count('"call_id"')


def _busy_count(agent: AgentProcess) -> float:
    _, text = agent.http_get("/metrics")
    match = re.search(r'(?m)^ari_agent_calls_total\{outcome="busy"\} ([0-9.e+]+)$', text)
    return float(match.group(1)) if match else 0.0


def test_a_flood_of_three_times_the_limit_gets_busy_while_talking_calls_go_on(
    lab: Lab, agent_factory: AgentFactory
) -> None:
    agent = agent_factory.start({"AGENT_CALLS__MAX_CONCURRENT": str(LIMIT)})
    talkers = [
        lab.place_call(["what time do you open", "where are you located", "goodbye"], via="sip")
        for _ in range(2)
    ]
    for handle in talkers:
        lab.wait_dialplan_event(handle.number, "caller-say-start", timeout=45)

    # 3x the limit in 5 s: silent callers that stay, so the places they take stay taken.
    flood = []
    started = time.monotonic()
    for _ in range(3 * LIMIT):
        flood.append(lab.place_call([], via="sip", listen_first=False, tail=25, max_duration=40))
        time.sleep(5 / (3 * LIMIT))
    assert time.monotonic() - started < 6
    admitted = LIMIT - len(talkers)

    def busy() -> list[str]:
        return [
            h.number
            for h in flood
            for e in lab.dialplan_events(h.number)
            if e.kind == "stasis-return" and e.fields.get("AI_AGENT_STATUS") == "BUSY"
        ]

    _wait(lambda: len(busy()) >= 3 * LIMIT - admitted, 45, "the flood's calls over the limit back BUSY")
    assert _active(agent) == LIMIT
    # Nothing else went back: the admitted flood callers and the talkers are still with the agent.
    returned = [
        e for h in flood + talkers for e in lab.dialplan_events(h.number) if e.kind == "stasis-return"
    ]
    assert len(returned) == 3 * LIMIT - admitted, [e.raw for e in returned]

    for handle in talkers:
        lab.wait_call_ended(handle, timeout=120)
        record = agent.record_for(handle.number, timeout=15)
        assert record["end_reason"] == "hangup_by_agent", record
        replies = [t["text"] for t in record["turns"] if t["role"] == "agent"]
        assert HOURS in replies[1] and ADDRESS in replies[2] and "Goodbye" in replies[3], replies
        latencies = [t["timings"]["turn_latency_ms"] for t in record["turns"] if "timings" in t]
        print(f"talker {handle.number}: turn latency under the flood {latencies} ms")
        assert not [e for e in lab.dialplan_events(handle.number) if e.kind == "stasis-return"]

    assert _busy_count(agent) == 3 * LIMIT - admitted
    lab.hangup_all()
    _wait(lambda: _active(agent) == 0, 30, "the admitted flood calls to end")
    held = [r for r in agent.records() if r["end_reason"] != "busy"]
    assert len(held) == LIMIT
    assert peak_concurrent(held) <= LIMIT
