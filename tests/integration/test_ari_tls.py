"""ARI over TLS through the real Asterisk: https:// and wss:// to its TLS port, with a CA made
for this session (tests/integration/testpki.py); a certificate that does not verify is refused."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from tests.integration.lab import REPO, AgentFactory, Lab

GREETING = "Thank you for calling Riverside Dental. How can I help you?"


def _tls_env(lab: Lab, **extra: str) -> dict[str, str]:
    assert lab.tls is not None
    return {"AGENT_ARI__URL": lab.ari_tls_url, **extra}


def _wait_log(agent_log: object, needle: str, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = agent_log.log_tail(20000)  # type: ignore[attr-defined]
        if needle in text or time.monotonic() > deadline:
            return str(text)
        time.sleep(0.2)


def test_the_agent_answers_a_call_over_tls(lab: Lab, agent_factory: AgentFactory) -> None:
    assert lab.tls is not None
    agent = agent_factory.start(_tls_env(lab, AGENT_ARI__CA_FILE=str(lab.tls.ca)))
    handle = lab.place_call(["goodbye"], via="local")
    lab.wait_call_ended(handle, timeout=90)
    record = agent.record_for(handle.number)
    assert next(t["text"] for t in record["turns"] if t["role"] == "agent") == GREETING
    assert record["end_reason"] == "hangup_by_agent"
    log = agent.log_tail(20000)
    assert f"ARI events connected: wss://127.0.0.1:{lab.ports.ari_tls}/ari/events" in log


def test_a_certificate_that_does_not_verify_is_refused(lab: Lab, agent_factory: AgentFactory) -> None:
    assert lab.tls is not None
    agent = agent_factory.start(_tls_env(lab, AGENT_ARI__CA_FILE=str(lab.tls.other_ca)), wait_ready=False)
    log = _wait_log(agent, "does not verify")
    assert "does not verify" in log and "AGENT_ARI__CA_FILE" in log, log[-3000:]
    assert "ARI events connected" not in log
    status, _ = agent.http_get("/readyz")
    assert status == 503
    # Nothing registered the app over the refused connection.
    apps = [a["name"] for a in lab.ari("GET", "/applications")]
    assert lab.app not in apps


def test_no_verification_only_when_asked_and_said(lab: Lab, agent_factory: AgentFactory) -> None:
    agent = agent_factory.start(_tls_env(lab, AGENT_ARI__TLS_VERIFY="false"))
    log = agent.log_tail(20000)
    assert "without certificate verification" in log
    assert f"ARI events connected: wss://127.0.0.1:{lab.ports.ari_tls}" in log


def _doctor(env: dict[str, str]) -> tuple[int, dict[str, dict[str, str]]]:
    import os

    full = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_")}
    full.update(env)
    result = subprocess.run(
        [sys.executable, "-m", "ari_agent", "doctor", "--json"],
        capture_output=True,
        text=True,
        env=full,
        cwd=REPO,
        timeout=120,
    )
    report = json.loads(result.stdout)
    return result.returncode, {c["name"]: c for c in report["checks"]}


def test_doctor_reports_tls(lab: Lab, agent_factory: AgentFactory, tmp_path: object) -> None:
    assert lab.tls is not None
    base = agent_factory.base_env(agent_factory.workdir / "doctor-records")
    _, checks = _doctor({**base, **_tls_env(lab, AGENT_ARI__CA_FILE=str(lab.tls.ca))})
    assert checks["ari"]["status"] == "ok" and checks["credentials"]["status"] == "ok"
    assert checks["tls"]["status"] == "ok" and str(lab.tls.ca) in checks["tls"]["detail"]
    code, checks = _doctor({**base, **_tls_env(lab, AGENT_ARI__CA_FILE=str(lab.tls.other_ca))})
    assert code == 1
    assert checks["tls"]["status"] == "fail" and "does not verify" in checks["tls"]["detail"]
    assert "AGENT_ARI__CA_FILE" in checks["tls"]["fix"]
    _, checks = _doctor({**base, **_tls_env(lab, AGENT_ARI__TLS_VERIFY="false")})
    assert checks["tls"]["status"] == "warn"
