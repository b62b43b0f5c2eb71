"""Typed lead fields and how a caller's answer becomes a valid value (sans-IO, pure).

A field is asked for, heard as text (a recogniser's words, or "caller pressed N" keys
gathered by the dialog) and parsed here: ``parse`` returns the value to keep, in a
normal form the dialplan and a webhook can use as is (digits without spaces, an
address with ``@``, a date as ISO ``YYYY-MM-DD``, ``yes``/``no``, the option as
written in the profile), or a reason the caller can be told.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

FieldType = Literal["text", "digits", "phone", "email", "date", "yes_no", "one_of"]

# Types whose answer can be keyed in: digits end with #, a choice is one key.
KEYED_TYPES: frozenset[str] = frozenset({"digits", "phone", "yes_no", "one_of"})

_NAME = r"^[a-z][a-z0-9_]{0,39}$"


class FieldDef(BaseModel):
    """One detail a lead needs: ``capture_fields`` entries in a profile."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_NAME)  # AI_FIELD_<NAME> in the dialplan
    type: FieldType = "text"
    question: str = ""  # empty: "What is your <label>?"
    label: str = ""  # read back and named for a correction; empty: the name, "_" as spaces
    required: bool = True
    min_digits: int | None = Field(None, ge=1, le=40)  # digits, phone
    max_digits: int | None = Field(None, ge=1, le=40)
    options: list[str] = []  # one_of: what the caller may choose, in key order (1, 2, ...)
    pattern: str | None = None  # the normal form must match this regex as a whole

    @model_validator(mode="after")
    def _consistent(self) -> FieldDef:
        if self.type == "one_of" and len(self.options) < 2:
            raise ValueError(f"field {self.name}: one_of needs at least two options")
        if self.type != "one_of" and self.options:
            raise ValueError(f"field {self.name}: options are for one_of fields")
        if self.type == "one_of" and len(self.options) > 9:
            raise ValueError(f"field {self.name}: at most nine options (one key each)")
        if self.min_digits and self.max_digits and self.min_digits > self.max_digits:
            raise ValueError(f"field {self.name}: min_digits is above max_digits")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"field {self.name}: pattern does not compile: {exc}") from None
        return self

    @property
    def spoken_label(self) -> str:
        return self.label or self.name.replace("_", " ")

    @property
    def prompt(self) -> str:
        return self.question or f"What is your {self.spoken_label}?"

    @property
    def keyed(self) -> bool:
        return self.type in KEYED_TYPES

    def digit_bounds(self) -> tuple[int, int]:
        """How many digits a digits or phone answer may have."""
        low, high = (7, 15) if self.type == "phone" else (1, 40)
        return self.min_digits or low, self.max_digits or high


def field_defs(entries: list[str | FieldDef]) -> tuple[FieldDef, ...]:
    """The list form (names only) as optional text fields: what ``capture`` accepted before."""
    return tuple(FieldDef(name=e, required=False) if isinstance(e, str) else e for e in entries)


@dataclass(frozen=True)
class Valid:
    value: str


@dataclass(frozen=True)
class Invalid:
    reason: str  # said to the caller before the question again


Parsed = Valid | Invalid

_WORD_RE = re.compile(r"[a-z0-9@.+_-]+")
_DIGIT_WORDS = {
    "zero": "0",
    "oh": "0",
    "o": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
}
_FILLERS = frozenset("um uh er it is its my the number a an and please thats that".split())
YES_WORDS = frozenset("yes yeah yep yup correct right sure affirmative absolutely".split())
NO_WORDS = frozenset("no nope nah not wrong incorrect negative".split())


def words(text: str) -> list[str]:
    return _WORD_RE.findall(text.lower().replace("'", ""))


def spoken_digits(text: str) -> str | None:
    """Digits said as words or figures ("five 5 five", "double two"); None if anything else is said."""
    out: list[str] = []
    repeat = 1
    for word in words(text):
        word = word.strip(".,")
        if word in ("double", "triple"):
            repeat = 2 if word == "double" else 3
            continue
        if word.isdigit():
            out.append(word * repeat if len(word) == 1 else word)
        elif word in _DIGIT_WORDS:
            out.append(_DIGIT_WORDS[word] * repeat)
        elif word in _FILLERS or word == "-":
            continue
        else:
            return None
        repeat = 1
    return "".join(out) or None


def yes_no(text: str) -> str | None:
    """ "yes" or "no" when the answer says one of them and not both."""
    said = set(words(text))
    yes, no = bool(said & YES_WORDS), bool(said & NO_WORDS)
    if yes == no:
        return None
    return "yes" if yes else "no"


_EMAIL_RE = re.compile(r"^[a-z0-9._%+-]+@[a-z0-9-]+(\.[a-z0-9-]+)*\.[a-z]{2,}$")
_EMAIL_WORDS = {"at": "@", "dot": ".", "underscore": "_", "dash": "-", "hyphen": "-", "plus": "+"}


def email(text: str) -> str | None:
    """An address typed or spelled out ("jo dot smith at example dot com")."""
    parts = [_EMAIL_WORDS.get(w, w) for w in text.lower().split()]
    value = "".join(parts).strip(".")
    return value if _EMAIL_RE.match(value) else None


