"""A call in the caller's language, through the real Asterisk: the recogniser says "es", and the
rest of the call has the Spanish instructions and voice (profiles' ``languages``).

The recognisers are wire fakes driven through the vendors' SDKs, reporting the language in the
fields the services send: Deepgram's ``language=multi`` results (``languages``) and OpenAI's
whisper ``verbose_json`` (``language``, named as whisper names it).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from ari_agent.store import CallStore
from tests.fakes.deepgram_server import FakeDeepgram
from tests.fakes.openai_server import ChatReply, FakeOpenAI, TranscriptionReply
from tests.fakes.threaded import serve_in_thread
from tests.integration.lab import AgentFactory, AgentProcess, Lab

KEY = "sk-test-languages-0123456789abcdef"
DG_KEY = "dg-test-languages-SECRETVALUE"
ENGLISH = "You answer for Riverside Dental. The caller is {caller_number}."
SPANISH = "Respondes por Riverside Dental, en español. La persona que llama es {caller_number}."


def start(agent_factory: AgentFactory, toml: str) -> AgentProcess:
    path = Path(agent_factory.workdir) / "languages.toml"
    path.write_text(toml, encoding="utf-8")
    return agent_factory.start({"AGENT_CONFIG": str(path), "OPENAI_API_KEY": KEY, "DEEPGRAM_API_KEY": DG_KEY})


def chats(fake: FakeOpenAI) -> list[dict[str, Any]]:
    return [r.body for r in fake.requests if r.path.endswith("/chat/completions")]


def stored_language(agent: AgentProcess, call_id: str) -> str | None:
    async def read() -> str | None:
        async with CallStore(agent.records_dir / "calls.db", retention_days=None) as store:
            call = await store.get_call(call_id)
            assert call is not None
            return call.language

    return asyncio.run(read())


def spanish_caller(lab: Lab) -> list[str]:
    # The caller really speaks Spanish (espeak-ng's es voice); the fakes decide what was heard.
    return [lab.speech("hola, quiero una cita", voice="es"), lab.speech("adiós", voice="es")]


def test_deepgram_reports_spanish_and_the_call_switches(lab: Lab, agent_factory: AgentFactory) -> None:
    deepgram = FakeDeepgram(["hola quiero una cita", "adiós"], languages=["es", "es"])
    openai = FakeOpenAI(api_key=KEY)
    openai.chat_replies.extend(
        [
            ChatReply(text="Claro. ¿Para qué día?"),
            ChatReply(text="Adiós.", tool_calls=[("hangup", {})]),
        ]
    )
    with serve_in_thread(deepgram.app) as dg_url, serve_in_thread(openai.app) as oa_url:
        agent = start(
            agent_factory,
            f"""
[profiles.dgmulti]
greeting = "Hello, how can I help?"
instructions = "{ENGLISH}"
stt = ["deepgram"]
llm = ["openai"]
tts = ["deepgram"]
filler_after_ms = 0
[profiles.dgmulti.languages.es]
voice = "aura-2-celeste-es"
instructions = "{SPANISH}"
[profiles.dgmulti.options.deepgram]
url = "{dg_url.replace("http://", "ws://")}"
[profiles.dgmulti.options.openai]
base_url = "{oa_url}/v1"
""",
        )
        handle = lab.place_call(spanish_caller(lab), extension="dgmulti", context="lab-profile")
        event = lab.wait_dialplan_event(handle.number, "hangup", timeout=120)
    record = agent.record_for(handle.number)
    assert event.fields["AI_AGENT_STATUS"] == "COMPLETED", agent.log_tail()
    assert deepgram.listens[0].query["language"] == "multi"
    # The first request already answers the Spanish turn: Spanish instructions, call details filled.
    first = chats(openai)[0]["messages"]
    assert first[0] == {"role": "system", "content": SPANISH.format(caller_number=handle.number)}
    assert first[1] == {"role": "user", "content": "hola quiero una cita"}
    # The greeting went out in the default (English) voice, the replies in the Spanish one.
    spoken = [(s.query.get("model"), " ".join(s.texts)) for s in deepgram.speaks if s.texts]
    assert ("aura-2-thalia-en", "Hello, how can I help?") in spoken, spoken
    assert {model for model, text in spoken if "Claro" in text or "Adiós" in text} == {"aura-2-celeste-es"}
    assert record["language"] == "es"
    assert stored_language(agent, record["call_id"]) == "es"
    log = agent.log_path.read_text(encoding="utf-8")
    assert DG_KEY not in log and KEY not in log


def test_openai_whisper_reports_spanish_and_the_call_switches(lab: Lab, agent_factory: AgentFactory) -> None:
    openai = FakeOpenAI(api_key=KEY)
    openai.transcription_replies.extend(
        [
            TranscriptionReply("hola quiero una cita", language="es"),
            TranscriptionReply("adiós", language="es"),
        ]
    )
    openai.chat_replies.extend(
        [
            ChatReply(text="Claro. ¿Para qué día?"),
            ChatReply(text="Adiós.", tool_calls=[("hangup", {})]),
        ]
    )
    with serve_in_thread(openai.app) as oa_url:
        agent = start(
            agent_factory,
            f"""
[profiles.whisper]
greeting = "Hello, how can I help?"
instructions = "{ENGLISH}"
stt = ["openai"]
llm = ["openai"]
tts = ["openai"]
filler_after_ms = 0
[profiles.whisper.languages.es]
voice = "coral"
hint = "La persona habla español: responde en español."
[profiles.whisper.options.openai]
base_url = "{oa_url}/v1"
stt_model = "whisper-1"
stt_streaming = false
""",
        )
        handle = lab.place_call(spanish_caller(lab), extension="whisper", context="lab-profile")
        event = lab.wait_dialplan_event(handle.number, "hangup", timeout=120)
    record = agent.record_for(handle.number)
    assert event.fields["AI_AGENT_STATUS"] == "COMPLETED", agent.log_tail()
    uploads = [r.body for r in openai.requests if r.path.endswith("/audio/transcriptions")]
    assert uploads and all(u["response_format"] == "verbose_json" and "language" not in u for u in uploads)
    # A hint: the profile's instructions with the Spanish hint after them.
    system = chats(openai)[0]["messages"][0]
    assert system["content"] == (
        ENGLISH.format(caller_number=handle.number) + "\n\nLa persona habla español: responde en español."
    )
    speech = [(r.body["voice"], r.body["input"]) for r in openai.requests if r.path.endswith("/audio/speech")]
    assert ("alloy", "Hello, how can I help?") in speech, speech
    assert {voice for voice, text in speech if "Claro" in text or "Adiós" in text} == {"coral"}
    assert record["language"] == "es"
    assert stored_language(agent, record["call_id"]) == "es"
