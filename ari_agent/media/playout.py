"""What the caller has heard of audio that Asterisk plays out itself (chan_websocket), sans-IO.

On WebSocket the agent hands Asterisk whole replies at once and Asterisk
plays them one frame per ``ptime``. So the agent cannot count frames as it
sends them to know what was heard (as its pacer does on RTP): it follows
Asterisk's play-out instead. Each batch of frames is followed by a mark;
``MEDIA_MARK_PROCESSED`` for it means every frame before it has been
played. Between marks the position runs on at one frame per period from
the last thing known (a mark, the start of play-out after an idle queue, a
resume), never past what was sent, never backwards, and stands still while
paused. ``now`` is passed in; nothing here does IO.

Marks carry an epoch (``<epoch>-<count>``) that a flush moves on: a mark
Asterisk processed just before our FLUSH_MEDIA arrives after it and must
not count for the frames sent afterwards.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Played:
    """One frame the caller has heard (by now): its bytes, its tag and when it started playing."""

    frame: bytes
    tag: Hashable | None
    at: float


class Playout:
    def __init__(self, period: float = 0.02) -> None:
        self.period = period
        self.epoch = 0
        self.sent = 0  # frames handed to Asterisk in this epoch
        self.played = 0  # frames of this epoch known or reckoned played
        self.paused = False
        self.marks_seen = 0
        self._anchor: tuple[int, float] | None = None  # (frame index, when it started playing)
        self._frames: deque[tuple[bytes, Hashable | None]] = deque()  # sent, not yet played

    @property
    def in_flight(self) -> int:
        """Frames in Asterisk's queue (as far as the agent can tell)."""
        return self.sent - self.played

    def mark_id(self) -> str:
        """The mark to send after the frames just sent."""
        return f"{self.epoch}-{self.sent}"

    def on_sent(self, frames: list[tuple[bytes, Hashable | None]], now: float) -> None:
        if not frames:
            return
        if self._anchor is None and not self.paused:
            # An idle queue: Asterisk starts on these at its next tick (within one period).
            self._anchor = (self.sent, now)
        self.sent += len(frames)
        self._frames.extend(frames)

    def position(self, now: float) -> int:
        """How many frames of this epoch have started playing by ``now`` (reckoned)."""
        if self.paused or self._anchor is None:
            return self.played
        index, since = self._anchor
        ran = int((now - since) / self.period) if now > since else 0
        return min(self.sent, max(self.played, index + ran))

    def advance(self, now: float) -> list[Played]:
        """The frames that have started playing since the last call."""
        target = self.position(now)
        out: list[Played] = []
        anchor = self._anchor
        while self.played < target:
            frame, tag = self._frames.popleft()
            at = now if anchor is None else anchor[1] + (self.played - anchor[0]) * self.period
            out.append(Played(frame, tag, min(at, now)))
            self.played += 1
        if self.played >= self.sent:
            self._anchor = None  # the queue ran dry: the next frames start a new run
        return out

    def on_mark(self, mark: str, now: float) -> list[Played]:
        """``MEDIA_MARK_PROCESSED``: the frames before it have played (unknown or stale: ignored)."""
        epoch, sep, count = mark.partition("-")
        if not sep or epoch != str(self.epoch) or not (count.isascii() and count.isdigit()) or len(count) > 9:
            return []
        done = min(int(count), self.sent)
        self.marks_seen += 1
        out: list[Played] = []
        while self.played < done:
            # Reckoned behind Asterisk: these have played already.
            frame, tag = self._frames.popleft()
            out.append(Played(frame, tag, now))
            self.played += 1
        # Run on from the mark (or hold there, if the reckoning ran ahead of Asterisk).
        self._anchor = (done, now) if not self.paused and done < self.sent else None
        return out + self.advance(now)

    def pause(self, now: float) -> list[Played]:
        out = self.advance(now)
        self.paused = True
        self._anchor = None
        return out

    def resume(self, now: float) -> None:
        self.paused = False
        self._anchor = (self.played, now) if self.played < self.sent else None

    def flush(self, now: float) -> tuple[list[Played], int]:
        """Drop everything not yet played; returns what played up to now and the count dropped."""
        out = self.advance(now)
        dropped = self.sent - self.played
        self._frames.clear()
        self.epoch += 1
        self.sent = self.played = 0
        self._anchor = None
        self.paused = False
        return out, dropped
