"""A completed lead as kept in the store and handed to the webhook."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

# stored: no webhook configured; pending: being delivered; delivered; failed: attempts ran out
# or the receiver refused (``leads redeliver`` sends it again).
LeadStatus = Literal["stored", "pending", "delivered", "failed"]


def new_lead_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class Lead:
    lead_id: str  # also the webhook's idempotency key
    call_id: str
    profile: str
    created_at: datetime
    fields: Mapping[str, str]
    caller_number: str | None = None
    caller_name: str | None = None
    status: LeadStatus = "stored"
    attempts: int = 0
    last_error: str | None = None
    delivered_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "lead_id": self.lead_id,
            "call_id": self.call_id,
            "profile": self.profile,
            "created_at": self.created_at.isoformat(),
            "caller": {"number": self.caller_number, "name": self.caller_name},
            "fields": dict(self.fields),
            "status": self.status,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "delivered_at": self.delivered_at.isoformat() if self.delivered_at else None,
        }
