"""Event-loop lag: how late the loop runs a timer, measured all the time (ari_agent_event_loop_lag_seconds).

Every call's 20 ms media clock runs on this one loop: a lag of tens of
milliseconds is audible. A sleep of ``interval`` is asked for and the
overshoot observed; a blocked loop shows as one large observation.
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class Observer(Protocol):
    def observe(self, amount: float) -> None: ...


async def watch_loop_lag(observer: Observer, interval: float = 0.1) -> None:
    loop = asyncio.get_running_loop()
    while True:
        asked = loop.time()
        await asyncio.sleep(interval)
        observer.observe(max(0.0, loop.time() - asked - interval))
