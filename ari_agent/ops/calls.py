"""``ari-agent calls``: active calls from a running agent; ``calls show ID``: one ended call.

Ended calls come from a :class:`CallSource`: the call store (SQLite, on by
default) or the records file (``<records dir>/calls.jsonl``). Both give the
one record shape of ``CallRecord.to_json()``, field for field; only turn
texts differ, kept in the store only when the operator opted in.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Protocol

from ari_agent.config import Settings
from ari_agent.errors import ConfigError
from ari_agent.observability.http import http_token
from ari_agent.store import CallStore, StoredCall, StoreError


class CallSource(Protocol):
    def get(self, call_id: str) -> dict[str, Any] | None:
        """The call whose id is ``call_id`` or starts with it (if only one does)."""

    def by_channel(self, channel_id: str) -> dict[str, Any] | None:
        """The call of the channel that entered the agent's Stasis app."""


class RecordsFile:
    """Ended calls from ``calls.jsonl`` (written by the agent when ``AGENT_RECORDS__DIR`` is set)."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "calls.jsonl"

    def all(self) -> list[dict[str, Any]]:
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
            return exact[-1]
        return matches[0] if len(matches) == 1 else None

    def by_channel(self, channel_id: str) -> dict[str, Any] | None:
        return next((r for r in reversed(self.all()) if r.get("channel_id") == channel_id), None)


class StoreFile:
    """Ended calls from the agent's call store (``AGENT_STORE__PATH``)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def get(self, call_id: str) -> dict[str, Any] | None:
        return self._read(lambda store: store.find_call(call_id))

    def by_channel(self, channel_id: str) -> dict[str, Any] | None:
        return self._read(lambda store: store.call_of_channel(channel_id))

    def _read(self, query: Any) -> dict[str, Any] | None:
        async def run() -> StoredCall | None:
            async with CallStore(self.path, retention_days=None) as store:
                result: StoredCall | None = await query(store)
                return result

        try:
            call = asyncio.run(run())
        except StoreError as exc:
            raise CallsError(str(exc)) from None
        return None if call is None else call.to_json()


class CallsError(Exception):
    """The calls could not be read; the message says why and what to do."""


def call_source(settings: Settings, *, transcripts: bool = False) -> CallSource:
    """The store when the agent keeps one here, else the records file.

    ``transcripts``: the records file first, as it always has the turn texts (the
    store only when the operator opted in).
    """
    store = (
        StoreFile(settings.store.path) if settings.store.enabled and settings.store.path.is_file() else None
    )
    records = RecordsFile(settings.records.dir) if settings.records.dir is not None else None
    ordered = [records, store] if transcripts else [store, records]
    source = next((s for s in ordered if s is not None), None)
    if source is None:
        raise CallsError(
            f"no ended calls here: no call store at {settings.store.path} (AGENT_STORE__PATH) and no "
            "records directory (AGENT_RECORDS__DIR, make up sets it); point either at the agent's"
        )
    return source


def agent_url(settings: Settings, path: str) -> str:
    host = settings.http.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.http.port}{path}"


def active_calls(settings: Settings, timeout: float = 5.0) -> list[dict[str, Any]]:
    """GET /calls of the running agent."""
    url = agent_url(settings, "/calls")
    req = urllib.request.Request(url)
    try:
        token = http_token(settings.http)
    except ConfigError as exc:
        raise CallsError(str(exc)) from None
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            data = json.loads(resp.read())
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
    return [c for c in data if isinstance(c, dict)]
