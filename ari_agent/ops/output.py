"""Terminal output for the operator commands: short coloured lines on a terminal, plain elsewhere."""

from __future__ import annotations

import json
import os
import sys
from typing import Any, TextIO

_COLOURS = {"ok": "32", "warn": "33", "fail": "31", "skip": "90", "dim": "90", "bold": "1", "cyan": "36"}


class Out:
    def __init__(self, stream: TextIO | None = None, *, json_mode: bool = False) -> None:
        self.stream = stream or sys.stdout
        self.json_mode = json_mode
        self.colour = self.stream.isatty() and not os.environ.get("NO_COLOR") and not json_mode

    def paint(self, text: str, style: str) -> str:
        if not self.colour or style not in _COLOURS:
            return text
        return f"\x1b[{_COLOURS[style]}m{text}\x1b[0m"

    def line(self, text: str = "") -> None:
        if not self.json_mode:
            print(text, file=self.stream, flush=True)

    def json(self, obj: Any) -> None:
        print(json.dumps(obj, ensure_ascii=False), file=self.stream, flush=True)


def clean(value: object) -> str:
    """A value from a call record, safe for a terminal: control and format characters shown escaped.

    Caller names, numbers and transcripts come from outside (SIP headers, speech-to-text):
    an escape sequence in them must not retitle, clear or rewrite the operator's terminal.
    """
    text = value if isinstance(value, str) else str(value)
    return "".join(
        ch if ch.isprintable() or ch == " " else ch.encode("unicode_escape").decode("ascii") for ch in text
    )


def table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)
