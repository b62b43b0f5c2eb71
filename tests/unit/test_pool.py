"""The pool's rules on virtual time: who claims first, and when a silent peer counts as dead."""

from __future__ import annotations

import json

import pytest

from ari_agent.ari.events import CallBroadcast, decode_event
from ari_agent.calltable import RESERVATION_TTL, CallTable, Phase, Verdict
from ari_agent.config import Settings
from ari_agent.pool import (
    DEAD_AFTER,
    PeerWatch,
    beat_variable,
    broadcast_filter,
    claim_delay,
    filter_matches,
    peer_instance,
    pool_app,
)

# ---------------------------------------------------------------- names


def test_pool_app_names_round_trip_and_never_match_the_operator_commands_apps() -> None:
    assert pool_app("ai-agent", "b-2") == "ai-agent-pool-b-2"
    assert peer_instance("ai-agent", "ai-agent-pool-b-2") == "b-2"
    assert peer_instance("ai-agent", "ai-agent") is None
    assert peer_instance("ai-agent", "ai-agent-doctor-1a2b3c4d") is None
    assert peer_instance("ai-agent", "other-pool-b") is None
    assert peer_instance("ai-agent", "ai-agent-pool-") is None


def test_doctor_reads_the_filter_of_a_stasis_broadcast_and_judges_it() -> None:
    assert broadcast_filter("1000,^ai-agent-pool-,frontdesk") == "^ai-agent-pool-"
    assert broadcast_filter("") == "" and broadcast_filter("1000") == ""
    assert filter_matches("^ai-agent-pool-", "ai-agent-pool-a")
    assert not filter_matches("^ai-agent-pool-", "ai-agent")
    assert not filter_matches("^ivr-.*", "ai-agent-pool-a")
    assert filter_matches("", "anything")  # no filter: every app is offered the call
    assert not filter_matches("([", "ai-agent-pool-a")


def test_beat_variables_differ_per_instance() -> None:
    assert beat_variable("a-b") == "AI_AGENT_POOL_BEAT_a_b"
    assert beat_variable("a-b") != beat_variable("ab")


def test_settings_register_the_pool_app_only_in_a_pool() -> None:
    assert Settings(instance_id="one").stasis_app == "ai-agent"
    pooled = Settings(instance_id="one", pool={"enabled": True})  # type: ignore[arg-type]
    assert pooled.stasis_app == "ai-agent-pool-one"


# ---------------------------------------------------------------- claim delay


def test_claim_delay_grows_with_load_and_stops_at_the_limit() -> None:
    delays = [claim_delay(n, 4, 0.2, 0.0) for n in range(5)]
    assert delays == [0.0, 0.05, 0.1, 0.15000000000000002, None]


def test_a_less_loaded_agent_always_claims_before_a_busier_one_whatever_the_draw() -> None:
    for draw_low in (0.0, 0.5, 0.999):
        for draw_high in (0.0, 0.5, 0.999):
            low = claim_delay(2, 10, 0.25, draw_low)
            high = claim_delay(3, 10, 0.25, draw_high)
            assert low is not None and high is not None
            assert low < high or (draw_low == 0.999 and draw_high == 0.0 and low <= high)


def test_equal_loads_are_drawn_and_stay_under_the_maximum() -> None:
    a = claim_delay(1, 2, 0.25, 0.1)
    b = claim_delay(1, 2, 0.25, 0.9)
    assert a is not None and b is not None and a < b < 0.25


def test_claim_delay_refuses_a_draw_outside_the_unit_interval() -> None:
    with pytest.raises(ValueError, match="draw"):
        claim_delay(0, 1, 0.25, 1.0)


# ---------------------------------------------------------------- dead or reconnecting


def test_a_peer_whose_beat_stops_is_dead_after_the_grace_on_the_observers_clock() -> None:
    watch = PeerWatch(dead_after=5.0)
    for t in range(10):
        watch.observe("b", f"tok.{t}", now=float(t))
    assert not watch.is_dead("b", 9.0)
    # The process is killed: the beat stays at tok.9 from t=9 on.
    for t in range(10, 14):
        watch.observe("b", "tok.9", now=float(t))
        assert not watch.is_dead("b", float(t))
    watch.observe("b", "tok.9", now=14.0)
    assert watch.is_dead("b", 14.0)


def test_a_peer_that_misses_beats_for_two_seconds_and_comes_back_stays_alive() -> None:
    watch = PeerWatch(dead_after=DEAD_AFTER)
    watch.observe("b", "tok.1", now=0.0)
    for t in (1.0, 2.0, 3.0):  # its ARI link is cut: the beat does not change
        watch.observe("b", "tok.1", now=t)
    watch.observe("b", "tok.2", now=3.5)
    watch.observe("b", "tok.2", now=8.0)
    assert not watch.is_dead("b", 8.0)
    assert watch.alive(8.0) == ["b"]


def test_a_peer_first_seen_already_silent_gets_the_whole_grace() -> None:
    watch = PeerWatch(dead_after=5.0)
    watch.observe("b", "old.7", now=100.0)
    assert not watch.is_dead("b", 104.9)
    assert watch.is_dead("b", 105.0)
    watch.forget("b")
    assert not watch.is_dead("b", 200.0)


