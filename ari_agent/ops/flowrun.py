"""Runs call-flow scenarios through Asterisk: one test call each (``ops/testcall.py``), judged.

Scenarios run one after another, or up to ``parallel`` at a time; each is its
own call with its own RTP port and private Stasis app. Progress goes to
``on_event`` as it happens; the verdicts come back in the files' order.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ari_agent.config import Settings
from ari_agent.ops.calls import CallsError, CallSource, call_source
from ari_agent.ops.flowjudge import ScenarioResult, judge
from ari_agent.ops.flowspec import FlowFile, Scenario, Step, target
from ari_agent.ops.testcall import CallFailed, CallResult, Phrase, TestCall


@dataclass(frozen=True)
class Job:
    file: str  # as given (or the example's name), for reports
    flows: FlowFile
    scenario: Scenario
    target: str


def jobs(files: list[tuple[str, FlowFile]], extension: str | None = None) -> list[Job]:
    return [
        Job(name, flows, scenario, target(flows, scenario, extension))
        for name, flows in files
        for scenario in flows.scenario
    ]


def phrase(step: Step) -> Phrase:
    if step.say is not None:
        return Phrase("say", step.say)
    if step.audio is not None:
        return Phrase("wav", step.audio)
    if step.dtmf is not None:
        return Phrase("dtmf", step.dtmf)
    return Phrase("wait", str(step.wait))


def example_files() -> list[Path]:
    """The call-flow tests shipped for the built-in profile (package data)."""
    folder = resources.files("ari_agent.ops") / "examples"
    return sorted(Path(str(entry)) for entry in folder.iterdir() if entry.name.endswith(".toml"))


async def run_job(
    settings: Settings,
    job: Job,
    source: CallSource | None,
    on_event: Callable[[Job, dict[str, Any]], None] | None = None,
    *,
    turn_silence: float = 1.2,
    reply_timeout: float = 20.0,
) -> ScenarioResult:
    started = time.monotonic()
    call = TestCall(
        settings,
        job.target,
        [phrase(step) for step in job.scenario.step],
        on_event=(lambda entry: on_event(job, entry)) if on_event is not None else None,
        source=source,
        turn_silence=turn_silence,
        reply_timeout=reply_timeout,
    )
    result: CallResult | None = None
    error: str | None = None
    try:
        result = await call.run()
    except CallFailed as exc:
        error = str(exc)
    except Exception as exc:  # one scenario's trouble must not stop the others
        error = f"internal error: {exc!r}"
    if result is not None and not result.answered:
        error = f"{job.target} did not answer"
    return judge(job.file, job.scenario, job.target, result, error=error, seconds=time.monotonic() - started)


async def run_all(
    settings: Settings,
    todo: list[Job],
    *,
    parallel: int = 1,
    on_event: Callable[[Job, dict[str, Any]], None] | None = None,
    on_result: Callable[[ScenarioResult], None] | None = None,
    turn_silence: float = 1.2,
    reply_timeout: float = 20.0,
) -> list[ScenarioResult]:
    try:
        source: CallSource | None = call_source(settings, transcripts=True)
    except CallsError:
        source = None  # the verdicts say what is missing
    gate = asyncio.Semaphore(max(1, parallel))

    async def one(job: Job) -> ScenarioResult:
        async with gate:
            result = await run_job(
                settings, job, source, on_event, turn_silence=turn_silence, reply_timeout=reply_timeout
            )
        if on_result is not None:
            on_result(result)
        return result

    return list(await asyncio.gather(*(one(job) for job in todo)))
