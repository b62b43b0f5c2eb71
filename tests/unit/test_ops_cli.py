"""ari-agent doctor / calls / calls show, run as an operator would (subprocess), against real servers."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_")}
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "ari_agent", *args],
        capture_output=True,
        text=True,
        env=full,
        cwd=REPO,
        timeout=60,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_doctor_without_asterisk_fails_with_the_fix() -> None:
    port = free_port()
    result = cli("doctor", env={"AGENT_ARI__URL": f"http://127.0.0.1:{port}"})
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    fail = next(i for i, line in enumerate(lines) if "FAIL" in line)
    assert "ari" in lines[fail] and f"127.0.0.1:{port}" in lines[fail]
    assert "fix:" in lines[fail + 1] and "AGENT_ARI__URL" in lines[fail + 1]
    assert sum("skip" in line for line in lines) == 4  # credentials, modules, app, media


def test_doctor_json() -> None:
    result = cli(
        "doctor", "--json", "--extension", "100@x", env={"AGENT_ARI__URL": f"http://127.0.0.1:{free_port()}"}
    )
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert [c["name"] for c in report["checks"]] == [
        "ari",
        "credentials",
        "modules",
        "app",
        "media",
        "extension",
    ]
    assert report["checks"][0]["status"] == "fail" and report["checks"][0]["fix"]


def test_env_file_feeds_settings(tmp_path: Path) -> None:
    env = tmp_path / "site.env"
    env.write_text("AGENT_ARI__PASSWORD=fromfile-secret\nAGENT_HTTP__PORT=4321\nASTERISK_SIP_PORT=5060\n")
    result = cli("--env-file", str(env), "check")
    assert result.returncode == 0, result.stderr
    assert '"port": 4321' in result.stdout and "fromfile-secret" not in result.stdout


def test_calls_show_from_records(tmp_path: Path) -> None:
    record = {
        "call_id": "4f2e9a0b11",
        "channel_id": "chan-1",
        "caller": {"number": "5551234", "name": "Lab"},
        "profile": "frontdesk",
        "started_at": "2026-01-01T10:00:00.000Z",
        "ended_at": "2026-01-01T10:00:09.000Z",
        "end_reason": "hangup_by_agent",
        "turns": [
            {"role": "agent", "text": "Hello, how can I help?", "at": "2026-01-01T10:00:00.500Z"},
            {"role": "user", "text": "what time do you open", "at": "2026-01-01T10:00:03.000Z"},
        ],
        "media": {"received": 420, "lost": 3, "duplicates": 0, "gaps": 2, "mos": 4.3},
    }
    (tmp_path / "calls.jsonl").write_text(
        json.dumps({**record, "call_id": "0000"}) + "\n" + json.dumps(record) + "\n"
    )
    no_store = {"AGENT_STORE__PATH": str(tmp_path / "no-store.db")}
    env = {"AGENT_RECORDS__DIR": str(tmp_path), **no_store}
    shown = cli("calls", "show", "4f2e", env=env)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "call 4f2e9a0b11" in shown.stdout and "hangup_by_agent" in shown.stdout
    assert "heard  what time do you open" in shown.stdout and "agent  Hello, how can I help?" in shown.stdout
    assert "media in    received 420, lost 3, gaps 2, mos 4.3" in shown.stdout
    as_json = cli("calls", "show", "4f2e9a0b11", "--json", env=env)
    assert json.loads(as_json.stdout) == record
    missing = cli("calls", "show", "ffff", env=env)
    assert missing.returncode == 1 and "no ended call" in missing.stdout
    no_dir = cli("calls", "show", "4f2e", env=no_store)
    assert no_dir.returncode == 1 and "AGENT_RECORDS__DIR" in no_dir.stdout
    assert "AGENT_STORE__PATH" in no_dir.stdout


class _Calls(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.headers.get("Authorization") != "Bearer tok":
            self.send_response(401)
            self.end_headers()
            return
        body = json.dumps(
            [{"call_id": "abc", "profile": "frontdesk", "state": "listening", "instance": "a1"}]
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def agent_http() -> Iterator[int]:
    server = HTTPServer(("127.0.0.1", 0), _Calls)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def test_calls_lists_active_calls_with_the_token(agent_http: int) -> None:
    env = {"AGENT_HTTP__PORT": str(agent_http), "AGENT_HTTP_TOKEN": "tok"}
    listed = cli("calls", env=env)
    assert listed.returncode == 0, listed.stdout
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["CALL", "PROFILE", "STATE", "STARTED", "CHANNEL", "AGENT"]
    assert lines[1].split()[:3] == ["abc", "frontdesk", "listening"] and lines[1].split()[-1] == "a1"
    # The pool view sends the token too.
    pooled = cli("calls", "--agents", f"127.0.0.1:{agent_http}", env=env)
    assert pooled.returncode == 0, pooled.stdout
    assert f"agent at http://127.0.0.1:{agent_http}: 1 call" in pooled.stdout
    assert json.loads(cli("calls", "--json", env=env).stdout)[0]["call_id"] == "abc"
    refused = cli("calls", env={"AGENT_HTTP__PORT": str(agent_http)})
    assert refused.returncode == 1 and "AGENT_HTTP__TOKEN" in refused.stdout
    down = cli("calls", env={"AGENT_HTTP__PORT": str(free_port())})
    assert down.returncode == 1 and "is it running" in down.stdout
