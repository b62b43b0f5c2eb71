"""Reports of call-flow tests: lines for a terminal or a CI log, and JUnit XML.

Kept apart from the runner: both take :class:`ScenarioResult` values only.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from ari_agent.ops.flowjudge import ScenarioResult, StepResult
from ari_agent.ops.output import Out, clean


def progress(out: Out, scenario: str, entry: dict[str, Any]) -> None:
    """One live line per thing the call does (from ``TestCall``'s events)."""
    kind = entry["event"]
    if kind == "you":
        text = f"says {entry['text']!r}"
    elif kind == "dtmf":
        text = f"presses {entry['digits']}"
    elif kind == "wait":
        text = f"waits {entry['seconds']:g} s"
    elif kind == "agent_speaking":
        text = f"agent speaking (after {entry['latency']:.2f} s)"
    elif kind == "no_reply":
        text = out.paint(f"no reply within {entry['waited']:g} s", "warn")
    elif kind == "hangup":
        text = "the agent's side hung up" if entry["by"] == "agent" else "hanging up"
    elif kind == "dialing":
        text = f"dialling {entry['target']}"
    else:
        return  # answered, agent_done: nothing a reader needs
    out.line(out.paint(f"  [{clean(scenario)}] {entry['t']:6.2f}s {clean(text)}", "dim"))


def _step_line(out: Out, step: StepResult) -> list[str]:
    mark = out.paint("PASS", "ok") if step.passed else out.paint("FAIL", "fail")
    lines = [f"  {mark} step {step.number}: {clean(step.label)}"]
    if step.understood:
        lines.append(f"         agent heard: {clean(step.understood)!r}")
    if step.heard is not None and step.ran:
        reply = clean(step.heard) if step.heard else "(nothing)"
        after = f" (after {step.latency_ms / 1000:.2f} s)" if step.latency_ms is not None else ""
        lines.append(
            f"         agent said:  {reply!r}{after}" if step.heard else f"         agent said:  {reply}"
        )
    for failure in step.failures:
        lines.append("         " + out.paint(clean(str(failure)), "fail"))
    return lines


def scenario_lines(out: Out, result: ScenarioResult) -> list[str]:
    verdict = out.paint("PASS", "ok") if result.passed else out.paint("FAIL", "fail")
    head = f"{verdict} {clean(result.name)}  ({clean(result.file)}, {result.target}, {result.seconds:.1f} s)"
    lines = [head]
    if result.error is not None:
        lines.append("  " + out.paint(f"error: {clean(result.error)}", "fail"))
        return lines
    for step in result.steps:
        lines.extend(_step_line(out, step))
    end = [f"ended {result.end_reason or 'unknown'}"]
    if result.status:
        end.append(f"AI_AGENT_STATUS={result.status}")
    if result.went_to:
        end.append(f"went to {result.went_to}")
    if result.call_id:
        end.append(f"call {result.call_id}")
    lines.append(out.paint("  " + clean(", ".join(end)), "dim"))
    return lines


def summary(results: list[ScenarioResult], seconds: float) -> str:
    failed = [r for r in results if not r.passed]
    steps = sum(len(r.steps) for r in results)
    failed_steps = sum(len(r.failed_steps) for r in results)
    return (
        f"{len(results)} scenario(s): {len(results) - len(failed)} passed, {len(failed)} failed "
        f"({steps} step(s), {failed_steps} failed) in {seconds:.1f} s"
    )


# ---------------------------------------------------------------- JUnit XML

# Characters XML 1.0 cannot carry at all (a transcript may hold anything): shown escaped instead.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def _x(text: str) -> str:
    return _NOT_XML.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def _transcript(result: ScenarioResult) -> str:
    lines = []
    if result.greeting:
        lines.append(f"greeting: {result.greeting}")
    for step in result.steps:
        lines.append(f"step {step.number} {step.label}: {'pass' if step.passed else 'FAIL'}")
        if step.understood:
            lines.append(f"  agent heard: {step.understood}")
        if step.heard:
            lines.append(f"  agent said: {step.heard}")
        if step.latency_ms is not None:
            lines.append(f"  reply after: {step.latency_ms:.0f} ms")
        lines.extend(f"  {failure}" for failure in step.failures)
    if result.end_reason:
        lines.append(f"ended: {result.end_reason} (status {result.status}, call {result.call_id})")
    return "\n".join(lines)


def junit(results: list[ScenarioResult]) -> ET.ElementTree:
    """One <testsuite> per file, one <testcase> per scenario (classname: the file's stem)."""
    root = ET.Element("testsuites", name="ari-agent test")
    by_file: dict[str, list[ScenarioResult]] = {}
    for result in results:
        by_file.setdefault(result.file, []).append(result)
    totals = {"tests": 0, "failures": 0, "errors": 0}
    total_time = 0.0
    for file, group in by_file.items():
        failures = sum(1 for r in group if r.error is None and not r.passed)
        errors = sum(1 for r in group if r.error is not None)
        seconds = sum(r.seconds for r in group)
        suite = ET.SubElement(
            root,
            "testsuite",
            name=_x(file),
            tests=str(len(group)),
            failures=str(failures),
            errors=str(errors),
            skipped="0",
            time=f"{seconds:.3f}",
        )
        for result in group:
            case = ET.SubElement(
                suite,
                "testcase",
                name=_x(result.name),
                classname=_x(Path(file).stem),
                time=f"{result.seconds:.3f}",
            )
            if result.error is not None:
                ET.SubElement(case, "error", message=_x(result.error), type="call").text = _x(result.error)
            elif not result.passed:
                first = result.failed_steps[0]
                message = f"step {first.number} ({first.label}): " + "; ".join(str(f) for f in first.failures)
                detail = "\n".join(
                    f"step {s.number} ({s.label}): {f}" for s in result.failed_steps for f in s.failures
                )
                ET.SubElement(case, "failure", message=_x(message), type="expectation").text = _x(detail)
            ET.SubElement(case, "system-out").text = _x(_transcript(result))
        totals["tests"] += len(group)
        totals["failures"] += failures
        totals["errors"] += errors
        total_time += seconds
    for key, value in totals.items():
        root.set(key, str(value))
    root.set("time", f"{total_time:.3f}")
    ET.indent(root)
    return ET.ElementTree(root)


def write_junit(results: list[ScenarioResult], path: Path) -> None:
    tree = junit(results)
    path.parent.mkdir(parents=True, exist_ok=True)
    tree.write(path, encoding="utf-8", xml_declaration=True)
