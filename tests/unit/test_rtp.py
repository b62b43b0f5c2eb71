from __future__ import annotations

import random

import pytest

from ari_agent.media.rtp import (
    ReceiveStats,
    RtpPacket,
    SourceStats,
    is_rtcp,
    parse_rtp,
    seq_add,
    seq_diff,
    seq_lt,
    ts_diff,
)

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


def _pkt(seq: int, ts: int, ssrc: int = 1) -> RtpPacket:
    return RtpPacket(
        payload_type=0, sequence=seq & 0xFFFF, timestamp=ts & 0xFFFFFFFF, ssrc=ssrc, payload=b"x"
    )


def test_stats_no_loss_across_wrap() -> None:
    stats = ReceiveStats()
    start = 65500
    for i in range(100):
        assert stats.update(_pkt(start + i, i * 160), i * 0.02, 8000) == "new"
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
    verdicts = [
        stats.update(_pkt(seq, seq * 160), i * 0.02, 8000) for i, seq in enumerate([10, 12, 11, 13, 13])
    ]
    assert verdicts == ["new", "new", "reordered", "new", "duplicate"]
    assert stats.expected == 4
    assert stats.received == 4  # the duplicate is not a second packet received
    assert stats.lost == 0
    assert stats.reordered == 1 and stats.duplicates == 1


def test_a_first_packet_that_arrives_late_still_counts_every_loss() -> None:
    # A new source whose first packet was held back behind the second (a reorder at its very
    # start), and two losses later: the late first packet must not stand in for one of them.
    for first in (100, 0, 65535):
        stats = ReceiveStats()
        order = [first + 1, first, *(first + k for k in range(2, 40) if k not in (12, 25))]
        verdicts = [stats.update(_pkt(seq, i * 160), i * 0.02, 8000) for i, seq in enumerate(order)]
        assert verdicts[:2] == ["new", "reordered"]
        assert stats.expected == 40
        assert stats.received == 38
        assert stats.lost == 2


def test_source_stats_counts_loss_when_a_new_source_starts_reordered() -> None:
    stats = SourceStats()
    for i in range(30):
        stats.update(_pkt(500 + i, i * 160, ssrc=1), i * 0.02, 8000)
    # The re-INVITE's first packet comes after its second; 2 of the new source's packets are lost.
    order = [9001, 9000, *(9000 + k for k in range(2, 60) if k not in (32, 45))]
    for i, seq in enumerate(order):
        stats.update(_pkt(seq, i * 160, ssrc=2), (30 + i) * 0.02, 8000)
    assert stats.changes == 1
    assert stats.lost == 2


def test_duplicates_cannot_hide_loss() -> None:
    stats = ReceiveStats()
    # 0..99 with 5 lost, and 5 others sent twice (late and at once): A.1 alone would report 0 lost.
    lost = {7, 21, 22, 60, 98}
    doubled = {3, 30, 31, 61, 97}
    arrivals: list[int] = []
    for seq in range(100):
        if seq in lost:
            continue
        arrivals.append(seq)
        if seq in doubled:
            arrivals.append(seq)
    arrivals.insert(50, 10)  # a late copy of an old one, 40 behind
    for i, seq in enumerate(arrivals):
        stats.update(_pkt(seq, seq * 160), i * 0.02, 8000)
    assert stats.expected == 100
    assert stats.lost == 5
    assert stats.duplicates == 6


def test_duplicate_detection_across_the_sequence_wrap() -> None:
    stats = ReceiveStats()
    order = [65534, 65535, 0, 65535, 1, 0, 2]
    verdicts = [stats.update(_pkt(seq, i * 160), i * 0.02, 8000) for i, seq in enumerate(order)]
    assert verdicts == ["new", "new", "new", "duplicate", "new", "duplicate", "new"]
    assert stats.expected == 5 and stats.lost == 0


