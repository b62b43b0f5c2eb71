"""Real synthetic speech for tests: espeak-ng, optionally through a telephone line."""

from __future__ import annotations

import functools
import struct
import subprocess

import numpy as np
import soxr

from ari_agent.profiles import builtin_profiles
from providers.base import ProviderContext

RATE = 16000


@functools.cache
def espeak(text: str, voice: str = "en-us", wpm: int = 160) -> tuple[np.ndarray, int]:
    """espeak-ng's own output: int16 samples and their rate (22050 Hz)."""
    wav = subprocess.run(
        ["espeak-ng", "--stdout", "-v", voice, "-s", str(wpm), text], capture_output=True, check=True
    ).stdout
    # espeak-ng writing to a pipe leaves the header's sizes unset: read the
    # canonical 44-byte header by hand.
    assert wav[:4] == b"RIFF" and wav[36:40] == b"data", wav[:44]
    (rate,) = struct.unpack_from("<I", wav, 24)
    body = wav[44 : len(wav) - (len(wav) - 44) % 2]
    return np.frombuffer(body, dtype="<i2").astype(np.int16), rate


def speech(text: str, rate: int = RATE, voice: str = "en-us") -> np.ndarray:
    samples, src = espeak(text, voice)
    return np.asarray(soxr.resample(samples, src, rate), dtype=np.int16)


def ulaw_round_trip(samples: np.ndarray) -> np.ndarray:
    """Encode to G.711 µ-law and back (the segment/mantissa format, not a continuous curve)."""
    x = samples.astype(np.int32) >> 2  # G.711 works on 14-bit samples
    sign = x < 0
    mag = np.minimum(np.abs(x) + 33, 0x1FFF)
    exponent = np.floor(np.log2(mag)).astype(np.int32) - 5
    mantissa = (mag >> (exponent + 1)) & 0x0F
    decoded = ((((mantissa << 1) + 33) << exponent) - 33) << 2
    return np.where(sign, -decoded, decoded).astype(np.int16)


def telephone(text: str, rate: int = RATE, voice: str = "en-us", wpm: int = 160) -> np.ndarray:
    """espeak-ng speech as heard over a µ-law phone line: 8 kHz, G.711, back up to ``rate``."""
    samples, src = espeak(text, voice, wpm)
    narrow = np.asarray(soxr.resample(samples, src, 8000), dtype=np.int16)
    return np.asarray(soxr.resample(ulaw_round_trip(narrow), 8000, rate), dtype=np.int16)


def silence(ms: int, rate: int = RATE) -> np.ndarray:
    return np.zeros(rate * ms // 1000, dtype=np.int16)


def noise(ms: int, dbfs: float, rate: int = RATE, seed: int = 0) -> np.ndarray:
    """White noise at an RMS level of ``dbfs``."""
    rng = np.random.default_rng(seed)
    level = 32768 * 10 ** (dbfs / 20)
    return np.clip(rng.normal(0, level, rate * ms // 1000), -32768, 32767).astype(np.int16)


def frames(samples: np.ndarray, rate: int = RATE, ms: int = 20) -> list[bytes]:
    step = rate * ms // 1000
    usable = len(samples) - len(samples) % step
    return [samples[i : i + step].tobytes() for i in range(0, usable, step)]


# The demo profile's dialog (Riverside Dental), as shipped: examples, synonyms, replies.
FRONTDESK_INTENTS = builtin_profiles()["frontdesk"].provider_context("frontdesk").intents
FRONTDESK_FALLBACK = "Sorry, I can help with opening hours, our address, or booking an appointment."


def frontdesk_context(**options: object) -> ProviderContext:
    return ProviderContext(
        profile="frontdesk",
        hints=tuple(dict.fromkeys(p for intent in FRONTDESK_INTENTS for p in intent.phrases)),
        intents=FRONTDESK_INTENTS,
        fallback_reply=FRONTDESK_FALLBACK,
        options=options,
    )
