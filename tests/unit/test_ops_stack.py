"""make up's stack: configuration from .env and the environment, engine choice, image cache keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from ari_agent.ops.envfile import GENERATED_SECRETS, read_env
from ari_agent.ops.images import inputs_key
from ari_agent.ops.stack import detect_engine, summary
from ari_agent.ops.stackbase import Stack, StackError


def test_first_load_writes_secrets_and_what_the_cli_needs(tmp_path: Path) -> None:
    env = tmp_path / "site.env"
    env.write_text("ASTERISK_ARI_PORT=28088\n")
    stack = Stack.load({"ARI_AGENT_ENV_FILE": str(env), "ARI_AGENT_DATA_DIR": str(tmp_path / "data")})
    written = read_env(env)
    assert all(written[name] for name in GENERATED_SECRETS)
    assert written["AGENT_ARI__URL"] == "http://127.0.0.1:28088"
    assert written["AGENT_RECORDS__DIR"] == str(tmp_path / "data" / "records")
    assert stack.value("ASTERISK_SIP_PORT") == "5060"  # a default
    # A second load generates nothing new.
    Stack.load({"ARI_AGENT_ENV_FILE": str(env), "ARI_AGENT_DATA_DIR": str(tmp_path / "data")})
    assert read_env(env) == written


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    env = tmp_path / "site.env"
    env.write_text("AGENT_HTTP__PORT=1111\n")
    stack = Stack.load({"ARI_AGENT_ENV_FILE": str(env), "AGENT_HTTP__PORT": "2222", "UNRELATED": "x"})
    assert stack.value("AGENT_HTTP__PORT") == "2222"
    assert "UNRELATED" not in stack.values
    assert stack.agent_http() == "http://127.0.0.1:2222"


def test_explicit_engine_and_bad_choice() -> None:
    assert detect_engine("rootfs") == ("rootfs", [])
    with pytest.raises(StackError, match="ARI_AGENT_ENGINE"):
        detect_engine("kubernetes")


def test_image_key_follows_contents_and_arguments(tmp_path: Path) -> None:
    a = tmp_path / "a.conf"
    a.write_text("one")
    first = inputs_key([a], tmp_path, ["BASE_IMAGE=x"])
    assert inputs_key([a], tmp_path, ["BASE_IMAGE=x"]) == first
    assert inputs_key([a], tmp_path, ["BASE_IMAGE=y"]) != first
    a.write_text("two")
    assert inputs_key([a], tmp_path, ["BASE_IMAGE=x"]) != first


def test_summary_says_how_the_stack_runs(tmp_path: Path) -> None:
    env = tmp_path / "site.env"
    stack = Stack.load({"ARI_AGENT_ENV_FILE": str(env), "ARI_AGENT_DATA_DIR": str(tmp_path)})
    text = summary(stack, "rootfs", agent_only=False, seconds=3)
    assert "no container engine" in text and "softphones 1001 and 1002" in text
    assert "call --say" in text and "doctor --extension 100@ai-agent-demo" in text
    assert read_env(env)["SOFTPHONE_1001_PASSWORD"] not in text
