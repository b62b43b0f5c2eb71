"""The agent's 20 ms receive clock: one timer for every call's inbound stream.

Each call's receive side must move on when no packet comes (a silent leg
sends nothing), so something has to wake up every 20 ms. One task for all
calls costs 50 wake-ups a second however many calls there are, instead of
50 per call. Ticks are on an absolute grid; a late wake-up just ticks once
with the real time (the streams catch up by time, not by tick count).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from ari_agent.media.codecs import FRAME_MS

log = logging.getLogger(__name__)

_PERIOD = FRAME_MS / 1000

Tick = Callable[[float], None]


class ReceiveClock:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._subscribers: dict[int, Tick] = {}
        self._next_key = 0
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.errors = 0

    def subscribe(self, tick: Tick) -> Callable[[], None]:
        """Call ``tick(now)`` every 20 ms from now on; returns the unsubscribe function."""
        key = self._next_key
        self._next_key += 1
        self._subscribers[key] = tick
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._loop is not loop:
            self._loop = loop
            self._task = loop.create_task(self._run(), name="rtp-receive-clock")

        def unsubscribe() -> None:
            self._subscribers.pop(key, None)

        return unsubscribe

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        deadline = self._clock()
        while self._subscribers:
            deadline += _PERIOD
            delay = deadline - self._clock()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                deadline = self._clock()  # late: re-align, never burst
            now = self._clock()
            for tick in list(self._subscribers.values()):
                try:
                    tick(now)
                except Exception:
                    # One call's fault must not stop every other call's clock.
                    self.errors += 1
                    if self.errors == 1:
                        log.exception("receive tick failed (further failures only counted)")
        self._task = None


_shared: ReceiveClock | None = None


def shared_clock() -> ReceiveClock:
    """The process's receive clock (one per process is the point)."""
    global _shared
    if _shared is None:
        _shared = ReceiveClock()
    return _shared
