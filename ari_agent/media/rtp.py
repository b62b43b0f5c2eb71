"""RTP packets (RFC 3550), sans-IO: bytes in, objects out, precise ValueErrors.

Also the uint16 sequence arithmetic and the receiver statistics of RFC 3550
appendix A.1 (sequence tracking), A.3 (loss) and A.8 (interarrival jitter).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Literal

RTP_VERSION = 2
HEADER_LEN = 12
_HEADER = struct.Struct("!BBHII")
_EXT_HEADER = struct.Struct("!HH")

SEQ_MOD = 1 << 16
_TS_MOD = 1 << 32


def seq_add(a: int, delta: int) -> int:
    """a + delta in uint16 space."""
    return (a + delta) & 0xFFFF


def seq_diff(a: int, b: int) -> int:
    """Signed distance from a to b in uint16 space, in [-32768, 32767] (b - a, wrap-safe)."""
    return ((b - a + 0x8000) & 0xFFFF) - 0x8000


def seq_lt(a: int, b: int) -> bool:
    """True when sequence number a comes before b (RFC 1982 serial number order)."""
    return seq_diff(a, b) > 0


def ts_diff(a: int, b: int) -> int:
    """Signed distance from RTP timestamp a to b in uint32 space."""
    return ((b - a + 0x8000_0000) & 0xFFFF_FFFF) - 0x8000_0000


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """One RTP packet. ``padding_len`` counts every padding octet, the final count octet included."""

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrc: tuple[int, ...] = ()
    extension_profile: int | None = None
    extension_data: bytes = b""
    padding_len: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.payload_type <= 127:
            raise ValueError(f"payload_type {self.payload_type} out of range 0..127")
        if not 0 <= self.sequence <= 0xFFFF:
            raise ValueError(f"sequence {self.sequence} out of range 0..65535")
        if not 0 <= self.timestamp <= 0xFFFF_FFFF:
            raise ValueError(f"timestamp {self.timestamp} out of range 0..2^32-1")
        if not 0 <= self.ssrc <= 0xFFFF_FFFF:
            raise ValueError(f"ssrc {self.ssrc} out of range 0..2^32-1")
        if len(self.csrc) > 15:
            raise ValueError(f"{len(self.csrc)} CSRCs, at most 15 fit the 4-bit CC field")
        for c in self.csrc:
            if not 0 <= c <= 0xFFFF_FFFF:
                raise ValueError(f"csrc {c} out of range 0..2^32-1")
        if self.extension_profile is None:
            if self.extension_data:
                raise ValueError("extension_data given without extension_profile")
        else:
            if not 0 <= self.extension_profile <= 0xFFFF:
                raise ValueError(f"extension_profile {self.extension_profile} out of range 0..65535")
            if len(self.extension_data) % 4:
                raise ValueError(f"extension_data is {len(self.extension_data)} bytes, not a multiple of 4")
            if len(self.extension_data) > 0xFFFF * 4:
                raise ValueError(f"extension_data is {len(self.extension_data)} bytes, too long")
        if not 0 <= self.padding_len <= 255:
            raise ValueError(f"padding_len {self.padding_len} out of range 0..255")

    def serialize(self) -> bytes:
        first = (
            (RTP_VERSION << 6)
            | (0x20 if self.padding_len else 0)
            | (0x10 if self.extension_profile is not None else 0)
            | len(self.csrc)
        )
        second = (0x80 if self.marker else 0) | self.payload_type
        parts = [_HEADER.pack(first, second, self.sequence, self.timestamp, self.ssrc)]
        if self.csrc:
            parts.append(struct.pack(f"!{len(self.csrc)}I", *self.csrc))
        if self.extension_profile is not None:
            parts.append(_EXT_HEADER.pack(self.extension_profile, len(self.extension_data) // 4))
            parts.append(self.extension_data)
        parts.append(self.payload)
        if self.padding_len:
            parts.append(bytes(self.padding_len - 1) + bytes((self.padding_len,)))
        return b"".join(parts)


def parse_rtp(data: bytes | bytearray | memoryview) -> RtpPacket:
    """Decode one RTP datagram; raise ValueError saying exactly what is wrong."""
    size = len(data)
    if size < HEADER_LEN:
        raise ValueError(f"RTP packet too short: {size} bytes, the fixed header needs {HEADER_LEN}")
    first, second, sequence, timestamp, ssrc = _HEADER.unpack_from(data)
    version = first >> 6
    if version != RTP_VERSION:
        raise ValueError(f"RTP version {version}, expected {RTP_VERSION}")
    cc = first & 0x0F
    offset = HEADER_LEN + 4 * cc
    if offset > size:
        raise ValueError(f"CSRC list ({cc} entries) overruns the {size}-byte datagram")
    csrc = struct.unpack_from(f"!{cc}I", data, HEADER_LEN) if cc else ()

    extension_profile: int | None = None
    extension_data = b""
    if first & 0x10:
        if offset + 4 > size:
            raise ValueError(f"extension header at offset {offset} overruns the {size}-byte datagram")
        extension_profile, words = _EXT_HEADER.unpack_from(data, offset)
        offset += 4
        end = offset + 4 * words
        if end > size:
            raise ValueError(
                f"extension of {words} words at offset {offset} overruns the {size}-byte datagram"
            )
        extension_data = bytes(data[offset:end])
        offset = end

    end = size
    padding_len = 0
    if first & 0x20:
        if offset >= size:
            raise ValueError("padding flag set but no padding octets follow the header")
        padding_len = data[-1]
        if padding_len == 0:
            raise ValueError("padding flag set but the padding count octet is 0")
        if padding_len > size - offset:
            raise ValueError(
                f"padding of {padding_len} octets overruns the {size - offset}-byte payload area"
            )
        end = size - padding_len

    return RtpPacket(
        payload_type=second & 0x7F,
        sequence=sequence,
        timestamp=timestamp,
        ssrc=ssrc,
        payload=bytes(data[offset:end]),
        marker=bool(second & 0x80),
        csrc=tuple(csrc),
        extension_profile=extension_profile,
        extension_data=extension_data,
        padding_len=padding_len,
    )


MAX_DROPOUT = 3000
MAX_MISORDER = 100
MIN_SEQUENTIAL = 2
# Sequence numbers remembered behind the highest one, to tell a duplicate from a late packet.
# Covers MAX_MISORDER, so anything A.1 still takes as "late" can be checked.
_SEEN_WINDOW = 128
_SEEN_MASK = (1 << _SEEN_WINDOW) - 1

# What ReceiveStats.update made of a packet.
Verdict = Literal["new", "reordered", "duplicate", "rejected"]


def is_rtcp(data: bytes | bytearray | memoryview) -> bool:
    """True for an RTCP packet arriving on the RTP port (RFC 5761 section 4 demultiplexing).

    RTCP's packet types 192-223 sit where RTP has the marker bit and payload
    types 64-95, which no audio uses; checked before parsing as RTP.
    """
    return len(data) >= 8 and data[0] >> 6 == RTP_VERSION and 192 <= data[1] <= 223


class ReceiveStats:
    """Receiver-side statistics of one RTP source (RFC 3550 A.1, A.3, A.8).

    ``probation`` is the number of in-order packets needed before a new
    source counts (A.1's MIN_SEQUENTIAL); 0 trusts the first packet, which
    suits a source already locked by address.

    Unlike A.1, a duplicate is not counted as received (A.3 would let
    duplicates hide loss): a fixed window of recent sequence numbers tells
    a duplicate from a packet that is merely late.
    """

    def __init__(self, probation: int = 0) -> None:
        self._min_sequential = probation
        self._probation = probation
        self._started = False
        self._base_seq = 0
        self._max_seq = 0
        self._bad_seq = SEQ_MOD + 1
        self._cycles = 0
        self._received = 0
        self._expected_prior = 0
        self._received_prior = 0
        self._seen = 0  # bit i: max_seq - i arrived
        self._jitter = 0.0  # in timestamp units, as in A.8
        self._clock_rate = 8000
        self._last_arrival: float | None = None
        self._last_ts = 0
        self.duplicates = 0
        self.reordered = 0  # arrived after a later sequence number, counted as received
        self.restarts = 0

    def _init_seq(self, seq: int) -> None:
        self._base_seq = seq
        self._max_seq = seq
        self._bad_seq = SEQ_MOD + 1
        self._cycles = 0
        self._received = 0
        self._received_prior = 0
        self._expected_prior = 0
        self._seen = 1

    def _update_seq(self, seq: int) -> Verdict:
        if not self._started:
            self._started = True
            self._init_seq(seq)
            if self._probation:
                self._max_seq = (seq - 1) & 0xFFFF
            else:
                self._received += 1
                return "new"
        udelta = (seq - self._max_seq) & 0xFFFF
        if self._probation:
            if seq == (self._max_seq + 1) & 0xFFFF:
                self._probation -= 1
                self._max_seq = seq
                if self._probation == 0:
                    self._init_seq(seq)
                    self._received += 1
                    return "new"
            else:
                self._probation = self._min_sequential - 1
                self._max_seq = seq
            return "rejected"
        if udelta == 0:
            self.duplicates += 1
            return "duplicate"
        if udelta < MAX_DROPOUT:
            if seq < self._max_seq:
                self._cycles += SEQ_MOD
            self._max_seq = seq
            self._seen = ((self._seen << udelta) | 1) & _SEEN_MASK
            self._received += 1
            return "new"
        if udelta <= SEQ_MOD - MAX_MISORDER:
            if seq == self._bad_seq:
                # Two sequential packets after a big jump: the source restarted.
                self.restarts += 1
                self._init_seq(seq)
                self._last_arrival = None
                self._received += 1
                return "new"
            self._bad_seq = (seq + 1) & 0xFFFF
            return "rejected"
        behind = SEQ_MOD - udelta  # 1..MAX_MISORDER
        bit = 1 << behind
        if self._seen & bit:
            self.duplicates += 1
            return "duplicate"
        self._seen |= bit
        # A packet sent before the first one that arrived (the stream's first packets reordered):
        # the stream began there, so expected must reach back to it, or this packet received
        # beyond what is expected hides one loss.
        self._base_seq = min(self._base_seq, self.extended_max_sequence - behind)
        self.reordered += 1
        self._received += 1
        return "reordered"

    def update(self, packet: RtpPacket, arrival_seconds: float, clock_rate: int) -> Verdict:
        """Account one packet and say what it was; "rejected" when A.1 refuses it (probation, wild jump)."""
        verdict = self._update_seq(packet.sequence)
        if verdict in ("rejected", "duplicate"):
            return verdict
        self._clock_rate = clock_rate
        if self._last_arrival is not None:
            # D(i-1, i) of A.8, computed from differences so the uint32 timestamp wrap is harmless.
            d = (arrival_seconds - self._last_arrival) * clock_rate - ts_diff(self._last_ts, packet.timestamp)
            self._jitter += (abs(d) - self._jitter) / 16.0
        self._last_arrival = arrival_seconds
        self._last_ts = packet.timestamp
        return verdict

    @property
    def received(self) -> int:
        """Distinct packets received (duplicates not counted)."""
        return self._received

    @property
    def extended_max_sequence(self) -> int:
        return self._cycles + self._max_seq

    @property
    def expected(self) -> int:
        if not self._started or (self._probation and self._received == 0):
            return 0
        return self.extended_max_sequence - self._base_seq + 1

    @property
    def lost(self) -> int:
        """Cumulative packets lost (never negative: duplicates are not counted as received)."""
        return max(0, self.expected - self._received)

    @property
    def fraction_lost(self) -> float:
        """Cumulative fraction lost since the first packet, in [0, 1]."""
        expected = self.expected
        return self.lost / expected if expected > 0 else 0.0

    def interval_fraction_lost(self) -> float:
        """Fraction lost since the previous call (A.3, as an RTCP report would carry it)."""
        expected = self.expected
        expected_interval = expected - self._expected_prior
        received_interval = self._received - self._received_prior
        self._expected_prior = expected
        self._received_prior = self._received
        lost_interval = expected_interval - received_interval
        if expected_interval <= 0 or lost_interval <= 0:
            return 0.0
        return lost_interval / expected_interval

    @property
    def jitter_ms(self) -> float:
        return self._jitter * 1000.0 / self._clock_rate


class SourceStats:
    """Statistics of one RTP stream across SSRC changes (a re-INVITE, a media server switching).

    Each SSRC gets its own :class:`ReceiveStats`, so a new source restarts
    the sequence and jitter figures instead of showing as a wild jump or as
    loss. The last few sources stay live so a straggler of the previous one
    still counts there; older ones are folded into totals, so state stays
    bounded however long the call.
    """

    KEEP = 4

    def __init__(self) -> None:
        self._sources: dict[int, ReceiveStats] = {}
        self.current: int | None = None
        self.changes = 0
        self._retired_expected = 0
        self._retired_received = 0
        self._retired_duplicates = 0
        self._retired_reordered = 0

    def is_new_source(self, ssrc: int) -> bool:
        return ssrc not in self._sources

    def update(self, packet: RtpPacket, arrival_seconds: float, clock_rate: int) -> Verdict:
        stats = self._sources.get(packet.ssrc)
        if stats is None:
            if self.current is not None:
                self.changes += 1
            stats = self._sources[packet.ssrc] = ReceiveStats()
            self.current = packet.ssrc
            if len(self._sources) > self.KEEP:
                oldest = next(iter(self._sources))
                retired = self._sources.pop(oldest)
                self._retired_expected += retired.expected
                self._retired_received += retired.received
                self._retired_duplicates += retired.duplicates
                self._retired_reordered += retired.reordered
        return stats.update(packet, arrival_seconds, clock_rate)

    @property
    def expected(self) -> int:
        return self._retired_expected + sum(s.expected for s in self._sources.values())

    @property
    def received(self) -> int:
        return self._retired_received + sum(s.received for s in self._sources.values())

    @property
    def lost(self) -> int:
        return max(0, self.expected - self.received)

    @property
    def fraction_lost(self) -> float:
        expected = self.expected
        return self.lost / expected if expected > 0 else 0.0

    @property
    def duplicates(self) -> int:
        return self._retired_duplicates + sum(s.duplicates for s in self._sources.values())

    @property
    def reordered(self) -> int:
        return self._retired_reordered + sum(s.reordered for s in self._sources.values())

    @property
    def jitter_ms(self) -> float:
        """The current source's jitter (a new source starts its estimate afresh)."""
        if self.current is None:
            return 0.0
        return self._sources[self.current].jitter_ms
