"""The SQLite call store: round trips, text opt-in, retention, concurrency, and a loop that never waits."""

from __future__ import annotations

import asyncio
import sqlite3
import stat
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ari_agent.conversation.records import CallRecord, Turn
from ari_agent.store import SCHEMA_VERSION, CallStore, StoredCall, StoredTurn, StoreError

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def make_call(
    call_id: str = "c1", *, started: datetime = T0, store_text: bool = True, turns: int = 3
) -> StoredCall:
    return StoredCall(
        call_id=call_id,
        channel_id=f"chan-{call_id}",
        profile="frontdesk",
        started_at=started,
        ended_at=started + timedelta(seconds=42),
        end_reason="hangup_by_agent",
        caller_number="+15551234567",
        caller_name="Ada Lovelace",
        status="COMPLETED",
        result="lead_captured",
        store_text=store_text,
        turns=tuple(
            StoredTurn(
                role="agent" if i % 2 == 0 else "user",
                text=f"utterance {i} — naïve ✓",
                at=started + timedelta(seconds=i),
                interrupted=i == 2,
                # Convention: STT latency on the caller's turn, the rest on the agent's reply to it.
                stt_ms=None if i % 2 == 0 else 151.5,
                llm_first_token_ms=302.25 if i % 2 == 0 and i > 0 else None,
                tts_first_audio_ms=149.0 if i % 2 == 0 else None,
                turn_latency_ms=612.0 if i % 2 == 0 and i > 0 else None,
            )
            for i in range(turns)
        ),
        fields={"name": "Ada", "callback_number": "+15550001111", "reason": "cleaning"},
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[CallStore]:
    s = CallStore(tmp_path / "calls.db", retention_days=30)
    await s.open()
    yield s
    await s.close()


async def test_round_trip_with_text(store: CallStore) -> None:
    call = make_call()
    await store.save_call(call)
    assert await store.get_call("c1") == call


async def test_without_text_keeps_roles_and_timings_but_no_text(store: CallStore, tmp_path: Path) -> None:
    call = make_call(store_text=False)
    await store.save_call(call)
    got = await store.get_call("c1")
    assert got == replace(call, turns=tuple(replace(t, text=None) for t in call.turns))
    assert got is not None and got.turns[1].stt_ms == 151.5 and got.turns[2].interrupted
    # Not on disk either, not just hidden on read.
    with sqlite3.connect(tmp_path / "calls.db") as raw:
        texts = raw.execute("SELECT text FROM turns WHERE call_id = 'c1'").fetchall()
        stored = raw.execute("SELECT text_stored FROM calls WHERE call_id = 'c1'").fetchone()
    assert texts == [(None,)] * 3
    assert stored == (0,)


async def test_unknown_call_is_none(store: CallStore) -> None:
    assert await store.get_call("nope") is None


async def test_save_again_replaces_turns_and_fields(store: CallStore) -> None:
    await store.save_call(make_call(turns=5))
    shorter = replace(make_call(turns=2), fields={"reason": "moved"})
    await store.save_call(shorter)
    assert await store.get_call("c1") == shorter


async def test_list_calls_newest_first_with_limit_and_since(store: CallStore) -> None:
    for i in range(5):
        await store.save_call(make_call(f"c{i}", started=T0 + timedelta(hours=i), turns=i))
    listed = await store.list_calls(limit=3)
    assert [c.call_id for c in listed] == ["c4", "c3", "c2"]
    assert [c.turn_count for c in listed] == [4, 3, 2]
    assert listed[0].status == "COMPLETED" and listed[0].store_text
    since = await store.list_calls(since=T0 + timedelta(hours=3))
    assert [c.call_id for c in since] == ["c4", "c3"]


async def test_purge_by_age_with_injected_now(tmp_path: Path) -> None:
    now = datetime(2025, 6, 1, tzinfo=UTC)
    async with CallStore(tmp_path / "calls.db", retention_days=30) as s:
        for name, age in [("old40", 40), ("old31", 31), ("new29", 29), ("new1", 1)]:
            await s.save_call(make_call(name, started=now - timedelta(days=age)))
        assert await s.purge(now=now) == 2
        assert await s.get_call("old40") is None and await s.get_call("old31") is None
        assert await s.get_call("new29") is not None and await s.get_call("new1") is not None
        assert await s.purge(now=now) == 0
    with sqlite3.connect(tmp_path / "calls.db") as raw:
        orphans = [
            raw.execute(f"SELECT COUNT(*) FROM {table} WHERE call_id LIKE 'old%'").fetchone()[0]
            for table in ("turns", "fields")
        ]
    assert orphans == [0, 0]


async def test_no_retention_keeps_everything(tmp_path: Path) -> None:
    async with CallStore(tmp_path / "calls.db", retention_days=None) as s:
        await s.save_call(make_call(started=T0 - timedelta(days=3650)))
        assert await s.purge() == 0
        assert await s.get_call("c1") is not None


async def test_purge_forever_purges_in_the_background(tmp_path: Path) -> None:
    async with CallStore(tmp_path / "calls.db", retention_days=1) as s:
        await s.save_call(make_call("ancient", started=T0 - timedelta(days=400)))
        task = asyncio.create_task(s.purge_forever(interval=0.01))
        for _ in range(1000):
            if await s.get_call("ancient") is None:
                break
            await asyncio.sleep(0.01)
        assert await s.get_call("ancient") is None
        assert not task.done()  # still looping, not crashed
        task.cancel()


def test_bad_retention_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="retention_days"):
        CallStore(tmp_path / "calls.db", retention_days=0)


