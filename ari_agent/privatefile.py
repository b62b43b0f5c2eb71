"""Files that hold callers' data (records, audit log): 0600 in a 0700 directory, one writer at a time.

The call store makes its SQLite file the same way (ari_agent/store/sqlite.py).
``locked`` is an advisory lock shared by the agent appending records and an
operator erasing them, so an erase never drops a line written meanwhile.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dir(directory: Path) -> None:
    """Create the directory for the agent's user only; an existing one is left as the operator set it."""
    directory.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)


def make_private(path: Path) -> None:
    """Narrow a file made before this rule (or by hand) to the owner; not ours to change: leave it."""
    with contextlib.suppress(FileNotFoundError, PermissionError):
        if path.stat().st_mode & 0o077:
            path.chmod(FILE_MODE)


def append_private(path: Path, text: str) -> None:
    """Append text, creating the file 0600 (the umask cannot widen it)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
    with os.fdopen(fd, "a", encoding="utf-8") as f:
        f.write(text)


def replace_private(path: Path, text: str) -> None:
    """Write a new version of the file next to it, then swap it in (readers see old or new, whole)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold the advisory lock of ``path`` (a ``.<name>.lock`` beside it)."""
    lock = path.with_name(f".{path.name}.lock")
    fd = os.open(lock, os.O_WRONLY | os.O_CREAT, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
