"""PocketSphinx grammar building and decoding, free of asyncio.

The grammar accepts exactly the hint phrases, or, as an alternative branch,
a free loop of phones in which every phone pays a fixed probability
penalty. In-scope speech aligns to a phrase; out-of-scope speech is cheaper
to explain as phones, and a phone path comes back as "rejected". The
penalty sets the balance (measured on espeak-ng telephone speech: 1e-12
accepts in-scope phrases and rejects most out-of-scope questions).

Decoding runs in a child process (``run_worker``): the PocketSphinx calls hold the GIL for the whole
utterance, so a decoder in a thread would stall the event loop for tens of
milliseconds per utterance.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import struct
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO, Any

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
DEFAULT_PHONE_PENALTY = 1e-12
_GARBAGE_PREFIX = "gbg_"
_WORD_RE = re.compile(r"[a-z0-9']+")


def model_dir() -> str:
    import pocketsphinx

    return os.path.join(os.path.dirname(pocketsphinx.__file__), "model", "en-us")


def dictionary_path() -> str:
    return os.path.join(model_dir(), "cmudict-en-us.dict")


@functools.cache
def dictionary_words() -> frozenset[str]:
    """Words of the shipped pronunciation dictionary (alternates like ``read(2)`` folded)."""
    words: set[str] = set()
    with open(dictionary_path(), encoding="utf-8") as fh:
        for line in fh:
            word = line.split(" ", 1)[0]
            words.add(word.split("(", 1)[0])
    return frozenset(words)


@functools.cache
def dictionary_phones() -> tuple[str, ...]:
    phones: set[str] = set()
    with open(dictionary_path(), encoding="utf-8") as fh:
        for line in fh:
            phones.update(line.split()[1:])
    return tuple(sorted(phones))


def normalise_words(text: str) -> list[str]:
    """Lower-case words without punctuation; apostrophes inside words are kept ("that's")."""
    text = text.lower().replace("\u2019", "'")
    return [w.strip("'") for w in _WORD_RE.findall(text) if w.strip("'")]


@dataclass(frozen=True)
class GrammarSpec:
    """What a decoder is built from; also the key that shares decoder pools."""

    phrases: tuple[str, ...]
    phone_penalty: float = DEFAULT_PHONE_PENALTY


@dataclass(frozen=True)
class GrammarPlan:
    spec: GrammarSpec
    dropped_words: tuple[str, ...]  # words not in the dictionary, left out of their phrase


def plan_grammar(hints: Iterable[str], phone_penalty: float = DEFAULT_PHONE_PENALTY) -> GrammarPlan:
    """Normalise hint phrases and keep the words the dictionary can pronounce.

    A word the dictionary lacks is tried without its apostrophe, then left
    out of its phrase (the rest of the phrase still anchors the intent); a
    phrase with no word left is dropped.
    """
    known = dictionary_words()
    phrases: list[str] = []
    dropped: list[str] = []
    for hint in hints:
        kept: list[str] = []
        for word in normalise_words(hint):
            if word in known:
                kept.append(word)
            elif word.replace("'", "") in known:
                kept.append(word.replace("'", ""))
            else:
                dropped.append(word)
        phrase = " ".join(kept)
        if phrase and phrase not in phrases:
            phrases.append(phrase)
    return GrammarPlan(GrammarSpec(tuple(sorted(phrases)), phone_penalty), tuple(dict.fromkeys(dropped)))


def build_decoder(spec: GrammarSpec) -> Any:
    """A decoder for ``spec`` (about 0.5 s of CPU)."""
    from pocketsphinx import Config, Decoder

    if not spec.phrases:
        raise ValueError("grammar has no phrases")
    config = Config()
    config["samprate"] = SAMPLE_RATE
    config["loglevel"] = "FATAL"
    # The lattice best-path pass returns paths that stop before the grammar's
    # final state ("what time do you" for "what time do you open"); the
    # first-pass result is the one that honours the grammar. Wide beams: a
    # small grammar is cheap, and narrow beams lost the right phrase on
    # band-limited telephone audio.
    config["bestpath"] = False
    config["beam"] = 1e-80
    config["wbeam"] = 1e-60
    config["pbeam"] = 1e-80
    config["maxhmmpf"] = -1
    decoder = Decoder(config)
    phones = dictionary_phones()
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
        transitions.append((g_first, g_loop, spec.phone_penalty, word))
        transitions.append((g_loop, g_loop, spec.phone_penalty, word))
    transitions.append((g_loop, final, 1.0))
    fsg = decoder.create_fsg("phrases", 0, final, transitions)
    decoder.add_fsg("phrases", fsg)
    decoder.activate_search("phrases")
    return decoder


def decode(decoder: Any, pcm: bytes) -> str:
    """Decode one utterance of PCM16 at 16 kHz: a phrase, or "" when rejected or empty."""
    decoder.start_utt()
    try:
        # One call with the whole utterance: CMN over the utterance itself,
        # which recognised telephone audio far better than live CMN.
        decoder.process_raw(pcm, full_utt=True)
    finally:
        decoder.end_utt()
    hyp = decoder.hyp()
    if hyp is None or not hyp.hypstr:
        return ""
    text: str = hyp.hypstr
    if _GARBAGE_PREFIX in text:
        return ""
    return text


def read_frame(stream: IO[bytes]) -> bytes | None:
    """One length-prefixed message, or None at end of stream."""
    header = stream.read(4)
    if len(header) < 4:
        return None
    (size,) = struct.unpack("<I", header)
    body = stream.read(size)
    if len(body) < size:
        return None
    return body


def write_frame(stream: IO[bytes], body: bytes) -> None:
    stream.write(struct.pack("<I", len(body)) + body)
    stream.flush()


def worker_main(stdin: IO[bytes], stdout: IO[bytes]) -> None:
    """Decoder process: a grammar spec (JSON) in, then PCM messages in and results out.

    Every message either way is a little-endian u32 length and a body;
    results are JSON objects: {"ready": true}, {"text": ...} or {"error": ...}.
    """
    first = read_frame(stdin)
    if first is None:
        return
    try:
        raw = json.loads(first)
        decoder = build_decoder(GrammarSpec(tuple(raw["phrases"]), float(raw["phone_penalty"])))
    except Exception as exc:
        write_frame(stdout, json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode())
        return
    write_frame(stdout, b'{"ready": true}')
    while (pcm := read_frame(stdin)) is not None:
        try:
            reply = {"text": decode(decoder, pcm)}
        except Exception as exc:
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        write_frame(stdout, json.dumps(reply).encode())


def spec_message(spec: GrammarSpec) -> bytes:
    return json.dumps({"phrases": list(spec.phrases), "phone_penalty": spec.phone_penalty}).encode()


def run_worker() -> None:
    worker_main(sys.stdin.buffer, sys.stdout.buffer)
