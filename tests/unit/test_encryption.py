"""Encryption at rest: a stored transcript is unreadable without the key, readable with it,
and with an old key after rotation; calls.jsonl, the store and ``calls show`` all read through it."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from ari_agent.cli import main
from ari_agent.config import StoreSettings
from ari_agent.conversation.records import CallRecord, RecordWriter, ToolUse, Turn
from ari_agent.errors import ConfigError
from ari_agent.ops.calls import CallsError, RecordsFile
from ari_agent.store import CallStore, StoredCall
from ari_agent.store.crypto import DataCipher, DataKeyError, data_cipher, new_key

OLD, NEW = new_key(), new_key()
SECRET_WORDS = "my card number is 4111 1111"
FIELD = "allergic to penicillin"
TOOL_ARGS = "account 99887766"
TOOL_RESULT = "balance owed 1234 pounds"


def _record() -> CallRecord:
    return CallRecord(
        call_id="feedc0de" + "2" * 24,
        channel_id="ch-enc",
        caller={"number": "5550123", "name": "Enc"},
        profile="frontdesk",
        started_at="2026-01-02T03:04:05.000Z",
        ended_at="2026-01-02T03:05:05.000Z",
        end_reason="hangup_by_caller",
        turns=[
            Turn(role="user", text=SECRET_WORDS, at="2026-01-02T03:04:06.000Z"),
            Turn(
                role="agent",
                text="Done.",
                at="2026-01-02T03:04:08.000Z",
                tools=[ToolUse("crm__lookup", "ok", json.dumps({"q": TOOL_ARGS}), TOOL_RESULT)],
            ),
        ],
        fields={"note": FIELD},
    )


def _raw(directory: Path) -> bytes:
    """Every byte the agent left in the directory (db, WAL, records)."""
    return b"".join(p.read_bytes() for p in directory.iterdir() if p.is_file())


def test_seal_and_open_with_rotation() -> None:
    old = DataCipher.from_text(OLD)
    sealed = old.seal("hello", "call-1")
    assert "hello" not in sealed and sealed.startswith("enc:v1:")
    rotated = DataCipher.from_text(f"{NEW}, {OLD}")
    assert rotated.open(sealed, "call-1") == "hello"  # the old key still opens what it sealed
    fresh = rotated.seal("again", "call-1")
    assert fresh.split(":")[2] == rotated.current != old.current  # new values use the new key
    with pytest.raises(DataKeyError) as caught:
        old.open(fresh, "call-1")
    assert rotated.current in str(caught.value) and NEW not in str(caught.value)
    with pytest.raises(DataKeyError):
        rotated.open(sealed, "call-2")  # bound to its call
    assert rotated.open("written before the key", "call-1") == "written before the key"


def test_bad_keys_are_a_config_error_that_never_shows_them(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        data_cipher(StoreSettings(keys="c2hvcnQ=,not-base64!"))  # type: ignore[arg-type]
    assert "c2hvcnQ" not in str(caught.value) and "key 1 of 2" in str(caught.value)
    with pytest.raises(ConfigError):
        data_cipher(StoreSettings(keys_file=tmp_path / "missing"))
    (tmp_path / "keys").write_text(f"{NEW}\n{OLD}\n")
    cipher = data_cipher(StoreSettings(keys_file=tmp_path / "keys"))
    assert cipher is not None and len(cipher.key_ids) == 2


async def test_the_store_keeps_transcripts_sealed(tmp_path: Path) -> None:
    path = tmp_path / "calls.db"
    record = _record()
    async with CallStore(path, retention_days=None, cipher=DataCipher.from_text(OLD)) as store:
        await store.save_call(StoredCall.from_record(record, store_text=True))
    raw = _raw(tmp_path)
    assert SECRET_WORDS.encode() not in raw and FIELD.encode() not in raw
    assert TOOL_ARGS.encode() not in raw and TOOL_RESULT.encode() not in raw and b"crm__lookup" in raw
    async with CallStore(path, retention_days=None) as store:
        with pytest.raises(DataKeyError):
            await store.get_call(record.call_id)
    async with CallStore(path, retention_days=None, cipher=DataCipher.from_text(f"{NEW},{OLD}")) as store:
        got = await store.get_call(record.call_id)
    assert got is not None and got.to_json() == record.to_json()


async def test_calls_jsonl_keeps_transcripts_sealed(tmp_path: Path) -> None:
    record = _record()
    await RecordWriter(tmp_path, DataCipher.from_text(OLD)).write(record)
    raw = _raw(tmp_path)
    assert SECRET_WORDS.encode() not in raw and FIELD.encode() not in raw and b"5550123" in raw
    assert TOOL_ARGS.encode() not in raw and TOOL_RESULT.encode() not in raw
    assert RecordsFile(tmp_path, DataCipher.from_text(f"{NEW},{OLD}")).get(record.call_id) == record.to_json()
    with pytest.raises(CallsError) as caught:
        RecordsFile(tmp_path).get(record.call_id)
    assert "AGENT_STORE__KEYS" in str(caught.value)


@pytest.fixture
def sealed_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith("AGENT_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AGENT_STORE__PATH", str(tmp_path / "calls.db"))

    async def fill() -> None:
        async with CallStore(
            tmp_path / "calls.db", retention_days=None, cipher=DataCipher.from_text(OLD)
        ) as s:
            await s.save_call(StoredCall.from_record(_record(), store_text=True))

    asyncio.run(fill())
    return tmp_path


def test_calls_show_needs_the_key(
    sealed_data: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["calls", "show", "feedc0de"]) == 1
    out = capsys.readouterr().out
    assert "AGENT_STORE__KEYS" in out and SECRET_WORDS not in out
    # Rotated: the new key first, the old one kept; from a file, as a secret would be mounted.
    (sealed_data / "keys").write_text(f"{NEW},{OLD}")
    monkeypatch.setenv("AGENT_STORE__KEYS_FILE", str(sealed_data / "keys"))
    assert main(["calls", "show", "feedc0de", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["turns"][0]["text"] == SECRET_WORDS and shown["fields"] == {"note": FIELD}


def test_a_wrong_key_is_refused_clearly(
    sealed_data: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AGENT_STORE__KEYS", NEW)
    assert main(["calls", "show", "feedc0de"]) == 1
    out = capsys.readouterr().out
    assert "not among the configured keys" in out and NEW not in out and OLD not in out
