"""chan_websocket's messages, sans-IO: TEXT control lines in, events out; commands and media out.

ExternalMedia with ``transport=websocket`` (Asterisk 22.6+, 21.11+, 20.16+)
carries the call's audio as BINARY messages (the channel's format, host
byte order for slin, as chan_websocket copies the frames) and everything
else as TEXT messages. Read from Asterisk 22.10.1's
``channels/chan_websocket.c`` and checked on the Debian 22.10.1 the tests
run:

- Asterisk says ``MEDIA_START connection_id:<id> channel:<name>
  channel_id:<id> format:slin16 optimal_frame_size:640 ptime:20`` first;
  ``MEDIA_XOFF`` when its play-out queue reaches 900 frames (1000 is full:
  a BINARY message then is dropped whole), ``MEDIA_XON`` below 800;
  ``MEDIA_MARK_PROCESSED <id>`` when a mark reaches the head of the queue
  (everything queued before it has been played); ``DTMF_END digit:5
  channel_id:<id>``; ``QUEUE_DRAINED``; ``STATUS k:v ...``; ``ERROR
  channel_id:<id> error_text:<text>``.
- The app sends ``PAUSE_MEDIA`` / ``CONTINUE_MEDIA`` (hold the queue, play
  silence), ``FLUSH_MEDIA`` (drop the queue, marks too), ``MARK_MEDIA
  <id>``, ``REPORT_QUEUE_DRAINED``, ``GET_STATUS``, ``HANGUP``. A TEXT
  message over 128 bytes is ignored by Asterisk (logged only).
- Media the app sends is cut into ``optimal_frame_size`` frames; a trailing
  partial frame is dropped (outside START_MEDIA_BUFFERING), so
  :func:`encode_media` only takes whole frames.

Versions: MEDIA_START, XOFF/XON, FLUSH/PAUSE/CONTINUE_MEDIA, QUEUE_DRAINED,
GET_STATUS, DTMF_END and HANGUP came with the module (22.6, 21.11, 20.16);
MARK_MEDIA / MEDIA_MARK_PROCESSED and the JSON message format with 22.8 and
20.18 (not in 23.0 or 23.1; back in 23.2). JSON events (``{"event": ...}``)
are decoded too, so an Asterisk set to ``control_message_format = json``
still works for what the agent reads.

:func:`parse_event` never raises anything but :class:`WebSocketMediaError`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from ari_agent.errors import AgentError

# Asterisk ignores a TEXT message longer than this (MAX_TEXT_MESSAGE_LEN).
MAX_COMMAND_LEN = 128
# Its play-out queue, in frames (QUEUE_LENGTH_MAX, _XOFF_LEVEL, _XON_LEVEL).
QUEUE_MAX = 1000
QUEUE_XOFF = 900
QUEUE_XON = 800

PAUSE_MEDIA = "PAUSE_MEDIA"
CONTINUE_MEDIA = "CONTINUE_MEDIA"
FLUSH_MEDIA = "FLUSH_MEDIA"
MARK_MEDIA = "MARK_MEDIA"
GET_STATUS = "GET_STATUS"
REPORT_QUEUE_DRAINED = "REPORT_QUEUE_DRAINED"
HANGUP = "HANGUP"
COMMANDS = frozenset(
    {PAUSE_MEDIA, CONTINUE_MEDIA, FLUSH_MEDIA, MARK_MEDIA, GET_STATUS, REPORT_QUEUE_DRAINED, HANGUP}
)


class WebSocketMediaError(AgentError, ValueError):
    """A chan_websocket message that cannot be read or written as asked."""


@dataclass(frozen=True, slots=True)
class MediaStart:
    """The first message: the connection's channel, its format and the frame size Asterisk wants."""

    connection_id: str
    channel: str
    channel_id: str
    format: str
    optimal_frame_size: int
    ptime: int


@dataclass(frozen=True, slots=True)
class MediaXoff:
    """Asterisk's queue is nearly full: stop sending media until MediaXon."""


@dataclass(frozen=True, slots=True)
class MediaXon:
    """Asterisk's queue has room again."""


@dataclass(frozen=True, slots=True)
class QueueDrained:
    """Everything queued was played (asked for with REPORT_QUEUE_DRAINED)."""


@dataclass(frozen=True, slots=True)
class MarkProcessed:
    """Everything sent before ``MARK_MEDIA <mark>`` has been played."""

    mark: str


@dataclass(frozen=True, slots=True)
class BufferingCompleted:
    mark: str


@dataclass(frozen=True, slots=True)
class DtmfEnd:
    """A key press (the agent takes DTMF from ARI; this copy is only counted)."""

    digit: str


@dataclass(frozen=True, slots=True)
class Status:
    fields: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    """Asterisk refused a command (e.g. one its format or direction does not allow)."""

    text: str


@dataclass(frozen=True, slots=True)
class UnknownEvent:
    """An event this module does not know (a newer Asterisk): skipped."""

    name: str


