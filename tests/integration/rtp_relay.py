"""A loopback relay between Asterisk's ExternalMedia and the agent that mangles RTP as networks do.

The agent advertises ``127.0.0.2`` (``AGENT_MEDIA__ADVERTISE_HOST``) but binds
``127.0.0.1``: Asterisk sends the call's RTP to this relay, which listens on
``127.0.0.2`` on every port of the agent's range and forwards each packet to
the agent's ``127.0.0.1`` port *from Asterisk's own address and port*
(a raw socket writes the UDP header, so the agent's source lock holds as in
production). The agent's RTP back to Asterisk goes direct.

On the way it, deterministically from a seed:

* offsets sequence numbers and timestamps so both wrap a few seconds in;
* suppresses silence as a DTX phone does: the first silent frame becomes an
  RFC 3389 comfort-noise packet, the rest are not sent (no sequence number
  used), and the next voiced frame carries the marker bit;
* drops, duplicates and reorders packets;
* sends RTCP receiver reports on the RTP port (RFC 5761 multiplexing);
* inserts RFC 4733 telephone-event packets during a silence;
* changes SSRC once, with new sequence and timestamp bases (a re-INVITE), and
  always sends the new source's first packet after its second (a receiver
  must not let that late first packet hide a loss);
* stalls once, if asked: holds every packet for a while and then sends them
  in a burst (a loaded machine or a congested path: late, nothing lost).

It counts what it did, so a test can compare with what the agent reports.
Needs root (raw socket).
"""

from __future__ import annotations

import random
import select
import socket
import struct
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

_RTP = struct.Struct("!BBHII")
_UDP = struct.Struct("!HHHH")
PT_CN = 13
PT_EVENT = 101


@dataclass
class Plan:
    seed: int = 1
    loss: float = 0.03
    duplicate: float = 0.02
    reorder: float = 0.05
    wrap_seq_after: int = 40  # sequence numbers into the call (silence takes none)
    wrap_ts_after_s: float = 4.0
    ssrc_change_after: int = 600  # packets forwarded (sent or dropped)
    rtcp_every: int = 100
    events_on_cn: int = 3  # telephone-events go out after this many comfort-noise packets
    silent_peak: int = 64  # a frame whose samples all stay under this is silence
    clean_start: int = 10  # the first packets go through untouched
    # The path stalls once: from the ``stall_at_loud``-th loud packet of the call (peak at least
    # ``loud_peak``) nothing is passed on for ``stall_ms``, then all of it at once (0: no stall).
    stall_ms: int = 0
    stall_at_loud: int = 0
    loud_peak: int = 1000
    stall_every_loud: int = 0  # and again every so many loud packets after (0: once)


@dataclass
class Counts:
    received: int = 0  # from Asterisk
    forwarded: int = 0  # datagrams sent to the agent, all kinds
    # Per SSRC, the position (0, 1, ...) in its sequence of the packets dropped and sent.
    dropped: dict[int, list[int]] = field(default_factory=lambda: defaultdict(list))
    sent: dict[int, list[int]] = field(default_factory=lambda: defaultdict(list))
    duplicates: int = 0
    reordered: int = 0
    comfort_noise: int = 0
    suppressed: int = 0
    rtcp: int = 0
    telephone_events: int = 0
    ssrc_changes: int = 0
    seq_wraps: int = 0
    stalled: int = 0  # packets held by the stall
    ts_wraps: int = 0

    def lost_as_seen(self) -> int:
        """Dropped packets a receiver can know of: between the first and last it got, per SSRC."""
        total = 0
        for ssrc, dropped in self.dropped.items():
            sent = self.sent.get(ssrc)
            if sent:
                total += sum(1 for k in dropped if min(sent) < k < max(sent))
        return total


