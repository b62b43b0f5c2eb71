"""The bench's process-tree counters: a live child's CPU and memory count for its parent.

/proc counts a child's CPU in its parent's only once the parent has waited for it,
so a long-lived worker (the offline recogniser's decoders) is invisible to the
parent's own counters: these helpers add the live descendants.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from tests.bench.measure import cpu_seconds, descendants, rss_mb, tree_cpu_seconds, tree_pss_mb, tree_rss_mb

# A child that burns CPU, with a grandchild that sleeps: both are descendants.
_BUSY = (
    "import subprocess, sys, time\n"
    "g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'])\n"
    "print('ready', flush=True)\n"
    "end = time.process_time() + 0.5\n"
    "while time.process_time() < end: pass\n"
    "print('done', flush=True)\n"
    "sys.stdin.read()\n"
    "g.kill()\n"
)


def test_a_live_childs_cpu_and_memory_count_for_the_parent() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _BUSY], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "ready"
        assert proc.stdout.readline().strip() == "done"  # it has spent 0.5 s of CPU and lives on
        below = descendants(os.getpid())
        assert proc.pid in below
        grandchildren = descendants(proc.pid)
        assert len(grandchildren) == 1 and grandchildren[0] in below
        own = cpu_seconds(os.getpid())
        tree = tree_cpu_seconds(os.getpid())
        assert tree.own - own.own >= 0.4, (own, tree)
        assert tree_rss_mb(os.getpid()) > rss_mb(os.getpid()) + rss_mb(proc.pid) * 0.9
        assert 0 < tree_pss_mb(os.getpid()) <= tree_rss_mb(os.getpid()) + 1
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
    # Once waited for, it is gone from the tree.
    time.sleep(0.1)
    assert proc.pid not in descendants(os.getpid())
