from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator

import numpy as np
import pytest

from ari_agent.errors import MediaError
from ari_agent.media.codecs import SLIN16, ULAW, WireFormat, ulaw_encode
from ari_agent.media.rtp import RtpPacket
from ari_agent.media.transport import DropCounters, PortPool, RtpEndpoint, open_endpoint

HOST = "127.0.0.1"


def _free_range(n: int) -> tuple[int, int]:
    """n consecutive ports that are free right now (probe by binding)."""
    for base in range(41000, 60000, 50):
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind((HOST, p))
            return base, base + n - 1
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port range")


@pytest.fixture
def peer() -> Iterator[socket.socket]:
    """Plays Asterisk: a plain UDP socket on loopback."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((HOST, 0))
    s.settimeout(2.0)
    yield s
    s.close()


class Sink:
    def __init__(self) -> None:
        self.chunks: list[np.ndarray] = []
        self.event = asyncio.Event()

    def __call__(self, pcm: np.ndarray) -> None:
        self.chunks.append(pcm)
        self.event.set()

    @property
    def samples(self) -> int:
        return sum(c.size for c in self.chunks)


@pytest.fixture
async def pool() -> AsyncIterator[PortPool]:
    lo, hi = _free_range(4)
    yield PortPool(lo, hi)


def _pcm(wire: WireFormat) -> np.ndarray:
    t = np.arange(wire.samples_per_frame) / wire.sample_rate
    return (np.sin(2 * np.pi * 500 * t) * 6000).astype(np.int16)


def _rtp(wire: WireFormat, seq: int, pt: int | None = None, payload: bytes | None = None) -> bytes:
    if payload is None:
        payload = wire.encode(_pcm(wire))
    pkt = RtpPacket(
        payload_type=pt if pt is not None else (118 if wire is SLIN16 else 0),
        sequence=seq,
        timestamp=seq * wire.samples_per_frame,
        ssrc=0x1234,
        payload=payload,
    )
    return pkt.serialize()


async def _settle(endpoint: RtpEndpoint, expect_in: int, expect_dropped: int, seen: int = 0) -> None:
    """Wait until the endpoint has seen the datagrams the test sent (loopback delivery is async)."""
    for _ in range(400):
        total = endpoint.packets_in + endpoint.counters.total
        if endpoint.packets_in >= expect_in and endpoint.counters.total >= expect_dropped and total >= seen:
            return
        await asyncio.sleep(0.005)


def test_port_pool_round_robin_release_and_exhaustion() -> None:
    pool = PortPool(50000, 50002)
    assert [pool.acquire() for _ in range(3)] == [50000, 50001, 50002]
    with pytest.raises(MediaError, match="no free RTP port"):
        pool.acquire()
    pool.release(50001)
    assert pool.acquire() == 50001
    assert pool.in_use == 3
    with pytest.raises(ValueError):
        PortPool(10, 5)


@pytest.mark.parametrize("wire", [ULAW, SLIN16])
async def test_receives_decodes_and_resamples_to_16k(
    pool: PortPool, peer: socket.socket, wire: WireFormat
) -> None:
    sink = Sink()
    ep = await open_endpoint(pool, HOST, wire, sink)
    try:
        assert ep.local_address is not None and ep.local_address[1] == ep.port
        ep.lock_source(*peer.getsockname())
        assert not ep.first_packet.is_set()
        for seq in range(50):
            peer.sendto(_rtp(wire, seq), (HOST, ep.port))
        await _settle(ep, 50, 0)
        await asyncio.wait_for(ep.first_packet.wait(), 2)
        assert ep.packets_in == 50
        assert ep.counters.total == 0
        assert ep.stats.received == 50 and ep.stats.lost == 0
        assert all(c.dtype == np.int16 for c in sink.chunks)
        # 50 x 20 ms at 16 kHz, less the resampler's constant delay for ulaw
        assert 16000 - 480 <= sink.samples <= 16000
        pcm = np.concatenate(sink.chunks)[-8000:].astype(np.float64)
        peak_hz = np.argmax(np.abs(np.fft.rfft(pcm * np.hanning(pcm.size)))) * 16000 / pcm.size
        assert peak_hz == pytest.approx(500, abs=4)
    finally:
        ep.close()


async def test_drops_are_counted_never_raised(pool: PortPool, peer: socket.socket) -> None:
    sink = Sink()
    seen: list[str] = []
    counters = DropCounters(on_drop=seen.append)
    ep = await open_endpoint(pool, HOST, ULAW, sink, counters)
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger.bind((HOST, 0))
    try:
        dest = (HOST, ep.port)
        peer.sendto(_rtp(ULAW, 1), dest)  # before lock
        await _settle(ep, 0, 1)
        ep.lock_source(*peer.getsockname())
        stranger.sendto(_rtp(ULAW, 2), dest)  # wrong source
        peer.sendto(b"hello, not rtp", dest)  # garbage
        peer.sendto(b"\x80\x00", dest)  # truncated
        peer.sendto(b"", dest)  # empty datagram
        peer.sendto(_rtp(ULAW, 3, pt=8), dest)  # A-law on a µ-law leg
        peer.sendto(_rtp(ULAW, 4, pt=13, payload=b"\x40"), dest)  # comfort noise
        peer.sendto(_rtp(ULAW, 5, payload=b""), dest)  # no payload
        for seq in range(6, 9):  # good ones (the 8->16 kHz filter holds back the first 20 ms)
            peer.sendto(_rtp(ULAW, seq), dest)
        await _settle(ep, 4, 7)
        assert counters.counts == {
            "before_lock": 1,
            "wrong_source": 1,
            "not_rtp": 3,
            "payload_type": 1,
            "bad_payload": 1,
        }
        assert sorted(seen) == sorted(r for r, n in counters.counts.items() for _ in range(n))
        # Comfort noise is the sender's silence, accepted and played as such, not dropped.
        assert ep.packets_in == 4
        assert ep.inbound.events.get("comfort_noise") == 1
        assert sink.samples > 0
        assert not ep.closed
    finally:
        stranger.close()
        ep.close()


async def test_slin16_accepts_dynamic_pt_rejects_odd_payload(pool: PortPool, peer: socket.socket) -> None:
    sink = Sink()
    ep = await open_endpoint(pool, HOST, SLIN16, sink)
    try:
        ep.lock_source(*peer.getsockname())
        peer.sendto(_rtp(SLIN16, 1, pt=118), (HOST, ep.port))
        peer.sendto(_rtp(SLIN16, 2, pt=11), (HOST, ep.port))
        peer.sendto(_rtp(SLIN16, 3, pt=118, payload=b"\x00\x01\x02"), (HOST, ep.port))
        await _settle(ep, 2, 1)
        assert ep.packets_in == 2
        assert ep.counters.counts == {"bad_payload": 1}
        # slin16 is already at the session rate: exactly what was sent comes out, in order
        # (the bad packet's turn is played as silence; the clock may add more)
        sent = np.concatenate([_pcm(SLIN16), _pcm(SLIN16)])
        assert np.array_equal(np.concatenate(sink.chunks)[:640], sent)
    finally:
        ep.close()


async def test_unspecified_lock_host_learns_from_first_rtp(pool: PortPool, peer: socket.socket) -> None:
    ep = await open_endpoint(pool, HOST, ULAW, Sink())
    try:
        ep.lock_source("0.0.0.0", peer.getsockname()[1])
        peer.sendto(b"junk from the right port", (HOST, ep.port))  # not RTP: does not teach the host
        peer.sendto(_rtp(ULAW, 1), (HOST, ep.port))
        await _settle(ep, 1, 1)
        assert ep.remote == (HOST, peer.getsockname()[1])
        assert ep.send(b"back")
        data, _ = await asyncio.get_running_loop().run_in_executor(None, peer.recvfrom, 2048)
        assert data == b"back"
    finally:
        ep.close()


async def test_callback_error_does_not_kill_endpoint(pool: PortPool, peer: socket.socket) -> None:
    calls = 0

    def bad(pcm: np.ndarray) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("boom")

    ep = await open_endpoint(pool, HOST, SLIN16, bad)
    try:
        ep.lock_source(*peer.getsockname())
        for seq in range(3):
            peer.sendto(_rtp(SLIN16, seq), (HOST, ep.port))
        await _settle(ep, 3, 0)
        # The receive clock may add silence frames: each call still failed, and was only counted.
        assert calls >= 3 and ep.callback_errors == calls
        assert not ep.closed
    finally:
        ep.close()


async def test_send_goes_to_locked_remote(pool: PortPool, peer: socket.socket) -> None:
    ep = await open_endpoint(pool, HOST, ULAW, Sink())
    try:
        assert ep.send(b"nowhere") is False  # not locked yet
        ep.lock_source(*peer.getsockname())
        payload = ulaw_encode(np.zeros(160, dtype=np.int16))
        assert ep.send(payload)
        data, addr = await asyncio.get_running_loop().run_in_executor(None, peer.recvfrom, 2048)
        assert data == payload
        assert addr == (HOST, ep.port)
        assert ep.packets_out == 1
    finally:
        ep.close()
    assert ep.send(b"late") is False


async def test_ports_skip_busy_and_return_on_close(pool: PortPool) -> None:
    squatter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    squatter.bind((HOST, pool.port_min))  # another process holds the first port
    try:
        eps = [await open_endpoint(pool, HOST, SLIN16, Sink()) for _ in range(3)]
        assert sorted(e.port for e in eps) == list(range(pool.port_min + 1, pool.port_max + 1))
        with pytest.raises(MediaError):
            await open_endpoint(pool, HOST, SLIN16, Sink())
        eps[1].close()
        eps[1].close()  # idempotent
        assert eps[1].closed
        await asyncio.sleep(0)  # asyncio closes the socket on the next loop pass
        assert pool.in_use == 2
        again = await open_endpoint(pool, HOST, SLIN16, Sink())
        assert again.port == eps[1].port
        for e in (eps[0], eps[2], again):
            e.close()
        await asyncio.sleep(0)
        assert pool.in_use == 0
    finally:
        squatter.close()


async def test_bind_host_must_be_ip(pool: PortPool) -> None:
    with pytest.raises(MediaError, match="IP address"):
        await open_endpoint(pool, "localhost", ULAW, Sink())


async def test_garbage_flood_then_audio_still_flows(pool: PortPool, peer: socket.socket) -> None:
    sink = Sink()
    ep = await open_endpoint(pool, HOST, SLIN16, sink)
    rng = np.random.default_rng(0)
    try:
        # Garbage even from the locked address (the harder case: some of it parses as RTP).
        ep.lock_source(*peer.getsockname())
        for batch in range(20):
            for _ in range(10):
                peer.sendto(rng.bytes(int(rng.integers(0, 300))), (HOST, ep.port))
            # pace the flood so the kernel's socket buffer does not drop datagrams
            await _settle(ep, 0, 0, seen=(batch + 1) * 10)
        assert ep.packets_in + ep.counters.total == 200
        for seq in range(1000, 1010):
            peer.sendto(_rtp(SLIN16, seq), (HOST, ep.port))
        await _settle(ep, 0, 0, seen=210)
        # RFC 3550 A.1 may take one packet to re-sync after the garbage's random sequence numbers
        good = [c for c in sink.chunks if c.size == 320 and int(np.abs(c).max()) == 6000]
        assert len(good) >= 9
        assert ep.counters.total >= 150
        assert not ep.closed
    finally:
        ep.close()


async def test_port_pool_copes_with_concurrent_opens(pool: PortPool) -> None:
    eps = await asyncio.gather(*(open_endpoint(pool, HOST, ULAW, Sink()) for _ in range(4)))
    try:
        assert len({e.port for e in eps}) == 4
    finally:
        for e in eps:
            e.close()


# ---------------------------------------------------------------- addresses (issue 11, finding 6)


async def test_dual_stack_bind_hears_and_answers_an_ipv4_asterisk(
    pool: PortPool, peer: socket.socket
) -> None:
    # Bound on "::", IPv4 packets arrive from "::ffff:127.0.0.1": they are Asterisk's all the same.
    sink = Sink()
    ep = await open_endpoint(pool, "::", ULAW, sink)
    try:
        ep.lock_source(*peer.getsockname())
        for seq in range(3):
            peer.sendto(_rtp(ULAW, seq), (HOST, ep.port))
        await _settle(ep, 3, 0)
        assert ep.packets_in == 3 and ep.counters.counts == {}
        assert ep.send(b"back")
        data, _ = await asyncio.get_running_loop().run_in_executor(None, peer.recvfrom, 2048)
        assert data == b"back"
    finally:
        ep.close()


async def test_unspecified_asterisk_address_is_learned_only_from_asterisks_host(
    pool: PortPool, peer: socket.socket
) -> None:
    # Asterisk said 0.0.0.0: a packet with the right port from another host must not take the lock.
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger.bind(("127.0.0.2", peer.getsockname()[1]))
    ep = await open_endpoint(pool, HOST, ULAW, Sink())
    try:
        ep.lock_source("0.0.0.0", peer.getsockname()[1], expected_hosts=frozenset({HOST}))
        stranger.sendto(_rtp(ULAW, 1), (HOST, ep.port))
        await _settle(ep, 0, 1)
        assert ep.counters.counts == {"wrong_source": 1}
        assert ep.remote == ("0.0.0.0", peer.getsockname()[1])
        peer.sendto(_rtp(ULAW, 2), (HOST, ep.port))
        await _settle(ep, 1, 1)
        assert ep.remote == (HOST, peer.getsockname()[1])
        stranger.sendto(_rtp(ULAW, 3), (HOST, ep.port))
        await _settle(ep, 1, 2)
        assert ep.counters.counts == {"wrong_source": 2}
    finally:
        stranger.close()
        ep.close()


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [("127.0.0.1", 40000, "127.0.0.1:40000"), ("::1", 40000, "[::1]:40000"), ("fe80::1", 5, "[fe80::1]:5")],
)
def test_rtp_address_brackets_ipv6(host: str, port: int, expected: str) -> None:
    from ari_agent.media.transport import rtp_address

    assert rtp_address(host, port) == expected
