"""One UDP RTP endpoint per call, bound from a port range, locked to Asterisk's address.

Inbound datagrams are checked and parsed here and handed to the call's
:class:`InboundStream`, which turns them into a gapless stream on the
agent's 20 ms clock; anything unwanted is counted by reason and dropped
(never raised, never logged per packet), so garbage sent to a call's port
cannot disturb the call.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
import urllib.parse
from collections.abc import Callable
from typing import cast

from ari_agent.errors import MediaError
from ari_agent.media import inbound
from ari_agent.media.clock import ReceiveClock
from ari_agent.media.codecs import Pcm, WireFormat
from ari_agent.media.leg import DEFAULT_JITTER_MS, DropCounters, ReceiveSide
from ari_agent.media.rtp import is_rtcp, parse_rtp

__all__ = ["DEFAULT_JITTER_MS", "DropCounters", "PortPool", "RtpEndpoint", "open_endpoint"]

log = logging.getLogger(__name__)

# Every reason a datagram can be dropped for (label values for a metric).
DROP_BEFORE_LOCK = "before_lock"
DROP_WRONG_SOURCE = "wrong_source"
DROP_NOT_RTP = "not_rtp"
DROP_RTCP = "rtcp"  # RTCP multiplexed on the RTP port (RFC 5761): never audio
DROP_REASONS = (
    DROP_BEFORE_LOCK,
    DROP_WRONG_SOURCE,
    DROP_NOT_RTP,
    DROP_RTCP,
    inbound.DROP_PAYLOAD_TYPE,
    inbound.DROP_BAD_PAYLOAD,
    inbound.DROP_SEQUENCE,
    inbound.DROP_DUPLICATE,
    inbound.DROP_LATE,
)


class PortPool:
    """UDP ports for RTP endpoints, handed out round-robin so a just-freed port rests a while."""

    def __init__(self, port_min: int, port_max: int) -> None:
        if not 1 <= port_min <= port_max <= 65535:
            raise ValueError(f"bad RTP port range {port_min}-{port_max}")
        self.port_min = port_min
        self.port_max = port_max
        self._in_use: set[int] = set()
        self._next = port_min

    @property
    def size(self) -> int:
        return self.port_max - self.port_min + 1

    @property
    def in_use(self) -> int:
        return len(self._in_use)

    def acquire(self) -> int:
        """Reserve the next free port; MediaError when every port of the range is taken."""
        for _ in range(self.size):
            port = self._next
            self._next = port + 1 if port < self.port_max else self.port_min
            if port not in self._in_use:
                self._in_use.add(port)
                return port
        raise MediaError(f"no free RTP port in {self.port_min}-{self.port_max} ({self.size} in use)")

    def release(self, port: int) -> None:
        self._in_use.discard(port)


def is_unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


async def asterisk_hosts(ari_url: str) -> frozenset[str]:
    """The addresses of the host in the ARI URL (Asterisk's), resolved without blocking the loop."""
    name = urllib.parse.urlsplit(ari_url).hostname
    if not name:
        return frozenset()
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(name, None, type=socket.SOCK_DGRAM)
    except OSError:
        return frozenset()
    return frozenset(canonical_host(str(info[4][0])) for info in infos)


def canonical_host(host: str) -> str:
    """One spelling per address: an IPv4-mapped IPv6 address (a dual-stack socket's view of an
    IPv4 peer, "::ffff:127.0.0.1") is its IPv4 address; IPv6 is compressed."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return address.compressed


def rtp_address(host: str, port: int) -> str:
    """host:port as Asterisk's external_host takes it (an IPv6 literal in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _bind_udp(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


class RtpEndpoint(ReceiveSide, asyncio.DatagramProtocol):
    """The agent's side of one ExternalMedia RTP leg. Build it with :func:`open_endpoint`."""

    transport = "rtp"
    rtp_framing = True

    def __init__(
        self,
        pool: PortPool,
        port: int,
        wire: WireFormat,
        on_audio: Callable[[Pcm], None],
        counters: DropCounters | None,
        *,
        jitter_ms: int = DEFAULT_JITTER_MS,
        clock: ReceiveClock | None = None,
        on_event: Callable[[str], None] | None = None,
        on_accepted: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(
            wire,
            on_audio,
            counters,
            jitter_ms=jitter_ms,
            clock=clock,
            on_event=on_event,
            on_accepted=on_accepted,
        )
        self.pool = pool
        self.port = port
        self.packets_in = 0  # accepted RTP packets (audio, comfort noise, telephone-events)
        self.packets_out = 0
        self.send_errors = 0
        self.remote: tuple[str, int] | None = None
        self.local_address: tuple[str, int] | None = None
        self._expected_hosts: frozenset[str] = frozenset()
        self._ipv6_socket = False
        self._transport: asyncio.DatagramTransport | None = None
        self._learn_host = False
        self._released = False

    # asyncio.DatagramProtocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport does not subclass asyncio.DatagramTransport.
        self._transport = cast(asyncio.DatagramTransport, transport)
        sockname = transport.get_extra_info("sockname")
        self.local_address = (sockname[0], sockname[1])
        sock = transport.get_extra_info("socket")
        self._ipv6_socket = sock is not None and sock.family == socket.AF_INET6

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        remote = self.remote
        if remote is None:
            self.counters.add(DROP_BEFORE_LOCK)
            return
        if addr[1] != remote[1] or not self._from_asterisk(str(addr[0])):
            self.counters.add(DROP_WRONG_SOURCE)
            return
        if is_rtcp(data):
            self.counters.add(DROP_RTCP)
            return
        try:
            packet = parse_rtp(data)
        except ValueError:
            self.counters.add(DROP_NOT_RTP)
            return
        if self._learn_host:
            self._learn_host = False
            self.remote = (canonical_host(str(addr[0])), remote[1])
        kind, payloads = self.inbound.receive(packet, time.monotonic())
        if kind in DROP_REASONS:
            self.counters.add(kind)
        else:
            self.packets_in += 1
            if self.on_accepted is not None:
                self.on_accepted()
            if kind == inbound.AUDIO and not self.first_packet.is_set():
                self.first_packet.set()
        self._deliver(payloads)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (e.g. port unreachable after Asterisk hung up) surface here, per packet.
        self.send_errors += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()

    # API

    def lock_source(self, host: str, port: int, *, expected_hosts: frozenset[str] = frozenset()) -> None:
        """Accept RTP only from (host, port) and send to it (Asterisk's UNICASTRTP_LOCAL_*).

        An unspecified host (0.0.0.0, ::) locks the port and takes the host
        from the first RTP packet that comes from that port and from one of
        ``expected_hosts`` (Asterisk's own addresses), or from any host when
        none are known: a stranger who guessed the port must not take the call.
        """
        self._learn_host = is_unspecified(host)
        self._expected_hosts = frozenset(canonical_host(h) for h in expected_hosts)
        self.remote = (host if self._learn_host else canonical_host(host), port)
        self._start_receiving()

    def _from_asterisk(self, host: str) -> bool:
        remote = self.remote
        assert remote is not None
        if host == remote[0]:
            return True
        canonical = canonical_host(host)  # only off the fast path: a dual-stack socket, a spelling
        if self._learn_host:
            return not self._expected_hosts or canonical in self._expected_hosts
        return canonical == remote[0]

    def send(self, data: bytes) -> bool:
        """Send one datagram to the locked remote; False when there is no remote or the socket is closed."""
        transport = self._transport
        if self.remote is None or transport is None or transport.is_closing():
            self.send_errors += 1
            return False
        host, port = self.remote
        if self._ipv6_socket and "." in host:
            host = "::ffff:" + host  # an IPv4 peer, as a dual-stack socket addresses it
        transport.sendto(data, (host, port))
        self.packets_out += 1
        return True

    def close(self) -> None:
        """Close the socket; safe to call twice.

        The port goes back to the pool in connection_lost, once asyncio has
        really closed the socket, so the next call can bind it again.
        """
        self._stop_receiving()
        transport = self._transport
        if transport is None:
            self._release()
        elif not transport.is_closing():
            transport.close()

    def _release(self) -> None:
        self._stop_receiving()
        if not self._released:
            self._released = True
            self.pool.release(self.port)


async def open_endpoint(
    pool: PortPool,
    host: str,
    wire: WireFormat,
    on_audio: Callable[[Pcm], None],
    counters: DropCounters | None = None,
    *,
    jitter_ms: int = DEFAULT_JITTER_MS,
    clock: ReceiveClock | None = None,
    on_event: Callable[[str], None] | None = None,
    on_accepted: Callable[[], None] | None = None,
) -> RtpEndpoint:
    """Bind a UDP endpoint on the next free port of ``pool``; ports another process holds are skipped.

    ``host`` must be an IP literal (no DNS lookup on the event loop).
    Raises MediaError when no port of the range can be bound.
    """
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise MediaError(f"RTP bind host must be an IP address, got {host!r}") from None
    last_error: OSError | None = None
    for _ in range(pool.size):
        port = pool.acquire()
        try:
            sock = _bind_udp(host, port)
        except OSError as exc:
            last_error = exc
            pool.release(port)
            continue
        endpoint = RtpEndpoint(
            pool,
            port,
            wire,
            on_audio,
            counters,
            jitter_ms=jitter_ms,
            clock=clock,
            on_event=on_event,
            on_accepted=on_accepted,
        )
        return await _wrap_socket(endpoint, sock)
    raise MediaError(
        f"no bindable RTP port on {host} in {pool.port_min}-{pool.port_max}"
        + (f" (last error: {last_error})" if last_error else "")
    )


async def _wrap_socket(endpoint: RtpEndpoint, sock: socket.socket) -> RtpEndpoint:
    try:
        await asyncio.get_running_loop().create_datagram_endpoint(lambda: endpoint, sock=sock)
    except OSError as exc:
        sock.close()
        endpoint.pool.release(endpoint.port)
        raise MediaError(f"cannot open RTP endpoint on port {endpoint.port}: {exc}") from exc
    return endpoint
