"""Faults and floods through the real Asterisk, in percentiles, each beside the same figure without them.

    python -m tests.bench.bench_faults                  (`make bench` runs it)
    python -m tests.bench.bench_faults --samples 3      (a quick look)
    python -m tests.bench.bench_faults --only flood     (or dead-air)

Two parts, every figure from the caller's own packet timestamps (``RtpCaller``,
tests/integration/rtp_caller.py: the caller's recording, packet by packet):

* **dead air** under provider faults (issue 12, item 5): per fault, one agent
  whose profile chains a cloud provider (a wire-level fake from tests/fakes/)
  in front of the offline one, and calls that ask two questions. On every
  other call the fault is armed just before the second question: the STT
  socket dropped half a second into it, the LLM answering 429 then 503, or
  the TTS answering 200 with no audio (twice: both tries). Dead air is the
  caller's last voiced packet of that question to the first loud agent packet
  back; the calls without the fault, placed alternately on the same agent,
  give the figure beside it.
* **talkers under a flood** (issue 12, item 6): with the call limit at
  ``LIMIT``, one caller asks question after question (turn latency) while
  another interrupts every reply (barge-in stop: caller onset to the last
  agent packet), once alone and once while new SIP calls arrive at 3x the
  limit every 5 s for as long as they talk (the places left are taken, every
  other new call goes back BUSY).

A table goes to stdout, everything to ``tests/bench/results/faults-<time>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.bench.measure import summary
from tests.bench.phases import REPLY_SILENCE_MS, BargeInResult, TurnsResult, run_barge_in, run_turns
from tests.fakes.deepgram_server import FakeDeepgram
from tests.fakes.openai_server import ChatReply, FakeOpenAI, Fault, SpeechReply
from tests.fakes.threaded import serve_in_thread
from tests.integration.lab import AgentFactory, AgentProcess, Lab, LabError, metric, running_lab
from tests.integration.rtp_caller import RtpCaller

RESULTS = Path(__file__).resolve().parent / "results"
KEY = "sk-bench-0123456789abcdef"
Q1, Q2 = "what time do you open", "where are you located"
HOURS = "We are open from nine to five."
ADDRESS = "We are at 12 Harbour Street."
# Half a second of the second question (slin16: 32 000 bytes a second) reaches the recogniser
# before its socket drops: mid-utterance, as a real reset would catch it.
STT_RESET_INTO_QUESTION_BYTES = 16_000
LIMIT = 4
FLOOD_FACTOR, FLOOD_WINDOW_S = 3, 5.0
FLOOD_QUESTIONS = ["where are you located", "what is your address", "where is your office"]
BARGE_QUESTION = "what time do you open"  # the offline profile's longest reply


def _profile(name: str, *, stt: str, llm: str, tts: str, options: str) -> str:
    """Two intents the offline recogniser and the scripted dialog know, and the chains given."""
    return f"""
