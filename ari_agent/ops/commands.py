"""The operator commands as the CLI runs them (doctor, call, test, calls, load): output, exit codes."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from ari_agent.config import Settings
from ari_agent.ops import flowjudge, flowreport, flowrun, flowspec
from ari_agent.ops.calls import CallsError, active_calls, agent_urls, call_source, erase_calls, pool_calls
from ari_agent.ops.doctor import Check, run_doctor
from ari_agent.ops.flowrun import example_files
from ari_agent.ops.flowspec import FlowFile, FlowFileError
from ari_agent.ops.load import LoadError, LoadOptions, run_load
from ari_agent.ops.loadreport import LoadReport, percentile
from ari_agent.ops.output import Out, clean, table
from ari_agent.ops.testcall import CallFailed, Phrase, TestCall, transcript

_MARK = {"ok": "ok  ", "warn": "warn", "fail": "FAIL", "skip": "skip"}


# ---------------------------------------------------------------- doctor


def print_check(out: Out, check: Check) -> None:
    out.line(f"  {out.paint(_MARK[check.status], check.status)}  {check.name:<10} {check.detail}")
    if check.fix and check.status in ("fail", "warn"):
        out.line(f"        {'':<10} {out.paint('fix:', 'bold')} {check.fix}")


async def doctor(settings: Settings, extension: str | None, as_json: bool) -> int:
    out = Out(json_mode=as_json)
    out.line(out.paint(f"ari-agent doctor: {settings.ari.url}, app {settings.ari.app}", "bold"))
    checks = await run_doctor(settings, extension, on_check=lambda c: print_check(out, c))
    failed = [c for c in checks if c.status == "fail"]
    warned = [c for c in checks if c.status == "warn"]
    if as_json:
        out.json({"ok": not failed, "checks": [c.to_json() for c in checks]})
    elif failed:
        out.line(out.paint(f"{len(failed)} problem(s); fix the first one first.", "fail"))
    else:
        extra = f" ({len(warned)} warning(s))" if warned else ""
        out.line(out.paint(f"all checks passed{extra}.", "ok"))
    return 1 if failed else 0


# ---------------------------------------------------------------- call


def _print_call_event(out: Out, entry: dict[str, Any]) -> None:
    if out.json_mode:
        out.json(entry)
        return
    t = out.paint(f"[{entry['t']:6.2f}s]", "dim")
    kind = entry["event"]
    if kind == "dialing":
        text = f"dialling {entry['target']}"
    elif kind == "answered":
        text = "answered"
    elif kind == "agent_speaking":
        text = f"{out.paint('agent', 'cyan')} speaking (after {entry['latency']:.2f} s)"
    elif kind == "agent_done":
        text = f"{out.paint('agent', 'cyan')} done ({entry['seconds']:.1f} s of speech)"
    elif kind == "you":
        text = f"{out.paint('you', 'bold')}: {entry['text']!r} ({entry['seconds']:.1f} s)"
    elif kind == "no_reply":
        text = out.paint(f"no reply within {entry['waited']:g} s", "warn")
    elif kind == "hangup":
        text = "the agent hung up" if entry["by"] == "agent" else "hanging up"
    else:
        text = kind
    out.line(f"{t} {text}")


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def print_transcript(out: Out, turns: object, where: str) -> None:
    out.line(out.paint(f"Transcript ({where}):", "bold"))
    # Records are read from files an operator may have edited: anything not a turn is skipped.
    for turn in turns if isinstance(turns, list) else []:
        if not isinstance(turn, dict):
            continue
        role = turn.get("role")
        label = "agent" if role == "agent" else "heard"
        text = clean(turn.get("text") or "(not stored)")
        notes = []
        heard = _number(turn.get("heard_latency"))
        if heard is not None:
            notes.append(f"reply {heard:.2f} s")
        measured = _number(turn.get("turn_latency_ms"))
        if measured is not None:
            notes.append(f"agent-measured {measured / 1000:.2f} s")
        if turn.get("interrupted"):
            notes.append("interrupted")
        suffix = out.paint(f"  [{', '.join(notes)}]", "dim") if notes else ""
        out.line(f"  {out.paint(label, 'cyan' if role == 'agent' else 'bold')}  {text}{suffix}")
        sources = turn.get("sources")
        for source in sources if isinstance(sources, list) else []:
            if isinstance(source, dict):
                # The passages the reply was thought with: where to look when it was wrong.
                passage = f"{clean(source.get('source', ''))} / {clean(source.get('heading', ''))}"
                out.line(out.paint(f"         from {passage}", "dim"))
        tools = turn.get("tools")
        for use in tools if isinstance(tools, list) else []:
            if isinstance(use, dict):
                called = f"{clean(use.get('tool', ''))}: {clean(use.get('status', ''))}"
                out.line(out.paint(f"         tool {called}", "dim"))


async def call(
    settings: Settings,
    target: str,
    phrases: list[tuple[str, str]],
    *,
    as_json: bool,
    turn_silence: float = 1.2,
    reply_timeout: float = 20.0,
) -> int:
    out = Out(json_mode=as_json)
    try:
        source = call_source(settings, transcripts=True)
    except CallsError:
        source = None
    test = TestCall(
        settings,
        target,
        [Phrase(kind, value) for kind, value in phrases],
        on_event=lambda e: _print_call_event(out, e),
        source=source,
        turn_silence=turn_silence,
        reply_timeout=reply_timeout,
    )
    try:
        result = await test.run()
    except CallFailed as exc:
        if as_json:
            out.json({"event": "error", "error": str(exc)})
        else:
            out.line(out.paint(f"call failed: {exc}", "fail"))
        return 1
    turns = transcript(result)
    summary = {
        "event": "summary",
        "answered": result.answered,
        "heard_turns": result.heard_turns,
        "hung_up_by": result.hung_up_by,
        "channel_id": result.channel_id,
        "call_id": (result.record or {}).get("call_id"),
        "end_reason": (result.record or {}).get("end_reason"),
        "latencies": result.latencies,
        "transcript": turns,
    }
    if as_json:
        out.json(summary)
    elif result.record is not None:
        print_transcript(out, turns, f"the agent's record of call {result.record.get('call_id')}")
        out.line(f"  ended: {result.record.get('end_reason')}")
    elif source is None:
        out.line("(set AGENT_RECORDS__DIR to the agent's records directory to see what it heard and said)")
    else:
        out.line("(no call record found: is AGENT_RECORDS__DIR the same as the agent's?)")
    return 0 if result.answered and result.heard_turns else 1


# ---------------------------------------------------------------- calls


def show_record(out: Out, record: dict[str, Any]) -> None:
    """One ended call for a terminal: every value cleaned, any field of any shape survived."""
    caller = record.get("caller")
    caller = caller if isinstance(caller, dict) else {}
    out.line(out.paint(f"call {clean(record.get('call_id'))}", "bold"))
    for key, value in (
        ("profile", record.get("profile")),
        ("caller", f"{clean(caller.get('name', ''))} <{clean(caller.get('number', ''))}>".strip()),
        ("started", record.get("started_at")),
        ("ended", record.get("ended_at")),
        ("end reason", record.get("end_reason")),
        ("status", record.get("status")),
        ("result", record.get("result")),
        ("channel", record.get("channel_id")),
        ("agent", record.get("instance")),
    ):
        if value is not None:
            out.line(f"  {key:<11} {clean(value)}")
    media = record.get("media") or {}
    if isinstance(media, dict) and media:
        # Non-zero figures only: a clean call reads short, a troubled one shows what went wrong.
        figures = ", ".join(f"{k} {v}" for k, v in media.items() if v not in (0, 0.0, None))
        out.line(f"  {'media in':<11} {clean(figures)}")
    print_transcript(out, record.get("turns"), "turns")


def _calls_error(out: Out, exc: CallsError) -> int:
    if out.json_mode:
        out.json({"error": str(exc)})
    else:
        out.line(out.paint(f"error: {exc}", "fail"))
    return 1


def calls_erase(settings: Settings, caller_number: str | None, call_id: str | None, as_json: bool) -> int:
    out = Out(json_mode=as_json)
    if (caller_number is None) == (call_id is None):
        out.line("usage: ari-agent calls erase --caller NUMBER | --call ID")
        return 2
    try:
        done = erase_calls(settings, caller_number=caller_number, call_id=call_id)
    except CallsError as exc:
        return _calls_error(out, exc)
    if as_json:
        out.json(done)
    else:
        who = f"caller {clean(caller_number)}" if caller_number is not None else f"call {clean(call_id)}"
        out.line(f"erased {done['erased']} call(s) of {who}")
        for place, label in (("store", "call store"), ("records", "records file")):
            if place in done:
                out.line(f"  {label:<12} {done[place]['erased']} ({done[place]['path']})")
        if "audit_error" in done:
            out.line(out.paint(f"warning: not audited: {done['audit_error']}", "warn"))
    return 1 if "audit_error" in done else 0


CALL_COLUMNS = ("call_id", "profile", "state", "started_at", "channel_id", "instance")
CALL_HEADERS = ["CALL", "PROFILE", "STATE", "STARTED", "CHANNEL", "AGENT"]


def calls_of_pool(settings: Settings, agents: str, as_json: bool) -> int:
    """``calls --agents URLS``: each agent's live calls, which agent has which; 1 if one is silent."""
    out = Out(json_mode=as_json)
    try:
        found = pool_calls(settings, agent_urls(agents))
    except CallsError as exc:
        return _calls_error(out, exc)
    failed = any(a.error for a in found)
    if as_json:
        out.json({"agents": [a.to_json() for a in found]})
        return 1 if failed else 0
    rows = [[clean(c.get(k) or "") for k in CALL_COLUMNS] for a in found for c in a.calls]
    if rows:
        out.line(table(rows, CALL_HEADERS))
    else:
        out.line("no active calls")
    for a in found:
        who = f"agent {clean(a.instance)}" if a.instance else "agent"
        if a.error:
            out.line(out.paint(f"{who} at {a.url}: {clean(a.error)}", "fail"))
        else:
            out.line(f"{who} at {a.url}: {len(a.calls)} call{'' if len(a.calls) == 1 else 's'}")
    return 1 if failed else 0


