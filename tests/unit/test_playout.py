"""Play-out reckoning for chan_websocket (virtual clock)."""

from __future__ import annotations

from ari_agent.media.playout import Playout

F = 0.02


def frames(n: int, tag: str) -> list[tuple[bytes, object]]:
    return [(bytes([i % 256]), tag) for i in range(n)]


def test_runs_one_frame_per_period_from_the_first_send() -> None:
    p = Playout(F)
    p.on_sent(frames(10, "a"), now=1.0)
    assert p.advance(1.0) == []
    played = p.advance(1.0 + 3.5 * F)
    assert len(played) == 3 and [x.tag for x in played] == ["a"] * 3
    assert [round(x.at, 3) for x in played] == [1.0, 1.02, 1.04]
    assert len(p.advance(10.0)) == 7  # never past what was sent
    assert p.in_flight == 0


def test_a_mark_catches_up_or_holds_the_reckoning() -> None:
    p = Playout(F)
    p.on_sent(frames(5, "a"), now=0.0)
    mark = p.mark_id()
    assert mark == "0-5"
    p.on_sent(frames(5, "b"), now=0.0)
    # Asterisk was quicker than the reckoning: the mark says all 5 played already.
    assert len(p.on_mark(mark, now=0.03)) == 5 and p.played == 5
    # ... and it runs on from there.
    assert len(p.advance(0.03 + 2.5 * F)) == 2
    # A reckoning ahead of Asterisk holds (never goes backwards) until time catches up.
    q = Playout(F)
    q.on_sent(frames(10, "a"), now=0.0)
    assert len(q.advance(0.2)) == 10 - 0  # all reckoned played
    q.on_sent(frames(10, "b"), now=0.2)
    assert q.on_mark("0-10", now=0.25) == []
    assert q.position(0.25) == 10 and q.position(0.25 + 3 * F + 0.001) == 13


def test_pause_stands_still_and_resume_runs_on() -> None:
    p = Playout(F)
    p.on_sent(frames(20, "a"), now=0.0)
    assert len(p.pause(0.1)) == 5
    assert p.advance(5.0) == [] and p.on_mark("0-3", 5.0) == []
    p.resume(5.0)
    assert len(p.advance(5.0 + 2 * F)) == 2


def test_flush_drops_the_rest_and_stale_marks_are_ignored() -> None:
    p = Playout(F)
    p.on_sent(frames(50, "a"), now=0.0)
    stale = p.mark_id()
    played, dropped = p.flush(0.2)
    assert len(played) == 10 and dropped == 40
    p.on_sent(frames(5, "b"), now=0.3)
    assert p.on_mark(stale, 0.31) == []  # from before the flush: says nothing of "b"
    assert p.on_mark("garbage", 0.31) == [] and p.on_mark("1-x", 0.31) == []
    assert p.on_mark("1-\u00b2", 0.31) == [] and p.on_mark("1-" + "9" * 40, 0.31) == []
    assert [x.tag for x in p.on_mark(p.mark_id(), 0.31)] == ["b"] * 5
