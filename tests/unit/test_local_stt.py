from __future__ import annotations

import asyncio
from collections.abc import Iterator

import numpy as np
import pytest

from providers.base import ProviderContext, ProviderError
from providers.local import sphinx
from providers.local.stt import PocketsphinxSTT
from tests.unit.speech import RATE, frontdesk_context, silence, speech, telephone


@pytest.fixture(autouse=True, scope="module")
def _stop_decoders() -> Iterator[None]:
    yield
    PocketsphinxSTT.shutdown_pools()


def test_grammar_phrases_are_normalised() -> None:
    plan = sphinx.plan_grammar(
        ["What time do you OPEN?", "That’s all, thank you!", "what time do you open", "xyzzyq plugh"]
    )
    assert plan.spec.phrases == ("that's all thank you", "what time do you open")
    assert plan.dropped_words == ("xyzzyq", "plugh")


def test_a_word_missing_from_the_dictionary_leaves_the_rest_of_its_phrase() -> None:
    plan = sphinx.plan_grammar(["book with doctor xyzzyq please"])
    assert plan.spec.phrases == ("book with doctor please",)
    assert plan.dropped_words == ("xyzzyq",)


async def test_recognises_a_phrase_of_the_grammar() -> None:
    stt = PocketsphinxSTT.create(frontdesk_context())
    transcript = await stt.recognize(speech("where are you located").tobytes(), RATE)
    assert transcript.text == "where are you located"
    assert transcript.is_final


async def test_a_key_phrase_is_found_inside_politeness() -> None:
    stt = PocketsphinxSTT.create(frontdesk_context())
    transcript = await stt.recognize(telephone("hi, where are you located").tobytes(), RATE)
    assert transcript.text == "where are you located"  # the greeting is not part of the key phrase


async def test_the_transcript_is_the_key_phrase_without_the_fillers() -> None:
    stt = PocketsphinxSTT.create(frontdesk_context())
    pcm = telephone("could you tell me your opening hours", wpm=150).tobytes()
    assert (await stt.recognize(pcm, RATE)).text == "opening hours"


async def test_a_near_miss_sharing_words_with_an_intent_is_rejected() -> None:
    stt = PocketsphinxSTT.create(frontdesk_context())
    assert (await stt.recognize(telephone("what time is it", wpm=150).tobytes(), RATE)).text == ""


def test_fillers_with_unknown_words_are_dropped_whole() -> None:
    plan = sphinx.plan_grammar(["good morning"], fillers=("Hello!", "hello xyzzyq", "thank you"))
    assert plan.spec.fillers == ("hello", "thank you")
    assert plan.dropped_words == ()  # fillers are not the profile's words: nothing to report


def test_the_spec_reaches_the_worker_whole() -> None:
    spec = sphinx.GrammarSpec(("good morning",), 1e-9, ("hi", "thanks"), 0.3, -5.5, 0.01, 0.4, 5.0)
    assert sphinx.spec_from_message(sphinx.spec_message(spec)) == spec


async def test_audio_at_another_rate_is_resampled() -> None:
    stt = PocketsphinxSTT.create(frontdesk_context())
    transcript = await stt.recognize(telephone("what is your address", rate=8000).tobytes(), 8000)
    assert transcript.text == "what is your address"


async def test_out_of_scope_speech_is_rejected() -> None:
    stt = PocketsphinxSTT.create(frontdesk_context())
    transcript = await stt.recognize(telephone("is the parking free").tobytes(), RATE)
    assert transcript.text == ""
    assert transcript.confidence == 0.0


async def test_silence_and_empty_audio_give_no_text() -> None:
    stt = PocketsphinxSTT.create(frontdesk_context())
    assert (await stt.recognize(silence(1000).tobytes(), RATE)).text == ""
    assert (await stt.recognize(b"", RATE)).text == ""


async def test_odd_length_audio_is_refused() -> None:
    stt = PocketsphinxSTT.create(frontdesk_context())
    with pytest.raises(ProviderError, match="odd byte count") as err:
        await stt.recognize(b"\0\0\0", RATE)
    assert not err.value.retryable


async def test_providers_with_the_same_phrases_share_one_pool() -> None:
    ctx = ProviderContext(profile="pool", hints=("good morning", "good evening"))
    first = PocketsphinxSTT.create(ctx)
    others = [PocketsphinxSTT.create(ctx) for _ in range(9)]
    await asyncio.gather(first.prepare(), *(o.prepare() for o in others))
    assert first.pool_size == 2
    assert all(o.pool_size == 2 for o in others)
    different = PocketsphinxSTT.create(ProviderContext(profile="x", hints=("good night",)))
    assert different.pool_size == 0


async def test_concurrent_recognitions_share_a_capped_pool() -> None:
    ctx = ProviderContext(profile="cap", hints=("good morning", "good evening"), options={"max_decoders": 2})
    texts = ["good morning", "good evening"] * 4
    providers = [PocketsphinxSTT.create(ctx) for _ in texts]
    results = await asyncio.gather(
        *(p.recognize(telephone(t).tobytes(), RATE) for p, t in zip(providers, texts, strict=True))
    )
    assert [r.text for r in results] == texts
    assert providers[0].pool_size <= 2


async def test_a_cancelled_recognition_returns_its_decoder() -> None:
    ctx = ProviderContext(profile="cancel", hints=("good morning",), options={"max_decoders": 1})
    stt = PocketsphinxSTT.create(ctx)
    await stt.prepare()
    pcm = np.tile(telephone("good morning"), 4).tobytes()
    task = asyncio.create_task(stt.recognize(pcm, RATE))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The single decoder comes back once its decode is over, and serves again.
    transcript = await asyncio.wait_for(stt.recognize(telephone("good morning").tobytes(), RATE), 30)
    assert transcript.text == "good morning"
    assert stt.pool_size == 1


def test_check_reports_a_profile_without_phrases() -> None:
    problems = PocketsphinxSTT.check(ProviderContext(profile="empty"))
    assert len(problems) == 1
    assert "empty" in problems[0] and "examples" in problems[0]
    assert PocketsphinxSTT.check(frontdesk_context()) == []


async def test_no_usable_phrase_is_an_error() -> None:
    with pytest.raises(ProviderError, match="no phrases"):
        PocketsphinxSTT(("?!",))
    stt = PocketsphinxSTT(("xyzzyq",))
    with pytest.raises(ProviderError, match="can be pronounced") as err:
        await stt.prepare()
    assert not err.value.retryable
