"""`check` and `run` agree on every config of tests/unit/config_table.py, run as an operator would."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.config_table import BAD, GOOD, SECRET, Case

REPO = Path(__file__).resolve().parents[2]
# Vendor keys of the developer's shell must not decide a test.
_VENDOR_KEYS = ("OPENAI_API_KEY", "DEEPGRAM_API_KEY", "AZURE_SPEECH_KEY", "AZURE_SPEECH_REGION")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(case: Case, command: str, tmp_path: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    port = str(closed_port())
    toml, env = case.render(port=port, ari_url=f"http://127.0.0.1:{port}")
    full = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_") and k not in _VENDOR_KEYS}
    # `run` must stop at the config: nothing it could reach, nothing it could write.
    full.update({"AGENT_HTTP__PORT": str(closed_port()), "AGENT_STORE__ENABLED": "false"})
    if "[ari]" not in toml:  # the environment would hide the file's URL
        full["AGENT_ARI__URL"] = f"http://127.0.0.1:{port}"
    full.update(env)
    args = [sys.executable, "-m", "ari_agent"]
    if toml:
        config = tmp_path / "agent.toml"
        config.write_text(toml, encoding="utf-8")
        args += ["--config", str(config)]
    return subprocess.run(
        [*args, command], capture_output=True, text=True, env=full, cwd=REPO, timeout=timeout
    )


def assert_refused(result: subprocess.CompletedProcess[str], case: Case) -> None:
    out = result.stdout + result.stderr
    assert "Traceback" not in out, out
    assert SECRET not in out
    assert result.returncode == 2, out
    named = [line for line in result.stderr.splitlines() if line.startswith(f"error: {case.field}")]
    assert named, f"no error naming {case.field}:\n{result.stderr}"
    assert all("Fix:" in line for line in named), named


@pytest.mark.parametrize("case", BAD, ids=[c.id for c in BAD])
def test_check_refuses_bad_config_naming_the_field(case: Case, tmp_path: Path) -> None:
    assert_refused(cli(case, "check", tmp_path), case)


@pytest.mark.parametrize("case", BAD, ids=[c.id for c in BAD])
def test_run_refuses_bad_config_like_check(case: Case, tmp_path: Path) -> None:
    try:
        result = cli(case, "run", tmp_path, timeout=15)
    except subprocess.TimeoutExpired:
        pytest.fail(f"run started with a config check must refuse ({case.id})")
    assert_refused(result, case)


@pytest.mark.parametrize("case", GOOD, ids=[c.id for c in GOOD])
def test_check_passes_good_config(case: Case, tmp_path: Path) -> None:
    result = cli(case, "check", tmp_path)
    assert "Traceback" not in result.stderr
    assert result.returncode == 0, result.stderr
    assert "configuration OK" in result.stderr


def test_table_is_long_enough() -> None:
    # The issue names 4 URL faults, the bind host, os:nope and a misspelt option; plus our own.
    assert len(BAD) >= 20
    assert len({c.id for c in BAD + GOOD}) == len(BAD + GOOD)
