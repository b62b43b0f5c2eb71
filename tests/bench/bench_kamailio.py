"""How fast Kamailio stops sending calls to a dead node (issue 20), through real Kamailio and Asterisk.

The cluster of tests/integration/kamailio_lab.py (Kamailio from
deploy/kamailio/, two Asterisk + agent nodes on loopback), with
``ds_ping_interval`` = 1 s and a probing threshold of 1. For each sample one
node's Asterisk is stopped and ``kamcmd dispatcher.list`` is polled every
100 ms until that node is inactive (``FLAGS: IP``): the detection time. Then
the node is started again and the time until it is active (``AP``) is the
recovery time. The figures scale with the interval: detection is about
interval × threshold plus the OPTIONS timeout of the probe in flight.

``python -m tests.bench.bench_kamailio [--samples N]``; JSON under
``tests/bench/results/kamailio-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from tests.bench.measure import git_commit, summary
from tests.integration.kamailio_lab import FR_TIMER, PING_INTERVAL, running_cluster
from tests.integration.lab import running_lab

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=5)
    args = parser.parse_args()
    commit = git_commit()
    load_before = os.getloadavg()
    detect: list[float] = []
    recover: list[float] = []
    with running_lab() as lab, running_cluster(lab) as cluster:
        for i in range(args.samples):
            node = cluster.nodes[i % 2]
            other = cluster.nodes[(i + 1) % 2]
            # Start each sample at a random phase of the probe cycle, as a real failure would.
            time.sleep(PING_INTERVAL * (0.13 * i % 1))
            stopped = time.monotonic()
            node.stop_asterisk()
            cluster.wait_states({node.uri: "IP", other.uri: "AP"}, 30)
            detect.append(time.monotonic() - stopped)
            started = time.monotonic()
            node.start_asterisk()
            cluster.wait_states({node.uri: "AP"}, 60)
            recover.append(time.monotonic() - started)
            print(f"sample {i + 1}: inactive after {detect[-1]:.2f} s, active again {recover[-1]:.2f} s")
    result: dict[str, Any] = {
        "ds_ping_interval_s": PING_INTERVAL,
        "ds_probing_threshold": 1,
        "fr_timer_ms": FR_TIMER,
        "detection_s": summary(detect, scale=1.0, ndigits=2),
        # From starting Asterisk (it boots in about a second here) to the node active again.
        "recovery_s": summary(recover, scale=1.0, ndigits=2),
    }
    print()
    print(f"{'Kamailio dispatcher':<36}{'p50':>8}{'p95':>8}{'max':>8}   (ds_ping_interval {PING_INTERVAL} s)")
    for key, label in (
        ("detection_s", "node down -> inactive (s)"),
        ("recovery_s", "node started -> active (s)"),
    ):
        row = result[key]
        print(f"{label:<36}{row['p50']:>8.2f}{row['p95']:>8.2f}{row['max']:>8.2f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"kamailio-{time.strftime('%Y%m%d-%H%M%S')}.json"
    # The load average before and after: the machine is shared, the figures move with it.
    machine = {"cpus": os.cpu_count(), "load_before": load_before, "load": os.getloadavg()}
    report = {
        "command": "python -m tests.bench.bench_kamailio",
        "commit": commit,
        "machine": machine,
        **result,
    }
    path.write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(f"written: {path}")


if __name__ == "__main__":
    main()
