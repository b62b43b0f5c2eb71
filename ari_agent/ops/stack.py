"""``make up`` / ``up-agent`` / ``down`` / ``logs``: the agent with the bundled Asterisk.

Picks the engine: Docker when its daemon answers, else podman (with
podman-compose), else no container at all: Asterisk chrooted in the local
root filesystem (``asterisk/rootfs.sh``, the one the tests use) and the agent
as a local process, from the same config and the same ``.env``.

    python -m ari_agent.ops.stack up|up-agent|down|logs [--no-follow]

Environment: ``ARI_AGENT_ENGINE`` (auto, docker, podman, rootfs),
``ARI_AGENT_ENV_FILE`` (default ``.env``), ``ARI_AGENT_PROJECT`` (compose
project and runtime name, default ari-agent), ``ARI_AGENT_STATE_DIR``
(pids and logs of the container-less run, default ``var/run``),
``ARI_AGENT_ROOTFS``, and for podman ``ARI_AGENT_BASE_IMAGE`` /
``ARI_AGENT_PYTHON`` (else the local root filesystem, imported once, is the
base image). Standard library only: this runs before anything is installed.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ari_agent.ops.envfile import ensure_values, read_env, secret_values

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "deploy" / "docker-compose.yml"
PODMAN_CONF = REPO / "deploy" / "podman" / "containers.conf"
ASTERISK_DIR = REPO / "asterisk"
DEFAULT_ROOTFS = Path("/var/cache/ari-agent/rootfs")
ENGINES = ("docker", "podman", "rootfs")

# What the stack runs with when neither .env nor the environment says.
DEFAULTS: dict[str, str] = {
    "ASTERISK_SIP_BIND": "0.0.0.0",
    "ASTERISK_SIP_PORT": "5060",
    "ASTERISK_ARI_BIND": "127.0.0.1",
    "ASTERISK_ARI_PORT": "8088",
    "ASTERISK_RTP_START": "10000",
    "ASTERISK_RTP_END": "20000",
    "AGENT_ARI__USERNAME": "ai-agent",
    "AGENT_ARI__APP": "ai-agent",
    "AGENT_HTTP__HOST": "127.0.0.1",
    "AGENT_HTTP__PORT": "8090",
    "AGENT_MEDIA__BIND_HOST": "127.0.0.1",
    "AGENT_MEDIA__PORT_MIN": "40000",
    "AGENT_MEDIA__PORT_MAX": "40999",
}
_STACK_PREFIXES = ("AGENT_", "ASTERISK_", "SOFTPHONE_", "ARI_AGENT_", "GRAFANA_", "PROMETHEUS_")
# Long builds (first image build, first rootfs) print as they go; these are bounds, not estimates.
_BOOT_TIMEOUT = 90.0
_READY_TIMEOUT = 90.0


class StackError(Exception):
    """``make up`` cannot go on; the message says what to do."""


def say(message: str) -> None:
    print(f"ari-agent stack: {message}", flush=True)


# ---------------------------------------------------------------- configuration


def _env_defaults(data_dir: Path) -> dict[str, Callable[[Mapping[str, str]], str]]:
    """What a new .env gets: secrets, and the settings the CLI needs to find the stack."""
    wanted = secret_values()
    wanted["AGENT_ARI__URL"] = lambda known: (
        f"http://127.0.0.1:{known.get('ASTERISK_ARI_PORT') or DEFAULTS['ASTERISK_ARI_PORT']}"
    )
    wanted["AGENT_RECORDS__DIR"] = lambda _known: str(data_dir / "records")
    return wanted


@dataclass
class Stack:
    project: str
    env_file: Path
    state_dir: Path
    data_dir: Path
    rootfs: Path
    values: dict[str, str]

    @classmethod
    def load(cls, environ: Mapping[str, str]) -> Stack:
        env_file = Path(environ.get("ARI_AGENT_ENV_FILE") or REPO / ".env").resolve()
        file_values = read_env(env_file)
        data_dir = Path(
            environ.get("ARI_AGENT_DATA_DIR") or file_values.get("ARI_AGENT_DATA_DIR") or REPO / "var"
        ).resolve()
        added = ensure_values(env_file, _env_defaults(data_dir))
        if added:
            say(f"wrote {', '.join(added)} to {env_file}")
        values = {**DEFAULTS, **read_env(env_file)}
        values.update({k: v for k, v in environ.items() if k.startswith(_STACK_PREFIXES)})
        values["ARI_AGENT_DATA_DIR"] = str(data_dir)
        project = values.get("ARI_AGENT_PROJECT") or "ari-agent"
        state = Path(values.get("ARI_AGENT_STATE_DIR") or REPO / "var" / "run" / project).resolve()
        rootfs = Path(values.get("ARI_AGENT_ROOTFS") or DEFAULT_ROOTFS)
        return cls(project, env_file, state, data_dir, rootfs, values)

    def value(self, key: str) -> str:
        return self.values.get(key) or DEFAULTS.get(key, "")

    def child_env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {**os.environ, **self.values}
        env.update(extra or {})
        return env

    def agent_http(self) -> str:
        host = self.value("AGENT_HTTP__HOST")
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        return f"http://{host}:{self.value('AGENT_HTTP__PORT')}"


# ---------------------------------------------------------------- helpers


def _run(
    cmd: Sequence[str], timeout: float = 30.0, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(cmd),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=dict(env) if env else None,
    )


def _works(cmd: Sequence[str], timeout: float = 15.0, env: Mapping[str, str] | None = None) -> bool:
    if shutil.which(cmd[0]) is None:
        return False
    try:
        return _run(cmd, timeout, env).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def podman_env(stack_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for podman: the project's containers.conf unless one is set."""
    env = dict(stack_env or os.environ)
    env.setdefault("CONTAINERS_CONF", str(PODMAN_CONF))
    return env


