"""The call record: one shape for every sink (``calls.jsonl``, the call store) and ``calls show``.

``CallRecord.to_json()`` is that shape; the store gives it back field for
field (``StoredCall.to_json()``). Setting the records directory is the
operator's opt-in: its lines carry the caller's number and the transcript.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ari_agent.privatefile import append_private, locked, make_private, private_dir

if TYPE_CHECKING:
    from ari_agent.store.crypto import DataCipher

log = logging.getLogger(__name__)

EndReason = Literal[
    "hangup_by_caller",
    "hangup_by_agent",
    "transferred",
    "busy",
    "failed",
    "drained",
    "operator_handback",
    "operator_hangup",
]

# end_reason -> AI_AGENT_STATUS (None: the caller hung up, nobody to tell)
STATUS_FOR: dict[str, str | None] = {
    "hangup_by_caller": None,
    "hangup_by_agent": "COMPLETED",
    "transferred": "TRANSFERRED",
    "busy": "BUSY",
    "failed": "FAILED",
    "drained": "DRAINING",
    # The console's actions: an operator handed the call back, or hung it up.
    "operator_handback": "OPERATOR",
    "operator_hangup": "OPERATOR_HANGUP",
}


def format_utc(value: datetime) -> str:
    """The record's timestamps: UTC, milliseconds, ``Z``."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utc_now() -> str:
    return format_utc(datetime.now(UTC))


@dataclass
class TurnTimings:
    """Per-stage milliseconds of one exchange: the caller's turn and the reply to it.

    One type for the record, the store and the metrics; it rides on the reply
    (the agent turn), which is where the exchange ends. None: not measured.
    """

    stt_ms: float | None = None  # finalize asked -> final transcript
    llm_first_token_ms: float | None = None
    llm_total_ms: float | None = None
    tts_first_audio_ms: float | None = None  # text handed to TTS -> its first audio
    end_to_audio_ms: float | None = None  # turn taken as over -> first reply audio to the pacer
    llm_start_to_audio_ms: float | None = None
    turn_latency_ms: float | None = None  # caller's last voiced frame -> first reply packet sent

    def to_json(self) -> dict[str, float]:
        return {k: round(v, 1) for k, v in asdict(self).items() if v is not None}


# The per-stage timings by name: the store has a column for each.
TIMINGS = tuple(f.name for f in dataclasses.fields(TurnTimings))


@dataclass(frozen=True)
class ToolUse:
    """One tool server call. Its arguments (JSON text) and result are the caller's business: they
    go where the transcript goes (calls.jsonl, the store with the text opt-in), sealed alike."""

    tool: str
    status: Literal["ok", "timeout", "error"]
    arguments: str | None = None
    result: str | None = None  # ok calls only

    def to_json(self) -> dict[str, str]:
        data = {"tool": self.tool, "status": self.status}
        if self.arguments is not None:
            data["arguments"] = self.arguments
        if self.result is not None:
            data["result"] = self.result
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ToolUse:
        status = data.get("status")
        return cls(
            str(data.get("tool", "")),
            status if status in ("ok", "timeout", "error") else "error",
            data.get("arguments"),
            data.get("result"),
        )


@dataclass
class Turn:
    role: Literal["user", "agent"]
    text: str
    at: str
    interrupted: bool = False
    timings: TurnTimings = field(default_factory=TurnTimings)  # agent turns
    # Caller turns: what ended the turn (model, silence, provider, max_wait, max_length) and
    # after how much caller silence, in 20 ms audio frames.
    ended_by: str | None = None
    silence_frames: int | None = None
    # Agent turns: the knowledge passages (source file, heading) the reply was thought with.
    sources: list[tuple[str, str]] = field(default_factory=list)
    # Agent turns: the tool server calls behind the reply.
    tools: list[ToolUse] = field(default_factory=list)
    # Interrupted agent turns: how much of the reply's audio the caller heard (as the media
    # leg knows it: frames sent on RTP and AudioSocket, Asterisk's play-out on WebSocket).
    heard_ms: int | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"role": self.role, "text": self.text, "at": self.at}
        if self.interrupted:
            data["interrupted"] = True
        if self.heard_ms is not None:
            data["heard_ms"] = self.heard_ms
        timings = self.timings.to_json()
        if timings:
            data["timings"] = timings
        if self.ended_by is not None:
            data["ended_by"] = self.ended_by
            data["silence_frames"] = self.silence_frames
        if self.sources:
            data["sources"] = sources_json(self.sources)
        if self.tools:
            data["tools"] = tools_json(self.tools)
        return data


def tools_json(tools: Sequence[ToolUse]) -> list[dict[str, str]]:
    return [t.to_json() for t in tools]


def sources_json(sources: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    """Passages as the record shows them (and the store gives back)."""
    return [{"source": source, "heading": heading} for source, heading in sources]


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
    # The agent that handled it (AGENT_INSTANCE_ID): in a pool, which one took the call.
    instance: str | None = None
    # The caller's language: the last of the profile's language and languages the recogniser
    # reported (one it was not configured for changes nothing); None when it reported none.
    language: str | None = None

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
            "instance": self.instance,
            "language": self.language,
        }


class RecordWriter:
    """Appends records to ``calls.jsonl``: 0600 in a 0700 directory (numbers, names, transcripts)."""

    def __init__(self, directory: Path, cipher: DataCipher | None = None) -> None:
        self.path = directory / "calls.jsonl"
        self.cipher = cipher  # seals turn texts and fields (ari_agent/store/crypto.py)
        private_dir(directory)
        make_private(self.path)
        self._lock = asyncio.Lock()

    async def write(self, record: CallRecord) -> None:
        from ari_agent.store.crypto import seal_record  # the store package imports this module

        line = json.dumps(seal_record(record.to_json(), self.cipher), ensure_ascii=False) + "\n"
        async with self._lock:
            try:
                await asyncio.to_thread(self._append, line)
            except OSError as exc:
                log.error("cannot write call record to %s: %s", self.path, exc)

    def _append(self, line: str) -> None:
        # The file lock: `calls erase` rewrites the file under it, so no line is lost to it.
        with locked(self.path):
            append_private(self.path, line)
