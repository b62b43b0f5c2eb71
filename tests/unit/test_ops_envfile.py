"""The stack's .env: parsing, first-run secrets, and never rewriting what the operator wrote."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from ari_agent.ops.envfile import (
    GENERATED_SECRETS,
    ensure_values,
    load_into_environ,
    parse_env,
    read_env,
    secret_values,
)


def test_parse_env_subset_compose_and_shell_agree_on() -> None:
    text = (
        "# comment\n"
        "\n"
        "A=1\n"
        "export B = two words\n"
        "C='quoted # not a comment'\n"
        'D="x"\n'
        "E=value # trailing comment\n"
        "F=\n"
        "A=last wins\n"
    )
    assert parse_env(text) == {
        "A": "last wins",
        "B": "two words",
        "C": "quoted # not a comment",
        "D": "x",
        "E": "value",
        "F": "",
    }


def test_parse_env_names_the_bad_line() -> None:
    with pytest.raises(ValueError, match="line 2"):
        parse_env("A=1\nnot a setting\n")


def test_first_run_creates_private_file_with_every_secret(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    added = ensure_values(env, secret_values())
    assert added == list(GENERATED_SECRETS)
    values = read_env(env)
    secrets = [values[name] for name in GENERATED_SECRETS]
    assert all(len(s) >= 20 for s in secrets)
    assert len(set(secrets)) == len(secrets)
    # URL-safe: asterisk/render.sh accepts them without quoting.
    assert all(
        set(s) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") for s in secrets
    )
    assert stat.S_IMODE(env.stat().st_mode) == 0o600


def test_existing_values_and_comments_survive(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("# mine\nAGENT_ARI__PASSWORD=keepme\nSOFTPHONE_1001_PASSWORD=\nASTERISK_ARI_PORT=9999")
    added = ensure_values(
        env,
        {
            **secret_values(["AGENT_ARI__PASSWORD", "SOFTPHONE_1001_PASSWORD"]),
            "AGENT_ARI__URL": lambda known: f"http://127.0.0.1:{known['ASTERISK_ARI_PORT']}",
        },
    )
    assert added == ["SOFTPHONE_1001_PASSWORD", "AGENT_ARI__URL"]
    text = env.read_text()
    assert text.startswith("# mine\nAGENT_ARI__PASSWORD=keepme\n")
    values = read_env(env)
    assert values["AGENT_ARI__PASSWORD"] == "keepme"
    assert values["SOFTPHONE_1001_PASSWORD"]  # the empty line is overridden by the appended one
    assert values["AGENT_ARI__URL"] == "http://127.0.0.1:9999"
    assert ensure_values(env, secret_values(["AGENT_ARI__PASSWORD", "SOFTPHONE_1001_PASSWORD"])) == []


def test_load_into_environ_never_overrides(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("AGENT_ARI__PASSWORD=fromfile\nAGENT_HTTP__PORT=1234\n")
    environ = {"AGENT_ARI__PASSWORD": "fromenv"}
    assert load_into_environ(env, environ) == ["AGENT_HTTP__PORT"]
    assert environ == {"AGENT_ARI__PASSWORD": "fromenv", "AGENT_HTTP__PORT": "1234"}
