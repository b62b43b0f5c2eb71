"""deploy/docker-compose.yml validates on a fresh clone (no .env) and stays on the host network."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "deploy" / "docker-compose.yml"


def test_every_variable_has_a_default() -> None:
    text = COMPOSE.read_text()
    variables = re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)([^}]*)\}", text)
    assert variables
    without = [name for name, rest in variables if not rest.startswith((":-", "-"))]
    assert without == []


def test_podman_compose_config_validates_without_env(tmp_path: Path) -> None:
    cmd = [shutil.which("podman-compose")] if shutil.which("podman-compose") else None
    if cmd is None:
        import importlib.util

        assert importlib.util.find_spec("podman_compose") is not None, "install podman-compose (pip)"
        cmd = [sys.executable, "-m", "podman_compose"]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    for profile in ([], ["--profile", "monitoring"]):
        result = subprocess.run(
            [*cmd, "-f", str(COMPOSE), *profile, "config"],  # type: ignore[list-item]
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert "network_mode: host" in result.stdout
    assert "prometheus" in result.stdout and "grafana" in result.stdout


def test_dashboard_is_grafana_json_on_the_provisioned_datasource() -> None:
    dashboard = json.loads((REPO / "deploy/grafana/dashboards/ari-agent.json").read_text())
    assert dashboard["uid"] == "ari-agent"
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for metric in (
        "ari_agent_active_calls",
        "ari_agent_calls_total",
        "ari_agent_turn_latency_seconds_bucket",
        "ari_agent_barge_ins_total",
        "ari_agent_provider_errors_total",
        "ari_agent_ari_reconnects_total",
    ):
        assert any(metric in e for e in exprs), metric
    datasource = (REPO / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    assert "uid: ari-agent-prometheus" in datasource
    assert all(
        p["datasource"]["uid"] == "ari-agent-prometheus" for p in dashboard["panels"] if "datasource" in p
    )


def test_pool_file_over_the_compose_file_validates(tmp_path: Path) -> None:
    """make up's pool file (agent-2 extends agent) merges with deploy/docker-compose.yml."""
    from devstack.stack import podman_compose_cmd, write_pool_file
    from devstack.stackbase import Stack, pool_members

    cmd = podman_compose_cmd()
    assert cmd is not None, "install podman-compose (pip)"
    stack = Stack.load(
        {
            "ARI_AGENT_ENV_FILE": str(tmp_path / "site.env"),
            "ARI_AGENT_DATA_DIR": str(tmp_path),
            "ARI_AGENT_STATE_DIR": str(tmp_path / "state"),
            "ARI_AGENT_AGENTS": "2",
        }
    )
    path = write_pool_file(stack, pool_members(stack))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    result = subprocess.run(
        [*cmd, "-f", str(COMPOSE), "-f", str(path), "config"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    services = result.stdout.split("services:", 1)[1]
    assert "\n  agent-2:" in services and "\n  agent:" in services
    assert "AGENT_INSTANCE_ID: '2'" in services and "AGENT_INSTANCE_ID: '1'" in services
