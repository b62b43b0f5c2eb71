"""Finding 4: braces in a profile's instructions never fail a call, and check names unknown {names}."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from ari_agent.ari.events import Caller, Channel, DialplanLocation
from ari_agent.conversation.session import CallSession
from ari_agent.profiles import ProfileConfig
from ari_agent.profiles.catalogue import plan_profile

JSON = '{"intent": "hours", "slots": {"day": "monday"}}'


class _Ari:
    async def get_variable(self, channel_id: str, name: str) -> str:
        return {"LAB_NUMBER": "7001"}.get(name, "")


async def instructions(text: str, template_variables: tuple[str, ...] = ()) -> str:
    """What the session sends the model for a call from 5551234 to 100@demo."""
    profile = ProfileConfig(instructions=text, template_variables=list(template_variables))
    caller = Channel(
        id="c1",
        name="PJSIP/x",
        state="Up",
        caller=Caller(name="Ann", number="5551234"),
        dialplan=DialplanLocation(context="demo", exten="100", priority=1),
    )
    stub: Any = SimpleNamespace(profile=profile, caller=caller, deps=SimpleNamespace(ari=_Ari()))
    return (await CallSession._instructions(stub))[profile.language]


async def test_each_language_gets_the_call_details() -> None:
    profile = ProfileConfig(
        instructions="Caller {caller_number}.",
        languages={"es": {"instructions": "Llama {caller_number}."}, "fr": {"hint": "En français."}},
    )
    caller = Channel(
        id="c1", name="PJSIP/x", state="Up", caller=Caller(name="Ann", number="5551234"), dialplan=None
    )
    stub: Any = SimpleNamespace(profile=profile, caller=caller, deps=SimpleNamespace(ari=_Ari()))
    assert await CallSession._instructions(stub) == {
        "en-US": "Caller 5551234.",
        "es": "Llama 5551234.",
        "fr": "Caller 5551234.\n\nEn français.",
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"Answer as JSON like {JSON}.", f"Answer as JSON like {JSON}."),
        ("Use format {0} and {}.", "Use format {0} and {}."),
        ("Unknown {nmae} stays.", "Unknown {nmae} stays."),
        ("A spec {caller_number:>20} or {x!r} stays.", "A spec {caller_number:>20} or {x!r} stays."),
        ("Unbalanced { and } and {{ stay.", "Unbalanced { and } and {{ stay."),
        (
            "Caller {caller_name} <{caller_number}> at {extension}@{context}.",
            "Caller Ann <5551234> at 100@demo.",
        ),
        ("Write {{caller_number}} literally.", "Write {caller_number} literally."),
        ('JSON with a name: {"to": "{caller_number}"}', '{"to": "5551234"}'.join(["JSON with a name: ", ""])),
    ],
)
async def test_instructions_never_fail_and_only_known_names_are_filled(text: str, expected: str) -> None:
    assert await instructions(text) == expected


async def test_declared_channel_variables_are_filled() -> None:
    assert await instructions("Line {LAB_NUMBER}, {OTHER}.", ("LAB_NUMBER",)) == "Line 7001, {OTHER}."


def test_json_example_survives_intact() -> None:
    import asyncio

    text = asyncio.run(instructions(f"Example: {JSON}"))
    assert json.loads(text.removeprefix("Example: ")) == json.loads(JSON)


def test_check_warns_about_unknown_names_only() -> None:
    profile = ProfileConfig(
        instructions=f"Hi {{caller_number}} {{nmae}} {JSON} {{0}} {{LAB}} {{{{caller_name}}}}",
        template_variables=["LAB"],
    )
    warnings = [p for p in plan_profile("x", profile).problems if p.field == "profiles.x.instructions"]
    assert [p.severity for p in warnings] == ["warning"]
    assert "{nmae}" in str(warnings[0]) and "template_variables" in str(warnings[0])
    assert "caller_number" in str(warnings[0])  # the names it does know


def test_check_warns_about_old_style_escapes() -> None:
    profile = ProfileConfig(instructions='Reply {{"a": 1}}')
    warnings = [p for p in plan_profile("x", profile).problems if p.field == "profiles.x.instructions"]
    assert len(warnings) == 1 and "{{" in str(warnings[0])
