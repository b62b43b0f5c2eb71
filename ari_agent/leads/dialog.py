"""The lead dialog: ask for what is missing, read back, confirm, correct (sans-IO, pure).

One ``LeadDialog`` per call; each caller turn goes in as text (``hear``) and a
``Step`` comes out: what to say, the fields it set, and whether the lead is still
open, complete or given up. Nothing here waits, speaks or stores: the dialog
provider replays a call's turns through a fresh dialog (so the same turns always
give the same state), and the pipeline acts on the step's tools.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Literal

from ari_agent.leads.fields import FieldDef, Invalid, one_of, parse, parse_keys, read_back, yes_no

_KEY_RE = re.compile(r"^\s*caller pressed\s+([0-9*#a-d])\s*\.?\s*$", re.IGNORECASE)

Outcome = Literal["open", "complete", "failed"]


@dataclass(frozen=True)
class LeadSpec:
    """A profile's lead: its fields and what the agent says around them."""

    fields: tuple[FieldDef, ...]
    intent: str | None = None  # the intent that starts the lead; None: the call starts it
    confirm: str = "I have {summary}. Is that right?"
    ask_correction: str = "Which one should I change: {labels}?"
    retry: str = "Sorry, {reason}. {question}"
    complete_reply: str = "Thank you, I have everything I need."
    failed_reply: str = "Sorry, I could not get those details."
    max_attempts: int = 3  # tries at a required field before the lead is given up
    # What the dialog does at the end (the dialog provider turns them into tools).
    on_complete: Literal["none", "hangup", "transfer"] = "hangup"
    on_failed: Literal["none", "hangup", "transfer"] = "hangup"
    destination: str | None = None
    result: str | None = "lead"
    failed_result: str | None = "lead_incomplete"

    def phrases(self) -> list[str]:
        """Words callers say in a lead: choices, yes/no, digits, field names (the offline grammar)."""
        # Whole answers, not only "yes": the offline recogniser rejects a word that short.
        said = [
            "yes",
            "no",
            "yes please",
            "no thank you",
            "yes that is right",
            "yes that is correct",
            "no that is wrong",
            "no that is not right",
            "yes i am",
            "no i am not",
            "yes i do",
            "no i do not",
        ]
        for f in self.fields:
            said.append(f.spoken_label)
            said.append(f"change the {f.spoken_label}")
            for option in f.options:
                # A lone weekday was rejected over a phone line; with a word around it, heard.
                said.extend((option, f"on {option}", f"{option} please"))
        # No digit words: a grammar spots one key phrase, so a spoken number is not heard
        # whole, and lone digits took the place of other answers ("monday" -> "one",
        # "day" -> "eight"). Offline, numbers are keyed; a cloud recogniser hears them.
        return list(dict.fromkeys(said))


@dataclass(frozen=True)
class Step:
    say: str  # empty: nothing to say (a key of a longer number)
    captured: dict[str, str] = field(default_factory=dict)  # fields set or changed by this turn
    outcome: Outcome = "open"


class Phase(Enum):
    ASKING = "asking"
    CONFIRMING = "confirming"
    CHOOSING = "choosing"  # which field to correct
    DONE = "done"


