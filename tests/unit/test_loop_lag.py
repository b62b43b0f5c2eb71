"""The event-loop lag watcher: a blocked loop shows as a large observation."""

from __future__ import annotations

import asyncio
import time

from ari_agent.observability.looplag import watch_loop_lag


class Seen:
    def __init__(self) -> None:
        self.values: list[float] = []

    def observe(self, amount: float) -> None:
        self.values.append(amount)


async def test_a_blocked_loop_is_observed_as_lag() -> None:
    seen = Seen()
    task = asyncio.create_task(watch_loop_lag(seen, interval=0.02))
    await asyncio.sleep(0.1)
    quiet = list(seen.values)
    time.sleep(0.15)  # noqa: ASYNC251 - the point: the loop is blocked, the watcher fires late
    await asyncio.sleep(0.05)
    task.cancel()
    assert quiet and all(v >= 0 for v in quiet)
    assert max(seen.values) >= 0.1
