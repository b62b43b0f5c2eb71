"""The call record: one shape for every sink (``calls.jsonl``, the call store) and ``calls show``.

``CallRecord.to_json()`` is that shape; the store gives it back field for
field (``StoredCall.to_json()``). Setting the records directory is the
operator's opt-in: its lines carry the caller's number and the transcript.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger(__name__)

EndReason = Literal["hangup_by_caller", "hangup_by_agent", "transferred", "busy", "failed", "drained"]

# end_reason -> AI_AGENT_STATUS (None: the caller hung up, nobody to tell)
STATUS_FOR: dict[str, str | None] = {
    "hangup_by_caller": None,
    "hangup_by_agent": "COMPLETED",
    "transferred": "TRANSFERRED",
    "busy": "BUSY",
    "failed": "FAILED",
    "drained": "DRAINING",
}


# Per-stage milliseconds a turn may carry (see the pipeline); the store has a column for each.
TIMINGS = (
    "stt_ms",
    "llm_first_token_ms",
    "llm_total_ms",
    "end_to_audio_ms",
    "llm_start_to_audio_ms",
    "tts_first_audio_ms",
    "turn_latency_ms",
)


def format_utc(value: datetime) -> str:
    """The record's timestamps: UTC, milliseconds, ``Z``."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utc_now() -> str:
    return format_utc(datetime.now(UTC))


@dataclass
class Turn:
    role: Literal["user", "agent"]
    text: str
    at: str
    interrupted: bool = False
    # Per-stage milliseconds of the turn that produced this reply (agent turns).
    timings: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if not self.interrupted:
            del data["interrupted"]
        if not self.timings:
            del data["timings"]
        return data


@dataclass
class CallRecord:
    call_id: str
    channel_id: str
    caller: dict[str, str]
    profile: str
    started_at: str = field(default_factory=utc_now)
    ended_at: str | None = None
    end_reason: EndReason | None = None
    turns: list[Turn] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)  # captured by the capture tool
    variables: dict[str, str] = field(
        default_factory=dict
    )  # set on the channel (AI_AGENT_RESULT, AI_FIELD_*)
    # Inbound RTP figures (loss, jitter, duplicates, gaps, ...), filled in when the call ends.
    media: dict[str, float | int | None] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "channel_id": self.channel_id,
            "caller": self.caller,
            "profile": self.profile,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "end_reason": self.end_reason,
            # What the dialplan was told (None: the caller hung up) and the outcome the tools set.
            "status": STATUS_FOR.get(self.end_reason) if self.end_reason else None,
            "result": self.variables.get("AI_AGENT_RESULT"),
            "turns": [t.to_json() for t in self.turns],
            "fields": self.fields,
            "media": self.media,
        }


class RecordWriter:
    def __init__(self, directory: Path) -> None:
        self.path = directory / "calls.jsonl"
        directory.mkdir(parents=True, exist_ok=True)
        self._lock = asyncio.Lock()

    async def write(self, record: CallRecord) -> None:
        line = json.dumps(record.to_json(), ensure_ascii=False) + "\n"
        async with self._lock:
            try:
                await asyncio.to_thread(self._append, line)
            except OSError as exc:
                log.error("cannot write call record to %s: %s", self.path, exc)

    def _append(self, line: str) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(line)