class LeadDialog:
    def __init__(self, spec: LeadSpec, *, today: dt.date) -> None:
        self.spec = spec
        self.today = today
        self.values: dict[str, str] = {}
        self.phase = Phase.ASKING
        self.current: FieldDef | None = None
        self._skipped: set[str] = set()
        self._attempts = 0
        self._keys = ""  # keys pressed for the current field, before #
        self._correcting = False  # the current field is a correction: confirm right after it

    # -- transitions --------------------------------------------------------

    def start(self) -> Step:
        """The first question (or the read-back, if nothing is missing)."""
        return self._next()

    def hear(self, text: str) -> Step:
        key = _KEY_RE.match(text)
        if self.phase is Phase.DONE:
            return Step("", outcome="complete")
        if self.phase is Phase.ASKING:
            return self._answer(key.group(1) if key else None, text)
        if self.phase is Phase.CONFIRMING:
            return self._confirmation(key.group(1) if key else None, text)
        return self._choice(key.group(1) if key else None, text)

    def _answer(self, key: str | None, text: str) -> Step:
        current = self.current
        assert current is not None
        if key is not None:
            if current.type in ("digits", "phone"):
                if key == "*":  # start the number again
                    self._keys = ""
                    return Step("")
                if key != "#":
                    self._keys += key
                    low, high = current.digit_bounds()
                    if len(self._keys) < high or low != high:
                        return Step("")  # more keys to come, until # (or the fixed length)
                parsed = parse_keys(current, self._keys)
            else:
                parsed = parse_keys(current, key)
        else:
            parsed = parse(current, text, today=self.today)
        self._keys = ""
        if isinstance(parsed, Invalid):
            self._attempts += 1
            if not current.required:
                self._skipped.add(current.name)
                return self._next()
            if self._attempts >= self.spec.max_attempts:
                self.phase = Phase.DONE
                return Step(self.spec.failed_reply, outcome="failed")
            return Step(self.spec.retry.format(reason=parsed.reason, question=current.prompt))
        self.values[current.name] = parsed.value
        step = self._next()
        return Step(step.say, {current.name: parsed.value, **step.captured}, step.outcome)

    def _confirmation(self, key: str | None, text: str) -> Step:
        answer = {"1": "yes", "2": "no"}.get(key or "") if key else yes_no(text)
        named = self._named(text) if key is None else None
        if answer == "yes" and named is None:
            self.phase = Phase.DONE
            return Step(self.spec.complete_reply, outcome="complete")
        if named is not None:  # "no, the day is wrong", "change the day"
            return self._ask(named, correcting=True)
        if answer == "no":
            self.phase = Phase.CHOOSING
            return Step(self.spec.ask_correction.format(labels=self._labels()))
        return Step(self.spec.retry.format(reason="please answer yes or no", question=self._summary()))

    def _choice(self, key: str | None, text: str) -> Step:
        named: FieldDef | None = None
        if key is not None and key.isdigit() and 1 <= int(key) <= len(self.spec.fields):
            named = self.spec.fields[int(key) - 1]
        elif key is None:
            named = self._named(text)
        if named is None:
            reason = "I did not catch which one"
            return Step(self.spec.retry.format(reason=reason, question=self._choice_question()))
        return self._ask(named, correcting=True)

    # -- helpers ------------------------------------------------------------

    def _next(self) -> Step:
        if self._correcting:
            self._correcting = False
            return self._read_back()
        for f in self.spec.fields:
            if f.name not in self.values and f.name not in self._skipped:
                return self._ask(f, correcting=False)
        return self._read_back()

    def _ask(self, f: FieldDef, *, correcting: bool) -> Step:
        self.phase = Phase.ASKING
        self.current = f
        self._attempts = 0
        self._keys = ""
        self._correcting = correcting
        return Step(f.prompt)

    def _read_back(self) -> Step:
        self.phase = Phase.CONFIRMING
        self.current = None
        return Step(self._summary())

    def _summary(self) -> str:
        parts = [
            f"{f.spoken_label} {read_back(f, self.values[f.name])}"
            for f in self.spec.fields
            if f.name in self.values
        ]
        summary = (
            parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1] if parts else ""
        )
        return self.spec.confirm.format(summary=summary)

    def _labels(self) -> str:
        labels = [f.spoken_label for f in self.spec.fields]
        return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " or " + labels[-1]

    def _choice_question(self) -> str:
        return self.spec.ask_correction.format(labels=self._labels())

    def _named(self, text: str) -> FieldDef | None:
        """The field the caller names ("the day", "my phone number"), if exactly one."""
        label = one_of(text, [f.spoken_label for f in self.spec.fields])
        return next((f for f in self.spec.fields if f.spoken_label == label), None)
