"""Kamailio in front of two Asterisk + agent nodes, all on loopback (issue 20).

Built beside the session's lab (same root filesystem, port slot and /proc
mount), under its session directory, so the lab's clean-up rules cover it.
Each node has its own loopback address, ``127.20.<slot>.1`` and ``.2``, so it
keeps the standard ports (SIP 5060, ARI 8088, agent HTTP 8090): the node looks
like a machine of its own. Kamailio listens on ``127.20.<slot>.10`` with the
shipped ``deploy/kamailio/kamailio.cfg`` (defines override its addresses and
a short ``ds_ping_interval``); callers are SIPp processes on ``.20``. Nothing
leaves the machine, and the packaged Kamailio service is never used.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.integration.lab import (
    APP,
    ARI_USER,
    ASTERISK_CONFIG,
    AgentProcess,
    AsteriskInstance,
    EventLog,
    Lab,
    LabError,
)

REPO = Path(__file__).resolve().parents[2]
KAMAILIO_DIR = REPO / "deploy" / "kamailio"
SIP_PORT = 5060
EVENTS_LOG = "kam-events.log"
# Seconds between OPTIONS probes here (the shipped default is 10): the tests wait on detection.
PING_INTERVAL = 1
# How long an INVITE to a silent node waits before the next node is tried (ms).
FR_TIMER = 1500
_SHIPPED = ("asterisk.conf", "modules.conf", "pjsip.conf", "http.conf", "rtp.conf", "ari.conf", "logger.conf")


def _replace_once(text: str, old: str, new: str) -> str:
    if text.count(old) != 1:
        raise LabError(f"expected exactly one {old!r} in a shipped config, found {text.count(old)}")
    return text.replace(old, new)


def _wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)


class Node:
    """One Asterisk with the node dialplan (deploy/kamailio/) and one agent, on its own address."""

    def __init__(self, name: str, lab: Lab, address: str, kamailio_address: str, rtp: tuple[int, int]):
        self.name = name
        self.lab = lab
        self.address = address
        self.uri = f"sip:{address}:{SIP_PORT}"
        self.asterisk = AsteriskInstance(f"node-{name}", lab.root, f"{lab.chroot_dir}/kamailio/node-{name}")
        self.password = base64.urlsafe_b64encode(os.urandom(12)).decode()
        self.events = EventLog(self.asterisk.log_dir / EVENTS_LOG, self.asterisk.name)
        self.agent: AgentProcess | None = None
        self.workdir = self.asterisk.base / "agent"
        self._render(kamailio_address, rtp)

    def _render(self, kamailio_address: str, rtp: tuple[int, int]) -> None:
        shipped = {name: (ASTERISK_CONFIG / name).read_text(encoding="utf-8") for name in _SHIPPED}
        files = dict(shipped)
        files.pop("asterisk.conf")  # AsteriskInstance.prepare renders it with this node's dirs
        files["http.conf"] = _replace_once(
            shipped["http.conf"], "bindaddr = 127.0.0.1", f"bindaddr = {self.address}"
        )
        files["ari.conf"] = _replace_once(shipped["ari.conf"], "= @ARI_PASSWORD@", f"= {self.password}")
        files["rtp.conf"] = _replace_once(
            _replace_once(shipped["rtp.conf"], "rtpstart = 10000", f"rtpstart = {rtp[0]}"),
            "rtpend = 20000",
            f"rtpend = {rtp[1]}",
        )
        pjsip = _replace_once(
            shipped["pjsip.conf"], "bind = 127.0.0.1:5060", f"bind = {self.address}:{SIP_PORT}"
        )
        node = (KAMAILIO_DIR / "pjsip-node.conf").read_text(encoding="utf-8")
        node = _replace_once(node, "match = 10.0.0.10", f"match = {kamailio_address}")
        # Loopback only: RTP from and to this node's own address (Asterisk would advertise the
        # machine's interface otherwise).
        node = _replace_once(
            node,
            "context = from-kamailio\n",
            f"context = from-kamailio\nmedia_address = {self.address}\nbind_rtp_to_media_address = yes\n",
        )
        files["pjsip.conf"] = pjsip + "\n" + node
        files["extensions-node.conf"] = (KAMAILIO_DIR / "extensions-node.conf").read_text(encoding="utf-8")
        files["extensions.conf"] = (ASTERISK_CONFIG / "extensions.conf").read_text(
            encoding="utf-8"
        ) + "\n#include extensions-node.conf\n"
        files["logger.conf"] = shipped["logger.conf"] + f"\n[logfiles](+)\n{EVENTS_LOG} => notice\n"
        self.asterisk.prepare(files)

    # -- Asterisk

    def start_asterisk(self, timeout: float = 60.0) -> None:
        self.asterisk.start()
        self.asterisk.wait_booted(timeout)

    def stop_asterisk(self) -> None:
        self.asterisk.stop()

    @property
    def asterisk_running(self) -> bool:
        return self.asterisk.proc is not None and self.asterisk.proc.poll() is None

    # -- agent

    def agent_env(self, records: Path) -> dict[str, str]:
        return {
            "AGENT_ARI__URL": f"http://{self.address}:8088",
            "AGENT_ARI__USERNAME": ARI_USER,
            "AGENT_ARI__PASSWORD": self.password,
            "AGENT_ARI__APP": APP,
            "AGENT_INSTANCE_ID": f"node-{self.name}",
            "AGENT_MEDIA__BIND_HOST": self.address,
            "AGENT_MEDIA__PORT_MIN": "40000",
            "AGENT_MEDIA__PORT_MAX": "40199",
            "AGENT_HTTP__HOST": self.address,
            "AGENT_HTTP__PORT": "8090",
            "AGENT_RECORDS__DIR": str(records),
            "AGENT_STORE__PATH": str(records / "calls.db"),
            "AGENT_CALLS__DRAIN_TIMEOUT": "5",
        }

    def start_agent(self) -> AgentProcess:
        records = self.workdir / f"records-{uuid.uuid4().hex[:8]}"
        records.mkdir(parents=True)
        agent = AgentProcess(self.lab, self.agent_env(records), records, self.workdir / "agent.log", ("run",))
        # AgentProcess reads /readyz on 127.0.0.1; this agent listens on the node's address.
        agent.http_get = self.http_get  # type: ignore[method-assign]
        self.agent = agent
        agent.wait_ready(30)
        return agent

    def http_get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://{self.address}:8090{path}", timeout=timeout) as resp:
                return resp.status, resp.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    @property
    def agent_running(self) -> bool:
        return self.agent is not None and self.agent.proc.poll() is None

    def numbers(self) -> set[str]:
        """Caller numbers of the calls this node's agents recorded (every agent it ever ran)."""
        found: set[str] = set()
        for path in self.workdir.glob("records-*/calls.jsonl"):
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    import json

                    record: dict[str, Any] = json.loads(line)
                    found.add(str((record.get("caller") or {}).get("number")))
        return found

    def dialplan_kinds(self, number: str) -> list[str]:
        return [e.kind for e in self.events.read() if e.number == number]