async def test_fifty_concurrent_saves_all_land(store: CallStore) -> None:
    calls = [make_call(f"call-{i:02d}", started=T0 + timedelta(seconds=i), turns=i % 7) for i in range(50)]
    await asyncio.gather(*(store.save_call(c) for c in calls))
    assert len(await store.list_calls(limit=100)) == 50
    got = await asyncio.gather(*(store.get_call(c.call_id) for c in calls))
    assert got == calls


async def test_reopen_keeps_data_and_schema(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "dir" / "calls.db"
    async with CallStore(path, retention_days=30) as s:
        await s.save_call(make_call())
    async with CallStore(path, retention_days=30) as s:
        assert await s.get_call("c1") == make_call()
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT MAX(version) FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_a_version_1_file_is_upgraded_and_keeps_its_calls(tmp_path: Path) -> None:
    from ari_agent.store.sqlite import MIGRATIONS

    path = tmp_path / "calls.db"
    with sqlite3.connect(path) as raw:
        for statement in MIGRATIONS[0].split(";"):
            raw.execute(statement)
        raw.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        raw.execute("INSERT INTO schema_version VALUES (1)")
        raw.execute(
            "INSERT INTO calls VALUES ('old', 'chan', 'frontdesk', NULL, NULL,"
            " '2025-03-01T12:00:00.000000Z', NULL, 'busy', 'BUSY', NULL, 0)"
        )
    raw.close()
    async with CallStore(path, retention_days=None) as s:
        old = await s.get_call("old")
        await s.save_call(make_call())
        assert await s.get_call("c1") == make_call()
    assert old is not None and old.end_reason == "busy" and dict(old.media) == {}


async def test_a_version_3_file_gets_sources_and_tools_and_keeps_its_turns(tmp_path: Path) -> None:
    from ari_agent.store.sqlite import MIGRATIONS

    path = tmp_path / "calls.db"
    with sqlite3.connect(path) as raw:
        for script in MIGRATIONS[:3]:
            for statement in script.split(";"):
                raw.execute(statement)
        raw.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        raw.execute("INSERT INTO schema_version VALUES (3)")
        raw.execute(
            "INSERT INTO calls VALUES ('old', 'chan', 'frontdesk', NULL, NULL,"
            " '2025-03-01T12:00:00.000000Z', NULL, 'busy', 'BUSY', NULL, 1, '{}', NULL)"
        )
        raw.execute(
            "INSERT INTO turns (call_id, seq, role, text, at, interrupted)"
            " VALUES ('old', 0, 'agent', 'Hello.', '2025-03-01T12:00:01.000000Z', 0)"
        )
    raw.close()
    async with CallStore(path, retention_days=None) as s:
        old = await s.get_call("old")
    assert old is not None and [t.text for t in old.turns] == ["Hello."]
    assert old.turns[0].sources == () and old.turns[0].tools == ()


async def test_new_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "calls.db"
    async with CallStore(path, retention_days=30):
        pass
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_loop_runs_while_a_write_waits_on_the_disk(tmp_path: Path) -> None:
    """The write is held by another process's lock that only a task on the loop can release.

    A store that blocked the loop would never let that task run: the write would time out.
    """
    path = tmp_path / "calls.db"
    async with CallStore(path, retention_days=30, busy_timeout=60) as s:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        save = asyncio.create_task(s.save_call(make_call(turns=2000)))
        ticks = 0
        while ticks < 20:
            await asyncio.sleep(0.005)
            ticks += 1
        assert not save.done()  # still waiting on the lock, and we kept ticking
        other.execute("COMMIT")
        other.close()
        await save
        got = await s.get_call("c1")
    assert got is not None and len(got.turns) == 2000


async def test_heartbeat_ticks_during_a_large_batch(store: CallStore) -> None:
    in_flight = False
    ticks_in_flight = 0

    async def heartbeat() -> None:
        nonlocal ticks_in_flight
        while True:
            await asyncio.sleep(0)
            if in_flight:
                ticks_in_flight += 1

    beat = asyncio.create_task(heartbeat())
    await asyncio.sleep(0)
    in_flight = True
    await store.save_call(make_call("big", turns=20000))  # one await: a blocking store never yields here
    in_flight = False
    beat.cancel()
    assert ticks_in_flight > 0
    got = await store.get_call("big")
    assert got is not None and len(got.turns) == 20000


async def test_locked_db_names_path_and_fix(tmp_path: Path) -> None:
    path = tmp_path / "calls.db"
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    other.execute("CREATE TABLE squatter (x)")
    try:
        with pytest.raises(StoreError) as err:
            await CallStore(path, retention_days=30, busy_timeout=0.05).open()
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert str(path) in str(err.value)
    assert "locked" in err.value.problem and "AGENT_STORE__PATH" in err.value.fix


async def test_corrupt_db_names_path_and_fix(tmp_path: Path) -> None:
    path = tmp_path / "calls.db"
    path.write_bytes(b"this is not sqlite at all\n" * 200)
    store = CallStore(path, retention_days=30)
    with pytest.raises(StoreError) as err:
        await store.open()
    assert err.value.path == path and str(path) in str(err.value)
    assert "not a valid SQLite database" in err.value.problem
    assert "move the file aside" in err.value.fix
    # A failed open leaves the store closed, not half-open.
    with pytest.raises(StoreError, match="not open"):
        await store.get_call("c1")


async def test_directory_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="is a directory"):
        await CallStore(tmp_path, retention_days=30).open()


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "calls.db"
    async with CallStore(path, retention_days=30):
        pass
    with sqlite3.connect(path) as raw:
        raw.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match="newer ari-agent"):
        await CallStore(path, retention_days=30).open()


