"""Graceful shutdown through a real Asterisk: SIGTERM drains, never hangs up on a caller."""

from __future__ import annotations

import signal
import socket
import time
from typing import Any

from tests.integration.ariproxy import AriProxy
from tests.integration.lab import AgentFactory, AgentProcess, Lab, metric


def test_sigterm_drains_active_calls_back_to_the_dialplan(lab: Lab, agent_factory: AgentFactory) -> None:
    agent = agent_factory.start({"AGENT_CALLS__DRAIN_TIMEOUT": "4"})
    # Silent callers stay in the conversation until the drain timeout.
    handles = [lab.place_call([], tail=60, max_duration=90) for _ in range(3)]
    deadline = time.monotonic() + 30
    body = ""
    while time.monotonic() < deadline:
        status, body = agent.http_get("/calls")
        if status == 200 and body.count('"call_id"') == 3:
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"the calls never became active: {body}")

    sent_at, sent_epoch = time.monotonic(), time.time()
    agent.proc.send_signal(signal.SIGTERM)
    not_ready_after = None
    while time.monotonic() - sent_at < 5:
        try:
            status, _ = agent.http_get("/readyz", timeout=1)
        except OSError:
            break
        if status == 503:
            not_ready_after = time.monotonic() - sent_at
            break
        time.sleep(0.005)
    assert not_ready_after is not None, "/readyz never went 503"
    print(f"/readyz 503 after {not_ready_after * 1000:.0f} ms")
    assert not_ready_after < 0.5

    # A new call while draining goes straight back.
    late = lab.place_call([], listen_first=False, tail=1)
    late_event = lab.wait_dialplan_event(late.number, "stasis-return", timeout=20)
    assert late_event.fields["AI_AGENT_STATUS"] == "DRAINING"

    for handle in handles:
        event = lab.wait_dialplan_event(handle.number, "stasis-return", timeout=20)
        assert event.fields["AI_AGENT_STATUS"] == "DRAINING"
        # Handed back, not hung up: the caller was still there when the dialplan took over.
        assert not any(e.kind == "caller-end" and e.at < event.at for e in lab.dialplan_events(handle.number))
        assert event.at - sent_epoch > 3.5  # the calls had their drain time first
    assert agent.proc.wait(timeout=30) == 0
    for handle in handles:
        assert agent.record_for(handle.number)["end_reason"] == "drained"


def test_sighup_reloads_profiles_without_dropping_calls(lab: Lab, agent_factory: AgentFactory) -> None:
    config = agent_factory.workdir / "reload.toml"
    config.write_text('[profiles.frontdesk]\ngreeting = "Hello from the first file."\n', encoding="utf-8")
    agent = agent_factory.start({"AGENT_CONFIG": str(config)})
    first = lab.place_call([], tail=12)
    lab.wait_dialplan_event(first.number, "caller-heard-start", timeout=30)
    config.write_text('[profiles.frontdesk]\ngreeting = "Hello from the second file."\n', encoding="utf-8")
    agent.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while "profiles reloaded" not in agent.log_path.read_text(encoding="utf-8"):
        assert time.monotonic() < deadline, "no reload logged"
        time.sleep(0.1)
    second = lab.place_call([], tail=2)
    lab.wait_call_ended(second, timeout=60)
    lab.wait_call_ended(first, timeout=60)
    one, two = agent.record_for(first.number), agent.record_for(second.number)
    assert one["turns"][0]["text"] == "Hello from the first file."
    assert one["end_reason"] == "hangup_by_caller"  # the caller left; the reload did not drop it
    assert two["turns"][0]["text"] == "Hello from the second file."
    assert agent.proc.poll() is None


# ---------------------------------------------------------------- races, made deterministic by the ARI proxy
# (the proxy fixture comes before agent_factory: it must outlive the agents, which drain through it)

GREETING = "Thank you for calling Riverside Dental. How can I help you?"
HOURS = "We are open Monday to Friday, from nine in the morning to five in the evening."
GOODBYE = "Thank you for calling. Goodbye."


def _agent_lines(record: dict[str, Any]) -> list[str]:
    return [t["text"] for t in record["turns"] if t["role"] == "agent"]


