from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import numpy as np
import pytest

from ari_agent.media.codecs import SLIN16, ULAW, WireFormat
from ari_agent.media.pacer import OutboundPacer
from ari_agent.media.rtp import RtpPacket, parse_rtp, seq_diff, ts_diff

HOST = "127.0.0.1"


class Receiver(asyncio.DatagramProtocol):
    """Plays Asterisk's side of the leg: records every datagram that arrives."""

    def __init__(self) -> None:
        self.packets: list[RtpPacket] = []
        self.arrivals: list[float] = []
        self._changed = asyncio.Event()

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        self.packets.append(parse_rtp(data))
        self.arrivals.append(time.monotonic())
        self._changed.set()

    async def wait_for(self, n: int) -> None:
        async def _wait() -> None:
            while len(self.packets) < n:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(_wait(), 5.0)


@dataclass
class Leg:
    receiver: Receiver
    send: Callable[[bytes], None]
    send_times: list[float] = field(default_factory=list)


@pytest.fixture
async def leg() -> AsyncIterator[Leg]:
    loop = asyncio.get_running_loop()
    rx_transport, receiver = await loop.create_datagram_endpoint(Receiver, local_addr=(HOST, 0))
    tx_transport, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, remote_addr=rx_transport.get_extra_info("sockname")
    )
    result = Leg(receiver=receiver, send=lambda data: None)

    def send(data: bytes) -> None:
        result.send_times.append(time.monotonic())
        tx_transport.sendto(data)

    result.send = send
    yield result
    tx_transport.close()
    rx_transport.close()


