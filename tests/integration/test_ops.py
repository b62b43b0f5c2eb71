"""Operations against a real Asterisk: ``doctor``, ``call``, and ``make up`` without and with containers.

The doctor tests use the lab (tests/integration/lab.py). The stack tests run
``python -m devstack.stack`` (what ``make up`` runs) with their own
``.env`` in a temporary directory and ports of their own (31xxx: the stack
from the root filesystem; 32xxx: podman), one session at a time (a lock
file), and always tear down.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from ari_agent.ops.envfile import read_env
from tests.integration.lab import LOCK_DIR, REPO, AgentFactory, AgentProcess, Lab

GREETING = "Thank you for calling Riverside Dental. How can I help you?"
HOURS = "We are open Monday to Friday, from nine in the morning to five in the evening."
PODMAN_CONF = REPO / "deploy" / "podman" / "containers.conf"


def run_cli(*args: str, env: Mapping[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_")}
    full.update(env)
    return subprocess.run(
        [sys.executable, "-m", "ari_agent", *args],
        capture_output=True,
        text=True,
        env=full,
        cwd=REPO,
        timeout=timeout,
    )


def doctor(env: Mapping[str, str], *extra: str) -> tuple[int, dict[str, list[dict[str, str]]]]:
    result = run_cli("doctor", "--json", *extra, env=env)
    assert result.stdout, result.stderr
    report = json.loads(result.stdout)
    by_name: dict[str, list[dict[str, str]]] = {}
    for check in report["checks"]:
        by_name.setdefault(check["name"], []).append(check)
    assert report["ok"] == (result.returncode == 0)
    return result.returncode, by_name


def statuses(checks: dict[str, list[dict[str, str]]]) -> dict[str, str]:
    return {name: ",".join(c["status"] for c in found) for name, found in checks.items()}


@pytest.fixture
def lab_env(agent_factory: AgentFactory, tmp_path: Path) -> dict[str, str]:
    return agent_factory.base_env(tmp_path / "records")


# ---------------------------------------------------------------- doctor


def test_doctor_passes_with_the_agent_running(lab: Lab, agent: AgentProcess, lab_env: dict[str, str]) -> None:
    code, checks = doctor(lab_env, "--extension", "100@ai-agent-demo")
    assert statuses(checks) == {
        "ari": "ok",
        "tls": "ok",  # plain HTTP, but on loopback
        "credentials": "ok",
        "modules": "ok",
        "app": "ok",
        "media": "ok",
        "extension": "ok",
    }, checks
    assert code == 0
    assert "two-way audio" in checks["media"][0]["detail"]
    # doctor used apps of its own and left nothing in them. (Asterisk drops an app whose
    # WebSocket closed lazily, at the next registration, so its name may still be listed.)
    apps = lab.ari("GET", "/applications")
    assert lab.app in [a["name"] for a in apps]
    for app in apps:
        if app["name"] != lab.app:
            assert app["name"].startswith(f"{lab.app}-doctor-"), app["name"]
            assert app["channel_ids"] == [] and app["bridge_ids"] == [], app


def test_doctor_warns_when_the_agent_is_not_running(lab: Lab, lab_env: dict[str, str]) -> None:
    code, checks = doctor(lab_env)
    assert checks["app"][0]["status"] == "warn"
    assert "not running" in checks["app"][0]["detail"] and "ari-agent run" in checks["app"][0]["fix"]
    assert checks["media"][0]["status"] == "ok"
    assert code == 0


def test_doctor_wrong_password(lab: Lab, lab_env: dict[str, str]) -> None:
    code, checks = doctor({**lab_env, "AGENT_ARI__PASSWORD": "not-the-password"})
    assert code == 1
    assert checks["ari"][0]["status"] == "ok"
    assert checks["credentials"][0]["status"] == "fail"
    assert "AGENT_ARI__PASSWORD" in checks["credentials"][0]["fix"]
    assert checks["media"][0]["status"] == "skip"


def test_doctor_chan_rtp_not_loaded(lab: Lab, lab_env: dict[str, str]) -> None:
    lab.agent.rx("module unload chan_rtp.so")
    try:
        code, checks = doctor(lab_env)
    finally:
        lab.agent.rx("module load chan_rtp.so")
    assert code == 1
    failed = [c for c in checks["modules"] if c["status"] == "fail"]
    assert [c["detail"] for c in failed] == ["module chan_rtp.so is not loaded"]
    assert "module load chan_rtp.so" in failed[0]["fix"]
    assert checks["media"][0]["status"] == "skip"
    # Loaded again: the next test's media works (and doctor says so).
    code, checks = doctor(lab_env)
    assert checks["modules"][0]["status"] == "ok"


def test_doctor_advertised_address_unreachable(lab: Lab, lab_env: dict[str, str]) -> None:
    # 127.0.0.2 is routed on loopback but nothing listens there: Asterisk's RTP goes nowhere.
    code, checks = doctor({**lab_env, "AGENT_MEDIA__ADVERTISE_HOST": "127.0.0.2"})
    assert code == 1
    media = checks["media"][0]
    assert media["status"] == "fail"
    assert "no RTP from Asterisk arrived at 127.0.0.2" in media["detail"]
    assert "AGENT_MEDIA__ADVERTISE_HOST" in media["fix"]


def test_doctor_extension_that_does_not_reach_the_app(
    lab: Lab, agent: AgentProcess, lab_env: dict[str, str]
) -> None:
    code, checks = doctor(lab_env, "--extension", "200@ai-agent-demo")
    assert code == 1
    extension = checks["extension"][0]
    assert extension["status"] == "fail"
    assert "never reached Stasis(ai-agent)" in extension["detail"] and "Playback" in extension["detail"]
    assert "exten => 200,1,Stasis(ai-agent" in extension["fix"]
    code, checks = doctor(lab_env, "--extension", "999@nosuchcontext")
    assert code == 1 and checks["extension"][0]["status"] == "fail"


# ---------------------------------------------------------------- call


def test_call_prints_the_conversation(lab: Lab, agent: AgentProcess, lab_env: dict[str, str]) -> None:
    env = {**lab_env, "AGENT_RECORDS__DIR": str(agent.records_dir)}
    result = run_cli("call", "--say", "what time do you open", "--say", "goodbye", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "dialling 100@ai-agent-demo" in out and "answered" in out
    assert out.count("agent speaking") == 3  # greeting, hours, goodbye
    assert "the agent hung up" in out
    transcript = out.split("Transcript", 1)[1]
    assert f"agent  {GREETING}" in transcript
    assert "heard  what time do you open" in transcript
    assert f"agent  {HOURS}" in transcript
    assert "ended: hangup_by_agent" in transcript


# ---------------------------------------------------------------- make up


@contextlib.contextmanager
def stack_lock() -> Iterator[None]:
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    with open(LOCK_DIR / "ops-stack.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def stack_env(tmp_path: Path, base: int, engine: str, project: str) -> dict[str, str]:
    env_file = tmp_path / "stack.env"
    env_file.write_text(
        "\n".join(
            [
                "ASTERISK_SIP_BIND=127.0.0.1",
                f"ASTERISK_SIP_PORT={base + 60}",
                f"ASTERISK_ARI_PORT={base + 88}",
                f"AGENT_ARI__URL=http://127.0.0.1:{base + 88}",
                f"ASTERISK_RTP_START={base + 100}",
                f"ASTERISK_RTP_END={base + 299}",
                f"AGENT_HTTP__PORT={base + 90}",
                f"AGENT_MEDIA__PORT_MIN={base + 300}",
                f"AGENT_MEDIA__PORT_MAX={base + 399}",
                "ARI_AGENT_AGENTS=2",  # the pool of two agents, whatever the cores
                "",
            ]
        )
    )
    return {
        "ARI_AGENT_ENGINE": engine,
        "ARI_AGENT_ENV_FILE": str(env_file),
        "ARI_AGENT_PROJECT": project,
        "ARI_AGENT_STATE_DIR": str(tmp_path / "state"),
        "ARI_AGENT_DATA_DIR": str(tmp_path / "data"),
    }


def stack(command: str, env: Mapping[str, str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_")}
    full.update(env)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "devstack.stack",
            command,
            *(["--no-follow"] if command == "logs" else []),
        ],
        capture_output=True,
        text=True,
        env=full,
        cwd=REPO,
        timeout=timeout,
    )


def call_through(env: Mapping[str, str], phrases: list[str]) -> dict[str, Any]:
    args = ["--env-file", env["ARI_AGENT_ENV_FILE"], "call", "--json"]
    for phrase in phrases:
        args += ["--say", phrase]
    result = run_cli(*args, env={})
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert lines and lines[-1]["event"] == "summary", result.stdout + result.stderr
    summary: dict[str, Any] = lines[-1]
    summary["events"] = [e["event"] for e in lines[:-1]]
    return summary


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def http_json(url: str, password: str | None = None) -> Any:
    req = urllib.request.Request(url)
    if password is not None:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"ai-agent:{password}".encode()).decode())
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def assert_pool_of_two(env: Mapping[str, str], base: int, out: str) -> None:
    """Two agents behind StasisBroadcast: their apps registered (and no plain ai-agent), each
    ready on its own port, and the bundled dialplan's pool switch on."""
    assert "2 in a pool" in out, out
    password = read_env(Path(env["ARI_AGENT_ENV_FILE"]))["AGENT_ARI__PASSWORD"]
    ari = f"http://127.0.0.1:{base + 88}/ari"
    apps = {a["name"] for a in http_json(f"{ari}/applications", password)}
    assert {"ai-agent-pool-1", "ai-agent-pool-2"} <= apps and "ai-agent" not in apps, apps
    assert http_json(f"{ari}/asterisk/variable?variable=AI_AGENT_POOL", password)["value"] == "yes"
    for port in (base + 90, base + 91):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as resp:
            assert resp.status == 200
    # The pool view make up suggests: both agents answer, each naming itself.
    agents = f"http://127.0.0.1:{base + 90}-{base + 91}"
    assert f"calls --agents {agents}" in out
    listed = run_cli("--env-file", env["ARI_AGENT_ENV_FILE"], "calls", "--json", "--agents", agents, env={})
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert [(a["instance"], a["error"]) for a in json.loads(listed.stdout)["agents"]] == [
        ("1", None),
        ("2", None),
    ]


