"""``ari-agent calls``: active calls from a running agent (``--agents``: from each agent of a
pool, with the agent that has each call); ``calls show ID``: one ended call.

Ended calls come from a :class:`CallSource`: the call store (SQLite, on by
default) or the records file (``<records dir>/calls.jsonl``). Both give the
one record shape of ``CallRecord.to_json()``, field for field; only turn
texts differ, kept in the store only when the operator opted in.
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from ari_agent.config import Settings
from ari_agent.conversation.records import format_utc
from ari_agent.errors import ConfigError
from ari_agent.observability.http import INSTANCE_HEADER, http_token
from ari_agent.privatefile import locked, replace_private
from ari_agent.store import CallStore, StoredCall, StoreError
from ari_agent.store.crypto import DataCipher, DataKeyError, data_cipher, open_record


class CallSource(Protocol):
    def get(self, call_id: str) -> dict[str, Any] | None:
        """The call whose id is ``call_id`` or starts with it (if only one does)."""

    def by_channel(self, channel_id: str) -> dict[str, Any] | None:
        """The call of the channel that entered the agent's Stasis app."""

    def since(self, started_at: datetime) -> list[dict[str, Any]]:
        """Every call that started at ``started_at`` or later."""


class RecordsFile:
    """Ended calls from ``calls.jsonl`` (written by the agent when ``AGENT_RECORDS__DIR`` is set)."""

    def __init__(self, directory: Path, cipher: DataCipher | None = None) -> None:
        self.path = directory / "calls.jsonl"
        self.cipher = cipher

    def _open(self, record: dict[str, Any] | None) -> dict[str, Any] | None:
        # Only the record asked for is opened: one sealed with a retired key spoils no other.
        if record is None:
            return None
        try:
            return open_record(record, self.cipher)
        except DataKeyError as exc:
            raise CallsError(str(exc)) from None

    def all(self) -> list[dict[str, Any]]:
        """The records as written (turn texts and fields sealed when a key was set)."""
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        records = []
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line being written right now
            if isinstance(record, dict):
                records.append(record)
        return records

    def get(self, call_id: str) -> dict[str, Any] | None:
        matches = [r for r in self.all() if str(r.get("call_id", "")).startswith(call_id)]
        exact = [r for r in matches if r.get("call_id") == call_id]
        if exact:
            return self._open(exact[-1])
        return self._open(matches[0]) if len(matches) == 1 else None

    def by_channel(self, channel_id: str) -> dict[str, Any] | None:
        return self._open(next((r for r in reversed(self.all()) if r.get("channel_id") == channel_id), None))

    def since(self, started_at: datetime) -> list[dict[str, Any]]:
        # The records' timestamps are one fixed format (UTC, ms, Z): they sort as text.
        cutoff = format_utc(started_at)
        records = [r for r in self.all() if str(r.get("started_at", "")) >= cutoff]
        return [r for r in (self._open(r) for r in records) if r is not None]

    def erase(self, *, caller_number: str | None = None, call_ids: Sequence[str] = ()) -> list[str]:
        """Drop the lines of ``caller_number``'s calls, or of ``call_ids``; returns the ids dropped.

        Under the writer's lock, so a record the agent appends meanwhile is neither lost
        nor left behind in the old file.
        """
        if not self.path.exists():
            return []
        wanted = set(call_ids)
        erased: list[str] = []
        with locked(self.path):
            kept = []
            for line in self.path.read_text(encoding="utf-8").splitlines(keepends=True):
                try:
                    record = json.loads(line)
                except ValueError:
                    record = None
                if isinstance(record, dict) and _matches(record, caller_number, wanted):
                    erased.append(str(record.get("call_id")))
                    continue
                kept.append(line)
            if erased:
                replace_private(self.path, "".join(kept))
        return erased


def _matches(record: dict[str, Any], caller_number: str | None, call_ids: set[str]) -> bool:
    if caller_number is not None:
        caller = record.get("caller")
        return isinstance(caller, dict) and caller.get("number") == caller_number
    return record.get("call_id") in call_ids


