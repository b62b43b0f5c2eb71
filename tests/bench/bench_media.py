"""Micro benchmark of the per-frame media work (not run by pytest).

    python -m tests.bench.bench_media     (from the repository root)

Prints µs per 20 ms frame for inbound decode + resample to 16 kHz, outbound
resample + encode, RTP parse and build, for each wire format; then the
receive jitter buffer on virtual time: the delay it adds (p50/p95) and the
CPU per packet of the whole receive path, with it on and off, beside the
path before the receive clock existed (parse + RFC 3550 statistics +
decode + resample); then the whole receive leg and the send framing of RTP
beside AudioSocket and WebSocket; in one run.

    python -m tests.bench.bench_media --late-fills   (issue 12 only)

Then delay spikes (packets late by more than the hold, no timestamp jump,
the ones behind them queued: a loaded machine) on calls of talkspurts and
sender silences: the silence the receive clock puts inside speech with the
fixed hold (before issue 12) and the adaptive one, side by side; and, with
``--goodbye``, the offline recogniser on "goodbye" with such a spike inside
the word, after one earlier spike in the call.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable

import numpy as np

from ari_agent.media import audiosocket
from ari_agent.media.audiosocket_leg import SLIN16 as AS_SLIN16
from ari_agent.media.audiosocket_leg import AudioSocketServer
from ari_agent.media.codecs import SESSION_SAMPLE_RATE, SLIN16, WIRE_FORMATS, WireFormat
from ari_agent.media.inbound import LATE_FILL, MAX_HOLD_MS, InboundStream
from ari_agent.media.resample import StreamResampler
from ari_agent.media.rtp import ReceiveStats, RtpPacket, parse_rtp
from ari_agent.media.websocket_leg import SLIN16 as WS_SLIN16
from ari_agent.media.websocket_leg import WebSocketLeg
from ari_agent.media.wsmedia import encode_media

N = 20000


def bench(fn: Callable[[], object], n: int = N) -> float:
    for _ in range(200):
        fn()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--late-fills", action="store_true", help="only the delay-spike tables (issue 12)")
    parser.add_argument("--goodbye", action="store_true", help="also decode 'goodbye' with spikes offline")
    args = parser.parse_args()
    if not args.late_fills:
        micro()
        print()
    bench_late_fills()
    if args.goodbye:
        print()
        bench_goodbye()


def micro() -> None:
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

    # chan_websocket: a BINARY message is the frame itself (slin16 both ways, 16 kHz back).
    ws_leg = WebSocketLeg(WS_SLIN16, lambda pcm: None, None, jitter_ms=40)
    ws_frame = WS_SLIN16.encode(session_frame)

    def websocket_receive() -> None:
        ws_leg._feed(ws_frame)

    def websocket_send() -> bytes:
        return encode_media(WS_SLIN16.encode(session_frame), 640)

    rows = [
        ("rtp", "receive (parse, stream, decode, resample)", bench(rtp_receive)),
        ("audiosocket", "receive (decode msg, cut, stream, ...)", bench(audiosocket_receive)),
        ("websocket", "receive (cut, stream, decode)", bench(websocket_receive)),
        ("rtp", "send framing (RtpPacket.serialize)", bench(rtp_send)),
        ("audiosocket", "send framing (encode_audio)", bench(audiosocket_send)),
        ("websocket", "send (encode slin16, whole-frame check)", bench(websocket_send)),
    ]
    ws_leg.close()
    print(f"{'transport':12} {'stage':42} {'µs/frame':>9}")
    for transport, stage, us in rows:
        print(f"{transport:12} {stage:42} {us:9.2f}")


# ---------------------------------------------------------------- issue 12: delay spikes

# (name, lateness range s, one spike per this many seconds of speech)
SPIKES = (
    ("no spikes (0-3 ms jitter)", (0.0, 0.0), 0.0),
    ("soak-like: 60-100 ms late, 1 per 10 s", (0.060, 0.100), 10.0),
    ("heavy: 60-140 ms late, 1 per 3 s", (0.060, 0.140), 3.0),
    ("beyond the cap: 250-400 ms, 1 per 10 s", (0.250, 0.400), 10.0),
)
CALLS = 100
SPURTS = 15  # talkspurts per call, 0.6-2 s each, 0.3-2 s of sender silence between them


def _spiky_call(
    rng: random.Random, lateness: tuple[float, float], every_s: float
) -> tuple[list[tuple[float, RtpPacket]], list[int], float]:
    """One call of µ-law talkspurts; each spurt's frames carry their own byte so they can be found again."""
    arrivals: list[tuple[float, RtpPacket]] = []
    last_of_spurt: list[int] = []
    seq = ts = 0
    t = 0.5
    for spurt in range(SPURTS):
        frames = rng.randint(30, 100)
        payload = bytes([0x10 + spurt]) * 160
        for i in range(frames):
            packet = RtpPacket(0, seq & 0xFFFF, (ts * 160) & 0xFFFFFFFF, 7, payload, marker=i == 0)
            arrivals.append((t + i * 0.02 + rng.uniform(0, 0.003), packet))
            seq += 1
            ts += 1
        last_of_spurt.append(len(arrivals) - 1)
        pause = rng.uniform(0.3, 2.0)
        t += frames * 0.02 + pause
        ts += round(pause / 0.02)  # the sender's silence: the timestamp jumps over it
    # Spikes: a packet held up, the ones behind it queued behind it (no overtaking on a stalled path).
    release = 0.0
    out = []
    for i, (at, packet) in enumerate(arrivals):
        if every_s and i and rng.random() < 0.02 / every_s:
            release = at + rng.uniform(*lateness)
        out.append((max(at, release), packet))
    return out, last_of_spurt, t + 1.0


