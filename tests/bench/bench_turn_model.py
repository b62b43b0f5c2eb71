"""Smart Turn v3.2 two ways: pipecat's analyzer (a) versus our onnxruntime session (b). Not run by pytest.

    python -m tests.bench.bench_turn_model     (from the repository root)

The record of how the turn model is run, not part of `make bench`: (a) needs
pipecat-ai with all its dependencies (`pip install pipecat-ai`, best in a
throwaway venv: its pins downgrade soxr), which the project does not install.

Each way runs in a fresh child process (numpy and soxr, which the agent has
loaded anyway, imported first and not counted) and reports: import time,
RSS added by the import and by loading the model, RSS of a second call's
analyzer or model, and wall ms / CPU ms per inference on 8 s of telephone
speech (espeak-ng -> 8 kHz µ-law -> 16 kHz), best and mean of N after one
warm-up, both ways in turns in one process so both see the same load
(the cores are shared). (a) is timed twice: its ``_predict_endpoint`` (the model call
alone) and its public path (``append_audio`` of 20 ms frames, then
``analyze_end_of_turn``, which hops to its own thread). (b) splits features
from inference. Then the agreement of our features and probabilities with
pipecat's on the same windows, and the installed size of the extra.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from importlib import metadata
from typing import Any

import numpy as np

N = 7  # the cores are shared: best-of-few, not a long run
ONE_CORE_NOTE = "intra-op threads = 1 both ways (pipecat's default cpu_count=1)"


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def _eight_seconds() -> np.ndarray:
    from tests.unit.test_turn_model import phone_turn

    turn = phone_turn(
        "hello, I would like to book an appointment for next week",
        400,
        "my phone number is five five five, two one, three four five six",
    )
    assert turn.size >= 16000 * 8, turn.size / 16000
    return turn[-16000 * 8 :]


def child_pipecat() -> dict[str, Any]:
    import soxr  # noqa: F401  (loaded by the agent anyway)

    pcm = _eight_seconds()
    rss0 = _rss_mb()
    t = time.perf_counter()
    from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3

    import_s = time.perf_counter() - t
    rss1 = _rss_mb()
    t = time.perf_counter()
    analyzer = LocalSmartTurnAnalyzerV3(sample_rate=16000)
    load_s = time.perf_counter() - t
    rss2 = _rss_mb()
    # One analyzer per call: it holds that call's audio buffer, speech flag,
    # silence count and clock, and its own ONNX session and thread.
    _second_call = LocalSmartTurnAnalyzerV3(sample_rate=16000)
    rss3 = _rss_mb()
    probability = analyzer._predict_endpoint(pcm.astype(np.float32) / 32768.0)["probability"]
    return {
        "import_s": round(import_s, 3),
        "rss_import_mb": round(rss1 - rss0, 1),
        "load_s": round(load_s, 3),
        "rss_load_mb": round(rss2 - rss1, 1),
        "rss_per_extra_call_mb": round(rss3 - rss2, 1),
        "probability": probability,
    }


def child_ours() -> dict[str, Any]:
    import soxr  # noqa: F401

    pcm = _eight_seconds()
    rss0 = _rss_mb()
    t = time.perf_counter()
    import onnxruntime  # noqa: F401

    from ari_agent.audio.turn_model import TurnModel

    import_s = time.perf_counter() - t
    rss1 = _rss_mb()
    t = time.perf_counter()
    model = TurnModel()
    load_s = time.perf_counter() - t
    rss2 = _rss_mb()
    return {
        "import_s": round(import_s, 3),
        "rss_import_mb": round(rss1 - rss0, 1),
        "load_s": round(load_s, 3),
        "rss_load_mb": round(rss2 - rss1, 1),
        "rss_per_extra_call_mb": 0.0,  # one session per process; the call's audio is the engine's
        "probability": model.predict(pcm),
    }


def child_timing() -> dict[str, dict[str, float]]:
    """Per-inference cost of both ways in one process, taken in turns, so both see the same load."""
    import asyncio

    from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3

    from ari_agent.audio.turn_model import TurnModel

    pcm = _eight_seconds()
    audio = pcm.astype(np.float32) / 32768.0
    frames = [pcm[i : i + 320].tobytes() for i in range(0, pcm.size, 320)]
    analyzer = LocalSmartTurnAnalyzerV3(sample_rate=16000)
    model = TurnModel()
    features = model.features(pcm)

    def public() -> None:
        for frame in frames:
            analyzer.append_audio(frame, is_speech=True)
        asyncio.run(analyzer.analyze_end_of_turn())
        analyzer.clear()

    cases: dict[str, Any] = {
        "a_model": lambda: analyzer._predict_endpoint(audio),
        "a_public": public,
        "b_model": lambda: model.predict(pcm),
        "b_features": lambda: model.features(pcm),
        "b_session_run": lambda: model.predict_features(features),
    }
    walls: dict[str, list[float]] = {k: [] for k in cases}
    cpus: dict[str, list[float]] = {k: [] for k in cases}
    for fn in cases.values():
        fn()  # warm-up: the first run allocates the session's buffers
    for _ in range(N):
        for name, fn in cases.items():
            w, c = time.perf_counter(), time.process_time()
            fn()
            walls[name].append(time.perf_counter() - w)
            cpus[name].append(time.process_time() - c)
    return {
        k: {
            "best_ms": round(min(walls[k]) * 1000, 1),
            "median_ms": round(float(np.median(walls[k])) * 1000, 1),
            "cpu_ms": round(float(np.median(cpus[k])) * 1000, 1),
        }
        for k in cases
    }


def agreement() -> dict[str, float]:
    """Our features and probabilities beside pipecat's, on the same 8 s windows."""
    from pipecat.audio.turn.smart_turn._whisper_features import compute_whisper_log_mel_features

    from ari_agent.audio.turn_model import TurnModel, log_mel, model_window
    from tests.unit.test_turn_model import phone_turn

    model = TurnModel()
    turns = [
        _eight_seconds(),
        phone_turn("what time do you open"),
        phone_turn("my phone number is five five five, two one"),
        phone_turn("my address is"),
    ]
    feature_diff = prob_diff = 0.0
    for turn in turns:
        window = model_window(turn)
        ours, theirs = log_mel(window), compute_whisper_log_mel_features(window)
        feature_diff = max(feature_diff, float(np.abs(ours - theirs).max()))
        prob_diff = max(prob_diff, abs(model.predict_features(ours) - model.predict_features(theirs)))
    return {"windows": len(turns), "max_abs_feature_diff": feature_diff, "max_abs_prob_diff": prob_diff}


