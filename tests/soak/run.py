"""``make soak``: the agent held at 1x, 1.5x and 2x its call limit for minutes, through the lab's Asterisk.

Each phase keeps ``factor x calls.max_concurrent`` calls up with ``ari-agent
load``'s SIPp callers (each asks a question and says goodbye, then the next
caller takes its place). At 1x no call may fail; above it only ``BUSY``
hand-backs are allowed. Per phase: event-loop lag p99 (the agent's
``ari_agent_event_loop_lag_seconds``), RSS at the start, the end and its
peak (``process_resident_memory_bytes``), agent CPU per call, turn latency.
Beside the phases one SIP call stays up for ``--long-call-minutes`` (22 by
default: RTP sequence numbers wrap after 65 536 packets, 21.8 minutes of
20 ms packets), then asks a question and says goodbye: it must still be
answered right.

Last, the kill phase (tests/soak/kill.py): ``kill -9`` of an agent with
``--kill-callers`` (20) callers in conversation, a restart, and every caller
back in the dialplan ``FAILED`` within 10 s with nothing left behind.

    python -m tests.soak.run [--minutes 10] [--limit 10] [--factors 1,1.5,2] [--long-call-minutes 22]
    python -m tests.soak.run --only kill          (the kill phase alone, about a minute)

Prints a table, writes JSON under tests/bench/results/, exits 1 on a failure.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import sys
import threading
import time
import wave
from datetime import datetime
from pathlib import Path
from typing import Any

from ari_agent.config import load_settings
from ari_agent.ops.load import LoadOptions, run_load
from ari_agent.ops.loadplan import Target
from ari_agent.ops.loadreport import CallVerdict, LoadReport, percentile
from tests.integration.lab import AgentFactory, AgentProcess, CallHandle, Lab, LabError, running_lab
from tests.soak.kill import KillResult, print_kill, run_kill

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"
CALL_SECONDS = 19.5  # one load caller from answer to the agent's hang-up (seen: 19.2-19.3 s)
LAG_METRIC = "ari_agent_event_loop_lag_seconds"


# ---------------------------------------------------------------- the agent's metrics


def _metrics(agent: AgentProcess) -> str:
    try:
        return agent.http_get("/metrics")[1]
    except OSError:
        return ""


def _value(text: str, name: str) -> float | None:
    match = re.search(rf"(?m)^{re.escape(name)} ([0-9.e+-]+)$", text)
    return float(match.group(1)) if match else None


def _lag_buckets(text: str) -> dict[float, float]:
    buckets = {}
    for le, count in re.findall(rf'(?m)^{LAG_METRIC}_bucket\{{le="([^"]+)"\}} ([0-9.e+]+)$', text):
        buckets[math.inf if le == "+Inf" else float(le)] = float(count)
    return buckets


def lag_p99(before: dict[float, float], after: dict[float, float]) -> float | None:
    """The upper bound of the bucket holding the 99th percentile of what was observed in between."""
    deltas = sorted((le, after.get(le, 0.0) - before.get(le, 0.0)) for le in after)
    total = deltas[-1][1] if deltas else 0.0
    if total <= 0:
        return None
    return next(le for le, count in deltas if count >= 0.99 * total)


class Sampler(threading.Thread):
    """RSS of the agent every few seconds during a phase."""

    def __init__(self, agent: AgentProcess, every: float = 5.0) -> None:
        super().__init__(daemon=True)
        self.agent = agent
        self.every = every
        self.rss: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            rss = _value(_metrics(self.agent), "process_resident_memory_bytes")
            if rss is not None:
                self.rss.append(rss / 2**20)
            self.stop.wait(self.every)


# ---------------------------------------------------------------- phases


@dataclasses.dataclass
class Phase:
    factor: float
    held: int  # load callers at once (the long call is one more)
    calls: int
    report: LoadReport
    busy: int
    failed: list[str]
    lag_p99_s: float | None
    rss_mb: tuple[float, float, float]  # start, end, peak

    def to_json(self) -> dict[str, Any]:
        lat = self.report.latencies_ms
        return {
            "factor": self.factor,
            "held": self.held,
            "calls": self.calls,
            "busy": self.busy,
            "failed": self.failed,
            "peak_concurrent": self.report.peak_concurrent,
            "event_loop_lag_p99_s": self.lag_p99_s,
            "rss_mb": {"start": self.rss_mb[0], "end": self.rss_mb[1], "peak": self.rss_mb[2]},
            "agent_cpu_s_per_call": self.report.cpu_per_call,
            "turn_latency_ms": {"p50": percentile(lat, 50), "p95": percentile(lat, 95)} if lat else None,
            "load": self.report.to_json(),
        }


def _failure(v: CallVerdict) -> str | None:
    if v.end_reason == "busy":
        return None
    if not v.answered:
        return f"call {v.call_number}: not answered"
    if not v.record:
        return f"call {v.call_number}: no record from the agent"
    if v.answer != "right":
        return f"call {v.call_number}: answer {v.answer} ({v.replied!r})"
    if not v.agent_hung_up:
        return f"call {v.call_number}: not hung up by the agent after goodbye ({v.end_reason})"
    return None


def run_phase(
    lab: Lab, agent: AgentProcess, env: dict[str, str], factor: float, limit: int, minutes: float
) -> Phase:
    held = max(1, round(factor * limit) - 1)  # the long call holds one place
    rate = held / CALL_SECONDS
    calls = max(held, math.ceil(rate * minutes * 60))
    os.environ.update(env)
    settings = load_settings(None)
    opts = LoadOptions(
        target=Target("100", "127.0.0.1", lab.ports.agent_sip),
        calls=calls,
        rate=round(rate, 3),
        max_concurrent=held,
    )
    before = _lag_buckets(_metrics(agent))
    sampler = Sampler(agent)
    sampler.start()
    try:
        report = run_load(
            settings, opts, on_progress=lambda line: print(f"  [{factor:g}x] {line}", flush=True)
        )
    finally:
        sampler.stop.set()
        sampler.join()
    after = _lag_buckets(_metrics(agent))
    rss = sampler.rss or [0.0]
    failed = [f for f in (_failure(v) for v in report.verdicts) if f is not None]
    busy = sum(v.end_reason == "busy" for v in report.verdicts)
    if factor <= 1 and busy:
        failed.append(f"{busy} call(s) BUSY at {factor:g}x the limit")
    return Phase(
        factor, held, calls, report, busy, failed, lag_p99(before, after), (rss[0], rss[-1], max(rss))
    )


# ---------------------------------------------------------------- the long call


def _silence(lab: Lab, seconds: float) -> str:
    """A silent 8 kHz WAV for the lab's caller to play (it keeps RTP flowing, as a phone does)."""
    name = f"soak-silence-{int(seconds)}"
    path = lab.sounds_dir / f"{name}.wav"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        with wave.open(str(tmp), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(8000)
            for _ in range(int(seconds)):
                w.writeframes(b"\0\0" * 8000)
        os.replace(tmp, path)
    return f"/lab/sounds/{name}"


def long_call_verdict(agent: AgentProcess, handle: CallHandle, minutes: float) -> dict[str, Any]:
    record = agent.record_for(handle.number, timeout=30)
    replies = [t["text"] for t in record["turns"] if t["role"] == "agent"]
    media = record.get("media") or {}
    started = datetime.fromisoformat(record["started_at"].replace("Z", "+00:00")).timestamp()
    ended = datetime.fromisoformat(record["ended_at"].replace("Z", "+00:00")).timestamp()
    problems = []
    if ended - started < minutes * 60:
        problems.append(f"lasted only {(ended - started) / 60:.1f} min")
    if record["end_reason"] != "hangup_by_agent":
        problems.append(f"ended {record['end_reason']}, not by the agent after goodbye")
    if not any("We are open Monday to Friday" in r for r in replies):
        problems.append(f"no right answer after the wrap: {replies}")
    if media.get("received", 0) < 65536:
        problems.append(f"only {media.get('received')} packets received: no sequence wrap")
    if media.get("lost", 0) or media.get("ssrc_changes", 0):
        problems.append(
            f"media after the wrap: lost {media.get('lost')}, SSRC changes {media.get('ssrc_changes')}"
        )
    return {
        "minutes": round((ended - started) / 60, 1),
        "media": media,
        "replies": replies,
        "problems": problems,
    }


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.soak.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="per phase (default 10)")
    parser.add_argument(
        "--limit", type=int, default=10, help="calls.max_concurrent (default 10, for 2 cores)"
    )
    parser.add_argument("--factors", default="1,1.5,2", help="multiples of the limit (default 1,1.5,2)")
    parser.add_argument("--long-call-minutes", type=float, default=22.0, help="0: no long call")
    parser.add_argument(
        "--kill-callers", type=int, default=20, help="callers up when the agent is killed (0: no kill phase)"
    )
    parser.add_argument(
        "--only", choices=("load", "kill"), help="the load phases (and long call), or the kill"
    )
    args = parser.parse_args(argv)
    if args.only == "kill" and args.kill_callers < 1:
        parser.error("--only kill needs --kill-callers of at least 1")
    workdir = Path(f"/tmp/ari-agent-soak-{int(time.time())}")
    workdir.mkdir(parents=True)
    config = workdir / "soak.toml"
    # The long caller is silent for minutes: the agent must neither prompt nor end the call meanwhile.
    long_s = args.long_call_minutes * 60
    config.write_text(
        f"[profiles.frontdesk]\nidle_timeout_s = {long_s + 600:.0f}\nmax_duration_s = {long_s + 600:.0f}\n",
        encoding="utf-8",
    )
    started = time.monotonic()
    phases: list[Phase] = []
    long_result = None
    kill_result = None
    try:
        with running_lab() as lab:
            factory = AgentFactory(lab, workdir)
            try:
                if args.only != "kill":
                    phases, long_result = _load_phases(lab, factory, args, config)
                if args.only != "load" and args.kill_callers > 0:
                    print(f"kill phase: {args.kill_callers} callers", flush=True)
                    kill_result = run_kill(lab, factory, {"AGENT_CONFIG": str(config)}, args.kill_callers)
            finally:
                factory.stop_all()
    except LabError as exc:
        print(f"soak failed: {exc}", file=sys.stderr)
        return 1
    return _report(args, phases, long_result, kill_result, time.monotonic() - started)


