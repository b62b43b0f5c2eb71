"""``ari-agent load``: N SIPp callers at a rate, each asking a question and saying goodbye.

The IO around loadplan.py (the scenario) and loadreport.py (the verdict):
speech is rendered with espeak-ng and sox into 8 kHz µ-law WAV files, SIPp
(``sipp``, Debian's ``sip-tester``) places the calls into Asterisk over SIP,
and the agent's own call records (the records file or the call store, as
``calls show`` reads them) say what it heard, replied and how fast. The
agent's CPU comes from its ``/metrics`` (``process_cpu_seconds_total``).

Before any call the agent must answer ``/readyz``: with the agent stopped the
dialplan would hand every call to its fallback and the calls would look
answered.
"""

from __future__ import annotations

import contextlib
import ipaddress
import random
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import wave
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ari_agent.config import Settings
from ari_agent.errors import ConfigError
from ari_agent.observability.http import http_token
from ari_agent.ops.calls import CallsError, agent_url, call_source
from ari_agent.ops.loadplan import CallPlan, Target, parse_log, scenario, timeline
from ari_agent.ops.loadreport import LoadReport, expected_reply, verdict

RATE = 8000
RECORDS_WAIT = 20.0  # after SIPp ends: the last records are written when the calls' clean-ups end


class LoadError(Exception):
    """The load run could not start or finish; the message says why and what to do."""


@dataclass(frozen=True)
class LoadOptions:
    target: Target
    calls: int = 5
    rate: float = 1.0  # calls per second
    max_concurrent: int | None = None  # SIPp's -l; None: no limit but the rate
    question: str = "what time do you open"
    goodbye: str = "goodbye"
    expect: str | None = None  # a phrase the reply must contain; None: from the record's profile
    plan: CallPlan = field(default_factory=CallPlan)
    require_hangup: bool = True  # the agent must hang up after goodbye
    keep_dir: Path | None = None  # keep SIPp's files (scenario, audio, logs) here
    # SIP digest authentication, for endpoints with ``auth =`` (an operator's Asterisk asks for it).
    auth_user: str | None = None
    auth_password: str | None = None
    local_ip: str | None = None  # SIPp's SIP and RTP address; None: the one routed towards the target


# ---------------------------------------------------------------- audio


def _need(program: str, package: str) -> str:
    path = shutil.which(program)
    if path is None:
        raise LoadError(f"{program} not found: install it (apt-get install {package})")
    return path


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise LoadError(f"{what} failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")


def speak_pcm(text: str, work: Path, name: str) -> Path:
    """``text`` by espeak-ng as 8 kHz 16-bit mono WAV."""
    raw = work / f"{name}.espeak.wav"
    out = work / f"{name}.pcm.wav"
    _run([_need("espeak-ng", "espeak-ng"), "-v", "en-us", "-s", "150", "-w", str(raw), text], "espeak-ng")
    sox = _need("sox", "sox")
    _run([sox, str(raw), "-r", str(RATE), "-c", "1", "-b", "16", "-e", "signed-integer", str(out)], "sox")
    return out


def wav_seconds(path: Path) -> float:
    with wave.open(str(path), "rb") as w:
        return w.getnframes() / w.getframerate()


def to_ulaw(pcm_wav: Path, out: Path) -> Path:
    """µ-law WAV, as SIPp's rtp_stream plays it (payload type 0)."""
    sox = _need("sox", "sox")
    _run([sox, str(pcm_wav), "-r", str(RATE), "-c", "1", "-e", "u-law", "-b", "8", str(out)], "sox")
    return out


def timeline_wav(segments: list[tuple[str, float]], files: Mapping[str, Path], out: Path) -> Path:
    """The whole call as one 16-bit WAV: silence where nothing is said (a streaming caller)."""
    with wave.open(str(out), "wb") as dst:
        dst.setnchannels(1)
        dst.setsampwidth(2)
        dst.setframerate(RATE)
        for kind, seconds in segments:
            if kind == "silence":
                dst.writeframes(b"\x00\x00" * round(seconds * RATE))
                continue
            with wave.open(str(files[kind]), "rb") as src:
                dst.writeframes(src.readframes(src.getnframes()))
    return out


# ---------------------------------------------------------------- the agent


