"""Interruptions through the real Asterisk: coughs, backchannels and real barge-ins, off and on.

    python -m tests.bench.bench_interruptions      (`make bench` runs it)

With the shipped offline profile, once with ``false_interruptions`` off (the
agent stops for good on 150 ms of sound) and once with it on.
Per setting, from the caller's own packet timestamps:

* coughs and backchannel words (5 of each, a call each, ~1.2 s into the
  agent's five-second reply): how many replies went on to their end (from
  the agent's record: the reply whole, not cut), the gap the caller heard in
  the agent's voice, how many of the sounds the agent answered, and what
  the recogniser made of them;
* real barge-ins (the caller asks again ~1 s into the reply): the stop,
  caller onset -> last agent packet, as in bench_calls.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tests.bench.measure import cpu_percent, cpu_seconds, summary
from tests.bench.phases import run_barge_in
from tests.integration.lab import AgentFactory, AgentProcess, Lab, LabError, metric_sum, running_lab
from tests.integration.rtp_caller import RATE, RtpCaller, cough, room_echo, speech
from tests.integration.test_calls import HOURS

RESULTS = Path(__file__).resolve().parent / "results"
QUESTION = "what time do you open"
HOLD_SILENCE_MS = 1500
BACKCHANNELS = ("mm hmm", "okay", "right", "yeah", "uh huh")
SETTINGS: list[tuple[str, str]] = [
    ("off", "false_interruptions = false"),
    ("on", ""),  # hold_after_ms 100, false_interruption_ms 150
    ("on, hold 60/200", "hold_after_ms = 60\nfalse_interruption_ms = 200"),
]
# A speakerphone in a room (100 ms of reverb: what the correlation guard lets through), at
# several levels and delays; one call each, the caller silent but for the echo.
ECHOES = [(-6, 20), (-12, 60), (-12, 200), (-20, 120), (-6, 400)]
ECHO_SETTINGS: list[tuple[str, str]] = [
    ("front end off", ""),
    ("canceller on", "echo_cancellation = true"),
    ("canceller + NS on", "echo_cancellation = true\nnoise_suppression = true"),
]
TARGETS = {"resumed": "10 of 10", "gap_p95_ms": 400.0, "barge_in_stop_p95_ms": 150.0}


@dataclass
class SoundsResult:
    gaps: list[float] = field(default_factory=list)  # longest silence in the agent's voice around a sound
    # The caller's sound over -> the agent's voice back: the part of the gap not under the caller's own sound.
    after_sound: list[float] = field(default_factory=list)
    details: list[dict[str, Any]] = field(default_factory=list)
    resumed: int = 0
    answered: int = 0  # the agent replied to the sound itself
    hung_up: int = 0  # the recogniser made words of the sound, and they were a goodbye
    samples: int = 0
    misheard: list[str] = field(default_factory=list)  # caller turns the sounds became

    def report(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "resumed": self.resumed,
            "answered_the_sound": self.answered,
            "hung_up_on": self.hung_up,
            "sounds_taken_for_words": self.misheard,
            "gap_heard_ms": summary(self.gaps),
            "back_after_the_sound_ms": summary(self.after_sound),
            "details": self.details,
        }


async def _sounds() -> list[tuple[str, np.ndarray]]:
    out = [(f"cough {ms} ms", cough(ms, seed)) for seed, ms in enumerate((150, 200, 250, 300, 350))]
    for word in BACKCHANNELS:
        out.append((word, await speech(word, speed=190)))
    return out


async def run_sound(lab: Lab, agent: AgentProcess, name: str, pcm: np.ndarray, result: SoundsResult) -> None:
    """One call: the caller asks for the hours and makes ``pcm`` ~1.2 s into the reply."""
    detail: dict[str, Any] = {"sound": name}
    async with RtpCaller.connect(lab) as call:
        await call.wait_greeting()
        said = await call.say(QUESTION)
        try:
            reply_at = await call.wait_agent_speech(timeout=20, after=said.last_sent)
        except TimeoutError:
            return
        await asyncio.sleep(1.2)
        sound = await call.say(pcm, sample_rate=RATE)
        # Longer than any hold: the agent held for the sound has not finished its reply.
        end = await call.wait_agent_silence(HOLD_SILENCE_MS, timeout=60, after=reply_at)
        result.samples += 1
        arrivals = [p.at for p in call.packets(sound.first_sent - 0.1, end)]
        if len(arrivals) > 1 and arrivals[-1] > sound.last_sent:
            gap = float(np.max(np.diff(arrivals)))
            back = next(a for a in arrivals if a > sound.last_voiced_sent) - sound.last_voiced_sent
            result.gaps.append(gap)
            result.after_sound.append(back)
            detail.update(gap_ms=round(gap * 1000), back_ms=round(back * 1000))
        detail["sound_ms"] = round(sound.duration * 1000)
        await asyncio.sleep(1.5)
        if call.ended.is_set():
            result.hung_up += 1
        await call.hangup()
    record = agent.record_for(call.number, timeout=30)
    turns = record["turns"]
    detail["turns"] = [(t["role"], t["text"][:40], t.get("interrupted")) for t in turns]
    result.details.append(detail)
    result.misheard += [t["text"] for t in turns if t["role"] == "user" and t["text"] != QUESTION]
    if any(t["role"] == "agent" and t["text"] == HOURS and not t.get("interrupted") for t in turns):
        result.resumed += 1
    # Anything the agent said after the hours reply answered the sound (nobody asked).
    replies = [i for i, t in enumerate(turns) if t["role"] == "agent" and HOURS.startswith(t["text"][:10])]
    hours = max(replies, default=len(turns))
    if any(t["role"] == "agent" for t in turns[hours + 1 :]):
        result.answered += 1
        detail["answered"] = True


async def run_sounds(lab: Lab, agent: AgentProcess) -> SoundsResult:
    result = SoundsResult()
    for name, pcm in await _sounds():
        await run_sound(lab, agent, name, pcm, result)
        lab.hangup_all()
    return result


@dataclass
class EchoResult:
    calls: int = 0
    self_interruptions: float = 0.0  # the agent's pauses for its own echo
    cut_replies: int = 0  # replies that did not reach their end
    cpu: list[float] = field(default_factory=list)  # agent CPU, % of a core, over each call

    def report(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "self_interruptions": self.self_interruptions,
            "replies_cut": self.cut_replies,
            "agent_cpu_percent_per_call": round(float(np.mean(self.cpu)), 2) if self.cpu else None,
        }


async def run_echo(lab: Lab, agent: AgentProcess, gain_db: int, delay_ms: int, result: EchoResult) -> None:
    pauses = metric_sum(agent, "ari_agent_agent_pauses_total")
    before, started = cpu_seconds(agent.pid), time.monotonic()
    async with RtpCaller.connect(lab) as call:
        call.play_continuous(room_echo(gain_db, 100), delay_ms=delay_ms)
        await call.wait_greeting()
        said = await call.say(QUESTION)
        await call.wait_agent_speech(timeout=20, after=said.last_sent)
        await call.wait_agent_silence(1500, timeout=60)
        await call.hangup()
    result.cpu.append(cpu_percent(before, cpu_seconds(agent.pid), time.monotonic() - started)["own"])
    result.calls += 1
    result.self_interruptions += metric_sum(agent, "ari_agent_agent_pauses_total") - pauses
    record = agent.record_for(call.number, timeout=30)
    if not any(t["role"] == "agent" and t["text"] == HOURS for t in record["turns"]):
        result.cut_replies += 1


def run_echoes(lab: Lab, workdir: Path, rounds: int) -> list[dict[str, Any]]:
    factory = AgentFactory(lab, workdir)
    out = []
    try:
        for label, extra in ECHO_SETTINGS:
            config = workdir / f"echo-{len(out)}.toml"
            config.write_text(f"[profiles.frontdesk]\n{extra}\n", encoding="utf-8")
            agent = factory.start({"AGENT_CONFIG": str(config), "AGENT_LOG_LEVEL": "WARNING"})
            print(f"{label}: echo calls", flush=True)
            result = EchoResult()
            per_echo = {}
            try:
                for gain_db, delay_ms in ECHOES:
                    one = EchoResult()
                    for _ in range(rounds):
                        asyncio.run(run_echo(lab, agent, gain_db, delay_ms, one))
                        lab.hangup_all()
                    per_echo[f"{gain_db} dB, {delay_ms} ms"] = one.report()
                    result.calls += one.calls
                    result.self_interruptions += one.self_interruptions
                    result.cut_replies += one.cut_replies
                    result.cpu += one.cpu
            finally:
                agent.stop()
                lab.hangup_all()
            out.append({"setting": label, **result.report(), "per_echo": per_echo})
    finally:
        factory.stop_all()
    return out


def run(lab: Lab, workdir: Path, samples: int) -> list[dict[str, Any]]:
    factory = AgentFactory(lab, workdir)
    out = []
    try:
        for label, extra in SETTINGS:
            config = workdir / f"{len(out)}.toml"
            config.write_text(f"[profiles.frontdesk]\n{extra}\n", encoding="utf-8")
            agent = factory.start({"AGENT_CONFIG": str(config), "AGENT_LOG_LEVEL": "WARNING"})
            try:
                print(f"{label}: coughs and backchannels", flush=True)
                sounds = asyncio.run(run_sounds(lab, agent))
                lab.hangup_all()
                print(f"{label}: barge-ins", flush=True)
                barge = asyncio.run(run_barge_in(lab, QUESTION, QUESTION, samples))
            finally:
                agent.stop()
                lab.hangup_all()
            out.append({"setting": label, "sounds": sounds.report(), "barge_in": barge.report()})
    finally:
        factory.stop_all()
    return out


def print_table(rows: list[dict[str, Any]]) -> None:
    print()
    print(
        f"{'setting':<14} {'resumed':>9} {'answered':>9} {'hung up':>8} {'gap p50':>8} {'gap p95':>8} "
        f"{'back p95':>9} {'stop p50':>9} {'stop p95':>9}"
    )
    for r in rows:
        s, b = r["sounds"], r["barge_in"]["barge_in_stop_ms"]
        gap, back = s["gap_heard_ms"], s["back_after_the_sound_ms"]
        print(
            f"{r['setting']:<14} {s['resumed']:>5}/{s['samples']:<3} {s['answered_the_sound']:>9} "
            f"{s['hung_up_on']:>8} "
            f"{gap.get('p50', '-'):>8} {gap.get('p95', '-'):>8} {back.get('p95', '-'):>9} "
            f"{b.get('p50', '-'):>9} {b.get('p95', '-'):>9}"
        )
    print(
        f"targets: resumed {TARGETS['resumed']}, gap p95 <= {TARGETS['gap_p95_ms']:.0f} ms, "
        f"barge-in stop p95 <= {TARGETS['barge_in_stop_p95_ms']:.0f} ms"
    )


def print_echo_table(rows: list[dict[str, Any]]) -> None:
    print()
    levels = [f"{g} dB, {d} ms" for g, d in ECHOES]
    print(f"{'room echo':<18} " + " ".join(f"{lv:>13}" for lv in levels) + f" {'cut':>4} {'cpu %/call':>10}")
    for r in rows:
        cells = " ".join(f"{r['per_echo'][lv]['self_interruptions']:>13.0f}" for lv in levels)
        print(f"{r['setting']:<18} {cells} {r['replies_cut']:>4} {r['agent_cpu_percent_per_call']:>10}")
    print("(cells: the agent's pauses for its own echo; cut: replies that did not reach their end)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10, help="real barge-ins per setting (default 10)")
    parser.add_argument(
        "--echo-rounds", type=int, default=2, help="calls per echo level and delay (default 2)"
    )
    parser.add_argument("--only", choices=("sounds", "echo"), help="run one part only")
    args = parser.parse_args(argv)
    started = time.time()
    try:
        with running_lab() as lab, tempfile.TemporaryDirectory(prefix="ari-bench-") as tmp:
            rows = run(lab, Path(tmp), args.samples) if args.only != "echo" else []
            echoes = run_echoes(lab, Path(tmp), args.echo_rounds) if args.only != "sounds" else []
    except LabError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    if rows:
        print_table(rows)
    if echoes:
        print_echo_table(echoes)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"interruptions-{time.strftime('%Y%m%d-%H%M%S', time.localtime(started))}.json"
    report = {"results": rows, "echo": echoes, "targets": TARGETS}
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"results: {path} ({time.time() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
