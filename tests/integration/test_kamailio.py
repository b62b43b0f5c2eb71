"""Kamailio's dispatcher in front of two Asterisk + agent nodes (issue 20), all real, on loopback.

The cluster (kamailio_lab.py) runs the shipped deploy/kamailio/ config and node
dialplan; callers are SIPp calls to Kamailio. Which node took a call is read
from the nodes' agents' call records (the caller number is the key).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import pytest

from tests.integration.kamailio_lab import PING_INTERVAL, Cluster, Node, _wait, running_cluster
from tests.integration.lab import Lab


@pytest.fixture(scope="module")
def cluster_session(lab_session: Lab) -> Iterator[Cluster]:
    with running_cluster(lab_session) as cluster:
        yield cluster


@pytest.fixture
def cluster(cluster_session: Cluster) -> Iterator[Cluster]:
    cluster_session.heal()
    yield cluster_session


def _answered(cluster: Cluster, count: int, **kwargs: float) -> dict[str, list[str]]:
    """Place calls; assert SIPp saw each answered and ended; where each landed."""
    calls = cluster.call(count, **kwargs)
    code = calls.wait()
    assert code == 0, f"SIPp exit {code}: {calls.log_tail()}\n--- kamailio ---\n{cluster.kamailio.log_tail()}"
    spread = cluster.where(calls.numbers)
    assert sorted(n for got in spread.values() for n in got) == sorted(calls.numbers), spread
    return spread


def test_ten_calls_spread_over_both_nodes(cluster: Cluster) -> None:
    spread = _answered(cluster, 10)
    print(f"calls per node: { {k: len(v) for k, v in spread.items()} }")
    assert all(len(v) >= 3 for v in spread.values()), spread


def _active(node: Node) -> int:
    status, body = node.http_get("/calls")
    return body.count('"call_id"') if status == 200 else 0


def test_a_node_whose_asterisk_stops_is_marked_inactive_and_new_calls_go_to_the_other(
    cluster: Cluster,
) -> None:
    # A call in progress on the healthy node before the other goes down: it must notice nothing.
    long_call = cluster.call(1, hold_s=10)
    _wait(lambda: sum(map(_active, cluster.nodes)) == 1, 15, "the long call answered")
    up = next(n for n in cluster.nodes if _active(n) == 1)
    down = next(n for n in cluster.nodes if n is not up)
    stopped = time.monotonic()
    down.stop_asterisk()
    cluster.wait_states({down.uri: "IP", up.uri: "AP"}, 15)
    print(f"node marked inactive {time.monotonic() - stopped:.1f} s after its Asterisk stopped")
    spread = _answered(cluster, 6)
    assert spread[down.name] == [] and len(spread[up.name]) == 6, spread
    assert long_call.wait() == 0, long_call.log_tail()
    assert cluster.where(long_call.numbers)[up.name] == long_call.numbers
    # Back up: the probes bring it back without anyone touching Kamailio.
    down.start_asterisk()
    cluster.wait_states({down.uri: "AP"}, 15)


def test_with_one_agent_killed_every_new_call_is_still_answered(cluster: Cluster) -> None:
    # A call in progress on the other node goes on while the agent dies.
    long_call = cluster.call(1, hold_s=8)
    _wait(lambda: sum(map(_active, cluster.nodes)) == 1, 15, "the long call answered")
    alive = next(n for n in cluster.nodes if _active(n) == 1)
    dead = next(n for n in cluster.nodes if n is not alive)
    assert dead.agent is not None
    dead.agent.kill()
    # Its Asterisk still answers OPTIONS: Kamailio keeps it active; the failure route saves the calls.
    spread = _answered(cluster, 6)
    assert cluster.kamailio.states()[dead.uri] == "AP"
    assert spread[dead.name] == [] and len(spread[alive.name]) == 6, spread
    # At least one call did reach the dead agent's node, was refused there with 503 and moved on.
    refused = [n for got in spread.values() for n in got if "next-node" in dead.dialplan_kinds(n)]
    assert refused, "no call tried the node whose agent is dead"
    assert long_call.wait() == 0, long_call.log_tail()
    assert cluster.where(long_call.numbers)[alive.name] == long_call.numbers


def test_a_drained_node_takes_no_new_calls(cluster: Cluster) -> None:
    drained, other = cluster.nodes
    # The operator's drain (deploy/kamailio/README.md): Kamailio first, then the agent.
    cluster.kamailio.kamcmd("dispatcher.set_state", "d", "1", drained.uri)
    assert drained.agent is not None
    drained.agent.proc.send_signal(signal.SIGTERM)
    assert drained.agent.proc.wait(timeout=30) == 0
    time.sleep(3 * PING_INTERVAL)  # several probes: none may bring a disabled node back
    assert cluster.kamailio.states()[drained.uri].startswith("D")
    spread = _answered(cluster, 4)
    assert spread[drained.name] == [] and len(spread[other.name]) == 4, spread
    assert all("stasis-enter" not in drained.dialplan_kinds(n) for n in spread[other.name])
