"""The echo guard on real speech: echo is recognised, a caller talking over it is not."""

from __future__ import annotations

import numpy as np
import pytest

from ari_agent.audio.echo import FRAME, EchoGuard
from ari_agent.media.resample import resample
from tests.unit.speech import speech


def _frames(pcm: np.ndarray, size: int) -> list[np.ndarray]:
    return [pcm[i : i + size] for i in range(0, len(pcm) - size + 1, size)]


@pytest.fixture(scope="module")
def agent_voice() -> np.ndarray:
    return resample(speech("We are open Monday to Friday, from nine in the morning to five."), 16000, 8000)


@pytest.fixture(scope="module")
def caller_voice() -> np.ndarray:
    pcm = speech("Hello, can I book an appointment for tomorrow please", voice="en-gb")
    return pcm


def _judge(guard: EchoGuard, sent: np.ndarray, inbound16k: np.ndarray) -> list[bool | None]:
    """Feed sent and inbound frames in lockstep: per inbound frame, echo or not (None: quiet)."""
    verdicts: list[bool | None] = []
    for i, (out, inn) in enumerate(zip(_frames(sent, FRAME), _frames(inbound16k, 2 * FRAME), strict=False)):
        guard.sent(out, i * 0.02)
        echo = guard.is_echo(inn, i * 0.02)
        loud = float(np.sqrt(np.mean(inn.astype(np.float64) ** 2))) > 300
        verdicts.append(echo if loud else None)
    return verdicts


def _run(guard: EchoGuard, sent: np.ndarray, inbound16k: np.ndarray) -> float:
    """The share of loud inbound frames judged echo."""
    loud = [v for v in _judge(guard, sent, inbound16k) if v is not None]
    return sum(loud) / max(len(loud), 1)


def _longest_speech_run(verdicts: list[bool | None]) -> int:
    """Longest run of loud frames not judged echo: what could trigger a barge-in."""
    best = run = 0
    for v in verdicts:
        run = run + 1 if v is False else 0
        best = max(best, run)
    return best


@pytest.mark.parametrize(("delay_ms", "gain_db"), [(20, -6), (50, -12), (80, -20)])
def test_delayed_attenuated_echo_is_recognised(agent_voice: np.ndarray, delay_ms: int, gain_db: int) -> None:
    delay = delay_ms * 8
    echo8k = np.concatenate([np.zeros(delay), agent_voice * 10 ** (gain_db / 20)])[: agent_voice.size]
    # Line noise so the echo is not a perfect copy.
    rng = np.random.default_rng(1)
    echo8k = echo8k + rng.normal(0, 30, echo8k.size)
    inbound = resample(echo8k.astype(np.int16), 8000, 16000)
    share = _run(EchoGuard(), agent_voice, inbound)
    assert share > 0.95, f"only {share:.0%} of echo frames recognised"
    verdicts = _judge(EchoGuard(), agent_voice, inbound)
    assert _longest_speech_run(verdicts) <= 2  # never 60 ms in a row: no speech onset


def test_caller_over_the_echo_is_not_echo(agent_voice: np.ndarray, caller_voice: np.ndarray) -> None:
    delay = 40 * 8
    echo8k = np.concatenate([np.zeros(delay), agent_voice * 10 ** (-12 / 20)])[: agent_voice.size]
    echo16k = resample(echo8k.astype(np.int16), 8000, 16000).astype(np.float64)
    n = min(echo16k.size, caller_voice.size)
    mixed = np.clip(echo16k[:n] + caller_voice[:n], -32768, 32767).astype(np.int16)
    share = _run(EchoGuard(), agent_voice, mixed)
    # The caller's own pauses are pure echo; their speech is not.
    assert share < 0.5, f"{share:.0%} of double-talk frames taken for echo"
    # A barge-in needs about 150 ms of speech: the caller gets far more than that through.
    assert _longest_speech_run(_judge(EchoGuard(), agent_voice, mixed)) >= 10


def test_echo_check_stops_half_a_second_after_the_agent(
    agent_voice: np.ndarray, caller_voice: np.ndarray
) -> None:
    guard = EchoGuard()
    guard.sent(agent_voice[:FRAME], 0.0)
    assert guard.active(0.1)
    assert not guard.active(0.6)
    assert not any(guard.is_echo(f, 0.6 + i * 0.02) for i, f in enumerate(_frames(caller_voice, 2 * FRAME)))


def test_less_sent_audio_than_the_window_is_never_echo() -> None:
    # One loud frame sent, then two loud frames heard: the reference is shorter than the
    # 40 ms window (once raised a ValueError in the correlation and deafened the call).
    guard = EchoGuard()
    tone = (np.sin(np.arange(160) / 3) * 8000).astype(np.int16)
    guard.sent(tone, 10.0)
    loud = (np.sin(np.arange(320) / 3) * 8000).astype(np.int16)
    assert guard.is_echo(loud, 10.01) is False
    assert guard.is_echo(loud, 10.03) is False
