"""AudioSocket framing (byte vectors, split and coalesced reads, garbage) and the leg over loopback TCP."""

from __future__ import annotations

import asyncio
import random
import struct
import uuid

import numpy as np
import pytest

from ari_agent.media import audiosocket as a
from ari_agent.media import inbound
from ari_agent.media.audiosocket_leg import (
    DROP_GARBAGE,
    DROP_RATE,
    REJECT_NO_UUID,
    REJECT_TAKEN,
    REJECT_TIMEOUT,
    REJECT_UNKNOWN,
    SLIN8,
    SLIN16,
    AudioSocketServer,
    wire_for,
)
from ari_agent.media.clock import ReceiveClock
from ari_agent.media.leg import DropCounters
from ari_agent.media.pacer import OutboundPacer

CALL = uuid.UUID("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")

# What Asterisk sends first (res_audiosocket.c ast_audiosocket_init): 0x01, length 16, the raw UUID.
UUID_VECTOR = bytes.fromhex("010010") + bytes.fromhex("0f1e2d3c4b5a69788796a5b4c3d2e1f0")
# slin16 audio, two samples (1, -2) in host (little-endian) order.
AUDIO16_VECTOR = bytes.fromhex("1200040100feff")
DTMF_VECTOR = bytes.fromhex("030001") + b"5"
HANGUP_VECTOR = bytes.fromhex("000000")
ERROR_VECTOR = bytes.fromhex("ff0001") + b"\x04"


def decode_all(data: bytes) -> list[a.Message | a.AudioSocketError]:
    decoder = a.Decoder()
    decoder.feed(data)
    return decoder.messages()


def test_byte_vectors_decode() -> None:
    stream = UUID_VECTOR + AUDIO16_VECTOR + DTMF_VECTOR + ERROR_VECTOR + HANGUP_VECTOR
    assert decode_all(stream) == [
        a.Uuid(CALL),
        a.Audio(16000, b"\x01\x00\xfe\xff"),
        a.Dtmf("5"),
        a.ErrorReport(b"\x04"),
        a.Hangup(),
    ]


def test_byte_vectors_encode() -> None:
    assert a.encode_uuid(CALL) == UUID_VECTOR
    assert a.encode_audio(b"\x01\x00\xfe\xff", 16000) == AUDIO16_VECTOR
    assert a.encode_dtmf("5") == DTMF_VECTOR
    assert a.encode_hangup() == HANGUP_VECTOR
    assert a.encode_error(b"\x04") == ERROR_VECTOR
    # slin at 8 kHz is kind 0x10; a 20 ms frame is 320 bytes (length 0x0140).
    assert a.encode_audio(bytes(320), 8000)[:3] == bytes.fromhex("100140")


@pytest.mark.parametrize("kind, rate", sorted(a.AUDIO_KINDS.items()))
def test_every_slin_rate_round_trips(kind: int, rate: int) -> None:
    pcm = struct.pack("<4h", 1, -1, 32767, -32768)
    data = a.encode_audio(pcm, rate)
    assert data[0] == kind
    assert decode_all(data) == [a.Audio(rate, pcm)]


def test_any_split_of_the_stream_gives_the_same_messages() -> None:
    stream = UUID_VECTOR + AUDIO16_VECTOR * 3 + DTMF_VECTOR + a.encode_audio(bytes(640), 16000)
    whole = decode_all(stream)
    rng = random.Random(5)
    for _ in range(200):
        decoder = a.Decoder()
        got: list[a.Message | a.AudioSocketError] = []
        pos = 0
        while pos < len(stream):
            step = rng.choice((1, 2, 3, rng.randint(1, 700)))
            decoder.feed(stream[pos : pos + step])
            got.extend(decoder.messages())
            pos += step
        assert got == whole
        assert decoder.buffered == 0