def _get(settings: Settings, path: str, timeout: float = 5.0) -> tuple[int, str]:
    req = urllib.request.Request(agent_url(settings, path))
    try:
        token = http_token(settings.http)
    except ConfigError as exc:
        raise LoadError(str(exc)) from None
    if token and path not in ("/healthz", "/readyz"):
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def agent_ready(settings: Settings) -> str | None:
    """None when the agent says it is ready; else why not, with the fix."""
    url = agent_url(settings, "/readyz")
    try:
        status, _ = _get(settings, "/readyz")
    except OSError as exc:
        return f"no agent answers at {url} ({exc}): is it running? (AGENT_HTTP__HOST/PORT)"
    if status != 200:
        return f"the agent at {url} is not ready (HTTP {status}): not connected to ARI, or draining"
    return None


def agent_cpu_seconds(settings: Settings) -> float | None:
    """The agent process's CPU seconds from its /metrics; None if it does not say."""
    try:
        status, text = _get(settings, "/metrics")
    except OSError:
        return None
    match = re.search(r"(?m)^process_cpu_seconds_total ([0-9.eE+-]+)$", text) if status == 200 else None
    return float(match.group(1)) if match else None


# ---------------------------------------------------------------- SIPp


def local_ip_towards(host: str) -> str:
    """The address this host sends from towards ``host`` (SIP Via/Contact and SDP must carry it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.connect((host, 9))  # UDP connect sends nothing: it only picks the route
        addr: str = s.getsockname()[0]
        return addr


def sipp_command(
    sipp: str, opts: LoadOptions, scenario_path: Path, log_path: Path, local_ip: str, timeout_s: float
) -> list[str]:
    cmd = [
        sipp,
        opts.target.hostport,
        "-sf", str(scenario_path),
        "-s", opts.target.extension,
        "-m", str(opts.calls),
        "-r", f"{opts.rate:g}",
        "-rp", "1000",
        "-i", local_ip,
        "-mi", local_ip,
        "-p", "0",  # SIPp picks a free SIP port
        "-trace_logs", "-log_file", str(log_path),
        "-nostdin",
        "-timeout", f"{round(timeout_s)}s",
        "-max_recv_loops", "10000",
    ]  # fmt: skip
    # Always a limit: without -l SIPp makes up its own (3 calls here) and the rate silently drops.
    cmd += ["-l", str(opts.max_concurrent or opts.calls)]
    if opts.auth_user is not None:
        # SIPp answers the challenge with these ([authentication] in the scenario).
        cmd += ["-au", opts.auth_user, "-ap", opts.auth_password or ""]
    return cmd


def _run_sipp(cmd: list[str], work: Path, timeout_s: float) -> int:
    out_path = work / "sipp.out"
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=work, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        try:
            return proc.wait(timeout=timeout_s + 30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
            raise LoadError(f"sipp did not finish within {timeout_s + 30:.0f} s; see {out_path}") from None


def _sipp_failure(work: Path) -> str:
    """SIPp's own complaint, for a run that failed before placing calls."""
    text = ""
    with contextlib.suppress(OSError):
        text = (work / "sipp.out").read_text(errors="replace")
    for err in sorted(work.glob("*_errors.log")):
        with contextlib.suppress(OSError):
            text += err.read_text(errors="replace")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("-")]
    return " / ".join(lines[-3:])[-600:]


# ---------------------------------------------------------------- records


def _caller_number(record: Mapping[str, Any]) -> str:
    caller = record.get("caller")
    return str(caller.get("number", "")) if isinstance(caller, dict) else ""


def records_by_call(found: list[dict[str, Any]], tag: str) -> dict[int, dict[str, Any]]:
    """The records of this run's calls (caller number ``<tag><call_number>``) by SIPp call number."""
    out: dict[int, dict[str, Any]] = {}
    for record in found:
        number = _caller_number(record)
        if number.startswith(tag) and number[len(tag) :].isdigit():
            out[int(number[len(tag) :])] = record
    return out


def _collect_records(
    settings: Settings, since: datetime, tag: str, wanted: set[int], wait: float
) -> dict[int, dict[str, Any]]:
    deadline = time.monotonic() + wait
    while True:
        try:
            found = call_source(settings, transcripts=True).since(since)
        except CallsError as exc:
            raise LoadError(str(exc)) from None
        mine = records_by_call(found, tag)
        if wanted <= set(mine) or time.monotonic() > deadline:
            return mine
        time.sleep(0.5)