def _replay(
    stream: InboundStream, arrivals: list[tuple[float, RtpPacket]], last_of_spurt: list[int], until: float
) -> tuple[list[bytes], list[float]]:
    out: list[bytes] = []
    holds: list[float] = []
    ends = set(last_of_spurt)
    tick = 0.0
    for index, (at, packet) in enumerate(arrivals):
        while tick <= at:
            out += stream.tick(tick)
            tick += 0.02
        out += stream.receive(packet, at)[1]
        if index in ends:
            holds.append(stream.hold_ms)  # how long the pause after this spurt waits to be heard
    while tick <= until:
        out += stream.tick(tick)
        tick += 0.02
    return out, holds


def _silence_inside(out: list[bytes], silence: bytes) -> list[int]:
    """Per talkspurt hit, the frames of silence between its first and its last frame."""
    where: dict[bytes, list[int]] = {}
    for i, payload in enumerate(out):
        if payload != silence:
            where.setdefault(payload, []).append(i)
    runs = []
    for indices in where.values():
        inside = indices[-1] - indices[0] + 1 - len(indices)
        if inside:
            runs.append(inside)
    return runs


def bench_late_fills() -> None:
    from ari_agent.media.codecs import ULAW

    silence = bytes([ULAW.silence_byte]) * 160
    print(
        f"delay spikes, µ-law, virtual time: {CALLS} calls x {SPURTS} talkspurts, 40 ms jitter window "
        "(hold: 60 ms fixed before, adaptive 60-200 ms after)"
    )
    print(
        f"{'spikes':40} {'hold':9} {'spurts hit':>10} {'silence in speech':>17} {'p95 run':>7} "
        f"{'late_fill':>9} {'calls':>6} {'pause heard +ms p50/p95/max':>27} {'length-wall':>11}"
    )
    for name, lateness, every in SPIKES:
        for label, max_hold in (("fixed", None), ("adaptive", MAX_HOLD_MS)):
            rng = random.Random(12)
            runs: list[int] = []
            extra: list[float] = []
            late_fills = 0
            first_in_call = 0
            drift = []
            for _ in range(CALLS):
                arrivals, ends, until = _spiky_call(rng, lateness, every)
                stream = InboundStream(ULAW, 40, 0.0, max_hold_ms=max_hold)
                out, holds = _replay(stream, arrivals, ends, until)
                runs += _silence_inside(out, silence)
                extra += [h - 60 for h in holds]
                late_fills += stream.events.get(LATE_FILL, 0)
                first_in_call += min(1, stream.events.get(LATE_FILL, 0))
                drift.append(len(out) * 0.02 - until)
            total = CALLS * SPURTS
            ms = sum(runs) * 20
            p95 = sorted(runs)[int(0.95 * (len(runs) - 1))] * 20 if runs else 0
            extra.sort()
            pause = f"{extra[len(extra) // 2]:.0f}/{extra[int(0.95 * (len(extra) - 1))]:.0f}/{extra[-1]:.0f}"
            print(
                f"{name:40} {label:9} {len(runs):>4}/{total:<5} {ms:>14} ms {p95:>4} ms "
                f"{late_fills:>9} {first_in_call:>6} {pause:>27} {min(drift):>+5.2f}/{max(drift):<+5.2f}"
            )
    print(
        "(spurts hit: talkspurts with filled silence between their first and last frame;\n"
        " calls: calls with a late fill, i.e. each call's first, which nothing per call can foresee;\n"
        " 'pause heard +ms': how much later than with the 60 ms hold a pause after a talkspurt starts\n"
        " being filled, i.e. the cost in end-of-turn latency;\n"
        " length-wall: output stream length minus wall time, s, min/max per call)"
    )


