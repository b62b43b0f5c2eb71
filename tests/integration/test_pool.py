"""A pool of agents behind StasisBroadcast on the lab's real Asterisk (issue 14).

The lab's dialplan context ``lab-pool`` (asterisk-caller/agent_overlay.conf)
runs ``StasisBroadcast(1500,^ai-agent-pool-,<profile>)`` and logs
``stasis-return`` (STASISSTATUS, AI_AGENT_STATUS), then ``pool-timeout`` or
``pool-failed`` for those branches. Agents run with ``AGENT_POOL__ENABLED``:
each registers ``ai-agent-pool-<instance>`` and claims the calls offered.
"""

from __future__ import annotations

import re
import signal
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

from tests.integration.ariproxy import AriProxy
from tests.integration.lab import AgentFactory, AgentProcess, CallHandle, Lab, metric

POOL_CONTEXT = "lab-pool"
GREETING = "Thank you for calling Riverside Dental. How can I help you?"
HOURS = "We are open Monday to Friday, from nine in the morning to five in the evening."
GOODBYE = "Thank you for calling. Goodbye."


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _pool_agent(
    factory: AgentFactory, instance: str, slot: int, env: dict[str, str] | None = None
) -> AgentProcess:
    """A pool agent ``ai-agent-pool-<instance>`` with its own HTTP port and a quarter of the media ports."""
    low, high = factory.lab.ports.agent_media
    quarter = (high - low + 1) // 4
    return factory.start(
        {
            "AGENT_POOL__ENABLED": "true",
            "AGENT_INSTANCE_ID": instance,
            "AGENT_HTTP__PORT": str(_free_port()),
            "AGENT_MEDIA__PORT_MIN": str(low + slot * quarter),
            "AGENT_MEDIA__PORT_MAX": str(low + (slot + 1) * quarter - 1),
            **(env or {}),
        }
    )


def _pool_call(lab: Lab, phrases: Sequence[str] = (), **kwargs: Any) -> CallHandle:
    return lab.place_call(phrases, via="local", context=POOL_CONTEXT, extension="frontdesk", **kwargs)


def _active(agent: AgentProcess) -> int:
    status, body = agent.http_get("/calls")
    assert status == 200, body
    return body.count('"call_id"')


def _wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)


def _has_record(agent: AgentProcess, number: str) -> bool:
    return any((r.get("caller") or {}).get("number") == number for r in agent.records())


def _agent_lines(record: dict[str, Any]) -> list[str]:
    return [t["text"] for t in record["turns"] if t["role"] == "agent"]


def _returns(lab: Lab, number: str) -> list[dict[str, str]]:
    return [e.fields for e in lab.dialplan_events(number) if e.kind == "stasis-return"]


def test_two_agents_share_ten_calls_each_answered(lab: Lab, agent_factory: AgentFactory) -> None:
    env = {"AGENT_CALLS__MAX_CONCURRENT": "8"}
    agents = [_pool_agent(agent_factory, "a", 0, env), _pool_agent(agent_factory, "b", 1, env)]
    handles = []
    for _ in range(10):
        handles.append(_pool_call(lab, ["what time do you open", "goodbye"]))
        time.sleep(0.4)  # calls overlap: each claim sees the load the earlier ones left
    for handle in handles:
        lab.wait_call_ended(handle, timeout=150)
    counts = {}
    for agent, instance in zip(agents, "ab", strict=True):
        mine = [h for h in handles if _has_record(agent, h.number)]
        counts[agent.http_port] = len(mine)
        # Metrics and records per agent: each names itself (ari-agent calls shows the agent of a call).
        labels = {"app": f"ai-agent-pool-{instance}", "instance": instance, "pool": "true"}
        assert metric(agent, "ari_agent_instance_info", **labels) == 1
        for handle in mine:
            record = agent.record_for(handle.number)
            assert record["instance"] == instance, record
            assert record["end_reason"] == "hangup_by_agent", record
            assert _agent_lines(record) == [GREETING, HOURS, GOODBYE], record
    print(f"calls per agent: {sorted(counts.values())}")
    assert sum(counts.values()) == 10  # each call answered by exactly one agent
    assert min(counts.values()) >= 3
    # Each agent was offered all ten: what it did not win it lost or skipped. (Asterisk 22.10.1
    # broadcasts a call once more after it hangs up inside StasisBroadcast: more offers than calls.)
    for agent in agents:
        won = metric(agent, "ari_agent_pool_claims_total", outcome="won")
        lost = metric(agent, "ari_agent_pool_claims_total", outcome="lost")
        skipped = metric(agent, "ari_agent_pool_claims_total", outcome="skipped")
        assert won == counts[agent.http_port] and won + lost + skipped >= 10


