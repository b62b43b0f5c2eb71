"""Operator secrets (the HTTP token, the data keys) that fail closed.

A secret comes from its setting (``AGENT_X__Y``), then a legacy environment
name, then the file named by ``..._FILE`` (setting or environment), then
``/run/secrets/<name>``. Nothing configured: None. Something configured but
unusable (a named file missing, unreadable or empty): :class:`ConfigError`,
never None, because None means "no token" or "no encryption" and a typo in a
path must not open the agent up. Messages name the file, never its content.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from ari_agent.errors import ConfigError

SECRETS_DIR = Path("/run/secrets")


def read_secret(
    field: str,
    value: str | None,
    file: Path | None,
    *,
    env_names: tuple[str, ...] = (),
    secrets_name: str,
    environ: Mapping[str, str] | None = None,
    secrets_dir: Path = SECRETS_DIR,
) -> str | None:
    env = os.environ if environ is None else environ
    if value:
        return value
    for name in env_names:
        if env.get(name):
            return env[name]
    named = file
    for name in env_names:
        if named is None and env.get(f"{name}_FILE"):
            named = Path(env[f"{name}_FILE"])
    if named is None:
        default = secrets_dir / secrets_name
        if not default.exists():
            return None
        named = default
    try:
        text = named.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ConfigError(field, f"cannot read the secret file {named} ({reason}).", _fix(field)) from None
    if not text:
        raise ConfigError(field, f"the secret file {named} is empty.", _fix(field))
    return text


def _fix(field: str) -> str:
    return f"put the secret in the file, or unset the setting that names it ({field}_file)"
