"""make up's stack: configuration from .env and the environment, engine choice, image cache keys."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ari_agent.ops.calls import agent_urls
from ari_agent.ops.envfile import GENERATED_SECRETS, read_env
from devstack.images import inputs_key
from devstack.stack import compose_cmd, detect_engine, pool_file, summary, write_pool_file
from devstack.stackbase import COMPOSE_FILE, Stack, StackError, agent_count, pool_members


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


def _stack(tmp_path: Path, **values: str) -> Stack:
    env = tmp_path / "site.env"
    return Stack.load(
        {
            "ARI_AGENT_ENV_FILE": str(env),
            "ARI_AGENT_DATA_DIR": str(tmp_path),
            "ARI_AGENT_STATE_DIR": str(tmp_path / "state"),
            **values,
        }
    )


def test_one_agent_per_core_unless_told(tmp_path: Path) -> None:
    assert agent_count(_stack(tmp_path)) == max(1, os.cpu_count() or 1)
    assert agent_count(_stack(tmp_path, ARI_AGENT_AGENTS="3")) == 3
    for bad in ("0", "x", "65", "-1"):
        with pytest.raises(StackError, match="ARI_AGENT_AGENTS"):
            agent_count(_stack(tmp_path, ARI_AGENT_AGENTS=bad))


def test_pool_members_have_their_own_ids_ports_and_rtp_shares(tmp_path: Path) -> None:
    stack = _stack(tmp_path, ARI_AGENT_AGENTS="3", AGENT_HTTP__PORT="9000")
    members = pool_members(stack)
    assert [m.name for m in members] == ["agent-1", "agent-2", "agent-3"]
    assert [m.env["AGENT_INSTANCE_ID"] for m in members] == ["1", "2", "3"]
    assert all(m.env["AGENT_POOL__ENABLED"] == "true" for m in members)
    assert [m.http_port for m in members] == [9000, 9001, 9002]
    # 40000-40999 in three shares of 333 ports that never overlap.
    ranges = [(int(m.env["AGENT_MEDIA__PORT_MIN"]), int(m.env["AGENT_MEDIA__PORT_MAX"])) for m in members]
    assert ranges == [(40000, 40332), (40333, 40665), (40666, 40998)]


def test_pool_refuses_too_few_rtp_ports(tmp_path: Path) -> None:
    stack = _stack(
        tmp_path, ARI_AGENT_AGENTS="4", AGENT_MEDIA__PORT_MIN="40000", AGENT_MEDIA__PORT_MAX="40019"
    )
    with pytest.raises(StackError, match="4 agents need at least 40 RTP ports"):
        pool_members(stack)


def test_pool_compose_file_adds_the_other_agents(tmp_path: Path) -> None:
    stack = _stack(tmp_path, ARI_AGENT_AGENTS="2")
    assert str(pool_file(stack)) not in compose_cmd("docker", stack)
    path = write_pool_file(stack, pool_members(stack))
    services = json.loads(path.read_text())["services"]
    assert set(services) == {"agent", "agent-2"}
    assert services["agent"]["environment"]["AGENT_INSTANCE_ID"] == "1"
    assert services["agent-2"]["extends"] == {"file": str(COMPOSE_FILE), "service": "agent"}
    assert services["agent-2"]["environment"]["AGENT_HTTP__PORT"] == "8091"
    cmd = compose_cmd("docker", stack)
    assert cmd[cmd.index(str(COMPOSE_FILE)) + 1 :][:2] == ["-f", str(path)]


def test_summary_of_a_pool(tmp_path: Path) -> None:
    stack = _stack(tmp_path, ARI_AGENT_AGENTS="2")
    text = summary(stack, "rootfs", agent_only=False, seconds=3, members=pool_members(stack))
    assert "2 in a pool" in text and "^ai-agent-pool-" in text
    assert "http://127.0.0.1:8090-8091/readyz" in text
    assert "AGENT_POOL__ENABLED=true AGENT_INSTANCE_ID=1" in text and "doctor --extension" in text
    # The pool view it suggests names both agents.
    spec = text.split("calls --agents ", 1)[1].split()[0]
    assert agent_urls(spec) == ["http://127.0.0.1:8090", "http://127.0.0.1:8091"]