def _closure(dist: str) -> set[str]:
    from packaging.requirements import Requirement

    seen: set[str] = set()
    todo = [dist]
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        try:
            reqs = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        seen.add(name)
        for r in map(Requirement, reqs):
            if r.marker is None or r.marker.evaluate({"extra": ""}):
                todo.append(r.name)
    return seen


def _installed_mb(dist: str) -> float:
    files = metadata.distribution(dist).files or []
    return sum((f.size or 0) for f in files) / 1e6


def sizes() -> dict[str, Any]:
    base = _closure("ari-agent")
    extra = sorted(_closure("pipecat-ai") - base)
    per = {d: round(_installed_mb(d), 1) for d in extra}
    big = dict(sorted(per.items(), key=lambda kv: -kv[1])[:6])
    return {"new_dists": len(extra), "new_mb": round(sum(per.values()), 1), "largest_mb": big}


def _run_child(which: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "tests.bench.bench_turn_model", which],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def main() -> None:
    if len(sys.argv) > 1:
        child = {"pipecat": child_pipecat, "ours": child_ours, "timing": child_timing}[sys.argv[1]]
        print(json.dumps(child()))
        return
    a, b, timing = _run_child("pipecat"), _run_child("ours"), _run_child("timing")
    load = open("/proc/loadavg", encoding="ascii").read().split()[0]
    print(
        f"Smart Turn v3.2 on 8 s of telephone speech; {ONE_CORE_NOTE}; per inference: {N} rounds "
        f"after a warm-up, both ways taken in turns in one process; "
        f"load average {load} on {os.cpu_count()} cores\n"
    )
    print(f"{'':42}{'import s':>9}{'+RSS MB':>9}{'load s':>8}{'+RSS MB':>9}{'+MB/call':>9}{'P(done)':>9}")
    for label, r in (("(a) pipecat LocalSmartTurnAnalyzerV3", a), ("(b) ours: onnxruntime + numpy", b)):
        print(
            f"{label:42}{r['import_s']:>9.3f}{r['rss_import_mb']:>9.1f}{r['load_s']:>8.3f}"
            f"{r['rss_load_mb']:>9.1f}{r['rss_per_extra_call_mb']:>9.1f}{r['probability']:>9.4f}"
        )
    print(f"\n{'per inference':42}{'best ms':>9}{'median ms':>11}{'CPU ms':>8}")
    for label, key in (
        ("(a) _predict_endpoint (features + model)", "a_model"),
        ("(a) public: append_audio x400 + analyze", "a_public"),
        ("(b) TurnModel.predict (features + model)", "b_model"),
        ("(b)   of which features (numpy)", "b_features"),
        ("(b)   of which session.run", "b_session_run"),
    ):
        t = timing[key]
        print(f"{label:42}{t['best_ms']:>9.1f}{t['median_ms']:>11.1f}{t['cpu_ms']:>8.1f}")
    agree = agreement()
    print(
        f"\nfeatures vs pipecat's on {agree['windows']} windows: "
        f"max |diff| = {agree['max_abs_feature_diff']:.3g}; "
        f"probabilities: max |diff| = {agree['max_abs_prob_diff']:.3g}"
    )
    s = sizes()
    print(f"installing pipecat-ai adds {s['new_dists']} distributions, {s['new_mb']} MB")
    print(f"  largest (MB): {s['largest_mb']}")


if __name__ == "__main__":
    main()
