"""AzureTTS through the SDK seam, with a fake that delivers audio from its own threads like the SDK."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import numpy as np
import pytest

from providers.azure.tts import AzureTTS
from providers.base import ProviderContext, ProviderError
from tests.fakes.azure_speech import FakeAzure
from tests.unit.test_azure_stt import refusing_port

KEY = "az-test-key-tts-6d1f0e93"


async def until(predicate: Callable[[], bool], limit: float = 5.0) -> None:
    """Wait for a condition the fake records (the limit only stops a hung test)."""
    async with asyncio.timeout(limit):
        while not predicate():  # noqa: ASYNC110 - the fakes record into lists, with no event to wait on
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("rate", [8000, 16000])
async def test_streams_raw_pcm_at_the_call_rate(rate: int) -> None:
    fake = FakeAzure(tts_chunks=4)
    tts = AzureTTS(fake, voice="en-US-JennyNeural", language="en-US")
    chunks = [c async for c in tts.synthesize("We open at nine.", rate)]
    synthesis = fake.syntheses[0]
    assert (synthesis.text, synthesis.sample_rate, synthesis.voice) == (
        "We open at nine.",
        rate,
        "en-US-JennyNeural",
    )
    audio = b"".join(chunks)
    assert len(audio) == 4 * 2 * (rate // 50)
    assert np.abs(np.frombuffer(audio, "<i2")).max() > 4000
    assert threading.get_ident() not in fake.callback_threads


async def test_stopping_early_stops_the_synthesis() -> None:
    fake = FakeAzure(tts_chunks=200, tts_delay=0.005)
    stream = AzureTTS(fake).synthesize("A long answer.", 16000)
    await anext(stream)
    await stream.aclose()
    await until(lambda: fake.syntheses[0].stopped)
    assert fake.syntheses[0].chunks_sent < 200


@pytest.mark.parametrize(("code", "retryable"), [("ServiceTimeout", True), ("Forbidden", False)])
async def test_canceled_synthesis_raises(code: str, retryable: bool) -> None:
    fake = FakeAzure(tts_cancel_code=code)
    with pytest.raises(ProviderError) as caught:
        [c async for c in AzureTTS(fake).synthesize("Hello.", 8000)]
    assert caught.value.retryable is retryable


async def test_unsupported_rate() -> None:
    with pytest.raises(ProviderError) as caught:
        [c async for c in AzureTTS(FakeAzure()).synthesize("Hello.", 11025)]
    assert not caught.value.retryable


async def test_real_sdk_path_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_SPEECH_KEY", KEY)
    with refusing_port() as port:
        ctx = ProviderContext(
            profile="test", voice="en-US-AriaNeural", options={"host": f"ws://127.0.0.1:{port}"}
        )
        tts = AzureTTS.create(ctx)
        assert tts.voice == "en-US-AriaNeural"
        with pytest.raises(ProviderError) as caught:
            [c async for c in tts.synthesize("Hello.", 8000)]
    assert caught.value.retryable and "ConnectionFailure" in str(caught.value)
    assert KEY not in str(caught.value)
