"""A development set for the offline matcher: other sentences than the paraphrase set.

Written when the coverage check of ``providers/local/sphinx.py`` was added
(issue 16): its thresholds are chosen on this set, so that the paraphrase set
(``tests/unit/paraphrases.py``) tells how the matcher does on sentences it
was not chosen on. (The fit bar, ``min_score``, was first tuned on the
paraphrase set itself; it was chosen again here with the duration check.)
Not used by pytest.

The fast renderings (190-200 words per minute, one each per utterance) were
added with the duration check, which a speaking rate moves: a floor chosen
on the normal renderings alone rejected fast real phrases.

    python -m tests.bench.bench_understanding --set dev
    python -m tests.bench.bench_understanding --set dev-fast
"""

from __future__ import annotations

from tests.unit.paraphrases import Sample

IN_SCOPE: tuple[tuple[str, str], ...] = (
    ("hey, what time do you open tomorrow", "hours"),
    ("what time do you close today", "hours"),
    ("sorry, when are you open", "hours"),
    ("are you open on saturday morning", "hours"),
    ("yes hello, what are your opening hours", "hours"),
    ("and when do you close", "hours"),
    ("please tell me your hours", "hours"),
    ("hi, what is your address", "address"),
    ("where are you located exactly", "address"),
    ("sorry, where is your office", "address"),
    ("how do i find you", "address"),
    ("and how do i get there from the station", "address"),
    ("okay so where are you", "address"),
    ("yes, i want to book an appointment", "reception"),
    ("i would like to make an appointment for next week", "reception"),
    ("hi, can i speak to someone", "reception"),
    ("reception please", "reception"),
    ("could you put me through to reception", "reception"),
    ("i need an appointment", "reception"),
    ("hello, can i talk to a person", "reception"),
    ("goodbye", "goodbye"),
    ("bye now", "goodbye"),
    ("okay goodbye", "goodbye"),
    ("that's all thank you, bye", "goodbye"),
    ("thank you, goodbye", "goodbye"),
    ("right, thanks, bye bye", "goodbye"),
)
OUT_OF_SCOPE: tuple[str, ...] = (
    "what time does the game start",
    "where is the train station",
    "what is your email address",
    "do you sell toothbrushes",
    "i like turtles",
    "hello",
    "can you hear me",
    "how long is the wait",
    "who is the dentist",
    "is it going to rain",
    "where do you live",
    "what are you doing",
    "can i pay by card",
    "how are you today",
    "i lost my keys",
    "what is the time now",
    "are you open to new ideas",
    "where is the toilet",
    "book a table for two",
    "where are my glasses",
)
RENDERINGS: tuple[tuple[str, int], ...] = (
    ("en-us", 170),
    ("en-gb", 160),
    ("en-us+f3", 150),
    ("en-gb-x-rp", 170),
    ("en-us", 140),
    ("en-gb-scotland", 170),
    ("en-us+m3", 160),
)
FAST_RENDERINGS: tuple[tuple[str, int], ...] = (("en-us", 190), ("en-gb", 190), ("en-us+m3", 200))


def samples() -> list[Sample]:
    """Two renderings of every utterance, in-scope first, in a fixed order."""
    items: list[tuple[str, str | None]] = [*IN_SCOPE, *((text, None) for text in OUT_OF_SCOPE)]
    result: list[Sample] = []
    for i, (text, want) in enumerate(items):
        for k in range(2):
            voice, wpm = RENDERINGS[(i * 2 + k + 3) % len(RENDERINGS)]
            result.append(Sample(text, want, voice, wpm))
    return result


def fast_samples() -> list[Sample]:
    """Every utterance at every fast rendering, in-scope first, in a fixed order."""
    items: list[tuple[str, str | None]] = [*IN_SCOPE, *((text, None) for text in OUT_OF_SCOPE)]
    return [Sample(text, want, voice, wpm) for voice, wpm in FAST_RENDERINGS for text, want in items]