def test_make_up_without_containers_answers_a_call(tmp_path: Path) -> None:
    env = stack_env(tmp_path, 31000, "rootfs", f"test-{os.getpid()}")
    with stack_lock():
        up = stack("up", env)
        try:
            assert up.returncode == 0, up.stdout + up.stderr
            assert "no container engine" in up.stdout and "local root filesystem" in up.stdout
            assert_pool_of_two(env, 31000, up.stdout)
            summary = call_through(env, ["what time do you open"])
            assert summary["answered"] and summary["heard_turns"] == 2, summary
            assert [t["text"] for t in summary["transcript"]][:3] == [
                GREETING,
                "what time do you open",
                HOURS,
            ]
            assert all(isinstance(x, float) for x in summary["latencies"])
            logs = stack("logs", env)
            assert "Asterisk Ready" in logs.stdout
            # No agent left: nobody claims (StasisBroadcast's TIMEOUT, after 1 s), the caller goes to 200.
            state = tmp_path / "state"
            pids = [int((state / f"agent-{n}.pid").read_text()) for n in (1, 2)]
            for pid in pids:
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 40
            while any(_alive(pid) for pid in pids):
                assert time.monotonic() < deadline, "the agents did not stop"
                time.sleep(0.2)
            call_through(env, [])
            events = [
                line.split("ai-agent-event|", 1)[1].split("|")[2:4]
                for line in (state / "asterisk.log").read_text().splitlines()
                if "ai-agent-event|" in line and "in new stack" not in line
            ]
            returned = [fields for kind, fields in events if kind == "stasis-return"]
            assert returned and returned[-1].split()[0] == "STASISSTATUS=TIMEOUT", events
            assert events[-2][0] == "reception", events
        finally:
            down = stack("down", env)
    assert down.returncode == 0, down.stdout + down.stderr
    for name in ("asterisk", "agent-1", "agent-2"):
        assert not (tmp_path / "state" / f"{name}.pid").exists()
    assert (tmp_path / "state" / "agent-2.log").exists()
    assert "Asterisk Ready" in (tmp_path / "state" / "asterisk.log").read_text()


