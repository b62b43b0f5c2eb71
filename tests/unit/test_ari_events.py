"""Byte-vector tests for the sans-IO ARI event decoder (payload shapes as Asterisk 22 sends them)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ari_agent.ari.events import (
    ApplicationReplaced,
    Bridge,
    BridgeDestroyed,
    Caller,
    Channel,
    ChannelDestroyed,
    ChannelDtmfReceived,
    ChannelEnteredBridge,
    ChannelHangupRequest,
    ChannelLeftBridge,
    ChannelStateChange,
    ChannelVarset,
    DialplanLocation,
    StasisEnd,
    StasisStart,
    UnknownEvent,
    bridge_from_json,
    channel_from_json,
    decode_event,
)

# A PJSIP caller's channel as Asterisk 22 serialises it (ari.conf channelvars set).
CALLER_CHANNEL_JSON = """{
  "id": "1716989696.12",
  "name": "PJSIP/caller-00000004",
  "state": "Ring",
  "protocol_id": "a84d5e5e-2b2f-4f9b-8d4e-0f0f0f0f0f0f",
  "caller": {"name": "Alice", "number": "5551234"},
  "connected": {"name": "", "number": ""},
  "accountcode": "",
  "dialplan": {
    "context": "from-caller",
    "exten": "100",
    "priority": 2,
    "app_name": "Stasis",
    "app_data": "ai-agent,frontdesk"
  },
  "creationtime": "2024-05-29T13:34:56.789+0000",
  "language": "en",
  "channelvars": {"AI_AGENT_PROFILE": "", "CHANNEL(pjsip,remote_addr)": "127.0.0.1:15070"}
}"""

EXTERNAL_MEDIA_JSON = """{
  "id": "aiagent-i1-em-7",
  "name": "UnicastRTP/127.0.0.1:40000-0x7f3c2c01f1d0",
  "state": "Down",
  "protocol_id": "",
  "caller": {"name": "", "number": ""},
  "connected": {"name": "", "number": ""},
  "accountcode": "",
  "dialplan": {"context": "default", "exten": "s", "priority": 1, "app_name": "", "app_data": ""},
  "creationtime": "2024-05-29T13:34:57.001+0000",
  "language": "en",
  "channelvars": {"UNICASTRTP_LOCAL_ADDRESS": "127.0.0.1", "UNICASTRTP_LOCAL_PORT": "14512"}
}"""

BRIDGE_JSON = """{
  "id": "aiagent-i1-br-7",
  "technology": "simple_bridge",
  "bridge_type": "mixing",
  "bridge_class": "stasis",
  "creator": "Stasis",
  "name": "",
  "channels": ["1716989696.12", "aiagent-i1-em-7"],
  "creationtime": "2024-05-29T13:34:56.900+0000",
  "video_mode": "talker"
}"""


def envelope(kind: str, **fields: Any) -> str:
    msg = {
        "type": kind,
        "timestamp": "2024-05-29T13:34:57.123+0000",
        "asterisk_id": "02:42:ac:11:00:02",
        "application": "ai-agent",
    }
    msg.update(fields)
    return json.dumps(msg)


def caller_channel() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(CALLER_CHANNEL_JSON)
    return data


def test_stasis_start_full_channel() -> None:
    raw = (
        '{"type":"StasisStart","timestamp":"2024-05-29T13:34:56.800+0000","args":["frontdesk"],'
        f'"channel":{CALLER_CHANNEL_JSON},"asterisk_id":"02:42:ac:11:00:02","application":"ai-agent"}}'
    ).encode()
    event = decode_event(raw)
    assert isinstance(event, StasisStart)
    assert event.application == "ai-agent"
    assert event.args == ("frontdesk",)
    assert event.replace_channel is None
    ch = event.channel
    assert ch.id == "1716989696.12"
    assert ch.name == "PJSIP/caller-00000004"
    assert ch.state == "Ring"
    assert ch.caller == Caller(number="5551234", name="Alice")
    assert ch.dialplan == DialplanLocation(context="from-caller", exten="100", priority=2)
    assert ch.channelvars["CHANNEL(pjsip,remote_addr)"] == "127.0.0.1:15070"
    assert ch.channelvars["AI_AGENT_PROFILE"] == ""
    assert ch.creationtime == "2024-05-29T13:34:56.789+0000"


def test_stasis_start_without_args_and_with_replace_channel() -> None:
    replaced = caller_channel() | {"id": "1716989696.9", "name": "Local/100@x-00000001;2"}
    event = decode_event(envelope("StasisStart", args=[], channel=caller_channel(), replace_channel=replaced))
    assert isinstance(event, StasisStart)
    assert event.args == ()
    assert event.replace_channel is not None
    assert event.replace_channel.id == "1716989696.9"


def test_external_media_channel_vars() -> None:
    event = decode_event(envelope("StasisStart", args=[], channel=json.loads(EXTERNAL_MEDIA_JSON)))
    assert isinstance(event, StasisStart)
    assert event.channel.channelvars == {
        "UNICASTRTP_LOCAL_ADDRESS": "127.0.0.1",
        "UNICASTRTP_LOCAL_PORT": "14512",
    }


def test_channel_without_optional_parts() -> None:
    # Older or minimal channel snapshots: no channelvars, no dialplan, no caller.
    ch = channel_from_json({"id": "c1", "name": "Local/x", "state": "Up"})
    assert ch == Channel("c1", "Local/x", "Up", Caller("", ""), None, {}, "")
    assert hash(ch) == hash(Channel("c1", "Local/x", "Up", Caller("", ""), None, {}, ""))


def test_stasis_end() -> None:
    event = decode_event(envelope("StasisEnd", channel=caller_channel()))
    assert isinstance(event, StasisEnd)
    assert event.application == "ai-agent"
    assert event.channel.id == "1716989696.12"


def test_channel_destroyed() -> None:
    event = decode_event(
        envelope("ChannelDestroyed", cause=16, cause_txt="Normal Clearing", channel=caller_channel())
    )
    assert event == ChannelDestroyed(channel_from_json(caller_channel()), 16, "Normal Clearing")


def test_hangup_request_and_state_change() -> None:
    hang = decode_event(envelope("ChannelHangupRequest", cause=16, soft=False, channel=caller_channel()))
    assert isinstance(hang, ChannelHangupRequest)
    assert hang.channel.id == "1716989696.12"
    up = decode_event(envelope("ChannelStateChange", channel=caller_channel() | {"state": "Up"}))
    assert isinstance(up, ChannelStateChange)
    assert up.channel.state == "Up"


def test_dtmf() -> None:
    event = decode_event(
        envelope("ChannelDtmfReceived", digit="#", duration_ms=120, channel=caller_channel())
    )
    assert isinstance(event, ChannelDtmfReceived)
    assert (event.digit, event.duration_ms) == ("#", 120)


def test_varset_on_channel_and_global() -> None:
    on_channel = decode_event(
        envelope("ChannelVarset", variable="AI_AGENT_STATUS", value="COMPLETED", channel=caller_channel())
    )
    assert isinstance(on_channel, ChannelVarset)
    assert on_channel.channel is not None and on_channel.channel.id == "1716989696.12"
    assert (on_channel.variable, on_channel.value) == ("AI_AGENT_STATUS", "COMPLETED")
    global_var = decode_event(envelope("ChannelVarset", variable="GLOBALX", value="1"))
    assert global_var == ChannelVarset(None, "GLOBALX", "1")


def test_bridge_events() -> None:
    bridge = json.loads(BRIDGE_JSON)
    destroyed = decode_event(envelope("BridgeDestroyed", bridge=bridge | {"channels": []}))
    assert destroyed == BridgeDestroyed(Bridge("aiagent-i1-br-7", "mixing", ()))
    entered = decode_event(
        envelope("ChannelEnteredBridge", bridge=bridge, channel=json.loads(EXTERNAL_MEDIA_JSON))
    )
    assert isinstance(entered, ChannelEnteredBridge)
    assert entered.bridge.channels == ("1716989696.12", "aiagent-i1-em-7")
    assert entered.channel.id == "aiagent-i1-em-7"
    left = decode_event(envelope("ChannelLeftBridge", bridge=bridge, channel=caller_channel()))
    assert isinstance(left, ChannelLeftBridge)
    assert (left.bridge.id, left.channel.id) == ("aiagent-i1-br-7", "1716989696.12")


def test_application_replaced() -> None:
    assert decode_event(envelope("ApplicationReplaced")) == ApplicationReplaced("ai-agent")


def test_unknown_type_is_kept_raw() -> None:
    event = decode_event(envelope("PlaybackFinished", playback={"id": "p1", "state": "done"}))
    assert isinstance(event, UnknownEvent)
    assert event.type == "PlaybackFinished"
    assert event.raw["playback"]["id"] == "p1"


def test_bridge_from_json_rest_shape() -> None:
    assert bridge_from_json(json.loads(BRIDGE_JSON)).bridge_type == "mixing"


def test_events_are_frozen() -> None:
    event = decode_event(envelope("StasisEnd", channel=caller_channel()))
    assert isinstance(event, StasisEnd)
    with pytest.raises(AttributeError):
        event.application = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        event.channel.channelvars["X"] = "1"  # type: ignore[index]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xff\xfe{}", "not valid UTF-8"),
        ("{not json", "not valid JSON"),
        ("", "not valid JSON"),
        ("[1, 2]", "must be a JSON object, got list"),
        ('"StasisStart"', "must be a JSON object, got str"),
        ("null", "must be a JSON object, got null"),
        ('{"application": "ai-agent"}', "no 'type' field"),
        ('{"type": 7}', "field 'type' must be a non-empty string, got int"),
        ('{"type": ""}', "field 'type' must be a non-empty string"),
        ("[" * 100000 + "]" * 100000, "nested too deeply"),
    ],
)
def test_invalid_messages(data: str | bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_event(data)


def _without(obj: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k != key}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (envelope("StasisStart", args=[]), "StasisStart: field 'channel' is missing"),
        (
            envelope("StasisStart", args=[], channel=_without(caller_channel(), "id")),
            "StasisStart: field 'channel.id' is missing",
        ),
        (
            envelope("StasisStart", args=[], channel=caller_channel() | {"id": ""}),
            "StasisStart: field 'channel.id' is empty",
        ),
        (
            envelope("StasisStart", args=[], channel=caller_channel() | {"id": 12}),
            "StasisStart: field 'channel.id' must be a string, got int",
        ),
        (envelope("StasisStart", args=[], channel="1716989696.12"), "StasisStart: channel must be an object"),
        (
            envelope("StasisStart", args="frontdesk", channel=caller_channel()),
            "StasisStart: field 'args' must be a list of strings",
        ),
        (
            envelope(
                "StasisStart",
                args=[],
                channel=caller_channel() | {"dialplan": {"context": "c", "exten": "1", "priority": "2"}},
            ),
            "StasisStart: field 'channel.dialplan.priority' must be an integer, got str",
        ),
        (
            envelope("StasisStart", args=[], channel=caller_channel() | {"caller": {"number": 5551234}}),
            "StasisStart: field 'channel.caller.number' must be a string, got int",
        ),
        (
            envelope("StasisStart", args=[], channel=caller_channel() | {"channelvars": {"X": 1}}),
            "StasisStart: field 'channel.channelvars.X' must be a string, got int",
        ),
        (
            envelope("StasisStart", args=[], channel=caller_channel(), replace_channel={"name": "x"}),
            "StasisStart: field 'replace_channel.id' is missing",
        ),
        (
            json.dumps({"type": "StasisEnd", "channel": caller_channel()}),
            "StasisEnd: field 'application' is missing",
        ),
        (
            envelope("ChannelDestroyed", cause="16", cause_txt="Normal", channel=caller_channel()),
            "ChannelDestroyed: field 'cause' must be an integer, got str",
        ),
        (
            envelope("ChannelDestroyed", cause=True, cause_txt="Normal", channel=caller_channel()),
            "ChannelDestroyed: field 'cause' must be an integer, got bool",
        ),
        (
            envelope("ChannelDtmfReceived", duration_ms=100, channel=caller_channel()),
            "field 'digit' is missing",
        ),
        (
            envelope("ChannelVarset", value="1", channel=caller_channel()),
            "ChannelVarset: field 'variable' is missing",
        ),
        (envelope("BridgeDestroyed"), "BridgeDestroyed: field 'bridge' is missing"),
        (
            envelope("BridgeDestroyed", bridge={"bridge_type": "mixing"}),
            "BridgeDestroyed: field 'bridge.id' is missing",
        ),
        (
            envelope("ChannelEnteredBridge", bridge={"id": "b", "channels": "c1"}, channel=caller_channel()),
            "ChannelEnteredBridge: field 'bridge.channels' must be a list of strings",
        ),
        (
            envelope("ChannelLeftBridge", bridge=json.loads(BRIDGE_JSON)),
            "ChannelLeftBridge: field 'channel' is missing",
        ),
        (json.dumps({"type": "ApplicationReplaced"}), "ApplicationReplaced: field 'application' is missing"),
    ],
)
def test_known_events_with_bad_fields(data: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        decode_event(data)


def test_rest_decoders_reject_non_objects() -> None:
    with pytest.raises(ValueError, match="Channel: channel must be an object, got list"):
        channel_from_json([])
    with pytest.raises(ValueError, match="Bridge: field 'id' is missing"):
        bridge_from_json({"bridge_type": "mixing"})