class _Stream:
    """The relay's outbound RTP identity: SSRC, sequence and timestamp offsets."""

    def __init__(self, ssrc: int, first_seq: int, ts_offset: int) -> None:
        self.ssrc = ssrc
        self.first_seq = first_seq
        self.ts_offset = ts_offset
        self.taken = 0
        self.last_ts: int | None = None

    def take_seq(self) -> tuple[int, int]:
        """The next sequence number and its position in this stream."""
        k = self.taken
        self.taken += 1
        return (self.first_seq + k) & 0xFFFF, k

    def ts(self, ts_in: int) -> int:
        return (ts_in + self.ts_offset) & 0xFFFFFFFF


class ImpairingRelay:
    def __init__(
        self,
        ports: range,
        *,
        listen_host: str = "127.0.0.2",
        agent_host: str = "127.0.0.1",
        plan: Plan | None = None,
        sample_rate: int = 16000,
        bytes_per_sample: int = 2,
    ) -> None:
        self.plan = plan or Plan()
        self.counts = Counts()
        self.agent_host = agent_host
        self.sample_rate = sample_rate
        self.bytes_per_sample = bytes_per_sample
        self._rng = random.Random(self.plan.seed)
        self._socks: dict[socket.socket, int] = {}
        for port in ports:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            s.bind((listen_host, port))
            s.setblocking(False)
            self._socks[s] = port
        self._raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
        self._raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # never read
        self._stream: _Stream | None = None
        self._seen = 0
        self._held: bytes | None = None
        self._silent = False
        self._hold_next = False
        self._loud = 0
        self._stall_until: float | None = None
        self._stalled: list[tuple[bytes, tuple[str, int], int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rtp-relay", daemon=True)
        self.errors: list[str] = []

    def __enter__(self) -> ImpairingRelay:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for s in self._socks:
            s.close()
        self._raw.close()

    # ------------------------------------------------------------------

    def _run(self) -> None:
        socks = list(self._socks)
        while not self._stop.is_set():
            readable, _, _ = select.select(socks, [], [], 0.005 if self._stall_until else 0.05)
            if self._stall_until is not None and time.monotonic() >= self._stall_until:
                self._stall_until = None
                stalled, self._stalled = self._stalled, []
                for datagram, src, port in stalled:
                    self._send(datagram, src, port)
            for s in readable:
                try:
                    data, addr = s.recvfrom(4096)
                except BlockingIOError:
                    continue
                try:
                    self._on_packet(data, addr, self._socks[s])
                except Exception as exc:  # a relay bug must show in the test, not kill the thread
                    self.errors.append(repr(exc))

    def _send(self, datagram: bytes, src: tuple[str, int], dst_port: int) -> None:
        if self._stall_until is not None:
            self._stalled.append((datagram, src, dst_port))
            self.counts.stalled += 1
            return
        header = _UDP.pack(src[1], dst_port, 8 + len(datagram), 0)  # checksum 0: none (IPv4)
        self._raw.sendto(header + datagram, (self.agent_host, 0))
        self.counts.forwarded += 1

    def _on_packet(self, data: bytes, src: tuple[str, int], dst_port: int) -> None:
        plan = self.plan
        counts = self.counts
        counts.received += 1
        b0, b1, _seq, ts, _ssrc = _RTP.unpack_from(data)
        header_len = 12 + 4 * (b0 & 0x0F)
        payload = data[header_len:]
        pt = b1 & 0x7F
        if self._stream is None:
            # Both wrap a few seconds in.
            ts_offset = (1 << 32) - int(plan.wrap_ts_after_s * self.sample_rate) - ts
            self._stream = _Stream(self._rng.getrandbits(32), 0x10000 - plan.wrap_seq_after, ts_offset)
        elif self._seen == plan.ssrc_change_after:
            self._flush_held(src, dst_port)
            rng = self._rng
            self._stream = _Stream(rng.getrandbits(32), rng.getrandbits(16), rng.getrandbits(32))
            counts.ssrc_changes += 1
            self._hold_next = True
        self._seen += 1
        stream = self._stream

        if self._seen % plan.rtcp_every == 0:
            self._send(self._rtcp_rr(stream.ssrc), src, dst_port)
            counts.rtcp += 1

        samples = np.frombuffer(payload[: len(payload) // 2 * 2], dtype=">i2")
        if samples.size and int(np.abs(samples.astype(np.int32)).max()) >= plan.loud_peak:
            self._loud += 1
            since = self._loud - plan.stall_at_loud
            if plan.stall_ms and (
                since == 0 or (plan.stall_every_loud and since > 0 and since % plan.stall_every_loud == 0)
            ):
                self._stall_until = time.monotonic() + plan.stall_ms / 1000
        silent = samples.size > 0 and int(np.abs(samples.astype(np.int32)).max()) < plan.silent_peak
        if silent and self._seen > plan.clean_start:
            if self._silent:
                counts.suppressed += 1
                return
            self._silent = True
            self._emit(self._rtp(stream, PT_CN, ts, b"\x50"), src, dst_port, stream)
            counts.comfort_noise += 1
            if counts.comfort_noise == plan.events_on_cn:
                for i in range(3):  # a short DTMF press, its end packet sent three times as 4733 asks
                    end = 0x80 if i else 0
                    event = struct.pack("!BBH", 5, end | 10, 160 * (i + 1))  # digit 5, volume 10
                    self._emit(self._rtp(stream, PT_EVENT, ts, event), src, dst_port, stream)
                    counts.telephone_events += 1
            return
        marker = self._silent
        self._silent = False
        self._emit(self._rtp(stream, pt, ts, payload, marker=marker), src, dst_port, stream, impair=True)

    def _rtp(
        self, stream: _Stream, pt: int, ts: int, payload: bytes, *, marker: bool = False
    ) -> tuple[bytes, int]:
        seq, k = stream.take_seq()
        ts_out = (ts + stream.ts_offset) & 0xFFFFFFFF
        if k and seq == 0:
            self.counts.seq_wraps += 1
        if stream.last_ts is not None and ts_out < stream.last_ts and stream.last_ts - ts_out > 1 << 31:
            self.counts.ts_wraps += 1
        stream.last_ts = ts_out
        return _RTP.pack(0x80, (0x80 if marker else 0) | pt, seq, ts_out, stream.ssrc) + payload, k

    def _emit(
        self,
        built: tuple[bytes, int],
        src: tuple[str, int],
        dst_port: int,
        stream: _Stream,
        *,
        impair: bool = False,
    ) -> None:
        counts = self.counts
        packet, k = built
        roll = self._rng.random() if impair and self._seen > self.plan.clean_start else 1.0
        plan = self.plan
        if self._hold_next and k == 0:
            roll = plan.loss  # neither dropped nor doubled: held back behind the next one
        self._hold_next = False
        if roll < plan.loss:
            counts.dropped[stream.ssrc].append(k)
            return
        counts.sent[stream.ssrc].append(k)
        if roll < plan.loss + plan.reorder and self._held is None:
            self._held = packet  # goes out after the next one
            counts.reordered += 1
            return
        self._send(packet, src, dst_port)
        if roll < plan.loss + plan.reorder + plan.duplicate:
            self._send(packet, src, dst_port)
            counts.duplicates += 1
        self._flush_held(src, dst_port)

    def _flush_held(self, src: tuple[str, int], dst_port: int) -> None:
        if self._held is not None:
            held, self._held = self._held, None
            self._send(held, src, dst_port)

    @staticmethod
    def _rtcp_rr(ssrc: int) -> bytes:
        # Receiver report, one report block (RFC 3550 6.4.2): 8 + 24 bytes.
        return struct.pack("!BBHI", 0x81, 201, 7, 0x5EED) + struct.pack("!I", ssrc) + bytes(20)

    def wait_idle(self, seconds: float = 0.3) -> None:
        """Give the relay's thread time to pass on what is in flight."""
        time.sleep(seconds)