def calls(
    settings: Settings, action: str | None, call_id: str | None, as_json: bool, agents: str | None = None
) -> int:
    out = Out(json_mode=as_json)
    if agents and action is None:
        return calls_of_pool(settings, agents, as_json)
    try:
        if action == "show":
            if not call_id:
                out.line("usage: ari-agent calls show ID")
                return 2
            record = call_source(settings).get(call_id)
            if record is None:
                raise CallsError(f"no ended call {call_id!r} (or the prefix is not unique)")
            if as_json:
                out.json(record)
                return 0
            show_record(out, record)
            return 0
        active = active_calls(settings)
    except CallsError as exc:
        return _calls_error(out, exc)
    if as_json:
        out.json(active)
    elif not active:
        out.line("no active calls")
    else:
        rows = [[clean(c.get(k) or "") for k in CALL_COLUMNS] for c in active]
        out.line(table(rows, CALL_HEADERS))
    return 0


# ---------------------------------------------------------------- test (call flows)


EXAMPLES = "examples"  # how the shipped files are named in reports


def _load_flows(paths: list[str], with_examples: bool) -> tuple[list[tuple[str, FlowFile]], list[str]]:
    loaded: list[tuple[str, FlowFile]] = []
    errors: list[str] = []
    named = [(p, Path(p)) for p in paths]
    if with_examples:
        named += [(f"{EXAMPLES}/{path.name}", path) for path in example_files()]
    for label, path in named:
        try:
            loaded.append((label, flowspec.load(path)))
        except FlowFileError as exc:
            errors.extend(exc.lines())
    return loaded, errors


