"""The real-Asterisk test lab.

Two Asterisk 22 instances run from one Debian sid root filesystem (built once
by ``asterisk/rootfs.sh``), each chrooted, each with its own config, spool,
run, log and db directories under ``ROOT/lab/<session>/``:

* ``agent``: the project's own ``asterisk/`` config with test ports, plus the
  test-only dialplan in ``asterisk-caller/agent_overlay.conf``. The agent
  under test talks ARI to it.
* ``caller``: a SIP caller (``asterisk-caller/``) that dials the agent
  instance over PJSIP, one endpoint per codec.

Calls are placed with call files; a scripted caller (``lab_script.conf``)
records what it hears (MixMonitor) and plays espeak-ng phrases; the lab's
"ears" (a thread reading that growing recording) decide when the far end has
finished a turn and let the script go on. The dialplans log events as NOTICE
lines (``ai-agent-event|...``) that the lab reads back, keyed by caller
number. Everything binds 127.0.0.1.

Ports come from a "slot" so that two test sessions on one machine do not
clash: slot 0 uses the documented ports (ARI 18088, SIP 15060/15070, RTP
21000-21999/22000-22999, agent HTTP 18090, agent media 41000-41999); the
next free slot shifts them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import wave
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tests.integration.testpki import LabPki, make_pki

REPO = Path(__file__).resolve().parents[2]
ASTERISK_CONFIG = REPO / "asterisk"
CALLER_CONFIG = Path(__file__).resolve().parent / "asterisk-caller"
# The agent instance's endpoint that demands digest auth (asterisk-caller/agent_pjsip_overlay.conf):
# SIP from this address is challenged for these credentials.
LOAD_AUTH_IP = "127.0.0.2"
LOAD_AUTH_USER = "lab-load"
LOAD_AUTH_PASSWORD = "lab-load-Secret-7"
ROOTFS_SCRIPT = ASTERISK_CONFIG / "rootfs.sh"
DEFAULT_ROOT = Path(os.environ.get("ARI_AGENT_ROOTFS", "/var/cache/ari-agent/rootfs"))
LOCK_DIR = Path(os.environ.get("ARI_AGENT_LAB_LOCKS", "/var/cache/ari-agent"))
# Three sessions of make test at once (each of its two workers takes a slot).
MAX_SLOTS = 6
APP = "ai-agent"
ARI_USER = "ai-agent"
DEMO_CONTEXT = "ai-agent-demo"
CODECS = ("ulaw", "alaw", "g722")
# Kept lab dirs (recordings, logs) from earlier sessions, for post-mortems.
KEEP_OLD_SESSIONS = 3


class LabError(Exception):
    """The lab could not do what a test asked; the message says why."""


# ---------------------------------------------------------------- ports


@dataclasses.dataclass(frozen=True)
class Ports:
    slot: int
    ari: int
    agent_sip: int
    caller_sip: int
    agent_rtp: tuple[int, int]
    caller_rtp: tuple[int, int]
    agent_http: int
    agent_media: tuple[int, int]
    ari_tls: int  # the agent instance's HTTP server with TLS (plain HTTP stays on ``ari``)

    @classmethod
    def for_slot(cls, slot: int) -> Ports:
        step = 100 * slot
        return cls(
            slot=slot,
            ari=18088 + step,
            agent_sip=15060 + step,
            caller_sip=15070 + step,
            agent_rtp=(21000 + 2000 * slot, 21999 + 2000 * slot),
            caller_rtp=(22000 + 2000 * slot, 22999 + 2000 * slot),
            agent_http=18090 + step,
            agent_media=(41000 + 1000 * slot, 41999 + 1000 * slot),
            ari_tls=18089 + step,
        )


def _port_free(port: int, kind: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        if kind == socket.SOCK_STREAM:
            # As Asterisk does: a port with connections in TIME_WAIT is free.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class SlotLock:
    """An flock per port slot: concurrent sessions get different ports."""

    def __init__(self) -> None:
        self.slot = -1
        self._fd: int | None = None

    def acquire(self) -> int:
        LOCK_DIR.mkdir(parents=True, exist_ok=True)
        for slot in range(MAX_SLOTS):
            fd = os.open(LOCK_DIR / f"lab-slot-{slot}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            ports = Ports.for_slot(slot)
            tcp = (ports.ari, ports.agent_http, ports.ari_tls)
            if not all(_port_free(port, socket.SOCK_STREAM) for port in tcp):
                # A process outside any session (a stray agent) holds one of its ports.
                os.close(fd)
                continue
            self.slot, self._fd = slot, fd
            return slot
        raise LabError(f"all {MAX_SLOTS} lab slots are busy (locks in {LOCK_DIR}): too many test sessions")

    def others_idle(self) -> bool:
        """True when no other session holds a slot (so shared mounts may go)."""
        for slot in range(MAX_SLOTS):
            if slot == self.slot:
                continue
            path = LOCK_DIR / f"lab-slot-{slot}.lock"
            if not path.exists():
                continue
            fd = os.open(path, os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            finally:
                os.close(fd)
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


# ---------------------------------------------------------------- rootfs


def ensure_rootfs(root: Path = DEFAULT_ROOT) -> Path:
    """Build or reuse the root filesystem; raise LabError with the script's output."""
    if (root / "usr/sbin/asterisk").exists():
        return root
    proc = subprocess.run(
        ["sh", str(ROOTFS_SCRIPT), str(root)], capture_output=True, text=True, timeout=900, check=False
    )
    if proc.returncode != 0 or not (root / "usr/sbin/asterisk").exists():
        tail = (proc.stdout + proc.stderr)[-3000:]
        raise LabError(
            f"could not build the Asterisk root filesystem at {root} with {ROOTFS_SCRIPT} "
            f"(exit {proc.returncode}); the integration tests need it (root, debootstrap and a "
            f"Debian mirror). Output:\n{tail}"
        )
    return root


def _proc_mounted(root: Path) -> bool:
    target = str((root / "proc").resolve())
    with open("/proc/self/mounts", encoding="utf-8") as f:
        return any(line.split()[1] == target for line in f if len(line.split()) > 1)


# ---------------------------------------------------------------- config rendering


