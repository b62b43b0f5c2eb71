"""The paraphrase set: how new callers really ask the front desk, none of it the profile's examples.

Fixed before the offline matcher was changed and left unchanged after it
(issue 16): the figures of ``make bench`` and the floor of
``test_paraphrases.py`` are only comparable over time if the set is not
tuned to the matcher. Add a new set beside it rather than edit this one.

Every utterance is said in two renderings (espeak-ng voice and speed),
taken in turn from ``RENDERINGS``, and heard through a µ-law phone line
(``tests.unit.speech.telephone``).
"""

from __future__ import annotations

from dataclasses import dataclass

# (espeak-ng voice, words per minute)
RENDERINGS: tuple[tuple[str, int], ...] = (
    ("en-us", 160),
    ("en-gb", 150),
    ("en-us+f3", 170),
    ("en-gb-x-rp", 140),
    ("en-us", 190),
    ("en-gb-scotland", 160),
)
PER_UTTERANCE = 2

# (what the caller says, the intent the front desk should pick)
IN_SCOPE: tuple[tuple[str, str], ...] = (
    # hours
    ("hi, what time do you open", "hours"),
    ("could you tell me your opening hours", "hours"),
    ("hello, when are you open", "hours"),
    ("what are your opening hours please", "hours"),
    ("good morning, what time do you close", "hours"),
    ("when do you open", "hours"),
    ("what are your hours", "hours"),
    ("are you open on sunday", "hours"),
    ("can you tell me when you are open", "hours"),
    ("hi there, are you open today", "hours"),
    ("okay, and what time do you close", "hours"),
    # address
    ("hi, where are you located", "address"),
    ("could you tell me your address", "address"),
    ("hello, what is your address please", "address"),
    ("where is your office please", "address"),
    ("okay, where are you", "address"),
    ("can you tell me where you are located", "address"),
    ("where exactly are you located", "address"),
    ("what's the address", "address"),
    ("good afternoon, how do i get to your office", "address"),
    ("hi, how do i get there", "address"),
    # reception
    ("hi, i want to book an appointment", "reception"),
    ("hello, i would like to make an appointment please", "reception"),
    ("could i speak to someone please", "reception"),
    ("can i talk to a person please", "reception"),
    ("i'd like to book an appointment", "reception"),
    ("i need to make an appointment", "reception"),
    ("okay, put me through to reception please", "reception"),
    ("um, i need an appointment please", "reception"),
    ("good morning, can i book an appointment", "reception"),
    ("i would like to talk to someone", "reception"),
    ("hello, can i speak to someone please", "reception"),
    # goodbye
    ("okay thank you, goodbye", "goodbye"),
    ("thanks a lot, bye", "goodbye"),
    ("that's all, thanks, goodbye", "goodbye"),
    ("okay, bye bye", "goodbye"),
    ("thank you very much, goodbye", "goodbye"),
    ("great, thank you, bye", "goodbye"),
    ("no that's all, thank you", "goodbye"),
    ("alright, goodbye then", "goodbye"),
    ("thanks, that's all", "goodbye"),
    ("okay thanks, bye", "goodbye"),
)

# Questions the front desk can't answer, many sharing words with an intent:
# the fallback reply is the right answer to each.
OUT_OF_SCOPE: tuple[str, ...] = (
    "what time is it",
    "where is the hospital",
    "what is the weather like today",
    "where is the nearest pharmacy",
    "what is your name",
    "how much does a cleaning cost",
    "is the parking free",
    "do you take insurance",
    "what is your phone number",
    "how old are you",
    "when does the bus come",
    "where can i park my car",
    "what are your prices",
    "tell me a joke",
    "my tooth hurts",
    "what day is it today",
    "can i open a bank account",
    "are you a robot",
)


@dataclass(frozen=True)
class Sample:
    text: str
    want: str | None  # None: the fallback reply
    voice: str
    wpm: int

    @property
    def label(self) -> str:
        return f"{self.voice}@{self.wpm}: {self.text}"


def samples() -> list[Sample]:
    """Every rendering of every utterance, in-scope first, in a fixed order."""
    items: list[tuple[str, str | None]] = [*IN_SCOPE, *((text, None) for text in OUT_OF_SCOPE)]
    result: list[Sample] = []
    for i, (text, want) in enumerate(items):
        for k in range(PER_UTTERANCE):
            voice, wpm = RENDERINGS[(i * PER_UTTERANCE + k) % len(RENDERINGS)]
            result.append(Sample(text, want, voice, wpm))
    return result