GOODBYE_TRIALS = 30


def _ulaw_frames(text: str, wpm: int) -> list[bytes]:
    import soxr

    from ari_agent.media.codecs import ULAW
    from tests.unit.speech import espeak

    samples, rate = espeak(text, "en-us", wpm)
    narrow = np.asarray(soxr.resample(samples, rate, 8000), dtype=np.int16)
    narrow = narrow[: len(narrow) - len(narrow) % 160]
    return [ULAW.encode(narrow[i : i + 160]) for i in range(0, len(narrow), 160)]


def _voiced(frames: list[bytes]) -> list[int]:
    from ari_agent.media.codecs import ULAW

    level = [float(np.abs(ULAW.decode(f).astype(np.int32)).mean()) for f in frames]
    return [i for i, v in enumerate(level) if v > 0.1 * max(level)]


def _goodbye_call(
    rng: random.Random, wpm: int, spike: bool
) -> tuple[list[tuple[float, RtpPacket]], int, int]:
    """A question with a spike inside it, a 1 s pause, then "goodbye" with a spike inside the word.

    Returns the arrivals and the sequence numbers of goodbye's first and last frames.
    """
    question = _ulaw_frames("where are you located", wpm)
    goodbye = _ulaw_frames("goodbye", wpm)
    arrivals: list[tuple[float, RtpPacket]] = []
    seq = ts = 0
    t = 0.5
    spikes = []
    for frames in (question, goodbye):
        inside = _voiced(frames)
        # Spikes land inside the voiced part, away from its edges (a fill at an edge is harmless).
        where = rng.choice(inside[2:-2])
        spikes.append((len(arrivals) + where, rng.uniform(0.060, 0.100)))
        for i, payload in enumerate(frames):
            arrivals.append((t + i * 0.02, RtpPacket(0, seq, ts * 160, 9, payload, marker=i == 0)))
            seq += 1
            ts += 1
        t += len(frames) * 0.02 + 1.0
        ts += 50  # the sender's 1 s of silence: the timestamp jumps over it
    if spike:
        for index, lateness in spikes:
            release = arrivals[index][0] + lateness
            arrivals = [(max(at, release) if i >= index else at, p) for i, (at, p) in enumerate(arrivals)]
    first = len(question)
    return arrivals, first, first + len(goodbye) - 1


def bench_goodbye() -> None:
    import soxr

    from ari_agent.media.codecs import ULAW
    from tests.bench.bench_understanding import after, frontdesk

    understand = after(frontdesk())
    print(
        f'offline "goodbye" (espeak-ng at 140/160/180 wpm, µ-law, pocketsphinx as bench_understanding), '
        f"{GOODBYE_TRIALS} calls: a question with one spike 60-100 ms late, a 1 s pause, then goodbye "
        "with one such spike inside the word"
    )
    print(f"{'receive side':28} {'understood':>10} {'silence inside goodbye ms p50/max':>34}")
    for label, spike, max_hold in (
        ("no spikes", False, MAX_HOLD_MS),
        ("spikes, fixed hold (before)", True, None),
        ("spikes, adaptive (after)", True, MAX_HOLD_MS),
    ):
        rng = random.Random(12)
        right = 0
        inserted = []
        for trial in range(GOODBYE_TRIALS):
            wpm = (140, 160, 180)[trial % 3]
            arrivals, first, last = _goodbye_call(rng, wpm, spike)
            stream = InboundStream(ULAW, 40, 0.0, max_hold_ms=max_hold)
            out, _ = _replay(stream, arrivals, [], arrivals[-1][0] + 1.0)
            start = out.index(arrivals[first][1].payload)
            end = len(out) - 1 - out[::-1].index(arrivals[last][1].payload)
            silence = bytes([ULAW.silence_byte]) * 160
            inserted.append(out[start:end].count(silence) * 20)
            # The word with the stream's own 100 ms either side (longer digital silence alone
            # threw the decoder off), at 16 kHz as the recogniser takes it.
            narrow = ULAW.decode(b"".join(out[max(0, start - 5) : end + 6]))
            pcm = np.asarray(soxr.resample(narrow, 8000, 16000), dtype=np.int16)
            right += understand(pcm.tobytes())[1] == "goodbye"
        inserted.sort()
        print(
            f"{label:28} {right:>5}/{GOODBYE_TRIALS:<4} {inserted[len(inserted) // 2]:>22}/{inserted[-1]:<11}"
        )
    print("(silence inside goodbye: filled frames between its first and its last frame in the stream)")


if __name__ == "__main__":
    main()
