"""The receive jitter buffer and the inbound stream, on virtual time."""

from __future__ import annotations

import random

import numpy as np
import pytest

from ari_agent.media.codecs import SLIN16, ULAW, WireFormat
from ari_agent.media.inbound import InboundStream
from ari_agent.media.jitter import JitterBuffer, Slot
from ari_agent.media.rtp import RtpPacket

F = 0.020


def _slot(n: int) -> Slot:
    return Slot(n.to_bytes(2, "big"))


def _ids(slots: list[Slot]) -> list[int | str]:
    return ["lost" if s.lost else int.from_bytes(s.payload or b"", "big") for s in slots]


def test_in_order_frames_leave_at_once() -> None:
    jb = JitterBuffer(40)
    for i in range(5):
        assert jb.put(100 + i, _slot(i), i * F) == "queued"
        assert _ids(jb.pop(i * F)) == [i]
    assert jb.delay_percentile_ms(95) == 0


def test_reordering_within_the_window_is_repaired() -> None:
    jb = JitterBuffer(40)
    jb.put(1, _slot(1), 0.0)
    assert _ids(jb.pop(0.0)) == [1]
    jb.put(3, _slot(3), 0.020)  # 2 is late
    assert jb.pop(0.020) == []  # held, waiting for 2
    jb.put(2, _slot(2), 0.030)
    assert _ids(jb.pop(0.030)) == [2, 3]
    assert jb.lost == 0 and jb.late == 0


def test_missing_frame_is_declared_lost_after_the_window() -> None:
    jb = JitterBuffer(40)
    jb.put(1, _slot(1), 0.0)
    jb.pop(0.0)
    jb.put(3, _slot(3), 0.020)
    assert jb.pop(0.059) == []
    assert _ids(jb.pop(0.060)) == ["lost", 3]
    assert jb.put(2, _slot(2), 0.07) == "late"  # its turn has passed
    assert jb.lost == 1 and jb.late == 1


def test_depth_zero_never_waits() -> None:
    jb = JitterBuffer(0)
    jb.put(1, _slot(1), 0.0)
    jb.put(3, _slot(3), 0.0)
    assert _ids(jb.pop(0.0)) == [1, "lost", 3]


def test_duplicates_are_dropped() -> None:
    jb = JitterBuffer(40)
    jb.put(1, _slot(1), 0.0)
    jb.pop(0.0)
    jb.put(3, _slot(3), 0.02)
    assert jb.put(3, _slot(3), 0.021) == "duplicate"
    assert jb.put(1, _slot(1), 0.022) == "late"
    assert jb.duplicates == 1


def test_sequence_wrap_is_seamless() -> None:
    jb = JitterBuffer(40)
    order = [65534, 0, 65535, 1, 2]
    out: list[int | str] = []
    for i, seq in enumerate(order):
        jb.put(seq, _slot(seq), i * F)
        out += _ids(jb.pop(i * F))
    assert out == [65534, 65535, 0, 1, 2]


def test_wild_jump_resyncs_instead_of_concealing_thousands() -> None:
    jb = JitterBuffer(40)
    jb.put(10, _slot(10), 0.0)
    jb.pop(0.0)
    assert jb.put(5000, _slot(5000), 0.02) == "resync"
    assert _ids(jb.pop(0.02)) == [5000]


def test_never_more_delay_than_the_window_under_random_reordering_and_loss() -> None:
    rng = random.Random(3)
    depth_ms = 40
    jb = JitterBuffer(depth_ms)
    arrivals = []
    for seq in range(3000):
        if rng.random() < 0.02:
            continue  # lost
        arrivals.append((seq * F + rng.uniform(0, 0.035), seq))  # up to 35 ms of jitter reorders
    arrivals.sort()
    played: list[int] = []
    for now, seq in arrivals:
        jb.put(seq, _slot(seq), now)
        played += [int.from_bytes(s.payload or b"", "big") for s in jb.pop(now) if not s.lost]
    assert played == sorted(played)  # in order
    assert jb.late + jb.duplicates + len(played) + jb.holding == len(arrivals)
    # A frame waits only while an earlier one is missing, and then at most the window plus the
    # time until the next arrival lets it go (here pops happen on arrivals only).
    p95 = jb.delay_percentile_ms(95)
    assert p95 is not None and p95 <= depth_ms + 20
    assert jb.lost >= 0.02 * 3000 * 0.7


