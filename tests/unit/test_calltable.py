"""The call table on virtual time: admission, routing and who may hand a parked caller back."""

from __future__ import annotations

import pytest

from ari_agent.calltable import CallTable, Phase, Verdict


def test_admission_counts_callers_in_admission_against_the_limit() -> None:
    table: CallTable[str] = CallTable(max_concurrent=2)
    assert table.admit("c1", now=0) is Verdict.ADMIT
    assert table.admit("c1", now=0) is Verdict.DUPLICATE
    assert table.admit("c2", now=0) is Verdict.ADMIT
    assert table.admit("c3", now=0) is Verdict.BUSY
    assert table.phase("c3") is Phase.RELEASING
    assert table.holding == 2


def test_routes_reach_the_session_by_caller_media_channel_and_bridge_until_released() -> None:
    table: CallTable[str] = CallTable(max_concurrent=5)
    table.admit("c1", now=0)
    assert table.activate("c1", "session-1", routes=("m1", "b1"))
    assert [table.route(k) for k in ("c1", "m1", "b1", "other")] == ["session-1"] * 3 + [None]
    assert table.is_caller("c1") and not table.is_caller("m1")
    table.release("c1", now=1)
    assert [table.route(k) for k in ("c1", "m1", "b1")] == [None] * 3
    assert table.idle and table.sessions() == []


def test_a_drain_that_begins_during_admission_refuses_the_session() -> None:
    table: CallTable[str] = CallTable(max_concurrent=5)
    table.admit("c1", now=0)
    assert not table.idle
    table.start_drain()
    assert table.activate("c1", "session-1") is False
    assert table.phase("c1") is Phase.RELEASING
    assert table.sessions() == [] and not table.idle  # the hand-back is still to come
    table.release("c1", now=1)
    assert table.idle
    assert table.admit("c2", now=1) is Verdict.DRAINING


def test_only_calls_admitted_before_a_mark_are_judged_by_its_snapshot() -> None:
    table: CallTable[str] = CallTable(max_concurrent=5)
    table.admit("old", now=0)
    table.activate("old", "s-old")
    mark = table.mark()
    table.admit("new", now=1)
    table.activate("new", "s-new")
    assert table.sessions(before=mark) == ["s-old"]
    assert table.sessions() == ["s-old", "s-new"]


def test_a_parked_channel_is_claimed_once_and_not_again_while_remembered() -> None:
    table: CallTable[str] = CallTable(max_concurrent=5, remember=60)
    assert table.claim("parked", now=0) is True
    assert table.claim("parked", now=0.5) is False  # a second reconcile, same grace
    table.release("parked", now=2)
    assert table.claim("parked", now=30) is False  # a later snapshot that still lists it
    assert table.claim("parked", now=62.5) is True  # forgotten: parked again, for real


def test_claims_never_take_a_caller_that_is_held() -> None:
    table: CallTable[str] = CallTable(max_concurrent=5)
    table.admit("c1", now=0)
    assert table.claim("c1", now=0) is False
    table.activate("c1", "s1")
    assert table.claim("c1", now=0) is False


def test_a_released_channel_that_comes_back_to_the_app_is_a_new_call() -> None:
    table: CallTable[str] = CallTable(max_concurrent=5)
    table.admit("c1", now=0)
    table.activate("c1", "s1")
    table.release("c1", now=1)
    assert table.admit("c1", now=2) is Verdict.ADMIT
    assert table.activate("c1", "s2")
    assert table.route("c1") == "s2"


def test_activate_needs_an_admission() -> None:
    table: CallTable[str] = CallTable(max_concurrent=5)
    with pytest.raises(ValueError, match="not in admission"):
        table.activate("c1", "s1")


def test_abandoned_admission_frees_the_slot_once_released() -> None:
    table: CallTable[str] = CallTable(max_concurrent=1)
    table.admit("c1", now=0)
    table.abandon("c1")
    assert table.holding == 0 and not table.idle
    table.release("c1", now=1)
    assert table.idle
