"""Retries, circuit breakers and fallback chains, built from a profile's provider lists.

A stage's chain is itself a provider (see ``providers.fallback``): the call
session never knows whether it talks to one vendor or to three. Breakers are
shared by every call of the process, keyed by profile, stage and provider, so
a vendor that is down is skipped at once by the next call instead of being
waited for again.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, overload

from providers import registry
from providers.base import LLM, STT, TTS, ProviderContext, ProviderError

log = logging.getLogger(__name__)

T = TypeVar("T")

BreakerState = Literal["closed", "open", "half_open"]

_RNG = random.Random()


@dataclass(frozen=True)
class RetryPolicy:
    """Tries per provider (``attempts`` counts the first) with capped exponential backoff."""

    attempts: int = 2
    base_delay: float = 0.2
    max_delay: float = 2.0
    jitter: float = 0.5  # each delay is scaled by a random factor in [1 - jitter, 1]

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {self.attempts}")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("delays must not be negative")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be within [0, 1], got {self.jitter}")

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first retry)."""
        raw = min(self.max_delay, self.base_delay * 2.0 ** max(0, retry - 1))
        # Jitter spreads the retries of many calls hit by the same outage.
        factor = 1.0 - self.jitter * (rng or _RNG).random()
        return raw * factor

    @classmethod
    def from_options(cls, options: Mapping[str, Any], default: RetryPolicy | None = None) -> RetryPolicy:
        base = default or cls()
        return cls(
            attempts=int(options.get("retry_attempts", base.attempts)),
            base_delay=float(options.get("retry_base_delay", base.base_delay)),
            max_delay=float(options.get("retry_max_delay", base.max_delay)),
            jitter=float(options.get("retry_jitter", base.jitter)),
        )

    async def run(
        self,
        action: Callable[[], Awaitable[T]],
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> T:
        """Await ``action()``, retrying retryable ProviderErrors; the last error is raised."""
        retry = 0
        while True:
            try:
                return await action()
            except ProviderError as exc:
                retry += 1
                if not exc.retryable or retry >= self.attempts:
                    raise
                wait = self.delay(retry)
                log.info("%s; retry %d of %d in %.2f s", exc, retry, self.attempts - 1, wait)
                await sleep(wait)


class CircuitBreaker:
    """Closed, open after ``failure_threshold`` failures in a row, half-open after ``reset_timeout``.

    Half-open lets exactly one trial through; its success closes the breaker,
    its failure opens it again for another ``reset_timeout``. Thread-safe:
    providers are shared by every call of a profile.
    """

    def __init__(
        self,
        failure_threshold: int = 3,
        reset_timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be at least 1, got {failure_threshold}")
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._trial = False  # the half-open trial is in flight

    @property
    def state(self) -> BreakerState:
        with self._lock:
            return self._state()

    def _state(self) -> BreakerState:
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at >= self.reset_timeout:
            return "half_open"
        return "open"

    def allow(self) -> bool:
        """May a request go to the provider now? In half-open, True once for the trial."""
        with self._lock:
            state = self._state()
            if state == "closed":
                return True
            if state == "half_open" and not self._trial:
                self._trial = True
                return True
            return False

    def record_success(self) -> None:
        with self._lock:
            self._failures = 0
            self._opened_at = None
            self._trial = False

    def record_failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self._trial or self._failures >= self.failure_threshold:
                self._opened_at = self._clock()
            self._trial = False

    def release(self) -> None:
        """The request that ``allow`` let through ended with no verdict (cancelled): free the trial."""
        with self._lock:
            self._trial = False

    def __repr__(self) -> str:
        return f"CircuitBreaker(state={self.state!r}, failures={self._failures})"


class BreakerBoard:
    """One breaker per key, created on first use with the board's settings."""

    def __init__(
        self,
        failure_threshold: int = 3,
        reset_timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._breakers: dict[str, CircuitBreaker] = {}

    def get(
        self, key: str, *, failure_threshold: int | None = None, reset_timeout: float | None = None
    ) -> CircuitBreaker:
        with self._lock:
            breaker = self._breakers.get(key)
            if breaker is None:
                breaker = CircuitBreaker(
                    failure_threshold or self.failure_threshold,
                    self.reset_timeout if reset_timeout is None else reset_timeout,
                    self._clock,
                )
                self._breakers[key] = breaker
            return breaker

    def states(self) -> dict[str, BreakerState]:
        with self._lock:
            breakers = dict(self._breakers)
        return {key: b.state for key, b in breakers.items()}


# The process-wide board: every call of a profile shares its providers' breakers.
BREAKERS = BreakerBoard()

# Timeout attributes of the base classes an operator may set per provider in
# the profile's options (seconds), e.g. [profiles.x.options.deepgram] connect_timeout = 3.
TIMEOUT_OPTIONS = ("timeout", "connect_timeout", "first_token_timeout", "first_audio_timeout")


def apply_timeouts(provider: object, options: Mapping[str, Any]) -> None:
    """Set the template methods' deadlines from a provider's options, where it has them."""
    for name in TIMEOUT_OPTIONS:
        if name in options and hasattr(provider, name):
            value = float(options[name])
            if value <= 0:
                raise ValueError(f"option {name} must be positive, got {value}")
            setattr(provider, name, value)


@overload
def build_chain(
    stage: Literal["stt"],
    names: Sequence[str],
    ctx_for_name: Callable[[str], ProviderContext],
    *,
    breakers: BreakerBoard | None = ...,
    scope: str = ...,
) -> STT: ...


@overload
def build_chain(
    stage: Literal["llm"],
    names: Sequence[str],
    ctx_for_name: Callable[[str], ProviderContext],
    *,
    breakers: BreakerBoard | None = ...,
    scope: str = ...,
) -> LLM: ...


@overload
def build_chain(
    stage: Literal["tts"],
    names: Sequence[str],
    ctx_for_name: Callable[[str], ProviderContext],
    *,
    breakers: BreakerBoard | None = ...,
    scope: str = ...,
) -> TTS: ...


def build_chain(
    stage: Literal["stt", "llm", "tts"],
    names: Sequence[str],
    ctx_for_name: Callable[[str], ProviderContext],
    *,
    breakers: BreakerBoard | None = None,
    scope: str = "",
) -> STT | LLM | TTS:
    """The providers of one stage, in failover order, as one provider.

    Even a single provider is wrapped: the wrapper owns its retries and its
    circuit breaker. Options read from each provider's own options: the
    timeouts in TIMEOUT_OPTIONS, ``retry_attempts``, ``retry_base_delay``,
    ``retry_max_delay``, ``retry_jitter``, ``breaker_threshold``,
    ``breaker_reset_s``.

    ``scope`` keeps this chain's breakers apart from another chain of the same profile, stage and
    providers (a language's voice): a voice failing for one language must not open the default's.
    """
    from providers.fallback import FallbackLLM, FallbackSTT, FallbackTTS, Member

    if not names:
        raise ValueError(f"no {stage} provider named")
    board = BREAKERS if breakers is None else breakers
    members: list[Member[Any]] = []
    for name in names:
        ctx = ctx_for_name(name)
        provider: STT | LLM | TTS
        if stage == "stt":
            provider = registry.create_stt(name, ctx)
        elif stage == "llm":
            provider = registry.create_llm(name, ctx)
        else:
            provider = registry.create_tts(name, ctx)
        apply_timeouts(provider, ctx.options)
        breaker = board.get(
            f"{ctx.profile}:{stage}:{name}" + (f"@{scope}" if scope else ""),
            failure_threshold=int(ctx.options["breaker_threshold"])
            if "breaker_threshold" in ctx.options
            else None,
            reset_timeout=float(ctx.options["breaker_reset_s"]) if "breaker_reset_s" in ctx.options else None,
        )
        members.append(Member(provider, breaker, RetryPolicy.from_options(ctx.options)))
    if stage == "stt":
        return FallbackSTT(members)
    if stage == "llm":
        return FallbackLLM(members)
    return FallbackTTS(members)
