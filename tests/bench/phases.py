"""The benchmark's phases, each a series of calls placed with RtpCaller (see bench_calls.py).

Every figure comes from the caller's own packet timestamps: what a caller
would hear, including Asterisk's part of the path.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.bench.measure import (
    CpuSample,
    cpu_percent,
    cpu_seconds,
    rss_mb,
    summary,
    tree_cpu_seconds,
    tree_rss_mb,
)
from tests.integration.lab import Lab
from tests.integration.rtp_caller import RtpCaller

# A reply is over once the agent has been quiet this long (espeak-ng's
# pauses between sentences are shorter).
REPLY_SILENCE_MS = 700
# The agent cannot answer a turn sooner than this after the caller's last
# packet (its shortest end-of-turn silence is 100 ms): agent audio before
# then still belongs to the reply that was interrupted.
_MIN_TURN_GAP_S = 0.1


@dataclass
class TurnsResult:
    latencies: list[float] = field(default_factory=list)  # last voiced packet sent -> first agent packet
    from_last_packet: list[float] = field(default_factory=list)  # last packet sent -> first agent packet
    to_loud: list[float] = field(default_factory=list)  # last voiced packet sent -> first loud agent packet
    intervals: list[float] = field(default_factory=list)
    no_reply: int = 0
    spoke_over_question: int = 0

    def report(self) -> dict[str, Any]:
        return {
            "turn_latency_ms": summary(self.latencies),
            "turn_latency_from_last_packet_ms": summary(self.from_last_packet),
            "turn_latency_to_loud_speech_ms": summary(self.to_loud),
            "outbound_interval_ms": summary(self.intervals, ndigits=2),
            "no_reply": self.no_reply,
            "agent_spoke_during_question": self.spoke_over_question,
        }


async def run_turns(
    lab: Lab, questions: Sequence[str], n: int, *, silence_suppression: bool = False
) -> TurnsResult:
    """One call, ``n`` turns: the caller asks, waits for the whole reply, asks again.

    Turn latency runs from the caller's last packet a VAD calls speech (the
    agent's end of turn counts from there too; espeak-ng's last phoneme
    fades) to the first agent packet, which starts the agent's talkspurt.
    With ``silence_suppression`` the caller sends no packet at all while silent.
    """
    result = TurnsResult()
    async with RtpCaller.connect(lab, silence_suppression=silence_suppression) as call:
        await call.wait_agent_speech(timeout=20)
        await call.wait_agent_silence(REPLY_SILENCE_MS, timeout=60)
        for i in range(n):
            said = await call.say(questions[i % len(questions)])
            if call.packets(said.first_sent, said.last_sent):
                result.spoke_over_question += 1
            try:
                first = await call.wait_agent_audio(timeout=20, after=said.last_sent)
                loud = await call.wait_agent_speech(timeout=20, after=said.last_sent)
            except TimeoutError:
                result.no_reply += 1
                continue
            end = await call.wait_agent_silence(REPLY_SILENCE_MS, timeout=60, after=first)
            result.latencies.append(first - said.last_voiced_sent)
            result.from_last_packet.append(first - said.last_sent)
            result.to_loud.append(loud - said.last_voiced_sent)
            result.intervals += call.arrival_intervals(after=first - 0.001, before=end)
            await asyncio.sleep(random.uniform(0.2, 0.5))
    return result


@dataclass
class BargeInResult:
    stops: list[float] = field(default_factory=list)  # caller onset -> last agent packet
    not_stopped: int = 0  # the agent talked on to the end of the caller's speech
    quiet_at_onset: int = 0  # the agent's reply was already over: not a sample
    no_reply: int = 0

    def report(self) -> dict[str, Any]:
        return {
            "barge_in_stop_ms": summary(self.stops),
            "not_stopped": self.not_stopped,
            "agent_silent_at_onset": self.quiet_at_onset,
            "no_reply": self.no_reply,
        }


async def run_barge_in(lab: Lab, opener: str, interruption: str, n: int) -> BargeInResult:
    """One call: every agent reply is interrupted 0.6-1.2 s in by the caller's next question.

    The stop time is the caller's first speech packet sent to the last agent
    packet received (of any level: Asterisk forwards only what the agent
    sends) before the agent's next reply. A sample where the agent went on
    talking until the caller finished counts as not stopped (its time is
    still in the percentiles: it is what the caller heard).
    """
    result = BargeInResult()
    async with RtpCaller.connect(lab) as call:
        await call.wait_agent_speech(timeout=20)
        await call.wait_agent_silence(REPLY_SILENCE_MS, timeout=60)
        said = await call.say(opener)
        samples = 0
        while samples < n:
            try:
                await call.wait_agent_speech(timeout=20, after=said.last_sent)
            except TimeoutError:
                result.no_reply += 1
                if result.no_reply > n:
                    break
                said = await call.say(opener)
                continue
            await asyncio.sleep(random.uniform(0.6, 1.2))
            said = await call.say(interruption)
            onset = said.first_sent
            if not call.packets(onset - 0.06, onset):
                result.quiet_at_onset += 1
                if result.quiet_at_onset > n:
                    break
                continue
            heard = call.packets(onset, said.last_sent + _MIN_TURN_GAP_S)
            last = heard[-1].at if heard else onset
            if last > said.last_sent - 0.3:
                result.not_stopped += 1
            result.stops.append(last - onset)
            samples += 1
    return result


@dataclass
class LevelResult:
    level: int
    answered: int = 0
    replied: int = 0
    failures: list[str] = field(default_factory=list)
    window_s: float = 0.0
    agent_cpu: dict[str, float] = field(default_factory=dict)
    asterisk_cpu: dict[str, float] = field(default_factory=dict)
    bench_cpu: dict[str, float] = field(default_factory=dict)  # this process: the simulated callers
    latencies: list[float] = field(default_factory=list)
    intervals: list[float] = field(default_factory=list)
    send_lateness: list[float] = field(default_factory=list)  # the simulated callers' own
    # Resident memory (MiB) before the first call and while every call is held.
    agent_rss: tuple[float, float] = (0.0, 0.0)
    asterisk_rss: tuple[float, float] = (0.0, 0.0)

    def report(self) -> dict[str, Any]:
        per_call = {k: round(v / self.level, 2) for k, v in self.agent_cpu.items()}
        return {
            "calls": self.level,
            "answered": self.answered,
            "held_with_reply": self.replied,
            "failures": self.failures[:5],
            "window_s": round(self.window_s, 1),
            "agent_cpu_percent": self.agent_cpu,
            "agent_cpu_percent_per_call": per_call,
            "asterisk_cpu_percent": self.asterisk_cpu,
            "callers_cpu_percent": self.bench_cpu,
            "turn_latency_ms": summary(self.latencies),
            "outbound_interval_ms": summary(self.intervals, ndigits=2),
            "caller_send_lateness_ms": summary(self.send_lateness, ndigits=2),
            "agent_rss_mb": _rss_report(self.agent_rss, self.level),
            "asterisk_rss_mb": _rss_report(self.asterisk_rss, self.level),
        }


def _rss_report(rss: tuple[float, float], calls: int) -> dict[str, float]:
    before, held = rss
    return {"before": round(before, 1), "held": round(held, 1), "per_call": round((held - before) / calls, 2)}


class _Barrier:
    """Counts calls past a point (or failed); ``event`` is set when all are."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.count = 0
        self.event = asyncio.Event()

    def arrive(self) -> None:
        self.count += 1
        if self.count >= self.total:
            self.event.set()


