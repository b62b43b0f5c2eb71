"""Completed leads in the call store: worker-thread functions on the store's one connection.

Field values are sealed with the call's key like captured fields. A lead row carries
the caller's number, so ``calls erase --caller`` removes the leads too, with or without
their call; the retention purge takes them with the calls of their age.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from ari_agent.leads.models import Lead, LeadStatus
from ari_agent.store.models import parse_utc

# 5 -> 6 in sqlite.MIGRATIONS.
MIGRATION = """
    CREATE TABLE leads (
        lead_id       TEXT PRIMARY KEY,
        call_id       TEXT NOT NULL,
        profile       TEXT NOT NULL,
        caller_number TEXT,
        caller_name   TEXT,
        created_at    TEXT NOT NULL,
        fields        TEXT NOT NULL,
        status        TEXT NOT NULL CHECK (status IN ('stored', 'pending', 'delivered', 'failed')),
        attempts      INTEGER NOT NULL DEFAULT 0,
        last_error    TEXT,
        delivered_at  TEXT
    );
    CREATE INDEX leads_caller ON leads (caller_number);
    CREATE INDEX leads_created_at ON leads (created_at)
"""

_COLUMNS = (
    "lead_id, call_id, profile, caller_number, caller_name, created_at, fields, status, attempts, "
    "last_error, delivered_at"
)


def ts(value: datetime) -> str:
    """Fixed width, UTC (as the calls table): text order is time order."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


Seal = Callable[[str, str], str]  # (text, call_id) -> stored text


def save(conn: sqlite3.Connection, lead: Lead, seal: Seal) -> None:
    conn.execute(
        f"INSERT OR REPLACE INTO leads ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            lead.lead_id,
            lead.call_id,
            lead.profile,
            lead.caller_number,
            lead.caller_name,
            ts(lead.created_at),
            seal(json.dumps(dict(lead.fields), ensure_ascii=False), lead.call_id),
            lead.status,
            lead.attempts,
            lead.last_error,
            ts(lead.delivered_at) if lead.delivered_at else None,
        ),
    )


def update(
    conn: sqlite3.Connection,
    lead_id: str,
    status: LeadStatus,
    attempts: int,
    error: str | None,
    delivered_at: datetime | None,
) -> None:
    """A delivery's outcome; ``attempts`` adds to those already made (a redelivery counts on)."""
    conn.execute(
        "UPDATE leads SET status = ?, attempts = attempts + ?, last_error = ?, delivered_at = ?"
        " WHERE lead_id = ?",
        (status, attempts, error, ts(delivered_at) if delivered_at else None, lead_id),
    )


def _lead(row: Sequence[Any], unseal: Seal) -> Lead:
    return Lead(
        lead_id=row[0],
        call_id=row[1],
        profile=row[2],
        caller_number=row[3],
        caller_name=row[4],
        created_at=parse_utc(row[5]),
        fields=json.loads(unseal(row[6], row[1])),
        status=row[7],
        attempts=int(row[8]),
        last_error=row[9],
        delivered_at=parse_utc(row[10]) if row[10] else None,
    )


def listing(conn: sqlite3.Connection, unseal: Seal, status: str | None, limit: int) -> list[Lead]:
    where, args = ("WHERE status = ?", [status]) if status else ("", [])
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM leads {where} ORDER BY created_at DESC, lead_id LIMIT ?",
        (*args, max(0, limit)),
    ).fetchall()
    return [_lead(r, unseal) for r in rows]


def find(conn: sqlite3.Connection, unseal: Seal, id_prefix: str) -> Lead | None:
    """The lead ``id_prefix`` names (its id or the only id starting with it)."""
    escaped = id_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM leads WHERE lead_id LIKE ? ESCAPE '\\' LIMIT 2", (escaped + "%",)
    ).fetchall()
    return _lead(rows[0], unseal) if len(rows) == 1 else None


def erase(conn: sqlite3.Connection, caller_number: str | None, call_ids: Sequence[str]) -> int:
    n = 0
    if caller_number is not None:
        n += conn.execute("DELETE FROM leads WHERE caller_number = ?", (caller_number,)).rowcount
    for call_id in call_ids:
        n += conn.execute("DELETE FROM leads WHERE call_id = ?", (call_id,)).rowcount
    return n


def purge(conn: sqlite3.Connection, cutoff: str) -> int:
    return max(0, conn.execute("DELETE FROM leads WHERE created_at < ?", (cutoff,)).rowcount)