class Kamailio:
    """Kamailio from the shipped config, in the foreground, on its own address and control socket."""

    def __init__(self, workdir: Path, address: str, nodes: Sequence[Node]) -> None:
        self.workdir = workdir
        self.address = address
        self.ctl = workdir / "kamailio_ctl"
        self.ds_list = workdir / "dispatcher.list"
        self.log_path = workdir / "kamailio.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.ds_list.write_text("".join(f"1 {n.uri}\n" for n in nodes), encoding="utf-8")

    def start(self) -> None:
        if shutil.which("kamailio") is None:
            raise LabError("kamailio not found: install Debian's kamailio (make deps does)")
        defines = {
            "LISTEN": f"udp:{self.address}:{SIP_PORT}",
            "DS_LIST": f'"{self.ds_list}"',
            "CTL_SOCKET": f'"unix:{self.ctl}"',
            "DS_PING_INTERVAL": str(PING_INTERVAL),
            "DS_PROBING_THRESHOLD": "1",
            "FR_TIMER": str(FR_TIMER),
        }
        cmd = ["kamailio", "-f", str(KAMAILIO_DIR / "kamailio.cfg"), "-DD", "-E", "-m", "64", "-M", "8"]
        cmd += ["-Y", str(self.workdir), "-P", str(self.workdir / "kamailio.pid")]
        for key, value in defines.items():
            cmd += ["-A", f"{key}={value}"]
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        finally:
            log.close()
        _wait(lambda: self._alive() and self.ctl.exists(), 20, "Kamailio's control socket")

    def _alive(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise LabError(f"kamailio exited:\n{self.log_tail()}")
        return True

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    def kamcmd(self, *args: str) -> str:
        proc = subprocess.run(
            ["kamcmd", "-s", f"unix:{self.ctl}", *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if proc.returncode != 0:
            raise LabError(f"kamcmd {' '.join(args)} failed: {proc.stdout}{proc.stderr}")
        return proc.stdout

    def states(self) -> dict[str, str]:
        """Node URI -> dispatcher flags (``AP`` active, ``IP`` inactive and probed, ``DX`` disabled...)."""
        text = self.kamcmd("dispatcher.list")
        return dict(re.findall(r"URI:\s*(\S+)\s+FLAGS:\s*(\S+)", text))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            # The whole process group: Kamailio forks its workers.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.proc = None


_SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="ari-agent through Kamailio">
  <send retrans="500"><![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Kamailio test" <sip:[field0]@[local_ip]:[local_port]>;tag=[pid]K[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:[field0]@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=- [call_number] 1 IN IP[local_ip_type] [local_ip]
      s=kamailio test
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000
      a=sendrecv
  ]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rrs="true"/>
  <send><![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      From: "Kamailio test" <sip:[field0]@[local_ip]:[local_port]>;tag=[pid]K[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0
  ]]></send>
  <pause milliseconds="{hold_ms}"/>
  <send retrans="500"><![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      From: "Kamailio test" <sip:[field0]@[local_ip]:[local_port]>;tag=[pid]K[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0
  ]]></send>
  <recv response="200"/>
</scenario>
"""


@dataclass
class Calls:
    """One SIPp run and its caller numbers; ``wait()`` is SIPp's exit code (0: all answered and ended)."""

    numbers: list[str]
    proc: subprocess.Popen[bytes]
    log_path: Path

    def wait(self, timeout: float = 90.0) -> int:
        return self.proc.wait(timeout=timeout)

    def log_tail(self, chars: int = 3000) -> str:
        """SIPp's error file, then its own output (why it exited: a bind error, a bad argument)."""
        files = (self.log_path, self.log_path.with_name("sipp.out"))
        return "\n".join(f.read_text(errors="replace")[-chars:] for f in files if f.exists())


class Cluster:
    """Kamailio + two nodes; ``call()`` places SIPp calls through Kamailio."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        net = f"127.20.{lab.ports.slot}"
        self.kamailio_address = f"{net}.10"
        self.caller_address = f"{net}.20"
        self.workdir = lab.dir / "kamailio"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.nodes = [
            Node("a", lab, f"{net}.1", self.kamailio_address, (10000, 14999)),
            Node("b", lab, f"{net}.2", self.kamailio_address, (15000, 19999)),
        ]
        self.kamailio = Kamailio(self.workdir, self.kamailio_address, self.nodes)
        self._runs = 0
        # Every SIPp started, so a test that fails mid-call leaves none behind.
        self._sipps: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        for node in self.nodes:
            node.start_asterisk()
        for node in self.nodes:
            node.start_agent()
        self.kamailio.start()
        self.wait_states({n.uri: "AP" for n in self.nodes}, 20)

    def stop(self) -> None:
        # One failing stop must not leave the rest running.
        with contextlib.ExitStack() as stack:
            for node in self.nodes:
                stack.callback(node.stop_asterisk)
                if node.agent is not None:
                    stack.callback(node.agent.kill)
            stack.callback(self.kamailio.stop)
            stack.callback(self._stop_sipps)

    def _stop_sipps(self) -> None:
        for proc in self._sipps:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        self._sipps.clear()

    def heal(self) -> None:
        """Both nodes up with their agents and active in Kamailio (between tests)."""
        self._stop_sipps()  # a failed test's callers would land calls in the next one
        for node in self.nodes:
            if not node.asterisk_running:
                node.start_asterisk()
            if not node.agent_running:
                node.start_agent()
            # An agent whose Asterisk was restarted reconnects on its own back-off: until it has,
            # its node refuses calls (503) and a test would measure the previous one.
            assert node.agent is not None
            node.agent.wait_ready(30)
            if self.kamailio.states().get(node.uri) != "AP":
                self.kamailio.kamcmd("dispatcher.set_state", "ap", "1", node.uri)
        self.wait_states({n.uri: "AP" for n in self.nodes}, 20)

    def wait_states(self, want: dict[str, str], timeout: float) -> float:
        """Poll ``kamcmd dispatcher.list`` until each node has its flags; the seconds it took."""
        started = time.monotonic()
        _wait(
            lambda: all(self.kamailio.states().get(uri) == flags for uri, flags in want.items()),
            timeout,
            f"dispatcher states {want} (now {self.kamailio.states()})",
        )
        return time.monotonic() - started

    def call(self, count: int, *, hold_s: float = 1.5, rate: float = 5.0) -> Calls:
        """``count`` SIPp calls through Kamailio to extension 100, each held ``hold_s`` then hung up."""
        self._runs += 1
        run = self.workdir / f"sipp-{self._runs}"
        run.mkdir(parents=True, exist_ok=True)
        numbers = [self.lab.new_number() for _ in range(count)]
        (run / "numbers.csv").write_text(
            "SEQUENTIAL\n" + "".join(f"{n};\n" for n in numbers), encoding="utf-8"
        )
        (run / "scenario.xml").write_text(
            _SCENARIO.replace("{hold_ms}", str(int(hold_s * 1000))), encoding="utf-8"
        )
        sipp = shutil.which("sipp")
        if sipp is None:
            raise LabError("sipp not found: install Debian's sip-tester (make deps does)")
        cmd = [
            sipp,
            f"{self.kamailio_address}:{SIP_PORT}",
            "-sf", str(run / "scenario.xml"),
            "-inf", str(run / "numbers.csv"),
            "-s", "100",
            "-m", str(count),
            "-r", f"{rate:g}",
            "-i", self.caller_address,
            "-mi", self.caller_address,
            "-p", "0",
            "-mp", str(20000 + 100 * self._runs % 5000),
            "-nostdin",
            "-timeout", "60s",
            "-trace_err", "-error_file", str(run / "errors.log"),
        ]  # fmt: skip
        log_path = run / "sipp.out"
        log = open(log_path, "ab")
        try:
            proc = subprocess.Popen(
                cmd, cwd=run, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        finally:
            log.close()
        self._sipps.append(proc)
        return Calls(numbers, proc, run / "errors.log")

    def where(self, numbers: Sequence[str], timeout: float = 20.0) -> dict[str, list[str]]:
        """Node name -> the numbers its agent answered; waits until each number is found once."""

        def spread() -> dict[str, list[str]]:
            seen = {n.name: n.numbers() for n in self.nodes}
            return {name: [x for x in numbers if x in got] for name, got in seen.items()}

        with contextlib.suppress(AssertionError):
            _wait(lambda: sum(map(len, spread().values())) >= len(numbers), timeout, "every call's record")
        return spread()


@contextlib.contextmanager
def running_cluster(lab: Lab) -> Iterator[Cluster]:
    cluster = Cluster(lab)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
