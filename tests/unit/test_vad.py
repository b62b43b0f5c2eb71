from __future__ import annotations

import numpy as np
import pytest

from ari_agent.audio.vad import SpeechEnded, SpeechStarted, VadEvent, VoiceActivityDetector, dbfs
from tests.unit.speech import RATE, frames, noise, silence, telephone


def run(vad: VoiceActivityDetector, audio: np.ndarray, ms: int = 20) -> list[tuple[VadEvent, bytes]]:
    out: list[tuple[VadEvent, bytes]] = []
    for frame in frames(audio, ms=ms):
        event = vad.process(frame)
        if event is not None:
            out.append((event, vad.utterance()))
    return out


def loud_span_ms(samples: np.ndarray, offset_ms: int) -> tuple[float, float]:
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > 300)
    return offset_ms + loud[0] * 1000 / RATE, offset_ms + loud[-1] * 1000 / RATE


def test_speech_padded_with_silence_gives_one_utterance_at_the_right_place() -> None:
    words = telephone("what time do you open on saturday")
    audio = np.concatenate([silence(1000), words, silence(1500)])
    start, end = loud_span_ms(words, 1000)

    events = run(VoiceActivityDetector(), audio)

    assert [type(e) for e, _ in events] == [SpeechStarted, SpeechEnded]
    began, ended = events[0][0], events[1][0]
    assert isinstance(began, SpeechStarted) and isinstance(ended, SpeechEnded)
    assert abs(began.at_ms - start) <= 100
    assert abs(ended.at_ms - end) <= 150
    assert not ended.discarded
    assert 0.8 * (end - start) <= ended.speech_ms <= end - start + 100
    utterance = events[1][1]
    # Pre-roll before the onset and a short tail after the last voiced frame.
    assert (end - start) + 300 <= len(utterance) / 2 * 1000 / RATE <= (end - start) + 600


def test_pre_roll_keeps_the_first_phoneme() -> None:
    words = telephone("six", rate=RATE)
    audio = np.concatenate([silence(500), words, silence(1000)])
    vad = VoiceActivityDetector(min_speech_ms=0)
    events = run(vad, audio)
    utterance = np.frombuffer(events[-1][1], dtype=np.int16)
    # The utterance holds the whole word, from its very first loud sample.
    first_loud = int(np.flatnonzero(np.abs(words.astype(np.int32)) > 300)[0])
    head = words[first_loud : first_loud + 800]
    as_list = utterance.tobytes()
    assert head.tobytes() in as_list
    lead_ms = as_list.index(head.tobytes()) / 2 * 1000 / RATE
    assert 150 <= lead_ms <= 260


def test_speaking_follows_the_events() -> None:
    audio = np.concatenate([silence(300), telephone("hello there"), silence(1000)])
    vad = VoiceActivityDetector()
    seen = []
    for frame in frames(audio):
        event = vad.process(frame)
        if event is not None:
            seen.append((type(event).__name__, vad.speaking))
    assert seen == [("SpeechStarted", True), ("SpeechEnded", False)]


def test_a_click_is_not_an_utterance() -> None:
    audio = np.concatenate([silence(500), noise(60, -10), silence(1000)])
    # The same click counts as an utterance when nothing sets a minimum...
    kept = run(VoiceActivityDetector(min_speech_ms=0), audio)
    assert [type(e) for e, _ in kept] == [SpeechStarted, SpeechEnded]
    assert kept[1][1] != b""
    # ...and with one above its length, the onset is closed with no audio.
    vad = VoiceActivityDetector(min_speech_ms=200)
    events = run(vad, audio)
    assert [type(e) for e, _ in events] == [SpeechStarted, SpeechEnded]
    ended = events[1][0]
    assert isinstance(ended, SpeechEnded) and ended.discarded and ended.speech_ms == 60
    assert events[1][1] == b"" and vad.utterance() == b""
    assert not vad.speaking


def test_noise_bursts_then_speech_gives_only_the_speech() -> None:
    words = telephone("where are you located")
    bursts = [silence(400), noise(60, -12, seed=1), silence(800), noise(40, -12, seed=2), silence(800)]
    audio = np.concatenate([*bursts, words, silence(1200)])
    start, _ = loud_span_ms(words, 400 + 60 + 800 + 40 + 800)
    events = run(VoiceActivityDetector(min_speech_ms=200), audio)
    kept = [e for e, audio in events if isinstance(e, SpeechEnded) and not e.discarded]
    assert len(kept) == 1
    starts = [e.at_ms for e, _ in events if isinstance(e, SpeechStarted)]
    assert any(abs(s - start) <= 100 for s in starts)


def test_pure_silence_produces_nothing() -> None:
    assert run(VoiceActivityDetector(), silence(5000)) == []


def test_line_hiss_below_the_energy_floor_is_not_speech() -> None:
    hiss = noise(5000, -60)
    assert dbfs(hiss.tobytes()) < -55
    assert run(VoiceActivityDetector(aggressiveness=0), hiss) == []


@pytest.mark.parametrize("ms", [10, 30])
def test_other_frame_sizes(ms: int) -> None:
    audio = np.concatenate([silence(600), telephone("goodbye"), silence(1000)])
    events = run(VoiceActivityDetector(), audio, ms=ms)
    assert [type(e) for e, _ in events] == [SpeechStarted, SpeechEnded]


def test_two_utterances_separated_by_a_pause() -> None:
    audio = np.concatenate(
        [silence(300), telephone("goodbye"), silence(1200), telephone("thank you"), silence(1000)]
    )
    events = run(VoiceActivityDetector(), audio)
    assert [type(e) for e, _ in events] == [SpeechStarted, SpeechEnded] * 2
    assert events[1][1] != events[3][1]


def test_long_speech_is_cut_at_the_maximum() -> None:
    words = telephone("one two three four five six seven eight nine ten")
    vad = VoiceActivityDetector(max_utterance_ms=1000)
    events = run(vad, np.concatenate([silence(200), words, silence(1000)]))
    ended = [e for e, _ in events if isinstance(e, SpeechEnded)]
    assert len(ended) >= 2
    first_utt = next(a for e, a in events if isinstance(e, SpeechEnded))
    assert len(first_utt) / 2 * 1000 / RATE <= 1000 + 200 + 200


@pytest.mark.parametrize("size", [0, 321, 640 + 2, 1280])
def test_frames_of_the_wrong_size_are_refused(size: int) -> None:
    with pytest.raises(ValueError, match="not 10, 20 or 30 ms"):
        VoiceActivityDetector().process(b"\0" * size)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="sample rate"):
        VoiceActivityDetector(sample_rate=11025)
    with pytest.raises(ValueError, match="aggressiveness"):
        VoiceActivityDetector(aggressiveness=4)
