"""``calls erase`` forgets a caller in the store and the records file; operator actions are audited."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path

import pytest

from ari_agent.app import AgentApp
from ari_agent.cli import main
from ari_agent.config import load_settings
from ari_agent.conversation.records import CallRecord, RecordWriter, Turn
from ari_agent.ops.audit import AuditLog
from ari_agent.store import CallStore, CallSummary, StoredCall

ALICE, BOB = "5550100", "5550199"


def _record(n: int, number: str) -> CallRecord:
    return CallRecord(
        call_id=f"call{n:02d}" + "0" * 24,
        channel_id=f"ch{n}",
        caller={"number": number, "name": f"Name-{number}"},
        profile="frontdesk",
        started_at=f"2026-01-02T03:04:{n:02d}.000Z",
        ended_at=f"2026-01-02T03:05:{n:02d}.000Z",
        end_reason="hangup_by_caller",
        turns=[Turn(role="user", text=f"my secret is words-{number}", at=f"2026-01-02T03:04:{n:02d}.500Z")],
        fields={"reason": f"reason-{number}"},
    )


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith("AGENT_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AGENT_STORE__PATH", str(tmp_path / "state" / "calls.db"))
    monkeypatch.setenv("AGENT_RECORDS__DIR", str(tmp_path / "records"))
    return tmp_path


async def _fill(data: Path) -> None:
    records = [_record(1, ALICE), _record(2, BOB), _record(3, ALICE)]
    writer = RecordWriter(data / "records")
    async with CallStore(data / "state" / "calls.db", retention_days=None) as store:
        for record in records:
            await writer.write(record)
            await store.save_call(StoredCall.from_record(record, store_text=True))


async def _listed(data: Path) -> list[CallSummary]:
    async with CallStore(data / "state" / "calls.db", retention_days=None) as store:
        return await store.list_calls()


def _bytes_of(directory: Path) -> bytes:
    return b"".join(p.read_bytes() for p in directory.rglob("*") if p.is_file() and "audit" not in p.name)


def test_erase_by_caller_removes_every_trace(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    asyncio.run(_fill(data))
    assert ALICE.encode() in _bytes_of(data)
    assert main(["calls", "erase", "--caller", ALICE]) == 0
    out = capsys.readouterr().out
    assert "erased 2 call(s)" in out and "call store   2" in out and "records file 2" in out
    # Neither the number nor the words are left in any file: db, WAL, records.
    left = _bytes_of(data)
    assert ALICE.encode() not in left and f"words-{ALICE}".encode() not in left
    assert f"words-{BOB}".encode() in left
    assert [c.caller_number for c in asyncio.run(_listed(data))] == [BOB]
    lines = (data / "records" / "calls.jsonl").read_text().splitlines()
    assert [json.loads(line)["caller"]["number"] for line in lines] == [BOB]
    assert stat.S_IMODE((data / "records" / "calls.jsonl").stat().st_mode) == 0o600

    audit = AuditLog(data / "state" / "audit.jsonl")
    [entry] = audit.entries()
    assert entry["action"] == "erase" and entry["by"] == "caller" and entry["erased"] == 2
    assert entry["store"]["erased"] == 2 and entry["records"]["erased"] == 2
    assert sorted(entry["call_ids"]) == [_record(1, ALICE).call_id, _record(3, ALICE).call_id]
    assert ALICE not in audit.path.read_text()  # who was forgotten is not kept
    assert stat.S_IMODE(audit.path.stat().st_mode) == 0o600


def test_erase_one_call_by_prefix(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    asyncio.run(_fill(data))
    assert main(["calls", "erase", "--call", "call03", "--json"]) == 0
    done = json.loads(capsys.readouterr().out)
    assert done["call_ids"] == [_record(3, ALICE).call_id] and done["erased"] == 1
    assert sorted(c.call_id for c in asyncio.run(_listed(data))) == [
        _record(1, ALICE).call_id,
        _record(2, BOB).call_id,
    ]
    assert len((data / "records" / "calls.jsonl").read_text().splitlines()) == 2


def test_erase_of_nobody_says_zero(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    asyncio.run(_fill(data))
    assert main(["calls", "erase", "--caller", "999"]) == 0
    assert "erased 0 call(s)" in capsys.readouterr().out


def test_erase_needs_one_criterion(data: Path) -> None:
    assert main(["calls", "erase"]) == 2
    assert main(["calls", "erase", "--caller", "1", "--call", "x"]) == 2


async def test_reload_and_drain_are_audited(data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_ARI__URL", "http://127.0.0.1:9")
    app = AgentApp(load_settings())
    await app.reload()
    await app.drain()
    entries = AuditLog(data / "state" / "audit.jsonl").entries()
    assert [(e["action"], e["signal"]) for e in entries] == [("reload", "SIGHUP"), ("drain", "SIGTERM")]
    assert entries[0]["outcome"] == "applied" and entries[1]["active_calls"] == 0


def test_audit_path_setting(data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_AUDIT__PATH", str(data / "elsewhere" / "audit.log"))
    asyncio.run(_fill(data))
    assert main(["calls", "erase", "--caller", BOB]) == 0
    assert AuditLog(data / "elsewhere" / "audit.log").entries()[0]["erased"] == 1
    assert stat.S_IMODE((data / "elsewhere").stat().st_mode) == 0o700