def test_source_stats_ssrc_change_adds_no_loss() -> None:
    stats = SourceStats()
    for i in range(50):
        stats.update(_pkt(1000 + i, i * 160, ssrc=1), i * 0.02, 8000)
    # A re-INVITE: new SSRC, sequence and timestamp from elsewhere entirely.
    for i in range(50):
        if i == 20:
            continue  # one really lost
        stats.update(_pkt(40000 + i, 7_000_000 + i * 160, ssrc=2), 1.0 + i * 0.02, 8000)
    # A straggler of the old source after the change still counts as the old source's.
    stats.update(_pkt(1049, 49 * 160, ssrc=1), 2.0, 8000)
    assert stats.changes == 1
    assert stats.expected == 100
    assert stats.lost == 1
    assert stats.current == 2


def test_source_stats_state_stays_bounded() -> None:
    stats = SourceStats()
    for ssrc in range(1, 40):
        for i in range(5):
            stats.update(_pkt(i, i * 160, ssrc=ssrc), ssrc + i * 0.02, 8000)
    assert stats.changes == 38
    assert stats.expected == 39 * 5 and stats.lost == 0
    assert len(stats._sources) <= SourceStats.KEEP


def test_rtcp_on_the_rtp_port_is_recognised() -> None:
    # RFC 3550 receiver report (PT 201) and sender report (PT 200), SDES (202), BYE (203), APP (204)
    rr = bytes.fromhex("81c90007") + bytes(28)
    assert is_rtcp(rr)
    for pt in (200, 202, 203, 204):
        assert is_rtcp(bytes([0x80, pt, 0, 1]) + bytes(4))
    assert not is_rtcp(VECTOR)
    assert not is_rtcp(RtpPacket(payload_type=0, sequence=1, timestamp=1, ssrc=1, marker=True).serialize())
    assert not is_rtcp(bytes([0x80, 200]))  # too short to be RTCP


def _rfc3550_a8(packets: list[tuple[int, int]]) -> float:
    """RFC 3550 A.8 as printed: arrival and timestamp in timestamp units, every packet in arrival order."""
    jitter = 0.0
    transit_prev: int | None = None
    for arrival, ts in packets:
        transit = arrival - ts
        if transit_prev is not None:
            d = abs(transit - transit_prev)
            jitter += (1.0 / 16.0) * (d - jitter)
        transit_prev = transit
    return jitter


def test_jitter_matches_rfc3550_a8_on_the_same_arrivals() -> None:
    rng = random.Random(7)
    rate = 8000
    base_ts = 0xFFFF_0000  # the 32-bit timestamp wraps during the run
    sent = [(i, base_ts + i * 160) for i in range(400)]
    # Arrival = send time + transit with jitter, a talkspurt gap (timestamps jump) and reordering.
    arrivals: list[tuple[int, int, int]] = []  # (arrival in ts units, seq, unwrapped ts)
    for seq, ts in sent:
        gap = 8000 if seq >= 200 else 0
        arrivals.append((ts - base_ts + gap + 400 + rng.randint(0, 240), seq, ts + gap))
    arrivals.sort()
    stats = ReceiveStats()
    for arrival, seq, ts in arrivals:
        stats.update(_pkt(seq, ts & 0xFFFF_FFFF), 5.0 + arrival / rate, rate)
    reference = _rfc3550_a8([(arrival, ts) for arrival, _, ts in arrivals])
    assert stats.jitter_ms == pytest.approx(reference * 1000 / rate, rel=1e-9)
    assert stats.jitter_ms > 1.0


def test_stats_big_jump_restarts_after_two_sequential() -> None:
    stats = ReceiveStats()
    for i in range(10):
        stats.update(_pkt(100 + i, i * 160), i * 0.02, 8000)
    assert stats.update(_pkt(40000, 0), 0.3, 8000) == "rejected"  # wild jump: rejected once
    assert stats.update(_pkt(40001, 160), 0.32, 8000) == "new"  # confirmed: source restarted
    assert stats.restarts == 1
    assert stats.received == 1
    assert stats.expected == 1


def test_stats_probation() -> None:
    stats = ReceiveStats(probation=2)
    assert stats.update(_pkt(500, 0), 0.0, 8000) == "rejected"
    assert stats.received == 0
    assert stats.expected == 0
    assert stats.update(_pkt(501, 160), 0.02, 8000) == "new"
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
