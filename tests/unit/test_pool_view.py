"""Which agent of a pool has which call: /calls names its agent, records and the store keep
the instance, and ``ari-agent calls --agents`` lists every agent's live calls (real loopback servers)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from ari_agent.config import Settings
from ari_agent.conversation.records import CallRecord
from ari_agent.observability.http import INSTANCE_HEADER, make_http_app
from ari_agent.observability.metrics import Metrics
from ari_agent.ops.calls import CallsError, agent_urls, pool_calls
from ari_agent.ops.commands import show_record
from ari_agent.ops.output import Out
from ari_agent.store import CallStore, StoredCall
from ari_agent.store.sqlite import MIGRATIONS, SCHEMA_VERSION
from tests.unit.test_store import make_call

REPO = Path(__file__).resolve().parents[2]


def call_of(instance: str, n: int) -> dict[str, Any]:
    return {
        "call_id": f"{instance}-call-{n}",
        "channel_id": f"chan-{instance}-{n}",
        "profile": "frontdesk",
        "state": "talking",
        "started_at": "2025-03-01T12:00:00.000Z",
        "instance": instance,
    }


async def test_calls_answer_names_the_agent_even_when_empty() -> None:
    app = make_http_app(Metrics(), lambda: True, lambda: [], token="", instance="2")
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/calls")
        assert resp.headers[INSTANCE_HEADER] == "2"
        assert await resp.json() == []
    app = make_http_app(Metrics(), lambda: True, lambda: [], token="")
    async with TestClient(TestServer(app)) as client:
        assert INSTANCE_HEADER not in (await client.get("/calls")).headers


def test_agent_urls() -> None:
    assert agent_urls("http://127.0.0.1:8090-8092") == [
        "http://127.0.0.1:8090",
        "http://127.0.0.1:8091",
        "http://127.0.0.1:8092",
    ]
    assert agent_urls("10.0.0.5:8090, http://10.0.0.6:8090/") == [
        "http://10.0.0.5:8090",
        "http://10.0.0.6:8090",
    ]
    for bad in ("", " , ", "http://h:9000-8000", "http://h:1-1000"):
        with pytest.raises(CallsError, match="--agents"):
            agent_urls(bad)


async def _serve(calls: list[dict[str, Any]], instance: str) -> tuple[web.AppRunner, str]:
    app = make_http_app(Metrics(), lambda: True, lambda: calls, token="", instance=instance)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


async def test_pool_view_lists_each_agents_calls_and_a_silent_one(tmp_path: Path) -> None:
    one, url1 = await _serve([call_of("1", 1), call_of("1", 2)], "1")
    # An agent from before calls carried "instance": its header still names it.
    legacy = {k: v for k, v in call_of("2", 1).items() if k != "instance"}
    two, url2 = await _serve([legacy], "2")
    dead, url3 = await _serve([], "3")
    await dead.cleanup()  # nothing listens there any more
    try:
        settings = Settings(_env_file=None)  # type: ignore[call-arg]
        found = await asyncio.to_thread(pool_calls, settings, [url1, url2, url3], 2.0)
        assert [(a.url, a.instance, len(a.calls), a.error is None) for a in found] == [
            (url1, "1", 2, True),
            (url2, "2", 1, True),
            (url3, None, 0, False),
        ]
        assert [c["instance"] for a in found for c in a.calls] == ["1", "1", "2"]
        assert found[1].calls[0]["agent_url"] == url2
        assert "no agent answers" in (found[2].error or "")

        # The CLI, as an operator runs it: a table with the agent of each call, exit 1 (one is down).
        env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "AGENT_STORE__PATH": str(tmp_path / "c.db")}
        proc = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "ari_agent", "calls", "--agents", f"{url1},{url2},{url3}"],
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
            timeout=60,
        )
        assert proc.returncode == 1, proc.stdout + proc.stderr
        rows = {line.split()[0]: line.split()[-1] for line in proc.stdout.splitlines() if "-call-" in line}
        assert rows == {"1-call-1": "1", "1-call-2": "1", "2-call-1": "2"}
        assert f"agent 1 at {url1}: 2 calls" in proc.stdout
        assert f"agent 2 at {url2}: 1 call" in proc.stdout
        assert f"agent at {url3}: no agent answers" in proc.stdout
        proc = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "ari_agent", "calls", "--json", "--agents", f"{url1},{url2}"],
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        agents = json.loads(proc.stdout)["agents"]
        assert [(a["instance"], [c["call_id"] for c in a["calls"]]) for a in agents] == [
            ("1", ["1-call-1", "1-call-2"]),
            ("2", ["2-call-1"]),
        ]
    finally:
        await one.cleanup()
        await two.cleanup()


def test_record_and_store_shape_carry_the_instance() -> None:
    record = CallRecord("c9", "chan", {"number": "1", "name": "x"}, "frontdesk", instance="3")
    record.ended_at = record.started_at
    record.end_reason = "hangup_by_agent"
    assert record.to_json()["instance"] == "3"
    assert StoredCall.from_record(record, store_text=True).to_json() == record.to_json()
    out = Out(json_mode=False)
    lines: list[str] = []
    out.line = lines.append  # type: ignore[method-assign]
    show_record(out, record.to_json())
    assert "  agent       3" in lines


async def test_a_version_2_store_gets_the_instance_column(tmp_path: Path) -> None:
    path = tmp_path / "calls.db"
    with sqlite3.connect(path) as raw:
        for script in MIGRATIONS[:2]:
            for statement in script.split(";"):
                raw.execute(statement)
        raw.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        raw.execute("INSERT INTO schema_version VALUES (2)")
        raw.execute(
            "INSERT INTO calls VALUES ('old', 'chan', 'frontdesk', NULL, NULL,"
            " '2025-03-01T12:00:00.000000Z', NULL, 'busy', 'BUSY', NULL, 0, '{}')"
        )
    raw.close()
    mine = dataclasses.replace(make_call("c1"), instance="2")
    async with CallStore(path, retention_days=None) as store:
        old = await store.get_call("old")
        assert old is not None and old.end_reason == "busy" and old.instance is None
        await store.save_call(mine)
        assert await store.get_call("c1") == mine
        listed = {c.call_id: c.instance for c in await store.list_calls(limit=10)}
        assert listed == {"old": None, "c1": "2"}
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT MAX(version) FROM schema_version").fetchone() == (SCHEMA_VERSION,)
    raw.close()


def test_metrics_name_the_agent() -> None:
    from prometheus_client import generate_latest

    metrics = Metrics()
    metrics.instance_info.labels(instance="2", app="ai-agent-pool-2", pool="true").set(1)
    text = generate_latest(metrics.registry).decode()
    assert 'ari_agent_instance_info{app="ai-agent-pool-2",instance="2",pool="true"} 1.0' in text
