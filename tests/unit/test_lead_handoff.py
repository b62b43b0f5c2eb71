"""Leads handed off: the webhook against a real local aiohttp receiver, and the store."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from ari_agent.config import LeadsSettings
from ari_agent.conversation.records import CallRecord
from ari_agent.leads.handoff import LeadHandoff, completed_lead
from ari_agent.leads.models import Lead
from ari_agent.leads.webhook import KEY_HEADER, SIGNATURE_HEADER, Policy, deliver, payload, sign, verify
from ari_agent.profiles import ProfileConfig
from ari_agent.store import CallStore, StoredCall
from ari_agent.store.crypto import DataCipher, new_key

SECRET = "whsec-test-0123456789"
NOW = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
LEAD = Lead("a" * 32, "c" * 32, "lead", NOW, {"callback_number": "5551234", "day": "friday"}, "5550199")


class Receiver:
    """A webhook receiver whose answers the test scripts: "drop" processes the lead, then loses the reply."""

    def __init__(self, answers: list[str]) -> None:
        self.answers = answers
        self.seen: list[tuple[dict[str, str], bytes]] = []
        self.processed: set[str] = set()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append((dict(request.headers), body))
        answer = self.answers.pop(0) if self.answers else "200"
        if answer == "drop":
            self.processed.add(request.headers[KEY_HEADER])
            assert request.transport is not None
            request.transport.close()  # processed, but the sender never hears so
            return web.Response()
        if answer == "200":
            self.processed.add(request.headers[KEY_HEADER])
        return web.Response(status=int(answer))


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    rx = Receiver([])
    app = web.Application()
    app.router.add_post("/leads", rx.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield rx, f"http://127.0.0.1:{port}/leads"
    await runner.cleanup()


def test_signature_scheme() -> None:
    body = payload(LEAD)
    header = sign(SECRET, 1_700_000_000, body)
    assert header.startswith("t=1700000000,v1=") and len(header.split("v1=")[1]) == 64
    assert verify(SECRET, header, body, now=1_700_000_100)
    assert not verify(SECRET, header, body + b" ", now=1_700_000_100)  # body changed
    assert not verify("other", header, body, now=1_700_000_100)  # wrong secret
    assert not verify(SECRET, header, body, now=1_700_000_400)  # stale: replayed later
    assert json.loads(body) == {
        "event": "lead.completed",
        "id": LEAD.lead_id,
        "call_id": LEAD.call_id,
        "profile": "lead",
        "created_at": "2026-12-01T02:00:00+00:00",
        "caller": {"number": "5550199", "name": None},
        "fields": {"callback_number": "5551234", "day": "friday"},
    }


async def test_every_attempt_carries_the_same_key_also_after_a_lost_reply(
    receiver: tuple[Receiver, str],
) -> None:
    rx, url = receiver
    rx.answers = ["drop", "503", "200"]
    waits: list[float] = []

    async def sleep(s: float) -> None:
        waits.append(s)

    async with aiohttp.ClientSession() as session:
        done = await deliver(session, url, SECRET, LEAD, Policy(5, 0.5), clock=time.time, sleep=sleep)
    assert (done.delivered, done.attempts, done.error) == (True, 3, None)
    assert waits == [0.5, 1.0]  # the backoff doubles
    assert [h[KEY_HEADER] for h, _ in rx.seen] == [LEAD.lead_id] * 3
    assert rx.processed == {LEAD.lead_id}  # a receiver deduplicating on the key keeps one lead
    for headers, body in rx.seen:
        assert body == payload(LEAD)
        assert verify(SECRET, headers[SIGNATURE_HEADER], body, now=time.time())


async def test_a_refusal_is_not_retried_and_running_out_is_reported(receiver: tuple[Receiver, str]) -> None:
    rx, url = receiver

    async def sleep(s: float) -> None:
        pass

    async with aiohttp.ClientSession() as session:
        rx.answers = ["400"]
        refused = await deliver(session, url, None, LEAD, Policy(5, 0.01), clock=time.time, sleep=sleep)
        assert (refused.delivered, refused.attempts, refused.error) == (False, 1, "HTTP 400")
        assert SIGNATURE_HEADER not in rx.seen[0][0]  # no secret: unsigned
        rx.answers = ["500", "429", "500"]
        out = await deliver(session, url, SECRET, LEAD, Policy(3, 0.01), clock=time.time, sleep=sleep)
        assert (out.delivered, out.attempts, out.error) == (False, 3, "HTTP 500")
        gone = await deliver(session, "http://127.0.0.1:9/x", SECRET, LEAD, Policy(2, 0.01), clock=time.time)
        assert not gone.delivered and gone.error == "ClientConnectorError"


def _raw(directory: Path) -> bytes:
    """Every byte in the store's files (database and WAL)."""
    return b"".join(p.read_bytes() for p in directory.iterdir() if p.is_file())


