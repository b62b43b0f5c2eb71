"""Settings: env over file over defaults, and errors that name the field and the fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ari_agent.config import load_settings, masked
from ari_agent.errors import ConfigError
from ari_agent.profiles import builtin_profiles


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("AGENT_"):
            monkeypatch.delenv(key)


def test_defaults() -> None:
    s = load_settings()
    assert s.ari.url == "http://127.0.0.1:8088"
    assert s.ari.app == "ai-agent"
    assert (s.media.port_min, s.media.port_max) == (40000, 40999)
    assert s.media.advertised == "127.0.0.1"
    assert s.media.format == "slin16"
    assert (s.http.host, s.http.port) == ("127.0.0.1", 8090)
    assert s.calls.max_concurrent == 100
    assert s.default_profile == "frontdesk"
    assert s.records.dir is None


def test_env_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text('[ari]\nurl = "http://10.0.0.1:8088"\napp = "from-file"\n[media]\nformat = "ulaw"\n')
    monkeypatch.setenv("AGENT_ARI__APP", "from-env")
    s = load_settings(cfg)
    assert s.ari.url == "http://10.0.0.1:8088"
    assert s.ari.app == "from-env"
    assert s.media.format == "ulaw"


def test_config_from_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text("[calls]\nmax_concurrent = 7\n")
    monkeypatch.setenv("AGENT_CONFIG", str(cfg))
    assert load_settings().calls.max_concurrent == 7


def test_file_profiles_merge_over_builtin(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text(
        '[profiles.frontdesk]\ngreeting = "Hello from the file."\n'
        '[profiles.sales]\ngreeting = "Sales here."\n'
    )
    profiles = load_settings(cfg).all_profiles()
    assert profiles["frontdesk"].greeting == "Hello from the file."
    # Field by field: what the file does not set stays as built in.
    assert [i.name for i in profiles["frontdesk"].intents] == ["hours", "address", "reception", "goodbye"]
    assert profiles["sales"].greeting == "Sales here."
    assert profiles["sales"].intents == []


def test_builtin_frontdesk_is_exact() -> None:
    fd = load_settings().all_profiles()["frontdesk"]
    assert fd.greeting == "Thank you for calling Riverside Dental. How can I help you?"
    replies = {i.name: (i.reply, i.action) for i in fd.intents}
    assert replies["hours"][0] == (
        "We are open Monday to Friday, from nine in the morning to five in the evening."
    )
    assert replies["address"][0] == "We are at 12 Harbour Street, next to the library."
    assert replies["reception"] == ("Let me put you through to reception.", "transfer")
    assert replies["goodbye"] == ("Thank you for calling. Goodbye.", "hangup")
    assert fd.destinations["reception"].extension == "200"
    assert fd.destinations["reception"].context is None
    assert fd.fallback_reply == (
        "Sorry, I can help with opening hours, our address, or booking an appointment."
    )


@pytest.mark.parametrize(
    ("env", "value", "field", "fix"),
    [
        ("AGENT_MEDIA__FORMAT", "opus", "media.format", "AGENT_MEDIA__FORMAT"),
        ("AGENT_MEDIA__PORT_MIN", "80", "media.port_min", "AGENT_MEDIA__PORT_MIN"),
        ("AGENT_ARI__URL", "ftp://x", "ari.url", "AGENT_ARI__URL"),
        ("AGENT_CALLS__MAX_CONCURRENT", "lots", "calls.max_concurrent", "AGENT_CALLS__MAX_CONCURRENT"),
        ("AGENT_DEFAULT_PROFILE", "nosuch", "default_profile", "AGENT_DEFAULT_PROFILE"),
    ],
)
def test_bad_value_names_field_and_fix(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, field: str, fix: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert err.value.field == field
    assert fix in str(err.value)


def test_transfer_to_unknown_destination_is_rejected(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text(
        "[profiles.x]\n[[profiles.x.intents]]\nname='t'\nexamples=['a']\nreply='r'\n"
        "action='transfer'\ndestination='nowhere'\n"
    )
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    assert err.value.field == "profiles.x"
    assert "nowhere" in str(err.value)


def test_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[ari\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(bad)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("[ari]\nusr = 'x'\n")
    with pytest.raises(ConfigError) as err:
        load_settings(unknown)
    assert err.value.field == "ari.usr"


def test_password_is_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_ARI__PASSWORD", "s3cret-value")
    s = load_settings()
    assert s.ari.password.get_secret_value() == "s3cret-value"
    assert "s3cret-value" not in repr(s)
    assert "s3cret-value" not in str(masked(s))


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    full = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_")}
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "ari_agent", *args], capture_output=True, text=True, env=full, timeout=60
    )


def test_cli_check_ok_masks_secret() -> None:
    result = _cli("check", env={"AGENT_ARI__PASSWORD": "topsecret123"})
    assert result.returncode == 0, result.stderr
    assert "topsecret123" not in result.stdout + result.stderr
    assert '"format": "slin16"' in result.stdout


def test_cli_check_bad_config_exits_2_naming_field(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text("[media]\nport_min = 5000\nport_max = 4000\n")
    result = _cli("check", "--config", str(cfg))
    assert result.returncode == 2
    assert "media" in result.stderr and "port_max" in result.stderr
    result = _cli("--config", str(cfg), "check")
    assert result.returncode == 2


def test_cli_check_missing_provider_program(tmp_path: Path) -> None:
    # A profile naming a provider that does not exist is a config error too.
    cfg = tmp_path / "agent.toml"
    cfg.write_text("[profiles.x]\ntts = ['nosuchvoice']\n")
    result = _cli("check", "--config", str(cfg))
    assert result.returncode == 2
    assert "profiles.x.tts" in result.stderr
    assert "nosuchvoice" in result.stderr


SHARED = """
[profiles.shared]
[[profiles.shared.intents]]
name = "hours"
examples = ["what time do you open"]
synonyms = ["Opening hours!"]
reply = "Nine to five."
[[profiles.shared.intents]]
name = "saturday"
examples = ["are you open on saturday", "opening hours"]
reply = "Not on Saturdays."
"""


def test_cli_check_warns_when_two_intents_share_a_key_phrase(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text(SHARED)
    result = _cli("check", "--config", str(cfg))
    assert result.returncode == 0, result.stderr  # a warning, not an error
    assert "warning: profiles.shared: intents hours, saturday share the key phrase 'opening hours'" in (
        result.stderr
    )
    assert result.stderr.count("warning:") == 1  # the built-in frontdesk shares none


def test_synonyms_reach_the_grammar_and_the_dialog() -> None:
    profile = builtin_profiles()["frontdesk"]
    assert profile.shared_phrases("frontdesk") == []
    ctx = profile.provider_context("frontdesk")
    hours = next(i for i in ctx.intents if i.name == "hours")
    assert "opening hours" in hours.synonyms and "opening hours" in hours.phrases
    assert "opening hours" in ctx.hints


def test_media_transport_defaults_to_rtp_and_takes_audiosocket(monkeypatch: pytest.MonkeyPatch) -> None:
    s = load_settings()
    assert s.media.transport == "rtp"
    monkeypatch.setenv("AGENT_MEDIA__TRANSPORT", "AudioSocket")
    monkeypatch.setenv("AGENT_MEDIA__AUDIOSOCKET__LISTEN_PORT", "9100")
    s = load_settings()
    assert s.media.transport == "audiosocket"
    # Asterisk is told the listen address unless another is advertised.
    assert s.media.audiosocket_advertised == ("127.0.0.1", 9100)
    monkeypatch.setenv("AGENT_MEDIA__ADVERTISE_HOST", "10.0.0.5")
    assert load_settings().media.audiosocket_advertised == ("10.0.0.5", 9100)
    monkeypatch.setenv("AGENT_MEDIA__AUDIOSOCKET__ADVERTISE_HOST", "agent.example")
    monkeypatch.setenv("AGENT_MEDIA__AUDIOSOCKET__ADVERTISE_PORT", "19100")
    assert load_settings().media.audiosocket_advertised == ("agent.example", 19100)


def test_media_transport_takes_websocket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_MEDIA__TRANSPORT", " WebSocket ")
    s = load_settings()
    assert s.media.transport == "websocket"
    assert s.media.websocket.connection_type == "server" and s.media.websocket.url is None
    monkeypatch.setenv("AGENT_MEDIA__WEBSOCKET__URL", "https://pbx.example:8089/")
    assert load_settings().media.websocket.url == "wss://pbx.example:8089"


def test_websocket_client_connection_type(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_MEDIA__TRANSPORT", "websocket")
    monkeypatch.setenv("AGENT_MEDIA__WEBSOCKET__CONNECTION_TYPE", " Client ")
    ws = load_settings().media
    assert ws.websocket.connection_type == "client"
    assert ws.websocket.client_name == "ari-agent" and ws.websocket.listen_port == 9093
    assert ws.websocket_listen_host == "127.0.0.1"
    monkeypatch.setenv("AGENT_MEDIA__WEBSOCKET__LISTEN_HOST", "0.0.0.0")
    monkeypatch.setenv("AGENT_MEDIA__WEBSOCKET__CLIENT_NAME", " pbx-media ")
    media = load_settings().media
    assert media.websocket_listen_host == "0.0.0.0" and media.websocket.client_name == "pbx-media"


@pytest.mark.parametrize(
    ("env", "value", "field", "problem", "fix"),
    [
        (
            "AGENT_MEDIA__WEBSOCKET__CONNECTION_TYPE",
            "outbound",
            "media.websocket.connection_type",
            "'client'",
            "AGENT_MEDIA__WEBSOCKET__CONNECTION_TYPE",
        ),
        (
            "AGENT_MEDIA__WEBSOCKET__CLIENT_NAME",
            "ari-agent/v(x=1)",
            "media.websocket.client_name",
            "websocket_client.conf",
            "AGENT_MEDIA__WEBSOCKET__CLIENT_NAME",
        ),
        (
            "AGENT_MEDIA__WEBSOCKET__LISTEN_HOST",
            "agent.example",
            "media.websocket.listen_host",
            "not an IP address",
            "AGENT_MEDIA__WEBSOCKET__LISTEN_HOST",
        ),
        (
            "AGENT_MEDIA__WEBSOCKET__USERNAME",
            "ari-agent",
            "media.websocket.password",
            "go together",
            "AGENT_MEDIA__WEBSOCKET__PASSWORD",
        ),
        (
            "AGENT_MEDIA__WEBSOCKET__LISTEN_PORT",
            "70000",
            "media.websocket.listen_port",
            "65535",
            "AGENT_MEDIA__WEBSOCKET__LISTEN_PORT",
        ),
        (
            "AGENT_MEDIA__WEBSOCKET__URL",
            "ws://user:pw@asterisk:8088",
            "media.websocket.url",
            "credentials",
            "AGENT_MEDIA__WEBSOCKET__URL",
        ),
        (
            "AGENT_MEDIA__WEBSOCKET__URL",
            "ftp://asterisk:8088",
            "media.websocket.url",
            "ws://",
            "AGENT_MEDIA__WEBSOCKET__URL",
        ),
        (
            "AGENT_MEDIA__WEBSOCKET__URL",
            "ws://asterisk:8088/media",
            "media.websocket.url",
            "path",
            "AGENT_MEDIA__WEBSOCKET__URL",
        ),
        (
            "AGENT_MEDIA__WEBSOCKET__URL",
            "ws://asterisk:http",
            "media.websocket.url",
            "port",
            "AGENT_MEDIA__WEBSOCKET__URL",
        ),
        ("AGENT_MEDIA__TRANSPORT", "sctp", "media.transport", "'audiosocket'", "AGENT_MEDIA__TRANSPORT"),
        (
            "AGENT_MEDIA__AUDIOSOCKET__LISTEN_HOST",
            "agent.local",
            "media.audiosocket.listen_host",
            "not an IP address",
            "AGENT_MEDIA__AUDIOSOCKET__LISTEN_HOST",
        ),
        (
            "AGENT_MEDIA__AUDIOSOCKET__LISTEN_PORT",
            "0",
            "media.audiosocket.listen_port",
            "greater than or equal to 1",
            "AGENT_MEDIA__AUDIOSOCKET__LISTEN_PORT",
        ),
    ],
)
def test_bad_transport_settings_name_field_and_fix(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, field: str, problem: str, fix: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert err.value.field == field
    assert problem in err.value.problem
    assert fix in err.value.fix


def test_audiosocket_on_all_addresses_needs_an_advertised_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_MEDIA__TRANSPORT", "audiosocket")
    monkeypatch.setenv("AGENT_MEDIA__AUDIOSOCKET__LISTEN_HOST", "0.0.0.0")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert err.value.field == "media.audiosocket.advertise_host"
    assert "AGENT_MEDIA__AUDIOSOCKET__ADVERTISE_HOST" in err.value.fix
    # RTP does not care where an AudioSocket server would listen.
    monkeypatch.setenv("AGENT_MEDIA__TRANSPORT", "rtp")
    assert load_settings().media.transport == "rtp"
