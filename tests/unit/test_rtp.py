from __future__ import annotations

import random

import pytest

from ari_agent.media.rtp import ReceiveStats, RtpPacket, parse_rtp, seq_add, seq_diff, seq_lt, ts_diff

# V=2 P=1 X=1 CC=2 | M=1 PT=11 | seq 0x1234 | ts 0xDEADBEEF | ssrc 0x01020304
# CSRCs 0x0A0B0C0D 0x11223344 | ext profile 0xBEDE, 1 word 01020304 | payload 050607 | padding 000003
VECTOR = bytes.fromhex("b28b1234deadbeef010203040a0b0c0d11223344bede000101020304050607000003")
VECTOR_PACKET = RtpPacket(
    payload_type=11,
    sequence=0x1234,
    timestamp=0xDEADBEEF,
    ssrc=0x01020304,
    payload=b"\x05\x06\x07",
    marker=True,
    csrc=(0x0A0B0C0D, 0x11223344),
    extension_profile=0xBEDE,
    extension_data=b"\x01\x02\x03\x04",
    padding_len=3,
)


def test_parse_hand_built_vector() -> None:
    assert parse_rtp(VECTOR) == VECTOR_PACKET


def test_serialize_hand_built_vector() -> None:
    assert VECTOR_PACKET.serialize() == VECTOR


def test_plain_packet_bytes() -> None:
    pkt = RtpPacket(payload_type=0, sequence=1, timestamp=160, ssrc=0xCAFEBABE, payload=b"\xff" * 4)
    assert pkt.serialize() == bytes.fromhex("80000001000000a0cafebabe") + b"\xff" * 4
    assert parse_rtp(pkt.serialize()) == pkt


def test_parse_accepts_memoryview_and_bytearray() -> None:
    assert parse_rtp(bytearray(VECTOR)) == VECTOR_PACKET
    parsed = parse_rtp(memoryview(VECTOR))
    assert parsed.payload == b"\x05\x06\x07" and isinstance(parsed.payload, bytes)


