"""chan_websocket control messages and media framing: vectors as Asterisk 22.10.1 writes them, and garbage."""

from __future__ import annotations

import json
import random

import pytest

from ari_agent.media import wsmedia
from ari_agent.media.wsmedia import (
    DtmfEnd,
    ErrorEvent,
    MarkProcessed,
    MediaStart,
    MediaXoff,
    MediaXon,
    QueueDrained,
    Status,
    UnknownEvent,
    WebSocketMediaError,
    encode_command,
    encode_media,
    parse_event,
)

# Seen from the Debian Asterisk 22.10.1 in the test rootfs (ExternalMedia, connection_type=server).
MEDIA_START = (
    "MEDIA_START connection_id:7931c944-a01b-4d1b-9b96-5e8788f8cc2d "
    "channel:WebSocket/INCOMING/0x7f6a54003520 channel_id:probe-ws-1 format:slin16 "
    "optimal_frame_size:640 ptime:20"
)
STATUS = (
    "STATUS channel_id:probe-ws-1 queue_length:925 xon_level:800 xoff_level:900 "
    "queue_full:true bulk_media:false media_paused:true"
)


def test_media_start_plain_text() -> None:
    assert parse_event(MEDIA_START) == MediaStart(
        connection_id="7931c944-a01b-4d1b-9b96-5e8788f8cc2d",
        channel="WebSocket/INCOMING/0x7f6a54003520",
        channel_id="probe-ws-1",
        format="slin16",
        optimal_frame_size=640,
        ptime=20,
    )
    assert parse_event(MEDIA_START.encode()) == parse_event(MEDIA_START)


def test_media_start_json() -> None:
    doc = {
        "event": "MEDIA_START",
        "connection_id": "c1",
        "channel": "WebSocket/c1/0x1",
        "channel_id": "ch",
        "format": "ulaw",
        "optimal_frame_size": 160,
        "ptime": 20,
        "channel_variables": {"A": "b"},
    }
    assert parse_event(json.dumps(doc)) == MediaStart("c1", "WebSocket/c1/0x1", "ch", "ulaw", 160, 20)


def test_flow_marks_and_the_rest() -> None:
    assert parse_event("MEDIA_XOFF") == MediaXoff()
    assert parse_event("MEDIA_XON\n") == MediaXon()
    assert parse_event("QUEUE_DRAINED") == QueueDrained()
    assert parse_event("MEDIA_MARK_PROCESSED 1200") == MarkProcessed("1200")
    assert parse_event("MEDIA_MARK_PROCESSED") == MarkProcessed("")
    assert parse_event(
        '{"event":"MEDIA_MARK_PROCESSED","channel_id":"x","correlation_id":"7"}'
    ) == MarkProcessed("7")
    assert parse_event("DTMF_END digit:5 channel_id:abc") == DtmfEnd("5")
    assert parse_event('{"event":"DTMF_END","channel_id":"x","digit":"#"}') == DtmfEnd("#")
    status = parse_event(STATUS)
    assert isinstance(status, Status)
    assert status.fields["queue_length"] == "925" and status.fields["media_paused"] == "true"
    assert parse_event(
        "ERROR channel_id:x error_text:MARK_MEDIA not supported in passthrough mode"
    ) == ErrorEvent("MARK_MEDIA not supported in passthrough mode")
    assert parse_event("SOMETHING_NEW a:b") == UnknownEvent("SOMETHING_NEW")
    assert parse_event("[1,2]") == UnknownEvent("[1,2]")  # not JSON's object: a word nobody knows


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        b"\xff\xfe",
        "{",
        '{"event": 5}',
        "MEDIA_START format:slin16 ptime:20",  # no frame size
        "MEDIA_START format:slin16 optimal_frame_size:-1 ptime:20",
        "MEDIA_START format:slin16 optimal_frame_size:640 ptime:0",
        "MEDIA_START optimal_frame_size:640 ptime:20",  # no format
        "MEDIA_START format:slin16 optimal_frame_size:9999999999999 ptime:20",
        '{"event":"MEDIA_START","format":"slin16","optimal_frame_size":true,"ptime":20}',
        "DTMF_END digit:12",
        "DTMF_END",
        "{" * 100000,
    ],
    ids=lambda value: repr(value)[:30],
)
def test_malformed_events_raise_their_own_error(text: str | bytes) -> None:
    with pytest.raises(WebSocketMediaError):
        parse_event(text)


def test_garbage_never_raises_anything_else() -> None:
    rng = random.Random(17)
    words = [
        "MEDIA_START",
        "DTMF_END",
        "ERROR",
        "STATUS",
        "MEDIA_MARK_PROCESSED",
        "{",
        '"event"',
        ":",
        " ",
        "\x00",
    ]
    for _ in range(5000):
        if rng.random() < 0.5:
            data: str | bytes = rng.randbytes(rng.randrange(0, 200))
        else:
            data = "".join(
                rng.choice([*words, chr(rng.randrange(0, 0x300))]) for _ in range(rng.randrange(0, 30))
            )
        try:
            parse_event(data)
        except WebSocketMediaError:
            pass


def test_commands() -> None:
    assert encode_command("PAUSE_MEDIA") == "PAUSE_MEDIA"
    assert encode_command("CONTINUE_MEDIA") == "CONTINUE_MEDIA"
    assert encode_command("FLUSH_MEDIA") == "FLUSH_MEDIA"
    assert encode_command("MARK_MEDIA", "150") == "MARK_MEDIA 150"
    for bad in [("NOPE", None), ("FLUSH_MEDIA", "x"), ("MARK_MEDIA", ""), ("MARK_MEDIA", "a b")]:
        with pytest.raises(WebSocketMediaError):
            encode_command(*bad)
    with pytest.raises(WebSocketMediaError, match="128"):
        encode_command("MARK_MEDIA", "x" * 120)  # Asterisk would ignore it
    with pytest.raises(WebSocketMediaError):
        encode_command("MARK_MEDIA", "é")


def test_media_is_whole_frames() -> None:
    assert encode_media(bytes(1280), 640) == bytes(1280)
    for payload, size in [(b"", 640), (bytes(700), 640), (bytes(640), 0)]:
        with pytest.raises(WebSocketMediaError):
            encode_media(payload, size)
    assert wsmedia.QUEUE_XOFF < wsmedia.QUEUE_MAX
