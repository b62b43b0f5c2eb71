"""The lead dialog's turns (pure), and the scripted dialog replaying them."""

from __future__ import annotations

import datetime as dt

import pytest

from ari_agent.leads.dialog import LeadDialog, LeadSpec, Phase, Step
from ari_agent.leads.fields import FieldDef
from ari_agent.profiles import ProfileConfig
from providers.base import Message, TextDelta, ToolCall
from providers.scripted.llm import ScriptedLLM

TODAY = dt.date(2026, 12, 1)
NUMBER = FieldDef(name="callback_number", type="digits", min_digits=4, max_digits=10, question="What number?")
DAY = FieldDef(name="day", type="one_of", options=["monday", "tuesday", "friday"], question="Which day?")
NEW = FieldDef(name="new_patient", type="yes_no", label="new patient", question="Are you a new patient?")
NOTE = FieldDef(name="note", required=False, question="Anything else?")
SPEC = LeadSpec(fields=(NUMBER, DAY, NEW))


def keys(dialog: LeadDialog, digits: str) -> list[Step]:
    return [dialog.hear(f"caller pressed {d}") for d in digits]


def test_asks_until_complete_with_a_correction() -> None:
    d = LeadDialog(SPEC, today=TODAY)
    assert d.start() == Step("What number?")
    steps = keys(d, "5551234#")
    assert [s.say for s in steps[:-1]] == [""] * 7  # keys gather silently until #
    assert steps[-1] == Step("Which day?", {"callback_number": "5551234"})
    assert d.hear("monday") == Step("Are you a new patient?", {"day": "monday"})
    confirm = d.hear("yes")
    assert confirm.captured == {"new_patient": "yes"}
    assert confirm.say == (
        "I have callback number 5 5 5 1 2 3 4, day monday and new patient yes. Is that right?"
    )
    assert d.hear("no") == Step("Which one should I change: callback number, day or new patient?")
    assert d.hear("day") == Step("Which day?")
    again = d.hear("friday")
    assert again.captured == {"day": "friday"}
    assert "day friday" in again.say and again.say.endswith(
        "Is that right?"
    )  # straight back to the read-back
    assert d.hear("yes that is right") == Step("Thank you, I have everything I need.", outcome="complete")
    assert d.values == {"callback_number": "5551234", "day": "friday", "new_patient": "yes"}
    assert d.phase is Phase.DONE


def test_invalid_answers_are_asked_again_then_given_up() -> None:
    d = LeadDialog(SPEC, today=TODAY)
    d.start()
    assert d.hear("hello") == Step("Sorry, I need that as digits. What number?")
    assert d.hear("one two") == Step("Sorry, I need 4 to 10 digits. What number?")
    assert d.hear("banana") == Step("Sorry, I could not get those details.", outcome="failed")
    assert d.phase is Phase.DONE


def test_keys_for_choices_and_the_confirmation() -> None:
    d = LeadDialog(SPEC, today=TODAY)
    d.start()
    d.hear("five five five one two three four")
    assert d.hear("caller pressed 3").captured == {"day": "friday"}
    assert d.hear("caller pressed 2").captured == {"new_patient": "no"}
    assert d.hear("caller pressed 1").outcome == "complete"


def test_star_restarts_a_keyed_number_and_a_fixed_length_needs_no_hash() -> None:
    pin = FieldDef(name="pin", type="digits", min_digits=4, max_digits=4)
    d = LeadDialog(LeadSpec(fields=(pin,)), today=TODAY)
    d.start()
    keys(d, "12*")
    last = keys(d, "9876")[-1]
    assert last.captured == {"pin": "9876"}
    assert last.say == "I have pin 9 8 7 6. Is that right?"


def test_a_correction_named_in_the_confirmation() -> None:
    d = LeadDialog(SPEC, today=TODAY)
    d.start()
    d.hear("five five five one two three four")
    d.hear("tuesday")
    d.hear("no")
    assert d.hear("no, change the day") == Step("Which day?")
    assert d.hear("maybe") == Step("Sorry, please choose monday, tuesday or friday. Which day?")


def test_an_optional_field_is_asked_once() -> None:
    d = LeadDialog(LeadSpec(fields=(NOTE, NEW)), today=TODAY)
    assert d.start() == Step("Anything else?")
    assert d.hear(" ") == Step("Are you a new patient?")  # nothing given: skipped
    assert d.hear("yes").say == "I have new patient yes. Is that right?"


def test_unclear_confirmation_repeats_the_read_back() -> None:
    d = LeadDialog(LeadSpec(fields=(NEW,)), today=TODAY)
    d.start()
    d.hear("no")
    assert d.hear("hmm") == Step("Sorry, please answer yes or no. I have new patient no. Is that right?")


PROFILE = {
    "greeting": "Hello. What number?",
    "tools": ["hangup", "transfer", "capture", "set_variable"],
    "capture_fields": [
        NUMBER.model_dump(exclude_defaults=True),
        DAY.model_dump(exclude_defaults=True),
        "note",
    ],
    "lead": {"on_complete": "transfer", "destination": "desk"},
    "destinations": {"desk": {"extension": "200"}},
    "intents": [{"name": "bye", "examples": ["goodbye"], "reply": "Bye.", "action": "hangup"}],
}


