"""Hand a completed lead to another system: a signed JSON POST, delivered at least once.

The signature scheme (documented in the README, checked by ``verify``):

    X-Ari-Agent-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>

``t`` is the time of the attempt, so a receiver can refuse stale or replayed requests;
the body is the exact bytes sent. ``Idempotency-Key`` is the lead's id: the same on every
attempt, the redelivery included, so a receiver that processed a lead whose reply was
lost recognises it. Payload building, signing and verifying are pure; ``deliver`` does IO.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp

from ari_agent.leads.models import Lead

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Ari-Agent-Signature"
KEY_HEADER = "Idempotency-Key"
EVENT = "lead.completed"


def payload(lead: Lead) -> bytes:
    """The JSON body: the lead's id (the idempotency key), its call, caller and fields."""
    body = {
        "event": EVENT,
        "id": lead.lead_id,
        "call_id": lead.call_id,
        "profile": lead.profile,
        "created_at": lead.created_at.isoformat(),
        "caller": {"number": lead.caller_number, "name": lead.caller_name},
        "fields": dict(lead.fields),
    }
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header's value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(secret: str, header: str, body: bytes, now: float, tolerance_s: float = 300) -> bool:
    """What a receiver does: the signature matches and was made within ``tolerance_s`` of ``now``."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts.get("t", ""))
    except ValueError:
        return False
    if abs(now - timestamp) > tolerance_s:
        return False
    want = sign(secret, timestamp, body).rsplit("v1=", 1)[1]
    return hmac.compare_digest(want, parts.get("v1", ""))


def retryable(status: int) -> bool:
    """A later attempt may succeed: the receiver is busy, down or timed out (not a refusal)."""
    return status in (408, 425, 429) or status >= 500


@dataclass(frozen=True)
class Policy:
    attempts: int = 5  # in all, the first included
    backoff_s: float = 2.0  # before the second attempt; doubled each time
    max_backoff_s: float = 300.0
    timeout_s: float = 10.0  # per attempt

    def delay(self, attempt: int) -> float:
        """Wait before attempt ``attempt`` (2, 3, ...)."""
        return min(self.backoff_s * 2.0 ** (attempt - 2), self.max_backoff_s)


@dataclass(frozen=True)
class Delivery:
    delivered: bool
    attempts: int
    error: str | None  # the last failure: "HTTP 503", "timeout", "ClientConnectorError"


async def deliver(
    session: aiohttp.ClientSession,
    url: str,
    secret: str | None,
    lead: Lead,
    policy: Policy,
    *,
    clock: Callable[[], float],
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> Delivery:
    """POST the lead until a 2xx, a refusal (4xx but 408/425/429) or the attempts run out."""
    body = payload(lead)
    error: str | None = None
    for attempt in range(1, policy.attempts + 1):
        if attempt > 1:
            await sleep(policy.delay(attempt))
        headers = {"Content-Type": "application/json", KEY_HEADER: lead.lead_id}
        if secret:
            headers[SIGNATURE_HEADER] = sign(secret, int(clock()), body)
        try:
            timeout = aiohttp.ClientTimeout(total=policy.timeout_s)
            async with session.post(url, data=body, headers=headers, timeout=timeout) as resp:
                status = resp.status
        except TimeoutError:
            error = "timeout"
        except aiohttp.ClientError as exc:
            # The class only: a message may quote the URL, and its query may hold a token.
            error = type(exc).__name__
        else:
            if 200 <= status < 300:
                return Delivery(True, attempt, None)
            error = f"HTTP {status}"
            if not retryable(status):
                log.warning("lead %s refused by the webhook: %s", lead.lead_id, error)
                return Delivery(False, attempt, error)
        log.info("lead %s: webhook attempt %d failed: %s", lead.lead_id, attempt, error)
    return Delivery(False, policy.attempts, error)