def podman_compose_cmd() -> list[str] | None:
    exe = shutil.which("podman-compose")
    if exe:
        return [exe]
    if importlib.util.find_spec("podman_compose") is not None:
        return [sys.executable, "-m", "podman_compose"]
    return None


def detect_engine(choice: str = "auto") -> tuple[str, list[str]]:
    """The engine to use and, for auto, why the ones before it were passed over."""
    if choice in ENGINES:
        return choice, []
    if choice not in ("", "auto"):
        raise StackError(f"ARI_AGENT_ENGINE must be auto, docker, podman or rootfs, not {choice!r}")
    why: list[str] = []
    if shutil.which("docker") is None:
        why.append("docker: not installed")
    elif not _works(["docker", "info"]):
        why.append("docker: no daemon answers (`docker info` fails)")
    elif not _works(["docker", "compose", "version"]):
        why.append("docker: the compose plugin is missing")
    else:
        return "docker", why
    if shutil.which("podman") is None:
        why.append("podman: not installed")
    elif podman_compose_cmd() is None:
        why.append("podman: podman-compose is missing (pip install podman-compose)")
    elif not _works(["podman", "info"], env=podman_env()):
        why.append("podman: `podman info` fails")
    else:
        return "podman", why
    return "rootfs", why


def _http_status(url: str, headers: Mapping[str, str] | None = None, timeout: float = 2.0) -> int | None:
    req = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError):
        return None


def wait_ready(
    stack: Stack, timeout: float = _READY_TIMEOUT, alive: Callable[[], bool] | None = None
) -> None:
    url = stack.agent_http() + "/readyz"
    deadline = time.monotonic() + timeout
    last: int | None = None
    while time.monotonic() < deadline:
        last = _http_status(url)
        if last == 200:
            return
        if alive is not None and not alive():
            break
        time.sleep(0.5)
    raise StackError(f"the agent is not ready at {url} (last answer: {last or 'none'}); see `make logs`")