def test_an_agent_at_its_limit_claims_nothing_and_with_both_full_the_dialplan_times_out(
    lab: Lab, agent_factory: AgentFactory
) -> None:
    env = {"AGENT_CALLS__MAX_CONCURRENT": "1"}
    first = _pool_agent(agent_factory, "a", 0, env)
    one = _pool_call(lab, listen_first=False, tail=25, max_duration=60)
    _wait(lambda: _active(first) == 1, 20, "the first call at the only agent")
    second = _pool_agent(agent_factory, "b", 1, env)
    two = _pool_call(lab, listen_first=False, tail=25, max_duration=60)
    _wait(lambda: _active(second) == 1, 20, "the second call at the other agent (the first is full)")
    assert _active(first) == 1
    three = _pool_call(lab, listen_first=False, tail=1)
    lab.wait_dialplan_event(three.number, "pool-timeout", timeout=20)
    # Nobody claimed it: the broadcast itself timed out, before any hang-up (after a hang-up
    # inside StasisBroadcast, Asterisk 22.10.1 runs it once more, and that one times out too).
    kinds = [e.kind for e in lab.dialplan_events(three.number)]
    assert kinds.index("stasis-return") < kinds.index("pool-timeout")
    assert "hangup" not in kinds[: kinds.index("pool-timeout")], kinds
    assert _returns(lab, three.number)[0]["STASISSTATUS"] == "TIMEOUT"
    for agent in (first, second):
        assert metric(agent, "ari_agent_pool_claims_total", outcome="skipped") >= 1
        assert not _has_record(agent, three.number)
    assert not _returns(lab, one.number) and not _returns(lab, two.number)  # both still talking


def test_a_draining_agent_claims_nothing_and_its_calls_go_to_the_other(
    lab: Lab, agent_factory: AgentFactory
) -> None:
    env = {"AGENT_CALLS__MAX_CONCURRENT": "5", "AGENT_CALLS__DRAIN_TIMEOUT": "30"}
    agents = [_pool_agent(agent_factory, "a", 0, env), _pool_agent(agent_factory, "b", 1, env)]
    first = _pool_call(lab, listen_first=False, tail=12, max_duration=60)
    _wait(lambda: sum(map(_active, agents)) == 1, 20, "the first call to be answered")
    draining = next(a for a in agents if _active(a) == 1)
    other = next(a for a in agents if a is not draining)
    draining.proc.send_signal(signal.SIGTERM)
    _wait(lambda: draining.http_get("/readyz")[0] == 503, 10, "the drain to begin")
    later = [_pool_call(lab, listen_first=False, tail=1) for _ in range(3)]
    for handle in later:
        lab.wait_call_ended(handle, timeout=60)
        assert _has_record(other, handle.number) or other.record_for(handle.number)
        assert not _has_record(draining, handle.number)
        assert "DRAINING" not in [r.get("AI_AGENT_STATUS") for r in _returns(lab, handle.number)]
    assert metric(draining, "ari_agent_pool_claims_total", outcome="skipped") >= 3
    # The draining agent's own call ended as its caller chose; then the agent stopped by itself.
    lab.wait_call_ended(first, timeout=60)
    assert draining.proc.wait(timeout=30) == 0
    assert draining.record_for(first.number)["end_reason"] == "hangup_by_caller"


def test_a_killed_agents_callers_go_back_to_the_dialplan_and_the_survivor_takes_new_calls(
    lab: Lab, agent_factory: AgentFactory
) -> None:
    env = {"AGENT_CALLS__MAX_CONCURRENT": "8"}
    agents = [_pool_agent(agent_factory, "a", 0, env), _pool_agent(agent_factory, "b", 1, env)]
    handles = [_pool_call(lab, listen_first=False, tail=40, max_duration=90) for _ in range(4)]
    _wait(lambda: sum(map(_active, agents)) == 4, 30, "four calls answered")
    victim = max(agents, key=_active)
    survivor = next(a for a in agents if a is not victim)
    victims = [h for h in handles if h.number in _numbers_at(lab, victim)]
    assert victims
    killed_at = time.monotonic()
    victim.kill()

    def all_back() -> bool:
        return all(_returns(lab, h.number) for h in victims)

    _wait(all_back, 10, "the killed agent's callers back in the dialplan")
    print(f"parked callers back after {time.monotonic() - killed_at:.1f} s")
    for handle in victims:
        assert _returns(lab, handle.number)[0] == {"STASISSTATUS": "SUCCESS", "AI_AGENT_STATUS": "FAILED"}
        assert survivor.record_for(handle.number)["end_reason"] == "failed"
    assert metric(survivor, "ari_agent_pool_takeovers_total") == len(victims)
    # The survivor's own calls go on; new calls are all its own.
    assert _active(survivor) == 4 - len(victims)
    news = [_pool_call(lab, ["goodbye"]) for _ in range(2)]
    for handle in news:
        lab.wait_call_ended(handle, timeout=60)
        assert survivor.record_for(handle.number)["end_reason"] == "hangup_by_agent"
    # Stop the survivor (its callers go back DRAINING): nothing may be left behind.
    assert survivor.stop() == 0

    def nothing_left() -> bool:
        return not lab.ari("GET", "/channels") and not lab.ari("GET", "/bridges")

    _wait(nothing_left, 15, "no channels and bridges left on Asterisk")


