from __future__ import annotations

import pytest

from providers.base import Intent, Message, ProviderContext, TextDelta, ToolCall
from providers.scripted.llm import ScriptedLLM, normalise
from tests.unit.speech import FRONTDESK_FALLBACK, FRONTDESK_INTENTS, frontdesk_context


@pytest.fixture
def llm() -> ScriptedLLM:
    return ScriptedLLM.create(frontdesk_context())


def name(intent: Intent | None) -> str | None:
    return intent.name if intent else None


def test_normalise() -> None:
    assert normalise("That’s all, THANK you!") == ("that", "is", "all", "thank", "you")
    assert normalise("I'd like it") == ("i", "would", "like", "it")
    assert normalise("  ...  ") == ()


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("what time do you open", "hours"),  # exact
        ("What time do you open?", "hours"),
        ("um hi what time do you open please", "hours"),  # contained
        ("when do you open", "hours"),  # overlap
        ("what are your hours", "hours"),
        ("where are you located", "address"),
        ("what's your address", "address"),
        ("i'd like to book an appointment", "reception"),
        ("could i speak to someone please", "reception"),
        ("can i talk to a real person", "reception"),
        ("that's all thank you", "goodbye"),
        ("okay bye", "goodbye"),
    ],
)
def test_in_scope_text_picks_its_intent(llm: ScriptedLLM, text: str, want: str) -> None:
    assert name(llm.match(text)) == want


@pytest.mark.parametrize(
    "text",
    [
        "",
        "is the parking free",
        "do you sell toothbrushes",
        "what is the weather like",
        "do you take insurance",
        "how much does a cleaning cost",
        "can you",  # only function words in common with examples
    ],
)
def test_out_of_scope_text_falls_back(llm: ScriptedLLM, text: str) -> None:
    assert llm.match(text) is None


def test_dtmf_selects_the_intent_with_that_digit() -> None:
    intents = (
        *FRONTDESK_INTENTS,
        Intent("operator", (), "Connecting you.", "transfer", "operator", dtmf="9"),
    )
    llm = ScriptedLLM(intents, FRONTDESK_FALLBACK)
    assert name(llm.match("caller pressed 9")) == "operator"
    assert name(llm.match("Caller pressed 9.")) == "operator"
    assert name(llm.match("caller pressed 0")) == "reception"  # the shipped profile's digit
    assert llm.match("caller pressed 5") is None


async def test_chat_answers_the_last_user_message(llm: ScriptedLLM) -> None:
    messages = [
        Message("system", "be nice"),
        Message("user", "goodbye"),
        Message("assistant", "..."),
        Message("user", "where are you"),
    ]
    events = [e async for e in llm.chat(messages)]
    assert events == [TextDelta("We are at 12 Harbour Street, next to the library.")]


async def test_chat_transfer_and_hangup_follow_the_reply(llm: ScriptedLLM) -> None:
    events = [e async for e in llm.chat([Message("user", "i want to book an appointment")])]
    assert events[0] == TextDelta("Let me put you through to reception.")
    assert isinstance(events[1], ToolCall)
    assert (events[1].name, dict(events[1].arguments)) == ("transfer", {"destination": "reception"})
    events = [e async for e in llm.chat([Message("user", "bye")])]
    assert events[0] == TextDelta("Thank you for calling. Goodbye.")
    assert isinstance(events[1], ToolCall) and events[1].name == "hangup"
    assert len(events) == 2


async def test_chat_falls_back(llm: ScriptedLLM) -> None:
    for said in ("is the parking free", ""):
        events = [e async for e in llm.chat([Message("user", said)])]
        assert events == [TextDelta(FRONTDESK_FALLBACK)]
    assert [e async for e in llm.chat([])] == [TextDelta(FRONTDESK_FALLBACK)]


def test_check_finds_script_mistakes() -> None:
    assert ScriptedLLM.check(frontdesk_context()) == []
    bad = ProviderContext(
        profile="bad",
        intents=(
            Intent("a", ("x",), "A", action="transfer"),
            Intent("b", (), "B", dtmf="1"),
            Intent("c", (), "C", dtmf="1"),
            Intent("d", (), "D"),
        ),
        fallback_reply="?",
    )
    problems = ScriptedLLM.check(bad)
    assert len(problems) == 3
    assert "intent a transfers but names no destination" in problems[0]
    assert "share dtmf 1" in problems[1]
    assert "intent d has no examples" in problems[2]
    assert ScriptedLLM.check(ProviderContext(profile="none")) != []


def test_a_synonym_picks_its_intent_inside_a_longer_sentence() -> None:
    intents = (
        Intent("hours", ("what time do you open",), "Nine to five.", synonyms=("opening hours",)),
        Intent("address", ("where are you",), "Harbour Street."),
    )
    llm = ScriptedLLM(intents, "Sorry.")
    assert name(llm.match("opening hours")) == "hours"
    assert name(llm.match("hi could you tell me your opening hours please")) == "hours"
    assert llm.match("do you sell toothbrushes") is None
