"""Receive jitter buffer, sans-IO: packets in by sequence number, frames out in order.

Packets that arrive in order leave at once: the buffer adds no delay while
nothing is missing. Only when a sequence number is missing and a later one
is already here does it hold the later ones, for at most ``depth_ms`` from
their arrival, waiting for the missing one; after that the missing frame is
declared lost (the caller conceals it) and play goes on. So reordering
within the window is repaired and the delay added is never more than the
window, whatever the sender's clock does: a fast sender's frames leave as
they come, a slow one's leave late without piling up.

What fills the time while nothing arrives at all (silence suppression,
DTX) is the receiver's clock, not this buffer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ari_agent.media.rtp import seq_add, seq_diff

# A jump further ahead than this is a resynchronisation, not a gap to conceal.
MAX_AHEAD = 50
# Added-delay histogram: 1 ms bins up to 200 ms, the last one taking everything longer.
_BINS = 201

PutResult = Literal["queued", "late", "duplicate", "resync"]


@dataclass(frozen=True, slots=True)
class Slot:
    """One frame's worth of what the sender sent, in sequence order.

    ``payload`` None means "silence here" (comfort noise, a telephone-event,
    a payload type that is not audio); ``lost`` means nothing arrived for
    this sequence number and the window ran out.
    """

    payload: bytes | None
    lost: bool = False


LOST = Slot(None, lost=True)


class JitterBuffer:
    def __init__(self, depth_ms: int) -> None:
        if depth_ms < 0:
            raise ValueError(f"jitter buffer depth must be >= 0 ms, got {depth_ms}")
        self.depth_s = depth_ms / 1000
        self._held: dict[int, tuple[Slot, float]] = {}
        self._next: int | None = None
        self.lost = 0  # sequence numbers given up on
        self.late = 0  # arrived after their turn had passed
        self.duplicates = 0
        self.resyncs = 0
        self._delay_bins = [0] * _BINS

    @property
    def holding(self) -> int:
        return len(self._held)

    def put(self, seq: int, slot: Slot, now: float) -> PutResult:
        if self._next is None:
            self._next = seq
        ahead = seq_diff(self._next, seq)
        if ahead < 0:
            self.late += 1
            return "late"
        if seq in self._held:
            self.duplicates += 1
            return "duplicate"
        if ahead > MAX_AHEAD:
            # The sender jumped (a restart without a new SSRC): the frames held
            # so far are stale context, play resumes at the new position.
            self.resyncs += 1
            self._held.clear()
            self._next = seq
            self._held[seq] = (slot, now)
            return "resync"
        self._held[seq] = (slot, now)
        return "queued"

    def pop(self, now: float) -> list[Slot]:
        """Every frame that may leave now, in order (lost ones as :data:`LOST`)."""
        out: list[Slot] = []
        held = self._held
        while held:
            assert self._next is not None
            entry = held.pop(self._next, None)
            if entry is not None:
                slot, arrived = entry
                out.append(slot)
                self._record_delay(now - arrived)
            else:
                oldest = min(arrived for _, arrived in held.values())
                if now - oldest < self.depth_s - 1e-9:
                    break  # the missing one may still come
                out.append(LOST)
                self.lost += 1
            self._next = seq_add(self._next, 1)
        return out

    def flush(self) -> list[Slot]:
        """Everything held, in order, gaps skipped; then start afresh (a new source)."""
        out: list[Slot] = []
        if self._next is not None:
            next_seq = self._next
            for seq in sorted(self._held, key=lambda s: seq_diff(next_seq, s)):
                out.append(self._held[seq][0])
        self._held.clear()
        self._next = None
        return out

    def _record_delay(self, seconds: float) -> None:
        index = min(_BINS - 1, max(0, int(seconds * 1000)))
        self._delay_bins[index] += 1

    def delay_percentile_ms(self, q: float) -> float | None:
        """The q-th percentile of the delay added to played frames, in whole ms (rounded down)."""
        total = sum(self._delay_bins)
        if total == 0:
            return None
        rank = q / 100 * total
        seen = 0
        for index, count in enumerate(self._delay_bins):
            seen += count
            if count and seen >= rank:
                return float(index)
        return float(_BINS - 1)
