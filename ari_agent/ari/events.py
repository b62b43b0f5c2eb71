"""ARI event models and their sans-IO decoder.

Text in, frozen dataclasses out. Nothing here touches a socket: the WebSocket
loop (``websocket.py``) feeds frames to :func:`decode_event` and the REST client
(``client.py``) uses :func:`channel_from_json` / :func:`bridge_from_json`.

Malformed input raises ``ValueError`` whose message names the event type and the
offending field (``"StasisStart: field 'channel.id' is missing"``), so the
listener can count and skip it without guessing what went wrong.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeAlias

__all__ = [
    "ApplicationReplaced",
    "Bridge",
    "BridgeDestroyed",
    "CallBroadcast",
    "Caller",
    "Channel",
    "ChannelDestroyed",
    "ChannelDtmfReceived",
    "ChannelEnteredBridge",
    "ChannelHangupRequest",
    "ChannelLeftBridge",
    "ChannelStateChange",
    "ChannelVarset",
    "DialplanLocation",
    "Event",
    "StasisEnd",
    "StasisStart",
    "UnknownEvent",
    "bridge_from_json",
    "channel_from_json",
    "decode_event",
]

_EMPTY: Mapping[str, str] = MappingProxyType({})


# --------------------------------------------------------------------------- models


@dataclass(frozen=True, slots=True)
class Caller:
    number: str
    name: str


@dataclass(frozen=True, slots=True)
class DialplanLocation:
    context: str
    exten: str
    priority: int


@dataclass(frozen=True, slots=True)
class Channel:
    id: str
    name: str
    state: str
    caller: Caller
    dialplan: DialplanLocation | None
    # Mappings are not hashable; keep them out of the hash but in equality.
    channelvars: Mapping[str, str] = field(default_factory=lambda: _EMPTY, hash=False)
    creationtime: str = ""


@dataclass(frozen=True, slots=True)
class Bridge:
    id: str
    bridge_type: str
    channels: tuple[str, ...] = ()


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class StasisStart:
    application: str
    channel: Channel
    args: tuple[str, ...]
    replace_channel: Channel | None = None


@dataclass(frozen=True, slots=True)
class StasisEnd:
    application: str
    channel: Channel


@dataclass(frozen=True, slots=True)
class ChannelDestroyed:
    channel: Channel
    cause: int
    cause_txt: str


@dataclass(frozen=True, slots=True)
class ChannelHangupRequest:
    channel: Channel


@dataclass(frozen=True, slots=True)
class ChannelStateChange:
    channel: Channel


@dataclass(frozen=True, slots=True)
class ChannelDtmfReceived:
    channel: Channel
    digit: str
    duration_ms: int


@dataclass(frozen=True, slots=True)
class ChannelVarset:
    # None for a global variable.
    channel: Channel | None
    variable: str
    value: str


@dataclass(frozen=True, slots=True)
class BridgeDestroyed:
    bridge: Bridge


@dataclass(frozen=True, slots=True)
class ChannelEnteredBridge:
    bridge: Bridge
    channel: Channel


@dataclass(frozen=True, slots=True)
class ChannelLeftBridge:
    bridge: Bridge
    channel: Channel


@dataclass(frozen=True, slots=True)
class ApplicationReplaced:
    application: str


@dataclass(frozen=True, slots=True)
class CallBroadcast:
    """StasisBroadcast offers a channel to every matching app; ``POST /events/claim`` takes it."""

    application: str
    channel: Channel
    caller: str = ""
    called: str = ""


@dataclass(frozen=True, slots=True)
class UnknownEvent:
    """A well-formed event of a type we do not model; kept so callers may log it."""

    type: str
    raw: Mapping[str, Any] = field(hash=False)


Event: TypeAlias = (
    StasisStart
    | StasisEnd
    | ChannelDestroyed
    | ChannelHangupRequest
    | ChannelStateChange
    | ChannelDtmfReceived
    | ChannelVarset
    | BridgeDestroyed
    | ChannelEnteredBridge
    | ChannelLeftBridge
    | ApplicationReplaced
    | CallBroadcast
    | UnknownEvent
)


# --------------------------------------------------------------------------- field readers


@dataclass(frozen=True, slots=True)
class _Where:
    """Where a field sits, for error messages: the event name and the path to the object."""

    what: str
    path: str = ""

    def at(self, key: str) -> _Where:
        return _Where(self.what, f"{self.path}{key}.")

    def field(self, key: str) -> str:
        return f"{self.what}: field '{self.path}{key}'"


def _describe(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _obj(parent: Mapping[str, Any], key: str, w: _Where) -> Mapping[str, Any]:
    if key not in parent:
        raise ValueError(f"{w.field(key)} is missing")
    value = parent[key]
    if not isinstance(value, dict):
        raise ValueError(f"{w.field(key)} must be an object, got {_describe(value)}")
    return value


def _str(parent: Mapping[str, Any], key: str, w: _Where, default: str | None = None) -> str:
    if key not in parent:
        if default is not None:
            return default
        raise ValueError(f"{w.field(key)} is missing")
    value = parent[key]
    if not isinstance(value, str):
        raise ValueError(f"{w.field(key)} must be a string, got {_describe(value)}")
    return value


def _int(parent: Mapping[str, Any], key: str, w: _Where, default: int | None = None) -> int:
    if key not in parent:
        if default is not None:
            return default
        raise ValueError(f"{w.field(key)} is missing")
    value = parent[key]
    # bool is an int subclass; a JSON true is never a valid number here.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{w.field(key)} must be an integer, got {_describe(value)}")
    return value


def _nonempty_str(parent: Mapping[str, Any], key: str, w: _Where) -> str:
    value = _str(parent, key, w)
    if not value:
        raise ValueError(f"{w.field(key)} is empty")
    return value


def _str_list(parent: Mapping[str, Any], key: str, w: _Where) -> tuple[str, ...]:
    value = parent.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"{w.field(key)} must be a list of strings")
    return tuple(value)


# --------------------------------------------------------------------------- model decoders


def _channel_at(obj: Any, w: _Where) -> Channel:
    if not isinstance(obj, dict):
        raise ValueError(
            f"{w.what}: {w.path.rstrip('.') or 'channel'} must be an object, got {_describe(obj)}"
        )
    # Identity fields are mandatory; descriptive ones default, since Asterisk
    # versions differ in what they include and none of it is worth dropping a call.
    caller = Caller("", "")
    if "caller" in obj:
        c = _obj(obj, "caller", w)
        cw = w.at("caller")
        caller = Caller(number=_str(c, "number", cw, ""), name=_str(c, "name", cw, ""))
    dialplan: DialplanLocation | None = None
    if obj.get("dialplan") is not None:
        d = _obj(obj, "dialplan", w)
        dw = w.at("dialplan")
        dialplan = DialplanLocation(
            context=_str(d, "context", dw), exten=_str(d, "exten", dw), priority=_int(d, "priority", dw)
        )
    channelvars: Mapping[str, str] = _EMPTY
    if obj.get("channelvars") is not None:
        raw = _obj(obj, "channelvars", w)
        vw = w.at("channelvars")
        channelvars = MappingProxyType({name: _str(raw, name, vw) for name in raw})
    return Channel(
        id=_nonempty_str(obj, "id", w),
        name=_str(obj, "name", w),
        state=_str(obj, "state", w),
        caller=caller,
        dialplan=dialplan,
        channelvars=channelvars,
        creationtime=_str(obj, "creationtime", w, ""),
    )


def _bridge_at(obj: Any, w: _Where) -> Bridge:
    if not isinstance(obj, dict):
        raise ValueError(
            f"{w.what}: {w.path.rstrip('.') or 'bridge'} must be an object, got {_describe(obj)}"
        )
    return Bridge(
        id=_nonempty_str(obj, "id", w),
        bridge_type=_str(obj, "bridge_type", w, ""),
        channels=_str_list(obj, "channels", w),
    )


def channel_from_json(obj: Any) -> Channel:
    """Decode an ARI ``Channel`` object (as returned by the REST API)."""
    return _channel_at(obj, _Where("Channel"))


def bridge_from_json(obj: Any) -> Bridge:
    """Decode an ARI ``Bridge`` object (as returned by the REST API)."""
    return _bridge_at(obj, _Where("Bridge"))


# --------------------------------------------------------------------------- event decoders


def _channel(msg: Mapping[str, Any], what: str, key: str = "channel") -> Channel:
    w = _Where(what)
    if key not in msg:
        raise ValueError(f"{w.field(key)} is missing")
    return _channel_at(msg[key], w.at(key))


def _bridge(msg: Mapping[str, Any], what: str) -> Bridge:
    w = _Where(what)
    if "bridge" not in msg:
        raise ValueError(f"{w.field('bridge')} is missing")
    return _bridge_at(msg["bridge"], w.at("bridge"))


def _stasis_start(m: Mapping[str, Any]) -> StasisStart:
    w = _Where("StasisStart")
    replace = _channel(m, w.what, "replace_channel") if m.get("replace_channel") is not None else None
    return StasisStart(_str(m, "application", w), _channel(m, w.what), _str_list(m, "args", w), replace)


def _stasis_end(m: Mapping[str, Any]) -> StasisEnd:
    return StasisEnd(_str(m, "application", _Where("StasisEnd")), _channel(m, "StasisEnd"))


def _channel_destroyed(m: Mapping[str, Any]) -> ChannelDestroyed:
    w = _Where("ChannelDestroyed")
    return ChannelDestroyed(_channel(m, w.what), _int(m, "cause", w, 0), _str(m, "cause_txt", w, ""))


def _channel_hangup_request(m: Mapping[str, Any]) -> ChannelHangupRequest:
    return ChannelHangupRequest(_channel(m, "ChannelHangupRequest"))


def _channel_state_change(m: Mapping[str, Any]) -> ChannelStateChange:
    return ChannelStateChange(_channel(m, "ChannelStateChange"))


def _channel_dtmf_received(m: Mapping[str, Any]) -> ChannelDtmfReceived:
    w = _Where("ChannelDtmfReceived")
    return ChannelDtmfReceived(
        _channel(m, w.what), _nonempty_str(m, "digit", w), _int(m, "duration_ms", w, 0)
    )


def _channel_varset(m: Mapping[str, Any]) -> ChannelVarset:
    w = _Where("ChannelVarset")
    channel = _channel(m, w.what) if m.get("channel") is not None else None
    return ChannelVarset(channel, _str(m, "variable", w), _str(m, "value", w))


def _bridge_destroyed(m: Mapping[str, Any]) -> BridgeDestroyed:
    return BridgeDestroyed(_bridge(m, "BridgeDestroyed"))


def _channel_entered_bridge(m: Mapping[str, Any]) -> ChannelEnteredBridge:
    return ChannelEnteredBridge(_bridge(m, "ChannelEnteredBridge"), _channel(m, "ChannelEnteredBridge"))


def _channel_left_bridge(m: Mapping[str, Any]) -> ChannelLeftBridge:
    return ChannelLeftBridge(_bridge(m, "ChannelLeftBridge"), _channel(m, "ChannelLeftBridge"))


def _application_replaced(m: Mapping[str, Any]) -> ApplicationReplaced:
    return ApplicationReplaced(_str(m, "application", _Where("ApplicationReplaced")))


def _call_broadcast(m: Mapping[str, Any]) -> CallBroadcast:
    w = _Where("CallBroadcast")
    return CallBroadcast(
        _str(m, "application", w), _channel(m, w.what), _str(m, "caller", w, ""), _str(m, "called", w, "")
    )


_DECODERS: dict[str, Callable[[Mapping[str, Any]], Event]] = {
    "StasisStart": _stasis_start,
    "StasisEnd": _stasis_end,
    "ChannelDestroyed": _channel_destroyed,
    "ChannelHangupRequest": _channel_hangup_request,
    "ChannelStateChange": _channel_state_change,
    "ChannelDtmfReceived": _channel_dtmf_received,
    "ChannelVarset": _channel_varset,
    "BridgeDestroyed": _bridge_destroyed,
    "ChannelEnteredBridge": _channel_entered_bridge,
    "ChannelLeftBridge": _channel_left_bridge,
    "ApplicationReplaced": _application_replaced,
    "CallBroadcast": _call_broadcast,
}


def decode_event(data: str | bytes) -> Event:
    """Decode one ARI WebSocket message into an event.

    Raises ``ValueError`` for invalid UTF-8 or JSON, a message that is not an
    object, a missing or non-string ``type``, or a known event with a missing or
    mistyped field. A well-formed event of another type becomes :class:`UnknownEvent`.
    """
    if isinstance(data, bytes | bytearray):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"ARI message is not valid UTF-8 (byte {exc.start})") from None
    else:
        text = data
    try:
        msg = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"ARI message is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise ValueError("ARI message is nested too deeply to decode") from None
    if not isinstance(msg, dict):
        raise ValueError(f"ARI message must be a JSON object, got {_describe(msg)}")
    if "type" not in msg:
        raise ValueError("ARI message has no 'type' field")
    kind = msg["type"]
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"ARI message field 'type' must be a non-empty string, got {_describe(kind)}")
    decoder = _DECODERS.get(kind)
    if decoder is None:
        return UnknownEvent(kind, MappingProxyType(msg))
    return decoder(msg)
