"""Graceful shutdown through a real Asterisk: SIGTERM drains, never hangs up on a caller."""

from __future__ import annotations

import signal
import time

from tests.integration.lab import AgentFactory, Lab


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
