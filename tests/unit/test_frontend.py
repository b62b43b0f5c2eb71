"""The audio front end on real speech: echo removed, noise lowered, the caller kept.

Figures seen here when written (tests/bench/bench_frontend.py prints them all):
28-42 dB of echo reduction through µ-law at -6..-20 dB and 20..200 ms;
pink noise lowered by well over 10 dB with most voiced speech frames kept.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from ari_agent.audio.frontend import AudioFrontEnd, front_end_for, frontend_missing
from ari_agent.audio.vad import VoiceActivityDetector
from ari_agent.errors import ConfigError
from ari_agent.media.resample import resample
from ari_agent.profiles import ProfileConfig
from tests.scenes import echo_path, noisy, sox_noise, ulaw_round_trip
from tests.unit.speech import frames, speech

needs_livekit = pytest.mark.skipif(
    importlib.util.find_spec("livekit") is None, reason="the audio extra (livekit) is not installed"
)

AGENT = "We are open Monday to Friday, from nine in the morning to five in the afternoon."
CALLER = "Hello, can I book an appointment for tomorrow please"


@pytest.fixture(scope="module")
def agent8k() -> np.ndarray:
    return resample(speech(AGENT), 16000, 8000)


def _energy_db(pcm: list[bytes]) -> float:
    x = np.frombuffer(b"".join(pcm), dtype=np.int16).astype(np.float64)
    return 10 * float(np.log10(np.dot(x, x) + 1.0))


def _run(fe: AudioFrontEnd, inbound: np.ndarray, sent8k: np.ndarray | None = None) -> list[bytes]:
    """What the voice detector gets, frame by frame (the recogniser's is checked apart)."""
    out = []
    for i, frame in enumerate(frames(inbound)):
        if sent8k is not None and (i + 1) * 160 <= sent8k.size:
            fe.sent(sent8k[i * 160 : (i + 1) * 160], i * 0.02)
        out.append(fe.process(frame, i * 0.02)[1])
    return out


@needs_livekit
@pytest.mark.parametrize("gain_db", [-6, -12, -20])
@pytest.mark.parametrize("delay_ms", [20, 60, 120, 200])
def test_echo_is_cancelled(agent8k: np.ndarray, gain_db: int, delay_ms: int) -> None:
    inbound = echo_path(agent8k, gain_db, delay_ms)
    fe = AudioFrontEnd(echo_cancellation=True, noise_suppression=False)
    out = _run(fe, inbound, agent8k)
    reduction = _energy_db(frames(inbound)) - _energy_db(out)
    assert reduction >= 20, f"echo reduced by only {reduction:.1f} dB"
    # What is left does not sound like speech to the VAD: it cannot interrupt the agent.
    vad = VoiceActivityDetector(16000, 2)
    assert sum(vad.is_voiced(f) for f in out) <= 2
    assert fe.echo.frames == len(out)


@needs_livekit
def test_canceller_rests_while_the_agent_is_silent_and_converges_again(agent8k: np.ndarray) -> None:
    gap = np.zeros(8000 * 3, np.int16)  # 3 s of the agent's silence: the canceller is not run
    sent = np.concatenate([agent8k, gap, agent8k])
    inbound = echo_path(sent, -12, 120)
    fe = AudioFrontEnd(echo_cancellation=True, noise_suppression=False)
    out = _run(fe, inbound, sent)
    second = (agent8k.size + gap.size) // 160
    assert fe.echo.frames < len(out) - 100  # idle for most of the gap
    assert _energy_db(frames(inbound)[second:]) - _energy_db(out[second:]) >= 25
    # The first second of the second reply: still cancelled (the learnt filter was kept).
    assert _energy_db(frames(inbound)[second : second + 50]) - _energy_db(out[second : second + 50]) >= 20


@needs_livekit
def test_caller_talking_over_the_echo_is_kept(agent8k: np.ndarray) -> None:
    caller = speech(CALLER, voice="en-gb")
    caller = resample(ulaw_round_trip(resample(caller, 16000, 8000)), 8000, 16000)
    echo = echo_path(agent8k, -12, 60)
    n = min(echo.size, caller.size)
    start = 16000  # the caller starts a second into the agent's reply (the canceller has learnt)
    mixed = echo.astype(np.float64)
    mixed[start:n] += caller[: n - start]
    mixed16 = np.clip(mixed, -32768, 32767).astype(np.int16)
    fe = AudioFrontEnd(echo_cancellation=True, noise_suppression=False)
    out = _run(fe, mixed16, agent8k)
    vad = VoiceActivityDetector(16000, 2)
    caller_frames = frames(np.concatenate([np.zeros(start, np.int16), caller[: n - start]]))
    wanted = [i for i, f in enumerate(caller_frames) if vad.is_voiced(f)]
    kept = sum(vad.is_voiced(out[i]) for i in wanted)
    assert kept >= 0.8 * len(wanted), f"only {kept} of {len(wanted)} voiced caller frames kept"
    # And the caller's speech keeps its level (double talk is not muted).
    assert _energy_db([out[i] for i in wanted]) > _energy_db([caller_frames[i] for i in wanted]) - 6


@needs_livekit
def test_noise_suppression_lowers_pink_noise_and_keeps_speech() -> None:
    line = speech(CALLER)
    pad = np.zeros(16000, np.int16)
    clean = np.concatenate([pad, line, pad])
    mixed = noisy(clean, 16000, 10.0, "pink")
    fe = AudioFrontEnd(echo_cancellation=False, noise_suppression=True)
    out = _run(fe, mixed)
    noise_only = slice(25, 50)  # the last half of the leading second: the suppressor has adapted
    before, after = _energy_db(frames(mixed)[noise_only]), _energy_db(out[noise_only])
    assert before - after >= 10, f"noise lowered by only {before - after:.1f} dB"
    vad = VoiceActivityDetector(16000, 2)
    wanted = [i for i, f in enumerate(frames(clean)) if vad.is_voiced(f)]
    kept = sum(vad.is_voiced(out[i]) for i in wanted)
    assert kept >= 0.85 * len(wanted), f"only {kept} of {len(wanted)} voiced speech frames kept"
    assert fe.noise.frames == len(out)


@needs_livekit
def test_the_recogniser_gets_the_echo_cancelled_audio_without_suppression(agent8k: np.ndarray) -> None:
    inbound = echo_path(agent8k, -12, 60)
    noisy_line = noisy(speech(CALLER), 16000, 10.0, "pink")
    fe = AudioFrontEnd(echo_cancellation=False, noise_suppression=True)
    for frame in frames(noisy_line):
        assert fe.process(frame, 0.0)[0] == frame
    fe = AudioFrontEnd(echo_cancellation=True, noise_suppression=True)
    heard = []
    for i, frame in enumerate(frames(inbound)):
        fe.sent(agent8k[i * 160 : (i + 1) * 160], i * 0.02)
        heard.append(fe.process(frame, i * 0.02)[0])
    assert _energy_db(heard) < _energy_db(frames(inbound)) - 20  # the echo is gone for the recogniser too


@needs_livekit
def test_noise_alone_starts_fewer_turns_with_suppression() -> None:
    brown = sox_noise("brown", 20.0, 16000).astype(np.float64)
    brown *= 500 / np.sqrt(np.mean(brown**2))  # about -36 dBFS: 10 dB under espeak-ng speech
    audio = np.clip(brown, -32768, 32767).astype(np.int16)

    def starts(chunks: list[bytes]) -> int:
        vad = VoiceActivityDetector(16000, 2, onset_ms=60, min_speech_ms=60)
        return sum(type(vad.process(f)).__name__ == "SpeechStarted" for f in chunks)

    off = starts(frames(audio))
    on = starts(_run(AudioFrontEnd(echo_cancellation=False, noise_suppression=True), audio))
    assert off >= 2 and on < off, (off, on)


@needs_livekit
def test_digital_silence_skips_both_stages() -> None:
    fe = AudioFrontEnd(echo_cancellation=True, noise_suppression=True)
    silent = bytes(640)
    assert all(fe.process(silent, i * 0.02) == (silent, silent) for i in range(50))
    assert fe.echo.frames == 0 and fe.noise.frames == 0


@needs_livekit
def test_reference_backlog_is_bounded(agent8k: np.ndarray) -> None:
    fe = AudioFrontEnd(echo_cancellation=True, noise_suppression=False)
    for i in range(40):  # the pacer ran ahead of the inbound clock by 40 frames
        fe.sent(agent8k[i * 160 : (i + 1) * 160], 0.0)
    fe.process(bytes(640), 0.0)
    assert fe.ref_dropped == 30


@needs_livekit
def test_frames_must_be_20ms() -> None:
    with pytest.raises(ValueError, match="20 ms"):
        AudioFrontEnd().process(bytes(320), 0.0)


def test_profile_off_means_no_front_end() -> None:
    assert front_end_for(ProfileConfig(), "p") is None


def test_missing_package_is_a_config_error_naming_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    from ari_agent.audio import frontend

    monkeypatch.setattr(frontend, "frontend_missing", lambda: "needs the livekit package (not installed)")
    with pytest.raises(ConfigError) as caught:
        front_end_for(ProfileConfig(noise_suppression=True), "desk")
    assert caught.value.field == "profiles.desk.noise_suppression"
    assert "noise_suppression = false" in caught.value.fix and "ari-agent[audio]" in caught.value.fix


def test_check_reports_the_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    from ari_agent.audio import frontend
    from ari_agent.profiles.catalogue import plan_profile

    monkeypatch.setattr(frontend, "frontend_missing", lambda: "needs the livekit package (not installed)")
    plan = plan_profile("desk", ProfileConfig(echo_cancellation=True))
    assert [p.field for p in plan.errors] == ["profiles.desk.echo_cancellation"]
    monkeypatch.setattr(frontend, "frontend_missing", lambda: None)
    assert not plan_profile("desk", ProfileConfig(echo_cancellation=True)).errors


def test_frontend_missing_is_none_here_when_livekit_is_installed() -> None:
    installed = importlib.util.find_spec("livekit") is not None
    assert (frontend_missing() is None) == installed
