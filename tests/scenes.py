"""Test audio scenes: speech under noise (mixed with sox at a given SNR) and echo paths.

Shared by the unit tests, the benchmarks and the through-Asterisk tests:

- :func:`mix_noise` writes a WAV of speech with pink, brown or white noise
  (sox's own generators) or any noise WAV (a babble, :func:`babble`) added
  at ``snr_db`` below the speech's active level (the RMS of its frames above
  -50 dBFS, so pauses don't dilute it). :func:`noisy` does the same in
  memory.
- :func:`echo_path` is what a speakerphone sends back of the agent's
  voice: delayed, attenuated, with line noise, through G.711 µ-law, as the
  agent receives it at 16 kHz.

Everything is deterministic: sox runs with ``-R`` and noise is taken from an
offset chosen by ``seed``.
"""

from __future__ import annotations

import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np
import soxr

from ari_agent.media.resample import StreamResampler

NOISES = ("pink", "brown", "white")
ACTIVE_FLOOR_DBFS = -50.0


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Mono PCM16 samples and their rate."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise ValueError(f"{path}: not mono 16-bit PCM")
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16), w.getframerate()


def write_wav(path: Path, pcm: np.ndarray, rate: int) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.astype("<i2").tobytes())
    return path


def active_rms(pcm: np.ndarray, rate: int) -> float:
    """RMS over the 20 ms frames louder than -50 dBFS (the speech, not its pauses)."""
    step = rate // 50
    usable = pcm[: pcm.size - pcm.size % step].astype(np.float64).reshape(-1, step)
    if not usable.size:
        return 0.0
    power = np.mean(usable**2, axis=1)
    loud = power[power >= (32768 * 10 ** (ACTIVE_FLOOR_DBFS / 20)) ** 2]
    return float(np.sqrt(np.mean(loud))) if loud.size else 0.0


def sox_noise(kind: str, seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    """sox's pink, brown or white noise (deterministic), ``seconds`` long."""
    if kind not in NOISES:
        raise ValueError(f"noise {kind!r}: use one of {NOISES} or a WAV path")
    skip = 0.37 * seed  # another stretch of the same sequence per seed
    out = subprocess.run(
        [
            "sox",
            "-R",
            "-n",
            "-r",
            str(rate),
            "-c",
            "1",
            "-b",
            "16",
            "-t",
            "raw",
            "-e",
            "signed",
            "-",
            "synth",
            f"{seconds + skip:.3f}",
            f"{kind}noise",
            "trim",
            f"{skip:.3f}",
        ],
        capture_output=True,
        check=True,
    ).stdout
    return np.frombuffer(out[: len(out) - len(out) % 2], dtype="<i2").astype(np.int16)


def mix_noise(
    speech_wav: Path, out_wav: Path, snr_db: float = 10.0, noise: str | Path = "pink", *, seed: int = 0
) -> Path:
    """Write ``speech_wav`` with ``noise`` (pink, brown, white, or a noise WAV) at ``snr_db``; via sox.

    The noise spans the whole file (pauses included) at the speech's active
    level minus ``snr_db``. Returns ``out_wav``, at the speech's rate.
    """
    speech, rate = read_wav(speech_wav)
    seconds = speech.size / rate
    with tempfile.TemporaryDirectory() as tmp:
        if isinstance(noise, Path):
            src, src_rate = read_wav(noise)
            samples = np.asarray(soxr.resample(src, src_rate, rate), dtype=np.int16)
            reps = -(-speech.size // max(samples.size, 1))
            samples = np.tile(samples, reps)[: speech.size]
        else:
            samples = sox_noise(noise, seconds, rate, seed)[: speech.size]
        noise_rms = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))
        if noise_rms == 0:
            raise ValueError(f"noise {noise} is silent")
        gain = active_rms(speech, rate) / noise_rms / 10 ** (snr_db / 20)
        noise_wav = write_wav(Path(tmp) / "noise.wav", samples, rate)
        subprocess.run(
            [
                "sox",
                "-R",
                "-m",
                "-v",
                "1",
                str(speech_wav),
                "-v",
                f"{gain:.6f}",
                str(noise_wav),
                "-b",
                "16",
                str(out_wav),
            ],
            capture_output=True,
            check=True,
        )
    return out_wav