def _cpu_sum(pids: Sequence[int]) -> CpuSample:
    samples = [tree_cpu_seconds(pid) for pid in pids]
    return CpuSample(sum(x.own for x in samples), sum(x.children for x in samples))


async def run_concurrency(
    lab: Lab,
    agent_pid: int | Sequence[int],
    asterisk_pid: int,
    level: int,
    question: str,
    *,
    stagger_s: float = 0.15,
    extension: str = "100",
    context: str = "ai-agent-demo",
) -> LevelResult:
    """``level`` calls at once, each: greeting, one question, the reply; all held until all are done.

    CPU is read from the moment every call is answered to the moment every
    call has had its reply, so it is the cost of ``level`` live conversations.
    """
    result = LevelResult(level)
    answered, done = _Barrier(level), _Barrier(level)
    release = asyncio.Event()

    async def one(i: int) -> None:
        passed_answer = False
        try:
            await asyncio.sleep(i * stagger_s)
            async with RtpCaller.connect(
                lab, extension=extension, context=context, answer_timeout=30
            ) as call:
                result.answered += 1
                passed_answer = True
                answered.arrive()
                greeting = await call.wait_agent_speech(timeout=30)
                await call.wait_agent_silence(REPLY_SILENCE_MS, timeout=60)
                said = await call.say(question)
                first = await call.wait_agent_audio(timeout=30, after=said.last_sent)
                await call.wait_agent_silence(REPLY_SILENCE_MS, timeout=60, after=first)
                result.replied += 1
                result.latencies.append(first - said.last_voiced_sent)
                result.intervals += call.arrival_intervals(after=greeting - 0.001)
                result.send_lateness += call.send_lateness
                done.arrive()
                await release.wait()
        except Exception as exc:  # one failed call is a figure of the run, not its end
            result.failures.append(f"{type(exc).__name__}: {exc}")
            if not passed_answer:
                answered.arrive()
            done.arrive()

    # Several agents (a pool): their CPU and memory add up.
    agents = [agent_pid] if isinstance(agent_pid, int) else list(agent_pid)
    # The agents with their recogniser workers (child processes).
    agent_rss0, asterisk_rss0 = sum(map(tree_rss_mb, agents)), rss_mb(asterisk_pid)
    tasks = [asyncio.create_task(one(i)) for i in range(level)]
    try:
        await asyncio.wait_for(answered.event.wait(), 30 + level * stagger_s)
        started = time.monotonic()
        agent0, asterisk0, bench0 = (
            _cpu_sum(agents),
            cpu_seconds(asterisk_pid),
            cpu_seconds(os.getpid()),
        )
        await asyncio.wait_for(done.event.wait(), 120)
        result.window_s = time.monotonic() - started
        agent1, asterisk1, bench1 = (
            _cpu_sum(agents),
            cpu_seconds(asterisk_pid),
            cpu_seconds(os.getpid()),
        )
        result.agent_cpu = cpu_percent(agent0, agent1, result.window_s)
        result.asterisk_cpu = cpu_percent(asterisk0, asterisk1, result.window_s)
        result.bench_cpu = cpu_percent(bench0, bench1, result.window_s)
        # Every call is still up (held until release): what they hold in memory.
        result.agent_rss = (agent_rss0, sum(map(tree_rss_mb, agents)))
        result.asterisk_rss = (asterisk_rss0, rss_mb(asterisk_pid))
    finally:
        release.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    return result


async def idle_cpu(pid: int, seconds: float = 3.0) -> dict[str, float]:
    before: CpuSample = cpu_seconds(pid)
    await asyncio.sleep(seconds)
    return cpu_percent(before, cpu_seconds(pid), seconds)
