"""The scripted dialog's lead: the call's caller turns replayed through a fresh lead dialog.

The dialog provider is shared by a profile's calls and keeps no state between turns:
the history it is given is the call's state. Replaying the caller's turns through
``LeadDialog`` (pure) gives the same step for the same turns, after a barge-in too.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ari_agent.leads.dialog import LeadDialog, LeadSpec, Phase, Step
from providers.base import Intent, Message


@dataclass(frozen=True)
class LeadTurn:
    step: Step
    opened_by: Intent | None  # the intent whose reply goes before the first question


def replay(
    spec: LeadSpec, match: Callable[[str], Intent | None], messages: Sequence[Message], today: dt.date
) -> LeadTurn | None:
    """The lead's answer to the last caller turn, or None when the lead is not (or no longer) on."""
    dialog: LeadDialog | None = None
    if spec.intent is None:
        dialog = LeadDialog(spec, today=today)
        dialog.start()  # the greeting asked the first question
    turn: LeadTurn | None = None
    for message in messages:
        if message.role != "user":
            continue
        if dialog is not None and dialog.phase is not Phase.DONE:
            turn = LeadTurn(dialog.hear(message.content), None)
            continue
        # No lead on (not started, or over): a turn may start one.
        dialog, turn = None, None
        intent = match(message.content) if spec.intent is not None else None
        if intent is not None and intent.name == spec.intent:
            dialog = LeadDialog(spec, today=today)
            turn = LeadTurn(dialog.start(), intent)
    return turn