@pytest.mark.parametrize("drift", [0.999, 1.001])
def test_sender_clock_drift_neither_piles_up_nor_inserts_silence(drift: float) -> None:
    """A sender whose 20 ms are 19.98 or 20.02 of ours: frames leave as they come."""
    stream = InboundStream(ULAW, 40, 0.0)
    frames = 0
    fills = 0
    now = 0.0
    next_tick = 0.0
    for seq in range(3000):  # a minute of continuous speech
        arrival = seq * F * drift
        while next_tick <= arrival:
            out = stream.tick(next_tick)
            fills += len(out)
            next_tick += F
        now = arrival
        _, out = stream.receive(_ulaw_packet(seq), now)
        frames += len(out)
    assert frames == 3000
    assert fills == 0  # no silence pushed into the middle of speech
    assert stream.buffer.holding == 0
    assert stream.buffer.delay_percentile_ms(100) == 0


def _ulaw_packet(seq: int, *, ssrc: int = 7, pt: int = 0, payload: bytes | None = None) -> RtpPacket:
    if payload is None:
        payload = bytes([0x10]) * 160  # loud µ-law
    return RtpPacket(
        payload_type=pt, sequence=seq & 0xFFFF, timestamp=(seq * 160) & 0xFFFFFFFF, ssrc=ssrc, payload=payload
    )


def _run(stream: InboundStream, arrivals: list[tuple[float, RtpPacket]], until: float) -> list[bytes]:
    """Feed packets at their times and tick every 20 ms; return the whole output stream."""
    out: list[bytes] = []
    tick = 0.0
    for at, packet in sorted(arrivals, key=lambda a: a[0]):
        while tick <= at:
            out += stream.tick(tick)
            tick += F
        out += stream.receive(packet, at)[1]
    while tick <= until:
        out += stream.tick(tick)
        tick += F
    return out


def _seconds(out: list[bytes], wire: WireFormat) -> float:
    return sum(len(p) for p in out) / wire.bytes_per_sample / wire.sample_rate


def test_silent_sender_still_gets_a_continuous_stream() -> None:
    """Speech, then nothing at all on the wire for 2 s (DTX), then speech: time never stops."""
    stream = InboundStream(ULAW, 40, 0.0)
    talk1 = [(i * F, _ulaw_packet(i)) for i in range(50)]  # 1 s
    talk2 = [(3.0 + i * F, _ulaw_packet(50 + i)) for i in range(50)]  # seq carries on, time jumped
    out = _run(stream, talk1 + talk2, until=5.5)
    # Every 20 ms of the 5.5 s is in the output, spoken or filled, give or take the hold.
    assert _seconds(out, ULAW) == pytest.approx(5.5, abs=0.1)
    silence = bytes([ULAW.silence_byte]) * 160
    assert out.count(silence) >= 0.9 * (2.0 + 1.5) / F
    assert stream.events.get("gap") == 2  # the 2 s pause and the tail
    assert stream.stats.lost == 0
    q = stream.quality()
    assert q["gaps"] == 2 and q["lost"] == 0 and q["received"] == 100


def test_nothing_ever_arrives_still_ticks() -> None:
    stream = InboundStream(SLIN16, 40, 10.0)
    out = _run(stream, [], until=1.0)
    assert out == []  # the stream starts at 10.0
    out = [p for t in range(100) for p in stream.tick(10.0 + t * F)]
    assert _seconds(out, SLIN16) == pytest.approx(2.0 - 0.06, abs=0.05)


def test_comfort_noise_and_telephone_events_are_silence_not_loss() -> None:
    stream = InboundStream(SLIN16, 40, 0.0)
    voice = bytes(range(256)) * 2 + bytes(128)  # 640 bytes: 20 ms of slin16
    packets = [
        RtpPacket(payload_type=118, sequence=1, timestamp=0, ssrc=5, payload=voice),
        RtpPacket(payload_type=13, sequence=2, timestamp=320, ssrc=5, payload=b"\x40"),
        RtpPacket(payload_type=101, sequence=3, timestamp=640, ssrc=5, payload=bytes([5, 0x0A, 0, 160])),
        RtpPacket(payload_type=118, sequence=4, timestamp=960, ssrc=5, payload=voice),
    ]
    kinds = []
    out: list[bytes] = []
    for i, p in enumerate(packets):
        kind, played = stream.receive(p, i * F)
        kinds.append(kind)
        out += played
    assert kinds == ["audio", "comfort_noise", "telephone_event", "audio"]
    assert out == [voice, bytes(640), bytes(640), voice]
    assert stream.stats.lost == 0
    assert stream.events == {"comfort_noise": 1, "telephone_event": 1}


