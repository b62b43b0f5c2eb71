"""The audio front end (echo cancellation, noise suppression), off and on side by side (not run by pytest).

    python -m tests.bench.bench_frontend      (from the repository root; part of `make bench`)

Offline, in this process, on espeak-ng speech through a µ-law phone line:

* **echo**: the agent's voice comes back from a speakerphone
  (``tests.scenes.echo_path``) at several levels and delays; echo
  reduction in dB over the whole reply (the canceller's learning included)
  and over its last half, and the VAD false starts the residue causes
  (the turn engine's onset rule: 60 ms of voiced frames starts speech,
  which is what interrupts the agent), canceller off and on;
* **noise under speech**: pink and brown noise and a babble of espeak-ng
  voices, mixed with sox at 10 dB SNR (``tests.scenes.mix_noise``):
  VAD false starts per minute of noise alone, the share of speech frames
  still voiced, and offline intent accuracy (``bench_understanding``'s
  decoder and matcher on a subset of the paraphrase set), suppression off
  and on;
* **CPU per 20 ms frame** of each stage, as percentiles.

Everything goes to ``tests/bench/results/frontend-<time>.json``.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ari_agent.audio.frontend import AudioFrontEnd
from ari_agent.audio.vad import SpeechStarted, VoiceActivityDetector
from ari_agent.conversation.turns import ONSET_MS
from ari_agent.media.resample import resample
from tests.bench.bench_understanding import after, frontdesk
from tests.bench.measure import summary
from tests.scenes import active_rms, babble, echo_path, noisy, read_wav, sox_noise, ulaw_round_trip
from tests.unit.paraphrases import samples
from tests.unit.speech import speech, telephone

RESULTS = Path(__file__).resolve().parent / "results"
RATE = 16000
STEP = RATE // 50
LEVELS_DB = (-6, -12, -20)
DELAYS_MS = (20, 60, 120, 200)
SNR_DB = 10.0
NOISE_S = 30.0  # noise alone, per kind, for false starts per minute
UTTERANCES = int(os.environ.get("BENCH_FRONTEND_UTTERANCES", "30"))  # of the paraphrase set, spread
SAMPLE_STEP = int(os.environ.get("BENCH_FRONTEND_STEP", "4"))
AGENT_REPLY = (
    "We are open Monday to Friday, from nine in the morning to five in the afternoon. "
    "Our address is twelve River Street, next to the pharmacy. Is there anything else I can help with?"
)


def frames(pcm: np.ndarray) -> list[bytes]:
    usable = pcm.size - pcm.size % STEP
    return [pcm[i : i + STEP].tobytes() for i in range(0, usable, STEP)]


def line(pcm16k: np.ndarray) -> np.ndarray:
    """Through an 8 kHz µ-law line and back up, as the agent hears the caller's side."""
    return resample(ulaw_round_trip(resample(pcm16k, RATE, 8000)), 8000, RATE)


def onsets(audio: list[bytes]) -> int:
    """Speech starts by the turn engine's onset rule (ONSET_MS of voiced frames)."""
    vad = VoiceActivityDetector(RATE, 2, onset_ms=ONSET_MS, min_speech_ms=ONSET_MS)
    return sum(isinstance(vad.process(f), SpeechStarted) for f in audio)


def voiced(audio: list[bytes]) -> list[bool]:
    vad = VoiceActivityDetector(RATE, 2)
    return [vad.is_voiced(f) for f in audio]


@dataclass
class Timed:
    """A front end that records the CPU of every frame (thread time, µs)."""

    fe: AudioFrontEnd

    def __post_init__(self) -> None:
        self.cpu_us: list[float] = []

    def run(self, inbound: list[bytes], sent8k: list[np.ndarray] | None = None) -> list[bytes]:
        out = []
        for i, frame in enumerate(inbound):
            at = i * 0.02
            if sent8k is not None and i < len(sent8k):
                self.fe.sent(sent8k[i], at)
            ran = self.fe.echo.frames + self.fe.noise.frames
            t0 = time.thread_time_ns()
            out.append(self.fe.process(frame, at)[1])  # the voice detector's side
            spent = (time.thread_time_ns() - t0) / 1000
            if self.fe.echo.frames + self.fe.noise.frames > ran:  # a stage ran on this frame
                self.cpu_us.append(spent)
        return out


