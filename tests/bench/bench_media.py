"""Micro benchmark of the per-frame media work (not run by pytest).

    python -m tests.bench.bench_media     (from the repository root)

Prints µs per 20 ms frame for inbound decode + resample to 16 kHz, outbound
resample + encode, RTP parse and build, for each wire format; then the
receive jitter buffer on virtual time: the delay it adds (p50/p95) and the
CPU per packet of the whole receive path, with it on and off, beside the
path before the receive clock existed (parse + RFC 3550 statistics +
decode + resample); then the whole receive leg and the send framing of RTP
beside AudioSocket; in one run.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import numpy as np

from ari_agent.media import audiosocket
from ari_agent.media.audiosocket_leg import SLIN16 as AS_SLIN16
from ari_agent.media.audiosocket_leg import AudioSocketServer
from ari_agent.media.codecs import SESSION_SAMPLE_RATE, SLIN16, WIRE_FORMATS, WireFormat
from ari_agent.media.inbound import InboundStream
from ari_agent.media.resample import StreamResampler
from ari_agent.media.rtp import ReceiveStats, RtpPacket, parse_rtp

N = 20000


def bench(fn: Callable[[], object], n: int = N) -> float:
    for _ in range(200):
        fn()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    rng = np.random.default_rng(0)
    session_frame = (rng.standard_normal(SESSION_SAMPLE_RATE // 50) * 3000).astype(np.int16)
    print(f"{'format':8} {'stage':34} {'µs/frame':>9}")
    for wire in WIRE_FORMATS.values():
        rows = bench_wire(wire, session_frame)
        for stage, us in rows:
            print(f"{wire.name:8} {stage:34} {us:9.2f}")
    print(f"(one call = 50 frames/s each way; {N} iterations per row)")
    print()
    bench_jitter_buffer()
    print()
    bench_transports(session_frame)


# Network conditions for the jitter buffer: (name, one-way jitter bound s, reorder share, loss share).
CONDITIONS = (
    ("loopback/LAN (no reordering)", 0.001, 0.0, 0.0),
    ("WAN: 0-30 ms jitter, 5% reordered, 2% lost", 0.030, 0.05, 0.02),
)
PACKETS = 15000  # 5 minutes of one call


def _arrivals(jitter_s: float, reorder: float, loss: float, seed: int = 1) -> list[tuple[float, bytes]]:
    rng = random.Random(seed)
    payload = SLIN16.encode((np.sin(np.arange(320) / 5) * 3000).astype(np.int16))
    out = []
    for seq in range(PACKETS):
        if rng.random() < loss:
            continue
        at = seq * 0.02 + rng.uniform(0, jitter_s)
        if rng.random() < reorder:
            at += 0.025  # behind the next one
        datagram = RtpPacket(118, seq & 0xFFFF, (seq * 320) & 0xFFFFFFFF, 99, payload).serialize()
        out.append((at, datagram))
    out.sort(key=lambda a: a[0])
    return out


def _receive_new(arrivals: list[tuple[float, bytes]], depth_ms: int) -> tuple[float, InboundStream]:
    """The receive path now: parse, InboundStream (stats, jitter buffer, clock), decode, resample."""
    stream = InboundStream(SLIN16, depth_ms, 0.0)
    resampler = StreamResampler(SLIN16.sample_rate, SESSION_SAMPLE_RATE)
    tick = 0.0
    start = time.perf_counter()
    for at, datagram in arrivals:
        while tick <= at:
            for payload in stream.tick(tick):
                resampler.process(SLIN16.decode(payload))
            tick += 0.02
        for payload in stream.receive(parse_rtp(datagram), at)[1]:
            resampler.process(SLIN16.decode(payload))
    return (time.perf_counter() - start) / len(arrivals) * 1e6, stream


def _receive_old(arrivals: list[tuple[float, bytes]]) -> float:
    """The receive path before the receive clock: parse, A.1/A.8 statistics, decode, resample."""
    stats = ReceiveStats()
    resampler = StreamResampler(SLIN16.sample_rate, SESSION_SAMPLE_RATE)
    start = time.perf_counter()
    for at, datagram in arrivals:
        packet = parse_rtp(datagram)
        stats.update(packet, at, SLIN16.sample_rate)
        resampler.process(SLIN16.decode(packet.payload))
    return (time.perf_counter() - start) / len(arrivals) * 1e6


def bench_jitter_buffer() -> None:
    print("receive path, slin16, virtual time (added delay: arrival -> handed to VAD/STT)")
    print(
        f"{'conditions':44} {'path':26} {'µs/packet':>9} {'delay p50':>9} {'p95':>5} {'lost':>5} {'late':>5}"
    )
    for name, jitter_s, reorder, loss in CONDITIONS:
        arrivals = _arrivals(jitter_s, reorder, loss)
        old_us = min(_receive_old(arrivals) for _ in range(3))
        print(
            f"{name:44} {'before (no buffer, no clock)':26} {old_us:9.2f} {'-':>9} {'-':>5} {'-':>5} {'-':>5}"
        )
        for depth in (0, 40):
            runs = [_receive_new(arrivals, depth) for _ in range(3)]
            us = min(r[0] for r in runs)
            stream = runs[0][1]
            buf = stream.buffer
            label = f"jitter buffer {depth} ms" + (" (off)" if depth == 0 else "")
            print(
                f"{name:44} {label:28} {us:9.2f} {buf.delay_percentile_ms(50):9.0f} "
                f"{buf.delay_percentile_ms(95):5.0f} {stream.stats.lost:5d} {buf.late:5d}"
            )
    print(f"({PACKETS} packets per row, best of 3; delays in whole ms; 'late' = too late to play)")


def bench_wire(wire: WireFormat, session_frame: np.ndarray) -> list[tuple[str, float]]:
    wire_frame = session_frame[:: SESSION_SAMPLE_RATE // wire.sample_rate].copy()
    payload = wire.encode(wire_frame)
    datagram = RtpPacket(118, 1, 160, 1234, payload).serialize()
    inbound = StreamResampler(wire.sample_rate, SESSION_SAMPLE_RATE)
    outbound = StreamResampler(SESSION_SAMPLE_RATE, wire.sample_rate)
    return [
        ("parse_rtp", bench(lambda: parse_rtp(datagram))),
        ("decode", bench(lambda: wire.decode(payload))),
        ("decode + resample to 16k", bench(lambda: inbound.process(wire.decode(payload)))),
        ("resample from 16k + encode", bench(lambda: wire.encode(outbound.process(session_frame)))),
        ("RtpPacket(...).serialize()", bench(lambda: RtpPacket(11, 1, 160, 1234, payload).serialize())),
    ]


def bench_transports(session_frame: np.ndarray) -> None:
    """One inbound 20 ms slin16 frame through each transport's whole receive leg (no clock ticks),
    and one outbound frame's framing."""
    rtp_stream = InboundStream(SLIN16, 40, 0.0)
    rtp_in = StreamResampler(SLIN16.sample_rate, SESSION_SAMPLE_RATE)
    rtp_seq = [0]
    rtp_payload = SLIN16.encode(session_frame)

    def rtp_receive() -> None:
        seq = rtp_seq[0] = rtp_seq[0] + 1
        datagram = RtpPacket(118, seq & 0xFFFF, (seq * 320) & 0xFFFFFFFF, 7, rtp_payload).serialize()
        for payload in rtp_stream.receive(parse_rtp(datagram), seq * 0.02)[1]:
            rtp_in.process(SLIN16.decode(payload))

    # The leg as the server hands it a connection's messages (decoder + frame cut + stream + decode).
    leg = AudioSocketServer("127.0.0.1", 0).expect(AS_SLIN16, lambda pcm: None, jitter_ms=40)
    decoder = audiosocket.Decoder()
    message = audiosocket.encode_audio(AS_SLIN16.encode(session_frame), 16000)

    def audiosocket_receive() -> None:
        decoder.feed(message)
        for item in decoder.messages():
            leg.on_message(item)

    out_frame = AS_SLIN16.outbound.encode(session_frame[::2].copy())

    def rtp_send() -> bytes:
        return RtpPacket(11, 1, 160, 1, out_frame).serialize()

    def audiosocket_send() -> bytes:
        return audiosocket.encode_audio(out_frame, 8000)

    rows = [
        ("rtp", "receive (parse, stream, decode, resample)", bench(rtp_receive)),
        ("audiosocket", "receive (decode msg, cut, stream, ...)", bench(audiosocket_receive)),
        ("rtp", "send framing (RtpPacket.serialize)", bench(rtp_send)),
        ("audiosocket", "send framing (encode_audio)", bench(audiosocket_send)),
    ]
    print(f"{'transport':12} {'stage':42} {'µs/frame':>9}")
    for transport, stage, us in rows:
        print(f"{transport:12} {stage:42} {us:9.2f}")


if __name__ == "__main__":
    main()
