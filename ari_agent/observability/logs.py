"""Logging: JSON lines when stdout is not a terminal; every call's lines carry its call id."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from datetime import UTC, datetime

# Set at the start of each call's task; asyncio copies it into child tasks.
call_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("call_id", default=None)


class _CallIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "call_id"):
            record.call_id = call_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        call_id = getattr(record, "call_id", None)
        if call_id:
            entry["call_id"] = call_id
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s%(call)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        call_id = getattr(record, "call_id", None)
        record.call = f" [{call_id}]" if call_id else ""
        return super().format(record)


def setup_logging(level: str = "INFO", json_lines: bool | None = None) -> None:
    if json_lines is None:
        json_lines = not sys.stdout.isatty()
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    handler.addFilter(_CallIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.captureWarnings(True)
    # aiohttp's access log would log every health probe.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