def _tone(ms: int, freq: float = 1000.0, rate: int = 16000) -> np.ndarray:
    t = np.arange(rate * ms // 1000) / rate
    return (np.sin(2 * np.pi * freq * t) * 8000).astype(np.int16)


def _check_continuous(packets: list[RtpPacket], wire: WireFormat) -> None:
    for a, b in itertools.pairwise(packets):
        assert seq_diff(a.sequence, b.sequence) == 1
        assert ts_diff(a.timestamp, b.timestamp) == wire.outbound.samples_per_frame
        assert b.ssrc == a.ssrc


@pytest.mark.parametrize(("wire", "pt"), [(SLIN16, 11), (ULAW, 0)])
async def test_headers_and_increments(leg: Leg, wire: WireFormat, pt: int) -> None:
    pacer = OutboundPacer(leg.send, wire, ssrc=0xABCD)
    pacer.start()
    try:
        assert pacer.enqueue(_tone(200), tag="hello") == 10
        assert pacer.speaking and pacer.queued_ms > 0
        await asyncio.wait_for(pacer.wait_idle(), 5)
        await leg.receiver.wait_for(10)
        pkts = leg.receiver.packets
        assert len(pkts) == 10
        assert {p.payload_type for p in pkts} == {pt}
        assert {p.ssrc for p in pkts} == {0xABCD}
        assert [p.marker for p in pkts] == [True] + [False] * 9
        assert {len(p.payload) for p in pkts} == {wire.outbound.bytes_per_frame}
        _check_continuous(pkts, wire)
        assert pacer.frames_sent("hello") == 10
        assert pacer.packets_sent == 10 and not pacer.speaking and pacer.queued_ms == 0
    finally:
        await pacer.stop()


async def test_sequence_and_timestamp_wrap_seamlessly(leg: Leg) -> None:
    # The wraps fall inside one talkspurt: 16-bit sequence after 3 packets, 32-bit timestamp after 8.
    pacer = OutboundPacer(leg.send, ULAW, first_sequence=65533, first_timestamp=(1 << 32) - 8 * 160)
    pacer.start()
    try:
        pacer.enqueue(_tone(200))
        await leg.receiver.wait_for(10)
        pkts = leg.receiver.packets
        assert [p.sequence for p in pkts[:5]] == [65533, 65534, 65535, 0, 1]
        assert any(p.timestamp < pkts[0].timestamp for p in pkts)  # the timestamp wrapped too
        _check_continuous(pkts, ULAW)
    finally:
        await pacer.stop()


@pytest.mark.parametrize("wire", [SLIN16, ULAW])
async def test_audio_survives_resample_and_encode(leg: Leg, wire: WireFormat) -> None:
    pacer = OutboundPacer(leg.send, wire)
    pacer.start()
    try:
        frames = pacer.enqueue(_tone(400, 1000.0))
        await leg.receiver.wait_for(frames)
        pcm = np.concatenate([wire.outbound.decode(p.payload) for p in leg.receiver.packets]).astype(
            np.float64
        )
        core = pcm[wire.outbound.sample_rate // 20 : -wire.outbound.sample_rate // 20]
        spectrum = np.abs(np.fft.rfft(core * np.hanning(core.size)))
        assert np.argmax(spectrum) * wire.outbound.sample_rate / core.size == pytest.approx(1000, abs=5)
        assert np.sqrt(np.mean(core**2)) == pytest.approx(8000 / np.sqrt(2), rel=0.05)
    finally:
        await pacer.stop()


# A 16 kHz leg in both directions, so frame sizes equal session samples.
WIDE = dataclasses.replace(SLIN16, send_as=None)


async def test_second_talkspurt_gets_marker_and_true_clock(leg: Leg) -> None:
    pacer = OutboundPacer(leg.send, WIDE)
    pacer.start()
    try:
        pacer.enqueue(_tone(60))
        await pacer.wait_idle()
        await asyncio.sleep(0.2)  # 10 ticks of silence
        pacer.enqueue(_tone(60))
        await pacer.wait_idle()
        await leg.receiver.wait_for(6)
        pkts = leg.receiver.packets
        assert [p.marker for p in pkts] == [True, False, False, True, False, False]
        assert [seq_diff(pkts[0].sequence, p.sequence) for p in pkts] == [0, 1, 2, 3, 4, 5]
        gap_ticks = ts_diff(pkts[2].timestamp, pkts[3].timestamp) // 320
        assert ts_diff(pkts[2].timestamp, pkts[3].timestamp) % 320 == 0
        assert gap_ticks >= 10  # the RTP clock moved on through the silence (>= 200 ms passed)
        _check_continuous(pkts[3:], WIDE)
    finally:
        await pacer.stop()


async def test_partial_frame_padded_and_streaming_carry(leg: Leg) -> None:
    pacer = OutboundPacer(leg.send, WIDE)
    assert pacer.enqueue(np.full(330, 1000, dtype=np.int16)) == 2  # 320 + 10 padded to 320
    assert pacer.enqueue(np.full(330, 2000, dtype=np.int16), final=False) == 1  # 10 held back
    assert pacer.enqueue(np.full(310, 3000, dtype=np.int16).tobytes()) == 1  # 10 + 310 = one frame
    assert pacer.queued_ms == 80
    pacer.start()
    try:
        await pacer.wait_idle()
        await leg.receiver.wait_for(4)
        frames = [WIDE.decode(p.payload) for p in leg.receiver.packets]
        assert frames[1][:10].tolist() == [1000] * 10 and not frames[1][10:].any()
        assert frames[3][:10].tolist() == [2000] * 10 and frames[3][10:].tolist() == [3000] * 310
    finally:
        await pacer.stop()


async def test_flush_stops_output_at_once(leg: Leg) -> None:
    sent_tags: list[object] = []
    pacer = OutboundPacer(leg.send, ULAW, on_sent=sent_tags.append)
    pacer.start()
    try:
        total = pacer.enqueue(_tone(2000), tag="reply")
        assert total == 100
        await leg.receiver.wait_for(3)
        dropped = pacer.flush()
        sent = pacer.packets_sent
        assert dropped > 0 and dropped + sent == total
        assert not pacer.speaking
        await asyncio.wait_for(pacer.wait_idle(), 0.5)
        await asyncio.sleep(0.1)  # five ticks: nothing more may go out
        assert pacer.packets_sent == sent
        assert len(leg.receiver.packets) == sent
        assert pacer.frames_sent("reply") == sent == sent_tags.count("reply")
        # the next utterance starts a new talkspurt
        pacer.enqueue(_tone(40), tag="next")
        await pacer.wait_idle()
        await leg.receiver.wait_for(sent + 2)
        assert leg.receiver.packets[sent].marker
        assert seq_diff(leg.receiver.packets[sent - 1].sequence, leg.receiver.packets[sent].sequence) == 1
        assert pacer.frames_sent("next") == 2
    finally:
        await pacer.stop()


async def test_flush_then_immediate_enqueue_is_marked(leg: Leg) -> None:
    pacer = OutboundPacer(leg.send, SLIN16)
    pacer.start()
    try:
        pacer.enqueue(_tone(1000))
        await leg.receiver.wait_for(2)
        pacer.flush()
        n = pacer.packets_sent
        pacer.enqueue(_tone(40))
        await pacer.wait_idle()
        await leg.receiver.wait_for(n + 2)
        assert [p.marker for p in leg.receiver.packets[n:]] == [True, False]
    finally:
        await pacer.stop()


async def test_stall_skips_instead_of_bursting(leg: Leg) -> None:
    pacer = OutboundPacer(leg.send, SLIN16)
    pacer.start()
    try:
        total = pacer.enqueue(_tone(600))
        await leg.receiver.wait_for(5)
        time.sleep(0.1)  # noqa: ASYNC251 -- block the event loop on purpose: five deadlines pass
        stall_end = time.monotonic()
        await pacer.wait_idle()
        await leg.receiver.wait_for(total)
        assert pacer.late_ticks >= 1
        assert pacer.skipped_ticks >= 4
        after = [t for t in leg.send_times if t >= stall_end]
        gaps = np.diff(after)
        assert len(after) >= 10
        assert float(gaps.min()) > 0.001  # no catch-up burst
        # nothing lost, nothing doubled: late frames go out late, in order
        assert len(leg.receiver.packets) == total
        _check_continuous(leg.receiver.packets, SLIN16)
    finally:
        await pacer.stop()


async def test_clock_jump_with_injected_clock(leg: Leg) -> None:
    offset = 0.0

    def clock() -> float:
        return time.monotonic() + offset

    pacer = OutboundPacer(leg.send, ULAW, clock=clock)
    pacer.start()
    try:
        total = pacer.enqueue(_tone(300))
        await leg.receiver.wait_for(3)
        offset = 0.2  # the pacer now believes it woke 200 ms late
        await pacer.wait_idle()
        await leg.receiver.wait_for(total)
        assert pacer.late_ticks == 1
        assert pacer.skipped_ticks >= 9
        assert float(np.diff(leg.send_times).min()) > 0.001
        _check_continuous(leg.receiver.packets, ULAW)
    finally:
        await pacer.stop()


async def test_idle_pacer_does_not_wake(leg: Leg) -> None:
    calls = 0

    def clock() -> float:
        nonlocal calls
        calls += 1
        return time.monotonic()

    pacer = OutboundPacer(leg.send, SLIN16, clock=clock)
    pacer.start()
    try:
        pacer.enqueue(_tone(40))
        await pacer.wait_idle()
        await asyncio.sleep(0.01)
        before = calls
        await asyncio.sleep(0.2)  # ten ticks idle
        assert calls == before
        await asyncio.wait_for(pacer.wait_idle(), 0.1)  # idle: returns at once
    finally:
        await pacer.stop()


async def test_stop_ends_task_and_random_start_values(leg: Leg) -> None:
    a = OutboundPacer(leg.send, SLIN16)
    b = OutboundPacer(leg.send, SLIN16)
    assert (a.ssrc, a._seq, a._ts_base) != (b.ssrc, b._seq, b._ts_base)
    a.start()
    a.enqueue(_tone(1000))
    await leg.receiver.wait_for(2)
    await a.stop()
    n = len(leg.send_times)
    await asyncio.sleep(0.1)
    assert len(leg.send_times) == n
    await asyncio.wait_for(a.wait_idle(), 0.1)


async def test_send_errors_are_counted(leg: Leg) -> None:
    def broken(data: bytes) -> None:
        raise OSError("network is down")

    pacer = OutboundPacer(broken, SLIN16)
    pacer.start()
    try:
        pacer.enqueue(_tone(60))
        await asyncio.wait_for(pacer.wait_idle(), 2)
        assert pacer.send_errors == 3 and pacer.packets_sent == 3
    finally:
        await pacer.stop()


async def test_encoded_audio_goes_out_untouched(leg: Leg) -> None:
    pacer = OutboundPacer(leg.send, ULAW)
    payload = bytes(range(256)) + bytes(range(64))  # two frames of 160 bytes
    assert pacer.enqueue_encoded(payload, tag="raw") == 2
    pacer.start()
    try:
        await pacer.wait_idle()
        await leg.receiver.wait_for(2)
        pkts = leg.receiver.packets
        assert b"".join(p.payload for p in pkts) == payload
        assert pacer.frames_sent("raw") == 2
        assert pacer.enqueue_encoded(b"\x00" * 10) == 1  # padded with µ-law silence
        await pacer.wait_idle()
        await leg.receiver.wait_for(3)
        assert leg.receiver.packets[2].payload == b"\x00" * 10 + b"\xff" * 150
    finally:
        await pacer.stop()


async def test_pause_holds_the_queue_and_resume_sends_it_on_as_a_new_talkspurt(leg: Leg) -> None:
    pacer = OutboundPacer(leg.send, ULAW)
    pacer.start()
    try:
        total = pacer.enqueue(_tone(600), tag="reply")
        await leg.receiver.wait_for(3)
        pacer.pause()
        held_at = pacer.packets_sent
        await asyncio.sleep(0.12)  # six ticks: nothing may go out, nothing is dropped
        assert pacer.packets_sent == held_at and pacer.paused and pacer.speaking
        assert not pacer._idle.is_set()  # a speaker waiting for the end keeps waiting
        pacer.resume()
        await asyncio.wait_for(pacer.wait_idle(), 2.0)
        await leg.receiver.wait_for(total)
        assert pacer.frames_sent("reply") == total  # every frame, none twice
        packets = leg.receiver.packets
        assert packets[held_at].marker and not packets[held_at + 1].marker
        # The RTP clock moved on by the held time: the far end's jitter buffer sees a true gap.
        gap = ts_diff(packets[held_at - 1].timestamp, packets[held_at].timestamp)
        assert gap >= 6 * ULAW.samples_per_frame
    finally:
        await pacer.stop()


async def test_flush_while_paused_drops_and_unpauses(leg: Leg) -> None:
    pacer = OutboundPacer(leg.send, ULAW)
    pacer.start()
    try:
        pacer.enqueue(_tone(400))
        await leg.receiver.wait_for(2)
        pacer.pause()
        assert pacer.flush() > 0
        assert not pacer.paused
        await asyncio.wait_for(pacer.wait_idle(), 0.5)
        n = pacer.packets_sent
        pacer.enqueue(_tone(40))
        await asyncio.wait_for(pacer.wait_idle(), 1.0)
        assert pacer.packets_sent == n + 2
    finally:
        await pacer.stop()
