"""Has the caller finished? Smart Turn v3.2 (BSD-2), run with onnxruntime on CPU.

The model file ships inside the ``pipecat-ai`` wheel. We find it on disk
without importing pipecat (its package ``__init__`` pulls loguru and prints a
banner; its analyzer carries its own VAD bookkeeping and wall clock, which
our turn engine already owns) and run it ourselves: one ONNX session per
process, our own Whisper-style features in numpy. tests/bench/bench_turn_model.py
measures both ways and checks our features against pipecat's.

The model judges audio, not words: the last 8 s of the caller's turn,
including the pause so far, at 16 kHz. Its output is the probability that
the turn is complete.
"""

from __future__ import annotations

import functools
import importlib.util
import threading
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

SAMPLE_RATE = 16_000
WINDOW_S = 8  # the model's fixed input: 8 s, the newest audio kept, silence padded before it
WINDOW_SAMPLES = SAMPLE_RATE * WINDOW_S

# Whisper's log-mel front end (the model is a Whisper-tiny encoder with a
# classifier head): 25 ms periodic-Hann frames every 10 ms, centred with
# reflect padding, power spectrum, 80 Slaney mel bands over 0-8 kHz,
# log10 floored at 1e-10, dynamic range cut to 8 decades below the peak,
# then scaled by (x + 4) / 4. 8 s gives 801 frames; the last is dropped, as
# Whisper does, leaving 800.
N_FFT = 400
HOP = 160
N_MELS = 80
N_FRAMES = WINDOW_SAMPLES // HOP
_LOG_FLOOR = 1e-10
_DYNAMIC_RANGE = 8.0
_NORM_EPS = 1e-7  # waveform normalisation, as the model was trained (zero mean, unit variance)

_MODEL_FILE = "smart-turn-v3.2-cpu.onnx"
_MODEL_DIR = ("audio", "turn", "smart_turn", "data")  # inside the pipecat package
# pipecat-ai without its dependencies: only its model file is read, and its pins would
# downgrade soxr below the variable-rate streams the media path needs.
_INSTALL_HINT = "pip install 'ari-agent[turn]' && pip install --no-deps 'pipecat-ai>=1.14,<2'"

Int16Array = npt.NDArray[np.int16]
Float32Array = npt.NDArray[np.float32]


# --- features ---------------------------------------------------------------------------