def _numbers_at(lab: Lab, agent: AgentProcess) -> set[str]:
    """Caller numbers of the agent's active calls (/calls has channel ids; Asterisk maps them)."""
    status, body = agent.http_get("/calls")
    assert status == 200
    ids = set(re.findall(r'"channel_id": ?"([^"]+)"', body))
    return {c["caller"]["number"] for c in lab.ari("GET", "/channels") if c["id"] in ids}


def test_a_peer_whose_ari_link_is_cut_for_two_seconds_keeps_its_calls(
    ari_proxy: AriProxy, lab: Lab, agent_factory: AgentFactory
) -> None:
    cut = _pool_agent(agent_factory, "a", 0, {"AGENT_ARI__URL": ari_proxy.url})
    handle = _pool_call(lab, listen_first=False, tail=16, max_duration=60)
    _wait(lambda: _active(cut) == 1, 20, "the call at the agent behind the proxy")
    watcher = _pool_agent(agent_factory, "b", 1)
    time.sleep(2)  # the watcher has seen the peer beat
    assert ari_proxy.block(2.0) == 1
    # Longer than the dead_after grace (5 s) after the cut: a peer wrongly judged dead would
    # have had its caller handed back by now.
    time.sleep(8)
    assert _returns(lab, handle.number) == []
    assert _active(cut) == 1
    assert metric(watcher, "ari_agent_pool_takeovers_total") == 0
    assert metric(cut, "ari_agent_ari_reconnects_total") >= 2  # it did lose the socket
    lab.wait_call_ended(handle, timeout=60)
    assert cut.record_for(handle.number)["end_reason"] == "hangup_by_caller"


def test_without_stasis_broadcast_a_fallback_chain_reaches_the_second_agent(
    lab: Lab, agent_factory: AgentFactory
) -> None:
    # Only b runs: Stasis(ai-agent-pool-a) fails at once, Stasis(ai-agent-pool-b) answers.
    b = _pool_agent(agent_factory, "b", 1)
    handle = lab.place_call(["goodbye"], via="local", context="lab-chain", extension="frontdesk")
    lab.wait_call_ended(handle, timeout=60)
    assert _returns(lab, handle.number)[0]["STASISSTATUS"] == "FAILED"
    record = b.record_for(handle.number)
    assert record["end_reason"] == "hangup_by_agent"
    assert _agent_lines(record) == [GREETING, GOODBYE]


def test_doctor_accepts_an_extension_that_reaches_the_pool(lab: Lab, agent_factory: AgentFactory) -> None:
    from tests.integration.test_ops import doctor

    port = _free_port()
    _pool_agent(agent_factory, "a", 0, {"AGENT_HTTP__PORT": str(port)})
    env = {
        **agent_factory.base_env(agent_factory.workdir / "doctor-records"),
        "AGENT_POOL__ENABLED": "true",
        "AGENT_INSTANCE_ID": "a",
        "AGENT_HTTP__PORT": str(port),
    }
    low, high = lab.ports.agent_media
    env["AGENT_MEDIA__PORT_MIN"], env["AGENT_MEDIA__PORT_MAX"] = str(low + (high - low) // 2), str(high)
    code, checks = doctor(env, "--extension", "frontdesk@lab-pool")
    assert checks["app"][0]["status"] == "ok" and "ai-agent-pool-a" in checks["app"][0]["detail"]
    extension = checks["extension"][0]
    assert extension["status"] == "ok", extension
    assert "StasisBroadcast" in extension["detail"] and "ai-agent-pool-a" in extension["detail"]
    # Plain Stasis(ai-agent) does not reach a pool agent: the fix names the pool dialplan.
    code, checks = doctor(env, "--extension", "100@ai-agent-demo")
    assert code == 1
    extension = checks["extension"][0]
    assert extension["status"] == "fail"
    assert "StasisBroadcast(1000,^ai-agent-pool-,<profile>)" in extension["fix"]
