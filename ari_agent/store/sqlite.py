"""The call store on SQLite: one connection owned by one worker thread; the event loop never waits on disk.

Every operation is a job on a single-thread executor: jobs run one at a time
in submission order, which gives one writer without any lock, and the
connection never crosses threads. WAL lets an operator read the file (sqlite3
CLI, a backup) while the agent writes. Caller numbers are stored — operators
call back — but this module never logs them, nor any turn text.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar, cast

from ari_agent.conversation.records import ToolUse, sources_json
from ari_agent.errors import AgentError
from ari_agent.leads.models import Lead, LeadStatus
from ari_agent.store import leads as leads_table
from ari_agent.store.crypto import DataCipher, open_value
from ari_agent.store.models import CallSummary, Role, StoredCall, StoredTurn, parse_utc

log = logging.getLogger(__name__)

T = TypeVar("T")

PATH_SETTING = "AGENT_STORE__PATH"

# MIGRATIONS[n] brings the schema from version n to n + 1. Append, never edit: a released
# script may already have run on an operator's file. Statements are split on ';' so one
# transaction covers a whole step (executescript would commit it): no ';' inside a statement.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE calls (
        call_id       TEXT PRIMARY KEY,
        channel_id    TEXT NOT NULL,
        profile       TEXT NOT NULL,
        caller_number TEXT,
        caller_name   TEXT,
        started_at    TEXT NOT NULL,
        ended_at      TEXT,
        end_reason    TEXT,
        status        TEXT,
        result        TEXT,
        text_stored   INTEGER NOT NULL CHECK (text_stored IN (0, 1))
    );
    CREATE INDEX calls_started_at ON calls (started_at);
    CREATE TABLE turns (
        call_id            TEXT NOT NULL REFERENCES calls (call_id) ON DELETE CASCADE,
        seq                INTEGER NOT NULL,
        role               TEXT NOT NULL CHECK (role IN ('user', 'agent')),
        text               TEXT,
        at                 TEXT NOT NULL,
        interrupted        INTEGER NOT NULL CHECK (interrupted IN (0, 1)),
        stt_ms             REAL,
        llm_first_token_ms REAL,
        tts_first_audio_ms REAL,
        turn_latency_ms    REAL,
        PRIMARY KEY (call_id, seq)
    );
    CREATE TABLE fields (
        call_id TEXT NOT NULL REFERENCES calls (call_id) ON DELETE CASCADE,
        name    TEXT NOT NULL,
        value   TEXT NOT NULL,
        PRIMARY KEY (call_id, name)
    );
    """,
    # 1 -> 2: the whole call record (one shape with calls.jsonl): inbound media figures as
    # a JSON object, the pipeline's other per-stage timings, and what ended each caller turn.
    """
    ALTER TABLE calls ADD COLUMN media TEXT;
    ALTER TABLE turns ADD COLUMN llm_total_ms REAL;
    ALTER TABLE turns ADD COLUMN end_to_audio_ms REAL;
    ALTER TABLE turns ADD COLUMN llm_start_to_audio_ms REAL;
    ALTER TABLE turns ADD COLUMN ended_by TEXT;
    ALTER TABLE turns ADD COLUMN silence_frames INTEGER;
    CREATE INDEX calls_channel_id ON calls (channel_id);
    """,
    # 2 -> 3: the agent that handled the call (AGENT_INSTANCE_ID; a pool shares one store).
    """
    ALTER TABLE calls ADD COLUMN instance TEXT;
    """,
    # 3 -> 4: the knowledge passages an agent reply was thought with, a JSON list of
    # {"source", "heading"}: document names, not the caller's words, so kept with or without text.
    """
    ALTER TABLE turns ADD COLUMN sources TEXT;
    """,
    # 4 -> 5: the tool server calls behind an agent reply, a JSON list of {"tool", "status"}
    # (ok, timeout, error); their arguments and results are never stored.
    """
    ALTER TABLE turns ADD COLUMN tools TEXT;
    """,
    # 5 -> 6: completed leads (store/leads.py), their fields sealed like captured fields.
    leads_table.MIGRATION,
)
SCHEMA_VERSION = len(MIGRATIONS)

