"""G.711 by lookup tables, slin16 (big-endian on RTP, little-endian on sockets), the wire formats.

The tables are built once at import from the segment algorithm of the ITU
G.711 reference (the same one audioop used), so encoding and decoding are a
single numpy indexing operation per frame.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

SESSION_SAMPLE_RATE = 16000
FRAME_MS = 20
COMFORT_NOISE_PT = 13

Pcm = NDArray[np.int16]


def _build_ulaw_decode() -> Pcm:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = ((u & 0x0F) << 3) + 0x84
    t = t << ((u & 0x70) >> 4)
    return np.where(u & 0x80, 0x84 - t, t - 0x84).astype(np.int16)


def _build_ulaw_encode() -> NDArray[np.uint8]:
    # Indexed by the int16 sample reinterpreted as uint16.
    pcm = np.arange(65536, dtype=np.int32).astype(np.uint16).view(np.int16).astype(np.int32) >> 2
    mask = np.where(pcm < 0, 0x7F, 0xFF)
    mag = np.minimum(np.abs(pcm), 8159) + 33
    seg_end = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])
    seg = np.searchsorted(seg_end, mag, side="left")
    uval = np.where(seg >= 8, 0x7F, (seg << 4) | ((mag >> (seg + 1)) & 0x0F))
    return (uval ^ mask).astype(np.uint8)


def _build_alaw_decode() -> Pcm:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    t = np.where(seg == 0, t + 8, t + 0x108)
    t = np.where(seg > 1, t << np.maximum(seg - 1, 0), t)
    return np.where(a & 0x80, t, -t).astype(np.int16)


def _build_alaw_encode() -> NDArray[np.uint8]:
    pcm = np.arange(65536, dtype=np.int32).astype(np.uint16).view(np.int16).astype(np.int32) >> 3
    mask = np.where(pcm >= 0, 0xD5, 0x55)
    mag = np.where(pcm >= 0, pcm, -pcm - 1)
    seg_end = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])
    seg = np.searchsorted(seg_end, mag, side="left")
    mant = np.where(seg < 2, (mag >> 1) & 0x0F, (mag >> np.maximum(seg, 1)) & 0x0F)
    aval = np.where(seg >= 8, 0x7F, (seg << 4) | mant)
    return (aval ^ mask).astype(np.uint8)


_ULAW_DEC = _build_ulaw_decode()
_ULAW_ENC = _build_ulaw_encode()
_ALAW_DEC = _build_alaw_decode()
_ALAW_ENC = _build_alaw_encode()


def _as_int16(pcm: NDArray[np.int16]) -> Pcm:
    if pcm.dtype != np.int16:
        raise ValueError(f"PCM must be int16, got {pcm.dtype}")
    return pcm


def ulaw_decode(data: bytes) -> Pcm:
    return _ULAW_DEC[np.frombuffer(data, dtype=np.uint8)]


def ulaw_encode(pcm: Pcm) -> bytes:
    return _ULAW_ENC[_as_int16(pcm).view(np.uint16)].tobytes()


def alaw_decode(data: bytes) -> Pcm:
    return _ALAW_DEC[np.frombuffer(data, dtype=np.uint8)]


def alaw_encode(pcm: Pcm) -> bytes:
    return _ALAW_ENC[_as_int16(pcm).view(np.uint16)].tobytes()


def slin_decode(data: bytes) -> Pcm:
    """Big-endian signed 16-bit (RTP L16) to native int16."""
    if len(data) % 2:
        raise ValueError(f"L16 payload of {len(data)} bytes is not a whole number of samples")
    return np.frombuffer(data, dtype=">i2").astype(np.int16)


def slin_encode(pcm: Pcm) -> bytes:
    return _as_int16(pcm).astype(">i2").tobytes()


def pcm_from_bytes(data: bytes) -> Pcm:
    """Native little-endian PCM16 bytes to an int16 array (a copy, writable)."""
    if len(data) % 2:
        raise ValueError(f"PCM16 buffer of {len(data)} bytes is not a whole number of samples")
    return np.frombuffer(data, dtype="<i2").astype(np.int16)


def pcm_to_bytes(pcm: Pcm) -> bytes:
    """An int16 array to little-endian PCM16 bytes."""
    return pcm.astype("<i2", copy=False).tobytes()


@dataclass(frozen=True)
class WireFormat:
    """How audio travels on one call's RTP leg.

    ``encode`` takes PCM at ``sample_rate`` (the wire rate, not the session
    rate); ``decode`` returns PCM at ``sample_rate``.
    """

    name: str
    sample_rate: int
    send_payload_type: int
    bytes_per_sample: int
    _decode: Callable[[bytes], Pcm] = field(repr=False, compare=False)
    _encode: Callable[[Pcm], bytes] = field(repr=False, compare=False)
    # None: accept any payload type but comfort noise (Asterisk picks a dynamic one for slin16).
    receive_payload_types: frozenset[int] | None = None
    # The format of what we send back, when it differs from what we receive.
    send_as: WireFormat | None = None

    @property
    def outbound(self) -> WireFormat:
        return self.send_as or self

    @property
    def samples_per_frame(self) -> int:
        return self.sample_rate * FRAME_MS // 1000

    @property
    def bytes_per_frame(self) -> int:
        return self.samples_per_frame * self.bytes_per_sample

    @property
    def silence_byte(self) -> int:
        return 0xFF if self.name == "ulaw" else 0x00

    def accepts_payload_type(self, payload_type: int) -> bool:
        if payload_type == COMFORT_NOISE_PT:
            return False
        return self.receive_payload_types is None or payload_type in self.receive_payload_types

    def decode(self, payload: bytes) -> Pcm:
        return self._decode(payload)

    def encode(self, pcm: Pcm) -> bytes:
        return self._encode(pcm)


ULAW = WireFormat(
    name="ulaw",
    sample_rate=8000,
    send_payload_type=0,
    bytes_per_sample=1,
    _decode=ulaw_decode,
    _encode=ulaw_encode,
    receive_payload_types=frozenset({0}),
)

# What goes back on a slin16 leg. Asterisk 22 sends slin16 with dynamic PT
# 118 but silently drops dynamic PTs coming back, and static PT 11 is L16 at
# 8 kHz: 16 kHz audio sent with it plays at half speed (seen in the lab test
# test_external_media_slin16_facts). So we send 8 kHz L16 with PT 11.
SLIN8_OUT = WireFormat(
    name="slin",
    sample_rate=8000,
    send_payload_type=11,
    bytes_per_sample=2,
    _decode=slin_decode,
    _encode=slin_encode,
    receive_payload_types=frozenset({10, 11}),
)

# Wideband in (speech recognition gets 16 kHz), 8 kHz linear out.
SLIN16 = WireFormat(
    name="slin16",
    sample_rate=16000,
    send_payload_type=11,
    bytes_per_sample=2,
    _decode=slin_decode,
    _encode=slin_encode,
    receive_payload_types=None,
    send_as=SLIN8_OUT,
)

WIRE_FORMATS: dict[str, WireFormat] = {w.name: w for w in (ULAW, SLIN16)}


def wire_format(name: str) -> WireFormat:
    try:
        return WIRE_FORMATS[name]
    except KeyError:
        known = ", ".join(sorted(WIRE_FORMATS))
        raise ValueError(f"unknown wire format {name!r}; known: {known}") from None


# Signed linear as Asterisk hands it over a socket (AudioSocket, chan_websocket) rather
# than RTP: in its host byte order, little-endian on x86 and ARM. The transports differ
# only in the rate they take back on a slin16 call: each leg module picks its ``send_as``.
HOST_SLIN8 = WireFormat(
    name="slin",
    sample_rate=8000,
    send_payload_type=11,  # only labels the numbered frames fed to the inbound stream
    bytes_per_sample=2,
    _decode=pcm_from_bytes,
    _encode=pcm_to_bytes,
)
HOST_SLIN16 = WireFormat(
    name="slin16",
    sample_rate=16000,
    send_payload_type=11,
    bytes_per_sample=2,
    _decode=pcm_from_bytes,
    _encode=pcm_to_bytes,
)