def test_a_partial_message_waits_for_the_rest() -> None:
    decoder = a.Decoder()
    decoder.feed(AUDIO16_VECTOR[:2])
    assert decoder.next_message() is None
    decoder.feed(AUDIO16_VECTOR[2:5])
    assert decoder.next_message() is None and decoder.buffered == 5
    decoder.feed(AUDIO16_VECTOR[5:])
    assert decoder.next_message() == a.Audio(16000, b"\x01\x00\xfe\xff")


def test_malformed_messages_raise_their_own_error_and_decoding_goes_on() -> None:
    bad = [
        bytes.fromhex("01000f") + bytes(15),  # UUID of 15 bytes
        bytes.fromhex("100003") + b"\x01\x02\x03",  # odd audio length
        bytes.fromhex("100000"),  # empty audio: Asterisk itself hangs up on it
        bytes.fromhex("030002") + b"12",  # two DTMF digits
    ]
    out = decode_all(b"".join(bad) + AUDIO16_VECTOR)
    assert [type(m) for m in out] == [a.AudioSocketError] * 4 + [a.Audio]
    assert all(isinstance(e, ValueError) for e in out[:4])
    decoder = a.Decoder()
    decoder.feed(bad[0] + AUDIO16_VECTOR)
    with pytest.raises(a.AudioSocketError, match="UUID of 15 bytes"):
        decoder.next_message()
    assert decoder.next_message() == a.Audio(16000, b"\x01\x00\xfe\xff")


def test_unknown_kinds_are_skipped_whole() -> None:
    out = decode_all(bytes.fromhex("420002abcd") + DTMF_VECTOR)
    assert out == [a.Unknown(0x42, b"\xab\xcd"), a.Dtmf("5")]


def test_random_garbage_never_raises_anything_else() -> None:
    rng = random.Random(11)
    for _ in range(300):
        blob = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 400)))
        decoder = a.Decoder()
        decoder.feed(blob)
        for message in decoder.messages():
            assert isinstance(message, a.Message | a.AudioSocketError)
        # Whatever came before, a whole message after a fresh start decodes.
        fresh = a.Decoder()
        fresh.feed(AUDIO16_VECTOR)
        assert fresh.messages() == [a.Audio(16000, b"\x01\x00\xfe\xff")]


def test_encoders_refuse_what_asterisk_would_hang_up_on() -> None:
    for call in (
        lambda: a.encode_audio(b"", 8000),
        lambda: a.encode_audio(b"\x00", 8000),
        lambda: a.encode_audio(b"\x00\x00", 11025),
        lambda: a.encode_audio(bytes(70000), 8000),
        lambda: a.encode_dtmf("12"),
    ):
        with pytest.raises(a.AudioSocketError):
            call()


def test_wire_formats() -> None:
    # slin16 in, 8 kHz slin back (the echo references are 8 kHz); µ-law has no AudioSocket kind.
    assert (SLIN16.name, SLIN16.sample_rate, SLIN16.outbound.sample_rate) == ("slin16", 16000, 8000)
    assert wire_for("ulaw").name == "slin" and wire_for("ulaw").sample_rate == 8000
    pcm = np.array([1, -2, 300], dtype=np.int16)
    assert SLIN16.encode(pcm) == struct.pack("<3h", 1, -2, 300)
    assert np.array_equal(SLIN16.decode(SLIN16.encode(pcm)), pcm)


# ---------------------------------------------------------------- the leg over loopback TCP


class _Sink:
    def __init__(self) -> None:
        self.samples = 0
        self.events: list[str] = []

    def audio(self, pcm: np.ndarray) -> None:
        self.samples += pcm.size


async def _server(hello_timeout: float = 5.0) -> AudioSocketServer:
    server = AudioSocketServer("127.0.0.1", 0, hello_timeout=hello_timeout)
    await server.start()
    return server