_CALL_COLUMNS = (
    "call_id, channel_id, profile, caller_number, caller_name, started_at, ended_at, "
    "end_reason, status, result, text_stored, media, instance"
)
_TURN_COLUMNS = (
    "role, text, at, interrupted, stt_ms, llm_first_token_ms, tts_first_audio_ms, turn_latency_ms, "
    "llm_total_ms, end_to_audio_ms, llm_start_to_audio_ms, ended_by, silence_frames, sources, tools"
)


class StoreError(AgentError):
    """The call store cannot be used; the message names the file and the fix."""

    def __init__(self, path: Path, problem: str, fix: str) -> None:
        self.path = path
        self.problem = problem
        self.fix = fix
        super().__init__(f"call store {path}: {problem} Fix: {fix}")


def _ts(value: datetime) -> str:
    # Fixed width, UTC: text order is time order, so purge and listings compare strings.
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _ts_or_none(value: datetime | None) -> str | None:
    return None if value is None else _ts(value)


def _dt_or_none(value: str | None) -> datetime | None:
    return None if value is None else parse_utc(value)


def _call_columns(row: Sequence[Any]) -> dict[str, Any]:
    """The calls row's fields (the first columns of _CALL_COLUMNS), shared by calls and summaries."""
    return {
        "call_id": row[0],
        "channel_id": row[1],
        "profile": row[2],
        "caller_number": row[3],
        "caller_name": row[4],
        "started_at": parse_utc(row[5]),
        "ended_at": _dt_or_none(row[6]),
        "end_reason": row[7],
        "status": row[8],
        "result": row[9],
        "store_text": bool(row[10]),
    }


def _sources(text: str | None) -> tuple[tuple[str, str], ...]:
    items = json.loads(text) if text else []
    return tuple((str(i["source"]), str(i["heading"])) for i in items if isinstance(i, dict))


def _tools(text: str | None) -> list[dict[str, Any]]:
    items = json.loads(text) if text else []
    return [i for i in items if isinstance(i, dict)]


def _media(text: str | None) -> dict[str, Any]:
    value = json.loads(text) if text else {}
    return value if isinstance(value, dict) else {}