def test_a_restarted_peer_beats_with_a_new_token_and_is_alive_again() -> None:
    watch = PeerWatch(dead_after=5.0)
    watch.observe("b", "old.7", now=0.0)
    watch.observe("b", "old.7", now=6.0)
    assert watch.is_dead("b", 6.0)
    watch.observe("b", "new.1", now=7.0)
    assert not watch.is_dead("b", 7.0)


def test_the_live_agent_first_by_id_takes_over_and_the_next_when_it_dies_too() -> None:
    a, c = PeerWatch(dead_after=5.0), PeerWatch(dead_after=5.0)
    for watch in (a, c):
        watch.observe("b", "b.1", now=0.0)  # b dies at once
    a.observe("c", "c.1", now=0.0)
    c.observe("a", "a.1", now=0.0)
    for t in (2.0, 4.0, 6.0):
        a.observe("c", f"c.{t}", now=t)
        c.observe("a", f"a.{t}", now=t)
    assert a.is_dead("b", 6.0) and c.is_dead("b", 6.0)
    assert a.takes_over("a", 6.0) and not c.takes_over("c", 6.0)
    # a stops beating as well: c takes over once a is dead.
    c.observe("a", "a.6.0", now=11.0)
    assert c.takes_over("c", 11.0)


def test_keep_only_forgets_peers_asterisk_no_longer_lists() -> None:
    watch = PeerWatch(dead_after=5.0)
    watch.observe("b", "1", now=0.0)
    watch.observe("c", "1", now=0.0)
    watch.keep_only({"c"})
    assert watch.alive(0.0) == ["c"]


# ---------------------------------------------------------------- the call table's reservations


def test_a_reserved_claim_counts_against_the_limit_and_its_stasis_start_is_admitted() -> None:
    table: CallTable[str] = CallTable(max_concurrent=2)
    assert table.reserve("c1", now=0.0)
    assert not table.reserve("c1", now=0.0)  # offered twice: claimed once
    assert table.admit("c2", now=0.0) is Verdict.ADMIT
    assert table.holding == 2
    assert not table.reserve("c3", now=0.0)  # at the limit with the claim in flight
    assert table.admit("c1", now=0.1) is Verdict.ADMIT  # its StasisStart: already counted
    assert table.phase("c1") is Phase.ADMITTING
    assert table.holding == 2


def test_a_lost_claim_frees_its_place() -> None:
    table: CallTable[str] = CallTable(max_concurrent=1)
    assert table.reserve("c1", now=0.0)
    table.unreserve("c1")
    assert table.phase("c1") is None
    assert table.reserve("c2", now=0.0)


def test_unreserve_after_the_stasis_start_keeps_the_call() -> None:
    table: CallTable[str] = CallTable(max_concurrent=1)
    assert table.reserve("c1", now=0.0)
    assert table.admit("c1", now=0.0) is Verdict.ADMIT  # StasisStart before the claim's 204
    table.unreserve("c1")
    assert table.phase("c1") is Phase.ADMITTING


def test_a_draining_table_reserves_nothing_and_hands_a_reserved_call_back() -> None:
    table: CallTable[str] = CallTable(max_concurrent=3)
    assert table.reserve("c1", now=0.0)
    table.start_drain()
    assert not table.reserve("c2", now=0.0)
    assert table.admit("c1", now=0.0) is Verdict.DRAINING


def test_a_reservation_whose_stasis_start_never_comes_lapses() -> None:
    table: CallTable[str] = CallTable(max_concurrent=1)
    assert table.reserve("c1", now=0.0)
    assert not table.reserve("c2", now=RESERVATION_TTL - 0.1)
    assert table.reserve("c2", now=RESERVATION_TTL)
    assert table.phase("c1") is None


# ---------------------------------------------------------------- the event


def test_call_broadcast_decodes_as_asterisk_22_sends_it() -> None:
    raw = {
        "type": "CallBroadcast",
        "timestamp": "2026-11-30T22:39:42.444+0000",
        "channel": {
            "id": "1796078382.1",
            "name": "Local/frontdesk@lab-pool-00000000;2",
            "state": "Ring",
            "protocol_id": "",
            "caller": {"name": "", "number": "777"},
            "connected": {"name": "", "number": "777"},
            "accountcode": "",
            "dialplan": {
                "context": "lab-pool",
                "exten": "frontdesk",
                "priority": 2,
                "app_name": "StasisBroadcast",
                "app_data": "1500,^ai-agent-pool-,frontdesk",
            },
            "creationtime": "2026-11-30T22:39:42.443+0000",
            "language": "en",
        },
        "caller": "777",
        "called": "frontdesk",
        "asterisk_id": "02:fc:00:00:00:01",
        "application": "ai-agent-pool-x",
    }
    event = decode_event(json.dumps(raw))
    assert isinstance(event, CallBroadcast)
    assert event.channel.id == "1796078382.1"
    assert (event.application, event.caller, event.called) == ("ai-agent-pool-x", "777", "frontdesk")
    with pytest.raises(ValueError, match="CallBroadcast: field 'channel' is missing"):
        decode_event(json.dumps({"type": "CallBroadcast", "application": "x"}))
