"""Micro benchmark of the per-frame media work (not run by pytest).

    python -m tests.bench.bench_media     (from the repository root)

Prints µs per 20 ms frame for inbound decode + resample to 16 kHz, outbound
resample + encode, RTP parse and build, for each wire format.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from ari_agent.media.codecs import SESSION_SAMPLE_RATE, WIRE_FORMATS, WireFormat
from ari_agent.media.resample import StreamResampler
from ari_agent.media.rtp import RtpPacket, parse_rtp

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


if __name__ == "__main__":
    main()
