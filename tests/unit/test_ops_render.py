"""asterisk/render.sh: the shipped config rendered with a site's settings, or refused."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ASTERISK = REPO / "asterisk"
SECRETS = {
    "AGENT_ARI__PASSWORD": "ari-Secret_1",
    "SOFTPHONE_1001_PASSWORD": "phone1-pass",
    "SOFTPHONE_1002_PASSWORD": "phone2-pass",
}


def render(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(ASTERISK / "render.sh"), str(ASTERISK), str(tmp_path / "etc")],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        check=False,
    )


def conf(tmp_path: Path, name: str) -> str:
    return (tmp_path / "etc" / name).read_text()


def test_shipped_files_keep_the_lines_the_lab_and_renderer_rewrite() -> None:
    for name, line in (
        ("http.conf", "bindport = 8088"),
        ("http.conf", "bindaddr = 127.0.0.1"),
        ("pjsip.conf", "bind = 127.0.0.1:5060"),
        ("rtp.conf", "rtpstart = 10000"),
        ("rtp.conf", "rtpend = 20000"),
        ("ari.conf", "= @ARI_PASSWORD@"),
    ):
        assert (ASTERISK / name).read_text().count(line) == 1, (name, line)


def test_defaults_render_every_placeholder(tmp_path: Path) -> None:
    result = render(tmp_path, **SECRETS)
    assert result.returncode == 0, result.stderr
    assert "password = ari-Secret_1" in conf(tmp_path, "ari.conf")
    pjsip = conf(tmp_path, "pjsip.conf")
    assert "bind = 0.0.0.0:5060" in pjsip
    assert "password = phone1-pass" in pjsip and "password = phone2-pass" in pjsip
    assert "@SOFTPHONE" not in pjsip and "external_media_address" not in pjsip
    assert "bindaddr = 127.0.0.1" in conf(tmp_path, "http.conf")
    # The softphones' context reaches the agent and reception only.
    extensions = conf(tmp_path, "extensions.conf")
    softphones = extensions.split("[softphones]", 1)[1]
    assert softphones.strip().splitlines()[0] == "include => ai-agent-demo"


def test_site_settings(tmp_path: Path) -> None:
    result = render(
        tmp_path,
        **SECRETS,
        ASTERISK_SIP_BIND="127.0.0.1",
        ASTERISK_SIP_PORT="25060",
        ASTERISK_ARI_PORT="28088",
        ASTERISK_RTP_START="30000",
        ASTERISK_RTP_END="30999",
        ASTERISK_EXTERNAL_ADDRESS="203.0.113.7",
        ASTERISK_LOCAL_NET="192.168.0.0/16,10.0.0.0/8",
        ASTERISK_BASE="/srv/ari-agent/x",
    )
    assert result.returncode == 0, result.stderr
    assert "bind = 127.0.0.1:25060" in conf(tmp_path, "pjsip.conf")
    assert "bindport = 28088" in conf(tmp_path, "http.conf")
    rtp = conf(tmp_path, "rtp.conf")
    assert "rtpstart = 30000" in rtp and "rtpend = 30999" in rtp
    nat = conf(tmp_path, "pjsip.conf").split("[transport-udp](+)", 1)[1]
    assert "external_media_address = 203.0.113.7" in nat
    assert "external_signaling_address = 203.0.113.7" in nat
    assert "local_net = 192.168.0.0/16" in nat and "local_net = 10.0.0.0/8" in nat
    ast = conf(tmp_path, "asterisk.conf")
    assert "astetcdir => /srv/ari-agent/x/etc" in ast and "astspooldir => /srv/ari-agent/x/spool" in ast


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({**SECRETS, "AGENT_ARI__PASSWORD": ""}, "AGENT_ARI__PASSWORD is empty"),
        ({**SECRETS, "SOFTPHONE_1002_PASSWORD": ""}, "SOFTPHONE_1002_PASSWORD is empty"),
        ({**SECRETS, "AGENT_ARI__PASSWORD": "a|b"}, "may hold only"),
        ({**SECRETS, "ASTERISK_SIP_PORT": "50x"}, "ASTERISK_SIP_PORT must be a port"),
        ({**SECRETS, "ASTERISK_RTP_START": "20000", "ASTERISK_RTP_END": "10000"}, "below"),
        ({**SECRETS, "ASTERISK_EXTERNAL_ADDRESS": "1.2.3.4; rm"}, "must be an address"),
        ({**SECRETS, "ASTERISK_AGENT_POOL": "true"}, "ASTERISK_AGENT_POOL must be yes"),
    ],
)
def test_refuses_unsafe_settings(tmp_path: Path, env: dict[str, str], message: str) -> None:
    result = render(tmp_path, **env)
    assert result.returncode == 1
    assert message in result.stderr


def _extension_100(extensions: str) -> list[str]:
    demo = extensions.split("[ai-agent-demo]", 1)[1].split("; Stand-in reception", 1)[0]
    return [line.strip() for line in demo.splitlines() if line.strip() and not line.strip().startswith(";")]


def test_one_agent_by_default_the_pool_with_make_up(tmp_path: Path) -> None:
    assert render(tmp_path, **SECRETS).returncode == 0
    one = conf(tmp_path, "extensions.conf")
    assert "\nAI_AGENT_POOL =\n" in one.split("[globals]", 1)[1]
    result = render(tmp_path, **SECRETS, ASTERISK_AGENT_POOL="yes")
    assert result.returncode == 0, result.stderr
    pooled = conf(tmp_path, "extensions.conf")
    assert "\nAI_AGENT_POOL = yes\n" in pooled.split("[globals]", 1)[1]
    # Only the switch differs: both routes are in the one dialplan.
    assert one.replace("AI_AGENT_POOL =\n", "AI_AGENT_POOL = yes\n") == pooled
    lines = _extension_100(pooled)
    assert lines[1] == 'same => n,GotoIf($["${AI_AGENT_POOL}" = "yes"]?pool)'
    assert lines[2] == "same => n,Stasis(ai-agent,frontdesk)"
    pool = lines[next(i for i, line in enumerate(lines) if "(pool)" in line) :]
    assert pool[0] == "same => n(pool),StasisBroadcast(1000,^ai-agent-pool-,frontdesk)"
    # The agent's own outcome before STASISSTATUS (22.10.1 runs these lines again with
    # TIMEOUT after the agent hung up), then the TIMEOUT and FAILED branches to reception.
    order = [
        next(i for i, line in enumerate(pool) if key in line)
        for key in ('"COMPLETED"]?done', '"TRANSFERRED"]?done', '"TIMEOUT"]?down', '"FAILED"]?down')
    ]
    assert order == sorted(order)
    assert pool[-1] == "same => n(down),Goto(200,1)"
    assert any(line == "same => n(done),Hangup()" for line in lines)
