"""The stack with no container engine: Asterisk chrooted in the local root filesystem
(rendered config in its own directory tree, beside the test lab's) and the agent
as a local process; pid files and logs in the state directory.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from devstack.stackbase import (
    ASTERISK_DIR,
    BOOT_TIMEOUT,
    REPO,
    PoolMember,
    Stack,
    StackError,
    check_ports,
    pool_members,
    run_quiet,
    save_state,
    say,
    wait_ready,
)


class RootfsStack:
    """Asterisk chrooted in the local root filesystem plus the agent as a local process."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.root = stack.rootfs
        self.chroot_base = f"/srv/ari-agent/{stack.project}"
        self.base = self.root / self.chroot_base.lstrip("/")
        self.conf = f"{self.chroot_base}/etc/asterisk.conf"
        self.state = stack.state_dir

    def _pidfile(self, name: str) -> Path:
        return self.state / f"{name}.pid"

    def log(self, name: str) -> Path:
        return self.state / f"{name}.log"

    def pid(self, name: str) -> int | None:
        try:
            pid = int(self._pidfile(name).read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        return pid

    def _ensure_prerequisites(self, asterisk: bool) -> None:
        if os.geteuid() != 0 and asterisk:
            raise StackError("running Asterisk from the root filesystem needs root (chroot); run as root")
        if asterisk and not (self.root / "usr" / "sbin" / "asterisk").exists():
            say(f"building the Asterisk root filesystem at {self.root} (once, about a minute)")
            proc = subprocess.run(["sh", str(ASTERISK_DIR / "rootfs.sh"), str(self.root)], check=False)
            if proc.returncode != 0:
                raise StackError(f"asterisk/rootfs.sh failed (exit {proc.returncode})")
        missing = [m for m in ("aiohttp", "numpy", "pydantic_settings", "pocketsphinx") if not _has(m)]
        if missing:
            say(f"Python packages missing ({', '.join(missing)}): running `make install`")
            if subprocess.run(["make", "-C", str(REPO), "install"], check=False).returncode != 0:
                raise StackError("`make install` failed")

    def agent_names(self) -> list[str]:
        """The agents with a pid file: ``agent`` (up-agent) and ``agent-<n>`` (the pool)."""
        names = [p.stem for p in self.state.glob("agent*.pid")]
        return sorted(names, key=lambda n: (len(n), n))

    def up(self, agent_only: bool) -> None:
        members = [] if agent_only else pool_members(self.stack)
        self._ensure_prerequisites(asterisk=not agent_only)
        self.state.mkdir(parents=True, exist_ok=True)
        if not agent_only:
            if self.pid("asterisk") is None:
                check_ports(self.stack, asterisk=True, http_ports=[m.http_port for m in members])
                self._start_asterisk()
            else:
                say("Asterisk is already running")
            todo = [m for m in members if self.pid(m.name) is None]
            for member in members:
                if member not in todo:
                    say(f"{member.name} is already running")
            if todo:
                check_ports(self.stack, asterisk=False, http_ports=[m.http_port for m in todo])
                # All started at once, then waited for: each loads its models in its own process.
                started = [(m, self._start_agent(m)) for m in todo]
                for member, proc in started:
                    self._wait_agent(member, proc)
        elif self.pid("agent") is None:
            check_ports(self.stack, asterisk=False)
            self._wait_agent(None, self._start_agent(None))
        else:
            say("the agent is already running")
        save_state(self.stack, "rootfs", agent_only)

    def _render(self) -> None:
        for sub in ("etc", "run", "log", "db", "cache", "spool/outgoing", "spool/tmp", "spool/recording"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        # Debian's stock configs first (what the container has), ours rendered over them.
        for src in (self.root / "etc" / "asterisk").iterdir():
            if src.is_file():
                shutil.copy2(src, self.base / "etc" / src.name)
        env = self.stack.child_env({"ASTERISK_BASE": self.chroot_base, "ASTERISK_AGENT_POOL": "yes"})
        proc = run_quiet(
            ["sh", str(ASTERISK_DIR / "render.sh"), str(ASTERISK_DIR), str(self.base / "etc")], env=env
        )
        if proc.returncode != 0:
            raise StackError(proc.stderr.strip() or "asterisk/render.sh failed")

    def _proc_mounted(self) -> bool:
        target = str((self.root / "proc").resolve())
        with open("/proc/self/mounts", encoding="utf-8") as f:
            return any(len(line.split()) > 1 and line.split()[1] == target for line in f)

    def _start_asterisk(self) -> None:
        self._render()
        if not self._proc_mounted():
            subprocess.run(["mount", "-t", "proc", "proc", str(self.root / "proc")], check=True)
        say(f"starting Asterisk from {self.root} (config in {self.base / 'etc'})")
        with open(self.log("asterisk"), "ab") as out:
            proc = subprocess.Popen(
                ["chroot", str(self.root), "/usr/sbin/asterisk", "-C", self.conf, "-f", "-n"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._pidfile("asterisk").write_text(f"{proc.pid}\n")
        deadline = time.monotonic() + BOOT_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise StackError(f"Asterisk exited with {proc.returncode}; see {self.log('asterisk')}")
            with contextlib.suppress(subprocess.TimeoutExpired):
                if self.rx("core waitfullybooted", timeout=5).returncode == 0:
                    return
            time.sleep(0.3)
        raise StackError(
            f"Asterisk did not finish booting in {BOOT_TIMEOUT:.0f} s; see {self.log('asterisk')}"
        )

    def rx(self, command: str, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
        return run_quiet(
            ["chroot", str(self.root), "/usr/sbin/asterisk", "-C", self.conf, "-rx", command], timeout
        )

    def _start_agent(self, member: PoolMember | None) -> subprocess.Popen[bytes]:
        """The agent alone (``up-agent``), or one agent of the pool."""
        records = Path(self.stack.value("AGENT_RECORDS__DIR") or self.stack.data_dir / "records")
        records.mkdir(parents=True, exist_ok=True)
        env = self.stack.child_env({"AGENT_RECORDS__DIR": str(records), **(member.env if member else {})})
        name = member.name if member else "agent"
        if member:
            say(f"starting {name} (ari-agent run, pool instance {member.index}, port {member.http_port})")
        else:
            say("starting the agent (ari-agent run)")
        with open(self.log(name), "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "ari_agent.cli", "run"],
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._pidfile(name).write_text(f"{proc.pid}\n")
        return proc

    def _wait_agent(self, member: PoolMember | None, proc: subprocess.Popen[bytes]) -> None:
        name = member.name if member else "agent"
        try:
            port = member.http_port if member else None
            wait_ready(self.stack, alive=lambda: proc.poll() is None, port=port)
        except StackError as exc:
            tail = self.log(name).read_text(errors="replace")[-2000:]
            raise StackError(f"{exc}\n--- {self.log(name)} ---\n{tail}") from None

    def down(self) -> None:
        names = self.agent_names()
        pids = [pid for pid in map(self.pid, names) if pid is not None]
        if pids:
            say(f"stopping {len(pids)} agent{'s' if len(pids) > 1 else ''} (pid {', '.join(map(str, pids))})")
            _terminate(*pids, timeout=30.0)  # together: each drains its calls meanwhile
        for name in names:
            self._pidfile(name).unlink(missing_ok=True)
        pid = self.pid("asterisk")
        if pid is not None:
            say(f"stopping Asterisk (pid {pid})")
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.rx("core stop now", timeout=10)
            _terminate(pid, timeout=15.0)
        self._pidfile("asterisk").unlink(missing_ok=True)
        if self.pid("asterisk") is None:
            # Rendered again by every `up`; Asterisk's own log went to the state directory.
            shutil.rmtree(self.base, ignore_errors=True)


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return True
    return False


def _terminate(*pids: int, timeout: float) -> None:
    """SIGTERM, wait, SIGKILL: for the processes this module started (their pid files)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    left = list(pids)
    deadline = time.monotonic() + timeout
    while left and time.monotonic() < deadline:
        left = [pid for pid in left if not _gone(pid)]
        if left:
            time.sleep(0.2)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
