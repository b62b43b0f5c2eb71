"""Issue 13's findings, each pinned: the HTTP token fails closed, idle HTTP connections are
bounded, records are private files, ``calls show`` is safe on hostile or broken records."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
from pathlib import Path
from typing import Any

import pytest

from ari_agent import app as app_module
from ari_agent.app import AgentApp
from ari_agent.config import load_settings
from ari_agent.conversation.records import CallRecord, RecordWriter, Turn
from ari_agent.errors import ConfigError
from ari_agent.ops import commands
from ari_agent.store import CallStore, StoredCall, StoreError


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def agent_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> int:
    """Settings for an app that serves HTTP on loopback and never reaches an Asterisk."""
    for name in list(os.environ):
        if name.startswith("AGENT_"):
            monkeypatch.delenv(name)
    port = _free_port()
    monkeypatch.setenv("AGENT_HTTP__PORT", str(port))
    monkeypatch.setenv("AGENT_ARI__URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AGENT_STORE__ENABLED", "false")
    monkeypatch.setenv("AGENT_CALLS__DRAIN_TIMEOUT", "0")
    return port


# ---------------------------------------------------------------- 1. HTTP


@pytest.mark.parametrize("content", [None, "", "  \n"])
def test_a_named_token_file_that_is_missing_or_empty_refuses_to_start(
    agent_env: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, content: str | None
) -> None:
    token_file = tmp_path / "token"
    if content is not None:
        token_file.write_text(content)
    monkeypatch.setenv("AGENT_HTTP_TOKEN_FILE", str(token_file))
    with pytest.raises(ConfigError) as caught:
        app_module.make_http_app(app_module.Metrics(), lambda: True, list)
    assert str(token_file) in str(caught.value)


async def test_the_exposure_warning_reaches_the_app(agent_env: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_HTTP__HOST", "0.0.0.0")
    seen: dict[str, Any] = {}

    class Stop(Exception):
        pass

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(app_module, "make_http_app", spy)
    app = AgentApp(load_settings())
    with pytest.raises(Stop):
        await app.start()
    await app.ari.close()
    assert seen.get("host") == "0.0.0.0"


async def _read_until_closed(port: int, send: bytes = b"", wait: float = 10.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        if send:
            writer.write(send)
        return await asyncio.wait_for(reader.read(), wait)
    finally:
        writer.close()


async def test_http_connections_are_capped(agent_env: int) -> None:
    settings = load_settings()
    app = AgentApp(settings)
    await app.start()
    held = []
    try:
        for _ in range(settings.http.max_connections):
            held.append(await asyncio.open_connection("127.0.0.1", agent_env))
        # One more than the cap is closed at once: it never holds a descriptor.
        assert await _read_until_closed(agent_env) == b""
        # The probes still answer once a held connection goes.
        _, writer = held.pop()
        writer.close()
        await asyncio.sleep(0.1)
        answer = await _read_until_closed(
            agent_env, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        assert answer.startswith(b"HTTP/1.1 200")
    finally:
        for _, writer in held:
            writer.close()
        await app.stop()


async def test_idle_http_connections_are_closed(agent_env: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_HTTP__IDLE_TIMEOUT", "0.3")
    app = AgentApp(load_settings())
    await app.start()
    try:
        assert await _read_until_closed(agent_env) == b""
    finally:
        await app.stop()


async def test_a_non_utf8_authorization_header_is_refused_not_a_500(
    agent_env: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENT_HTTP_TOKEN", "tok")
    app = AgentApp(load_settings())
    await app.start()
    try:
        answer = await _read_until_closed(
            agent_env,
            b"GET /calls HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer \xff\xfe\xc3\r\nConnection: close\r\n\r\n",
        )
        assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    finally:
        await app.stop()


async def test_the_token_is_also_agent_http__token(agent_env: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_HTTP__TOKEN", "nested-tok")
    app = AgentApp(load_settings())
    await app.start()
    try:
        request = b"GET /calls HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        refused = await _read_until_closed(agent_env, request + b"\r\n")
        assert refused.startswith(b"HTTP/1.1 401")
        ok = await _read_until_closed(agent_env, request + b"Authorization: Bearer nested-tok\r\n\r\n")
        assert ok.startswith(b"HTTP/1.1 200")
    finally:
        await app.stop()


# ---------------------------------------------------------------- 2. private records


async def test_calls_jsonl_is_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        directory = tmp_path / "records"
        writer = RecordWriter(directory)
        record = CallRecord(
            call_id="c1", channel_id="ch1", caller={"number": "5550100", "name": "A"}, profile="p"
        )
        await writer.write(record)
    finally:
        os.umask(old)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((directory / "calls.jsonl").stat().st_mode) == 0o600


async def test_an_existing_world_readable_calls_jsonl_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / "calls.jsonl"
    path.write_text("")
    path.chmod(0o644)
    writer = RecordWriter(tmp_path)
    await writer.write(CallRecord(call_id="c1", channel_id="ch1", caller={}, profile="p"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# ---------------------------------------------------------------- 3. calls show, store


def _records_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *records: Any) -> None:
    directory = tmp_path / "rec"
    directory.mkdir()
    (directory / "calls.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    for name in list(os.environ):
        if name.startswith("AGENT_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AGENT_RECORDS__DIR", str(directory))
    monkeypatch.setenv("AGENT_STORE__PATH", str(tmp_path / "none.db"))


def test_calls_show_strips_terminal_escapes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _records_dir(
        tmp_path,
        monkeypatch,
        {
            "call_id": "evil1",
            "channel_id": "ch\x1b[31m",
            "caller": {"number": "555\x1b]0;owned\x07", "name": "\x1b[2JEve"},
            "profile": "frontdesk",
            "end_reason": "hangup_by_caller\x9b1m",
            "turns": [{"role": "user", "text": "hi\x1b[8mhidden\rover", "at": "x"}],
            "media": {"lost\x1b[5m": 1},
        },
    )
    assert commands.calls(load_settings(), "show", "evil1", False) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "\x9b" not in out and "\r" not in out
    assert "Eve" in out and "hidden" in out


@pytest.mark.parametrize(
    "record",
    [
        {"call_id": "bad1", "caller": "5550100", "turns": "hello"},
        {
            "call_id": "bad1",
            "caller": None,
            "turns": [1, None, {"role": "agent", "text": 5, "heard_latency": "x"}],
        },
        {
            "call_id": "bad1",
            "turns": [{"role": "user", "text": ["a"], "turn_latency_ms": "slow"}],
            "media": [1],
        },
    ],
)
def test_calls_show_survives_a_malformed_record(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    record: dict[str, Any],
) -> None:
    _records_dir(tmp_path, monkeypatch, record)
    assert commands.calls(load_settings(), "show", "bad1", False) == 0
    assert "call bad1" in capsys.readouterr().out


async def test_the_store_refuses_lone_surrogates_with_its_own_error(tmp_path: Path) -> None:
    record = CallRecord(
        call_id="s1",
        channel_id="ch",
        caller={"number": "555", "name": "\ud800"},
        profile="p",
        started_at="2026-01-02T03:04:05.678Z",
        turns=[Turn(role="user", text="broken \udcff", at="2026-01-02T03:04:06.000Z")],
    )
    async with CallStore(tmp_path / "calls.db", retention_days=None) as store:
        with pytest.raises(StoreError) as caught:
            await store.save_call(StoredCall.from_record(record, store_text=True))
        assert "\ud800" not in str(caught.value)
