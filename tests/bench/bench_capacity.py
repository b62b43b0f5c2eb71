"""Capacity figures for docs/capacity.md (issue 20): CPU and memory per call, per provider stack.

    python -m tests.bench.bench_capacity                      (from the repository root, as root)
    python -m tests.bench.bench_capacity --levels 1,5 --load-calls 10

Starts the lab (tests/integration/lab.py). Two phases:

* ``stacks``: for each provider stack, a fresh agent, then ``level`` calls
  held at once (``phases.run_concurrency``: greeting, one question, the
  reply), each level after the last. Per level: the agent's and Asterisk's
  CPU while the calls talk, and their resident memory before the first call
  and while all are held (the agent with its child processes: the offline
  recogniser decodes in worker processes, espeak-ng runs as one). Stacks:
  ``timed`` (STT/LLM/TTS of simulated latency, tests/fakes/timed.py: what a
  cloud stack costs the agent, less the SDKs), ``offline`` (the shipped
  frontdesk: pocketsphinx, scripted dialog, espeak-ng) and ``realtime`` (OpenAI Realtime
  through the openai SDK to the wire-level fake tests/fakes/openai_server.py,
  served from this process, µ-law both ways); ``pool`` is the offline stack
  on two pool agents (StasisBroadcast, the lab's context ``lab-pool``), their
  CPU and memory summed, with how many calls each took. These callers come in
  through a Local channel and an ExternalMedia leg of their own
  (tests/integration/rtp_caller.py), so Asterisk's share here is above a
  SIP call's.
* ``load``: ``ari-agent load`` (SIPp callers over SIP, the offline stack),
  its JSON report as it prints it (its agent CPU is the agent's own process),
  with Asterisk's CPU, the agent's with its workers, and their peak memory
  (VmHWM) beside it.

The machine is shared: the load average is recorded before and after each
phase, and every figure should be read beside it. JSON goes to
``tests/bench/results/capacity-<time>.json`` with the commit it ran at.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.bench.bench_calls import SHORT_REPLY, timed_config
from tests.bench.measure import (
    cpu_percent,
    cpu_seconds,
    descendants,
    git_commit,
    tree_cpu_seconds,
    tree_pss_mb,
    tree_rss_mb,
)
from tests.bench.phases import idle_cpu, run_concurrency
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.threaded import serve_in_thread
from tests.integration.lab import REPO, AgentFactory, AgentProcess, Lab, LabError, running_lab

RESULTS = Path(__file__).resolve().parent / "results"
QUESTIONS = {
    "timed": "tell me about your opening hours",
    "offline": "where are you located",
    "realtime": "what time do you open",
    "pool": "where are you located",
}
# The realtime stack's key for its fake: only the fake ever sees it.
FAKE_KEY = "sk-bench-0123456789abcdef"


def realtime_config(url: str) -> str:
    """The frontdesk profile (the lab's extension 100) on OpenAI Realtime, at the fake's ``url``."""
    return f"""
[profiles.frontdesk]
greeting = "Hello, this is the benchmark."
realtime = ["openai"]

[profiles.frontdesk.options.openai]
base_url = "{url}/v1"
"""


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _hwm_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


def run_stack(
    lab: Lab, factory: AgentFactory, workdir: Path, stack: str, levels: list[int]
) -> dict[str, Any]:
    with contextlib.ExitStack() as fakes:
        env = {"AGENT_LOG_LEVEL": "WARNING"}
        config = None
        if stack == "timed":
            config = timed_config(SHORT_REPLY)
        elif stack == "realtime":
            # The vendor's SDK in the agent against a wire-level fake in this process (its
            # replies are the fake's default: a short sentence of espeak-ng speech).
            url = fakes.enter_context(serve_in_thread(FakeOpenAI(api_key=FAKE_KEY).app))
            config = realtime_config(url)
            env.update(OPENAI_API_KEY=FAKE_KEY, AGENT_MEDIA__FORMAT="ulaw")
        if config is not None:
            path = workdir / f"{stack}.toml"
            path.write_text(config, encoding="utf-8")
            env["AGENT_CONFIG"] = str(path)
        if stack != "pool":
            return _run_levels(lab, [factory.start(env)], stack, levels)
        # Two agents of a pool (StasisBroadcast, the lab's context lab-pool), offline stack.
        low, high = lab.ports.agent_media
        half = (high - low + 1) // 2
        agents = [
            factory.start(
                {
                    **env,
                    "AGENT_POOL__ENABLED": "true",
                    "AGENT_INSTANCE_ID": f"bench-{i}",
                    "AGENT_HTTP__PORT": str(lab.ports.agent_http + 50 + i),
                    "AGENT_MEDIA__PORT_MIN": str(low + i * half),
                    "AGENT_MEDIA__PORT_MAX": str(low + (i + 1) * half - 1),
                }
            )
            for i in range(2)
        ]
        return _run_levels(lab, agents, stack, levels, extension="frontdesk", context="lab-pool")


def _run_levels(
    lab: Lab,
    agents: list[AgentProcess],
    stack: str,
    levels: list[int],
    extension: str = "100",
    context: str = "ai-agent-demo",
) -> dict[str, Any]:
    assert lab.agent.proc is not None
    asterisk_pid = lab.agent.proc.pid
    pids = [a.pid for a in agents]
    out: dict[str, Any] = {"load_before": _load(), "agents": len(agents), "levels": []}
    try:
        out["agent_idle_cpu_percent"] = asyncio.run(idle_cpu(pids[0]))
        out["agent_idle_rss_mb"] = round(sum(map(tree_rss_mb, pids)), 1)
        out["agent_idle_pss_mb"] = round(sum(map(tree_pss_mb, pids)), 1)
        for level in levels:
            started = time.monotonic()
            before = [len(a.records()) for a in agents]
            res = asyncio.run(
                run_concurrency(
                    lab, pids, asterisk_pid, level, QUESTIONS[stack], extension=extension, context=context
                )
            )
            report = res.report()
            report["load_after"] = _load()
            # Which agent took how many (a pool spreads them; records are written at each call's end).
            time.sleep(2.0)
            report["calls_per_agent"] = [len(a.records()) - n for a, n in zip(agents, before, strict=True)]
            out["levels"].append(report)
            cpu = report["agent_cpu_percent_per_call"].get("with_children", 0.0)
            ast = report["asterisk_cpu_percent"].get("own", 0.0) / level
            print(
                f"  {stack:8} {level:3} calls: {report['held_with_reply']}/{level} replied; agent CPU "
                f"{cpu:.2f}%/call, Asterisk {ast:.2f}%/call; agent RSS +{report['agent_rss_mb']['per_call']} "
                f"MiB/call; load {report['load_after'][0]} ({time.monotonic() - started:.0f} s)",
                flush=True,
            )
            lab.hangup_all()
            time.sleep(1.0)
    finally:
        for agent in agents:
            agent.stop()
        lab.hangup_all()
    return out


def run_load(lab: Lab, factory: AgentFactory, calls: int, rate: float) -> dict[str, Any]:
    agent = factory.start({"AGENT_LOG_LEVEL": "WARNING"})
    assert lab.agent.proc is not None
    asterisk_pid = lab.agent.proc.pid
    cmd = [
        sys.executable, "-m", "ari_agent.cli", "load", f"100@127.0.0.1:{lab.ports.agent_sip}",
        "--calls", str(calls), "--rate", f"{rate:g}", "--json",
    ]  # fmt: skip
    out: dict[str, Any] = {"command": " ".join(["ari-agent", *cmd[3:]]), "load_before": _load()}
    try:
        rss0 = tree_rss_mb(agent.pid)
        # The agent with its recogniser workers: its own /metrics CPU (the report's) leaves them out.
        asterisk0, agent0 = cpu_seconds(asterisk_pid), tree_cpu_seconds(agent.pid)
        started = time.monotonic()
        proc = subprocess.run(
            cmd,
            cwd=REPO,
            env={**os.environ, **factory.base_env(agent.records_dir)},
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        wall = time.monotonic() - started
        out["exit"] = proc.returncode
        out["wall_s"] = round(wall, 1)
        lines = proc.stdout.strip().splitlines()
        try:
            out["report"] = json.loads(lines[-1])
        except (IndexError, json.JSONDecodeError):
            out["report"] = None
            out["output"] = (proc.stdout + proc.stderr)[-3000:]
        # Over the whole run (calls arriving, talking, ending): seconds of CPU per call, and
        # per second of call (the records' start to end): percent of a core per call held.
        asterisk = cpu_percent(asterisk0, cpu_seconds(asterisk_pid), wall)
        agent_cpu = cpu_percent(agent0, tree_cpu_seconds(agent.pid), wall)
        call_s = sum(
            (datetime.fromisoformat(r["ended_at"]) - datetime.fromisoformat(r["started_at"])).total_seconds()
            for r in agent.records()
            if r.get("ended_at")
        )
        out["call_seconds"] = round(call_s, 1)
        # A call the agent did not end (the tool's "not hung up after goodbye"): what it heard and said.
        out["calls_not_ended_by_agent"] = [
            {
                "number": (r.get("caller") or {}).get("number"),
                "end_reason": r.get("end_reason"),
                "turns": [(t.get("role"), t.get("text")) for t in r.get("turns", [])],
            }
            for r in agent.records()
            if r.get("end_reason") != "hangup_by_agent"
        ]
        out["asterisk_cpu_seconds_per_call"] = round(asterisk["own"] * wall / 100 / calls, 3)
        if call_s > 0:
            out["cpu_percent_per_call_held"] = {
                "agent": round(agent_cpu["with_children"] * wall / call_s, 2),
                "asterisk": round(asterisk["own"] * wall / call_s, 2),
            }
        peak = sum(_hwm_mb(pid) for pid in [agent.pid, *descendants(agent.pid)])
        out["agent_rss_mb"] = {"before": round(rss0, 1), "peak": round(peak, 1)}
        out["agent_pss_mb_after"] = round(tree_pss_mb(agent.pid), 1)
        out["agent_cpu_seconds_per_call_with_workers"] = round(
            agent_cpu["with_children"] * wall / 100 / calls, 3
        )
        out["load_after"] = _load()
    finally:
        agent.stop()
        lab.hangup_all()
    report = out.get("report") or {}
    print(
        f"  load     {calls} calls: exit {out['exit']}; answered {report.get('answered')}, right "
        f"{report.get('right_answers')}; agent CPU {report.get('agent_cpu_seconds_per_call')} s/call, "
        f"Asterisk {out['asterisk_cpu_seconds_per_call']} s/call; per call held "
        f"{out.get('cpu_percent_per_call_held')} % of a core; peak concurrent "
        f"{report.get('peak_concurrent')}; agent RSS {out['agent_rss_mb']}; load {out['load_after'][0]}",
        flush=True,
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--stacks", default="timed,offline,realtime,pool", help="timed, offline, realtime, pool (empty: none)"
    )
    parser.add_argument("--levels", default="1,5", help="calls held at once, comma separated, in order")
    parser.add_argument("--load-calls", type=int, default=10, help="ari-agent load calls (0: skip)")
    parser.add_argument("--load-rate", type=float, default=1.0, help="ari-agent load calls per second")
    args = parser.parse_args(argv)
    stacks = [s.strip() for s in args.stacks.split(",") if s.strip()]
    unknown = set(stacks) - set(QUESTIONS)
    if unknown:
        parser.error(f"unknown stacks {sorted(unknown)}: timed, offline, realtime, pool")
    levels = [int(x) for x in args.levels.split(",") if x.strip()]
    started = time.time()
    report: dict[str, Any] = {
        "command": " ".join(["python -m tests.bench.bench_capacity", *(argv or sys.argv[1:])]),
        "commit": git_commit(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load": _load()},
        "stacks": {},
    }
    try:
        with running_lab() as lab, tempfile.TemporaryDirectory(prefix="ari-capacity-") as tmp:
            print(
                f"lab up in {lab.startup_seconds:.1f} s (slot {lab.ports.slot}); load {_load()}", flush=True
            )
            factory = AgentFactory(lab, Path(tmp))
            # Every agent, also one interrupted while starting (it would keep the slot's HTTP port).
            try:
                for stack in stacks:
                    report["stacks"][stack] = run_stack(lab, factory, Path(tmp), stack, levels)
                if args.load_calls > 0:
                    report["load_tool"] = run_load(lab, factory, args.load_calls, args.load_rate)
            finally:
                factory.stop_all()
    except LabError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    report["duration_s"] = round(time.time() - started, 1)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"capacity-{time.strftime('%Y%m%d-%H%M%S', time.localtime(started))}.json"
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"results: {path} ({report['duration_s']:.0f} s; load now {_load()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