# ---------------------------------------------------------------- the run


def _fixed(text: str) -> Callable[[Mapping[str, Any]], str | None]:
    return lambda _record: text


def run_load(
    settings: Settings, opts: LoadOptions, on_progress: Callable[[str], None] = lambda _: None
) -> LoadReport:
    if opts.calls < 1:
        raise LoadError("--calls must be at least 1")
    if opts.rate <= 0:
        raise LoadError("--rate must be above 0")
    if (opts.auth_user is None) != (opts.auth_password is None):
        raise LoadError("SIP authentication needs both --auth-user and --auth-password")
    if opts.local_ip is not None:
        try:
            ipaddress.ip_address(opts.local_ip)
        except ValueError:
            raise LoadError(f"--local-ip {opts.local_ip!r} is not an IP address") from None
    sipp = _need("sipp", "sip-tester")
    try:
        call_source(settings, transcripts=True)
    except CallsError as exc:
        raise LoadError(f"the agent's call records are needed to judge the calls: {exc}") from None
    problem = agent_ready(settings)
    if problem is not None:
        raise LoadError(problem)

    with contextlib.ExitStack() as stack:
        if opts.keep_dir is not None:
            work = opts.keep_dir
            work.mkdir(parents=True, exist_ok=True)
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ari-agent-load-")))
        question = speak_pcm(opts.question, work, "question")
        goodbye = speak_pcm(opts.goodbye, work, "goodbye")
        q_s, g_s = wav_seconds(question), wav_seconds(goodbye)
        segments = [(s.kind, s.seconds) for s in timeline(opts.plan, q_s, g_s)]
        whole = timeline_wav(segments, {"question": question, "goodbye": goodbye}, work / "call.pcm.wav")
        files = {
            "question_wav": str(to_ulaw(question, work / "question.wav")),
            "goodbye_wav": str(to_ulaw(goodbye, work / "goodbye.wav")),
            "call_wav": str(to_ulaw(whole, work / "call.wav")),
        }
        # Caller numbers <tag><call number>: this run's records among everyone else's.
        tag = f"9{random.randrange(10**6):06d}"
        scenario_path = work / "load.xml"
        scenario_path.write_text(
            scenario(
                opts.plan, tag=tag, question_s=q_s, goodbye_s=g_s, auth=opts.auth_user is not None, **files
            ),
            encoding="utf-8",
        )
        per_call = sum(s for _, s in segments) + 10.0
        timeout_s = opts.calls / opts.rate + per_call * 2 + 30
        log_path = work / "calls.log"
        local_ip = opts.local_ip or local_ip_towards(opts.target.host)
        cmd = sipp_command(sipp, opts, scenario_path, log_path, local_ip, timeout_s)

        cpu_before = agent_cpu_seconds(settings)
        # The records' timestamps are the agent's clock (this host's, or a synchronised one): a
        # second's slack for their rounding.
        since = datetime.now(UTC) - timedelta(seconds=1)
        started = time.monotonic()
        on_progress(
            f"placing {opts.calls} call(s) at {opts.rate:g}/s to {opts.target} (each up to {per_call:.0f} s)"
        )
        code = _run_sipp(cmd, work, timeout_s)
        wall = time.monotonic() - started
        try:
            events = parse_log(log_path.read_text(errors="replace"))
        except FileNotFoundError:
            events = {}
        if code not in (0, 1) and not events:
            raise LoadError(f"sipp failed (exit {code}) before placing calls: {_sipp_failure(work)}")
        answered = {n for n, ev in events.items() if "answered" in ev}
        alive = agent_ready(settings) is None
        on_progress("reading the agent's call records")
        records = _collect_records(settings, since, tag, answered, RECORDS_WAIT if alive else 2.0)
        cpu_after = agent_cpu_seconds(settings)
        cpu = cpu_after - cpu_before if cpu_before is not None and cpu_after is not None else None

    expect: Callable[[Mapping[str, Any]], str | None]
    if opts.expect is not None:
        expect = _fixed(opts.expect)
    else:
        expect = expected_reply(settings.all_profiles(), opts.question)
    return verdict(
        opts.calls,
        events,
        records,
        expect,
        cpu_seconds=cpu,
        wall_seconds=wall,
        sipp_exit=code,
        agent_alive=alive,
        require_hangup=opts.require_hangup,
    )