def energy_db(audio: list[bytes]) -> float:
    x = np.frombuffer(b"".join(audio), dtype=np.int16).astype(np.float64)
    return 10 * float(np.log10(np.dot(x, x) + 1.0))


# ------------------------------------------------------------------------ echo


def bench_echo() -> tuple[list[dict[str, Any]], list[float]]:
    agent16 = speech(AGENT_REPLY)
    agent8 = resample(agent16, RATE, 8000)
    sent = [agent8[i : i + 160] for i in range(0, agent8.size - 159, 160)]
    # The reply, then 1.5 s of the caller's silence: the echo tail is judged too.
    sent_padded = sent + [np.zeros(160, np.int16)] * 75
    rows = []
    cpu: list[float] = []
    for level in LEVELS_DB:
        for delay in DELAYS_MS:
            inbound = frames(echo_path(np.concatenate(sent_padded), level, delay))
            timed = Timed(AudioFrontEnd(echo_cancellation=True, noise_suppression=False))
            out = timed.run(inbound, sent)
            cpu += timed.cpu_us
            half = len(inbound) // 2
            rows.append(
                {
                    "level_db": level,
                    "delay_ms": delay,
                    "reduction_db": round(energy_db(inbound) - energy_db(out), 1),
                    "reduction_db_last_half": round(energy_db(inbound[half:]) - energy_db(out[half:]), 1),
                    "false_starts_off": onsets(inbound),
                    "false_starts_on": onsets(out),
                    "voiced_frames_off": sum(voiced(inbound)),
                    "voiced_frames_on": sum(voiced(out)),
                }
            )
    return rows, cpu


# ----------------------------------------------------------------------- noise


def noise_sources(tmp: Path, seconds: float) -> dict[str, Any]:
    return {"pink": "pink", "brown": "brown", "babble": babble(tmp / "babble.wav", seconds, RATE)}