async def flow_test(
    settings: Settings,
    paths: list[str],
    *,
    examples: bool = False,
    list_only: bool = False,
    extension: str | None = None,
    parallel: int = 1,
    junit_path: str | None = None,
    turn_silence: float = 1.2,
    reply_timeout: float = 20.0,
) -> int:
    """``ari-agent test``: 0 when every scenario passed, 1 on any failure, 2 on a bad file."""
    out = Out()
    if not paths and not examples:
        out.line("usage: ari-agent test FILE... | --examples  (--list shows the shipped examples)")
        return 2
    files, errors = _load_flows(paths, examples)
    if errors:
        for line in errors:
            print(f"error: {line}", file=sys.stderr)
        return 2
    todo = flowrun.jobs(files, extension)
    if list_only:
        for label, flows in files:
            where = next((str(p) for p in example_files() if label == f"{EXAMPLES}/{p.name}"), label)
            out.line(out.paint(where, "bold"))
            for scenario in flows.scenario:
                out.line(f"  {clean(scenario.name)}  ({flowspec.target(flows, scenario, extension)})")
        return 0
    many = len(todo) > 1 and parallel > 1
    out.line(
        out.paint(f"ari-agent test: {len(todo)} scenario(s) from {len(files)} file(s)", "bold")
        + (f", {min(parallel, len(todo))} at a time" if many else "")
    )
    started = time.monotonic()

    def on_result(result: flowjudge.ScenarioResult) -> None:
        for line in flowreport.scenario_lines(out, result):
            out.line(line)

    results = await flowrun.run_all(
        settings,
        todo,
        parallel=parallel,
        on_event=lambda job, entry: flowreport.progress(out, job.scenario.name, entry),
        on_result=on_result,
        turn_silence=turn_silence,
        reply_timeout=reply_timeout,
    )
    passed = all(r.passed for r in results)
    out.line(out.paint(flowreport.summary(results, time.monotonic() - started), "ok" if passed else "fail"))
    if junit_path is not None:
        try:
            flowreport.write_junit(results, Path(junit_path))
        except OSError as exc:
            print(f"error: cannot write {junit_path}: {exc}", file=sys.stderr)
            return 1
        out.line(f"JUnit XML: {junit_path}")
    return 0 if passed else 1