class CallStore:
    """Async SQLite store of ended calls. ``open()`` before use, ``close()`` when done."""

    def __init__(
        self,
        path: Path,
        *,
        retention_days: int | None,
        busy_timeout: float = 5.0,
        cipher: DataCipher | None = None,
    ) -> None:
        """``cipher``: turn texts and field values are sealed with it, and opened on reading."""
        self.cipher = cipher
        if retention_days is not None and retention_days < 1:
            raise ValueError("retention_days must be >= 1, or None to keep calls forever")
        self.path = Path(path)
        self.retention_days = retention_days
        self._busy_timeout = busy_timeout
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None  # touched only on the worker thread

    # -- lifecycle ---------------------------------------------------------

    async def open(self) -> None:
        """Create or open the file and bring its schema up to date."""
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="call-store")
        try:
            await self._run(self._w_open)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise

    async def close(self) -> None:
        """Wait for queued writes, then close the connection. Safe to call twice."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(executor, self._w_close)
        finally:
            # The close job ran last, so the worker is idle and exits on its own.
            executor.shutdown(wait=False)

    async def __aenter__(self) -> CallStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- API ---------------------------------------------------------------

    async def save_call(self, call: StoredCall) -> None:
        """Insert or replace a call with its turns and fields, in one transaction."""
        await self._run(self._w_save, call)

    async def get_call(self, call_id: str) -> StoredCall | None:
        return await self._run(self._w_get, call_id)

    async def find_call(self, id_prefix: str) -> StoredCall | None:
        """The call whose id is ``id_prefix``, or the only one starting with it."""
        return await self._run(self._w_find, id_prefix)

    async def call_of_channel(self, channel_id: str) -> StoredCall | None:
        """The latest call of the channel that entered the Stasis app."""
        return await self._run(self._w_of_channel, channel_id)

    async def list_calls(self, limit: int = 50, since: datetime | None = None) -> list[CallSummary]:
        """Newest first; ``since`` keeps calls started at or after it."""
        return await self._run(self._w_list, limit, since)

    async def erase(self, *, caller_number: str | None = None, call_id: str | None = None) -> list[str]:
        """Delete every call from ``caller_number``, or the call ``call_id`` (or its unique prefix).

        Returns the erased ids. Deleted pages are zeroed (secure_delete) and the WAL is
        checkpointed and truncated, so the erased text does not linger in the files.
        """
        if (caller_number is None) == (call_id is None):
            raise ValueError("give exactly one of caller_number and call_id")
        return await self._run(self._w_erase, caller_number, call_id)

    async def save_lead(self, lead: Lead) -> None:
        await self._run(lambda: leads_table.save(self._db(), lead, self._seal_always))

    async def lead_delivered(
        self, lead_id: str, status: LeadStatus, attempts: int, error: str | None, at: datetime | None
    ) -> None:
        await self._run(lambda: leads_table.update(self._db(), lead_id, status, attempts, error, at))

    async def list_leads(self, status: str | None = None, limit: int = 50) -> list[Lead]:
        """Newest first; ``status``: only those (failed: the ones to redeliver)."""
        return await self._run(lambda: leads_table.listing(self._db(), self._unseal, status, limit))

    async def find_lead(self, id_prefix: str) -> Lead | None:
        return await self._run(lambda: leads_table.find(self._db(), self._unseal, id_prefix))

    async def purge(self, now: datetime | None = None) -> int:
        """Delete calls started more than ``retention_days`` before ``now``; returns how many."""
        if self.retention_days is None:
            return 0
        cutoff = (now or datetime.now(UTC)) - timedelta(days=self.retention_days)
        count = await self._run(self._w_purge, cutoff)
        if count:
            log.info("call store: purged %d call(s) older than %d day(s)", count, self.retention_days)
        return count

    async def purge_forever(self, interval: float = 3600.0) -> None:
        """Purge now and then every ``interval`` seconds until cancelled; errors are logged, not fatal."""
        while True:
            try:
                await self.purge()
            except StoreError as exc:
                log.error("%s", exc)
            await asyncio.sleep(interval)

    # -- plumbing ----------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise StoreError(self.path, "the store is not open.", "await store.open() first")
        # A cancelled caller does not stop the job: a write that started lands whole.
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._guarded, fn, *args)

    def _guarded(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return fn(*args)
        except sqlite3.Error as exc:
            raise self._explain(exc) from exc
        except UnicodeEncodeError:
            # A lone surrogate (text decoded with surrogateescape somewhere upstream) cannot be
            # stored as UTF-8. The message never quotes the value: it is a caller's data.
            raise StoreError(
                self.path,
                "a text value (caller name, turn text or field) is not valid Unicode; nothing was written.",
                "clean the text before storing it (this is a bug where it came from: please report it)",
            ) from None
        except OSError as exc:
            raise StoreError(
                self.path,
                f"cannot create the file ({exc.strerror}).",
                f"make its directory writable by this user, or set {PATH_SETTING} to a writable path",
            ) from exc

    def _explain(self, exc: sqlite3.Error) -> StoreError:
        text = str(exc)
        lowered = text.lower()
        if "locked" in lowered or "busy" in lowered:
            return StoreError(
                self.path,
                f"the database is locked by another process ({text}).",
                f"stop the other process using it, or give this agent its own {PATH_SETTING}",
            )
        if "not a database" in lowered or "malformed" in lowered or "corrupt" in lowered:
            return StoreError(
                self.path,
                f"not a valid SQLite database ({text}).",
                f"move the file aside (a new one is created on start) or set {PATH_SETTING} to another file",
            )
        if "unable to open" in lowered or "readonly" in lowered or "read-only" in lowered:
            return StoreError(
                self.path,
                f"cannot open it for writing ({text}).",
                f"make the file and its directory writable by this user, or set {PATH_SETTING}",
            )
        return StoreError(self.path, f"SQLite error ({text}).", f"check the file, or set {PATH_SETTING}")

    def _seal_always(self, text: str, call_id: str) -> str:
        return text if self.cipher is None else self.cipher.seal(text, call_id)

    def _unseal(self, text: str, call_id: str) -> str:
        return open_value(text, self.cipher, call_id)

    def _seal(self, text: str | None, call_id: str) -> str | None:
        if text is None or self.cipher is None:
            return text
        return self.cipher.seal(text, call_id)

    def _tools_column(self, tools: Sequence[ToolUse], call_id: str, store_text: bool) -> str | None:
        """Tool calls as stored: arguments and results only with the text opt-in, sealed like it."""
        if not tools:
            return None
        items = []
        for use in tools:
            item = {"tool": use.tool, "status": use.status}
            if store_text:
                for key, value in (("arguments", use.arguments), ("result", use.result)):
                    sealed = self._seal(value, call_id)
                    if sealed is not None:
                        item[key] = sealed
            items.append(item)
        return json.dumps(items, ensure_ascii=False)

    def _open_tool(self, item: dict[str, Any], call_id: str) -> ToolUse:
        opened = {
            key: open_value(value, self.cipher, call_id) if key in ("arguments", "result") else value
            for key, value in item.items()
            if isinstance(value, str)
        }
        return ToolUse.from_json(opened)

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(self.path, "the store is not open.", "await store.open() first")
        return self._conn

    # -- worker thread -----------------------------------------------------

    def _w_open(self) -> None:
        if self.path.is_dir():
            raise StoreError(self.path, "is a directory.", f"set {PATH_SETTING} to a file path")
        if not self.path.exists():
            # The file holds caller numbers: readable by the agent's user only. SQLite gives
            # its -wal and -shm files the same mode.
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        conn = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None)
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                log.warning("call store %s: WAL not available, journal mode is %s", self.path, mode)
            conn.execute(
                "PRAGMA synchronous=NORMAL"
            )  # WAL + NORMAL: no corruption, at most the last commit lost
            conn.execute("PRAGMA foreign_keys=ON")
            # Erased and purged calls are overwritten, not just unlinked from the b-tree.
            conn.execute("PRAGMA secure_delete=ON")
            self._w_migrate(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _w_migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
            current = int(row[0] or 0)
            if current > SCHEMA_VERSION:
                raise StoreError(
                    self.path,
                    f"schema version {current} is from a newer ari-agent (this one knows {SCHEMA_VERSION}).",
                    f"upgrade ari-agent, or set {PATH_SETTING} to another file",
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                # executescript() would commit our transaction; run the statements one by one.
                for statement in MIGRATIONS[version - 1].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        if current < SCHEMA_VERSION:
            log.info("call store %s: schema at version %d", self.path, SCHEMA_VERSION)

    def _w_close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _w_save(self, call: StoredCall) -> None:
        conn = self._db()
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Replacing: the cascade drops the old turns and fields with the old row.
            conn.execute("DELETE FROM calls WHERE call_id = ?", (call.call_id,))
            conn.execute(
                f"INSERT INTO calls ({_CALL_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    call.call_id,
                    call.channel_id,
                    call.profile,
                    call.caller_number,
                    call.caller_name,
                    _ts(call.started_at),
                    _ts_or_none(call.ended_at),
                    call.end_reason,
                    call.status,
                    call.result,
                    int(call.store_text),
                    json.dumps(dict(call.media)),
                    call.instance,
                ),
            )
            conn.executemany(
                f"INSERT INTO turns (call_id, seq, {_TURN_COLUMNS}) VALUES ({', '.join('?' * 17)})",
                [
                    (
                        call.call_id,
                        seq,
                        t.role,
                        self._seal(t.text, call.call_id) if call.store_text else None,
                        _ts(t.at),
                        int(t.interrupted),
                        t.stt_ms,
                        t.llm_first_token_ms,
                        t.tts_first_audio_ms,
                        t.turn_latency_ms,
                        t.llm_total_ms,
                        t.end_to_audio_ms,
                        t.llm_start_to_audio_ms,
                        t.ended_by,
                        t.silence_frames,
                        json.dumps(sources_json(t.sources)) if t.sources else None,
                        self._tools_column(t.tools, call.call_id, call.store_text),
                    )
                    for seq, t in enumerate(call.turns)
                ],
            )
            conn.executemany(
                "INSERT INTO fields (call_id, name, value) VALUES (?, ?, ?)",
                [
                    (call.call_id, name, self._seal(value, call.call_id))
                    for name, value in call.fields.items()
                ],
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _w_get(self, call_id: str) -> StoredCall | None:
        conn = self._db()
        # One read transaction, so a concurrent replace can't pair the new row with old turns.
        conn.execute("BEGIN")
        try:
            row = conn.execute(f"SELECT {_CALL_COLUMNS} FROM calls WHERE call_id = ?", (call_id,)).fetchone()
            if row is None:
                return None
            turns = conn.execute(
                f"SELECT {_TURN_COLUMNS} FROM turns WHERE call_id = ? ORDER BY seq", (call_id,)
            ).fetchall()
            fields = conn.execute(
                "SELECT name, value FROM fields WHERE call_id = ? ORDER BY name", (call_id,)
            ).fetchall()
        finally:
            conn.execute("COMMIT")
        return StoredCall(
            **_call_columns(row),
            turns=tuple(
                StoredTurn(
                    role=cast(Role, t[0]),
                    text=None if t[1] is None else open_value(t[1], self.cipher, call_id),
                    at=parse_utc(t[2]),
                    interrupted=bool(t[3]),
                    stt_ms=t[4],
                    llm_first_token_ms=t[5],
                    tts_first_audio_ms=t[6],
                    turn_latency_ms=t[7],
                    llm_total_ms=t[8],
                    end_to_audio_ms=t[9],
                    llm_start_to_audio_ms=t[10],
                    ended_by=t[11],
                    silence_frames=t[12],
                    sources=_sources(t[13]),
                    tools=tuple(self._open_tool(i, call_id) for i in _tools(t[14])),
                )
                for t in turns
            ),
            fields={name: open_value(value, self.cipher, call_id) for name, value in fields},
            media=_media(row[11]),
            instance=row[12],
        )

    def _w_match(self, id_prefix: str) -> str | None:
        """The id that is ``id_prefix``, or the only one starting with it."""
        escaped = id_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = (
            self._db()
            .execute(
                "SELECT call_id FROM calls WHERE call_id = ? OR call_id LIKE ? ESCAPE '\\' LIMIT 3",
                (id_prefix, escaped + "%"),
            )
            .fetchall()
        )
        ids = [r[0] for r in rows]
        if id_prefix in ids:
            return id_prefix
        return str(ids[0]) if len(ids) == 1 else None

    def _w_find(self, id_prefix: str) -> StoredCall | None:
        call_id = self._w_match(id_prefix)
        return None if call_id is None else self._w_get(call_id)

    def _w_erase(self, caller_number: str | None, call_id: str | None) -> list[str]:
        conn = self._db()
        conn.execute("BEGIN IMMEDIATE")
        try:
            if caller_number is not None:
                rows = conn.execute("SELECT call_id FROM calls WHERE caller_number = ?", (caller_number,))
                ids = [str(r[0]) for r in rows.fetchall()]
            else:
                assert call_id is not None
                match = self._w_match(call_id)
                ids = [] if match is None else [match]
            # The cascade takes the turns and fields with each call; leads go by number and call.
            conn.executemany("DELETE FROM calls WHERE call_id = ?", [(i,) for i in ids])
            leads_table.erase(conn, caller_number, ids)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        if ids:
            # Best effort: a reader (the running agent) may keep part of the WAL until it lets go.
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return ids

    def _w_of_channel(self, channel_id: str) -> StoredCall | None:
        row = (
            self._db()
            .execute(
                "SELECT call_id FROM calls WHERE channel_id = ? ORDER BY started_at DESC LIMIT 1",
                (channel_id,),
            )
            .fetchone()
        )
        return None if row is None else self._w_get(row[0])

    def _w_list(self, limit: int, since: datetime | None) -> list[CallSummary]:
        rows = (
            self._db()
            .execute(
                f"SELECT {_CALL_COLUMNS}, (SELECT COUNT(*) FROM turns t WHERE t.call_id = c.call_id)"
                " FROM calls c WHERE started_at >= ? ORDER BY started_at DESC, call_id LIMIT ?",
                (_ts(since) if since else "", max(0, limit)),
            )
            .fetchall()
        )
        return [
            CallSummary(
                **_call_columns(r),
                turn_count=int(r[13]),
                instance=r[12],
            )
            for r in rows
        ]

    def _w_purge(self, cutoff: datetime) -> int:
        cur = self._db().execute("DELETE FROM calls WHERE started_at < ?", (_ts(cutoff),))
        leads_table.purge(self._db(), _ts(cutoff))
        return max(0, cur.rowcount)