async def test_use_after_close_is_a_store_error(tmp_path: Path) -> None:
    s = CallStore(tmp_path / "calls.db", retention_days=30)
    await s.open()
    await s.close()
    await s.close()
    with pytest.raises(StoreError, match="not open"):
        await s.save_call(make_call())


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        StoredTurn(role="user", text="hi", at=datetime(2025, 1, 1))


def test_repr_keeps_pii_out() -> None:
    text = repr(make_call())
    assert "c1" in text
    assert "+1555" not in text and "Ada" not in text and "utterance" not in text


def test_from_record_maps_the_skeleton_record() -> None:
    record = CallRecord(
        call_id="r1",
        channel_id="chan-r1",
        caller={"number": "200", "name": ""},
        profile="frontdesk",
        started_at="2025-03-01T12:00:00.000Z",
        ended_at="2025-03-01T12:00:30.500Z",
        end_reason="transferred",
        turns=[
            Turn(role="agent", text="Hello", at="2025-03-01T12:00:01.000Z"),
            Turn(role="user", text="booking", at="2025-03-01T12:00:05.000Z", interrupted=True),
        ],
    )
    call = StoredCall.from_record(record, store_text=False, result="booked", fields={"reason": "booking"})
    assert call.status == "TRANSFERRED" and call.result == "booked"
    assert (call.caller_number, call.caller_name) == ("200", None)
    assert call.ended_at == datetime(2025, 3, 1, 12, 0, 30, 500000, tzinfo=UTC)
    assert [(t.role, t.text, t.interrupted) for t in call.turns] == [
        ("agent", "Hello", False),
        ("user", "booking", True),
    ]
    assert call.fields == {"reason": "booking"} and not call.store_text
