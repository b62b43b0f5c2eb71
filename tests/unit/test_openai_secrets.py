"""The OpenAI key never shows: not in reprs, not in errors (chained or not), not in logs."""

from __future__ import annotations

import logging
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from providers.base import MULAW_8K, Message, ProviderContext, ProviderError, RealtimeConfig
from providers.openai._client import OpenAISettings
from providers.openai.llm import OpenAILLM
from providers.openai.realtime import PCM16_24K, OpenAIRealtime
from providers.openai.stt import OpenAISTT
from providers.openai.tts import OpenAITTS
from tests.fakes.openai_server import FakeOpenAI

KEY = "sk-proj-LEAKCHECK-5f1e2d3c4b5a69788796a5b4c3d2e1f0"


@pytest.fixture
async def url(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    # The server wants another key: every request is refused, and its 401
    # message quotes the key we sent.
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    async with FakeOpenAI(api_key="sk-the-server-wants-this-one").running() as base:
        yield base


def ctx(url: str) -> ProviderContext:
    return ProviderContext("test", options={"base_url": url})


def assert_clean(text: str) -> None:
    assert KEY not in text
    assert KEY[8:30] not in text  # nor a recognisable piece of it


def test_reprs_hide_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    c = ProviderContext("test")
    settings = OpenAISettings.from_context(c)
    assert settings.key is not None and settings.key.reveal() == KEY
    for obj in (
        settings,
        OpenAILLM.create(c),
        OpenAITTS.create(c),
        OpenAISTT.create(c),
        OpenAIRealtime.create(c),
    ):
        assert_clean(repr(obj))
        assert_clean(str(obj))
        assert_clean(f"{obj!r} {vars(obj).get('settings')}")


def test_scrub_masks_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    settings = OpenAISettings.from_context(ProviderContext("test"))
    assert settings.scrub(f"bad key {KEY}!") == "bad key ********!"


async def _llm(url: str) -> None:
    llm = OpenAILLM.create(ctx(url))
    try:
        async for _ in llm.chat([Message("user", "hi")]):
            pass
    finally:
        await llm.aclose()


async def _tts(url: str) -> None:
    tts = OpenAITTS.create(ctx(url))
    try:
        async for _ in tts.synthesize("hi", 8000):
            pass
    finally:
        await tts.aclose()


async def _stt_batch(url: str) -> None:
    stt = OpenAISTT.create(ctx(url))
    try:
        await stt.recognize(bytes(1600), 8000)
    finally:
        await stt.aclose()


async def _stt_stream(url: str) -> None:
    stt = OpenAISTT.create(ctx(url))
    try:
        await stt.stream(MULAW_8K)
    finally:
        await stt.aclose()


async def _realtime(url: str) -> None:
    await OpenAIRealtime.create(ctx(url)).connect(RealtimeConfig(audio=PCM16_24K))


@pytest.mark.parametrize("attempt", [_llm, _tts, _stt_batch, _stt_stream, _realtime])
async def test_errors_and_logs_hide_the_key(
    url: str, attempt: Callable[[str], Awaitable[None]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # the SDK's own debug logging included
    with pytest.raises(ProviderError) as info:
        await attempt(url)
    error = info.value
    assert error.status == 401
    assert not error.retryable
    assert_clean(str(error))
    assert_clean(repr(error))
    assert_clean("".join(traceback.format_exception(error)))  # chained causes too
    assert caplog.records  # logging was on, so the check below means something
    assert_clean(caplog.text)
