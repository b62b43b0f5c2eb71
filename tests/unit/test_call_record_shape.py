"""One record shape: calls.jsonl, the call store and ``calls show`` agree on every field of a call."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ari_agent.app import AgentApp
from ari_agent.ari.events import Caller, Channel
from ari_agent.config import load_settings
from ari_agent.conversation.records import TIMINGS, CallRecord, ToolUse, Turn, TurnTimings
from ari_agent.store import CallStore, StoredCall
from ari_agent.store.crypto import new_key, open_record

REPO = Path(__file__).resolve().parents[2]


def full_record() -> CallRecord:
    """A call with every field filled in, as a session leaves it."""
    record = CallRecord(
        call_id="9c0ffee0" + "1" * 24,
        channel_id="1700000000.42",
        caller={"number": "5550100", "name": "Lab Caller"},
        profile="frontdesk",
        started_at="2026-01-02T03:04:05.678Z",
        ended_at="2026-01-02T03:05:06.789Z",
        end_reason="transferred",
        turns=[
            Turn(role="agent", text="Hello, how can I help?", at="2026-01-02T03:04:06.000Z"),
            Turn(
                role="user",
                text="i want to book",
                at="2026-01-02T03:04:09.500Z",
                ended_by="model",
                silence_frames=11,
            ),
            Turn(
                role="agent",
                text="Let me put you through.",
                at="2026-01-02T03:04:10.250Z",
                interrupted=True,
                timings=TurnTimings(**{name: 10.5 + i for i, name in enumerate(TIMINGS)}),
                # Kept without the text opt-in too: they name documents, not what the caller said.
                sources=[("riverside_vet.md", "Parking"), ("riverside_vet.md", "Opening hours")],
                tools=[
                    ToolUse("clinic__book", "ok", '{"day": "Monday"}', "Monday at ten."),
                    ToolUse("clinic__slow", "timeout", '{"q": "x"}'),
                ],
            ),
        ],
        fields={"reason": "booking"},
        variables={"AI_AGENT_RESULT": "transferred_to_reception", "AI_FIELD_REASON": "booking"},
        media={"received": 812, "lost": 3, "jitter_ms": 1.25, "mos": 4.38, "first_seq": None},
    )
    return record


async def test_the_store_gives_back_the_record_field_for_field(tmp_path: Path) -> None:
    record = full_record()
    async with CallStore(tmp_path / "calls.db", retention_days=None) as store:
        await store.save_call(StoredCall.from_record(record, store_text=True))
        stored = await store.get_call(record.call_id)
    assert stored is not None
    assert stored.to_json() == record.to_json()
    assert record.to_json()["status"] == "TRANSFERRED"
    assert record.to_json()["result"] == "transferred_to_reception"


async def test_without_the_text_opt_in_only_the_texts_are_missing(tmp_path: Path) -> None:
    record = full_record()
    async with CallStore(tmp_path / "calls.db", retention_days=None) as store:
        await store.save_call(StoredCall.from_record(record, store_text=False))
        stored = await store.get_call(record.call_id)
    assert stored is not None
    expected = record.to_json()
    for turn in expected["turns"]:
        turn["text"] = None
        # A tool call's arguments and result go with the text; which tool and how it went stay.
        for use in turn.get("tools", []):
            use.pop("arguments", None)
            use.pop("result", None)
    assert stored.to_json() == expected


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_")}
    full.update(env)
    return subprocess.run(
        [sys.executable, "-m", "ari_agent", *args],
        capture_output=True,
        text=True,
        env=full,
        cwd=REPO,
        timeout=60,
    )


KEY = new_key()


@pytest.fixture(params=["plain", "encrypted"])
def app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[AgentApp]:
    for key in list(os.environ):
        if key.startswith("AGENT_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AGENT_RECORDS__DIR", str(tmp_path))
    monkeypatch.setenv("AGENT_STORE__PATH", str(tmp_path / "calls.db"))
    monkeypatch.setenv("AGENT_STORE__TEXT", "true")
    if request.param == "encrypted":  # encryption must not change the shape anyone reads
        monkeypatch.setenv("AGENT_STORE__KEYS", KEY)
    yield AgentApp(load_settings())


def _line(app: AgentApp, tmp_path: Path) -> dict[str, Any]:
    """The records file's line as `calls show` reads it (opened with the agent's keys)."""
    raw: dict[str, Any] = json.loads((tmp_path / "calls.jsonl").read_text(encoding="utf-8"))
    return open_record(raw, app.cipher)


async def test_calls_show_from_the_store_prints_what_calls_jsonl_holds(app: AgentApp, tmp_path: Path) -> None:
    await app._open_store()
    record = full_record()
    try:
        await app.call_ended(record, None)  # the one place a call goes to every sink
    finally:
        await app.stop()
    line = _line(app, tmp_path)
    assert line == record.to_json()
    env = {"AGENT_STORE__PATH": str(tmp_path / "calls.db")}  # no records dir: the store answers
    if app.cipher is not None:
        env["AGENT_STORE__KEYS"] = KEY
    shown = _cli("calls", "show", record.call_id[:8], "--json", env=env)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert json.loads(shown.stdout) == line
    text = _cli("calls", "show", record.call_id[:8], env=env).stdout
    assert "status      TRANSFERRED" in text and "result      transferred_to_reception" in text
    assert "media in    received 812, lost 3, jitter_ms 1.25, mos 4.38" in text
    # The passages and tool calls behind a reply, under it.
    assert "from riverside_vet.md / Parking" in text and "tool clinic__slow: timeout" in text


async def test_a_call_handed_back_without_a_session_reaches_every_sink_once(
    app: AgentApp, tmp_path: Path
) -> None:
    class Ari:
        async def set_variable(self, *a: Any) -> None:
            pass

        async def continue_in_dialplan(self, *a: Any, **k: Any) -> None:
            pass

        async def close(self) -> None:
            pass

    await app._open_store()
    app.ari = Ari()  # type: ignore[assignment]
    channel = Channel("1700000000.7", "PJSIP/x", "Up", Caller("5550111", ""), None)
    app.calls.admit(channel.id, now=0)
    try:
        await app._reject(channel, "-", "busy", "limit")
        assert app.store is not None
        stored = await app.store.call_of_channel(channel.id)
    finally:
        await app.stop()
    lines = (tmp_path / "calls.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1
    assert stored is not None and stored.to_json() == json.loads(lines[0])
    assert app.metrics.registry.get_sample_value("ari_agent_calls_total", {"outcome": "busy"}) == 1
