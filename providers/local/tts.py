"""Offline text-to-speech: the espeak-ng program.

espeak-ng renders a sentence in a few tens of milliseconds, so a reply is
rendered whole, cached, then streamed in chunks. The cache is shared by
every instance (each call builds its own provider) and keyed by everything
that changes the audio.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import struct
import subprocess
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from typing import ClassVar, Self

import numpy as np
import soxr

from providers.base import TTS, ProviderContext, ProviderError
from providers.local.options import LocalOptions

log = logging.getLogger(__name__)

DEFAULT_VOICE = "en-us"
DEFAULT_RATE = 165  # words per minute; espeak-ng's own default (175) is brisk on the phone
_TRIM_THRESHOLD = 200  # about -44 dBFS: below it, espeak-ng's padding is silence
_KEEP_MS = 50


def parse_wav(data: bytes) -> tuple[np.ndarray, int]:
    """PCM16 mono samples and sample rate from a RIFF/WAVE file.

    espeak-ng writing to a pipe cannot seek back to fix the sizes in its
    header, so the data chunk runs to the end of the input whatever it says.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a RIFF/WAVE file")
    pos = 12
    rate: int | None = None
    while pos + 8 <= len(data):
        chunk_id = data[pos : pos + 4]
        (size,) = struct.unpack_from("<I", data, pos + 4)
        body = pos + 8
        if chunk_id == b"fmt ":
            if size < 16 or body + 16 > len(data):
                raise ValueError("truncated fmt chunk")
            fmt, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", data, body)
            if fmt != 1 or channels != 1 or bits != 16:
                raise ValueError(f"unsupported WAV format {fmt}, {channels} channels, {bits} bits")
        elif chunk_id == b"data":
            if rate is None:
                raise ValueError("data chunk before fmt chunk")
            end = min(body + size, len(data))
            end -= (end - body) % 2
            return np.frombuffer(data[body:end], dtype="<i2").astype(np.int16), rate
        pos = body + size + (size & 1)
    raise ValueError("no data chunk")


def trim_silence(samples: np.ndarray, sample_rate: int, keep_ms: int = _KEEP_MS) -> np.ndarray:
    """Cut leading/trailing silence, keeping ``keep_ms`` of it on each side."""
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > _TRIM_THRESHOLD)
    if loud.size == 0:
        return samples[:0]
    keep = sample_rate * keep_ms // 1000
    return samples[max(0, int(loud[0]) - keep) : int(loud[-1]) + 1 + keep]


class _LRU:
    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[tuple[str, str, int, int], bytes] = OrderedDict()

    def get(self, key: tuple[str, str, int, int]) -> bytes | None:
        pcm = self._items.get(key)
        if pcm is not None:
            self._items.move_to_end(key)
        return pcm

    def put(self, key: tuple[str, str, int, int], pcm: bytes) -> None:
        self._items[key] = pcm
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)


class EspeakTTS(TTS):
    name = "local"
    Options = LocalOptions
    program = "espeak-ng"

    _cache: ClassVar[_LRU] = _LRU(256)

    def __init__(
        self,
        voice: str | None = None,
        rate: int = DEFAULT_RATE,
        *,
        chunk_ms: int = 100,
        concurrency: int = 2,
    ) -> None:
        self.voice = voice or DEFAULT_VOICE
        self.rate = rate
        self.chunk_ms = chunk_ms
        self._limit = asyncio.Semaphore(concurrency)
        self._inflight: dict[tuple[str, str, int, int], asyncio.Future[bytes]] = {}

    @classmethod
    def create(cls, ctx: ProviderContext) -> Self:
        return cls(ctx.voice, int(ctx.options.get("rate", DEFAULT_RATE)))

    @classmethod
    def check(cls, ctx: ProviderContext) -> list[str]:
        if shutil.which(cls.program) is None:
            return [f"{cls.program} program not found; install it: apt-get install espeak-ng"]
        if ctx.voice and not cls.has_voice(ctx.voice):
            return [f"{cls.program} has no voice '{ctx.voice}' (espeak-ng --voices lists them)"]
        return []

    _voices: ClassVar[dict[str, bool]] = {}

    @classmethod
    def has_voice(cls, voice: str) -> bool:
        """Whether espeak-ng can speak with ``voice`` (it says so at once, ~20 ms; asked once).

        A question it could not answer (busy host, no program) counts as yes and is asked again
        next time: refusing a profile over a timeout would be worse than a failed synthesis,
        which fails over like any other."""
        if voice in cls._voices:
            return cls._voices[voice]
        try:
            done = subprocess.run(
                [cls.program, "-v", voice, "-q", "a"], capture_output=True, timeout=5, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return True
        cls._voices[voice] = done.returncode == 0
        return cls._voices[voice]

    async def _prepare(self, phrases: Sequence[str], sample_rate: int) -> None:
        # The semaphore bounds how many espeak-ng processes run at once.
        await asyncio.gather(*(self.render(p, sample_rate) for p in dict.fromkeys(phrases) if p.strip()))

    async def _synthesize(self, text: str, sample_rate: int) -> AsyncIterator[bytes]:
        pcm = await self.render(text, sample_rate)
        step = sample_rate * self.chunk_ms // 1000 * 2
        for i in range(0, len(pcm), step):
            yield pcm[i : i + step]

    async def render(self, text: str, sample_rate: int) -> bytes:
        """The whole utterance as PCM16 at ``sample_rate`` (cached)."""
        key = (text, self.voice, self.rate, sample_rate)
        pcm = self._cache.get(key)
        if pcm is not None:
            return pcm
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            pcm = await self._run(text, sample_rate)
        except asyncio.CancelledError:
            fut.cancel()
            raise
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # marks it retrieved; waiters, if any, still get it
            raise
        finally:
            del self._inflight[key]
        fut.set_result(pcm)
        self._cache.put(key, pcm)
        return pcm

    async def _run(self, text: str, sample_rate: int) -> bytes:
        async with self._limit:
            try:
                # Text goes in on stdin: never through a shell, never parsed as options.
                proc = await asyncio.create_subprocess_exec(
                    self.program,
                    "--stdout",
                    "-v",
                    self.voice,
                    "-s",
                    str(self.rate),
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                )
            except FileNotFoundError:
                raise ProviderError(
                    f"{self.program} program not found", provider=self.name, retryable=False
                ) from None
            try:
                out, err = await proc.communicate(text.encode("utf-8"))
            finally:
                if proc.returncode is None:  # cancelled: do not leave it running
                    proc.kill()
                    await proc.wait()
        if proc.returncode != 0:
            detail = err.decode("utf-8", "replace").strip()[:200]
            raise ProviderError(
                f"{self.program} exited with {proc.returncode}: {detail}", provider=self.name, retryable=False
            )
        try:
            samples, wav_rate = parse_wav(out)
        except ValueError as exc:
            raise ProviderError(
                f"bad WAV from {self.program}: {exc}", provider=self.name, retryable=False
            ) from exc
        samples = trim_silence(samples, wav_rate)
        if wav_rate != sample_rate and samples.size:
            samples = soxr.resample(samples, wav_rate, sample_rate)
        return np.asarray(samples, dtype=np.int16).tobytes()
