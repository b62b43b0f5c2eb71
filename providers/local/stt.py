"""Offline speech-to-text: PocketSphinx with a grammar of the profile's phrases.

Decoders are slow to build (about 0.5 s each) and hold the GIL while they
decode, so each lives in its own child process and serves one utterance at
a time. Providers built with the same phrases share one pool of those
processes: every call builds its own provider, and twenty calls must not
build twenty decoders.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import threading
from collections import deque
from typing import ClassVar, Self

import numpy as np
import soxr

from providers.base import STT, ProviderContext, ProviderError, STTCapabilities, Transcript
from providers.local import sphinx
from providers.local.options import LocalOptions

log = logging.getLogger(__name__)

# Where the ``providers`` package is imported from, for the child processes.
_IMPORT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class _Worker:
    """One child process holding one decoder. Its methods block: call them in a thread."""

    def __init__(self, spec: sphinx.GrammarSpec) -> None:
        # A plain child process, not multiprocessing: spawn would re-run the
        # parent's main module, which breaks any script without a main guard.
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_IMPORT_ROOT, env.get("PYTHONPATH")]))
        self._proc = subprocess.Popen(
            [sys.executable, "-c", "from providers.local.sphinx import run_worker; run_worker()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        try:
            self._send(sphinx.spec_message(spec))
            reply = self._receive()
        except Exception:
            self.close()
            raise
        if not reply.get("ready"):
            self.close()
            raise RuntimeError(f"decoder failed to start: {reply.get('error', reply)}")

    def decode(self, pcm: bytes) -> str:
        self._send(pcm)
        reply = self._receive()
        if "text" not in reply:
            raise RuntimeError(str(reply.get("error", reply)))
        return str(reply["text"])

    def _send(self, body: bytes) -> None:
        assert self._proc.stdin is not None
        sphinx.write_frame(self._proc.stdin, body)

    def _receive(self) -> dict[str, object]:
        assert self._proc.stdout is not None
        body = sphinx.read_frame(self._proc.stdout)
        if body is None:
            raise RuntimeError(f"decoder process exited (status {self._proc.poll()})")
        reply = json.loads(body)
        if not isinstance(reply, dict):
            raise RuntimeError(f"decoder sent {body[:80]!r}")
        return reply

    def close(self) -> None:
        for pipe in (self._proc.stdin, self._proc.stdout):
            if pipe is not None:
                pipe.close()
        try:
            self._proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


class _WorkerPool:
    """Decoder processes for one grammar, used from any event loop and thread.

    A worker is either free, or lent to exactly one decode; one that failed is
    closed and not returned. Workers are started in threads that put them
    straight into the pool, so a cancelled caller never loses one. Waiters are
    futures of whichever loop asked.
    """

    def __init__(self, requested: sphinx.GrammarSpec, cap: int) -> None:
        self.requested = requested
        self.cap = cap
        self._lock = threading.Lock()
        self._plan_lock = threading.Lock()
        self._spec: sphinx.GrammarSpec | None = None
        self._free: list[_Worker] = []
        self._count = 0  # started or starting, free or lent
        self._waiters: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = deque()
        self._closed = False

    @property
    def size(self) -> int:
        return self._count

    async def ensure(self, n: int) -> None:
        """Start workers until ``n`` exist or are starting; wait for the ones this call started."""
        with self._lock:
            todo = max(0, min(n, self.cap) - self._count)
            self._count += todo
        results = await asyncio.gather(
            *(asyncio.to_thread(self._start_blocking) for _ in range(todo)), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    def spec(self) -> sphinx.GrammarSpec:
        """The grammar the dictionary can pronounce, planned once (reads the dictionary: blocks)."""
        with self._plan_lock:
            if self._spec is None:
                r = self.requested
                plan = sphinx.plan_grammar(
                    r.phrases,
                    r.phone_penalty,
                    fillers=r.fillers,
                    filler_exponent=r.filler_exponent,
                    min_score=r.min_score,
                    min_coverage=r.min_coverage,
                    min_frames_per_phone=r.min_frames_per_phone,
                )
                if plan.dropped_words:
                    log.warning(
                        "words not in the pocketsphinx dictionary left out of the grammar: %s",
                        ", ".join(plan.dropped_words),
                    )
                if not plan.spec.phrases:
                    raise ProviderError(
                        "no phrase of the grammar can be pronounced", provider="local", retryable=False
                    )
                self._spec = plan.spec
            return self._spec

    def _start_blocking(self) -> None:
        """Start one worker (``_count`` already counts it) and put it in the pool."""
        try:
            worker = _Worker(self.spec())
        except BaseException:
            with self._lock:
                self._count -= 1
                self._wake_one()
            raise
        self.release(worker)

    async def acquire(self) -> _Worker:
        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                if self._closed:
                    raise RuntimeError("decoder pool closed")
                if self._free:
                    return self._free.pop()
                grow = self._count < self.cap
                if grow:
                    self._count += 1
                else:
                    waiter: asyncio.Future[None] = loop.create_future()
                    self._waiters.append((loop, waiter))
            if grow:
                await asyncio.to_thread(self._start_blocking)
                continue
            try:
                await waiter
            except asyncio.CancelledError:
                with self._lock:
                    try:
                        self._waiters.remove((loop, waiter))
                    except ValueError:
                        self._wake_one()  # we were woken: pass the turn on
                raise

    def release(self, worker: _Worker) -> None:
        """Give a worker back; safe from any thread."""
        with self._lock:
            closed = self._closed
            if closed:
                self._count -= 1
            else:
                self._free.append(worker)
                self._wake_one()
        if closed:
            worker.close()

    def discard(self, worker: _Worker) -> None:
        worker.close()
        with self._lock:
            self._count -= 1
            self._wake_one()  # a waiter may now start a fresh worker

    def _wake_one(self) -> None:
        while self._waiters:
            loop, fut = self._waiters.popleft()
            if loop.is_closed():
                continue
            loop.call_soon_threadsafe(_set_if_pending, fut)
            return

    def close(self) -> None:
        with self._lock:
            self._closed = True
            free, self._free = self._free, []
            self._count -= len(free)
        for worker in free:
            worker.close()


def _set_if_pending(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class PocketsphinxSTT(STT):
    name = "local"
    Options = LocalOptions
    capabilities = STTCapabilities(streaming=False, endpointing=False, grammar_only=True)

    # One pool per grammar, for the life of the process.
    _pools: ClassVar[dict[sphinx.GrammarSpec, _WorkerPool]] = {}
    _pools_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        phrases: tuple[str, ...],
        *,
        phone_penalty: float = sphinx.DEFAULT_PHONE_PENALTY,
        fillers: tuple[str, ...] = sphinx.DEFAULT_FILLERS,
        filler_exponent: float = sphinx.DEFAULT_FILLER_EXPONENT,
        min_score: float = sphinx.DEFAULT_MIN_SCORE,
        min_coverage: float = sphinx.DEFAULT_MIN_COVERAGE,
        min_frames_per_phone: float = sphinx.DEFAULT_MIN_FRAMES_PER_PHONE,
        prewarm: int = 2,
        max_decoders: int | None = None,
    ) -> None:
        # Only normalised here: the dictionary is read off the event loop,
        # when the first decoder starts.
        normalised = (" ".join(sphinx.normalise_words(p)) for p in phrases)
        self.spec = sphinx.GrammarSpec(
            tuple(sorted(set(filter(None, normalised)))),
            phone_penalty,
            tuple(fillers),
            filler_exponent,
            min_score,
            min_coverage=min_coverage,
            min_frames_per_phone=min_frames_per_phone,
        )
        if not self.spec.phrases:
            raise ProviderError("no phrases for the grammar", provider=self.name, retryable=False)
        self._prewarm = prewarm
        cap = max_decoders if max_decoders is not None else max(2, os.cpu_count() or 2)
        with self._pools_lock:
            pool = self._pools.get(self.spec)
            if pool is None:
                pool = self._pools[self.spec] = _WorkerPool(self.spec, cap)
        self._pool = pool

    @classmethod
    def create(cls, ctx: ProviderContext) -> Self:
        opts = ctx.options
        return cls(
            ctx.hints,
            phone_penalty=float(opts.get("phone_penalty", sphinx.DEFAULT_PHONE_PENALTY)),
            fillers=tuple(str(f) for f in opts.get("fillers", sphinx.DEFAULT_FILLERS)),
            filler_exponent=float(opts.get("filler_exponent", sphinx.DEFAULT_FILLER_EXPONENT)),
            min_score=float(opts.get("min_score", sphinx.DEFAULT_MIN_SCORE)),
            min_coverage=float(opts.get("min_coverage", sphinx.DEFAULT_MIN_COVERAGE)),
            min_frames_per_phone=float(opts.get("min_frames_per_phone", sphinx.DEFAULT_MIN_FRAMES_PER_PHONE)),
            prewarm=int(opts.get("prewarm", 2)),
            max_decoders=int(opts["max_decoders"]) if "max_decoders" in opts else None,
        )

    @classmethod
    def check(cls, ctx: ProviderContext) -> list[str]:
        try:
            import pocketsphinx  # noqa: F401
        except ImportError:
            return ["pocketsphinx is not installed; install it: pip install 'ari-agent[local]'"]
        if not os.path.exists(sphinx.dictionary_path()):
            return [f"pocketsphinx model not found at {sphinx.model_dir()}; reinstall pocketsphinx"]
        if not sphinx.plan_grammar(ctx.hints).spec.phrases:
            return [
                f"profile {ctx.profile}: local STT needs phrases callers say; "
                "add intents with examples (they become the grammar)"
            ]
        return []

    @classmethod
    def shutdown_pools(cls) -> None:
        """Stop every decoder process (tests, process shutdown)."""
        with cls._pools_lock:
            pools = list(cls._pools.values())
            cls._pools.clear()
        for pool in pools:
            pool.close()

    @property
    def pool_size(self) -> int:
        return self._pool.size

    async def _prepare(self) -> None:
        await self._pool.ensure(self._prewarm)

    async def _recognize(self, pcm: bytes, sample_rate: int) -> Transcript:
        if len(pcm) % 2:
            raise ProviderError("PCM16 audio has an odd byte count", provider=self.name, retryable=False)
        if sample_rate != sphinx.SAMPLE_RATE:
            samples = np.frombuffer(pcm, dtype=np.int16)
            pcm = soxr.resample(samples, sample_rate, sphinx.SAMPLE_RATE).astype(np.int16).tobytes()
        if not pcm:
            return Transcript(text="", confidence=0.0)
        worker = await self._pool.acquire()
        # The worker goes back to the pool from the thread, once the decode
        # is over, even if this task was cancelled meanwhile.
        text = await asyncio.to_thread(self._decode_with, worker, pcm)
        return Transcript(text=text, confidence=1.0 if text else 0.0)

    def _decode_with(self, worker: _Worker, pcm: bytes) -> str:
        try:
            text = worker.decode(pcm)
        except Exception as exc:
            self._pool.discard(worker)
            raise ProviderError(f"decoder failed: {exc}", provider=self.name, retryable=True) from exc
        self._pool.release(worker)
        return text