def _port_busy(host: str, port: int, kind: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        if kind == socket.SOCK_STREAM:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def check_ports(stack: Stack, asterisk: bool) -> None:
    wanted: list[tuple[str, str, int, int]] = [
        ("AGENT_HTTP__PORT", stack.value("AGENT_HTTP__HOST"), int(stack.value("AGENT_HTTP__PORT")), 1)
    ]
    if asterisk:
        wanted += [
            ("ASTERISK_SIP_PORT", stack.value("ASTERISK_SIP_BIND"), int(stack.value("ASTERISK_SIP_PORT")), 2),
            ("ASTERISK_ARI_PORT", stack.value("ASTERISK_ARI_BIND"), int(stack.value("ASTERISK_ARI_PORT")), 1),
        ]
    busy = [
        f"{'tcp' if kind == socket.SOCK_STREAM else 'udp'} {host}:{port} ({name})"
        for name, host, port, kind in wanted
        if _port_busy(host, port, kind)
    ]
    if busy:
        hint = " (an Asterisk or FreePBX already runs here? use `make up-agent`)" if asterisk else ""
        raise StackError(f"ports in use: {', '.join(busy)}; change them in {stack.env_file}{hint}")


# ---------------------------------------------------------------- podman images, cached by their inputs


def _tree_files(root: Path, parts: Iterable[str]) -> list[Path]:
    files: list[Path] = []
    for part in parts:
        path = root / part
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files += [
                p
                for p in sorted(path.rglob("*"))
                if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")
            ]
    return files


def inputs_key(files: Iterable[Path], root: Path, extra: Iterable[str] = ()) -> str:
    """A short hash of file names and contents plus build arguments: the image tag."""
    h = hashlib.sha256()
    for path in sorted(files):
        h.update(str(path.relative_to(root)).encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    for item in extra:
        h.update(item.encode() + b"\0")
    return h.hexdigest()[:16]


def _podman(
    args: Sequence[str], env: Mapping[str, str], timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    return _run(["podman", *args], timeout, env)


def _image_exists(tag: str, env: Mapping[str, str]) -> bool:
    return _podman(["image", "exists", tag], env).returncode == 0


def _image_id(tag: str, env: Mapping[str, str]) -> str:
    out = _podman(["image", "inspect", "--format", "{{.Id}}", tag], env)
    if out.returncode != 0:
        raise StackError(f"podman cannot find image {tag}: {out.stderr.strip()}")
    return out.stdout.strip()


def import_rootfs(rootfs: Path, env: Mapping[str, str]) -> str:
    """``podman import`` the local root filesystem once per content (keyed by its package list)."""
    status = rootfs / "var" / "lib" / "dpkg" / "status"
    if not status.is_file():
        raise StackError(f"{rootfs} is not a Debian root filesystem (no var/lib/dpkg/status)")
    tag = f"localhost/ari-agent-rootfs:{hashlib.sha256(status.read_bytes()).hexdigest()[:16]}"
    if _image_exists(tag, env):
        return tag
    say(f"importing {rootfs} as base image {tag} (once)")
    started = time.monotonic()
    excludes = ["./proc", "./sys", "./dev", "./lab", "./srv/ari-agent", "./tmp/*", "./run/*"]
    tar = subprocess.Popen(
        ["tar", "-C", str(rootfs), *(f"--exclude={e}" for e in excludes), "-cf", "-", "."],
        stdout=subprocess.PIPE,
    )
    try:
        imp = subprocess.run(
            ["podman", "import", "-", tag], stdin=tar.stdout, capture_output=True, text=True, env=dict(env)
        )
    finally:
        if tar.stdout is not None:
            tar.stdout.close()
        tar.wait()
    if imp.returncode != 0:
        raise StackError(f"podman import of {rootfs} failed: {imp.stderr.strip()[-500:]}")
    say(f"imported in {time.monotonic() - started:.0f} s")
    return tag


def _ca_bundle() -> str | None:
    for name in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        path = os.environ.get(name)
        if path and Path(path).is_file():
            return path
    return None


def build_cached(
    name: str,
    containerfile: Path,
    context: Path,
    inputs: Sequence[str],
    build_args: Mapping[str, str],
    env: Mapping[str, str],
    extra_flags: Sequence[str] = (),
) -> str:
    """Build ``localhost/<name>:<hash of inputs>`` unless that tag exists; the tag."""
    files = [containerfile, *_tree_files(context, inputs)]
    base = build_args.get("BASE_IMAGE", "")
    base_id = _image_id(base, env) if base.startswith("localhost/") else base
    args = [f"{k}={v}" for k, v in sorted(build_args.items())]
    tag = f"localhost/{name}:{inputs_key(files, REPO, [*args, base_id])}"
    if _image_exists(tag, env):
        say(f"image {tag} is up to date")
        return tag
    say(f"building {tag}")
    started = time.monotonic()
    cmd = ["podman", "build", "--format", "docker", "--network", "host", "-f", str(containerfile), "-t", tag]
    for arg in args:
        cmd += ["--build-arg", arg]
    cmd += [*extra_flags, str(context)]
    proc = subprocess.run(cmd, env=dict(env), capture_output=True, text=True)
    if proc.returncode != 0:
        raise StackError(f"podman build of {name} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    say(f"built {tag} in {time.monotonic() - started:.0f} s")
    return tag


def podman_images(stack: Stack, env: Mapping[str, str], agent_only: bool) -> dict[str, str]:
    """Build (or reuse) the stack's images; the compose variables naming them."""
    base = stack.values.get("ARI_AGENT_BASE_IMAGE", "")
    python = stack.values.get("ARI_AGENT_PYTHON", "")
    if not base and (stack.rootfs / "usr" / "sbin" / "asterisk").exists():
        # No registry needed: the tests' root filesystem (Debian sid, Asterisk
        # installed) is the base; sid's python3 is newer than pocketsphinx's wheels.
        base = import_rootfs(stack.rootfs, env)
        python = python or "python3.13"
    images: dict[str, str] = {}
    if not agent_only:
        args = {"BASE_IMAGE": base} if base else {}
        images["ARI_AGENT_ASTERISK_IMAGE"] = build_cached(
            "ari-agent-asterisk",
            ASTERISK_DIR / "Containerfile",
            ASTERISK_DIR,
            [p.name for p in sorted(ASTERISK_DIR.glob("*.conf"))] + ["render.sh", "entrypoint.sh"],
            args,
            env,
        )
    agent_args = {"BASE_IMAGE": base} if base else {}
    if python:
        agent_args["PYTHON"] = python
    flags: list[str] = []
    ca = _ca_bundle()
    if ca:
        flags += ["-v", f"{ca}:/run/ari-agent-build-ca.crt:ro"]
        agent_args["PIP_BUILD_CERT"] = "/run/ari-agent-build-ca.crt"
    if os.environ.get("PIP_INDEX_URL"):
        agent_args["PIP_BUILD_INDEX_URL"] = os.environ["PIP_INDEX_URL"]
    images["ARI_AGENT_AGENT_IMAGE"] = build_cached(
        "ari-agent",
        REPO / "deploy" / "agent.Containerfile",
        REPO,
        ["pyproject.toml", "README.md", "ari_agent", "providers"],
        agent_args,
        env,
        flags,
    )
    return images


# ---------------------------------------------------------------- compose (docker or podman)


def compose_cmd(engine: str, stack: Stack) -> list[str]:
    if engine == "docker":
        base = ["docker", "compose"]
    else:
        found = podman_compose_cmd()
        if found is None:
            raise StackError("podman-compose is missing: pip install podman-compose")
        base = found
    return [*base, "-p", stack.project, "-f", str(COMPOSE_FILE), "--env-file", str(stack.env_file)]


CONTAINER_UID = 10001  # the agent image's own user


def records_owner(records: Path) -> dict[str, str]:
    """The uid:gid the agent container runs as, so it can write the host's records directory.

    Root gets the image's own user (and the directory is handed to it); anyone
    else runs the container as themselves, so the records stay theirs.
    """
    records.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        os.chown(records, CONTAINER_UID, CONTAINER_UID)
        uid = gid = CONTAINER_UID
    else:
        uid, gid = os.getuid(), os.getgid()
    return {"ARI_AGENT_UID": str(uid), "ARI_AGENT_GID": str(gid)}


def compose_up(engine: str, stack: Stack, agent_only: bool) -> None:
    env = stack.child_env(records_owner(Path(stack.values["ARI_AGENT_DATA_DIR"], "records")))
    if engine == "podman":
        env = podman_env(env)
        env.update(podman_images(stack, env, agent_only))
        up = ["up", "-d", "--no-deps", "agent"] if agent_only else ["up", "-d"]
    else:
        up = ["up", "-d", "--build", "--no-deps", "agent"] if agent_only else ["up", "-d", "--build"]
    check_ports(stack, asterisk=not agent_only)
    proc = subprocess.run([*compose_cmd(engine, stack), *up], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise StackError(f"{engine} compose up failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    _save_state(stack, engine, agent_only)


def compose_down(engine: str, stack: Stack) -> None:
    env = podman_env(stack.child_env()) if engine == "podman" else stack.child_env()
    proc = subprocess.run([*compose_cmd(engine, stack), "down"], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise StackError(f"{engine} compose down failed:\n{(proc.stdout + proc.stderr)[-3000:]}")


# ---------------------------------------------------------------- no container engine: the root filesystem


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

    def up(self, agent_only: bool) -> None:
        self._ensure_prerequisites(asterisk=not agent_only)
        self.state.mkdir(parents=True, exist_ok=True)
        if not agent_only:
            if self.pid("asterisk") is None:
                check_ports(self.stack, asterisk=True)
                self._start_asterisk()
            else:
                say("Asterisk is already running")
        if self.pid("agent") is None:
            check_ports(self.stack, asterisk=False)
            self._start_agent()
        else:
            say("the agent is already running")
        _save_state(self.stack, "rootfs", agent_only)

    def _render(self) -> None:
        for sub in ("etc", "run", "log", "db", "cache", "spool/outgoing", "spool/tmp", "spool/recording"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        # Debian's stock configs first (what the container has), ours rendered over them.
        for src in (self.root / "etc" / "asterisk").iterdir():
            if src.is_file():
                shutil.copy2(src, self.base / "etc" / src.name)
        env = self.stack.child_env({"ASTERISK_BASE": self.chroot_base})
        proc = _run(
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
        deadline = time.monotonic() + _BOOT_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise StackError(f"Asterisk exited with {proc.returncode}; see {self.log('asterisk')}")
            with contextlib.suppress(subprocess.TimeoutExpired):
                if self.rx("core waitfullybooted", timeout=5).returncode == 0:
                    return
            time.sleep(0.3)
        raise StackError(
            f"Asterisk did not finish booting in {_BOOT_TIMEOUT:.0f} s; see {self.log('asterisk')}"
        )

    def rx(self, command: str, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
        return _run(
            ["chroot", str(self.root), "/usr/sbin/asterisk", "-C", self.conf, "-rx", command], timeout
        )

    def _start_agent(self) -> None:
        records = Path(self.stack.value("AGENT_RECORDS__DIR") or self.stack.data_dir / "records")
        records.mkdir(parents=True, exist_ok=True)
        env = self.stack.child_env({"AGENT_RECORDS__DIR": str(records)})
        say("starting the agent (ari-agent run)")
        with open(self.log("agent"), "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "ari_agent.cli", "run"],
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._pidfile("agent").write_text(f"{proc.pid}\n")
        try:
            wait_ready(self.stack, alive=lambda: proc.poll() is None)
        except StackError as exc:
            tail = self.log("agent").read_text(errors="replace")[-2000:]
            raise StackError(f"{exc}\n--- {self.log('agent')} ---\n{tail}") from None

    def down(self) -> None:
        pid = self.pid("agent")
        if pid is not None:
            say(f"stopping the agent (pid {pid})")
            _terminate(pid, timeout=30.0)
        self._pidfile("agent").unlink(missing_ok=True)
        pid = self.pid("asterisk")
        if pid is not None:
            say(f"stopping Asterisk (pid {pid})")
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.rx("core stop now", timeout=10)
            _terminate(pid, timeout=15.0)
        self._pidfile("asterisk").unlink(missing_ok=True)


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _terminate(pid: int, timeout: float) -> None:
    """SIGTERM, wait, SIGKILL: for the processes this module started (their pid files)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


# ---------------------------------------------------------------- state and commands


def _save_state(stack: Stack, engine: str, agent_only: bool) -> None:
    stack.state_dir.mkdir(parents=True, exist_ok=True)
    (stack.state_dir / "engine").write_text(f"{engine}\n{'agent-only' if agent_only else 'full'}\n")


def _saved_engine(stack: Stack) -> str | None:
    try:
        return (stack.state_dir / "engine").read_text().split()[0]
    except (OSError, IndexError):
        return None


def summary(stack: Stack, engine: str, agent_only: bool, seconds: float) -> str:
    how = {
        "docker": "containers (Docker)",
        "podman": "containers (podman)",
        "rootfs": f"no container engine: Asterisk from the local root filesystem {stack.rootfs}, "
        "the agent as a local process",
    }[engine]
    env = str(stack.env_file)
    with contextlib.suppress(ValueError):
        env = str(stack.env_file.relative_to(Path.cwd()))
    v = stack.value
    lines = [f"ari-agent is up in {seconds:.0f} s ({how})."]
    if not agent_only:
        lines += [
            f"  SIP       udp {stack.value('ASTERISK_SIP_BIND')}:{stack.value('ASTERISK_SIP_PORT')}: "
            f"softphones 1001 and 1002, passwords SOFTPHONE_1001_PASSWORD / _1002_ in {env}",
            "            dial 100 for the agent, 200 for reception",
            f"  ARI       http://{stack.value('ASTERISK_ARI_BIND')}:{stack.value('ASTERISK_ARI_PORT')} "
            f"(user ai-agent, AGENT_ARI__PASSWORD in {env})",
            f"  RTP       udp {v('ASTERISK_RTP_START')}-{v('ASTERISK_RTP_END')} (Asterisk), "
            f"{v('AGENT_MEDIA__PORT_MIN')}-{v('AGENT_MEDIA__PORT_MAX')} (agent)",
        ]
    else:
        lines.append(f"  ARI       {stack.value('AGENT_ARI__URL')} (your Asterisk)")
    lines += [
        f"  agent     {stack.agent_http()}/readyz  /metrics  /calls",
        f'  try it    ari-agent --env-file {env} call --say "what time do you open"',
        f"  check     ari-agent --env-file {env} doctor --extension 100@ai-agent-demo",
        "  logs      make logs          stop: make down",
    ]
    return "\n".join(lines)


def cmd_up(stack: Stack, agent_only: bool) -> int:
    started = time.monotonic()
    engine, why = detect_engine(stack.values.get("ARI_AGENT_ENGINE", "auto"))
    if engine == "rootfs":
        if why:
            say("no container engine found (" + "; ".join(why) + ")")
        say("running the same configuration from the local Asterisk root filesystem instead")
        RootfsStack(stack).up(agent_only)
    else:
        say(f"using {engine}")
        compose_up(engine, stack, agent_only)
        wait_ready(stack)
    print(summary(stack, engine, agent_only, time.monotonic() - started), flush=True)
    return 0


def cmd_down(stack: Stack) -> int:
    engine = _saved_engine(stack) or detect_engine(stack.values.get("ARI_AGENT_ENGINE", "auto"))[0]
    if engine == "rootfs":
        RootfsStack(stack).down()
    else:
        compose_down(engine, stack)
    (stack.state_dir / "engine").unlink(missing_ok=True)
    say("stack stopped")
    return 0


def cmd_logs(stack: Stack, follow: bool) -> int:
    engine = _saved_engine(stack) or detect_engine(stack.values.get("ARI_AGENT_ENGINE", "auto"))[0]
    if engine == "rootfs":
        rootfs = RootfsStack(stack)
        logs = [str(rootfs.log(n)) for n in ("asterisk", "agent") if rootfs.log(n).exists()]
        if not logs:
            raise StackError(f"no logs in {stack.state_dir}: is the stack up?")
        cmd = ["tail", "-n", "100", *(["-F"] if follow else []), *logs]
        env = None
    else:
        cmd = [*compose_cmd(engine, stack), "logs", *(["-f"] if follow else [])]
        env = podman_env(stack.child_env()) if engine == "podman" else stack.child_env()
    with contextlib.suppress(KeyboardInterrupt):
        return subprocess.run(cmd, env=env, check=False).returncode
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ari_agent.ops.stack", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["up", "up-agent", "down", "logs"])
    parser.add_argument("--no-follow", action="store_true", help="logs: print and exit")
    args = parser.parse_args(argv)
    try:
        stack = Stack.load(os.environ)
        if args.command in ("up", "up-agent"):
            return cmd_up(stack, agent_only=args.command == "up-agent")
        if args.command == "down":
            return cmd_down(stack)
        return cmd_logs(stack, follow=not args.no_follow)
    except (StackError, ValueError) as exc:
        print(f"make {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