def bench_noise() -> tuple[dict[str, Any], list[float]]:
    chosen = samples()[::SAMPLE_STEP][:UTTERANCES]
    pad = np.zeros(RATE // 2, np.int16)
    clean = [np.concatenate([pad, telephone(s.text, voice=s.voice, wpm=s.wpm), pad]) for s in chosen]
    level = float(np.mean([active_rms(c, RATE) for c in clean]))
    understand = after(frontdesk())
    results: dict[str, Any] = {}
    cpu: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        sources = noise_sources(Path(tmp), NOISE_S)
        for kind, source in sources.items():
            # Noise alone at the level it has under speech: what starts a turn with nobody talking.
            alone = (
                sox_noise(source, NOISE_S, RATE, seed=7) if isinstance(source, str) else read_wav(source)[0]
            ).astype(np.float64)
            alone *= level / 10 ** (SNR_DB / 20) / float(np.sqrt(np.mean(alone**2)))
            alone_frames = frames(line(np.clip(alone, -32768, 32767).astype(np.int16)))
            mixed = [line(noisy(c, RATE, SNR_DB, source, seed=i)) for i, c in enumerate(clean)]
            clean_voiced = [voiced(frames(line(c))) for c in clean]
            row: dict[str, Any] = {}
            for mode in ("off", "on"):

                def run(audio: list[bytes], mode: str = mode) -> list[bytes]:
                    if mode == "off":
                        return audio
                    timed = Timed(AudioFrontEnd(echo_cancellation=False, noise_suppression=True))
                    out = timed.run(audio)
                    cpu.extend(timed.cpu_us)
                    return out

                starts = onsets(run(alone_frames))
                kept = total = 0
                correct = in_scope = rejected = out_scope = 0
                for sample, audio, want_voiced in zip(chosen, mixed, clean_voiced, strict=True):
                    processed = run(frames(audio))
                    heard = voiced(processed)
                    kept += sum(h for h, w in zip(heard, want_voiced, strict=False) if w)
                    total += sum(want_voiced)
                    _, got = understand(b"".join(processed))
                    if sample.want is None:
                        out_scope += 1
                        rejected += got is None
                    else:
                        in_scope += 1
                        correct += got == sample.want
                row[mode] = {
                    "false_starts_per_min": round(starts / (NOISE_S / 60), 1),
                    "speech_frames_voiced": round(kept / max(total, 1), 3),
                    "in_scope": [correct, in_scope],
                    "out_of_scope_rejected": [rejected, out_scope],
                }
            results[kind] = row
    # Clean speech, for reference: what the line alone gives.
    row = {"in_scope": [0, 0], "out_of_scope_rejected": [0, 0]}
    for sample, audio in zip(chosen, clean, strict=True):
        _, got = understand(b"".join(frames(line(audio))))
        key = "out_of_scope_rejected" if sample.want is None else "in_scope"
        row[key][1] += 1
        row[key][0] += (got is None) if sample.want is None else (got == sample.want)
    results["clean"] = {"off": row}
    return results, cpu


def print_tables(echo: list[dict[str, Any]], noise: dict[str, Any], cpu: dict[str, Any]) -> None:
    print("echo through µ-law (speakerphone: level, delay): reduction dB (whole reply / last half),")
    print("VAD false starts and voiced frames (onset 60 ms), canceller off -> on")
    print(f"{'level':>6} {'delay':>6} {'reduction dB':>14} {'false starts':>13} {'voiced frames':>14}")
    for r in echo:
        print(
            f"{r['level_db']:>6} {r['delay_ms']:>5}ms "
            f"{r['reduction_db']:>6.1f}/{r['reduction_db_last_half']:<6.1f}"
            f" {r['false_starts_off']:>5} -> {r['false_starts_on']:<4} {r['voiced_frames_off']:>5} -> "
            f"{r['voiced_frames_on']:<5}"
        )
    print()
    print(f"noise under speech at {SNR_DB:.0f} dB SNR through µ-law, suppression off -> on")
    print("(in-scope, rejected: the recogniser fed the suppressed audio, which the agent does not do)")
    print(
        f"{'noise':8} {'false starts/min':>18} {'speech frames voiced':>22} {'in-scope':>14} {'rejected':>12}"
    )
    for kind, row in noise.items():
        off, on = row["off"], row.get("on", row["off"])
        if kind == "clean":
            print(
                f"{'clean':8} {'':>18} {'':>22} {off['in_scope'][0]:>3}/{off['in_scope'][1]:<9} "
                f"{off['out_of_scope_rejected'][0]:>3}/{off['out_of_scope_rejected'][1]}"
            )
            continue
        print(
            f"{kind:8} {off['false_starts_per_min']:>7.1f} -> {on['false_starts_per_min']:<7.1f} "
            f"{off['speech_frames_voiced']:>9.1%} -> {on['speech_frames_voiced']:<9.1%} "
            f"{off['in_scope'][0]:>3} -> {on['in_scope'][0]:<3}/{on['in_scope'][1]:<3} "
            f"{off['out_of_scope_rejected'][0]:>3} -> {on['out_of_scope_rejected'][0]}/"
            f"{on['out_of_scope_rejected'][1]}"
        )
    print()
    print("CPU per 20 ms frame (thread time, µs)")
    for stage, s in cpu.items():
        print(f"  {stage:34} p50 {s['p50']:>7.1f}  p95 {s['p95']:>7.1f}  p99 {s['p99']:>7.1f}  (n={s['n']})")


def bench_idle_cpu() -> dict[str, Any]:
    """The stages on frames where they don't run: canceller idle (agent silent), digital silence."""
    fe = AudioFrontEnd(echo_cancellation=True, noise_suppression=True)
    quiet = bytes(STEP * 2)
    cpu = []
    for i in range(2000):
        t0 = time.thread_time_ns()
        fe.process(quiet, i * 0.02)
        cpu.append((time.thread_time_ns() - t0) / 1000)
    return summary(cpu, scale=1.0)


def main() -> None:
    started = time.perf_counter()
    echo, echo_cpu = bench_echo()
    noise, ns_cpu = bench_noise()
    cpu = {
        "echo cancellation (while active)": summary(echo_cpu, scale=1.0),
        "noise suppression": summary(ns_cpu, scale=1.0),
        "both on, idle (digital silence)": bench_idle_cpu(),
    }
    print_tables(echo, noise, cpu)
    elapsed = time.perf_counter() - started
    print(f"({elapsed:.0f} s)")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"frontend-{time.strftime('%Y%m%d-%H%M%S')}.json"
    machine = {"cpus": os.cpu_count(), "load": os.getloadavg()}
    path.write_text(
        json.dumps({"machine": machine, "echo": echo, "noise": noise, "cpu_us_per_frame": cpu}, indent=2),
        encoding="utf-8",
    )
    print(f"written: {path}")


if __name__ == "__main__":
    main()
