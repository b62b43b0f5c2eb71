"""A profile's languages: config, the switching decision, what recognisers report, and check."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from ari_agent.config import load_settings
from ari_agent.conversation.languages import CallLanguage
from ari_agent.conversation.turns import TurnOver
from ari_agent.errors import ConfigError
from ari_agent.profiles import ProfileConfig
from ari_agent.profiles.catalogue import plan_profile
from providers.base import PCM16_16K, EndOfTurn, FinalTranscript, ProviderContext, SpeechEvent
from providers.deepgram.stt import DeepgramSTT
from providers.openai.languages import first_listed, language_tag
from providers.openai.stt import OpenAISTT, TranscriptionEvents
from tests.fakes.deepgram_server import FakeDeepgram
from tests.fakes.openai_server import FakeOpenAI, TranscriptionReply, tone_pcm
from tests.fakes.threaded import serve

SPANISH = {"voice": "es", "instructions": "Eres la recepcionista de la clínica."}


def profile(**fields: object) -> ProfileConfig:
    return ProfileConfig.model_validate(
        {"instructions": "You answer for the clinic.", "languages": {"es": SPANISH}, **fields}
    )


# --------------------------------------------------------------------------
# The decision (sans-IO)


def test_a_reported_configured_language_switches_once() -> None:
    lang = CallLanguage("en-US", ["es", "fr-CA"])
    assert lang.reported(None) is None and lang.heard is None
    assert lang.reported("en") is None  # the call is in it already
    assert lang.heard == "en-US"
    assert lang.reported("es") == "es"
    assert lang.current == "es"
    assert lang.reported("es") is None  # no switch to where the call already is
    assert lang.reported("es-419") is None  # a region of the same language is the same language
    assert lang.reported("fr") == "fr-CA"  # matched by primary subtag, the configured tag comes back
    assert lang.reported("EN") == "en-US"  # and back to the default when the caller goes back


def test_an_unconfigured_language_changes_nothing() -> None:
    lang = CallLanguage("en-US", ["es"])
    assert lang.reported("de") is None
    assert lang.current == "en-US" and lang.heard is None
    assert lang.reported("") is None


# --------------------------------------------------------------------------
# Config


def test_instructions_and_voice_per_language() -> None:
    p = profile(voice="en-us", languages={"es": SPANISH, "fr": {"hint": "Réponds en français."}})
    assert p.instructions_for("en-US") == "You answer for the clinic."
    assert p.instructions_for("es") == "Eres la recepcionista de la clínica."
    assert p.instructions_for("fr") == "You answer for the clinic.\n\nRéponds en français."
    assert p.voice_for("es") == "es"
    assert p.voice_for("fr") == "en-us"  # no voice of its own: the profile's
    ctx = p.provider_context("p", language="es")
    assert (ctx.language, ctx.voice, ctx.instructions) == ("es", "es", SPANISH["instructions"])
    assert p.provider_context("p").languages == ("es", "fr")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("table", "field", "words"),
    [
        ('[profiles.x.languages.es]\nvoice = "es"\n', "profiles.x.languages.es", "exactly one"),
        (
            '[profiles.x.languages.es]\ninstructions = "a"\nhint = "b"\n',
            "profiles.x.languages.es",
            "exactly one",
        ),
        ('[profiles.x.languages."e s"]\nhint = "b"\n', "profiles.x.languages.e s", "not a language tag"),
        ('[profiles.x.languages.en-GB]\nhint = "b"\n', "profiles.x.languages.en-GB", "same language"),
        ('[profiles.x.languages.es]\nhint = "b"\nspeed = 2\n', "profiles.x.languages.es.speed", "Extra"),
    ],
)
def test_config_errors_name_the_field(tmp_path: Path, table: str, field: str, words: str) -> None:
    path = write(tmp_path, '[profiles.x]\nlanguage = "en-US"\n' + table)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    text = str(caught.value)
    assert f"{field}:" in text and words in text, text


# --------------------------------------------------------------------------
# check


def problems_of(p: ProfileConfig) -> list[str]:
    return [str(problem) for problem in plan_profile("p", p).problems]


def test_check_says_the_offline_recogniser_cannot_hear_spanish_and_reports_no_language() -> None:
    found = problems_of(profile())
    assert any("profiles.p.stt: local hears only en: callers speaking es cannot be heard" in t for t in found)
    assert any(
        t.startswith("profiles.p.languages: local does not report the caller's language") for t in found
    )


def test_check_is_quiet_with_a_recogniser_that_reports_languages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPGRAM_API_KEY", "dg-key")
    found = problems_of(profile(stt=["deepgram"]))
    assert not any("languages" in t or "hears only" in t for t in found), found
    # Without languages nothing is said about them.
    assert not any("language" in t for t in problems_of(ProfileConfig(stt=["local"]))), found


def test_check_names_a_voice_espeak_does_not_have() -> None:
    found = problems_of(profile(languages={"es": SPANISH, "fr": {"voice": "nosuchvoice", "hint": "x"}}))
    assert any(
        t.startswith("profiles.p.languages.fr.voice: local: espeak-ng has no voice 'nosuchvoice'")
        for t in found
    )
    assert not any("languages.es.voice" in t for t in found)


# --------------------------------------------------------------------------
# What recognisers declare and report


def test_declared_capabilities() -> None:
    base = ProviderContext("p", language="en-US")
    multi = ProviderContext("p", language="en-US", languages=("es",))
    assert not DeepgramSTT.capabilities_for(base).reports_language
    assert DeepgramSTT.capabilities_for(multi).reports_language

    def openai(**options: object) -> bool:
        return OpenAISTT.capabilities_for(ProviderContext("p", options=options)).reports_language

    assert not openai()  # gpt-4o-mini-transcribe, live: says no language
    assert openai(stt_model="whisper-1", stt_streaming=False)  # verbose_json names it
    assert not openai(stt_model="whisper-1")  # the live session's events do not
    assert openai(stt_model="gpt-transcribe")
    assert openai(stt_model="gpt-live-transcribe", stt_streaming=True)


def test_openai_language_names_and_codes() -> None:
    assert language_tag("spanish") == "es"
    assert language_tag("Haitian Creole") == "ht"
    assert language_tag("es") == "es" and language_tag("pt-BR") == "pt-br"
    assert language_tag("") is None and language_tag(None) is None and language_tag("???") is None
    assert first_listed([{"code": "es"}, {"code": "en"}]) == "es"
    assert first_listed([]) is None and first_listed(None) is None


def test_openai_live_completed_event_carries_the_language() -> None:
    mapper = TranscriptionEvents("openai")
    events = mapper(
        {
            "type": "conversation.item.input_audio_transcription.completed",
            "item_id": "i1",
            "transcript": "hola",
            "languages": [{"code": "es"}],
        }
    )
    assert events == [FinalTranscript("hola", language="es"), EndOfTurn()]


async def test_deepgram_multi_reports_the_language_through_the_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPGRAM_API_KEY", "dg-test-key")
    fake = FakeDeepgram(["hola quiero una cita"], languages=["es"])
    async with serve(fake.app()) as http_url:
        ctx = ProviderContext(
            "p", language="en-US", languages=("es",), options={"url": http_url.replace("http://", "ws://")}
        )
        stt = DeepgramSTT.create(ctx)
        assert stt.capabilities.reports_language
        stream = await stt.stream(PCM16_16K)
        stream.push(bytes(6400))
        await stream.finalize()
        events: list[SpeechEvent] = []
        async for event in stream.events():
            events.append(event)
            if isinstance(event, EndOfTurn):
                break
        await stream.aclose()
    assert fake.listens[0].query["language"] == "multi"
    assert FinalTranscript("hola quiero una cita", 0.97, "es") in events


@pytest.fixture
async def openai_fake(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[FakeOpenAI, str]]:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-languages-0123456789")
    server = FakeOpenAI(api_key="sk-test-languages-0123456789")
    async with server.running() as url:
        yield server, url


async def test_openai_whisper_verbose_json_language(openai_fake: tuple[FakeOpenAI, str]) -> None:
    server, url = openai_fake
    server.transcription_replies.append(TranscriptionReply(text="quiero una cita", language="es"))
    options = {"base_url": url, "stt_model": "whisper-1", "stt_streaming": False}
    stt = OpenAISTT.create(ProviderContext("p", language="en-US", languages=("es",), options=options))
    transcript = await stt.recognize(tone_pcm(300, 16000), 16000)
    await stt.aclose()
    assert (transcript.text, transcript.language) == ("quiero una cita", "es")
    body = server.requests[-1].body
    assert body["response_format"] == "verbose_json"
    assert "language" not in body  # not pinned: whisper detects it


async def test_openai_gpt_transcribe_lists_the_languages(openai_fake: tuple[FakeOpenAI, str]) -> None:
    server, url = openai_fake
    server.transcription_replies.append(TranscriptionReply(text="hola", language="es"))
    options = {"base_url": url, "stt_model": "gpt-transcribe", "stt_streaming": False}
    stt = OpenAISTT.create(ProviderContext("p", language="en-US", languages=("es",), options=options))
    transcript = await stt.recognize(tone_pcm(300, 16000), 16000)
    await stt.aclose()
    assert transcript.language == "es"
    assert "response_format" not in server.requests[-1].body


async def test_a_pinned_profile_still_pins_its_language(openai_fake: tuple[FakeOpenAI, str]) -> None:
    server, url = openai_fake
    options = {"base_url": url, "stt_model": "whisper-1", "stt_streaming": False}
    stt = OpenAISTT.create(ProviderContext("p", language="en-US", options=options))
    transcript = await stt.recognize(tone_pcm(300, 16000), 16000)
    await stt.aclose()
    assert transcript.language is None
    assert server.requests[-1].body["language"] == "en"
    assert "response_format" not in server.requests[-1].body


async def test_a_model_that_reports_no_language_stays_pinned(openai_fake: tuple[FakeOpenAI, str]) -> None:
    # With languages listed but a model that never says what it heard, no switch can follow:
    # unpinning it would only transcribe the default language worse.
    server, url = openai_fake
    options = {"base_url": url, "stt_model": "gpt-4o-mini-transcribe", "stt_streaming": False}
    stt = OpenAISTT.create(ProviderContext("p", language="en-US", languages=("es",), options=options))
    await stt.recognize(tone_pcm(300, 16000), 16000)
    await stt.aclose()
    assert server.requests[-1].body["language"] == "en"


# --------------------------------------------------------------------------
# The turn carries the language to the pipeline


def test_the_turn_engine_hands_the_language_on() -> None:
    from ari_agent.conversation.turns import Frame, TurnEngine, TurnSettings

    engine = TurnEngine(TurnSettings(end_of_turn_ms=200))
    voiced = np.full(320, 3000, dtype=np.int16).tobytes()
    silent = bytes(640)
    now = 0.0
    actions = []
    for _ in range(20):
        now += 0.02
        actions += engine.frame(Frame(now, voiced, True, False, False))
    for _ in range(15):
        now += 0.02
        actions += engine.frame(Frame(now, silent, False, False, False))
    actions += engine.final("hola", now, "es")
    turns = [a.turn for a in actions if isinstance(a, TurnOver)]
    assert [(t.text, t.language) for t in turns] == [("hola", "es")]


def test_the_system_message_is_replaced_added_or_dropped() -> None:
    from ari_agent.conversation.pipeline import with_instructions
    from providers.base import Message

    talk = [Message("user", "hola"), Message("assistant", "Hola.")]
    english = [Message("system", "English."), *talk]
    assert with_instructions(english, "Español.") == [Message("system", "Español."), *talk]
    assert with_instructions(talk, "Español.") == [Message("system", "Español."), *talk]
    assert with_instructions(english, "") == talk


def test_check_warns_a_realtime_profile_does_not_switch() -> None:
    found = problems_of(
        profile(realtime=["openai"], options={"openai": {"base_url": "http://127.0.0.1:9/v1"}})
    )
    assert any(
        t.startswith("profiles.p.languages: a realtime profile does not switch languages") for t in found
    )


async def test_the_store_keeps_the_language(tmp_path: Path) -> None:
    from ari_agent.conversation.records import CallRecord
    from ari_agent.store import CallStore
    from ari_agent.store.models import StoredCall

    record = CallRecord(call_id="c1", channel_id="ch1", caller={"number": "1", "name": ""}, profile="p")
    record.language = "es"
    async with CallStore(tmp_path / "calls.db", retention_days=None) as store:
        await store.save_call(StoredCall.from_record(record, store_text=False))
        stored = await store.get_call("c1")
        listed = await store.list_calls()
    assert stored is not None and stored.language == "es"
    assert stored.to_json()["language"] == record.to_json()["language"] == "es"
    assert [c.language for c in listed] == ["es"] and listed[0].turn_count == 0


def test_check_warns_of_an_unknown_name_in_a_language_text() -> None:
    found = problems_of(profile(languages={"es": {"instructions": "Llama {numero}."}}))
    assert any(t.startswith("profiles.p.languages.es.instructions: ") and "{numero}" in t for t in found), (
        found
    )