def _hz_to_mel(hz: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    # Slaney's scale (librosa's default, used by Whisper): linear to 1 kHz
    # (3 mels per 200 Hz), logarithmic above (27 mels per factor 6.4).
    log_step = np.log(6.4) / 27.0
    return np.where(hz < 1000.0, hz * 3.0 / 200.0, 15.0 + np.log(np.maximum(hz, 1e-9) / 1000.0) / log_step)


def _mel_to_hz(mel: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    log_step = np.log(6.4) / 27.0
    return np.where(mel < 15.0, mel * 200.0 / 3.0, 1000.0 * np.exp((mel - 15.0) * log_step))


@functools.cache
def mel_filters() -> npt.NDArray[np.float64]:
    """(N_MELS, N_FFT // 2 + 1): triangles equally spaced in mel, each with unit area in Hz."""
    edges = _mel_to_hz(
        np.linspace(_hz_to_mel(np.array(0.0)), _hz_to_mel(np.array(SAMPLE_RATE / 2)), N_MELS + 2)
    )
    bins = np.arange(N_FFT // 2 + 1) * (SAMPLE_RATE / N_FFT)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins - lower) / (centre - lower)
    falling = (upper - bins) / (upper - centre)
    triangles = np.clip(np.minimum(rising, falling), 0.0, None)
    return np.asarray(triangles * (2.0 / (upper - lower)), dtype=np.float64)


@functools.cache
def _hann() -> npt.NDArray[np.float64]:
    # Periodic (not symmetric) Hann, as torch.hann_window, which Whisper uses.
    n = np.arange(N_FFT)
    return np.asarray(0.5 - 0.5 * np.cos(2.0 * np.pi * n / N_FFT), dtype=np.float64)


def model_window(pcm: Int16Array) -> Float32Array:
    """The model's 8 s input from the caller's turn: newest audio kept, zeros padded in front."""
    if pcm.ndim != 1:
        raise ValueError(f"expected mono samples (1-D), got shape {pcm.shape}")
    if pcm.dtype != np.int16:
        raise ValueError(f"expected int16 PCM, got {pcm.dtype}")
    if pcm.size == 0:
        raise ValueError("no audio to judge")
    window = np.zeros(WINDOW_SAMPLES, dtype=np.float32)
    tail = pcm[-WINDOW_SAMPLES:]
    window[WINDOW_SAMPLES - tail.size :] = tail.astype(np.float32) / 32768.0
    return window


def log_mel(window: Float32Array) -> Float32Array:
    """Whisper log-mel features, (N_MELS, N_FRAMES), of exactly 8 s of 16 kHz float audio."""
    if window.shape != (WINDOW_SAMPLES,):
        raise ValueError(f"expected {WINDOW_SAMPLES} samples, got shape {window.shape}")
    # Normalised over the whole window, padding included: that is what the
    # model saw in training, so a short turn is scaled up as it was then.
    x = (window - window.mean()) / np.sqrt(window.var() + _NORM_EPS)
    padded = np.pad(x.astype(np.float64), N_FFT // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP][:N_FRAMES]
    power = np.abs(np.fft.rfft(frames * _hann(), axis=-1)) ** 2  # (frames, bins)
    mel = np.log10(np.maximum(mel_filters() @ power.T, _LOG_FLOOR))
    mel = np.maximum(mel, mel.max() - _DYNAMIC_RANGE)
    return np.asarray((mel + 4.0) / 4.0, dtype=np.float32)


# --- finding the model and its runtime --------------------------------------------------


def model_path() -> Path | None:
    """Where the installed pipecat wheel keeps the ONNX file, or None; pipecat is not imported."""
    try:
        spec = importlib.util.find_spec("pipecat")  # top level only: runs no package code
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        candidate = Path(root).joinpath(*_MODEL_DIR, _MODEL_FILE)
        if candidate.is_file():
            return candidate
    return None


def turn_model_problem() -> str | None:
    """One line for ``check``: what the model end of turn lacks and how to fix it, or None."""
    if importlib.util.find_spec("onnxruntime") is None:
        return f'end_of_turn = "model" needs onnxruntime (not installed): {_INSTALL_HINT}'
    if model_path() is None:
        return (
            f'end_of_turn = "model" needs the Smart Turn model ({_MODEL_FILE}, shipped in the pipecat-ai '
            f"wheel), not found: {_INSTALL_HINT}"
        )
    return None


# --- the model --------------------------------------------------------------------------


class TurnModel:
    """One ONNX session; ``predict`` is synchronous and safe to call from several threads at once."""

    def __init__(self, path: Path | None = None, *, threads: int = 1) -> None:
        problem = turn_model_problem() if path is None else None
        if problem is not None:
            raise RuntimeError(problem)
        resolved = path if path is not None else model_path()
        assert resolved is not None  # turn_model_problem() said it exists
        import onnxruntime as ort  # deferred: an optional extra, not needed unless the model is used

        options = ort.SessionOptions()
        # One thread per call: the machine's few cores are shared by every
        # call's media and the other calls' inferences; parallelism comes from
        # the thread pool running calls side by side, not from within one.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.path = resolved
        self._session: Any = ort.InferenceSession(
            str(resolved), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._input = self._session.get_inputs()[0].name

    def features(self, pcm: Int16Array) -> Float32Array:
        return log_mel(model_window(pcm))

    def predict_features(self, features: Float32Array) -> float:
        (out,) = self._session.run(None, {self._input: features[np.newaxis]})
        # The graph ends in a sigmoid, although its output is named "logits".
        return float(np.asarray(out).reshape(-1)[0])

    def predict(self, pcm: Int16Array) -> float:
        """Probability (0-1) that the caller has finished, from their turn so far at 16 kHz.

        ``pcm``: the caller's turn from its start (a little before is fine) up
        to now, the pause included; only the last 8 s count. The window is
        always 8 s, so every call costs the same, ~0.1 s of one core
        (tests/bench/bench_turn_model.py): run it in a thread pool, never on
        the event loop. 0.5 is the model's own boundary between the two.
        """
        return self.predict_features(self.features(pcm))


_shared: TurnModel | None = None
_shared_lock = threading.Lock()


def shared_turn_model() -> TurnModel:
    """The process's one TurnModel (measured: ~28 MB of RSS, ~0.05-0.1 s to load), built on first use."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = TurnModel()
        return _shared
