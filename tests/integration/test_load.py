"""``ari-agent load`` through the lab's real Asterisk: SIPp callers, the real agent, its records."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

from tests.integration.lab import (
    LOAD_AUTH_IP,
    LOAD_AUTH_PASSWORD,
    LOAD_AUTH_USER,
    REPO,
    AgentFactory,
    AgentProcess,
    Lab,
)

_LOAD = [sys.executable, "-m", "ari_agent.cli", "load"]


def _load(agent_env: dict[str, str], lab: Lab, *args: str, timeout: float = 300) -> tuple[int, str, str]:
    proc = subprocess.run(
        [*_LOAD, f"100@127.0.0.1:{lab.ports.agent_sip}", *args],
        cwd=REPO,
        env={**os.environ, **agent_env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return proc.returncode, proc.stdout, proc.stderr


def _mine(agent: AgentProcess, before: int) -> list[dict[str, Any]]:
    return [r for r in agent.records()[before:] if (r.get("caller") or {}).get("name") == "ari-agent load"]


def test_load_places_five_calls_and_reports_them_from_the_agents_records(
    lab: Lab, agent_factory: AgentFactory
) -> None:
    agent = agent_factory.start()
    env = agent_factory.base_env(agent.records_dir)
    code, out, err = _load(env, lab, "--calls", "5", "--rate", "1", "--json")
    assert code == 0, f"exit {code}\n{out}\n{err}\n{agent.log_tail()}"
    report = json.loads(out.strip().splitlines()[-1])
    assert report["ok"] is True and report["problems"] == []
    assert report["answered"] == 5 and report["recorded"] == 5
    assert report["right_answers"] == 5 and report["wrong_answers"] == []
    assert report["agent_hangups"] == 5
    # Each call: the answer and the goodbye's reply, both timed by the agent.
    assert report["turn_latency_ms"]["count"] == 10
    assert 0 < report["turn_latency_ms"]["p50"] <= report["turn_latency_ms"]["p95"]
    assert report["agent_cpu_seconds_per_call"] > 0
    assert report["sipp_exit"] == 0
    # 1 a second, each call about 20 s: all five were up at once (SIPp's own limit was 3).
    assert report["peak_concurrent"] == 5

    # The report agrees with the agent's own records.
    records = _mine(agent, 0)
    assert len(records) == 5
    assert len({r["caller"]["number"] for r in records}) == 5
    for record in records:
        assert record["end_reason"] == "hangup_by_agent"
        said = [t["text"] for t in record["turns"] if t["role"] == "user"]
        assert said == ["what time do you open", "goodbye"], record["turns"]
        # Streaming callers: RTP never stopped for a second or more.
        assert record["media"].get("gaps", 0) == 0, record["media"]


def test_load_with_callers_silent_between_utterances(lab: Lab, agent_factory: AgentFactory) -> None:
    agent = agent_factory.start()
    env = agent_factory.base_env(agent.records_dir)
    code, out, err = _load(env, lab, "--calls", "2", "--rate", "1", "--silent-between")
    assert code == 0, f"exit {code}\n{out}\n{err}\n{agent.log_tail()}"
    assert "callers silent between utterances" in out
    assert "right answers   2/2" in out and "agent hung up   2/2" in out
    records = _mine(agent, 0)
    assert len(records) == 2
    for record in records:
        said = [t["text"] for t in record["turns"] if t["role"] == "user"]
        assert said == ["what time do you open", "goodbye"], record["turns"]
        # Nothing on the wire before the question and between the utterances: the agent saw the gaps.
        assert record["media"]["gaps"] >= 1, record["media"]


def test_load_fails_with_the_reason_when_the_agent_is_stopped(lab: Lab, agent_factory: AgentFactory) -> None:
    agent = agent_factory.start()
    env = agent_factory.base_env(agent.records_dir)
    assert agent.stop() == 0
    since = time.time()
    code, out, err = _load(env, lab, "--calls", "2", timeout=60)
    assert code == 1, f"exit {code}\n{out}\n{err}"
    assert "load failed: no agent answers at" in out and "is it running?" in out
    # Nothing was placed: no caller reached the dialplan's fallback.
    assert not [e for e in lab.dialplan_events() if e.kind == "stasis-enter" and e.at >= since]


def test_load_fails_with_the_reasons_when_the_agent_dies_mid_run(
    lab: Lab, agent_factory: AgentFactory
) -> None:
    agent = agent_factory.start()
    env = agent_factory.base_env(agent.records_dir)
    load = subprocess.Popen(
        [*_LOAD, f"100@127.0.0.1:{lab.ports.agent_sip}", "--calls", "3", "--rate", "0.5", "--json"],
        cwd=REPO,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while '"call_id"' not in agent.http_get("/calls")[1]:
            assert time.monotonic() < deadline, "the load's first call never reached the agent"
            time.sleep(0.2)
        agent.kill()  # the first call is parked in Stasis; the later ones meet the dialplan's fallback
        out, err = load.communicate(timeout=240)
    finally:
        if load.poll() is None:
            load.kill()
            load.wait()
    assert load.returncode == 1, f"{out}\n{err}"
    report = json.loads(out.strip().splitlines()[-1])
    assert report["ok"] is False and report["recorded"] == 0
    problems = " | ".join(report["problems"])
    assert "the agent stopped answering its health check during the run" in problems
    assert "have no record from the agent" in problems


def test_load_answers_the_digest_challenge_of_an_endpoint_that_requires_auth(
    lab: Lab, agent_factory: AgentFactory
) -> None:
    # The lab's endpoint for 127.0.0.2 challenges every INVITE (asterisk-caller/agent_pjsip_overlay.conf).
    agent = agent_factory.start()
    env = agent_factory.base_env(agent.records_dir)
    since = time.time()
    code, out, err = _load(
        {**env, "LOAD_AUTH_PASSWORD": "wrong-password"},
        lab,
        *("--calls", "1", "--local-ip", LOAD_AUTH_IP, "--auth-user", LOAD_AUTH_USER, "--json"),
        timeout=120,
    )
    # A wrong password: Asterisk refuses the call; nothing reached the agent or the dialplan.
    assert code == 1, f"exit {code}\n{out}\n{err}"
    report = json.loads(out.strip().splitlines()[-1])
    assert report["answered"] == 0, report
    assert not [e for e in lab.dialplan_events() if e.kind == "stasis-enter" and e.at >= since]
    assert not _mine(agent, 0)

    code, out, err = _load(
        {**env, "LOAD_AUTH_PASSWORD": LOAD_AUTH_PASSWORD},
        lab,
        *("--calls", "2", "--rate", "1", "--local-ip", LOAD_AUTH_IP, "--auth-user", LOAD_AUTH_USER, "--json"),
    )
    assert code == 0, f"exit {code}\n{out}\n{err}\n{agent.log_tail()}"
    report = json.loads(out.strip().splitlines()[-1])
    assert report["answered"] == 2 and report["right_answers"] == 2, report
    records = _mine(agent, 0)
    assert len(records) == 2
    # The callers' own numbers reached the agent (the endpoint sets no callerid of its own).
    assert all(r["caller"]["number"].startswith("9") for r in records), [r["caller"] for r in records]