def _replace_once(text: str, old: str, new: str, what: str) -> str:
    count = text.count(old)
    if count != 1:
        raise LabError(f"{what}: expected exactly one {old!r} to rewrite, found {count}")
    return text.replace(old, new)


def _render_asterisk_conf(template: str, dirs: Mapping[str, str]) -> str:
    for key, value in dirs.items():
        template, n = re.subn(rf"(?m)^{key}\s*=>.*$", f"{key} => {value}", template)
        if n != 1:
            raise LabError(f"asterisk.conf: expected one {key} line, found {n}")
    return template


# ---------------------------------------------------------------- events


@dataclasses.dataclass(frozen=True)
class DialplanEvent:
    """One line of the dialplan's event log: what a call did in the dialplan."""

    at: float
    number: str
    kind: str
    fields: dict[str, str]
    raw: str
    instance: str = ""

    @classmethod
    def parse(cls, line: str, instance: str = "") -> DialplanEvent | None:
        """From a log line holding ``ai-agent-event|<time>|<number>|<kind>|<k=v ...>``."""
        _, marker, payload = line.rstrip("\n").partition(_EVENT_MARKER)
        if not marker:
            return None
        parts = payload.split("|", 3)
        if len(parts) != 4:
            return None
        at, number, kind, rest = parts
        fields: dict[str, str] = {}
        for token in rest.split():
            key, sep, value = token.partition("=")
            if sep:
                fields[key] = value
        try:
            when = float(at)
        except ValueError:
            return None
        return cls(at=when, number=number, kind=kind, fields=fields, raw=payload, instance=instance)


_EVENT_MARKER = "ai-agent-event|"


class EventLog:
    """Reads an instance's event log incrementally (it grows during a session)."""

    def __init__(self, path: Path, instance: str) -> None:
        self.path = path
        self.instance = instance
        self._offset = 0
        self._partial = b""
        self._events: list[DialplanEvent] = []
        self._lock = threading.Lock()

    def read(self) -> list[DialplanEvent]:
        with self._lock:  # the lab's ears read from their own thread
            return self._read()

    def _read(self) -> list[DialplanEvent]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                chunk = f.read()
        except FileNotFoundError:
            return list(self._events)
        self._offset += len(chunk)
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        for line in lines:
            event = DialplanEvent.parse(line.decode(errors="replace"), self.instance)
            if event is not None:
                self._events.append(event)
        return list(self._events)


# ---------------------------------------------------------------- audio analysis


SLN48_RATE = 48000


def read_wav(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """Mono 16-bit WAV (or Asterisk's raw .sln48) as float samples in [-1, 1) and the sample rate."""
    if str(path).endswith(".sln48"):
        raw = np.fromfile(str(path), dtype="<i2")
        return raw.astype(np.float64) / 32768.0, SLN48_RATE
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise LabError(f"{path}: expected 16-bit samples, got {8 * w.getsampwidth()}-bit")
        frames = w.readframes(w.getnframes())
        channels, rate = w.getnchannels(), w.getframerate()
    samples = np.frombuffer(frames, dtype="<i2").astype(np.float64) / 32768.0
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1)
    return samples, rate


def rms_dbfs(samples: np.ndarray | str | os.PathLike[str]) -> float:
    """RMS level in dBFS of samples or of a WAV file (-inf-ish for silence)."""
    if not isinstance(samples, np.ndarray):
        samples, _ = read_wav(samples)
    if samples.size == 0:
        return -120.0
    rms = float(np.sqrt(np.mean(np.square(samples))))
    return 20.0 * float(np.log10(max(rms, 1e-6)))


