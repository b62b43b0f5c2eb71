"""Against the real vendors: `make test-live`, never part of `make test`.

Each test runs only where its vendor's key is set (nothing can reach the
vendors from CI); the adapters are the same ones `make test` drives against
wire-level fakes.
"""

from __future__ import annotations

import os

import pytest

from providers.base import Message, ProviderContext, TextDelta

needs = {
    "openai": pytest.mark.skipif(not os.environ.get("OPENAI_API_KEY"), reason="OPENAI_API_KEY not set"),
    "deepgram": pytest.mark.skipif(not os.environ.get("DEEPGRAM_API_KEY"), reason="DEEPGRAM_API_KEY not set"),
    "azure": pytest.mark.skipif(
        not (os.environ.get("AZURE_SPEECH_KEY") and os.environ.get("AZURE_SPEECH_REGION")),
        reason="AZURE_SPEECH_KEY / AZURE_SPEECH_REGION not set",
    ),
}


@needs["openai"]
async def test_openai_chat_streams_text() -> None:
    from providers.openai.llm import OpenAILLM

    llm = OpenAILLM.create(ProviderContext(profile="live"))
    text = ""
    async for event in llm.chat([Message("user", "Say the word hello and nothing else.")]):
        if isinstance(event, TextDelta):
            text += event.text
    assert "hello" in text.lower()


@pytest.mark.parametrize(
    "provider",
    [
        pytest.param("providers.openai.tts:OpenAITTS", marks=needs["openai"]),
        pytest.param("providers.deepgram.tts:DeepgramTTS", marks=needs["deepgram"]),
        pytest.param("providers.azure.tts:AzureTTS", marks=needs["azure"]),
    ],
)
async def test_tts_speaks(provider: str) -> None:
    from providers import registry

    tts = registry.create_tts(provider, ProviderContext(profile="live"))
    audio = b"".join([chunk async for chunk in tts.synthesize("Hello from the live test.", 16000)])
    assert len(audio) > 16000  # over half a second of speech