class StoreFile:
    """Ended calls from the agent's call store (``AGENT_STORE__PATH``)."""

    def __init__(self, path: Path, cipher: DataCipher | None = None) -> None:
        self.path = path
        self.cipher = cipher

    def get(self, call_id: str) -> dict[str, Any] | None:
        return self._read(lambda store: store.find_call(call_id))

    def by_channel(self, channel_id: str) -> dict[str, Any] | None:
        return self._read(lambda store: store.call_of_channel(channel_id))

    def since(self, started_at: datetime, limit: int = 100_000) -> list[dict[str, Any]]:
        async def run() -> list[StoredCall]:
            async with CallStore(self.path, retention_days=None, cipher=self.cipher) as store:
                found = []
                for summary in await store.list_calls(limit=limit, since=started_at):
                    call = await store.get_call(summary.call_id)
                    if call is not None:
                        found.append(call)
                return found

        try:
            calls = asyncio.run(run())
        except (StoreError, DataKeyError) as exc:
            raise CallsError(str(exc)) from None
        return [c.to_json() for c in calls]

    def erase(self, *, caller_number: str | None = None, call_id: str | None = None) -> list[str]:
        async def run() -> list[str]:
            async with CallStore(self.path, retention_days=None) as store:
                return await store.erase(caller_number=caller_number, call_id=call_id)

        try:
            return asyncio.run(run())
        except StoreError as exc:
            raise CallsError(str(exc)) from None

    def _read(self, query: Any) -> dict[str, Any] | None:
        async def run() -> StoredCall | None:
            async with CallStore(self.path, retention_days=None, cipher=self.cipher) as store:
                result: StoredCall | None = await query(store)
                return result

        try:
            call = asyncio.run(run())
        except (StoreError, DataKeyError) as exc:
            raise CallsError(str(exc)) from None
        return None if call is None else call.to_json()


class CallsError(Exception):
    """The calls could not be read; the message says why and what to do."""


def _cipher(settings: Settings) -> DataCipher | None:
    try:
        return data_cipher(settings.store)
    except ConfigError as exc:
        raise CallsError(str(exc)) from None


def call_source(settings: Settings, *, transcripts: bool = False) -> CallSource:
    """The store when the agent keeps one here, else the records file.

    ``transcripts``: the records file first, as it always has the turn texts (the
    store only when the operator opted in).
    """
    cipher = _cipher(settings)
    store = (
        StoreFile(settings.store.path, cipher)
        if settings.store.enabled and settings.store.path.is_file()
        else None
    )
    records = RecordsFile(settings.records.dir, cipher) if settings.records.dir is not None else None
    ordered = [records, store] if transcripts else [store, records]
    source = next((s for s in ordered if s is not None), None)
    if source is None:
        raise CallsError(
            f"no ended calls here: no call store at {settings.store.path} (AGENT_STORE__PATH) and no "
            "records directory (AGENT_RECORDS__DIR, make up sets it); point either at the agent's"
        )
    return source


def erase_calls(
    settings: Settings, *, caller_number: str | None = None, call_id: str | None = None
) -> dict[str, Any]:
    """Remove a person's calls (or one call) from the store and the records file; audit it.

    Returns what was done: the erased ids and counts per place. The audit entry carries
    those, never the caller's number.
    """
    store_path = settings.store.path
    records = RecordsFile(settings.records.dir) if settings.records.dir is not None else None
    done: dict[str, Any] = {"by": "caller" if caller_number is not None else "call"}
    store_ids: list[str] = []
    if store_path.is_file():
        store_ids = StoreFile(store_path).erase(caller_number=caller_number, call_id=call_id)
        done["store"] = {"path": str(store_path), "erased": len(store_ids)}
    records_ids: list[str] = []
    if records is not None:
        if caller_number is not None:
            records_ids = records.erase(caller_number=caller_number)
        else:
            assert call_id is not None
            # The store resolved a prefix; else the records file's own unique match.
            full = store_ids or [str(r.get("call_id")) for r in [records.get(call_id)] if r is not None]
            records_ids = records.erase(call_ids=full)
        done["records"] = {"path": str(records.path), "erased": len(records_ids)}
    if "store" not in done and "records" not in done:
        raise CallsError(
            f"nothing to erase from: no call store at {store_path} (AGENT_STORE__PATH) and no "
            "records directory (AGENT_RECORDS__DIR)"
        )
    done["call_ids"] = sorted(set(store_ids) | set(records_ids))
    done["erased"] = len(done["call_ids"])
    if settings.audit.enabled:
        from ari_agent.ops.audit import AuditError, AuditLog

        try:
            AuditLog(settings.audit_path).record("erase", **done)
        except AuditError as exc:
            # The erase stands (the person asked for it); the operator must know it is unlogged.
            done["audit_error"] = str(exc)
    return done