async def run(llm: ScriptedLLM, said: list[str]) -> list[list[object]]:
    history = [Message("system", "x")]
    out: list[list[object]] = []
    for text in said:
        history.append(Message("user", text))
        events = [e async for e in llm.chat(history, ())]
        out.append(events)
        reply = "".join(e.text for e in events if isinstance(e, TextDelta))
        if reply:
            history.append(Message("assistant", reply))
    return out


async def test_scripted_dialog_replays_the_lead_from_the_greeting() -> None:
    profile = ProfileConfig.model_validate(PROFILE)
    assert profile.field_names == ["callback_number", "day", "note"]
    llm = ScriptedLLM.create(profile.provider_context("p", "scripted"))
    turns = await run(llm, ["five five five one two three four", "friday", "", "yes"])
    assert turns[0] == [
        TextDelta("Which day?"),
        ToolCall("capture", {"field": "callback_number", "value": "5551234"}, "scripted-1"),
    ]
    assert turns[1][0] == TextDelta("What is your note?")
    assert isinstance(turns[3][0], TextDelta) and turns[3][0].text == "Thank you, I have everything I need."
    assert [(e.name, e.arguments) for e in turns[3] if isinstance(e, ToolCall)] == [
        ("set_variable", {"name": "AI_AGENT_RESULT", "value": "lead"}),
        ("transfer", {"destination": "desk"}),
    ]


async def test_scripted_dialog_starts_the_lead_on_its_intent() -> None:
    data = {
        **PROFILE,
        "lead": {"intent": "callback"},
        "intents": [{"name": "callback", "examples": ["call me back"], "reply": "Sure."}],
    }
    llm = ScriptedLLM.create(ProfileConfig.model_validate(data).provider_context("p", "scripted"))
    turns = await run(llm, ["hello", "call me back", "caller pressed 5"])
    assert turns[0] == [TextDelta(llm.fallback_reply)]
    assert turns[1] == [TextDelta("Sure. What number?")]
    assert turns[2] == []  # a key of the number: nothing said yet


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"lead": {"intent": "nope"}}, "lead.intent 'nope' is not one of the intents"),
        ({"lead": {"on_complete": "transfer", "destination": "x"}}, "lead transfers to 'x'"),
        ({"capture_fields": ["a"]}, "at least one required field"),
        ({"tools": ["hangup"]}, "needs the capture tool"),
        ({"capture_fields": ["a", "a"]}, "names a field twice"),
    ],
)
def test_lead_settings_are_checked(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ProfileConfig.model_validate({**PROFILE, **change})


def test_the_offline_grammar_hears_the_lead_words() -> None:
    hints = ProfileConfig.model_validate(PROFILE).provider_context("p").hints
    for word in ("yes", "no", "yes i am", "friday", "on friday", "friday please", "day", "change the day"):
        assert word in hints
    assert "seven" not in hints  # digits are keyed offline (lone digit words took other answers)


def test_the_llm_capture_tool_describes_the_typed_fields() -> None:
    from ari_agent.conversation.tools import tool_specs

    spec = next(s for s in tool_specs(ProfileConfig.model_validate(PROFILE)) if s.name == "capture")
    assert "- day: one_of (monday, tuesday, friday), required; ask: Which day?" in spec.description
    assert "- note: text, optional; ask: What is your note?" in spec.description
    assert "set_variable AI_AGENT_RESULT=lead" in spec.description


def test_check_warns_about_answers_the_offline_recogniser_cannot_hear() -> None:
    from ari_agent.profiles.catalogue import plan_profile

    data = {
        **PROFILE,
        "capture_fields": [*PROFILE["capture_fields"], {"name": "email", "type": "email"}],  # type: ignore[list-item]
    }
    texts = [p.problem for p in plan_profile("p", ProfileConfig.model_validate(data)).problems]
    assert any("answers to note, email (free text, email, date) cannot be heard" in t for t in texts), texts
    assert any("does not hear spoken numbers: callback_number must be keyed" in t for t in texts), texts
    keyed = {**data, "capture_fields": [{**NUMBER.model_dump(), "question": "Key in your number."}]}
    texts = [p.problem for p in plan_profile("p", ProfileConfig.model_validate(keyed)).problems]
    assert not any("spoken numbers" in t for t in texts)


async def test_a_lead_given_up_ends_with_the_failed_result() -> None:
    data = {**PROFILE, "lead": {"max_attempts": 2, "on_failed": "hangup"}}
    llm = ScriptedLLM.create(ProfileConfig.model_validate(data).provider_context("p", "scripted"))
    turns = await run(llm, ["hello", "banana"])
    assert turns[0] == [TextDelta("Sorry, I need that as digits. What number?")]
    assert turns[1][0] == TextDelta("Sorry, I could not get those details.")
    assert [(e.name, e.arguments) for e in turns[1] if isinstance(e, ToolCall)] == [
        ("set_variable", {"name": "AI_AGENT_RESULT", "value": "lead_incomplete"}),
        ("hangup", {}),
    ]