# ---------------------------------------------------------------- load


def print_load_report(out: Out, report: LoadReport) -> None:
    n = report.planned
    out.line(f"  answered        {report.answered}/{n}")
    out.line(f"  agent records   {report.recorded}/{n}")
    if report.judged:
        cut = f", {report.cut} cut short by the caller" if report.cut else ""
        out.line(f"  right answers   {report.right}/{n}   wrong {len(report.wrong)}{cut}")
    else:
        out.line("  right answers   not judged (no turn texts: set AGENT_RECORDS__DIR, or pass --expect)")
    out.line(f"  agent hung up   {report.agent_hangups}/{n} after goodbye")
    out.line(f"  peak calls      {report.peak_concurrent} at once (the agent's records)")
    lat = report.latencies_ms
    if lat:
        out.line(
            f"  turn latency    p50 {percentile(lat, 50):.0f} ms, p95 {percentile(lat, 95):.0f} ms, "
            f"max {max(lat):.0f} ms ({len(lat)} replies, the agent's records)"
        )
    else:
        out.line("  turn latency    none recorded")
    if report.cpu_seconds is not None and report.cpu_per_call is not None:
        share = 100 * report.cpu_seconds / report.wall_seconds if report.wall_seconds else 0.0
        out.line(
            f"  agent CPU       {report.cpu_per_call:.3f} s per call "
            f"({report.cpu_seconds:.2f} s in {report.wall_seconds:.0f} s: {share:.1f} % of one core)"
        )
    else:
        out.line("  agent CPU       unknown (no process_cpu_seconds_total in the agent's /metrics)")
    for v in report.wrong[:5]:
        out.line(f"    call {v.call_number}: heard {clean(v.heard)!r}, replied {clean(v.replied)!r}")


def load(settings: Settings, opts: LoadOptions, as_json: bool) -> int:
    out = Out(json_mode=as_json)
    if not as_json:
        mode = "silent between utterances" if opts.plan.silent_between else "streaming between utterances"
        out.line(out.paint(f"ari-agent load: {opts.calls} call(s) to {opts.target}, callers {mode}", "bold"))
    try:
        report = run_load(settings, opts, on_progress=(lambda _: None) if as_json else out.line)
    except LoadError as exc:
        if as_json:
            out.json({"ok": False, "problems": [str(exc)]})
        else:
            out.line(out.paint(f"load failed: {exc}", "fail"))
        return 1
    if as_json:
        out.json(report.to_json())
    else:
        print_load_report(out, report)
        for problem in report.problems:
            out.line(out.paint(f"FAIL: {problem}", "fail"))
        if report.ok:
            out.line(out.paint("all calls answered right.", "ok"))
    return 0 if report.ok else 1