def _wait_until_not_ready(agent: AgentProcess, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if agent.http_get("/readyz", timeout=1)[0] == 503:
                return
        except OSError:
            return  # HTTP already down: draining for sure
        time.sleep(0.02)
    raise AssertionError("/readyz never went 503")


def test_reconcile_keeps_a_call_admitted_after_its_channel_snapshot(
    ari_proxy: AriProxy, lab: Lab, agent_factory: AgentFactory
) -> None:
    # The reconcile on connect lists the channels; Asterisk answers at once, the agent sees the
    # answer only after a call has arrived, been admitted and greeted.
    snapshot = ari_proxy.hold("GET", r"^/ari/channels$", limit=1)
    agent = agent_factory.start({"AGENT_ARI__URL": ari_proxy.url})
    snapshot.wait_seen()
    handle = lab.place_call(["what time do you open", "goodbye"], via="local")
    lab.wait_dialplan_event(handle.number, "caller-heard-start", timeout=30)
    snapshot.release()
    lab.wait_call_ended(handle, timeout=120)
    record = agent.record_for(handle.number)
    assert record["end_reason"] == "hangup_by_agent"
    assert _agent_lines(record) == [GREETING, HOURS, GOODBYE]


def test_sigterm_hands_back_a_caller_still_in_admission(
    ari_proxy: AriProxy, lab: Lab, agent_factory: AgentFactory
) -> None:
    # Extension 102 names its profile in a channel variable: admission looks it up, and the
    # proxy keeps the answer until the drain has begun (and found no session).
    lookup = ari_proxy.hold("GET", r"/variable\?variable=AI_AGENT_PROFILE", limit=1)
    agent = agent_factory.start({"AGENT_ARI__URL": ari_proxy.url, "AGENT_CALLS__DRAIN_TIMEOUT": "10"})
    handle = lab.place_call([], via="local", extension="102", listen_first=False, tail=30, max_duration=60)
    lookup.wait_seen()
    agent.proc.send_signal(signal.SIGTERM)
    _wait_until_not_ready(agent)
    lookup.release()
    event = lab.wait_dialplan_event(handle.number, "stasis-return", timeout=20)
    assert event.fields["AI_AGENT_STATUS"] == "DRAINING"
    assert agent.proc.wait(timeout=30) == 0
    assert agent.record_for(handle.number)["end_reason"] == "drained"


def test_reconnects_within_the_grace_hand_a_parked_caller_back_once(
    ari_proxy: AriProxy, lab: Lab, agent_factory: AgentFactory
) -> None:
    records_dir = agent_factory.workdir / "parked-records"
    first = agent_factory.start(records_dir=records_dir)
    handle = lab.place_call([], via="local", tail=60, max_duration=90)
    lab.wait_dialplan_event(handle.number, "caller-heard-start", timeout=30)
    first.kill()  # the caller stays parked in the Stasis app
    # Both reconciles (connect, then reconnect) read the app's channels before either hands
    # the parked caller back.
    lookups = ari_proxy.hold("GET", r"^/ari/applications/", limit=2)
    second = agent_factory.start({"AGENT_ARI__URL": ari_proxy.url}, records_dir=records_dir)
    lookups.wait_seen(1)
    assert ari_proxy.cut_websockets() == 1
    lookups.wait_seen(2)
    lookups.release()
    event = lab.wait_dialplan_event(handle.number, "stasis-return", timeout=20)
    assert event.fields["AI_AGENT_STATUS"] == "FAILED"

    def mine() -> list[dict[str, Any]]:
        return [r for r in second.records() if (r.get("caller") or {}).get("number") == handle.number]

    # Either both reconciles say they are done, or a second record shows up (the bug).
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if second.log_path.read_text(encoding="utf-8").count("reconcile done") >= 2 or len(mine()) >= 2:
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"the reconciles never finished; records: {mine()}")
    assert [r["end_reason"] for r in mine()] == ["failed"]
    assert metric(second, "ari_agent_calls_total", outcome="failed") == 1


def test_a_second_agent_with_the_same_app_name_stops_the_first_loudly(
    lab: Lab, agent_factory: AgentFactory
) -> None:
    first = agent_factory.start()
    p = lab.ports
    second = agent_factory.start(
        {
            "AGENT_HTTP__PORT": str(_free_port()),
            "AGENT_INSTANCE_ID": "second",
            "AGENT_MEDIA__PORT_MIN": str(p.agent_media[0] + 500),
            "AGENT_MEDIA__PORT_MAX": str(p.agent_media[1]),
        }
    )
    # The replaced agent gets no more events for the app: it must not linger as if it worked.
    code = first.proc.wait(timeout=30)
    assert code != 0
    log_text = first.log_path.read_text(encoding="utf-8")
    assert "ApplicationReplaced" in log_text and lab.app in log_text
    assert second.proc.poll() is None
    assert second.http_get("/readyz")[0] == 200


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
