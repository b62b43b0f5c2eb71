"""The paraphrase set (tests/unit/paraphrases.py) through the offline voice, as a caller would reach it.

espeak-ng voices and speeds -> µ-law phone line -> PocketSphinx (the
provider, with its decoder worker processes) -> scripted dialog, on the
shipped frontdesk profile. ``make bench`` prints the same figures beside
the old matcher's.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from providers.local.stt import PocketsphinxSTT
from providers.scripted.llm import ScriptedLLM
from tests.unit.paraphrases import IN_SCOPE, OUT_OF_SCOPE, samples
from tests.unit.speech import RATE, frontdesk_context, telephone

# Regression floors a little under what the matcher measures (90.5 %, 80.6 %
# since the duration check; 89.3 %, 83.3 % before it). The targets,
# 90 % and 80 %, are met by one sample each, within the set's noise: `make
# bench` prints the figures against them.
IN_SCOPE_FLOOR = 0.85
REJECTION_FLOOR = 0.77


@pytest.fixture(scope="module", autouse=True)
def _stop_decoders() -> Iterator[None]:
    yield
    PocketsphinxSTT.shutdown_pools()


def test_the_set_is_large_enough_and_not_the_profiles_examples() -> None:
    assert len(IN_SCOPE) >= 40 and len(OUT_OF_SCOPE) >= 15
    examples = {e for intent in frontdesk_context().intents for e in intent.examples}
    assert not examples & {text for text, _ in IN_SCOPE}
    assert len({(s.voice, s.wpm) for s in samples()}) >= 4


async def test_paraphrases_are_understood_and_near_misses_fall_back() -> None:
    ctx = frontdesk_context()
    stt = PocketsphinxSTT.create(ctx)
    llm = ScriptedLLM.create(ctx)
    rows: list[tuple[str, str | None, str, str | None]] = []
    for sample in samples():
        pcm = telephone(sample.text, voice=sample.voice, wpm=sample.wpm).tobytes()
        transcript = await stt.recognize(pcm, RATE)
        intent = llm.match(transcript.text)
        rows.append((sample.label, sample.want, transcript.text, intent.name if intent else None))
    in_scope = [r for r in rows if r[1] is not None]
    out_of_scope = [r for r in rows if r[1] is None]
    accuracy = sum(r[1] == r[3] for r in in_scope) / len(in_scope)
    rejection = sum(r[3] is None for r in out_of_scope) / len(out_of_scope)
    misses = "\n".join(
        f"  {label}: want {want}, heard {heard!r} -> {got}" for label, want, heard, got in rows if want != got
    )
    summary = f"in-scope {accuracy:.1%}, rejection {rejection:.1%}; misses:\n{misses}"
    assert accuracy >= IN_SCOPE_FLOOR, summary
    assert rejection >= REJECTION_FLOOR, summary
