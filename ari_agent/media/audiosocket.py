"""AudioSocket framing, sans-IO: bytes in, messages out (and messages to bytes).

Every message is ``kind`` (1 byte), ``length`` (2 bytes, big-endian) and
``length`` bytes of payload (Asterisk 22's ``res_audiosocket.c`` and
``include/asterisk/res_audiosocket.h``). Asterisk opens the TCP connection
per call and sends the call's UUID first (16 raw bytes), then audio in the
channel's signed-linear format, DTMF digits (one ASCII byte) and, on its own
failure, an error. Audio samples are in Asterisk's host byte order (the
frame's bytes are copied as they are: little-endian on x86 and ARM), unlike
L16 in RTP, which is big-endian.

The decoder never loses framing: a message of a known kind with a bad length
is consumed whole and reported as :class:`AudioSocketError`, and decoding
goes on with the next header; a kind nobody knows is returned as
:class:`Unknown` (skipped by the caller). So garbage on a call's socket costs
the garbage, never the call.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass

from ari_agent.errors import AgentError

KIND_HANGUP = 0x00
KIND_UUID = 0x01
KIND_DTMF = 0x03
KIND_AUDIO = 0x10  # slin, 8 kHz
KIND_ERROR = 0xFF

# The audio kinds (Asterisk 22: slin, slin12 ... slin192) and their sample rates.
AUDIO_KINDS: dict[int, int] = {
    0x10: 8000,
    0x11: 12000,
    0x12: 16000,
    0x13: 24000,
    0x14: 32000,
    0x15: 44100,
    0x16: 48000,
    0x17: 96000,
    0x18: 192000,
}
KIND_FOR_RATE: dict[int, int] = {rate: kind for kind, rate in AUDIO_KINDS.items()}

HEADER = struct.Struct("!BH")
HEADER_LEN = HEADER.size
MAX_PAYLOAD = 0xFFFF


class AudioSocketError(AgentError, ValueError):
    """A malformed AudioSocket message (already consumed: decoding can go on)."""


@dataclass(frozen=True, slots=True)
class Hangup:
    """Kind 0x00: the server asks Asterisk to hang the channel up."""


@dataclass(frozen=True, slots=True)
class Uuid:
    """Kind 0x01: the connection's call, always the first message from Asterisk."""

    value: uuid.UUID


@dataclass(frozen=True, slots=True)
class Dtmf:
    """Kind 0x03: one digit (DTMF reaches the agent through ARI; this one is only counted)."""

    digit: str


@dataclass(frozen=True, slots=True)
class Audio:
    """Kinds 0x10-0x18: signed-linear 16-bit samples, host byte order, at ``sample_rate``."""

    sample_rate: int
    pcm: bytes


@dataclass(frozen=True, slots=True)
class ErrorReport:
    """Kind 0xff: Asterisk reports a failure on its side (payload: an optional code)."""

    code: bytes


@dataclass(frozen=True, slots=True)
class Unknown:
    """A kind this module does not know (skipped whole)."""

    kind: int
    payload: bytes


Message = Hangup | Uuid | Dtmf | Audio | ErrorReport | Unknown


def _header(kind: int, length: int) -> bytes:
    if not 0 <= length <= MAX_PAYLOAD:
        raise AudioSocketError(f"AudioSocket payload of {length} bytes does not fit the 16-bit length")
    return HEADER.pack(kind, length)


def encode_audio(pcm: bytes, sample_rate: int = 8000) -> bytes:
    """One audio message (``pcm``: int16 samples in host order, not empty)."""
    kind = KIND_FOR_RATE.get(sample_rate)
    if kind is None:
        raise AudioSocketError(f"AudioSocket has no audio kind for {sample_rate} Hz")
    if not pcm or len(pcm) % 2:
        # Asterisk reads a zero length as an error and hangs up.
        raise AudioSocketError(f"AudioSocket audio of {len(pcm)} bytes is not whole non-empty samples")
    return _header(kind, len(pcm)) + pcm


def encode_hangup() -> bytes:
    return _header(KIND_HANGUP, 0)


def encode_uuid(value: uuid.UUID) -> bytes:
    return _header(KIND_UUID, 16) + value.bytes


def encode_dtmf(digit: str) -> bytes:
    data = digit.encode("ascii", "replace")
    if len(data) != 1:
        raise AudioSocketError(f"a DTMF message carries one digit, not {digit!r}")
    return _header(KIND_DTMF, 1) + data


def encode_error(code: bytes = b"") -> bytes:
    return _header(KIND_ERROR, len(code)) + code


def _decode(kind: int, payload: bytes) -> Message:
    size = len(payload)
    if kind in AUDIO_KINDS:
        if size == 0 or size % 2:
            raise AudioSocketError(f"AudioSocket audio (kind 0x{kind:02x}) of {size} bytes")
        return Audio(AUDIO_KINDS[kind], payload)
    if kind == KIND_UUID:
        if size != 16:
            raise AudioSocketError(f"AudioSocket UUID of {size} bytes (16 expected)")
        return Uuid(uuid.UUID(bytes=payload))
    if kind == KIND_DTMF:
        if size != 1:
            raise AudioSocketError(f"AudioSocket DTMF of {size} bytes (1 expected)")
        return Dtmf(chr(payload[0]))
    if kind == KIND_HANGUP:
        return Hangup()
    if kind == KIND_ERROR:
        return ErrorReport(payload)
    return Unknown(kind, payload)


class Decoder:
    """Reassembles messages from TCP reads of any size (split or coalesced)."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if self._pos:
            # Drop what was consumed before growing: the buffer stays one message or so long.
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a whole message."""
        return len(self._buf) - self._pos

    def next_message(self) -> Message | None:
        """The next whole message, or None until more bytes come.

        Raises AudioSocketError for a malformed message; it is consumed, so
        calling again goes on with the next one.
        """
        buf, pos = self._buf, self._pos
        if len(buf) - pos < HEADER_LEN:
            return None
        kind, length = HEADER.unpack_from(buf, pos)
        end = pos + HEADER_LEN + length
        if len(buf) < end:
            return None
        payload = bytes(buf[pos + HEADER_LEN : end])
        self._pos = end
        return _decode(kind, payload)

    def messages(self) -> list[Message | AudioSocketError]:
        """Every whole message buffered now; malformed ones as their error, in order."""
        out: list[Message | AudioSocketError] = []
        while True:
            try:
                message = self.next_message()
            except AudioSocketError as exc:
                out.append(exc)
                continue
            if message is None:
                return out
            out.append(message)
