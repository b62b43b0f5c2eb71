"""A completed lead's way out of a call: the store, then the webhook (at least once).

A lead is complete when the call's result is the lead's (the dialog sets it once the
caller confirmed the read-back) and every required field was captured: the same rule for
the scripted dialog and an LLM, so the core never asks which one ran the call.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from datetime import UTC, datetime

import aiohttp

from ari_agent.config import LeadsSettings
from ari_agent.conversation.records import CallRecord
from ari_agent.leads.models import Lead, LeadStatus, new_lead_id
from ari_agent.leads.webhook import Delivery, Policy, deliver
from ari_agent.profiles import ProfileConfig
from ari_agent.secretfile import read_secret
from ari_agent.store import CallStore, StoreError

log = logging.getLogger(__name__)


def completed_lead(profile: ProfileConfig, record: CallRecord, now: datetime) -> Lead | None:
    """The call's lead, if the profile runs one and the call completed it."""
    lead = profile.lead
    if lead is None or lead.result is None or record.variables.get("AI_AGENT_RESULT") != lead.result:
        return None
    fields = {f.name: record.fields[f.name] for f in profile.fields if f.name in record.fields}
    if any(f.required and f.name not in fields for f in profile.fields):
        return None
    return Lead(
        lead_id=new_lead_id(),
        call_id=record.call_id,
        profile=record.profile,
        created_at=now,
        fields=fields,
        caller_number=record.caller.get("number") or None,
        caller_name=record.caller.get("name") or None,
    )


def webhook_secret(conf: LeadsSettings) -> str | None:
    return read_secret(
        "leads.webhook_secret",
        conf.webhook_secret.get_secret_value() if conf.webhook_secret else None,
        conf.webhook_secret_file,
        secrets_name="agent_leads_webhook_secret",
    )


def policy(conf: LeadsSettings) -> Policy:
    return Policy(conf.attempts, conf.backoff_s, conf.max_backoff_s, conf.timeout_s)


async def send(conf: LeadsSettings, secret: str | None, lead: Lead, store: CallStore | None) -> Delivery:
    """Deliver one lead and write the outcome to the store (``leads redeliver`` uses it too)."""
    assert conf.webhook_url is not None
    async with aiohttp.ClientSession() as session:
        done = await deliver(session, conf.webhook_url, secret, lead, policy(conf), clock=time.time)
    if store is not None:
        status: LeadStatus = "delivered" if done.delivered else "failed"
        at = datetime.now(UTC) if done.delivered else None
        try:
            await store.lead_delivered(lead.lead_id, status, done.attempts, done.error, at)
        except StoreError as exc:
            log.error("lead %s: could not record its delivery: %s", lead.lead_id, exc)
    if not done.delivered:
        log.warning("lead %s not delivered after %d attempt(s): %s", lead.lead_id, done.attempts, done.error)
    return done


class LeadHandoff:
    """Per agent: stores each completed lead and delivers it in the background."""

    def __init__(self, conf: LeadsSettings, store: CallStore | None) -> None:
        self.conf = conf
        self.store = store
        self.secret = webhook_secret(conf)  # read once: a missing file fails start-up, not a call
        self._tasks: set[asyncio.Task[Delivery]] = set()

    async def call_ended(self, profile: ProfileConfig | None, record: CallRecord) -> Lead | None:
        lead = None if profile is None else completed_lead(profile, record, datetime.now(UTC))
        if lead is None:
            return None
        if self.conf.webhook_url:
            lead = dataclasses.replace(lead, status="pending")
        if self.store is not None:
            try:
                await self.store.save_lead(lead)
            except StoreError as exc:
                log.error("lead %s: could not store it: %s", lead.lead_id, exc)
        if self.conf.webhook_url:
            self._spawn(lead)
        return lead

    async def resume(self) -> int:
        """Deliver again the leads left pending (an agent stopped mid-delivery): at least once.

        Agents sharing a store may both send one: the receiver deduplicates on the key.
        """
        if not self.conf.webhook_url or self.store is None:
            return 0
        try:
            pending = await self.store.list_leads(status="pending", limit=10_000)
        except StoreError as exc:
            log.error("could not read pending leads: %s", exc)
            return 0
        for lead in pending:
            self._spawn(lead)
        if pending:
            log.info("delivering %d lead(s) left pending", len(pending))
        return len(pending)

    def _spawn(self, lead: Lead) -> None:
        task = asyncio.create_task(send(self.conf, self.secret, lead, self.store), name="lead-webhook")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self, grace_s: float = 5.0) -> None:
        """Give deliveries in flight a moment; one cut short stays pending for ``leads redeliver``."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace_s)
        for task in list(self._tasks):
            task.cancel()
