"""Backchannels: what a listener says to show they are listening, not to take the turn.

"Mm-hmm", "okay", "right": said over the agent, they must not stop it. An
utterance is a backchannel when all of it is made of the profile's phrases
("okay okay", "yeah right"); any other word makes it a real turn.
Recognisers spell these freely ("Mm-hmm.", "mm hmm", "mhm"), so words are
compared lower-cased, without punctuation, hyphens splitting words.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_BACKCHANNELS = (
    "mm-hmm",
    "mhm",
    "hmm",
    "uh-huh",
    "uh huh",
    "okay",
    "ok",
    "right",
    "yeah",
    "yes",
    "yep",
    "sure",
    "alright",
    "all right",
    "i see",
    "got it",
)


def words(text: str) -> tuple[str, ...]:
    return tuple("".join(c.lower() if c.isalnum() or c == "'" else " " for c in text).split())


@dataclass(frozen=True)
class Backchannels:
    phrases: tuple[tuple[str, ...], ...]

    @classmethod
    def of(cls, phrases: list[str] | tuple[str, ...]) -> Backchannels:
        return cls(tuple(w for w in (words(p) for p in phrases) if w))

    def matches(self, text: str) -> bool:
        """Whether ``text`` has words and is made of backchannel phrases only."""
        said = words(text)
        if not said or not self.phrases:
            return False
        # covered[i]: said[:i] splits into phrases (phrases are a word or three: this stays tiny).
        covered = [True] + [False] * len(said)
        for i in range(len(said)):
            if not covered[i]:
                continue
            for phrase in self.phrases:
                if said[i : i + len(phrase)] == phrase:
                    covered[i + len(phrase)] = True
        return covered[-1]


DEFAULT = Backchannels.of(DEFAULT_BACKCHANNELS)