def test_round_trip_random_packets() -> None:
    rng = random.Random(7)
    for _ in range(500):
        has_ext = rng.random() < 0.5
        pkt = RtpPacket(
            payload_type=rng.randrange(128),
            sequence=rng.randrange(1 << 16),
            timestamp=rng.randrange(1 << 32),
            ssrc=rng.randrange(1 << 32),
            payload=rng.randbytes(rng.randrange(0, 200)),
            marker=rng.random() < 0.5,
            csrc=tuple(rng.randrange(1 << 32) for _ in range(rng.randrange(16))),
            extension_profile=rng.randrange(1 << 16) if has_ext else None,
            extension_data=rng.randbytes(4 * rng.randrange(5)) if has_ext else b"",
            padding_len=rng.choice([0, 1, 2, 4, 255]),
        )
        data = pkt.serialize()
        assert parse_rtp(data) == pkt
        assert parse_rtp(data).serialize() == data


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "too short"),
        (b"\x80\x00\x00", "too short"),
        (bytes.fromhex("40000001000000a0cafebabe"), "version 1"),
        (bytes.fromhex("00000001000000a0cafebabe"), "version 0"),
        (bytes.fromhex("c0000001000000a0cafebabe"), "version 3"),
        (bytes.fromhex("83000001000000a0cafebabe") + b"\x00" * 8, "CSRC list (3 entries)"),
        (bytes.fromhex("90000001000000a0cafebabe") + b"\xbe\xde", "extension header"),
        (bytes.fromhex("90000001000000a0cafebabe") + bytes.fromhex("bede0002") + bytes(4), "extension of 2"),
        (bytes.fromhex("a0000001000000a0cafebabe"), "no padding octets"),
        (bytes.fromhex("a0000001000000a0cafebabe") + b"\x01\x02\x00", "count octet is 0"),
        (bytes.fromhex("a0000001000000a0cafebabe") + b"\x01\x02\x04", "padding of 4 octets"),
    ],
)
def test_parse_rejects_with_precise_message(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_rtp(data)


def test_parse_garbage_only_raises_value_error() -> None:
    rng = random.Random(3)
    accepted = 0
    for _ in range(5000):
        data = rng.randbytes(rng.randrange(0, 64))
        try:
            pkt = parse_rtp(data)
        except ValueError:
            continue
        accepted += 1
        assert len(pkt.payload) <= len(data) - 12
    assert 0 < accepted < 5000  # about a quarter of random bytes have version 2


def test_padding_covering_whole_payload_area() -> None:
    data = bytes.fromhex("a0000001000000a0cafebabe") + b"\x00\x00\x03"
    pkt = parse_rtp(data)
    assert pkt.payload == b"" and pkt.padding_len == 3


@pytest.mark.parametrize(
    "kwargs",
    [
        {"payload_type": 128},
        {"sequence": 65536},
        {"timestamp": -1},
        {"ssrc": 1 << 32},
        {"csrc": tuple(range(16))},
        {"extension_data": b"\x00" * 4},
        {"extension_profile": 1, "extension_data": b"\x00" * 3},
        {"padding_len": 256},
    ],
)
def test_packet_rejects_bad_fields(kwargs: dict[str, object]) -> None:
    base: dict[str, object] = {"payload_type": 0, "sequence": 0, "timestamp": 0, "ssrc": 0}
    base.update(kwargs)
    with pytest.raises(ValueError):
        RtpPacket(**base)  # type: ignore[arg-type]


def test_sequence_maths_wraps() -> None:
    assert seq_add(65535, 1) == 0
    assert seq_add(0, -1) == 65535
    assert seq_diff(65535, 0) == 1
    assert seq_diff(0, 65535) == -1
    assert seq_diff(100, 50) == -50
    assert seq_diff(0, 32767) == 32767
    assert seq_diff(0, 32768) == -32768
    assert seq_lt(65535, 0)
    assert not seq_lt(0, 65535)
    assert seq_lt(65000, 100)
    assert not seq_lt(5, 5)
    assert ts_diff(0xFFFFFFF0, 0x10) == 0x20
    assert ts_diff(0x10, 0xFFFFFFF0) == -0x20


def _pkt(seq: int, ts: int) -> RtpPacket:
    return RtpPacket(payload_type=0, sequence=seq & 0xFFFF, timestamp=ts & 0xFFFFFFFF, ssrc=1, payload=b"x")


def test_stats_no_loss_across_wrap() -> None:
    stats = ReceiveStats()
    start = 65500
    for i in range(100):
        assert stats.update(_pkt(start + i, i * 160), i * 0.02, 8000)
    assert stats.received == 100
    assert stats.expected == 100
    assert stats.lost == 0
    assert stats.fraction_lost == 0.0
    assert stats.extended_max_sequence == 65536 + (start + 99 - 65536)
    assert stats.jitter_ms == pytest.approx(0.0, abs=1e-6)


def test_stats_counts_loss_across_wrap() -> None:
    stats = ReceiveStats()
    sent = [(65530 + i) & 0xFFFF for i in range(20)]
    lost = {sent[3], sent[6], sent[7], sent[15]}  # 65533, 0, 1, 9
    for i, seq in enumerate(sent):
        if seq not in lost:
            stats.update(_pkt(seq, i * 160), i * 0.02, 8000)
    assert stats.expected == 20
    assert stats.received == 16
    assert stats.lost == 4
    assert stats.fraction_lost == pytest.approx(0.2)
    assert stats.interval_fraction_lost() == pytest.approx(0.2)
    # nothing new: interval is empty
    assert stats.interval_fraction_lost() == 0.0


def test_stats_reordered_and_duplicate() -> None:
    stats = ReceiveStats()
    for i, seq in enumerate([10, 12, 11, 13, 13]):
        stats.update(_pkt(seq, seq * 160), i * 0.02, 8000)
    assert stats.expected == 4
    assert stats.received == 5
    assert stats.lost == 0
    assert stats.duplicates_or_late == 2  # 11 arrived after 12, then 13 twice


def test_stats_big_jump_restarts_after_two_sequential() -> None:
    stats = ReceiveStats()
    for i in range(10):
        stats.update(_pkt(100 + i, i * 160), i * 0.02, 8000)
    assert not stats.update(_pkt(40000, 0), 0.3, 8000)  # wild jump: rejected once
    assert stats.update(_pkt(40001, 160), 0.32, 8000)  # confirmed: source restarted
    assert stats.restarts == 1
    assert stats.received == 1
    assert stats.expected == 1


def test_stats_probation() -> None:
    stats = ReceiveStats(probation=2)
    assert not stats.update(_pkt(500, 0), 0.0, 8000)
    assert stats.received == 0
    assert stats.expected == 0
    assert stats.update(_pkt(501, 160), 0.02, 8000)
    assert stats.received == 1
    stats.update(_pkt(502, 320), 0.04, 8000)
    assert stats.expected == 2 and stats.lost == 0


def test_jitter_constant_transit_is_zero_then_grows_with_variation() -> None:
    stats = ReceiveStats()
    for i in range(50):
        stats.update(_pkt(i, 0xFFFFFF00 + i * 160), 10.0 + i * 0.02, 8000)  # timestamps wrap too
    assert stats.jitter_ms == pytest.approx(0.0, abs=1e-6)
    rng = random.Random(1)
    for i in range(50, 1050):
        stats.update(_pkt(i, 0xFFFFFF00 + i * 160), 10.0 + i * 0.02 + rng.uniform(0, 0.01), 8000)
    # uniform(0,10 ms) arrival noise: E|D| = 10/3 ms, the estimator converges there
    assert 2.0 < stats.jitter_ms < 4.5


def test_jitter_single_step() -> None:
    stats = ReceiveStats()
    stats.update(_pkt(0, 0), 0.0, 16000)
    stats.update(_pkt(1, 320), 0.036, 16000)  # 16 ms late: D = 256 units
    assert stats.jitter_ms == pytest.approx(16.0 / 16, rel=1e-6)