def test_a_late_comfort_noise_packet_still_counts_as_the_senders_silence() -> None:
    # A new source's first packet, a comfort-noise one, arrives after its second (the relay in
    # test_media_input does this): too late to play, but a signal, not lost audio.
    stream = InboundStream(SLIN16, 40, 0.0)
    voice = bytes(range(256)) * 2 + bytes(128)
    first = RtpPacket(payload_type=118, sequence=7, timestamp=0, ssrc=5, payload=voice)
    stream.receive(first, 0.0)
    later = RtpPacket(payload_type=118, sequence=11, timestamp=32000, ssrc=9, payload=voice)
    cn = RtpPacket(payload_type=13, sequence=10, timestamp=16000, ssrc=9, payload=b"\x40")
    stream.receive(later, 2.0)
    kind, played = stream.receive(cn, 2.001)
    assert kind == "comfort_noise"
    assert played == []
    assert stream.events.get("comfort_noise") == 1
    # A late audio packet is still a late drop.
    old = RtpPacket(payload_type=118, sequence=9, timestamp=15680, ssrc=9, payload=voice)
    assert stream.receive(old, 2.002)[0] == "late"


def test_ssrc_change_plays_on_without_phantom_loss() -> None:
    stream = InboundStream(ULAW, 40, 0.0)
    arrivals = [(i * F, _ulaw_packet(60000 + i, ssrc=1)) for i in range(100)]
    # Re-INVITE: a new source with unrelated sequence numbers and timestamps.
    arrivals += [(2.0 + i * F, _ulaw_packet(123 + i, ssrc=2)) for i in range(100)]
    out = _run(stream, arrivals, until=4.0)
    assert stream.stats.changes == 1
    assert stream.stats.lost == 0
    assert stream.events.get("ssrc_change") == 1
    loud = bytes([0x10]) * 160
    assert out.count(loud) == 200


def test_lost_frame_concealed_then_silence() -> None:
    stream = InboundStream(ULAW, 40, 0.0)
    arrivals = [(i * F, _ulaw_packet(i)) for i in range(10) if i not in (4, 5)]
    out = _run(stream, arrivals, until=0.3)
    assert stream.events.get("concealed") == 2
    assert stream.stats.lost == 2
    # The first lost frame repeats the last one at half level; the second is silence.
    first, second = out[4], out[5]
    assert 0 < np.abs(ULAW.decode(first).astype(int)).mean() < np.abs(ULAW.decode(out[3]).astype(int)).mean()
    assert second == bytes([ULAW.silence_byte]) * 160


def test_rtp_packets_are_classified_never_raised_on_garbage_payloads() -> None:
    stream = InboundStream(SLIN16, 40, 0.0)
    assert (
        stream.receive(RtpPacket(payload_type=118, sequence=1, timestamp=0, ssrc=1, payload=b"\x01"), 0)[0]
        == "bad_payload"
    )
    assert (
        stream.receive(RtpPacket(payload_type=118, sequence=2, timestamp=0, ssrc=1, payload=b""), 0)[0]
        == "bad_payload"
    )
    ulaw = InboundStream(ULAW, 40, 0.0)
    assert ulaw.receive(_ulaw_packet(1, pt=8), 0)[0] == "payload_type"
    assert ulaw.receive(_ulaw_packet(2, pt=101, payload=bytes(4)), 0)[0] == "telephone_event"
    assert ulaw.stats.lost == 0


def test_outage_is_filled_once_not_filled_and_concealed() -> None:
    """200 ms with nothing at all, then the stream resumes 10 sequence numbers on."""
    stream = InboundStream(ULAW, 40, 0.0)
    arrivals = [(i * F, _ulaw_packet(i)) for i in range(50) if not 20 <= i < 30]
    out = _run(stream, arrivals, until=50 * F)
    assert stream.stats.lost == 10
    # The output still matches wall time: the outage was filled by the clock, not twice over.
    assert _seconds(out, ULAW) == pytest.approx(1.0, abs=0.06)