PROFILE = ProfileConfig.model_validate(
    {
        "tools": ["hangup", "capture", "set_variable"],
        "capture_fields": [
            {"name": "callback_number", "type": "digits"},
            {"name": "day", "type": "one_of", "options": ["monday", "friday"]},
            "note",
        ],
        "lead": {},
    }
)


def record(
    result: str | None = "lead", fields: dict[str, str] | None = None, number: str = "5550199"
) -> CallRecord:
    r = CallRecord(
        call_id="d" * 32,
        channel_id="ch-1",
        caller={"number": number, "name": "Jo"},
        profile="lead",
        started_at="2026-12-01T01:59:00.000Z",
        ended_at="2026-12-01T02:00:00.000Z",
        end_reason="hangup_by_agent",
        fields={"callback_number": "5551234", "day": "friday"} if fields is None else fields,
    )
    if result is not None:
        r.variables["AI_AGENT_RESULT"] = result
    return r


def test_a_lead_is_complete_with_its_result_and_required_fields() -> None:
    lead = completed_lead(PROFILE, record(), NOW)
    assert lead is not None and lead.fields == {"callback_number": "5551234", "day": "friday"}
    assert lead.caller_number == "5550199" and len(lead.lead_id) == 32
    assert completed_lead(PROFILE, record(result=None), NOW) is None  # not confirmed
    assert completed_lead(PROFILE, record(fields={"day": "friday"}), NOW) is None  # a required one missing
    assert completed_lead(ProfileConfig(), record(), NOW) is None  # no lead in the profile


async def test_handoff_stores_sealed_delivers_and_keeps_failures(
    tmp_path: Path, receiver: tuple[Receiver, str]
) -> None:
    rx, url = receiver
    path = tmp_path / "calls.db"
    async with CallStore(path, retention_days=None, cipher=DataCipher.from_text(new_key())) as store:
        await store.save_call(StoredCall.from_record(record(), store_text=False))
        conf = LeadsSettings(webhook_url=url, webhook_secret=SECRET, attempts=2, backoff_s=0.01)  # type: ignore[arg-type]
        handoff = LeadHandoff(conf, store)
        rx.answers = ["200"]
        good = await handoff.call_ended(PROFILE, record())
        await handoff.close()  # delivered before the receiver's next answers are set
        rx.answers = ["500", "500"]
        bad = await handoff.call_ended(PROFILE, record(number="5550177"))
        await handoff.close()
        assert good is not None and bad is not None
        stored = {lead.lead_id: lead for lead in await store.list_leads()}
        assert stored[good.lead_id].status == "delivered" and stored[good.lead_id].attempts == 1
        assert stored[bad.lead_id].status == "failed" and stored[bad.lead_id].attempts == 2
        assert stored[bad.lead_id].last_error == "HTTP 500"
        assert [lead.lead_id for lead in await store.list_leads(status="failed")] == [bad.lead_id]
        assert (await store.find_lead(good.lead_id[:8])) == stored[good.lead_id]
        assert stored[good.lead_id].fields == {"callback_number": "5551234", "day": "friday"}
        raw = _raw(tmp_path)
        assert b"5551234" not in raw and b"friday" not in raw  # sealed
        assert SECRET.encode() not in raw
        erased = await store.erase(caller_number="5550177")
        assert erased == []  # no call of that number, but its lead goes all the same
        assert [lead.lead_id for lead in await store.list_leads()] == [good.lead_id]
        await store.erase(caller_number="5550199")
        assert await store.list_leads() == []