def _load_phases(
    lab: Lab, factory: AgentFactory, args: argparse.Namespace, config: Path
) -> tuple[list[Phase], dict[str, Any] | None]:
    long_s = args.long_call_minutes * 60
    factors = [float(f) for f in args.factors.split(",")]
    agent = factory.start({"AGENT_CALLS__MAX_CONCURRENT": str(args.limit), "AGENT_CONFIG": str(config)})
    env = factory.base_env(agent.records_dir) | {"AGENT_CONFIG": str(config)}
    long_call = None
    if args.long_call_minutes > 0:
        long_call = lab.place_call(
            [_silence(lab, long_s), "what time do you open", "goodbye"],
            via="sip",
            max_duration=long_s + 300,
            turn_timeout=30,
        )
        lab.wait_dialplan_event(long_call.number, "caller-say-start", timeout=60)
    phases = [run_phase(lab, agent, env, f, args.limit, args.minutes) for f in factors]
    long_result = None
    if long_call is not None:
        print("waiting for the long call to end", flush=True)
        lab.wait_call_ended(long_call, timeout=long_s + 400)
        long_result = long_call_verdict(agent, long_call, args.long_call_minutes)
    agent.stop()
    return phases, long_result


def _report(
    args: argparse.Namespace,
    phases: list[Phase],
    long_result: dict[str, Any] | None,
    kill_result: KillResult | None,
    wall: float,
) -> int:
    if phases:
        print(f"\nsoak: limit {args.limit}, {args.minutes:g} min per phase, {wall / 60:.1f} min in all")
        print(
            f"{'phase':>6} {'held':>4} {'calls':>5} {'busy':>4} {'failed':>6} {'peak':>4} {'lag p99':>8} "
            f"{'RSS start/end/peak MB':>22} {'CPU s/call':>10} {'latency p50/p95 ms':>18}"
        )
    else:
        print(f"\nsoak: {wall / 60:.1f} min in all")
    for p in phases:
        lat = p.report.latencies_ms
        lat_text = f"{percentile(lat, 50):.0f}/{percentile(lat, 95):.0f}" if lat else "-"
        lag = f"<={p.lag_p99_s * 1000:g} ms" if p.lag_p99_s is not None else "-"
        cpu = f"{p.report.cpu_per_call:.3f}" if p.report.cpu_per_call is not None else "-"
        rss = "/".join(f"{v:.0f}" for v in p.rss_mb)
        print(f"{p.factor:>5g}x {p.held:>4} {p.calls:>5} {p.busy:>4} {len(p.failed):>6} "
              f"{p.report.peak_concurrent:>4} {lag:>8} {rss:>22} {cpu:>10} {lat_text:>18}")  # fmt: skip
        for failure in p.failed[:5]:
            print(f"        {failure}")
    if long_result is not None:
        received = long_result["media"].get("received")
        problems = long_result["problems"] or "none"
        print(f"long call: {long_result['minutes']} min, received {received} packets, problems: {problems}")
    if kill_result is not None:
        print_kill(kill_result)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"soak-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(
        json.dumps(
            {
                "args": vars(args),
                "phases": [p.to_json() for p in phases],
                "long_call": long_result,
                "kill": kill_result.to_json() if kill_result is not None else None,
            },
            indent=2,
        ),
        encoding="utf-8",
    )
    print(f"written: {out}")
    ok = (
        all(not p.failed for p in phases)
        and (long_result is None or not long_result["problems"])
        and (kill_result is None or not kill_result.problems)
    )
    print("soak passed." if ok else "soak FAILED.")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