[profiles.{name}]
greeting = "Hello, how can I help?"
stt = {stt}
llm = {llm}
tts = {tts}
filler_after_ms = 0
[[profiles.{name}.intents]]
name = "hours"
examples = ["{Q1}"]
reply = "{HOURS}"
[[profiles.{name}.intents]]
name = "address"
examples = ["{Q2}"]
reply = "{ADDRESS}"
{options}
"""


@dataclass
class FaultCase:
    """One provider fault: the profile that chains around it and how to arm it for the next question."""

    name: str
    label: str
    profile_name: str  # the lab's extension in context lab-profile
    profile: str
    env: dict[str, str]
    before_q1: Callable[[], None]  # every call: what the fake answers the first question
    before_q2: Callable[[bool], None]  # armed (True) or not: what it does with the second
    fired: Callable[[], bool]  # after an armed call: did the fault happen


@contextmanager
def stt_reset_case() -> Iterator[FaultCase]:
    deepgram = FakeDeepgram([Q1], resets=0)
    resets_before = 0

    def resets() -> int:
        return sum(listen.reset for listen in deepgram.listens)

    def before_q1() -> None:
        deepgram.transcripts = [Q1]

    def before_q2(armed: bool) -> None:
        deepgram.transcripts = [Q2]
        if armed:
            nonlocal resets_before
            resets_before = resets()
            # The agent streams everything the caller sends, silence too: count from now.
            deepgram.reset_after_bytes = deepgram.listens[-1].audio_bytes + STT_RESET_INTO_QUESTION_BYTES
            deepgram.resets_left = 1

    with serve_in_thread(deepgram.app) as url:
        options = f'[profiles.bstt.options.deepgram]\nurl = "{url.replace("http://", "ws://")}"'
        yield FaultCase(
            "stt_reset",
            "STT socket reset",
            "bstt",
            _profile(
                "bstt", stt='["deepgram", "local"]', llm='["scripted"]', tts='["local"]', options=options
            ),
            {"DEEPGRAM_API_KEY": "dg-bench-key"},
            before_q1,
            before_q2,
            lambda: resets() > resets_before,
        )


@contextmanager
def llm_429_503_case() -> Iterator[FaultCase]:
    fake = FakeOpenAI(api_key=KEY)

    def before_q1() -> None:
        fake.chat_replies.clear()
        fake.chat_replies.append(ChatReply(text=HOURS))

    def before_q2(armed: bool) -> None:
        fake.chat_replies.clear()
        if armed:  # both tries fail, retryably: the chain's next LLM answers
            fake.chat_replies.extend([ChatReply(fault=Fault(status=429)), ChatReply(fault=Fault(status=503))])
        else:
            fake.chat_replies.append(ChatReply(text=ADDRESS))

    with serve_in_thread(fake.app) as url:
        options = f'[profiles.bllm.options.openai]\nbase_url = "{url}/v1"'
        yield FaultCase(
            "llm_429_503",
            "LLM 429 then 503",
            "bllm",
            _profile("bllm", stt='["local"]', llm='["openai", "scripted"]', tts='["local"]', options=options),
            {"OPENAI_API_KEY": KEY},
            before_q1,
            before_q2,
            lambda: not fake.chat_replies,
        )


@contextmanager
def tts_empty_case() -> Iterator[FaultCase]:
    fake = FakeOpenAI(api_key=KEY)

    def before_q1() -> None:
        fake.speech_replies.clear()

    def before_q2(armed: bool) -> None:
        fake.speech_replies.clear()
        if armed:  # both tries of the reply come back 200 without audio: the next TTS speaks
            fake.speech_replies.extend([SpeechReply(empty=True), SpeechReply(empty=True)])

    with serve_in_thread(fake.app) as url:
        options = f'[profiles.btts.options.openai]\nbase_url = "{url}/v1"'
        yield FaultCase(
            "tts_empty",
            "TTS 200 without audio",
            "btts",
            _profile("btts", stt='["local"]', llm='["scripted"]', tts='["openai", "local"]', options=options),
            {"OPENAI_API_KEY": KEY},
            before_q1,
            before_q2,
            lambda: not fake.speech_replies,
        )


CASES = {"stt": stt_reset_case, "llm": llm_429_503_case, "tts": tts_empty_case}


@dataclass
class DeadAir:
    first: list[float] = field(default_factory=list)  # the first question (never faulted)
    second: list[float] = field(default_factory=list)  # the second question (faulted when armed)
    calls: int = 0
    no_reply: int = 0
    answered_right: int = 0  # the second reply was the address
    fired: int = 0  # armed calls where the fault really happened

    def report(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "first_question_dead_air_ms": summary(self.first),
            "second_question_dead_air_ms": summary(self.second),
            "no_reply": self.no_reply,
            "answered_right": self.answered_right,
            "fault_fired": self.fired,
        }


async def _one_call(lab: Lab, case: FaultCase, armed: bool, out: DeadAir) -> str:
    async with RtpCaller.connect(lab, extension=case.profile_name, context="lab-profile") as call:
        await call.wait_greeting()
        case.before_q1()
        said = await call.say(Q1)
        try:
            heard = await call.wait_agent_speech(timeout=20, after=said.last_sent)
        except TimeoutError:
            out.no_reply += 1
            return call.number
        out.first.append(heard - said.last_voiced_sent)
        await call.wait_agent_silence(REPLY_SILENCE_MS, timeout=30, after=heard)
        case.before_q2(armed)
        said = await call.say(Q2)
        try:
            heard = await call.wait_agent_speech(timeout=30, after=said.last_sent)
        except TimeoutError:
            out.no_reply += 1
            return call.number
        out.second.append(heard - said.last_voiced_sent)
        await call.wait_agent_silence(REPLY_SILENCE_MS, timeout=30, after=heard)
        await call.hangup()
    return call.number


def run_dead_air(lab: Lab, workdir: Path, faults: Sequence[str], samples: int) -> list[dict[str, Any]]:
    out = []
    factory = AgentFactory(lab, workdir)
    try:
        for key in faults:
            with ExitStack() as stack:
                case = stack.enter_context(CASES[key]())
                config = workdir / f"faults-{case.name}.toml"
                config.write_text(case.profile, encoding="utf-8")
                agent = factory.start({"AGENT_CONFIG": str(config), "AGENT_LOG_LEVEL": "WARNING", **case.env})
                stack.callback(agent.stop)
                results = {False: DeadAir(), True: DeadAir()}
                print(f"dead air, {case.label}: {samples} calls with and {samples} without", flush=True)
                for _ in range(samples):
                    for armed in (False, True):  # alternately: drift in the machine's load hits both
                        result = results[armed]
                        result.calls += 1
                        number = asyncio.run(_one_call(lab, case, armed, result))
                        lab.hangup_all()
                        if armed and case.fired():
                            result.fired += 1
                        record = agent.record_for(number, timeout=15)
                        lines = [t["text"] for t in record["turns"] if t["role"] == "agent"]
                        if ADDRESS in lines[2:]:
                            result.answered_right += 1
                out.append(
                    {
                        "fault": case.name,
                        "label": case.label,
                        "without": results[False].report(),
                        "with": results[True].report(),
                    }
                )
    finally:
        factory.stop_all()
    return out


# ---------------------------------------------------------------- talkers under a flood


@dataclass
class FloodTally:
    placed: int = 0
    busy: float = 0.0
    waves: int = 0


async def _flood(lab: Lab, stop: asyncio.Event, tally: FloodTally) -> None:
    """3x the limit in every 5 s until ``stop``: silent SIP callers that stay if admitted."""
    per_call = FLOOD_WINDOW_S / (FLOOD_FACTOR * LIMIT)
    while not stop.is_set():
        tally.waves += 1
        for _ in range(FLOOD_FACTOR * LIMIT):
            if stop.is_set():
                return
            # Writes a call file (well under a millisecond): the talkers' 20 ms clocks don't notice.
            lab.place_call([], via="sip", listen_first=False, tail=25, max_duration=40)
            tally.placed += 1
            try:
                await asyncio.wait_for(stop.wait(), per_call)
            except TimeoutError:
                pass


async def _talkers(lab: Lab, samples: int, flood: FloodTally | None) -> tuple[TurnsResult, BargeInResult]:
    stop = asyncio.Event()
    task = asyncio.create_task(_flood(lab, stop, flood)) if flood is not None else None
    try:
        turns, barge = await asyncio.gather(
            run_turns(lab, FLOOD_QUESTIONS, samples),
            run_barge_in(lab, BARGE_QUESTION, BARGE_QUESTION, samples),
        )
    finally:
        stop.set()
        if task is not None:
            await task
    return turns, barge


def _wait_idle(agent: AgentProcess, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while agent.http_get("/calls")[1].count('"call_id"') and time.monotonic() < deadline:
        time.sleep(0.5)


def run_flood(lab: Lab, workdir: Path, samples: int) -> dict[str, Any]:
    factory = AgentFactory(lab, workdir)
    out: dict[str, Any] = {
        "limit": LIMIT,
        "flood_rate": f"{FLOOD_FACTOR * LIMIT} calls every {FLOOD_WINDOW_S:g} s",
    }
    try:
        agent = factory.start({"AGENT_CALLS__MAX_CONCURRENT": str(LIMIT), "AGENT_LOG_LEVEL": "WARNING"})
        for phase in ("alone", "flood"):
            print(f"talkers, {phase}: {samples} turns and {samples} barge-ins", flush=True)
            tally = FloodTally() if phase == "flood" else None
            busy0 = metric(agent, "ari_agent_calls_total", outcome="busy")
            started = time.monotonic()
            turns, barge = asyncio.run(_talkers(lab, samples, tally))
            report: dict[str, Any] = {
                "seconds": round(time.monotonic() - started, 1),
                "turns": turns.report(),
                "barge_in": barge.report(),
            }
            if tally is not None:
                tally.busy = metric(agent, "ari_agent_calls_total", outcome="busy") - busy0
                report["flood_calls"] = {"placed": tally.placed, "busy": tally.busy, "waves": tally.waves}
            out[phase] = report
            lab.hangup_all()
            _wait_idle(agent)
    finally:
        factory.stop_all()
    return out


# ---------------------------------------------------------------- the table


def _pct(stats: dict[str, Any], key: str) -> str:
    return f"{stats[key]:.0f}" if stats.get("n") else "-"


def print_table(dead_air: list[dict[str, Any]], flood: dict[str, Any] | None) -> None:
    print()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"(machine load average now: {load} on {os.cpu_count()} CPUs; other work on it skews the figures)")
    if dead_air:
        print("dead air at the caller, ms (last voiced packet of the question -> first loud agent packet)")
        print(
            f"{'fault':24} {'question':>8} {'without p50':>12} {'p95':>6} {'with p50':>9} {'p95':>6} "
            f"{'max':>6}  calls  fired  right  no reply"
        )
        for row in dead_air:
            w, f = row["without"], row["with"]
            for q, key in (("1st", "first_question_dead_air_ms"), ("2nd*", "second_question_dead_air_ms")):
                a, b = w[key], f[key]
                tail = (
                    f"  {w['calls']:>2}/{f['calls']:<2} {f['fault_fired']:>5}  "
                    f"{w['answered_right']}/{f['answered_right']:<3} {w['no_reply']}/{f['no_reply']}"
                    if q != "1st"
                    else ""
                )
                print(
                    f"{row['label']:24} {q:>8} {_pct(a, 'p50'):>12} {_pct(a, 'p95'):>6} "
                    f"{_pct(b, 'p50'):>9} {_pct(b, 'p95'):>6} {_pct(b, 'max'):>6}{tail}"
                )
        print("(* the faulted question; columns calls, right, no reply: without/with)")
    if flood:
        print(
            f"talkers with the limit at {flood['limit']}, alone and under a flood "
            f"of {flood['flood_rate']}, ms"
        )
        print(
            f"{'figure':36} {'alone p50':>10} {'p95':>6} {'flood p50':>10} {'p95':>6} {'n alone/flood':>14}"
        )
        alone, flooded = flood.get("alone"), flood.get("flood")
        if alone and flooded:
            rows = (
                ("turn latency", alone["turns"]["turn_latency_ms"], flooded["turns"]["turn_latency_ms"]),
                (
                    "barge-in stop (onset -> last pkt)",
                    alone["barge_in"]["barge_in_stop_ms"],
                    flooded["barge_in"]["barge_in_stop_ms"],
                ),
                (
                    "agent inter-packet interval",
                    alone["turns"]["outbound_interval_ms"],
                    flooded["turns"]["outbound_interval_ms"],
                ),
            )
            for label, a, b in rows:
                print(
                    f"{label:36} {_pct(a, 'p50'):>10} {_pct(a, 'p95'):>6} {_pct(b, 'p50'):>10} "
                    f"{_pct(b, 'p95'):>6} {a.get('n', 0):>7}/{b.get('n', 0):<6}"
                )
            for phase, r in (("alone", alone), ("flood", flooded)):
                print(
                    f"  {phase}: no reply {r['turns']['no_reply']}, barge-ins not stopped "
                    f"{r['barge_in']['not_stopped']}, no reply to a barge-in {r['barge_in']['no_reply']}"
                )
            f = flooded.get("flood_calls", {})
            print(
                f"  flood: {f.get('placed')} calls placed in {f.get('waves')} waves, {f.get('busy'):.0f} BUSY"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--samples", type=int, default=10, help="calls per fault and setting, turns (default 10)"
    )
    parser.add_argument("--only", choices=("dead-air", "flood"), help="run one part only")
    parser.add_argument(
        "--faults", default="stt,llm,tts", help="which faults, comma separated: stt, llm, tts"
    )
    args = parser.parse_args(argv)
    faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    unknown = set(faults) - set(CASES)
    if unknown:
        parser.error(f"unknown faults {sorted(unknown)}; use {', '.join(CASES)}")
    started = time.time()
    dead_air: list[dict[str, Any]] = []
    flood: dict[str, Any] | None = None
    try:
        with running_lab() as lab, tempfile.TemporaryDirectory(prefix="ari-bench-") as tmp:
            print(f"lab up in {lab.startup_seconds:.1f} s (slot {lab.ports.slot})", flush=True)
            if args.only != "flood":
                dead_air = run_dead_air(lab, Path(tmp), faults, args.samples)
            if args.only != "dead-air":
                flood = run_flood(lab, Path(tmp), args.samples)
    except LabError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    print_table(dead_air, flood)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"faults-{time.strftime('%Y%m%d-%H%M%S', time.localtime(started))}.json"
    report = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "duration_s": round(time.time() - started, 1),
        "machine": {"cpus": os.cpu_count(), "load": os.getloadavg()},
        "samples": args.samples,
        "dead_air": dead_air,
        "talkers_under_flood": flood,
    }
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"results: {path} ({report['duration_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
