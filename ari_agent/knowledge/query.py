"""A caller's question as an FTS5 query: its content words, any of which may match.

Pure. Words are OR-ed (a caller's question rarely shares all its words with the
passage that answers it) and each is quoted, so FTS5 syntax in the question
("NOT", "near", a stray quote) is only ever text. Function words are dropped:
they are in every passage and only add noise to the score.
"""

from __future__ import annotations

import re

_WORD = re.compile(r"[0-9a-z]+(?:'[a-z]+)?")

# Function words and the politeness around a spoken question ("could you tell me ..."):
# they carry no topic, so they must not let a passage look relevant.
FUNCTION_WORDS = frozenset(
    """
    a about above after again all am an and any are as at be been before being both but by
    can could did do does doing don't down during each few for from further had has have
    having he her here hers herself him himself his how i i'd i'll i'm i've if in into is
    it it's its itself just me more most my myself no nor not now of off on once only or
    other our ours ourselves out over own same she should so some such than that that's the
    their theirs them themselves then there there's these they this those through to too
    under until up very was we were what what's when where which while who whom why will
    with would you you're your yours yourself yourselves hello hi please thanks thank tell
    know like want need get got really ok okay yes well also
    """.split()
)

# The rest of a spoken question's scaffolding: indefinite pronouns ("somewhere", "anything"),
# light verbs ("what happens if", "how long does it take", "is it possible") and "how much".
# Kept apart because they also decide whether a passage answers (relevance.py): an unmatched
# "somewhere" would count against a passage as much as an unmatched topic word.
SPOKEN_FILLER = frozenset(
    """
    somewhere something anything anyone someone anywhere everything everyone nothing
    happen happens happened go goes going gone went put take takes taken make makes made
    let lets thing things much many possible ever even still maybe might must shall
    """.split()
)

STOP_WORDS = FUNCTION_WORDS | SPOKEN_FILLER


def terms(question: str, stop_words: frozenset[str] = STOP_WORDS) -> list[str]:
    """The question's content words, lower-cased, in order, each once."""
    words = _WORD.findall(question.lower().replace("\u2019", "'"))
    kept = [w.split("'")[0] for w in words if w not in stop_words]
    return list(dict.fromkeys(w for w in kept if w and w not in stop_words))


def quoted(term: str) -> str:
    """One term as an FTS5 string: whatever it holds is text, never query syntax."""
    return '"' + term.replace('"', '""') + '"'


def match_expression(question: str, stop_words: frozenset[str] = STOP_WORDS) -> str | None:
    """The FTS5 MATCH expression for the question; None when it has no content word."""
    words = terms(question, stop_words)
    if not words:
        return None
    return " OR ".join(quoted(w) for w in words)