async def _cli(env: dict[str, str], *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ari_agent",
        "leads",
        *args,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_leads_cli_lists_shows_and_redelivers_with_an_audit_entry(
    tmp_path: Path, receiver: tuple[Receiver, str]
) -> None:
    rx, url = receiver
    path = tmp_path / "calls.db"
    async with CallStore(path, retention_days=None) as store:
        await store.save_call(StoredCall.from_record(record(), store_text=False))
        conf = LeadsSettings(webhook_url=url, attempts=1, backoff_s=0.01)
        rx.answers = ["503"]
        handoff = LeadHandoff(conf, store)
        lead = await handoff.call_ended(PROFILE, record())
        await handoff.close()
    assert lead is not None
    audit = tmp_path / "audit.jsonl"
    env = {
        "AGENT_STORE__PATH": str(path),
        "AGENT_AUDIT__PATH": str(audit),
        "AGENT_LEADS__WEBHOOK_URL": url,
        "AGENT_LEADS__WEBHOOK_SECRET": SECRET,
        "AGENT_LEADS__BACKOFF_S": "0.01",
    }
    code, out = await _cli(env, "list", "--status", "failed")
    assert code == 0 and lead.lead_id[:12] in out and "HTTP 503" in out
    code, out = await _cli(env, "show", lead.lead_id[:10], "--json")
    assert code == 0 and json.loads(out)["fields"] == {"callback_number": "5551234", "day": "friday"}
    rx.answers = ["200"]
    code, out = await _cli(env, "redeliver", "--failed")
    assert code == 0, out
    assert f"{lead.lead_id}  delivered after 1 attempt(s)" in out
    assert [h[KEY_HEADER] for h, _ in rx.seen] == [lead.lead_id, lead.lead_id]  # the same key again
    assert verify(SECRET, rx.seen[1][0][SIGNATURE_HEADER], rx.seen[1][1], now=time.time())
    entry = json.loads(audit.read_text().splitlines()[-1])
    assert entry["action"] == "leads_redeliver"
    assert entry["leads"] == [{"lead_id": lead.lead_id, "delivered": True, "attempts": 1, "error": None}]
    assert SECRET not in out and SECRET not in audit.read_text() and "5551234" not in audit.read_text()
    code, out = await _cli(env, "list", "--json")
    assert [(x["status"], x["attempts"]) for x in json.loads(out)] == [("delivered", 2)]


async def test_leads_left_pending_are_delivered_when_the_agent_starts_again(
    tmp_path: Path, receiver: tuple[Receiver, str]
) -> None:
    rx, url = receiver
    pending = Lead("b" * 32, "d" * 32, "lead", NOW, {"day": "monday"}, "5550100", status="pending")
    async with CallStore(tmp_path / "calls.db", retention_days=None) as store:
        await store.save_lead(pending)
        await store.save_lead(Lead("e" * 32, "d" * 32, "lead", NOW, {"day": "friday"}, status="failed"))
        handoff = LeadHandoff(LeadsSettings(webhook_url=url), store)
        assert await handoff.resume() == 1  # the failed one waits for leads redeliver
        await handoff.close()
        assert [h[KEY_HEADER] for h, _ in rx.seen] == [pending.lead_id]
        again = await store.find_lead(pending.lead_id)
        assert again is not None and (again.status, again.attempts) == ("delivered", 1)
