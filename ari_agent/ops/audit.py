"""The audit log: one JSON line per operator action (erase, reload, drain), in a private file.

It says who did what and when, not to whom: an erase records the call ids and
counts, never the caller's number it was asked to forget. Writing is
synchronous and small (one append); the app calls it off the event loop.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import socket
from pathlib import Path
from typing import Any

from ari_agent.conversation.records import utc_now
from ari_agent.errors import AgentError
from ari_agent.privatefile import append_private, locked, make_private, private_dir

log = logging.getLogger(__name__)


class AuditError(AgentError):
    """The audit log could not be written; the message names the file."""


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        return str(os.getuid())


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path

    def record(self, action: str, **details: Any) -> dict[str, Any]:
        """Append one entry; raises AuditError if it could not be written."""
        entry: dict[str, Any] = {
            "at": utc_now(),
            "action": action,
            "user": _user(),
            "uid": os.getuid(),
            "pid": os.getpid(),
            "host": socket.gethostname(),
            **details,
        }
        line = json.dumps(entry, ensure_ascii=False) + "\n"
        try:
            private_dir(self.path.parent)
            make_private(self.path)
            with locked(self.path):
                append_private(self.path, line)
        except OSError as exc:
            raise AuditError(
                f"cannot write the audit log {self.path} ({exc.strerror or exc}); "
                "make its directory writable by this user, or set AGENT_AUDIT__PATH"
            ) from None
        return entry

    def entries(self) -> list[dict[str, Any]]:
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                out.append(value)
        return out
