"""Measuring helpers of the call benchmark: percentiles, process CPU, the agent's histograms."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

_TICK = os.sysconf("SC_CLK_TCK")


def summary(values: Sequence[float], *, scale: float = 1000.0, ndigits: int = 1) -> dict[str, Any]:
    """n, p50, p95, p99, min, max, mean of ``values`` (seconds, reported ×``scale``: ms by default)."""
    if not values:
        return {"n": 0}
    a = np.asarray(values, dtype=np.float64) * scale
    return {
        "n": int(a.size),
        "p50": round(float(np.percentile(a, 50)), ndigits),
        "p95": round(float(np.percentile(a, 95)), ndigits),
        "p99": round(float(np.percentile(a, 99)), ndigits),
        "min": round(float(a.min()), ndigits),
        "max": round(float(a.max()), ndigits),
        "mean": round(float(a.mean()), ndigits),
    }


@dataclass(frozen=True)
class CpuSample:
    """CPU seconds of a process (its own, and of its waited-for children) at one moment."""

    own: float
    children: float


def cpu_seconds(pid: int) -> CpuSample:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        stat = f.read()
    # The command name may hold spaces and parentheses: fields start after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return CpuSample((utime + stime) / _TICK, (cutime + cstime) / _TICK)


def git_commit() -> str:
    """The checkout's commit (``-dirty`` with changes not committed): a figure names what it measured."""
    proc = subprocess.run(
        ["git", "describe", "--always", "--dirty"],
        cwd=Path(__file__).resolve().parent,
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.stdout.strip() or "unknown"


def descendants(pid: int) -> list[int]:
    """Live processes below ``pid`` (children, their children...): the offline recogniser's workers."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text(encoding="ascii", errors="replace")
        except OSError:
            continue  # gone meanwhile
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def tree_cpu_seconds(pid: int) -> CpuSample:
    """CPU of a process and of its live descendants (``own``), and of the children it has waited for.

    A long-lived child (a recogniser worker) is never waited for while it runs, so the
    process's own counters miss it; a short one (espeak-ng) is in ``children`` once it exits.
    """
    root = cpu_seconds(pid)
    own = root.own
    for child in descendants(pid):
        try:
            sample = cpu_seconds(child)
        except OSError:
            continue
        own += sample.own
    return CpuSample(own, root.children)


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and its live descendants, MiB (shared pages counted in each)."""
    total = rss_mb(pid)
    for child in descendants(pid):
        try:
            total += rss_mb(child)
        except (OSError, RuntimeError):
            continue
    return total


def tree_pss_mb(pid: int) -> float:
    """Proportional set size of a process and its live descendants, MiB: shared pages split
    between the processes sharing them, so the sum is what the tree takes (RSS counts them in each)."""
    total = 0.0
    for each in [pid, *descendants(pid)]:
        try:
            with open(f"/proc/{each}/smaps_rollup", encoding="ascii") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("Pss:")) / 1024
        except (OSError, StopIteration):
            continue
    return total


def rss_mb(pid: int) -> float:
    """Resident memory of a process (VmRSS), MiB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_percent(before: CpuSample, after: CpuSample, wall: float) -> dict[str, float]:
    """Percent of one core over ``wall`` seconds: the process alone and with its children."""
    own = (after.own - before.own) / wall * 100
    total = own + (after.children - before.children) / wall * 100
    return {"own": round(own, 2), "with_children": round(total, 2)}


# -------------------------------------------------------------- the agent's /metrics


@dataclass
class Histogram:
    buckets: dict[float, float]  # upper bound -> cumulative count
    count: float
    total: float


def parse_histograms(text: str, prefix: str = "ari_agent_") -> dict[str, Histogram]:
    """Histograms of a Prometheus text page, their label sets summed (``le`` aside)."""
    result: dict[str, Histogram] = {}
    for family in text_string_to_metric_families(text):
        if family.type != "histogram" or not family.name.startswith(prefix):
            continue
        hist = result.setdefault(family.name, Histogram({}, 0.0, 0.0))
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                le = float(sample.labels["le"])
                hist.buckets[le] = hist.buckets.get(le, 0.0) + sample.value
            elif sample.name.endswith("_count"):
                hist.count += sample.value
            elif sample.name.endswith("_sum"):
                hist.total += sample.value
    return result


def histogram_delta(before: Mapping[str, Histogram], after: Mapping[str, Histogram]) -> dict[str, Histogram]:
    """What was observed between two scrapes."""
    delta: dict[str, Histogram] = {}
    for name, hist in after.items():
        old = before.get(name, Histogram({}, 0.0, 0.0))
        count = hist.count - old.count
        if count <= 0:
            continue
        buckets = {le: n - old.buckets.get(le, 0.0) for le, n in hist.buckets.items()}
        delta[name] = Histogram(buckets, count, hist.total - old.total)
    return delta


def histogram_quantile(hist: Histogram, q: float) -> float:
    """Estimate as Prometheus does: linear within the bucket holding the quantile."""
    rank = q * hist.count
    lower_bound, lower_count = 0.0, 0.0
    for le in sorted(hist.buckets):
        count = hist.buckets[le]
        if count >= rank:
            if le == float("inf"):
                return lower_bound
            span = count - lower_count
            return lower_bound + (le - lower_bound) * ((rank - lower_count) / span if span else 1.0)
        lower_bound, lower_count = le, count
    return lower_bound


def describe_histograms(hists: Mapping[str, Histogram]) -> dict[str, dict[str, float]]:
    """Per histogram: count, mean, p50, p95 (ms for *_seconds histograms)."""
    out: dict[str, dict[str, float]] = {}
    for name, hist in sorted(hists.items()):
        scale = 1000.0 if name.endswith("_seconds") else 1.0
        out[name] = {
            "count": hist.count,
            "mean": round(hist.total / hist.count * scale, 1),
            "p50": round(histogram_quantile(hist, 0.5) * scale, 1),
            "p95": round(histogram_quantile(hist, 0.95) * scale, 1),
        }
    return out


def flatten(values: Iterable[Sequence[float]]) -> list[float]:
    return [v for seq in values for v in seq]
