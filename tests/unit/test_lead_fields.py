from __future__ import annotations

import datetime as dt

import pytest
from pydantic import ValidationError

from ari_agent.leads.fields import (
    FieldDef,
    Invalid,
    Valid,
    field_defs,
    parse,
    parse_keys,
    read_back,
    spoken_digits,
)

TODAY = dt.date(2026, 12, 1)


def p(field: FieldDef, text: str) -> Valid | Invalid:
    return parse(field, text, today=TODAY)


@pytest.mark.parametrize(
    ("said", "want"),
    [
        ("five five five one two three four", "5551234"),
        ("5 5 5 1234", "5551234"),
        ("oh double seven", "077"),
        ("it's five five", "55"),
        ("five apples", None),
        ("", None),
    ],
)
def test_spoken_digits(said: str, want: str | None) -> None:
    assert spoken_digits(said) == want


def test_digits_bounds_and_pattern() -> None:
    pin = FieldDef(name="pin", type="digits", min_digits=4, max_digits=4)
    assert p(pin, "one two three four") == Valid("1234")
    assert p(pin, "one two three") == Invalid("I need 4 digits")
    assert p(pin, "one two three four five") == Invalid("I need 4 digits")
    assert p(pin, "hello") == Invalid("I need that as digits")
    odd = FieldDef(name="code", type="digits", pattern=r"[13579]+")
    assert p(odd, "one three") == Valid("13")
    assert isinstance(p(odd, "two"), Invalid)


def test_phone() -> None:
    phone = FieldDef(name="phone", type="phone")
    assert p(phone, "plus four four seven seven zero zero nine zero zero one two three") == Valid(
        "+447700900123"
    )
    assert p(phone, "555 1234") == Valid("5551234")
    assert p(phone, "five five") == Invalid("I need 7 to 15 digits")


def test_email() -> None:
    mail = FieldDef(name="email", type="email")
    assert p(mail, "jo dot smith at example dot com") == Valid("jo.smith@example.com")
    assert p(mail, "Jo@Example.org") == Valid("jo@example.org")
    assert isinstance(p(mail, "jo at example"), Invalid)


@pytest.mark.parametrize(
    ("said", "want"),
    [
        ("2027-02-03", "2027-02-03"),
        ("today", "2026-12-01"),
        ("tomorrow", "2026-12-02"),
        ("december 24th", "2026-12-24"),
        ("the twenty first of december", "2026-12-21"),
        ("january 5", "2027-01-05"),  # past this year: the next one
        ("march 3 2028", "2028-03-03"),
        ("february 30", None),
        ("2027-02-30", None),
        ("next week", None),
    ],
)
def test_date(said: str, want: str | None) -> None:
    got = p(FieldDef(name="day", type="date"), said)
    assert got == (Valid(want) if want else Invalid("I did not catch the date"))


def test_yes_no() -> None:
    f = FieldDef(name="new_patient", type="yes_no")
    assert p(f, "yes please") == Valid("yes")
    assert p(f, "nope") == Valid("no")
    assert p(f, "yes no") == Invalid("please answer yes or no")
    assert parse_keys(f, "1") == Valid("yes")
    assert parse_keys(f, "2") == Valid("no")
    assert isinstance(parse_keys(f, "3"), Invalid)


def test_one_of() -> None:
    f = FieldDef(name="day", type="one_of", options=["monday", "tuesday", "next monday"])
    assert p(f, "tuesday please") == Valid("tuesday")
    assert p(f, "next monday") == Valid("next monday")  # the longest option said
    assert p(f, "monday or tuesday") == Invalid("please choose monday, tuesday or next monday")
    assert parse_keys(f, "2") == Valid("tuesday")
    assert isinstance(parse_keys(f, "4"), Invalid)


def test_keys_for_digits() -> None:
    f = FieldDef(name="account", type="digits", max_digits=6)
    assert parse_keys(f, "123456") == Valid("123456")
    assert parse_keys(f, "1234567") == Invalid("I need 1 to 6 digits")
    assert parse_keys(f, "") == Invalid("I need that as digits")


def test_text_and_empty() -> None:
    f = FieldDef(name="name", type="text")
    assert p(f, "  Jo   Smith ") == Valid("Jo Smith")
    assert p(f, " ") == Invalid("I did not hear an answer")


def test_definitions_are_checked() -> None:
    with pytest.raises(ValidationError, match="at least two options"):
        FieldDef(name="day", type="one_of", options=["monday"])
    with pytest.raises(ValidationError, match="options are for one_of"):
        FieldDef(name="day", type="text", options=["a", "b"])
    with pytest.raises(ValidationError, match="min_digits is above max_digits"):
        FieldDef(name="pin", type="digits", min_digits=5, max_digits=4)
    with pytest.raises(ValidationError, match="pattern does not compile"):
        FieldDef(name="pin", type="digits", pattern="(")
    with pytest.raises(ValidationError):
        FieldDef(name="Bad Name")


def test_list_form_is_optional_text() -> None:
    defs = field_defs(["callback_number", FieldDef(name="day", type="date")])
    assert [(d.name, d.type, d.required) for d in defs] == [
        ("callback_number", "text", False),
        ("day", "date", True),
    ]
    assert defs[0].prompt == "What is your callback number?"


def test_read_back() -> None:
    assert read_back(FieldDef(name="p", type="phone"), "+4477") == "plus 4 4 7 7"
    assert read_back(FieldDef(name="e", type="email"), "a@b.co") == "a at b dot co"
    assert read_back(FieldDef(name="d", type="date"), "2026-12-24") == "Thursday December 24, 2026"