Event = (
    MediaStart
    | MediaXoff
    | MediaXon
    | QueueDrained
    | MarkProcessed
    | BufferingCompleted
    | DtmfEnd
    | Status
    | ErrorEvent
    | UnknownEvent
)


def _plain_fields(rest: str) -> dict[str, str]:
    """``k:v k:v`` after the event name; a token without a colon is not a field."""
    out: dict[str, str] = {}
    for token in rest.split():
        name, sep, value = token.partition(":")
        if sep and name:
            out[name] = value
    return out


def _int(fields: dict[str, object], name: str) -> int:
    value = fields.get(name)
    if isinstance(value, bool):
        raise WebSocketMediaError(f"MEDIA_START {name} is not a number")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 9:
        number = int(value)
    else:
        raise WebSocketMediaError(f"MEDIA_START without a whole {name}")
    return number


def _media_start(fields: dict[str, object]) -> MediaStart:
    texts = {k: v for k, v in fields.items() if isinstance(v, str)}
    if not texts.get("format"):
        raise WebSocketMediaError("MEDIA_START without a format")
    size = _int(fields, "optimal_frame_size")
    ptime = _int(fields, "ptime")
    if ptime <= 0:
        raise WebSocketMediaError(f"MEDIA_START with ptime {ptime}")
    return MediaStart(
        connection_id=texts.get("connection_id", ""),
        channel=texts.get("channel", ""),
        channel_id=texts.get("channel_id", ""),
        format=texts["format"],
        optimal_frame_size=size,
        ptime=ptime,
    )


def _event(name: str, fields: dict[str, object], rest: str) -> Event:
    if name == "MEDIA_START":
        return _media_start(fields)
    if name == "MEDIA_XOFF":
        return MediaXoff()
    if name == "MEDIA_XON":
        return MediaXon()
    if name == "QUEUE_DRAINED":
        return QueueDrained()
    if name in ("MEDIA_MARK_PROCESSED", "MEDIA_BUFFERING_COMPLETED"):
        mark = fields.get("correlation_id", rest)
        text = mark if isinstance(mark, str) else ""
        return MarkProcessed(text) if name == "MEDIA_MARK_PROCESSED" else BufferingCompleted(text)
    if name == "DTMF_END":
        digit = fields.get("digit")
        if not isinstance(digit, str) or len(digit) != 1:
            raise WebSocketMediaError("DTMF_END without one digit")
        return DtmfEnd(digit)
    if name == "STATUS":
        return Status({k: str(v) for k, v in fields.items() if k != "event"})
    if name == "ERROR":
        given = fields.get("error_text")
        if isinstance(given, str):
            return ErrorEvent(given.strip())
        _, sep, after = rest.partition("error_text:")
        return ErrorEvent((after if sep else rest).strip())
    return UnknownEvent(name)


def parse_event(text: str | bytes) -> Event:
    """One TEXT message from Asterisk, plain-text or JSON."""
    if isinstance(text, bytes | bytearray):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            raise WebSocketMediaError("a control message that is not UTF-8") from None
    line = text.strip()
    if not line:
        raise WebSocketMediaError("an empty control message")
    if line.startswith("{"):
        try:
            doc = json.loads(line)
        except (ValueError, RecursionError):
            raise WebSocketMediaError("a control message that is not valid JSON") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("event"), str) or not doc["event"]:
            raise WebSocketMediaError("a JSON control message without an event name")
        return _event(doc["event"], doc, "")
    name, _, rest = line.partition(" ")
    rest = rest.strip()
    fields: dict[str, object] = dict(_plain_fields(rest))
    if name == "ERROR":
        # error_text runs to the end of the line, spaces and all.
        _, sep, after = rest.partition("error_text:")
        if sep:
            fields["error_text"] = after
    return _event(name, fields, rest)


def encode_command(command: str, argument: str | None = None) -> str:
    """One plain-text command line (``MARK_MEDIA <id>``); too long or not printable ASCII raises."""
    if command not in COMMANDS:
        raise WebSocketMediaError(f"{command!r} is not a chan_websocket command")
    if argument is None:
        return command
    if command != MARK_MEDIA:
        raise WebSocketMediaError(f"{command} takes no argument")
    if not argument or not argument.isascii() or not argument.isprintable() or " " in argument:
        raise WebSocketMediaError("a mark is one word of printable ASCII")
    line = f"{command} {argument}"
    if len(line) > MAX_COMMAND_LEN:
        raise WebSocketMediaError(f"a command of {len(line)} characters (Asterisk ignores more than 128)")
    return line


def encode_media(payload: bytes, frame_size: int) -> bytes:
    """A BINARY message of whole frames (Asterisk drops a partial frame at the end)."""
    if frame_size <= 0:
        raise WebSocketMediaError(f"frame size {frame_size}")
    if not payload or len(payload) % frame_size:
        raise WebSocketMediaError(f"{len(payload)} bytes of media are not whole {frame_size}-byte frames")
    return payload