_MONTHS = {
    m: i
    for i, names in enumerate(
        [
            ("january", "jan"),
            ("february", "feb"),
            ("march", "mar"),
            ("april", "apr"),
            ("may",),
            ("june", "jun"),
            ("july", "jul"),
            ("august", "aug"),
            ("september", "sep", "sept"),
            ("october", "oct"),
            ("november", "nov"),
            ("december", "dec"),
        ],
        start=1,
    )
    for m in names
}
_ORDINALS = {
    w: i
    for i, w in enumerate(
        "first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth thirteenth "
        "fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth twentieth".split(),
        start=1,
    )
}
_ISO_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _day_number(tokens: list[str]) -> int | None:
    """1-31 from "21", "21st", "twenty first", "thirtieth"."""
    text = " ".join(tokens)
    m = re.fullmatch(r"(\d{1,2})(st|nd|rd|th)?", text)
    if m:
        return int(m.group(1))
    if text in _ORDINALS:
        return _ORDINALS[text]
    if text == "thirtieth":
        return 30
    for tens, base in (("twenty", 20), ("thirty", 30)):
        if tokens and tokens[0] == tens and len(tokens) == 2 and tokens[1] in _ORDINALS:
            return base + _ORDINALS[tokens[1]]
    return None


def date(text: str, today: dt.date) -> str | None:
    """ISO date from "2026-12-24", "today", "tomorrow", "december 24th", "the 24th of december 2027".

    Without a year the next such day from ``today`` is meant (a booking, a callback).
    """
    said = text.strip().lower()
    if _ISO_RE.match(said):
        try:
            return dt.date.fromisoformat(said).isoformat()
        except ValueError:
            return None
    tokens = [w for w in words(said) if w not in ("the", "of", "on")]
    if tokens == ["today"]:
        return today.isoformat()
    if tokens == ["tomorrow"]:
        return (today + dt.timedelta(days=1)).isoformat()
    year: int | None = None
    if tokens and re.fullmatch(r"\d{4}", tokens[-1]):
        year = int(tokens.pop())
    months = [i for i, t in enumerate(tokens) if t in _MONTHS]
    if len(months) != 1:
        return None
    at = months[0]
    month = _MONTHS[tokens[at]]
    day = _day_number(tokens[:at] or tokens[at + 1 :]) if not (tokens[:at] and tokens[at + 1 :]) else None
    if day is None:
        return None
    try:
        value = dt.date(year or today.year, month, day)
    except ValueError:
        return None
    if year is None and value < today:
        try:
            value = value.replace(year=today.year + 1)
        except ValueError:
            return None
    return value.isoformat()


def one_of(text: str, options: list[str]) -> str | None:
    """The one option the answer names (all its words, anywhere); None for none or several."""
    said = words(text)
    hits = [o for o in options if _contains(said, words(o))]
    # "next monday" naming "monday" and "next monday": the longest wins.
    hits = [o for o in hits if not any(o != p and _contains(words(p), words(o)) for p in hits)]
    return hits[0] if len(hits) == 1 else None


def _contains(said: list[str], phrase: list[str]) -> bool:
    n = len(phrase)
    return n > 0 and any(said[i : i + n] == phrase for i in range(len(said) - n + 1))


def parse(field: FieldDef, text: str, *, today: dt.date) -> Parsed:
    """The caller's answer to ``field`` as its value, or why it is not one."""
    text = text.strip()
    if not text:
        return Invalid("I did not hear an answer")
    value: str | None
    if field.type == "text":
        value = " ".join(text.split())
    elif field.type in ("digits", "phone"):
        plus = field.type == "phone" and text.lstrip().lower().startswith(("+", "plus"))
        value = spoken_digits(re.sub(r"^\s*(\+|plus\b)", "", text, flags=re.IGNORECASE))
        if value is None:
            return Invalid("I need that as digits")
        low, high = field.digit_bounds()
        if not low <= len(value) <= high:
            size = f"{low}" if low == high else f"{low} to {high}"
            return Invalid(f"I need {size} digits")
        value = ("+" if plus else "") + value
    elif field.type == "email":
        value = email(text)
        if value is None:
            return Invalid("that did not sound like an email address")
    elif field.type == "date":
        value = date(text, today)
        if value is None:
            return Invalid("I did not catch the date")
    elif field.type == "yes_no":
        value = yes_no(text)
        if value is None:
            return Invalid("please answer yes or no")
    else:
        value = one_of(text, field.options)
        if value is None:
            return Invalid("please choose " + _alternatives(field.options))
    if field.pattern is not None and not re.fullmatch(field.pattern, value):
        return Invalid(f"that is not a valid {field.spoken_label}")
    return Valid(value)


def parse_keys(field: FieldDef, keys: str) -> Parsed:
    """Keys pressed for ``field`` (without the closing #): digits as they are, a choice by its number."""
    if field.type in ("digits", "phone"):
        if not keys.isdigit():
            return Invalid("I need that as digits")
        return parse(field, keys, today=dt.date.min)
    if field.type == "yes_no" and keys in ("1", "2"):
        return Valid("yes" if keys == "1" else "no")
    if field.type == "one_of" and keys.isdigit() and 1 <= int(keys) <= len(field.options):
        return Valid(field.options[int(keys) - 1])
    return Invalid("that key is not one of the choices")


def _alternatives(options: list[str]) -> str:
    return ", ".join(options[:-1]) + " or " + options[-1]


def read_back(field: FieldDef, value: str) -> str:
    """How the agent says a value back: digits one by one, so a voice never reads a number."""
    if field.type in ("digits", "phone"):
        digits = " ".join(value.lstrip("+"))
        return "plus " + digits if value.startswith("+") else digits
    if field.type == "email":
        return value.replace("@", " at ").replace(".", " dot ")
    if field.type == "date":
        day = dt.date.fromisoformat(value)
        return f"{day:%A} {day:%B} {day.day}, {day.year}"
    return value