def test_make_up_with_podman(tmp_path: Path) -> None:
    """Images built (cached by their inputs) on the imported root filesystem; a call through them."""
    assert shutil.which("podman"), "podman is not installed: apt-get install podman runc (make deps)"
    env = stack_env(tmp_path, 32000, "podman", f"ari-agent-test-{os.getpid()}")
    with stack_lock():
        up = stack("up", env)
        try:
            assert up.returncode == 0, up.stdout + up.stderr
            assert "containers (podman)" in up.stdout
            assert_pool_of_two(env, 32000, up.stdout)
            summary = call_through(env, [])
            assert summary["answered"] and summary["heard_turns"] == 1, summary
            assert summary["transcript"][0]["text"] == GREETING
            ps = subprocess.run(
                ["podman", "ps", "--format", "{{.Names}}"],
                capture_output=True,
                text=True,
                env={**os.environ, "CONTAINERS_CONF": str(PODMAN_CONF)},
                check=True,
            )
            # Asterisk and the two agents.
            assert sum(env["ARI_AGENT_PROJECT"] in name for name in ps.stdout.split()) == 3
        finally:
            down = stack("down", env)
    assert down.returncode == 0, down.stdout + down.stderr
    ps = subprocess.run(
        ["podman", "ps", "-a", "--format", "{{.Names}}"],
        capture_output=True,
        text=True,
        env={**os.environ, "CONTAINERS_CONF": str(PODMAN_CONF)},
        check=True,
    )
    assert env["ARI_AGENT_PROJECT"] not in ps.stdout
