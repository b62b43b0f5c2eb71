from __future__ import annotations

import pytest

from ari_agent.conversation.backchannel import DEFAULT, Backchannels


@pytest.mark.parametrize(
    "text", ["mm-hmm", "Mm-hmm.", "mm hmm", "Okay.", "okay okay", "yeah, right", "I see", "uh huh"]
)
def test_backchannels_as_recognisers_spell_them(text: str) -> None:
    assert DEFAULT.matches(text)


@pytest.mark.parametrize(
    "text", ["", "  ", "okay wait", "yes I want to book", "right now please", "see", "hmm what time"]
)
def test_any_other_word_makes_it_a_turn(text: str) -> None:
    assert not DEFAULT.matches(text)


def test_a_profile_list_replaces_the_default() -> None:
    french = Backchannels.of(["d'accord", "oui", "ouais"])
    assert french.matches("D'accord, oui.")
    assert not french.matches("okay")
    assert not Backchannels.of([]).matches("okay")