def voiced_segments(
    wav: str | os.PathLike[str],
    *,
    threshold_dbfs: float = -40.0,
    frame_ms: int = 20,
    min_gap_s: float = 0.4,
    min_len_s: float = 0.15,
) -> list[tuple[float, float]]:
    """(start_s, end_s) of stretches louder than the threshold.

    Gaps shorter than ``min_gap_s`` (pauses between words) are merged and
    stretches shorter than ``min_len_s`` (clicks) dropped, so one utterance is
    one segment.
    """
    samples, rate = read_wav(wav)
    n = rate * frame_ms // 1000
    frames = samples[: len(samples) // n * n].reshape(-1, n)
    if frames.size == 0:
        return []
    levels = 20.0 * np.log10(np.maximum(np.sqrt(np.mean(np.square(frames), axis=1)), 1e-6))
    loud = levels > threshold_dbfs
    segments: list[list[float]] = []
    step = frame_ms / 1000.0
    for i, is_loud in enumerate(loud):
        if not is_loud:
            continue
        start = i * step
        if segments and start - segments[-1][1] < min_gap_s:
            segments[-1][1] = start + step
        else:
            segments.append([start, start + step])
    return [(round(a, 3), round(b, 3)) for a, b in segments if b - a >= min_len_s]


# ---------------------------------------------------------------- Asterisk instance


class AsteriskInstance:
    """One chrooted Asterisk process with its own directory tree."""

    def __init__(self, name: str, root: Path, chroot_base: str) -> None:
        self.name = name
        self.root = root
        self.chroot_base = chroot_base  # as Asterisk sees it, e.g. /lab/<session>/agent
        self.base = root / chroot_base.lstrip("/")
        self.etc = self.base / "etc"
        self.spool = self.base / "spool"
        self.log_dir = self.base / "log"
        self.stdout_path = self.base / "asterisk.out"
        self.conf = f"{chroot_base}/etc/asterisk.conf"
        self.proc: subprocess.Popen[bytes] | None = None

    def host_path(self, chroot_path: str) -> Path:
        return self.root / chroot_path.lstrip("/")

    def chroot_path(self, host_path: Path) -> str:
        return "/" + str(host_path.relative_to(self.root))

    def prepare(self, files: Mapping[str, str]) -> None:
        for sub in ("etc", "run", "log", "db", "cache", "spool/outgoing", "spool/outgoing_done", "spool/tmp"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        # Debian's stock configs first (what the dev container has), ours over them.
        for src in (self.root / "etc/asterisk").iterdir():
            if src.is_file():
                shutil.copy2(src, self.etc / src.name)
            elif src.is_dir():
                shutil.copytree(src, self.etc / src.name, dirs_exist_ok=True)
        for name, text in files.items():
            (self.etc / name).write_text(text, encoding="utf-8")
        template = (ASTERISK_CONFIG / "asterisk.conf").read_text(encoding="utf-8")
        dirs = {
            "astetcdir": f"{self.chroot_base}/etc",
            "astdbdir": f"{self.chroot_base}/db",
            "astcachedir": f"{self.chroot_base}/cache",
            "astspooldir": f"{self.chroot_base}/spool",
            "astrundir": f"{self.chroot_base}/run",
            "astlogdir": f"{self.chroot_base}/log",
        }
        (self.etc / "asterisk.conf").write_text(_render_asterisk_conf(template, dirs), encoding="utf-8")

    def start(self) -> None:
        out = open(self.stdout_path, "ab")
        try:
            self.proc = subprocess.Popen(
                ["chroot", str(self.root), "/usr/sbin/asterisk", "-C", self.conf, "-f", "-n"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            out.close()

    def rx(self, command: str, timeout: float = 10.0) -> str:
        """Run a CLI command on this instance (its own control socket)."""
        proc = subprocess.run(
            ["chroot", str(self.root), "/usr/sbin/asterisk", "-C", self.conf, "-rx", command],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:
            raise LabError(
                f"{self.name}: `{command}` failed ({proc.returncode}): {proc.stderr or proc.stdout}"
            )
        return proc.stdout

    def wait_booted(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                self.rx("core waitfullybooted", timeout=max(1.0, deadline - time.monotonic()))
                return
            except (LabError, subprocess.TimeoutExpired) as exc:
                last = str(exc)
            time.sleep(0.2)
        raise LabError(
            f"{self.name}: Asterisk not fully booted after {timeout:.0f} s ({last})\n{self.log_tail()}"
        )

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise LabError(f"{self.name}: Asterisk exited with {self.proc.returncode}\n{self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        parts = []
        for path in (self.stdout_path, self.log_dir / "messages.log"):
            if path.exists():
                parts.append(f"--- {path} ---\n{path.read_text(errors='replace')[-chars:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(LabError, subprocess.TimeoutExpired):
                self.rx("core stop now", timeout=5)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None


# ---------------------------------------------------------------- calls


@dataclasses.dataclass
class CallHandle:
    """A call placed by the lab. ``number`` is its caller id and correlation key."""

    number: str
    via: str
    codec: str
    extension: str
    phrases: list[str]
    recording_path: Path  # what the caller heard (receive direction), 48 kHz raw slin (.sln48)
    mix_path: Path  # both directions mixed
    sent_path: Path  # what the caller sent
    done_marker: Path  # appears once MixMonitor closed the files
    call_file_done: Path  # the archived call file (Status: Completed / Failed / Expired)
    instance: str
    placed_at: float

    def go_file(self, turn: int) -> Path:
        """Created by the lab when the far end's turn ``turn`` is over."""
        return self.done_marker.with_name(f"{self.number}.go{turn}")


@dataclasses.dataclass
class CallOutcome:
    number: str
    events: list[DialplanEvent]
    recording_path: Path

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]


# ---------------------------------------------------------------- the caller's ears


_FRAME_S = 0.02
# The recording grows in bursts: Asterisk writes files through a 32 KB buffer (seen here:
# 2.05 s of 8 kHz WAV per growth), 0.34 s of the 48 kHz raw slin the lab records. No growth
# for longer than a burst, on top of the silence wanted, means nothing is coming.
_WRITE_BURST_S = 0.6
_LOUD_DBFS = -40.0


@dataclasses.dataclass
class _Turn:
    """Listening for one turn of the far end on a growing recording."""

    n: int
    started: float  # wall clock
    heard_at: float | None = None  # wall clock when the far end was first heard
    loud_run: float = 0.0  # seconds of consecutive loud audio
    # Positions in the recording (seconds of audio read in this turn), not wall
    # clock: Asterisk writes the recording through a buffer, so the file grows
    # in bursts seconds behind real time; audio time is what the caller heard.
    pos: float = 0.0
    last_loud_pos: float = 0.0
    last_growth: float = 0.0  # wall clock when the recording last grew


class _Script:
    """The lab side of one scripted caller: decides when each of its turns is over."""

    def __init__(self, lab: Lab, handle: CallHandle, opts: Mapping[str, float]) -> None:
        self.lab = lab
        self.handle = handle
        self.opts = opts
        self.offset = 0  # raw slin: no header
        self.rest = b""
        self.turn: _Turn | None = None
        self.next_turn = 0 if opts["listen_first"] else 1
        self.finished = False

    def _go(self, turn: _Turn, status: str) -> None:
        self.lab._lab_event(self.handle.number, "caller-heard-end", n=turn.n, status=status)
        self.handle.go_file(turn.n).touch()
        self.turn = None
        self.next_turn = turn.n + 1

    def _new_audio(self) -> np.ndarray:
        try:
            with open(self.handle.recording_path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return np.zeros(0)
        self.offset += len(chunk)
        data = self.rest + chunk
        frame_bytes = SLN48_RATE // 50 * 2  # whole 20 ms frames, 16-bit
        usable = len(data) // frame_bytes * frame_bytes
        self.rest = data[usable:]
        samples = np.frombuffer(data[:usable], dtype="<i2").astype(np.float64) / 32768.0
        return samples.reshape(-1, frame_bytes // 2)

    def step(self, now: float) -> None:
        events = self.lab.dialplan_events(self.handle.number)
        if any(e.kind == "caller-end" for e in events):
            self.finished = True
            return
        if self.turn is None:
            # Turn n starts when the caller answered (n = 0) or finished phrase n.
            starter = "caller-answered" if self.next_turn == 0 else "caller-say-end"
            if not any(e.kind == starter and e.fields.get("n", "0") == str(self.next_turn) for e in events):
                self._new_audio()  # what was heard before (while talking) is not this turn
                return
            if self.next_turn > int(self.opts["phrases"]):
                self.finished = True
                return
            self._new_audio()
            self.turn = _Turn(self.next_turn, started=now)
        turn = self.turn
        frames = self._new_audio()
        if len(frames):
            turn.last_growth = now
        for frame in frames:
            turn.pos += _FRAME_S
            loud = 20.0 * np.log10(max(float(np.sqrt(np.mean(frame * frame))), 1e-6)) > _LOUD_DBFS
            turn.loud_run = turn.loud_run + _FRAME_S if loud else 0.0
            if loud:
                turn.last_loud_pos = turn.pos
            if turn.heard_at is None and turn.loud_run >= self.opts["noise_s"]:
                turn.heard_at = now
                self.lab._lab_event(self.handle.number, "caller-heard-start", n=turn.n)
        if turn.heard_at is None:
            if now - turn.started > self.opts["noise_timeout"]:
                self._go(turn, "TIMEOUT")
        elif turn.pos - turn.last_loud_pos >= self.opts["silence_s"]:
            self._go(turn, "SILENCE")
        elif now - max(turn.last_growth, turn.heard_at) >= self.opts["silence_s"] + _WRITE_BURST_S:
            # Neither side sends RTP (the agent between talkspurts, this caller silent: Asterisk's
            # default, no transmit_silence), so MixMonitor has no frames to write and the
            # recording stops growing: a quiet wire is silence too.
            self._go(turn, "QUIET")
        elif now - turn.heard_at > self.opts["turn_timeout"]:
            self._go(turn, "TURN_TIMEOUT")


class _Ears(threading.Thread):
    """One thread that listens to every scripted call in flight."""

    def __init__(self) -> None:
        super().__init__(name="lab-ears", daemon=True)
        self.scripts: list[_Script] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    def add(self, script: _Script) -> None:
        with self.lock:
            self.scripts.append(script)

    def run(self) -> None:
        while not self.stopping.wait(0.05):
            with self.lock:
                scripts = list(self.scripts)
            now = time.monotonic()
            for script in scripts:
                try:
                    script.step(now)
                except Exception:  # a broken call must not deafen the others
                    logging.getLogger(__name__).exception("lab ears: call %s", script.handle.number)
                    script.finished = True
            with self.lock:
                self.scripts = [s for s in self.scripts if not s.finished]


# ---------------------------------------------------------------- the lab


class Lab:
    """Both Asterisk instances, the caller script and helpers for tests."""

    app = APP
    ari_user = ARI_USER

    def __init__(self, root: Path, ports: Ports, session: str) -> None:
        self.root = root
        self.ports = ports
        self.session = session
        self.chroot_dir = f"/lab/{session}"
        self.dir = root / self.chroot_dir.lstrip("/")
        self.sounds_dir = root / "lab" / "sounds"
        self.ari_password = base64.urlsafe_b64encode(os.urandom(12)).decode()
        self.ari_url = f"http://127.0.0.1:{ports.ari}"
        self.ari_tls_url = f"https://127.0.0.1:{ports.ari_tls}"
        self.tls_dir = self.dir / "tls"  # inside the chroot: Asterisk reads the key from here
        self.tls: LabPki | None = None
        self.agent = AsteriskInstance("agent", root, f"{self.chroot_dir}/agent")
        self.caller = AsteriskInstance("caller", root, f"{self.chroot_dir}/caller")
        self._event_logs = (
            EventLog(self.agent.log_dir / _EVENTS_LOG, "agent"),
            EventLog(self.caller.log_dir / _EVENTS_LOG, "caller"),
        )
        self.recordings = self.dir / "recordings"
        # The agent's chan_websocket listener (connection_type=client): TCP, beside AudioSocket's.
        self.ws_client_port = ports.agent_media[0] + 1
        self.ws_client_user = "ari-agent"
        self.ws_client_password = base64.urlsafe_b64encode(os.urandom(12)).decode()
        # Its wss:// variant (media.websocket.tls_*): websocket_client.conf sections that
        # Asterisk dials with TLS, one trusting the lab CA and one trusting another CA.
        self.ws_client_tls_port = ports.agent_media[0] + 2
        self._mounted_proc = False
        self._calls = 0
        self.startup_seconds = 0.0
        # Events the lab itself observes (the caller's ears), merged with the dialplan's.
        self._own_events: list[DialplanEvent] = []
        self._own_lock = threading.Lock()
        self._ears = _Ears()

    # -- lifecycle

    def render(self) -> None:
        p = self.ports
        shipped = {name: (ASTERISK_CONFIG / name).read_text(encoding="utf-8") for name in _SHIPPED}
        agent_files = dict(shipped)
        agent_files["http.conf"] = _replace_once(
            shipped["http.conf"], "bindport = 8088", f"bindport = {p.ari}", "http.conf"
        )
        # TLS on a second port with a CA made for this session; plain HTTP stays on for the rest.
        self.tls = make_pki(self.tls_dir)
        agent_files["http.conf"] += (
            "tlsenable = yes\n"
            f"tlsbindaddr = 127.0.0.1:{p.ari_tls}\n"
            f"tlscertfile = {self.agent.chroot_path(self.tls.cert)}\n"
            f"tlsprivatekey = {self.agent.chroot_path(self.tls.key)}\n"
        )
        agent_files["pjsip.conf"] = _replace_once(
            shipped["pjsip.conf"], "bind = 127.0.0.1:5060", f"bind = 127.0.0.1:{p.agent_sip}", "pjsip.conf"
        )
        auth_overlay = (CALLER_CONFIG / "agent_pjsip_overlay.conf").read_text(encoding="utf-8")
        auth_overlay = auth_overlay.replace("@LAB_LOAD_AUTH_USER@", LOAD_AUTH_USER)
        agent_files["pjsip.conf"] += "\n" + auth_overlay.replace(
            "@LAB_LOAD_AUTH_PASSWORD@", LOAD_AUTH_PASSWORD
        )
        agent_files["rtp.conf"] = self._rtp_conf(shipped["rtp.conf"], p.agent_rtp)
        # chan_websocket's connection_type=client dials the agent's media listener on this slot.
        # With credentials, as an operator should set them (the agent checks them).
        agent_files["websocket_client.conf"] = _replace_once(
            shipped["websocket_client.conf"],
            "uri = ws://127.0.0.1:9093/media",
            f"uri = ws://127.0.0.1:{self.ws_client_port}/media\n"
            f"username = {self.ws_client_user}\npassword = {self.ws_client_password}",
            "websocket_client.conf",
        )
        agent_files["websocket_client.conf"] += self._wss_sections()
        agent_files["ari.conf"] = _replace_once(
            shipped["ari.conf"], "= @ARI_PASSWORD@", f"= {self.ari_password}", "ari.conf"
        )
        overlay = (CALLER_CONFIG / "agent_overlay.conf").read_text(encoding="utf-8")
        agent_files["extensions.conf"] = shipped["extensions.conf"] + "\n" + overlay
        script = (CALLER_CONFIG / "lab_script.conf").read_text(encoding="utf-8")
        agent_files["lab_script.conf"] = script
        # The dialplan's events are NOTICE lines; a log file of notices only
        # keeps them cheap to read back.
        agent_files["logger.conf"] = shipped["logger.conf"] + f"\n[logfiles](+)\n{_EVENTS_LOG} => notice\n"

        tokens = {"@CALLER_SIP_PORT@": str(p.caller_sip), "@AGENT_SIP_PORT@": str(p.agent_sip)}
        caller_files = dict(shipped)
        caller_files["ari.conf"] = agent_files["ari.conf"]
        caller_files["logger.conf"] = agent_files["logger.conf"]
        caller_files["lab_script.conf"] = script
        caller_files["rtp.conf"] = self._rtp_conf(shipped["rtp.conf"], p.caller_rtp)
        for name in ("pjsip.conf", "extensions.conf", "http.conf"):
            text = (CALLER_CONFIG / name).read_text(encoding="utf-8")
            for token, value in tokens.items():
                text = text.replace(token, value)
            caller_files[name] = text
        self.agent.prepare(agent_files)
        self.caller.prepare(caller_files)
        self.recordings.mkdir(parents=True, exist_ok=True)
        self.sounds_dir.mkdir(parents=True, exist_ok=True)

    def _wss_sections(self) -> str:
        """[ari-agent-tls] trusts the lab CA, which signed the agent's certificate (lab.tls.cert);
        [ari-agent-untrusted] trusts another CA only. Both verify the certificate and its name;
        [ari-agent-wss-uri-only] has the wss:// uri but not tls_enabled."""
        assert self.tls is not None
        sections = []
        for name, ca in (("ari-agent-tls", self.tls.ca), ("ari-agent-untrusted", self.tls.other_ca)):
            sections.append(
                f"\n[{name}]\ntype = websocket_client\nconnection_type = per_call_config\n"
                f"uri = wss://127.0.0.1:{self.ws_client_tls_port}/media\nprotocols = media\n"
                "connection_timeout = 2000\nreconnect_interval = 500\nreconnect_attempts = 3\n"
                f"username = {self.ws_client_user}\npassword = {self.ws_client_password}\n"
                f"tls_enabled = yes\nca_list_file = {self.agent.chroot_path(ca)}\n"
                "verify_server_cert = yes\nverify_server_hostname = yes\n"
            )
        # A wss:// uri without tls_enabled: Asterisk 22.10.1 then connects in plain text.
        sections.append(
            sections[0]
            .replace("[ari-agent-tls]", "[ari-agent-wss-uri-only]")
            .replace("tls_enabled = yes", "tls_enabled = no")
        )
        return "".join(sections)

    @staticmethod
    def _rtp_conf(text: str, ports: tuple[int, int]) -> str:
        text = _replace_once(text, "rtpstart = 10000", f"rtpstart = {ports[0]}", "rtp.conf")
        return _replace_once(text, "rtpend = 20000", f"rtpend = {ports[1]}", "rtp.conf")

    def start(self, timeout: float = 60.0) -> None:
        busy = [
            f"{'tcp' if kind == socket.SOCK_STREAM else 'udp'} {port}"
            for port, kind in (
                (self.ports.ari, socket.SOCK_STREAM),
                (self.ports.ari_tls, socket.SOCK_STREAM),
                (self.ports.agent_sip, socket.SOCK_DGRAM),
                (self.ports.caller_sip, socket.SOCK_DGRAM),
            )
            if not _port_free(port, kind)
        ]
        if busy:
            raise LabError(f"lab ports already in use on 127.0.0.1: {busy} (another Asterisk?)")
        if not _proc_mounted(self.root):
            subprocess.run(["mount", "-t", "proc", "proc", str(self.root / "proc")], check=True)
            self._mounted_proc = True
        self.render()
        self._ears.start()
        self.agent.start()
        self.caller.start()
        self.agent.wait_booted(timeout)
        self.caller.wait_booted(timeout)
        self._wait_ari(timeout)

    def _wait_ari(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            try:
                status, _ = self.ari_request("GET", "/asterisk/info")
                if status == 200:
                    return
                last = status
            except OSError as exc:
                last = exc
            time.sleep(0.2)
        raise LabError(
            f"ARI not ready at {self.ari_url} after {timeout:.0f} s ({last})\n{self.agent.log_tail()}"
        )

    def close(self, *, unmount_proc: bool = True) -> None:
        self._ears.stopping.set()
        errors = []
        for inst in (self.caller, self.agent):
            try:
                inst.stop()
            except Exception as exc:  # teardown: stop the other one regardless
                errors.append(f"{inst.name}: {exc}")
        if self._mounted_proc and unmount_proc:
            subprocess.run(["umount", str(self.root / "proc")], check=False)
            self._mounted_proc = False
        if errors:
            raise LabError("; ".join(errors))

    def hangup_all(self) -> None:
        """Hang up every channel on both instances and destroy all bridges (isolation between tests)."""
        for inst in (self.caller, self.agent):
            if inst.proc is not None and inst.proc.poll() is None:
                with contextlib.suppress(LabError, subprocess.TimeoutExpired):
                    inst.rx("channel request hangup all")
        with contextlib.suppress(OSError, LabError):
            for bridge in self.ari("GET", "/bridges") or []:
                self.ari_request("DELETE", f"/bridges/{bridge['id']}")

    # -- ARI

    def ari_request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        timeout: float = 10.0,
    ) -> tuple[int, Any]:
        """(status, decoded JSON body or None) for ``/ari<path>``; never raises on HTTP errors."""
        url = f"{self.ari_url}/ari{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method.upper())
        token = base64.b64encode(f"{self.ari_user}:{self.ari_password}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        if not raw:
            return status, None
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    def ari(self, method: str, path: str, **kwargs: Any) -> Any:
        """Like ari_request but raises LabError unless the status is 2xx; returns the body."""
        status, body = self.ari_request(method, path, **kwargs)
        if not 200 <= status < 300:
            raise LabError(f"ARI {method} {path} -> {status}: {body}")
        return body

    @property
    def ari_ws_url(self) -> str:
        query = urllib.parse.urlencode(
            {"app": self.app, "api_key": f"{self.ari_user}:{self.ari_password}", "subscribeAll": "false"}
        )
        return f"ws://127.0.0.1:{self.ports.ari}/ari/events?{query}"

    # -- speech

    def speech(self, text: str, *, voice: str = "en-us", speed: int = 150) -> str:
        """A phrase spoken by espeak-ng, as a sound name for Playback() on either instance.

        Written as 8 kHz ``.wav`` and 16 kHz ``.wav16``: Asterisk plays whichever
        needs less transcoding (G.722 calls get the wideband one). Cached by
        text and voice across sessions.
        """
        key = hashlib.sha256(f"{voice}|{speed}|{text}".encode()).hexdigest()[:20]
        name = f"tts-{key}"
        base = self.sounds_dir / name
        if not (base.with_suffix(".wav").exists() and base.with_suffix(".wav16").exists()):
            self.sounds_dir.mkdir(parents=True, exist_ok=True)
            raw = self.sounds_dir / f".{name}.{os.getpid()}.raw.wav"
            try:
                subprocess.run(
                    ["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(raw), text],
                    check=True,
                    capture_output=True,
                )
                for suffix, rate in ((".wav16", 16000), (".wav", 8000)):
                    tmp = self.sounds_dir / f".{name}.{os.getpid()}.tmp.wav"
                    subprocess.run(
                        [
                            "sox",
                            str(raw),
                            "-r",
                            str(rate),
                            "-c",
                            "1",
                            "-b",
                            "16",
                            "-e",
                            "signed-integer",
                            str(tmp),
                        ],
                        check=True,
                        capture_output=True,
                    )
                    os.replace(tmp, base.with_suffix(suffix))
            except (OSError, subprocess.CalledProcessError) as exc:
                raise LabError(f"could not synthesise {text!r} with espeak-ng/sox: {exc}") from exc
            finally:
                raw.unlink(missing_ok=True)
        return "/lab/sounds/" + name

    # -- calls

    def new_number(self) -> str:
        """A caller number unique to this session (digits only)."""
        self._calls += 1
        return f"55{self.ports.slot}{os.getpid() % 1000:03d}{self._calls:04d}"

    def place_call(
        self,
        phrases: Sequence[str] = (),
        *,
        via: Literal["local", "sip"] = "local",
        codec: str = "ulaw",
        number: str | None = None,
        extension: str = "100",
        context: str = DEMO_CONTEXT,
        listen_first: bool = True,
        noise_ms: int = 300,
        noise_timeout: float = 15.0,
        silence_ms: int = 1200,
        turn_timeout: float = 30.0,
        tail: float = 3.0,
        max_duration: float = 120.0,
        answer_timeout: float = 30.0,
    ) -> CallHandle:
        """Place a real call whose caller side runs the scripted caller.

        ``phrases`` are texts (spoken with :meth:`speech`) or sound paths
        starting with ``/``. The caller waits for the far end to speak and go
        quiet (if ``listen_first``), then plays each phrase and waits for the
        reply the same way, stays ``tail`` seconds and hangs up.
        ``via="local"``: ``Local/<extension>@<context>`` on the agent instance;
        ``via="sip"``: ``PJSIP/<extension>@agent-<codec>`` from the caller
        instance (``context`` is then the trunk's, ``from-caller``).
        """
        if via not in ("local", "sip"):
            raise LabError(f"via must be 'local' or 'sip', not {via!r}")
        if via == "sip" and codec not in CODECS:
            raise LabError(f"codec must be one of {CODECS}, not {codec!r}")
        if number is None:
            number = self.new_number()
        if not number.isdigit():
            raise LabError(f"number must be digits (it is the correlation key): {number!r}")
        sounds = [p if p.startswith(("/", "dtmf:")) else self.speech(p) for p in phrases]
        inst = self.agent if via == "local" else self.caller
        channel = f"Local/{extension}@{context}/n" if via == "local" else f"PJSIP/{extension}@agent-{codec}"
        rec_base = self.recordings / f"{number}"
        rec_chroot = inst.chroot_path(rec_base)
        variables = {
            "LAB_NUMBER": number,
            "LAB_REC": rec_chroot,
            "LAB_NPHRASES": str(len(sounds)),
            "LAB_LISTEN_FIRST": "1" if listen_first else "0",
            # Only if the lab's ears fail: go on after the longest a turn may take.
            "LAB_POLL_MAX": str(int((noise_timeout + turn_timeout + silence_ms / 1000 + 5) / 0.05)),
            "LAB_TAIL": f"{tail:g}",
            "LAB_MAX": f"{int(max_duration)}",
        }
        for i, sound in enumerate(sounds, start=1):
            variables[f"LAB_PHRASE_{i}"] = sound
        lines = [
            f"Channel: {channel}",
            f'CallerID: "Lab {number}" <{number}>',
            "MaxRetries: 0",
            f"WaitTime: {int(answer_timeout)}",
            "Context: lab-caller",
            "Extension: s",
            "Priority: 1",
            "Archive: yes",
            *(f"Setvar: {k}={v}" for k, v in variables.items()),
        ]
        name = f"lab-{number}.call"
        tmp = inst.spool / "tmp" / name
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.replace(tmp, inst.spool / "outgoing" / name)
        handle = CallHandle(
            number=number,
            via=via,
            codec=codec if via == "sip" else "slin",
            extension=extension,
            phrases=list(phrases),
            recording_path=rec_base.with_name(rec_base.name + "-rx.sln48"),
            mix_path=rec_base.with_name(rec_base.name + "-mix.wav"),
            sent_path=rec_base.with_name(rec_base.name + "-tx.wav"),
            done_marker=rec_base.with_name(rec_base.name + ".done"),
            call_file_done=inst.spool / "outgoing_done" / name,
            instance=inst.name,
            placed_at=time.time(),
        )
        opts = {
            "listen_first": float(listen_first),
            "phrases": float(len(sounds)),
            "noise_s": noise_ms / 1000,
            "noise_timeout": noise_timeout,
            "silence_s": silence_ms / 1000,
            "turn_timeout": turn_timeout,
        }
        self._ears.add(_Script(self, handle, opts))
        return handle

    def _lab_event(self, number: str, kind: str, **fields: object) -> None:
        details = " ".join(f"{k}={v}" for k, v in fields.items())
        event = DialplanEvent(
            at=time.time(),
            number=number,
            kind=kind,
            fields={k: str(v) for k, v in fields.items()},
            raw=f"{time.time():.3f}|{number}|{kind}|{details}",
            instance="lab",
        )
        with self._own_lock:
            self._own_events.append(event)

    def _call_failure(self, handle: CallHandle) -> str | None:
        try:
            text = handle.call_file_done.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        match = re.search(r"(?m)^Status: (\w+)", text)
        if match and match.group(1) in ("Failed", "Expired"):
            return match.group(1)
        return None

    def _call_ended(self, handle: CallHandle) -> bool:
        if self._call_failure(handle):
            status = self._call_failure(handle)
            raise LabError(
                f"call {handle.number} via {handle.via} was never answered (call file status {status}); "
                f"events: {[e.raw for e in self.dialplan_events(handle.number)]}"
            )
        ended = any(e.kind == "caller-end" for e in self.dialplan_events(handle.number))
        return ended and handle.done_marker.exists()

    def wait_call_ended(self, handle: CallHandle, timeout: float = 60.0) -> CallOutcome:
        """Block until the caller side hung up and its recording is closed."""
        self._poll(lambda: self._call_ended(handle), timeout, f"call {handle.number} to end")
        return CallOutcome(handle.number, self.dialplan_events(handle.number), handle.recording_path)

    async def wait_call_ended_async(self, handle: CallHandle, timeout: float = 60.0) -> CallOutcome:  # noqa: ASYNC109
        await self._poll_async(lambda: self._call_ended(handle), timeout, f"call {handle.number} to end")
        return CallOutcome(handle.number, self.dialplan_events(handle.number), handle.recording_path)

    # -- dialplan events

    def dialplan_events(self, number: str | None = None) -> list[DialplanEvent]:
        """Events of both instances (agent dialplan and caller script), oldest first.

        Kinds from the shipped dialplan: ``stasis-enter``, ``stasis-return``
        (fields STASISSTATUS, AI_AGENT_STATUS), ``reception`` (extension 200
        reached), ``hangup`` (h extension: AI_AGENT_STATUS, cause); from the
        caller script: ``caller-answered`` (codec), ``caller-say-start`` /
        ``-end`` (n), ``caller-turn-over`` (n), ``caller-hangup``,
        ``caller-end``; from the lab's ears (instance "lab"):
        ``caller-heard-start`` (n) and ``caller-heard-end`` (n, status SILENCE,
        TIMEOUT = nothing heard, or TURN_TIMEOUT). Turn n is what the far end
        says after phrase n (turn 0: before the first phrase).
        """
        with self._own_lock:
            own = list(self._own_events)
        events = [e for log in self._event_logs for e in log.read() if number is None or e.number == number]
        events += [e for e in own if number is None or e.number == number]
        events.sort(key=lambda e: e.at)
        return events

    def _find_event(self, number: str, kind: str) -> DialplanEvent | None:
        return next((e for e in self.dialplan_events(number) if e.kind == kind), None)

    def wait_dialplan_event(self, number: str, kind: str, timeout: float = 30.0) -> DialplanEvent:
        found: list[DialplanEvent] = []

        def check() -> bool:
            event = self._find_event(number, kind)
            if event is not None:
                found.append(event)
            return event is not None

        self._poll(check, timeout, f"dialplan event {kind!r} for {number}")
        return found[0]

    async def wait_dialplan_event_async(self, number: str, kind: str, timeout: float = 30.0) -> DialplanEvent:  # noqa: ASYNC109
        found: list[DialplanEvent] = []

        def check() -> bool:
            event = self._find_event(number, kind)
            if event is not None:
                found.append(event)
            return event is not None

        await self._poll_async(check, timeout, f"dialplan event {kind!r} for {number}")
        return found[0]

    def _timeout_message(self, what: str, timeout: float) -> str:
        recent = [e.raw for e in self.dialplan_events()[-15:]]
        return f"timed out after {timeout:g} s waiting for {what}; recent dialplan events:\n" + "\n".join(
            recent
        )

    def _poll(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise LabError(self._timeout_message(what, timeout))
            time.sleep(0.1)

    async def _poll_async(self, check: Callable[[], bool], timeout: float, what: str) -> None:  # noqa: ASYNC109
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise LabError(self._timeout_message(what, timeout))
            await asyncio.sleep(0.1)


_EVENTS_LOG = "lab-events.log"
_SHIPPED = (
    "modules.conf",
    "http.conf",
    "ari.conf",
    "rtp.conf",
    "pjsip.conf",
    "extensions.conf",
    "logger.conf",
    "chan_websocket.conf",
    "websocket_client.conf",
)


def _prune_old_sessions(root: Path, keep: int) -> None:
    lab = root / "lab"
    if not lab.is_dir():
        return
    sessions = sorted(
        (p for p in lab.iterdir() if p.is_dir() and p.name != "sounds" and not _session_alive(p.name)),
        key=lambda p: p.stat().st_mtime,
    )
    for old in sessions[:-keep] if keep else sessions:
        shutil.rmtree(old, ignore_errors=True)


def _session_alive(name: str) -> bool:
    """Whether the test process that owns a session directory (<time>-<pid>-s<slot>) still runs."""
    parts = name.split("-")
    if len(parts) < 4 or not parts[2].isdigit():
        return False
    try:
        os.kill(int(parts[2]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def running_lab(root: Path | None = None, *, timeout: float = 90.0) -> Iterator[Lab]:
    """Build/reuse the rootfs, start both instances, yield the Lab, always stop them."""
    if os.geteuid() != 0:
        raise LabError("the Asterisk lab needs root (chroot, mount); run the integration tests as root")
    root = ensure_rootfs(root or DEFAULT_ROOT)
    slot_lock = SlotLock()
    slot = slot_lock.acquire()
    try:
        _prune_old_sessions(root, KEEP_OLD_SESSIONS)
        session = time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}-s{slot}"
        lab = Lab(root, Ports.for_slot(slot), session)
        try:
            started = time.monotonic()
            lab.start(timeout=timeout)
            lab.startup_seconds = time.monotonic() - started
            yield lab
        finally:
            lab.close(unmount_proc=slot_lock.others_idle())
    finally:
        slot_lock.release()


# ---------------------------------------------------------------- the agent under test


class AgentProcess:
    """``python -m ari_agent.cli run`` as a subprocess, pointed at the lab."""

    def __init__(
        self, lab: Lab, env: Mapping[str, str], records_dir: Path, log_path: Path, args: Sequence[str]
    ):
        self.lab = lab
        self.records_dir = records_dir
        self.log_path = log_path
        self.http_port = int(env["AGENT_HTTP__PORT"])
        log = open(log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ari_agent.cli", *args],
                cwd=REPO,
                env={**os.environ, **env},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            log.close()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    def http_get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        url = f"http://127.0.0.1:{self.http_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                return resp.status, resp.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LabError(f"agent exited with {self.proc.returncode} before ready:\n{self.log_tail()}")
            try:
                status, _ = self.http_get("/readyz", timeout=2)
                if status == 200:
                    return
                last = status
            except OSError as exc:
                last = exc
            time.sleep(0.2)
        raise LabError(f"agent not ready after {timeout:g} s (last /readyz: {last}):\n{self.log_tail()}")

    def records(self) -> list[dict[str, Any]]:
        """The call records written so far (calls.jsonl), oldest first."""
        path = self.records_dir / "calls.jsonl"
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in lines if line.strip()]

    def wait_record(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for record in self.records():
                if predicate(record):
                    return record
            if time.monotonic() > deadline:
                raise LabError(f"no matching call record after {timeout:g} s; records: {self.records()}")
            time.sleep(0.1)

    def record_for(self, number: str, timeout: float = 10.0) -> dict[str, Any]:
        """The call record of the call with this caller number."""
        return self.wait_record(lambda r: (r.get("caller") or {}).get("number") == number, timeout)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM (graceful drain), then SIGKILL after ``timeout``; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode

    def kill(self) -> int:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        return self.proc.returncode


class AgentFactory:
    """Starts agents against the lab; every one it started is stopped at teardown."""

    def __init__(self, lab: Lab, workdir: Path) -> None:
        self.lab = lab
        self.workdir = workdir
        self.started: list[AgentProcess] = []

    def base_env(self, records_dir: Path) -> dict[str, str]:
        p = self.lab.ports
        return {
            "AGENT_ARI__URL": self.lab.ari_url,
            "AGENT_ARI__USERNAME": self.lab.ari_user,
            "AGENT_ARI__PASSWORD": self.lab.ari_password,
            "AGENT_ARI__APP": self.lab.app,
            "AGENT_MEDIA__BIND_HOST": "127.0.0.1",
            "AGENT_MEDIA__PORT_MIN": str(p.agent_media[0]),
            "AGENT_MEDIA__PORT_MAX": str(p.agent_media[1]),
            "AGENT_HTTP__HOST": "127.0.0.1",
            "AGENT_HTTP__PORT": str(p.agent_http),
            "AGENT_RECORDS__DIR": str(records_dir),
            # Next to the records: a restarted agent shares it, parallel tests don't.
            "AGENT_STORE__PATH": str(records_dir / "calls.db"),
            # Teardown stops agents with SIGTERM: calls still up go back quickly.
            "AGENT_CALLS__DRAIN_TIMEOUT": "2",
        }

    def start(
        self,
        env: Mapping[str, str] | None = None,
        *,
        records_dir: Path | None = None,
        args: Sequence[str] = ("run",),
        ready_timeout: float = 30.0,
        wait_ready: bool = True,
    ) -> AgentProcess:
        """Start an agent; pass the same ``records_dir`` to a restarted agent to share calls.jsonl."""
        if records_dir is None:
            records_dir = self.workdir / f"records-{uuid.uuid4().hex[:8]}"
        records_dir.mkdir(parents=True, exist_ok=True)
        full_env = self.base_env(records_dir)
        full_env.update(env or {})
        log_path = self.workdir / f"agent-{len(self.started) + 1}.log"
        agent = AgentProcess(self.lab, full_env, records_dir, log_path, args)
        self.started.append(agent)
        if wait_ready:
            try:
                agent.wait_ready(ready_timeout)
            except LabError:
                agent.kill()
                raise
        return agent

    def stop_all(self) -> None:
        for agent in self.started:
            agent.stop()


def metric_sum(agent: AgentProcess, prefix: str) -> float:
    """Sum of the agent's samples whose name (with labels, sorted by name) starts with ``prefix``."""
    status, body = agent.http_get("/metrics")
    assert status == 200
    total = 0.0
    for line in body.splitlines():
        m = re.match(r"^(ari_agent_[a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$", line)
        if m and (m.group(1) + (m.group(2) or "")).startswith(prefix):
            total += float(m.group(3))
    return total


def metric(agent: AgentProcess, name: str, **labels: str) -> float:
    """One sample of the agent's metrics, by its name and exactly these labels (0 when absent)."""
    _, text = agent.http_get("/metrics")
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.escape(name) + (r"\{" + re.escape(want) + r"\}" if want else "") + r" ([0-9.e+]+)"
    match = re.search(pattern, text)
    return float(match.group(1)) if match else 0.0
