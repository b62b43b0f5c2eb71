"""Container images for podman, built once per content: the tag is a hash of their inputs.

Without a registry, the base is the local root filesystem (the tests' Debian
sid with Asterisk) imported with ``podman import``, also once per content.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from devstack.stackbase import ASTERISK_DIR, REPO, Stack, StackError, run_quiet, say

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
    return run_quiet(["podman", *args], timeout, env)


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
    _drop_older(f"localhost/{name}", tag, env)
    return tag


def _drop_older(repository: str, keep: str, env: Mapping[str, str]) -> None:
    """Untag earlier builds of ``repository`` (their layers mostly shared); one in use stays."""
    listed = _podman(["images", "--format", "{{.Repository}}:{{.Tag}}", repository], env)
    for ref in listed.stdout.split():
        if ref != keep and ref.startswith(repository + ":"):
            _podman(["rmi", ref], env)


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
