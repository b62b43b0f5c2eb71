"""``make up`` / ``up-agent`` / ``down`` / ``logs``: the agent with the bundled Asterisk.

Picks the engine: Docker when its daemon answers, else podman (with
podman-compose), else no container at all: Asterisk chrooted in the local
root filesystem (``asterisk/rootfs.sh``, the one the tests use) and the agent
as a local process, from the same config and the same ``.env``.

    python -m devstack.stack up|up-agent|down|logs [--no-follow]

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
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from devstack.images import podman_images
from devstack.rootfs_stack import RootfsStack
from devstack.stackbase import (
    COMPOSE_FILE,
    ENGINES,
    PODMAN_CONF,
    POOL_FILTER,
    PoolMember,
    Stack,
    StackError,
    check_ports,
    pool_members,
    run_quiet,
    save_state,
    saved_engine,
    say,
    wait_ready,
)


def _works(cmd: Sequence[str], timeout: float = 15.0, env: Mapping[str, str] | None = None) -> bool:
    if shutil.which(cmd[0]) is None:
        return False
    try:
        return run_quiet(cmd, timeout, env).returncode == 0
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


# ---------------------------------------------------------------- compose (docker or podman)


def pool_file(stack: Stack) -> Path:
    return stack.state_dir / "compose.pool.json"


def write_pool_file(stack: Stack, members: Sequence[PoolMember]) -> Path:
    """A compose file over deploy/docker-compose.yml: service ``agent`` is the pool's first
    agent, ``agent-2`` ... ``agent-<n>`` the others (JSON is YAML; no YAML writer needed)."""
    services: dict[str, object] = {}
    for member in members:
        env = dict(member.env)
        if member.index == 1:
            services["agent"] = {"environment": env}
        else:
            services[member.name] = {
                "extends": {"file": str(COMPOSE_FILE), "service": "agent"},
                "depends_on": ["asterisk"],
                "environment": env,
            }
    path = pool_file(stack)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"services": services}, indent=2) + "\n")
    return path


def compose_cmd(engine: str, stack: Stack) -> list[str]:
    """The compose command line, with the pool's file when ``make up`` wrote one."""
    if engine == "docker":
        base = ["docker", "compose"]
    else:
        found = podman_compose_cmd()
        if found is None:
            raise StackError("podman-compose is missing: pip install podman-compose")
        base = found
    files = ["-f", str(COMPOSE_FILE)]
    if pool_file(stack).exists():
        files += ["-f", str(pool_file(stack))]
    return [*base, "-p", stack.project, *files, "--env-file", str(stack.env_file)]


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


def compose_up(engine: str, stack: Stack, agent_only: bool) -> list[PoolMember]:
    """Up with compose; the pool's agents (none for ``up-agent``: the one agent as before)."""
    members = [] if agent_only else pool_members(stack)
    env = stack.child_env(records_owner(Path(stack.values["ARI_AGENT_DATA_DIR"], "records")))
    if members:
        write_pool_file(stack, members)
        env["ASTERISK_AGENT_POOL"] = "yes"
    else:
        pool_file(stack).unlink(missing_ok=True)
    if engine == "podman":
        env = podman_env(env)
        env.update(podman_images(stack, env, agent_only))
        up = ["up", "-d", "--no-deps", "agent"] if agent_only else ["up", "-d"]
    else:
        up = ["up", "-d", "--build", "--no-deps", "agent"] if agent_only else ["up", "-d", "--build"]
    check_ports(stack, asterisk=not agent_only, http_ports=[m.http_port for m in members])
    proc = subprocess.run([*compose_cmd(engine, stack), *up], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise StackError(f"{engine} compose up failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    save_state(stack, engine, agent_only)
    return members


def compose_down(engine: str, stack: Stack) -> None:
    env = podman_env(stack.child_env()) if engine == "podman" else stack.child_env()
    proc = subprocess.run([*compose_cmd(engine, stack), "down"], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise StackError(f"{engine} compose down failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    pool_file(stack).unlink(missing_ok=True)


# ---------------------------------------------------------------- state and commands


def summary(
    stack: Stack, engine: str, agent_only: bool, seconds: float, members: Sequence[PoolMember] = ()
) -> str:
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
    if members:
        first, last = members[0], members[-1]
        ports = str(first.http_port) if len(members) == 1 else f"{first.http_port}-{last.http_port}"
        lines += [
            f"  agents    {len(members)} in a pool: StasisBroadcast offers each call to the apps "
            f"{POOL_FILTER}..., the least loaded claims it (ARI_AGENT_AGENTS, default one per core)",
            f"            {stack.agent_http(ports)}/readyz  /metrics  /calls  (one port per agent)",
            f'  try it    ari-agent --env-file {env} call --say "what time do you open"',
            f"  calls     ari-agent --env-file {env} calls --agents {stack.agent_http(ports)}",
            f"  check     AGENT_POOL__ENABLED=true AGENT_INSTANCE_ID=1 ari-agent --env-file {env} "
            "doctor --extension 100@ai-agent-demo",
        ]
    else:
        lines += [
            f"  agent     {stack.agent_http()}/readyz  /metrics  /calls",
            f'  try it    ari-agent --env-file {env} call --say "what time do you open"',
            f"  check     ari-agent --env-file {env} doctor --extension 100@ai-agent-demo",
        ]
    lines.append("  logs      make logs          stop: make down")
    return "\n".join(lines)


def cmd_up(stack: Stack, agent_only: bool) -> int:
    started = time.monotonic()
    engine, why = detect_engine(stack.values.get("ARI_AGENT_ENGINE", "auto"))
    members = [] if agent_only else pool_members(stack)
    if engine == "rootfs":
        if why:
            say("no container engine found (" + "; ".join(why) + ")")
        say("running the same configuration from the local Asterisk root filesystem instead")
        RootfsStack(stack).up(agent_only)
    else:
        say(f"using {engine}")
        compose_up(engine, stack, agent_only)
        ports: list[int | None] = [m.http_port for m in members]
        for port in ports or [None]:
            wait_ready(stack, port=port)
    print(summary(stack, engine, agent_only, time.monotonic() - started, members), flush=True)
    return 0


def cmd_down(stack: Stack) -> int:
    engine = saved_engine(stack) or detect_engine(stack.values.get("ARI_AGENT_ENGINE", "auto"))[0]
    if engine == "rootfs":
        RootfsStack(stack).down()
    else:
        compose_down(engine, stack)
    (stack.state_dir / "engine").unlink(missing_ok=True)
    say("stack stopped")
    return 0


def cmd_logs(stack: Stack, follow: bool) -> int:
    engine = saved_engine(stack) or detect_engine(stack.values.get("ARI_AGENT_ENGINE", "auto"))[0]
    if engine == "rootfs":
        rootfs = RootfsStack(stack)
        agents = sorted((p.stem for p in stack.state_dir.glob("agent*.log")), key=lambda n: (len(n), n))
        logs = [str(rootfs.log(n)) for n in ["asterisk", *agents] if rootfs.log(n).exists()]
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
    parser = argparse.ArgumentParser(prog="python -m devstack.stack", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["up", "up-agent", "down", "logs"])
    parser.add_argument("--no-follow", action="store_true", help="logs: print and exit")
    parser.add_argument(
        "--agents", metavar="N", help="up: agents in the pool (default: ARI_AGENT_AGENTS, else one per core)"
    )
    args = parser.parse_args(argv)
    try:
        environ = dict(os.environ)
        if args.agents:
            environ["ARI_AGENT_AGENTS"] = args.agents
        stack = Stack.load(environ)
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
