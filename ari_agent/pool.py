"""A pool of agents on one Asterisk, behind ``StasisBroadcast``: who claims, who is dead.

Each pool agent registers its own app, ``<app>-pool-<instance>``; the dialplan's
``StasisBroadcast(timeout,^<app>-pool-,profile)`` offers a call to all of them
and the first ``POST /events/claim`` wins. Two rules live here, sans IO (the
load, ``now`` and the random draw are passed in):

* **Claim delay.** An agent holding ``n`` calls of its limit ``max`` waits
  ``max_delay * (n + u) / max`` (``u`` uniform in [0, 1)) before it claims, and
  does not claim at all at its limit: the least loaded agent claims first, equal
  loads are drawn at random.
* **Dead or reconnecting.** Every pool agent rewrites a global variable of its
  own (``AI_AGENT_POOL_BEAT_<instance>``) every ``BEAT_INTERVAL`` seconds over
  ARI REST, whatever its events WebSocket is doing. A peer whose beat has not
  changed for ``dead_after`` seconds of the observer's own clock is dead: its
  parked callers go back to the dialplan. A peer whose socket drops and
  reconnects within that time keeps beating (or resumes in time) and keeps its
  calls. Clocks are never compared across hosts: only change is observed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

POOL_MARK = "-pool-"
BEAT_PREFIX = "AI_AGENT_POOL_BEAT_"
# How often an agent rewrites its beat, and how often it looks at its peers'.
BEAT_INTERVAL = 1.0
# A beat unchanged this long (several missed beats, longer than a socket blip): the peer is dead.
DEAD_AFTER = 5.0
# Upper bound of the claim delay; keep StasisBroadcast's timeout well above it (1000 ms and more).
CLAIM_DELAY_MAX = 0.25


def pool_app(app: str, instance_id: str) -> str:
    """The app a pool agent registers: ``<app>-pool-<instance>``."""
    return f"{app}{POOL_MARK}{instance_id}"


def peer_instance(app: str, name: str) -> str | None:
    """The instance id of a pool app name of this pool (``ai-agent-pool-b`` -> ``b``), else None."""
    prefix = app + POOL_MARK
    if not name.startswith(prefix):
        return None
    rest = name[len(prefix) :]
    return rest if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]{0,31}", rest) else None


def beat_variable(instance_id: str) -> str:
    """The global variable holding an instance's beat (dashes become underscores: ids have none)."""
    return BEAT_PREFIX + instance_id.replace("-", "_")


def broadcast_filter(app_data: str) -> str:
    """The app filter of ``StasisBroadcast(timeout,filter,args,notify)``'s data ("" when none)."""
    parts = app_data.split(",")
    return parts[1].strip() if len(parts) > 1 else ""


def filter_matches(app_filter: str, app_name: str) -> bool:
    """Whether a broadcast with this filter reaches ``app_name`` (no filter reaches every app).

    Asterisk uses POSIX extended regular expressions; the ones a pool needs
    (``^ai-agent-pool-``) mean the same in Python's ``re``. A filter that does
    not compile here is judged not to match.
    """
    if not app_filter:
        return True
    try:
        return re.search(app_filter, app_name) is not None
    except re.error:
        return False


def claim_delay(holding: int, max_concurrent: int, max_delay: float, draw: float) -> float | None:
    """Seconds to wait before claiming a broadcast call; None: do not claim (at the limit).

    ``holding`` counts calls in admission, in a session and claims in flight;
    ``draw`` is uniform in [0, 1): it breaks ties between equally loaded agents
    without ever letting a busier agent claim first.
    """
    if not 0.0 <= draw < 1.0:
        raise ValueError(f"draw must be in [0, 1), got {draw}")
    if max_concurrent < 1:
        raise ValueError("max_concurrent must be at least 1")
    if holding >= max_concurrent:
        return None
    return max_delay * (holding + draw) / max_concurrent


@dataclass
class _Seen:
    beat: str
    changed_at: float


@dataclass
class PeerWatch:
    """What one agent knows of its peers' beats, on its own clock."""

    dead_after: float = DEAD_AFTER
    _seen: dict[str, _Seen] = field(default_factory=dict)

    def observe(self, peer: str, beat: str, now: float) -> None:
        """A peer's beat as just read (empty: never set). The first sight starts its clock."""
        seen = self._seen.get(peer)
        if seen is None or seen.beat != beat:
            self._seen[peer] = _Seen(beat, now)

    def is_dead(self, peer: str, now: float) -> bool:
        seen = self._seen.get(peer)
        return seen is not None and now - seen.changed_at >= self.dead_after

    def alive(self, now: float) -> list[str]:
        return sorted(p for p in self._seen if not self.is_dead(p, now))

    def forget(self, peer: str) -> None:
        """The peer is gone from Asterisk (no app, nothing left): a return starts afresh."""
        self._seen.pop(peer, None)

    def keep_only(self, peers: set[str]) -> None:
        for peer in [p for p in self._seen if p not in peers]:
            del self._seen[peer]

    def takes_over(self, me: str, now: float) -> bool:
        """Whether ``me`` hands dead peers' callers back: the live agent whose id sorts first does.

        Every survivor reads the same beats, so they agree; if the one chosen is
        itself gone, its beat stops and the next one takes over.
        """
        return all(me <= peer for peer in self.alive(now))
