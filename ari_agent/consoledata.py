"""What the live console shows and does, read from the running app (see observability/console.py).

Text (turn words, the caller's number and name) is shown only where the operator opted in:
the profile's ``store_text``, else ``AGENT_STORE__TEXT`` — the same opt-in as the call store.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

from ari_agent.conversation.records import format_utc
from providers.resilience import BREAKERS

if TYPE_CHECKING:
    from ari_agent.app import AgentApp
    from ari_agent.observability.console import Action

# Store rows read per listing before the outcome filter: a console, not a report.
RECENT_SCAN = 500
RECENT_SHOWN = 50


class AgentConsole:
    """The :class:`~ari_agent.observability.console.ConsoleSource` of one agent."""

    def __init__(self, app: AgentApp) -> None:
        self.app = app
        self.instance = app.settings.instance_id

    def _text(self, profile_text: bool | None) -> bool:
        return self.app.settings.store.text if profile_text is None else profile_text

    def live_calls(self) -> list[dict[str, Any]]:
        return [s.live(text=self._text(s.profile.store_text)) for s in self.app.sessions]

    async def recent_calls(self, *, day: date | None, outcome: str | None) -> list[dict[str, Any]]:
        store = self.app.store
        if store is None:
            return []
        since = datetime.combine(day, time(), UTC) if day else None
        until = since + timedelta(days=1) if since else None
        rows = await store.list_calls(RECENT_SCAN, since)
        shown = []
        for row in rows:
            if until is not None and row.started_at >= until:
                continue
            if outcome and row.end_reason != outcome:
                continue
            shown.append(
                {
                    "call_id": row.call_id,
                    "started_at": format_utc(row.started_at),
                    "ended_at": format_utc(row.ended_at) if row.ended_at else None,
                    "profile": row.profile,
                    "end_reason": row.end_reason,
                    "status": row.status,
                    "turns": row.turn_count,
                    "instance": row.instance,
                }
            )
            if len(shown) >= RECENT_SHOWN:
                break
        return shown

    async def stored_call(self, call_id: str) -> dict[str, Any] | None:
        store = self.app.store
        if store is None:
            return None
        call = await store.get_call(call_id)
        if call is None:
            return None
        data = call.to_json()
        if not call.store_text:
            # Stored for `calls show` and erasure; on a page only with the text opt-in.
            data.pop("caller", None)
            data.pop("fields", None)
        return data

    def provider_health(self) -> dict[str, str]:
        return dict(sorted(BREAKERS.states().items()))

    async def operator_action(self, call_id: str, action: Action) -> bool:
        for session in self.app.sessions:
            if session.call_id == call_id:
                await session.hand_back("operator_hangup" if action == "hangup" else "operator_handback")
                return True
        return False

    async def audit(self, action: str, **details: Any) -> None:
        await self.app.audit(action, **details)
