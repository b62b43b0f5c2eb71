"""What the call store keeps: one call, its turns and its captured fields, as frozen values."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from ari_agent.conversation.records import ToolUse

if TYPE_CHECKING:
    from ari_agent.conversation.records import CallRecord

Role = Literal["user", "agent"]


def _require_aware(name: str, value: datetime | None) -> None:
    # Naive datetimes would be stored as if UTC and silently shift by the host's offset.
    if value is not None and value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got naive {value.isoformat()}")


@dataclass(frozen=True)
class StoredTurn:
    """One utterance. ``text`` is None when the call's text was not stored.

    Timings in ms, None when not measured, on the agent's reply (as the pipeline records them):
    ``stt_ms`` (end of the caller's speech to the final transcript), ``llm_first_token_ms``,
    ``llm_total_ms``, ``end_to_audio_ms``, ``llm_start_to_audio_ms``, ``tts_first_audio_ms``
    and ``turn_latency_ms`` (end of caller speech to first agent packet).
    """

    role: Role
    text: str | None
    at: datetime
    interrupted: bool = False
    stt_ms: float | None = None
    llm_first_token_ms: float | None = None
    tts_first_audio_ms: float | None = None
    turn_latency_ms: float | None = None
    llm_total_ms: float | None = None
    end_to_audio_ms: float | None = None
    llm_start_to_audio_ms: float | None = None
    # Caller turns: what ended the turn and after how many 20 ms frames of silence.
    ended_by: str | None = None
    silence_frames: int | None = None
    # Agent turns: the knowledge passages (source file, heading) the reply was thought with.
    sources: tuple[tuple[str, str], ...] = ()
    # Tool server calls; their arguments and results only where the text is stored.
    tools: tuple[ToolUse, ...] = ()

    def __post_init__(self) -> None:
        if self.role not in ("user", "agent"):
            raise ValueError(f"role must be 'user' or 'agent', got {self.role!r}")
        _require_aware("at", self.at)


@dataclass(frozen=True)
class StoredCall:
    """A call as saved. ``store_text`` False: turn texts are written as NULL, roles and timings kept."""

    call_id: str
    channel_id: str
    profile: str
    started_at: datetime
    ended_at: datetime | None = None
    end_reason: str | None = None
    caller_number: str | None = None
    caller_name: str | None = None
    status: str | None = None  # AI_AGENT_STATUS handed to the dialplan, None if nobody was told
    result: str | None = None  # AI_AGENT_RESULT
    store_text: bool = False
    turns: tuple[StoredTurn, ...] = ()
    fields: Mapping[str, str] = field(default_factory=dict)
    media: Mapping[str, float | int | None] = field(default_factory=dict)  # inbound RTP figures
    instance: str | None = None  # the agent that handled it (AGENT_INSTANCE_ID)
    language: str | None = None  # the caller's language as the recogniser reported it

    def __post_init__(self) -> None:
        _require_aware("started_at", self.started_at)
        _require_aware("ended_at", self.ended_at)

    def __repr__(self) -> str:
        # Keeps the caller's number, name and transcript out of logs and tracebacks.
        return (
            f"StoredCall(call_id={self.call_id!r}, profile={self.profile!r}, "
            f"end_reason={self.end_reason!r}, turns={len(self.turns)}, fields={sorted(self.fields)})"
        )

    @classmethod
    def from_record(
        cls,
        record: CallRecord,
        *,
        store_text: bool,
        result: str | None = None,
        fields: Mapping[str, str] | None = None,
    ) -> StoredCall:
        """The store's view of a call record, per-stage timings included."""
        from ari_agent.conversation.records import STATUS_FOR, TIMINGS

        return cls(
            call_id=record.call_id,
            channel_id=record.channel_id,
            profile=record.profile,
            started_at=parse_utc(record.started_at),
            ended_at=parse_utc(record.ended_at) if record.ended_at else None,
            end_reason=record.end_reason,
            caller_number=record.caller.get("number") or None,
            caller_name=record.caller.get("name") or None,
            status=STATUS_FOR.get(record.end_reason) if record.end_reason else None,
            result=result if result is not None else record.variables.get("AI_AGENT_RESULT"),
            store_text=store_text,
            turns=tuple(
                StoredTurn(
                    role=t.role,
                    text=t.text,
                    at=parse_utc(t.at),
                    interrupted=t.interrupted,
                    **{name: getattr(t.timings, name) for name in TIMINGS},
                    ended_by=t.ended_by,
                    silence_frames=t.silence_frames,
                    sources=tuple(t.sources),
                    tools=tuple(t.tools),
                )
                for t in record.turns
            ),
            fields=dict(record.fields if fields is None else fields),
            media=dict(record.media),
            instance=record.instance,
            language=record.language,
        )

    def to_json(self) -> dict[str, Any]:
        """The call in the record's shape (``CallRecord.to_json()``): what ``calls show`` prints."""
        from ari_agent.conversation.records import TIMINGS, TurnTimings, format_utc, sources_json, tools_json

        turns = []
        for t in self.turns:
            turn: dict[str, Any] = {"role": t.role, "text": t.text, "at": format_utc(t.at)}
            if t.interrupted:
                turn["interrupted"] = True
            # The record's own rule (rounded to 0.1 ms), so the store and calls.jsonl agree.
            timings = TurnTimings(**{name: getattr(t, name) for name in TIMINGS}).to_json()
            if timings:
                turn["timings"] = timings
            if t.ended_by is not None:
                turn["ended_by"] = t.ended_by
                turn["silence_frames"] = t.silence_frames
            if t.sources:
                turn["sources"] = sources_json(t.sources)
            if t.tools:
                turn["tools"] = tools_json(t.tools)
            turns.append(turn)
        return {
            "call_id": self.call_id,
            "channel_id": self.channel_id,
            "caller": {"number": self.caller_number or "", "name": self.caller_name or ""},
            "profile": self.profile,
            "started_at": format_utc(self.started_at),
            "ended_at": format_utc(self.ended_at) if self.ended_at else None,
            "end_reason": self.end_reason,
            "status": self.status,
            "result": self.result,
            "turns": turns,
            "fields": dict(self.fields),
            "media": dict(self.media),
            "instance": self.instance,
            "language": self.language,
        }


@dataclass(frozen=True)
class CallSummary:
    """A calls row without its turns and fields, for listings."""

    call_id: str
    channel_id: str
    profile: str
    started_at: datetime
    ended_at: datetime | None
    end_reason: str | None
    caller_number: str | None
    caller_name: str | None
    status: str | None
    result: str | None
    store_text: bool
    turn_count: int
    instance: str | None = None
    language: str | None = None

    def __repr__(self) -> str:
        return f"CallSummary(call_id={self.call_id!r}, profile={self.profile!r}, turns={self.turn_count})"


def parse_utc(text: str) -> datetime:
    """ISO 8601 (``Z`` or an offset) to an aware UTC datetime; naive input is taken as UTC."""
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)
