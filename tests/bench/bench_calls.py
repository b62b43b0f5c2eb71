"""Call benchmark through the real Asterisk: what a caller hears, in percentiles.

    python -m tests.bench.bench_calls            (from the repository root, as root: `make bench`)
    python -m tests.bench.bench_calls --quick    (fewer samples, one concurrency level)

Starts the lab (tests/integration/lab.py) and the agent, then places calls
with ``RtpCaller`` (tests/integration/rtp_caller.py), a caller whose RTP is
a socket in this process, so every figure is taken from its own packet
timestamps. Two profiles:

* ``timed``: providers of known simulated latency (tests/fakes/timed.py):
  STT final 150 ms, LLM first token 300 ms, TTS first audio 150 ms. The
  agent's own overhead is the turn latency minus those and the profile's
  end-of-turn silence.
* ``offline``: the shipped default (frontdesk: pocketsphinx, scripted
  dialog, espeak-ng).

Per profile: turn latency (the caller's last speech packet sent -> the
first agent audio packet received), barge-in stop (the caller's first
speech packet -> the last agent packet), inter-packet intervals of the
agent's audio, and calls held at once with the agent's CPU per call (from
/proc/<pid>/stat). Per-stage figures come from the agent's own /metrics
histograms (``ari_agent_*``), whichever it has. A table goes to stdout,
everything to ``tests/bench/results/<time>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ari_agent.profiles import ProfileConfig
from tests.bench.measure import describe_histograms, histogram_delta, parse_histograms
from tests.bench.phases import LevelResult, idle_cpu, run_barge_in, run_concurrency, run_turns
from tests.integration.lab import AgentFactory, AgentProcess, Lab, LabError, running_lab

RESULTS = Path(__file__).resolve().parent / "results"
T = TypeVar("T")

# The simulated provider latencies (tests/fakes/timed.py defaults, written out in the profile).
STT_FINAL_MS, LLM_FIRST_TOKEN_MS, TTS_FIRST_AUDIO_MS = 150, 300, 150
END_OF_TURN_MS = ProfileConfig().end_of_turn_ms  # both profiles use the default
TURN_PREPARE_MS = ProfileConfig().turn_prepare_ms
# A sentence chunker cuts the first piece when the word after its first
# sentence arrives: here 2 words after the first token (40 ms at 20 ms a word).
SHORT_REPLY = "Good question. We open at nine in the morning."
FIRST_SENTENCE_STREAM_MS = 40
LONG_REPLY = (
    "Sure. Let me tell you all about our opening hours. We are open Monday to Friday, from nine in the "
    "morning to five in the evening, and on Saturdays from ten to two. On public holidays we are closed, "
    "but you can leave a message and we will call you back on the next working day."
)
TARGETS = {
    "own_overhead_p95_ms": 30.0,
    "barge_in_stop_p95_ms": 250.0,
    "offline_turn_p50_ms": 1000.0,
    "model_turn_p50_ms": 800.0,
    "early_start_turn_p50_ms": 650.0,
}


# Turn-taking modes compared on the timed profile: (label, profile lines, STT option lines).
QUESTION = "tell me about your opening hours"
# Each "(before)" mode is the same with the recogniser finalized only after the end of turn and
# the early start at the pause, as before finals by segment; "(prepared at the pause)" finalizes
# the recogniser and asks the turn model only at turn_pause_ms, as before turn_prepare_ms:
# today's figures beside the new one.
MODEL = 'end_of_turn = "model"'
AT_PAUSE = "turn_prepare_ms = 200"
INTERIM = f'interim = "{QUESTION}"\ninterim_after_ms = 300'
TURN_MODES: tuple[tuple[str, str, str], ...] = (
    ("silence (before)", "", "segments = false"),
    ("silence (prepared at the pause)", AT_PAUSE, ""),
    ("silence", "", ""),
    ("model (before)", MODEL, "segments = false"),
    ("model (prepared at the pause)", f"{MODEL}\n{AT_PAUSE}", ""),
    ("model", MODEL, ""),
    (
        "model + early (before)",
        f"{MODEL}\nearly_start = true\nearly_start_ms = 200",
        f"{INTERIM}\nsegments = false",
    ),
    ("model + early start", f"{MODEL}\nearly_start = true", INTERIM),
)


def timed_config(reply: str, profile_extra: str = "", stt_extra: str = "") -> str:
    """A config file whose frontdesk profile (the one the lab's extension 100 names) is timed."""
    stt, llm, tts = (f"tests.fakes.timed:Timed{s}" for s in ("STT", "LLM", "TTS"))
    return f"""
[profiles.frontdesk]
greeting = "Hello, this is the benchmark."
stt = ["{stt}"]
llm = ["{llm}"]
tts = ["{tts}"]
end_of_turn_ms = {END_OF_TURN_MS}
{profile_extra}

[profiles.frontdesk.options."{stt}"]
text = "{QUESTION}"
final_ms = {STT_FINAL_MS}
{stt_extra}

[profiles.frontdesk.options."{llm}"]
reply = {json.dumps(reply)}
first_token_ms = {LLM_FIRST_TOKEN_MS}
word_ms = 20

[profiles.frontdesk.options."{tts}"]
first_audio_ms = {TTS_FIRST_AUDIO_MS}
"""


@dataclass(frozen=True)
class Plan:
    samples: int
    levels: tuple[int, ...]
    profiles: tuple[str, ...]
    modes: tuple[str, ...] = ()  # turn-taking modes to run (labels); empty: all


class Bench:
    def __init__(self, lab: Lab, workdir: Path, plan: Plan) -> None:
        self.lab = lab
        self.workdir = workdir
        self.plan = plan
        self.factory = AgentFactory(lab, workdir)
        self.results: dict[str, Any] = {}

    @contextlib.contextmanager
    def agent(self, config: str | None) -> Iterator[AgentProcess]:
        env = {"AGENT_LOG_LEVEL": "WARNING"}
        if config is not None:
            path = self.workdir / f"bench-{len(self.factory.started) + 1}.toml"
            path.write_text(config, encoding="utf-8")
            env["AGENT_CONFIG"] = str(path)
        agent = self.factory.start(env)
        try:
            yield agent
        finally:
            agent.stop()
            self.lab.hangup_all()

    def measured(self, agent: AgentProcess, name: str, coro: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run a phase; keep the agent's histograms observed meanwhile under ``name``."""
        before = self._histograms(agent)
        started = time.monotonic()
        print(f"  {name} ...", end="", flush=True)
        result = asyncio.run(coro())
        print(f" {time.monotonic() - started:.0f} s", flush=True)
        self._agent_metrics[name] = describe_histograms(histogram_delta(before, self._histograms(agent)))
        return result

    @staticmethod
    def _histograms(agent: AgentProcess) -> dict[str, Any]:
        try:
            status, text = agent.http_get("/metrics")
        except OSError:
            return {}
        return parse_histograms(text) if status == 200 else {}

    def run_profile(self, profile: str) -> dict[str, Any]:
        out: dict[str, Any] = {"agent_metrics": {}}
        self._agent_metrics: dict[str, Any] = out["agent_metrics"]
        n = self.plan.samples
        short_config: str | None = None
        long_config: str | None = None
        if profile == "timed":
            questions = ["tell me about your opening hours"]
            barge_opener = barge_words = "tell me about your opening hours"
            short_config, long_config = timed_config(SHORT_REPLY), timed_config(LONG_REPLY)
        else:
            questions = ["where are you located", "what is your address", "where is your office"]
            # The hours reply is the longest; each interruption asks for it again.
            barge_opener = barge_words = "what time do you open"
        with self.agent(short_config) as agent:
            out["agent_idle_cpu_percent"] = asyncio.run(idle_cpu(agent.pid))
            turns = self.measured(agent, "turns", lambda: run_turns(self.lab, questions, n))
            out["turns"] = turns.report()
            # The same turns from a caller whose leg sends nothing while silent (DTX, no
            # transmit_silence): before the receive clock, such a caller got no reply at all.
            silent = self.measured(
                agent,
                "turns_silent_caller",
                lambda: run_turns(self.lab, questions, n, silence_suppression=True),
            )
            out["turns_silent_caller"] = silent.report()
            if profile == "timed":
                # The timed recogniser finalizes by segment: its final is asked for after
                # turn_prepare_ms of silence, so only what outlasts the silence wait is on the path.
                stt_on_path = max(0, STT_FINAL_MS - (END_OF_TURN_MS - TURN_PREPARE_MS))
                known = END_OF_TURN_MS + stt_on_path + LLM_FIRST_TOKEN_MS + TTS_FIRST_AUDIO_MS
                out["known_latency_ms"] = known
                out["first_sentence_stream_ms"] = FIRST_SENTENCE_STREAM_MS
                out["own_overhead_ms"] = {
                    k: round(v - known, 1) if k not in ("n",) else v
                    for k, v in out["turns"]["turn_latency_ms"].items()
                }
            out["concurrency"] = []
            assert self.lab.agent.proc is not None
            asterisk_pid = self.lab.agent.proc.pid
            for level in self.plan.levels:
                res = self.measured(
                    agent, f"calls_{level}", self._concurrency(agent.pid, asterisk_pid, level, questions[0])
                )
                out["concurrency"].append(res.report())
                self.lab.hangup_all()
                time.sleep(1.0)
        # A fresh agent: with the long reply for the timed profile.
        with self.agent(long_config) as agent:
            barge = self.measured(
                agent, "barge_in", lambda: run_barge_in(self.lab, barge_opener, barge_words, n)
            )
            out["barge_in"] = barge.report()
        return out

    def _concurrency(
        self, agent_pid: int, asterisk_pid: int, level: int, question: str
    ) -> Callable[[], Coroutine[Any, Any, LevelResult]]:
        return lambda: run_concurrency(self.lab, agent_pid, asterisk_pid, level, question)

    def run(self) -> dict[str, Any]:
        for profile in self.plan.profiles:
            if profile == "modes":
                continue
            print(f"profile {profile}:", flush=True)
            self.results[profile] = self.run_profile(profile)
        if "modes" in self.plan.profiles:
            print("turn-taking modes (timed providers):", flush=True)
            self.results["turn_modes"] = self.run_turn_modes()
        return self.results

    def run_turn_modes(self) -> list[dict[str, Any]]:
        """Turn latency per end-of-turn mode, in one run; agent CPU per call with the model off and on."""
        out = []
        level = min(self.plan.levels) if self.plan.levels else 5
        for label, profile_extra, stt_extra in TURN_MODES:
            if self.plan.modes and label not in self.plan.modes:
                continue
            self._agent_metrics = {}
            with self.agent(timed_config(SHORT_REPLY, profile_extra, stt_extra)) as agent:
                turns = self.measured(
                    agent, f"{label}: turns", lambda: run_turns(self.lab, [QUESTION], self.plan.samples)
                )
                early = _counter(agent, "ari_agent_early_starts_total")
                ends = _counter(agent, "ari_agent_turn_ends_total")
                assert self.lab.agent.proc is not None
                calls = self.measured(
                    agent,
                    f"{label}: {level} calls",
                    self._concurrency(agent.pid, self.lab.agent.proc.pid, level, QUESTION),
                )
                self.lab.hangup_all()
            out.append(
                {
                    "mode": label,
                    "turn_latency_ms": turns.report()["turn_latency_ms"],
                    "no_reply": turns.no_reply,
                    "turn_ends": ends,
                    "early_starts": early,
                    "agent_cpu_percent_per_call": calls.report()["agent_cpu_percent_per_call"],
                    "calls": level,
                    "held_with_reply": calls.replied,
                    "agent_metrics": self._agent_metrics,
                }
            )
        return out


def _counter(agent: AgentProcess, name: str) -> dict[str, float]:
    """A counter's samples by their labels, from the agent's /metrics."""
    status, text = agent.http_get("/metrics")
    found: dict[str, float] = {}
    for line in text.splitlines() if status == 200 else []:
        if line.startswith(name + "{"):
            labels, value = line[len(name) :].rsplit(" ", 1)
            found[labels] = float(value)
    return found


def targets(results: dict[str, Any]) -> dict[str, Any]:
    checks: dict[str, Any] = {}
    timed = results.get("timed")
    if timed:
        checks["own_overhead_p95_ms"] = timed["own_overhead_ms"].get("p95")
        checks["timed_barge_in_stop_p95_ms"] = timed["barge_in"]["barge_in_stop_ms"].get("p95")
    offline = results.get("offline")
    if offline:
        checks["offline_turn_p50_ms"] = offline["turns"]["turn_latency_ms"].get("p50")
        checks["offline_barge_in_stop_p95_ms"] = offline["barge_in"]["barge_in_stop_ms"].get("p95")
    for m in results.get("turn_modes") or []:
        if m["mode"] == "model":
            checks["model_turn_p50_ms"] = m["turn_latency_ms"].get("p50")
        elif m["mode"] == "model + early start":
            checks["early_start_turn_p50_ms"] = m["turn_latency_ms"].get("p50")
    limits = {
        "model_turn_p50_ms": TARGETS["model_turn_p50_ms"],
        "early_start_turn_p50_ms": TARGETS["early_start_turn_p50_ms"],
        "own_overhead_p95_ms": TARGETS["own_overhead_p95_ms"],
        "timed_barge_in_stop_p95_ms": TARGETS["barge_in_stop_p95_ms"],
        "offline_barge_in_stop_p95_ms": TARGETS["barge_in_stop_p95_ms"],
        "offline_turn_p50_ms": TARGETS["offline_turn_p50_ms"],
    }
    return {
        name: {"value": value, "target": limits[name], "met": value is not None and value <= limits[name]}
        for name, value in checks.items()
    }


def _fmt(stats: dict[str, Any]) -> str:
    if not stats.get("n"):
        return "no samples"
    return f"p50 {stats['p50']:>7} p95 {stats['p95']:>7} max {stats['max']:>7}  (n={stats['n']})"


def print_table(results: dict[str, Any], checks: dict[str, Any]) -> None:
    print()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"(machine load average now: {load} on {os.cpu_count()} CPUs; other work on it skews the figures)")
    print(f"{'profile':8} {'measure':42} figures (ms)")
    print("-" * 100)
    for profile, r in results.items():
        if profile == "turn_modes":
            continue
        rows = [
            ("turn latency (caller end -> agent audio)", r["turns"]["turn_latency_ms"]),
            ("  same, from the caller's last packet", r["turns"]["turn_latency_from_last_packet_ms"]),
            ("  same, to the first loud agent packet", r["turns"]["turn_latency_to_loud_speech_ms"]),
        ]
        silent = r.get("turns_silent_caller")
        if silent:
            rows.append(("turn latency, caller silent on the wire", silent["turn_latency_ms"]))
        if "own_overhead_ms" in r:
            rows.append((f"own overhead (minus {r['known_latency_ms']} ms known)", r["own_overhead_ms"]))
        rows.append(("barge-in stop (onset -> last agent pkt)", r["barge_in"]["barge_in_stop_ms"]))
        rows.append(("agent inter-packet interval", r["turns"]["outbound_interval_ms"]))
        for label, stats in rows:
            print(f"{profile:8} {label:42} {_fmt(stats)}")
        if silent:
            label = "  no reply: streaming / silent caller"
            print(f"{profile:8} {label:42} {r['turns']['no_reply']} / {silent['no_reply']}")
        b = r["barge_in"]
        label = "  barge-in: not stopped / agent silent"
        print(f"{profile:8} {label:42} {b['not_stopped']} / {b['agent_silent_at_onset']}")
        for phase, hists in r["agent_metrics"].items():
            for name, h in hists.items():
                label = f"  agent {name.removeprefix('ari_agent_')} [{phase}]"
                # Quantiles of a histogram are bucket estimates; the mean is exact.
                figures = f"mean {h['mean']:>6} p50~{h['p50']:>7} p95~{h['p95']:>6}  (n={h['count']:.0f})"
                print(f"{profile:8} {label[:42]:42} {figures}")
        for c in r["concurrency"]:
            cpu = c["agent_cpu_percent_per_call"]
            label = f"calls held: {c['calls']}"
            print(
                f"{profile:8} {label:42} {c['held_with_reply']}/{c['calls']} with reply; "
                f"agent CPU {c['agent_cpu_percent'].get('with_children', 0):.1f}% "
                f"= {cpu.get('with_children', 0):.2f}%/call (own {cpu.get('own', 0):.2f}); "
                f"Asterisk {c['asterisk_cpu_percent'].get('own', 0):.0f}%, "
                f"callers {c['callers_cpu_percent'].get('own', 0):.0f}%; "
                f"turn p50 {c['turn_latency_ms'].get('p50')} p95 {c['turn_latency_ms'].get('p95')}; "
                f"interval p99 {c['outbound_interval_ms'].get('p99')} "
                f"(caller's own send lateness p99 {c['caller_send_lateness_ms'].get('p99')})"
            )
    modes = results.get("turn_modes") or []
    if modes:
        print("-" * 100)
        print("turn-taking modes, timed providers (STT final 150, LLM 300, TTS 150 ms), one run:")
        for m in modes:
            cpu = m["agent_cpu_percent_per_call"]
            early = m["early_starts"]
            used = sum(v for k, v in early.items() if 'outcome="used"' in k)
            wasted = sum(v for k, v in early.items() if 'outcome="wasted"' in k)
            print(
                f"  {m['mode']:22} turn latency {_fmt(m['turn_latency_ms'])}; no reply {m['no_reply']}; "
                f"agent CPU {cpu.get('with_children', 0):.2f}%/call "
                f"({m['held_with_reply']}/{m['calls']} calls); "
                f"early starts used {used:.0f} wasted {wasted:.0f}; ends {m['turn_ends']}"
            )
    print("-" * 100)
    for name, check in checks.items():
        verdict = "met" if check["met"] else "NOT met"
        print(f"target {name}: {check['value']} (target <= {check['target']}): {verdict}")


def parse_args(argv: list[str] | None) -> Plan:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--samples", type=int, default=20, help="turns and barge-ins per profile (default 20)"
    )
    parser.add_argument("--levels", default="10,20", help="concurrent calls to hold, comma separated")
    parser.add_argument(
        "--profiles", default="timed,offline,modes", help="timed, offline and/or modes (turn-taking modes)"
    )
    parser.add_argument(
        "--modes", default="", help="only these turn-taking modes, comma separated labels (default all)"
    )
    parser.add_argument("--quick", action="store_true", help="5 samples, one level of 5 calls")
    args = parser.parse_args(argv)
    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    unknown_modes = set(modes) - {label for label, _, _ in TURN_MODES}
    if unknown_modes:
        parser.error(f"unknown modes {sorted(unknown_modes)}; see TURN_MODES")
    if args.quick:
        return Plan(5, (5,), tuple(args.profiles.split(",")), modes)
    levels = tuple(int(x) for x in args.levels.split(",") if x.strip())
    profiles = tuple(p.strip() for p in args.profiles.split(",") if p.strip())
    unknown = set(profiles) - {"timed", "offline", "modes"}
    if unknown:
        parser.error(f"unknown profiles {sorted(unknown)}; use timed, offline and/or modes")
    return Plan(args.samples, levels, profiles, modes)


def main(argv: list[str] | None = None) -> int:
    plan = parse_args(argv)
    started = time.time()
    try:
        with running_lab() as lab, tempfile.TemporaryDirectory(prefix="ari-bench-") as tmp:
            print(f"lab up in {lab.startup_seconds:.1f} s (slot {lab.ports.slot})", flush=True)
            results = Bench(lab, Path(tmp), plan).run()
    except LabError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    checks = targets(results)
    print_table(results, checks)
    report = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "duration_s": round(time.time() - started, 1),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load": os.getloadavg()},
        "plan": dataclasses.asdict(plan),
        "simulated_latency_ms": {
            "end_of_turn": END_OF_TURN_MS,
            "stt_final": STT_FINAL_MS,
            "llm_first_token": LLM_FIRST_TOKEN_MS,
            "tts_first_audio": TTS_FIRST_AUDIO_MS,
        },
        "results": results,
        "targets": checks,
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{time.strftime('%Y%m%d-%H%M%S', time.localtime(started))}.json"
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"results: {path} ({report['duration_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
