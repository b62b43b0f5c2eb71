"""End to end offline accuracy: espeak-ng -> µ-law phone line -> PocketSphinx -> scripted dialog.

Run with ``-s`` to see the table. Cases marked xfail are known misses,
kept (strict) so that a change that fixes them, or breaks others, shows.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from providers.local.stt import PocketsphinxSTT
from providers.scripted.llm import ScriptedLLM
from tests.unit.speech import RATE, frontdesk_context, telephone

# (question, expected intent or None for the fallback); the starred ones are
# not among the examples, so they exercise paraphrase handling.
CASES: list[tuple[str, str | None]] = [
    ("what time do you open", "hours"),
    ("are you open on saturday", "hours"),
    ("when do you open", "hours"),  # *
    ("what are your hours", "hours"),  # *
    ("are you open on sunday", "hours"),  # *
    ("where are you located", "address"),
    ("what is your address", "address"),
    ("how do i find you", "address"),  # *
    ("where is the clinic", "address"),  # *
    ("i want to book an appointment", "reception"),
    ("can i speak to someone", "reception"),
    ("reception please", "reception"),
    ("i need to make an appointment", "reception"),  # *
    ("can i talk to a receptionist", "reception"),  # *
    ("i would like to speak to a person", "reception"),  # *
    ("goodbye", "goodbye"),
    ("that's all thank you", "goodbye"),
    ("thanks bye", "goodbye"),  # *
    ("is the parking free", None),
    ("do you sell toothbrushes", None),
    ("what is the weather like", None),
    ("do you take insurance", None),
    ("how much does a cleaning cost", None),
    ("my tooth hurts", None),
    ("i like turtles", None),
    ("hello", None),
    ("tell me a joke", None),
]
VOICES = ("en-us", "en-gb")

# Measured misses, kept visible rather than dropped from the list. Since the
# key-phrase spotter (issue 16) a poor acoustic fit is rejected rather than
# forced into the nearest phrase: fewer wrong answers, a few more fallbacks.
# Since the duration check, a key phrase heard in less time than its phones
# need is rejected too: questions that are no key phrase ("where is the
# clinic", "on sunday") no longer reach their intent through a look-alike.
KNOWN_MISSES = {
    ("en-us", "what are your hours"): "rejected: heard as 'what are your opening hours', too quick to be it",
    ("en-us", "where is the clinic"): "rejected: 'where are you located' found, too quick to be it",
    ("en-us", "reception please"): "rejected: 'reception' over µ-law is not recognised for this voice",
    ("en-gb", "are you open on sunday"): "rejected: 'are you open on saturday' found, too quick to be it",
    ("en-gb", "where is the clinic"): "rejected: 'where are you' found, too quick to be it",
    ("en-gb", "reception please"): "rejected: heard as 'thank you bye', whose fit is below the bar",
    ("en-gb", "can i talk to a receptionist"): "rejected: 'talk to a person' found, fit below the bar",
}


def _params() -> list[object]:
    params: list[object] = []
    for voice in VOICES:
        for text, want in CASES:
            reason = KNOWN_MISSES.get((voice, text))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            params.append(
                pytest.param(voice, text, want, marks=marks, id=f"{voice}-{text.replace(' ', '_')}")
            )
    return params


@pytest.fixture(scope="module")
def table() -> Iterator[list[tuple[str, str, str | None, str, str | None, float]]]:
    rows: list[tuple[str, str, str | None, str, str | None, float]] = []
    yield rows
    PocketsphinxSTT.shutdown_pools()
    if not rows:
        return
    print(f"\n\n  {'voice':5} {'question':35} {'want':10} {'heard':30} {'got':10} {'ms':>4}")
    for voice, text, want, heard, got, ms in rows:
        mark = "  " if got == want else "XX"
        print(f"{mark}{voice:5} {text:35} {want or '-':10} {heard or '-':30} {got or '-':10} {ms:4.0f}")
    in_scope = [r for r in rows if r[2] is not None]
    out_scope = [r for r in rows if r[2] is None]
    times = sorted(r[5] for r in rows)
    print(
        f"in scope {sum(r[2] == r[4] for r in in_scope)}/{len(in_scope)}, "
        f"out of scope {sum(r[4] is None for r in out_scope)}/{len(out_scope)}, "
        f"decode ms median {times[len(times) // 2]:.0f} max {times[-1]:.0f}"
    )


@pytest.mark.parametrize(("voice", "text", "want"), _params())
async def test_intent_over_phone_line(
    voice: str,
    text: str,
    want: str | None,
    table: list[tuple[str, str, str | None, str, str | None, float]],
) -> None:
    ctx = frontdesk_context()
    stt = PocketsphinxSTT.create(ctx)
    llm = ScriptedLLM.create(ctx)
    await stt.prepare()
    pcm = telephone(text, voice=voice).tobytes()
    started = time.perf_counter()
    transcript = await stt.recognize(pcm, RATE)
    elapsed_ms = (time.perf_counter() - started) * 1000
    intent = llm.match(transcript.text)
    got = intent.name if intent else None
    table.append((voice, text, want, transcript.text, got, elapsed_ms))
    assert got == want, f"heard {transcript.text!r}"