def noisy(
    speech: np.ndarray, rate: int, snr_db: float = 10.0, noise: str | Path = "pink", *, seed: int = 0
) -> np.ndarray:
    """:func:`mix_noise` in memory: PCM16 in, the same length of PCM16 out."""
    with tempfile.TemporaryDirectory() as tmp:
        src = write_wav(Path(tmp) / "speech.wav", speech, rate)
        out, _ = read_wav(mix_noise(src, Path(tmp) / "mixed.wav", snr_db, noise, seed=seed))
    return out[: speech.size]


def babble(out_wav: Path, seconds: float = 10.0, rate: int = 16000, voices: int = 5) -> Path:
    """Several espeak-ng voices talking at once (a café, an open-plan office), as a noise WAV."""
    lines = [
        "I told him the meeting was moved to Thursday afternoon but he did not listen",
        "the train was late again this morning so we took a taxi to the station",
        "can you pass me the salt and the pepper please, thank you very much",
        "they are building a new supermarket next to the old church on the hill",
        "my sister bought a red car last week and she drives it everywhere now",
        "we should order some more paper for the printer before friday",
        "the football match last night was the best one of the whole season",
    ]
    accents = ["en-us", "en-gb", "en-us+f3", "en-gb+m4", "en-us+m7", "en-gb+f2", "en-us+f4"]
    total = int(seconds * rate)
    mix = np.zeros(total, dtype=np.float64)
    for i in range(voices):
        text = " ".join(lines[(i + k) % len(lines)] for k in range(4))
        wav = subprocess.run(
            ["espeak-ng", "--stdout", "-v", accents[i % len(accents)], "-s", str(150 + 10 * i), text],
            capture_output=True,
            check=True,
        ).stdout
        src_rate = int.from_bytes(wav[24:28], "little")
        body = wav[44 : len(wav) - (len(wav) - 44) % 2]
        voice = np.asarray(
            soxr.resample(np.frombuffer(body, dtype="<i2").astype(np.int16), src_rate, rate), dtype=np.float64
        )
        voice = np.roll(np.tile(voice, -(-total // voice.size))[:total], i * rate // 3)
        mix += voice / max(active_rms(voice.astype(np.int16), rate), 1.0)
    mix *= 3000 / float(np.sqrt(np.mean(mix**2)))
    return write_wav(out_wav, np.clip(mix, -32768, 32767).astype(np.int16), rate)


def ulaw_round_trip(samples: np.ndarray) -> np.ndarray:
    """Encode to G.711 µ-law and back."""
    from ari_agent.media.codecs import ulaw_decode, ulaw_encode

    return ulaw_decode(ulaw_encode(samples.astype(np.int16)))


def echo_path(
    agent8k: np.ndarray, gain_db: float, delay_ms: int, *, line_noise: float = 10.0, seed: int = 1
) -> np.ndarray:
    """The agent's 8 kHz voice as it comes back from a speakerphone, at 16 kHz.

    Delayed by ``delay_ms``, attenuated by ``gain_db``, smeared by a short
    room response, with white line noise of RMS ``line_noise``, through
    µ-law, resampled up as the media path does. Same length as the input (x2).
    """
    delay = delay_ms * 8
    room = np.array([1.0, 0.0, 0.35, 0.0, 0.0, -0.2, 0.0, 0.1])  # a few early reflections
    wet = np.convolve(agent8k.astype(np.float64), room)[: agent8k.size] * 10 ** (gain_db / 20)
    echo = np.concatenate([np.zeros(delay), wet])[: agent8k.size]
    echo += np.random.default_rng(seed).normal(0, line_noise, echo.size)
    line = ulaw_round_trip(np.clip(echo, -32768, 32767).astype(np.int16))
    up = StreamResampler(8000, 16000)
    return np.concatenate([up.process(line), up.flush()])[: 2 * agent8k.size]