def agent_url(settings: Settings, path: str) -> str:
    host = settings.http.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.http.port}{path}"


def _token(settings: Settings) -> str | None:
    try:
        return http_token(settings.http)
    except ConfigError as exc:
        raise CallsError(str(exc)) from None


def fetch_calls(
    base: str, token: str | None, timeout: float = 5.0
) -> tuple[list[dict[str, Any]], str | None]:
    """GET <base>/calls: the agent's calls and its instance id (``X-Agent-Instance``, if it says)."""
    url = base.rstrip("/") + "/calls"
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            data = json.loads(resp.read())
            instance = resp.headers.get(INSTANCE_HEADER)
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            raise CallsError(f"{url} wants a token: set AGENT_HTTP__TOKEN to the agent's") from None
        raise CallsError(f"{url} answered HTTP {exc.code}") from None
    except (OSError, ValueError) as exc:
        raise CallsError(
            f"no agent answers at {url} ({exc}); is it running? (AGENT_HTTP__HOST/PORT)"
        ) from None
    if not isinstance(data, list):
        raise CallsError(f"{url} did not return a list")
    return [c for c in data if isinstance(c, dict)], instance


def active_calls(settings: Settings, timeout: float = 5.0) -> list[dict[str, Any]]:
    """GET /calls of the running agent."""
    return fetch_calls(agent_url(settings, ""), _token(settings), timeout)[0]


MAX_AGENTS = 256


def agent_urls(spec: str) -> list[str]:
    """``--agents``: comma-separated base URLs (or host:port); a port range ``host:8090-8093``
    names one agent per port (what ``make up`` prints)."""
    urls: list[str] = []
    for raw in spec.split(","):
        part = raw.strip().rstrip("/")
        if not part:
            continue
        if "://" not in part:
            part = f"http://{part}"
        ranged = re.fullmatch(r"(https?://[^/]+):(\d+)-(\d+)", part)
        if ranged:
            low, high = int(ranged[2]), int(ranged[3])
            if not 0 < low <= high <= 65535 or high - low >= MAX_AGENTS:
                raise CallsError(f"--agents: bad port range {low}-{high}")
            urls += [f"{ranged[1]}:{port}" for port in range(low, high + 1)]
        else:
            urls.append(part)
    if not urls:
        raise CallsError("--agents names no agent (e.g. http://127.0.0.1:8090-8091)")
    if len(urls) > MAX_AGENTS:
        raise CallsError(f"--agents names {len(urls)} agents, more than {MAX_AGENTS}")
    return urls


@dataclass
class AgentCalls:
    """One agent of a pool as ``calls --agents`` found it."""

    url: str
    instance: str | None = None
    calls: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "instance": self.instance, "calls": self.calls, "error": self.error}


def pool_calls(settings: Settings, urls: Sequence[str], timeout: float = 5.0) -> list[AgentCalls]:
    """Every agent's live calls, asked all at once; an agent that does not answer says why.

    Each call is marked with the agent that has it: its own ``instance``, else the agent's header."""
    token = _token(settings)

    def ask(url: str) -> AgentCalls:
        try:
            found, instance = fetch_calls(url, token, timeout)
        except CallsError as exc:
            return AgentCalls(url, error=str(exc))
        for call in found:
            call.setdefault("instance", instance)
            call["agent_url"] = url
        return AgentCalls(url, instance, found)

    with ThreadPoolExecutor(max_workers=min(16, len(urls))) as pool:
        return list(pool.map(ask, urls))