async def _connect(server: AudioSocketServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", server.port)


async def _closed_by_peer(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.read(), 5)


async def test_leg_takes_its_connection_by_uuid_and_hears_split_and_coalesced_audio() -> None:
    server = await _server()
    sink = _Sink()
    counters = DropCounters()
    leg = server.expect(SLIN16, sink.audio, counters, jitter_ms=0, clock=ReceiveClock())
    reader, writer = await _connect(server)
    try:
        frame = a.encode_audio(bytes(640), 16000)  # 20 ms of slin16
        # The UUID and the first frames in one read; then a frame split across three writes;
        # then 30 ms in one message (frames are re-cut to 20 ms).
        writer.write(a.encode_uuid(leg.uuid) + frame + frame)
        await writer.drain()
        await asyncio.wait_for(leg.first_packet.wait(), 5)
        for part in (frame[:1], frame[1:300], frame[300:]):
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(0.01)
        writer.write(a.encode_audio(bytes(960), 16000) + a.encode_audio(bytes(320), 16000))
        writer.write(DTMF_VECTOR + bytes.fromhex("420001ff") + bytes.fromhex("100003") + b"abc")
        writer.write(a.encode_audio(bytes(480), 24000))  # another rate than the call's
        await writer.drain()
        for _ in range(100):
            if leg.packets_in >= 5 and counters.counts.get(DROP_RATE):
                break
            await asyncio.sleep(0.01)
        assert leg.packets_in == 5  # 2 + 1 + (30 + 10 ms = 2 frames)
        assert counters.counts == {DROP_GARBAGE: 2, DROP_RATE: 1}
        assert leg.inbound.events.get(inbound.TELEPHONE_EVENT) == 1
        assert leg.stats.received == 5 and leg.stats.lost == 0
        assert leg.connected.is_set() and server.waiting == 1
        # Outbound: one 8 kHz audio message per frame sent, and silence while nothing is sent
        # (from the moment the UUID matched), so Asterisk never waits on a quiet socket.
        spoken = b"\x01" * 320
        assert leg.send(spoken)
        await asyncio.sleep(0.1)
        leg.close()
        # Closing asks Asterisk to hang the leg up, then closes the socket.
        got = await _closed_by_peer(reader)
        assert got.endswith(HANGUP_VECTOR)
        decoder = a.Decoder()
        decoder.feed(got[: -len(HANGUP_VECTOR)])
        sent = list(decoder.messages())
        assert all(isinstance(m, a.Audio) and m.sample_rate == 8000 for m in sent)
        payloads = [m.pcm for m in sent if isinstance(m, a.Audio)]
        assert payloads.count(spoken) == 1
        assert payloads[0] == bytes(320)  # the silence sent once the UUID matched
        assert len(payloads) - 1 == leg.silence_out >= 2  # and more on the clock's beat after
        assert server.waiting == 0 and leg.closed
        assert not leg.send(bytes(320)) and leg.send_errors == 1
    finally:
        writer.close()
        await server.close()


async def test_silent_leg_is_filled_on_the_agents_clock() -> None:
    server = await _server()
    sink = _Sink()
    leg = server.expect(SLIN16, sink.audio, jitter_ms=0, clock=ReceiveClock())
    _, writer = await _connect(server)
    try:
        writer.write(a.encode_uuid(leg.uuid) + a.encode_audio(bytes(640), 16000))
        await writer.drain()
        await asyncio.wait_for(leg.first_packet.wait(), 5)
        # Nothing more is sent: the receive clock still hands on ~0.5 s of (silent) audio.
        await asyncio.sleep(0.5)
        assert sink.samples >= 16000 * 0.3
        assert leg.inbound.frames_filled >= 10
    finally:
        leg.close()
        writer.close()
        await server.close()


async def test_strangers_are_refused_and_the_call_goes_on() -> None:
    server = await _server(hello_timeout=0.3)
    refused: list[str] = []
    server.on_reject = refused.append
    leg = server.expect(SLIN16, _Sink().audio, jitter_ms=0, clock=ReceiveClock())
    try:
        # An unknown UUID, garbage first, a silent connection: each closed, none takes the call.
        for first in (a.encode_uuid(uuid.uuid4()), b"\x10\x00\x02\x00\x00", b""):
            reader, writer = await _connect(server)
            if first:
                writer.write(first)
                await writer.drain()
            assert await _closed_by_peer(reader) == b""
            writer.close()
        assert refused == [REJECT_UNKNOWN, REJECT_NO_UUID, REJECT_TIMEOUT]
        # The call's own connection still gets through; a second one with the same UUID does not.
        reader, writer = await _connect(server)
        writer.write(a.encode_uuid(leg.uuid))
        await writer.drain()
        await asyncio.wait_for(leg.connected.wait(), 5)
        reader2, writer2 = await _connect(server)
        writer2.write(a.encode_uuid(leg.uuid))
        await writer2.drain()
        assert await _closed_by_peer(reader2) == b""
        writer2.close()
        assert refused[-1] == REJECT_TAKEN
        writer.close()
    finally:
        leg.close()
        await server.close()


async def test_pacer_sends_bare_frames_to_the_leg() -> None:
    sent: list[bytes] = []
    pacer = OutboundPacer(sent.append, SLIN16, rtp=False)
    pacer.start()
    try:
        assert pacer.enqueue(np.zeros(16000 // 10, dtype=np.int16)) == 5  # 100 ms at 16 kHz
        await asyncio.wait_for(pacer.wait_idle(), 5)
    finally:
        await pacer.stop()
    # 20 ms of 8 kHz slin each, no RTP header.
    assert [len(f) for f in sent] == [320] * 5


async def test_kind_0x10_carries_the_calls_format_for_asterisk_before_per_rate_kinds() -> None:
    # Asterisk before 20.17 / 21.12 / 22.7 / 23.1 labels every slin rate 0x10.
    server = await _server()
    leg = server.expect(SLIN16, _Sink().audio, jitter_ms=0, clock=ReceiveClock())
    _, writer = await _connect(server)
    try:
        writer.write(a.encode_uuid(leg.uuid) + a.encode_audio(bytes(640), 8000) * 2)
        await writer.drain()
        for _ in range(100):
            if leg.packets_in == 2:
                break
            await asyncio.sleep(0.01)
        assert leg.packets_in == 2 and leg.counters.total == 0
    finally:
        leg.close()
        writer.close()
        await server.close()


class _Wire:
    """A connection stand-in: what the leg wrote, message by message."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> None:
        self.sent.append(data)

    def close(self, *, hangup: bool) -> None:
        pass


async def test_a_quiet_leg_sends_silence_on_the_clock_and_none_while_the_pacer_sends() -> None:
    server = AudioSocketServer("127.0.0.1", 0)
    leg = server.expect(SLIN8, lambda pcm: None, jitter_ms=0, clock=ReceiveClock())
    wire = _Wire()
    silence = a.encode_audio(bytes(320), 8000)
    assert leg.attach(wire)  # type: ignore[arg-type]
    assert wire.sent == [silence]  # at once: Asterisk may already be waiting in a read
    t = leg._last_sent
    leg.tick(t + 0.02)  # nothing sent for 20 ms: not yet quiet
    assert len(wire.sent) == 1
    leg.tick(t + 0.041)
    assert wire.sent[-1] == silence and leg.silence_out == 2
    # While the pacer sends, the clock adds nothing.
    assert leg.send(b"\x01" * 320)
    sent_at = leg._last_sent
    leg.tick(sent_at + 0.02)
    assert wire.sent[-1] == a.encode_audio(b"\x01" * 320, 8000) and leg.packets_out == 1
    leg.tick(sent_at + 0.041)
    assert wire.sent[-1] == silence and leg.silence_out == 3
    leg.close()
    leg.tick(sent_at + 1.0)  # closed: nothing more
    assert leg.silence_out == 3
