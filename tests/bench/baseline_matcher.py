"""The offline understanding as it was before issue 16, frozen for the bench's "before" column.

A grammar of the profile's example phrases with a penalised phone loop as
the rejection branch (``providers/local/sphinx.py`` at d0191c2), then the
scripted dialog's match of the whole utterance (``providers/scripted/llm.py``
at d0191c2). Copied rather than imported so that later changes to the
product code leave this column where it was.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from providers.base import Intent
from providers.local import sphinx

PHONE_PENALTY = 1e-12
_GARBAGE_PREFIX = "gbg_"
_FUNCTION_WORDS = frozenset(
    "a an the i me my you your we us our it its is are was be been am do does did can could not "
    "would will should to on in at of for and or with that this there please just like".split()
)
_CONTRACTIONS = {
    "what's": "what is",
    "where's": "where is",
    "when's": "when is",
    "that's": "that is",
    "it's": "it is",
    "i'd": "i would",
    "i'm": "i am",
    "i'll": "i will",
    "you're": "you are",
    "can't": "can not",
    "cannot": "can not",
    "don't": "do not",
    "won't": "will not",
}


def build_decoder(phrases: Sequence[str]) -> Any:
    from pocketsphinx import Config, Decoder

    spec = sphinx.plan_grammar(phrases).spec
    config = Config()
    config["samprate"] = sphinx.SAMPLE_RATE
    config["loglevel"] = "FATAL"
    config["bestpath"] = False
    config["beam"] = 1e-80
    config["wbeam"] = 1e-60
    config["pbeam"] = 1e-80
    config["maxhmmpf"] = -1
    decoder = Decoder(config)
    phones = sphinx.dictionary_phones()
    for i, phone in enumerate(phones):
        decoder.add_word(_GARBAGE_PREFIX + phone.lower(), phone, i == len(phones) - 1)
    final, next_state = 1, 2
    transitions: list[tuple[int, int, float] | tuple[int, int, float, str]] = []
    for phrase in spec.phrases:
        words = phrase.split()
        state = 0
        for i, word in enumerate(words):
            dst = final if i == len(words) - 1 else next_state
            transitions.append((state, dst, 1.0, word))
            if dst != final:
                state, next_state = next_state, next_state + 1
    g_first, g_loop = next_state, next_state + 1
    transitions.append((0, g_first, 1.0))
    for phone in phones:
        word = _GARBAGE_PREFIX + phone.lower()
        transitions.append((g_first, g_loop, PHONE_PENALTY, word))
        transitions.append((g_loop, g_loop, PHONE_PENALTY, word))
    transitions.append((g_loop, final, 1.0))
    fsg = decoder.create_fsg("phrases", 0, final, transitions)
    decoder.add_fsg("phrases", fsg)
    decoder.activate_search("phrases")
    return decoder


def decode(decoder: Any, pcm: bytes) -> str:
    decoder.start_utt()
    try:
        decoder.process_raw(pcm, full_utt=True)
    finally:
        decoder.end_utt()
    hyp = decoder.hyp()
    if hyp is None or not hyp.hypstr or _GARBAGE_PREFIX in hyp.hypstr:
        return ""
    return str(hyp.hypstr)


def normalise(text: str) -> tuple[str, ...]:
    words: list[str] = []
    for word in sphinx.normalise_words(text):
        words.extend(_CONTRACTIONS.get(word, word).replace("'", "").split())
    return tuple(words)


def _weight(word: str) -> float:
    return 0.25 if word in _FUNCTION_WORDS else 1.0


def _overlap(said: tuple[str, ...], example: tuple[str, ...]) -> float:
    a, b = set(said), set(example)
    total = sum(_weight(w) for w in a) + sum(_weight(w) for w in b)
    return 2 * sum(_weight(w) for w in a & b) / total if total else 0.0


def _contains(said: tuple[str, ...], example: tuple[str, ...]) -> bool:
    n = len(example)
    return any(said[i : i + n] == example for i in range(len(said) - n + 1))


def match(intents: Sequence[Intent], text: str, threshold: float = 0.5) -> Intent | None:
    """The scripted dialog's choice for ``text`` (DTMF left out: the bench speaks)."""
    said = normalise(text)
    if not said:
        return None
    examples = [(i, normalise(e)) for i in intents for e in i.examples]
    for intent, example in examples:
        if said == example:
            return intent
    contained = [(len(ex), intent) for intent, ex in examples if ex and _contains(said, ex)]
    if contained:
        return max(contained, key=lambda c: c[0])[1]
    best: Intent | None = None
    best_score = 0.0
    for intent, example in examples:
        score = _overlap(said, example)
        if score > best_score:
            best, best_score = intent, score
    return best if best_score >= threshold else None
