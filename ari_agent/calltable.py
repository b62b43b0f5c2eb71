"""The call table: every caller channel the agent holds, from its StasisStart to its hand-back.

One table decides admission (limit, drain, duplicates), routes events to a
call (by caller channel, media channel or bridge), and arbitrates who may hand
a parked channel back, so that two reconciles, or a reconcile and an
admission, never both act on one caller. Sans IO: ``now`` is passed in, the
app does the ARI calls.

A channel's life here::

    (pool) reserve() -> RESERVED -> admit() -> ADMITTING ...; or unreserve(): gone
    admit() -> ADMITTING -> activate() -> ACTIVE -> release() -> RELEASED
    admit() refused, or claim() -> RELEASING -> release() -> RELEASED

A RELEASED entry is kept for ``remember`` seconds: a reconcile whose snapshot
still lists a channel we just handed back must not hand it back again. A
StasisStart for a released channel (the dialplan sent it back to the app) is a
new admission.

In a pool (``StasisBroadcast``) a call is claimed before its StasisStart:
``reserve()`` says whether to claim and counts the claim in flight against the
limit, so that a burst of broadcasts never claims more calls than the limit.
A reservation whose StasisStart never comes (the caller hung up) lapses after
``RESERVATION_TTL``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

S = TypeVar("S")

# Long enough to outlive any reconcile's grace and Asterisk's lag in dropping a
# channel it was told to continue; short enough that the table stays small.
REMEMBER_RELEASED = 60.0
# A won claim is followed by its StasisStart within milliseconds; this is for one that never is.
RESERVATION_TTL = 10.0


class Phase(enum.Enum):
    RESERVED = "reserved"  # pool: claimed (or being claimed) from a broadcast, StasisStart to come
    ADMITTING = "admitting"  # StasisStart seen; the profile is being looked up
    ACTIVE = "active"  # a session runs the call
    RELEASING = "releasing"  # being handed back without a session (busy, drained, parked)
    RELEASED = "released"  # handed back or gone


class Verdict(enum.Enum):
    ADMIT = "admit"
    DUPLICATE = "duplicate"  # already held: ignore the event
    DRAINING = "draining"  # hand back: the agent is shutting down
    BUSY = "busy"  # hand back: concurrent call limit


@dataclass
class Entry(Generic[S]):
    channel_id: str
    seq: int  # admission order, compared with a reconcile's mark
    phase: Phase
    session: S | None = None
    routes: tuple[str, ...] = ()
    released_at: float | None = None
    reserved_at: float | None = None


@dataclass
class CallTable(Generic[S]):
    max_concurrent: int
    remember: float = REMEMBER_RELEASED
    ttl: float = RESERVATION_TTL
    draining: bool = False
    _entries: dict[str, Entry[S]] = field(default_factory=dict)
    _routes: dict[str, Entry[S]] = field(default_factory=dict)
    _seq: int = 0

    # -- admission

    def admit(self, channel_id: str, now: float) -> Verdict:
        """A caller's StasisStart. Anything but ADMIT and DUPLICATE leaves the channel RELEASING."""
        self._forget(now)
        entry = self._entries.get(channel_id)
        reserved = entry is not None and entry.phase is Phase.RESERVED
        if entry is not None and entry.phase is not Phase.RELEASED and not reserved:
            return Verdict.DUPLICATE
        if self.draining:
            verdict = Verdict.DRAINING
        elif not reserved and self.holding >= self.max_concurrent:  # a reservation is counted already
            verdict = Verdict.BUSY
        else:
            verdict = Verdict.ADMIT
        phase = Phase.ADMITTING if verdict is Verdict.ADMIT else Phase.RELEASING
        self._new(channel_id, phase)
        return verdict

    def reserve(self, channel_id: str, now: float) -> bool:
        """Pool: may we claim this broadcast call? Not while draining, at the limit, or if known."""
        self._forget(now)
        if self.draining or self.holding >= self.max_concurrent:
            return False
        entry = self._entries.get(channel_id)
        if entry is not None and entry.phase is not Phase.RELEASED:
            return False
        self._new(channel_id, Phase.RESERVED)
        self._entries[channel_id].reserved_at = now
        return True

    def unreserve(self, channel_id: str) -> None:
        """The claim was lost (another agent won) or failed: the call is not ours."""
        entry = self._entries.get(channel_id)
        if entry is not None and entry.phase is Phase.RESERVED:
            del self._entries[channel_id]

    def activate(self, channel_id: str, session: S, routes: Iterable[str] = ()) -> bool:
        """The admitted call has its session. False: a drain began meanwhile, hand the caller back."""
        entry = self._entries.get(channel_id)
        if entry is None or entry.phase is not Phase.ADMITTING:
            raise ValueError(f"channel {channel_id} is not in admission")
        if self.draining:
            entry.phase = Phase.RELEASING
            return False
        entry.phase = Phase.ACTIVE
        entry.session = session
        entry.routes = (channel_id, *routes)
        for key in entry.routes:
            self._routes[key] = entry
        return True

    def abandon(self, channel_id: str) -> None:
        """Admission gave up (no such profile, ...): the caller is being handed back."""
        entry = self._entries.get(channel_id)
        if entry is not None and entry.phase is Phase.ADMITTING:
            entry.phase = Phase.RELEASING

    def claim(self, channel_id: str, now: float) -> bool:
        """May a reconcile hand this parked channel back? Only if nobody holds it nor released it lately."""
        self._forget(now)
        if channel_id in self._entries:
            return False
        self._new(channel_id, Phase.RELEASING)
        return True

    def release(self, channel_id: str, now: float) -> None:
        """The channel was handed back or is gone; its session, if any, is over."""
        entry = self._entries.get(channel_id)
        if entry is None:
            return
        for key in entry.routes:
            if self._routes.get(key) is entry:
                del self._routes[key]
        entry.phase = Phase.RELEASED
        entry.session = None
        entry.routes = ()
        entry.released_at = now

    def start_drain(self) -> None:
        self.draining = True

    # -- queries

    def route(self, resource_id: str) -> S | None:
        """The session of a caller channel, media channel or bridge id."""
        entry = self._routes.get(resource_id)
        return entry.session if entry is not None else None

    def is_caller(self, channel_id: str) -> bool:
        entry = self._routes.get(channel_id)
        return entry is not None and entry.channel_id == channel_id

    def mark(self) -> int:
        """Taken before a reconcile lists channels: calls admitted from now on are not in its snapshot."""
        return self._seq

    def sessions(self, before: int | None = None) -> list[S]:
        """Running sessions, oldest first; ``before`` a mark: only those admitted before it."""
        return [
            e.session
            for e in self._entries.values()
            if e.session is not None and e.phase is Phase.ACTIVE and (before is None or e.seq < before)
        ]

    @property
    def holding(self) -> int:
        """Claims in flight, callers in admission or in a session: what the limit counts, a drain awaits."""
        return sum(
            1 for e in self._entries.values() if e.phase in (Phase.RESERVED, Phase.ADMITTING, Phase.ACTIVE)
        )

    @property
    def idle(self) -> bool:
        """Nobody in admission, in a session or being handed back."""
        return all(e.phase is Phase.RELEASED for e in self._entries.values())

    def phase(self, channel_id: str) -> Phase | None:
        entry = self._entries.get(channel_id)
        return entry.phase if entry is not None else None

    # -- internals

    def _new(self, channel_id: str, phase: Phase) -> None:
        self._entries.pop(channel_id, None)
        self._entries[channel_id] = Entry(channel_id, self._seq, phase)
        self._seq += 1

    def _forget(self, now: float) -> None:
        stale = [
            cid
            for cid, e in self._entries.items()
            if (e.released_at is not None and now - e.released_at >= self.remember)
            or (e.reserved_at is not None and e.phase is Phase.RESERVED and now - e.reserved_at >= self.ttl)
        ]
        for cid in stale:
            del self._entries[cid]
