"""The quick faults of the ARI path, through the lab's real Asterisk (issue 12, items 1 and 3).

1. The agent's events WebSocket dropped mid-call (and kept down a while):
   calls in progress keep talking (media needs no ARI), the agent reconnects
   and reconciles, a caller who hung up meanwhile is cleaned up, nothing is
   left behind in Asterisk and nobody is handed back who did not need to be.
3. ARI blackholed (bytes dropped, nothing refused) through a relay: /readyz
   goes 503 within three ping windows and back to 200 once the path returns.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from datetime import datetime

import pytest

from tests.faults.tcprelay import BlackholeRelay
from tests.integration.ariproxy import AriProxy
from tests.integration.lab import AgentFactory, AgentProcess, Lab

# The events WebSocket's keepalive (aiohttp heartbeat of ari/websocket.py): a ping after
# this long without traffic, and the connection is given up when no pong comes in half that.
PING_WINDOW_S = 10.0

HOURS = "We are open Monday to Friday"
ADDRESS = "We are at 12 Harbour Street"


def _wait(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll until ``check()``; the seconds it took. Fails with ``what`` at the deadline."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout:g} s")


def _ready_status(agent: AgentProcess) -> int:
    try:
        return agent.http_get("/readyz", timeout=2)[0]
    except OSError:
        return 0


def _metric(agent: AgentProcess, name: str) -> float:
    _, text = agent.http_get("/metrics")
    match = re.search(rf"(?m)^{re.escape(name)} ([0-9.e+]+)$", text)
    return float(match.group(1)) if match else 0.0


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _agent_channel_of(lab: Lab, number: str) -> str:
    for channel in lab.ari("GET", "/channels") or []:
        if (channel.get("caller") or {}).get("number") == number and channel["name"].startswith("PJSIP/"):
            return str(channel["id"])
    raise AssertionError(f"no channel of caller {number} on the agent's Asterisk")


def test_ws_dropped_mid_call_calls_keep_talking_and_nothing_is_orphaned(
    ari_proxy: AriProxy, lab: Lab, agent_factory: AgentFactory
) -> None:
    agent = agent_factory.start({"AGENT_ARI__URL": ari_proxy.url})
    talkers = [
        lab.place_call(["what time do you open", "where are you located", "goodbye"], via="sip")
        for _ in range(2)
    ]
    # A silent caller who hangs up while the agent cannot hear about it.
    leaver = lab.place_call([], via="sip", tail=120, max_duration=150)
    for handle in talkers:
        lab.wait_dialplan_event(handle.number, "caller-say-start", timeout=45)
    lab.wait_dialplan_event(leaver.number, "caller-heard-start", timeout=45)
    leaver_channel = _agent_channel_of(lab, leaver.number)

    ari_proxy.refuse_websockets()
    cut_at = time.time()
    assert ari_proxy.cut_websockets() == 1
    _wait(lambda: _ready_status(agent) == 503, 5, "/readyz 503 after the WebSocket dropped")
    lab.ari("DELETE", f"/channels/{leaver_channel}")
    time.sleep(8)  # the outage: the talkers' first answers come in it
    assert _ready_status(agent) == 503
    ari_proxy.refuse_websockets(False)
    back_at = time.time()
    _wait(lambda: _ready_status(agent) == 200, 30, "/readyz 200 after the WebSocket came back")
    assert ari_proxy.count("WS-REFUSED", "/ari/events") >= 1  # it did try while refused

    for handle in talkers:
        lab.wait_call_ended(handle, timeout=120)
    leaver_record = agent.record_for(leaver.number, timeout=30)
    assert leaver_record["end_reason"] == "hangup_by_caller"

    for handle in talkers:
        record = agent.record_for(handle.number, timeout=15)
        assert record["end_reason"] == "hangup_by_agent", record  # the goodbye, not a hand-back
        turns = record["turns"]
        # Greeting, then a reply to each question: hours, address, goodbye (the recogniser may
        # hear a paraphrase of the same intent, e.g. "when are you open").
        replies = [t["text"] for t in turns if t["role"] == "agent"]
        assert len(replies) == 4 and len([t for t in turns if t["role"] == "user"]) == 3, turns
        assert HOURS in replies[1] and ADDRESS in replies[2] and "Goodbye" in replies[3], replies
        # The agent kept talking while it had no events: a reply began during the outage.
        assert any(cut_at < _epoch(t["at"]) < back_at for t in turns if t["role"] == "agent"), (
            cut_at,
            back_at,
            turns,
        )
        # Nobody handed back: the dialplan never got these callers again.
        assert not [e for e in lab.dialplan_events(handle.number) if e.kind == "stasis-return"]

    # Reconnected and reconciled, and nothing of the agent's is left in Asterisk.
    _wait(lambda: agent.log_tail(200_000).count("reconcile done") >= 2, 20, "the second reconcile")
    assert _metric(agent, "ari_agent_ari_reconnects_total") == 2
    _wait(lambda: agent.http_get("/calls")[1].strip() == "[]", 20, "no active calls left")
    _wait(lambda: not lab.ari("GET", "/bridges"), 20, "no bridges left in Asterisk")
    _wait(lambda: not lab.ari("GET", "/channels"), 20, "no channels left in Asterisk")
    assert _metric(agent, "ari_agent_errors_total") == 0


@pytest.fixture
def relay(lab: Lab) -> Iterator[BlackholeRelay]:
    relay = BlackholeRelay("127.0.0.1", lab.ports.ari).start()
    try:
        yield relay
    finally:
        relay.restore()
        relay.close()


def test_ari_blackholed_readyz_goes_503_and_back_to_200(
    relay: BlackholeRelay, lab: Lab, agent_factory: AgentFactory
) -> None:
    agent = agent_factory.start({"AGENT_ARI__URL": relay.url})
    assert _ready_status(agent) == 200
    relay.blackhole()
    took = _wait(lambda: _ready_status(agent) == 503, 3 * PING_WINDOW_S, "/readyz 503 with ARI blackholed")
    print(f"/readyz 503 after {took:.1f} s of blackhole")
    # Still blackholed: it must not claim to be ready on a half-open connection.
    time.sleep(3)
    assert _ready_status(agent) == 503
    assert agent.proc.poll() is None  # waits for the path, does not die
    relay.restore()
    took = _wait(lambda: _ready_status(agent) == 200, 60, "/readyz 200 once ARI is reachable again")
    print(f"/readyz 200 {took:.1f} s after the path returned")
    # Ready again on a new events connection, not on the one the blackhole killed.
    assert _metric(agent, "ari_agent_ari_reconnects_total") == 2
    assert relay.connections >= 2
    # And it works: a call is answered through the restored path.
    handle = lab.place_call(["what time do you open"], via="sip")
    lab.wait_call_ended(handle, timeout=90)
    record = agent.record_for(handle.number, timeout=15)
    assert any(HOURS in (t.get("text") or "") for t in record["turns"] if t["role"] == "agent"), record
