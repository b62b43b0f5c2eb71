from __future__ import annotations

import struct
from collections.abc import Iterator

import numpy as np
import pytest

from providers.base import ProviderContext
from providers.local.stt import PocketsphinxSTT
from providers.local.tts import EspeakTTS, parse_wav, trim_silence
from tests.unit.speech import RATE, frontdesk_context


@pytest.fixture(autouse=True, scope="module")
def _stop_decoders() -> Iterator[None]:
    yield
    PocketsphinxSTT.shutdown_pools()


def wav(samples: np.ndarray, rate: int, data_size: int | None = None) -> bytes:
    body = samples.astype("<i2").tobytes()
    size = len(body) if data_size is None else data_size
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    return (
        b"RIFF"
        + struct.pack("<I", 36 + len(body))
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", 16)
        + fmt
        + (b"data" + struct.pack("<I", size) + body)
    )


def test_parse_wav_reads_a_streamed_header() -> None:
    samples = np.arange(-500, 500, dtype=np.int16)
    # espeak-ng on a pipe writes a placeholder size: read to the end instead.
    parsed, rate = parse_wav(wav(samples, 22050, data_size=0x7FFFF000))
    assert rate == 22050
    assert np.array_equal(parsed, samples)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not a RIFF"),
        (b"RIFF\0\0\0\0WAVEdata\0\0\0\0", "data chunk before fmt"),
        (b"RIFF\0\0\0\0WAVEfmt \x10\0\0\0" + struct.pack("<HHIIHH", 1, 2, 8000, 0, 4, 16), "2 channels"),
        (b"RIFF\0\0\0\0WAVE", "no data chunk"),
    ],
)
def test_parse_wav_refuses_what_it_cannot_read(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_wav(data)


def test_trim_keeps_fifty_ms_around_the_sound() -> None:
    samples = np.concatenate([np.zeros(8000), np.full(1600, 5000), np.zeros(8000)]).astype(np.int16)
    trimmed = trim_silence(samples, 16000)
    assert len(trimmed) == 1600 + 2 * 800
    assert trim_silence(np.zeros(100, dtype=np.int16), 16000).size == 0


async def test_synthesis_streams_speech_in_chunks() -> None:
    tts = EspeakTTS.create(frontdesk_context())
    chunks = [c async for c in tts.synthesize("We are at 12 Harbour Street.", RATE)]
    assert len(chunks) > 5
    assert all(len(c) == RATE // 10 * 2 for c in chunks[:-1])  # 100 ms each
    samples = np.frombuffer(b"".join(chunks), dtype=np.int16)
    seconds = samples.size / RATE
    assert 1.0 < seconds < 4.0
    assert np.sqrt(np.mean(samples.astype(np.float64) ** 2)) > 1000
    # espeak-ng's own padding is cut: sound within ~50 ms of both ends.
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > 200)
    assert loud[0] <= RATE * 60 // 1000
    assert samples.size - loud[-1] <= RATE * 60 // 1000


async def test_rendering_is_cached_across_instances() -> None:
    first = await EspeakTTS().render("Thank you for calling. Goodbye.", 8000)
    again = await EspeakTTS().render("Thank you for calling. Goodbye.", 8000)
    assert again is first
    other_rate = await EspeakTTS().render("Thank you for calling. Goodbye.", 16000)
    assert abs(len(other_rate) - 2 * len(first)) < 64


async def test_prepare_fills_the_cache() -> None:
    tts = EspeakTTS(voice="en-gb")
    phrases = [f"Prepared phrase number {n}." for n in range(5)]
    await tts.prepare(phrases, RATE)
    assert all(tts._cache.get((p, "en-gb", tts.rate, RATE)) for p in phrases)


async def test_text_is_never_taken_as_options_or_shell() -> None:
    chunks = [c async for c in EspeakTTS().synthesize("--help; echo $HOME `id` -v xx", RATE)]
    assert sum(len(c) for c in chunks) > RATE  # spoken, not interpreted


async def test_text_without_sound_gives_no_audio() -> None:
    assert [c async for c in EspeakTTS().synthesize("  ", RATE)] == []


async def test_what_it_says_is_understood() -> None:
    ctx = frontdesk_context()
    pcm = await EspeakTTS().render("Can I speak to someone?", RATE)
    transcript = await PocketsphinxSTT.create(ctx).recognize(pcm, RATE)
    assert transcript.text == "can i speak to someone"


def test_check_reports_a_missing_program() -> None:
    class Missing(EspeakTTS):
        program = "espeak-ng-not-installed"

    problems = Missing.check(ProviderContext(profile="p"))
    assert problems == ["espeak-ng-not-installed program not found; install it: apt-get install espeak-ng"]
    assert EspeakTTS.check(ProviderContext(profile="p")) == []
