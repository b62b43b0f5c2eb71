"""The stack's shared ground: where things are, its settings (.env over defaults, the
environment over both), and small process, port and readiness helpers.

Standard library only: ``make up`` runs before anything is installed.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ari_agent.ops.envfile import ensure_values, read_env, secret_values

REPO = Path(__file__).resolve().parents[1]
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
BOOT_TIMEOUT = 90.0
READY_TIMEOUT = 90.0
# The bundled stack's pool: ARI_AGENT_AGENTS agents (default: one per core), each with
# its own instance id, HTTP port and share of the RTP range; StasisBroadcast offers
# every call to them all (asterisk/extensions.conf, AI_AGENT_POOL).
POOL_MAX_AGENTS = 64
POOL_MIN_PORTS = 10
POOL_FILTER = "^ai-agent-pool-"


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

    def agent_http(self, port: int | str | None = None) -> str:
        host = self.value("AGENT_HTTP__HOST")
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        return f"http://{host}:{port if port is not None else self.value('AGENT_HTTP__PORT')}"


# ---------------------------------------------------------------- the pool of agents


@dataclass(frozen=True)
class PoolMember:
    """One agent of the bundled stack's pool: its settings over the stack's."""

    index: int
    env: dict[str, str]

    @property
    def name(self) -> str:
        return f"agent-{self.index}"

    @property
    def http_port(self) -> int:
        return int(self.env["AGENT_HTTP__PORT"])


def agent_count(stack: Stack) -> int:
    """ARI_AGENT_AGENTS (``make up AGENTS=n``), else one agent per core."""
    raw = stack.values.get("ARI_AGENT_AGENTS", "").strip()
    if not raw:
        return max(1, os.cpu_count() or 1)
    if not raw.isdigit() or not 1 <= int(raw) <= POOL_MAX_AGENTS:
        raise StackError(f"ARI_AGENT_AGENTS must be a number from 1 to {POOL_MAX_AGENTS}, not {raw!r}")
    return int(raw)


def pool_members(stack: Stack) -> list[PoolMember]:
    """The pool's agents: instance ids 1..n, HTTP ports from AGENT_HTTP__PORT up, the RTP
    range AGENT_MEDIA__PORT_MIN..MAX cut into n equal shares."""
    n = agent_count(stack)
    try:
        http = int(stack.value("AGENT_HTTP__PORT"))
        low, high = int(stack.value("AGENT_MEDIA__PORT_MIN")), int(stack.value("AGENT_MEDIA__PORT_MAX"))
    except ValueError as exc:
        raise StackError(f"AGENT_HTTP__PORT and AGENT_MEDIA__PORT_MIN/MAX must be numbers ({exc})") from None
    share = (high - low + 1) // n
    if share < POOL_MIN_PORTS:
        raise StackError(
            f"{n} agents need at least {POOL_MIN_PORTS * n} RTP ports, AGENT_MEDIA__PORT_MIN..MAX "
            f"has {max(0, high - low + 1)}: widen the range or set ARI_AGENT_AGENTS lower"
        )
    if http + n - 1 > 65535:
        raise StackError(f"AGENT_HTTP__PORT {http} leaves no room for {n} agents' ports")
    return [
        PoolMember(
            i + 1,
            {
                "AGENT_POOL__ENABLED": "true",
                "AGENT_INSTANCE_ID": str(i + 1),
                "AGENT_HTTP__PORT": str(http + i),
                "AGENT_MEDIA__PORT_MIN": str(low + i * share),
                "AGENT_MEDIA__PORT_MAX": str(low + (i + 1) * share - 1),
            },
        )
        for i in range(n)
    ]


# ---------------------------------------------------------------- helpers


def run_quiet(
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
    stack: Stack,
    timeout: float = READY_TIMEOUT,
    alive: Callable[[], bool] | None = None,
    port: int | None = None,
) -> None:
    url = stack.agent_http(port) + "/readyz"
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


def check_ports(stack: Stack, asterisk: bool, http_ports: Sequence[int] = ()) -> None:
    """The ports the stack binds are free; ``http_ports``: the pool's agents' (else AGENT_HTTP__PORT)."""
    host = stack.value("AGENT_HTTP__HOST")
    wanted: list[tuple[str, str, int, int]] = [
        ("AGENT_HTTP__PORT" + (f"+{i}" if i else ""), host, port, 1)
        for i, port in enumerate(http_ports or [int(stack.value("AGENT_HTTP__PORT"))])
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


def save_state(stack: Stack, engine: str, agent_only: bool) -> None:
    """What ``down`` and ``logs`` need to know: which engine brought the stack up."""
    stack.state_dir.mkdir(parents=True, exist_ok=True)
    (stack.state_dir / "engine").write_text(f"{engine}\n{'agent-only' if agent_only else 'full'}\n")


def saved_engine(stack: Stack) -> str | None:
    try:
        return (stack.state_dir / "engine").read_text().split()[0]
    except (OSError, IndexError):
        return None
