"""API keys: from the vendors' usual environment variables or from secret files.

``NAME`` in the environment wins; else the file named by ``NAME_FILE``; else
``/run/secrets/<name>`` (Docker and Kubernetes secrets). Values are wrapped so
that printing, logging or formatting them never shows the key.
"""

from __future__ import annotations

import os
from pathlib import Path

SECRETS_DIR = Path("/run/secrets")


class Secret:
    """A key that never shows itself in repr, str or f-strings."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __bool__(self) -> bool:
        return bool(self._value)


def get_secret(name: str, environ: os._Environ[str] | dict[str, str] | None = None) -> Secret | None:
    env = os.environ if environ is None else environ
    value = env.get(name)
    if not value:
        path_text = env.get(f"{name}_FILE")
        path = Path(path_text) if path_text else SECRETS_DIR / name.lower()
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError:
            value = None
    return Secret(value) if value else None


def missing_key(name: str) -> str:
    """The one-line problem for ``check`` when a key is missing."""
    return f"API key missing: set {name} (or {name}_FILE, or /run/secrets/{name.lower()})"
