"""``ari-agent leads list|show|redeliver``: completed leads in the call store.

A redelivery sends the stored lead again with its own id as the idempotency key (a
receiver that already has it keeps one), and is written to the audit log: who sent
which lead where, and the outcome; never its fields, the caller's number or the secret.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ari_agent.config import Settings
from ari_agent.errors import ConfigError
from ari_agent.leads.handoff import send, webhook_secret
from ari_agent.leads.models import Lead
from ari_agent.ops.output import Out, clean
from ari_agent.store import CallStore, StoreError
from ari_agent.store.crypto import DataKeyError, data_cipher

HEADERS = ("LEAD", "CREATED", "PROFILE", "STATUS", "ATTEMPTS", "LAST ERROR")


class LeadsError(Exception):
    pass


def _store(settings: Settings) -> CallStore:
    if not settings.store.path.is_file():
        raise LeadsError(f"no call store at {settings.store.path} (AGENT_STORE__PATH)")
    return CallStore(settings.store.path, retention_days=None, cipher=data_cipher(settings.store))


async def _list(settings: Settings, status: str | None) -> list[Lead]:
    async with _store(settings) as store:
        return await store.list_leads(status=status, limit=1000)


async def _find(settings: Settings, lead_id: str) -> Lead:
    async with _store(settings) as store:
        lead = await store.find_lead(lead_id)
    if lead is None:
        raise LeadsError(f"no lead (or more than one) with id {clean(lead_id)}")
    return lead


async def _redeliver(settings: Settings, lead_ids: list[str], failed: bool) -> list[dict[str, Any]]:
    conf = settings.leads
    if not conf.webhook_url:
        raise LeadsError("no webhook to deliver to: set AGENT_LEADS__WEBHOOK_URL")
    secret = webhook_secret(conf)
    async with _store(settings) as store:
        leads = [await store.find_lead(i) for i in lead_ids]
        if None in leads:
            raise LeadsError("a lead id matches no lead (or more than one)")
        chosen = [lead for lead in leads if lead is not None]
        if failed:
            chosen += await store.list_leads(status="failed", limit=10_000)
            chosen += await store.list_leads(status="pending", limit=10_000)
        done = []
        for lead in {lead.lead_id: lead for lead in chosen}.values():
            delivery = await send(conf, secret, lead, store)
            done.append(
                {
                    "lead_id": lead.lead_id,
                    "delivered": delivery.delivered,
                    "attempts": delivery.attempts,
                    "error": delivery.error,
                }
            )
    return done


def run(
    settings: Settings, action: str, lead_ids: list[str], status: str | None, failed: bool, as_json: bool
) -> int:
    out = Out(json_mode=as_json)
    try:
        if action == "list":
            leads = asyncio.run(_list(settings, status))
            if as_json:
                out.json([lead.to_json() for lead in leads])
            else:
                out.line("  ".join(HEADERS))
                for lead in leads:
                    created = lead.created_at.strftime("%Y-%m-%d %H:%M:%S")
                    row = (lead.lead_id[:12], created, lead.profile, lead.status, str(lead.attempts))
                    out.line("  ".join((*row, clean(lead.last_error or ""))))
            return 0
        if action == "show":
            if len(lead_ids) != 1:
                out.line("usage: ari-agent leads show ID")
                return 2
            lead = asyncio.run(_find(settings, lead_ids[0]))
            if as_json:
                out.json(lead.to_json())
            else:
                for key, value in lead.to_json().items():
                    if key == "fields":
                        out.line("fields:")
                        for name, field_value in lead.fields.items():
                            out.line(f"  {name}: {clean(field_value)}")
                    else:
                        out.line(f"{key}: {clean(value)}")
            return 0
        if not lead_ids and not failed:
            out.line("usage: ari-agent leads redeliver ID... | --failed")
            return 2
        done = asyncio.run(_redeliver(settings, lead_ids, failed))
        audit_error = _audit(settings, done)
        if as_json:
            out.json({"redelivered": done, **({"audit_error": audit_error} if audit_error else {})})
        else:
            for item in done:
                state = "delivered" if item["delivered"] else f"failed ({item['error']})"
                out.line(f"{item['lead_id']}  {state} after {item['attempts']} attempt(s)")
            if audit_error:
                out.line(out.paint(f"warning: not audited: {audit_error}", "warn"))
        failed_now = any(not item["delivered"] for item in done)
        return 1 if failed_now or audit_error else 0
    except (LeadsError, StoreError, DataKeyError, ConfigError) as exc:
        if as_json:
            out.json({"error": str(exc)})
        else:
            out.line(out.paint(f"error: {exc}", "fail"))
        return 1


def _audit(settings: Settings, done: list[dict[str, Any]]) -> str | None:
    if not settings.audit.enabled:
        return None
    from ari_agent.ops.audit import AuditError, AuditLog

    try:
        AuditLog(settings.audit_path).record("leads_redeliver", leads=done)
    except AuditError as exc:
        return str(exc)
    return None
