"""Tasks nobody awaits: their failure is logged with its traceback and counted, never lost."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ari_agent.observability.metrics import Metrics

log = logging.getLogger(__name__)


def report_failure(task: asyncio.Task[Any], where: str, metrics: Metrics) -> None:
    """A done-callback: without it the error would surface, if ever, as "Task exception was
    never retrieved" at garbage collection, without a count."""
    if task.cancelled() or task.exception() is None:
        return
    log.error("background task %s failed", where, exc_info=task.exception())
    metrics.errors.labels(where).inc()
