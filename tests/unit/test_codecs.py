from __future__ import annotations

import warnings

import numpy as np
import pytest

from ari_agent.media.codecs import (
    HOST_SLIN8,
    HOST_SLIN16,
    SLIN16,
    ULAW,
    alaw_decode,
    alaw_encode,
    pcm_from_bytes,
    pcm_to_bytes,
    slin_decode,
    slin_encode,
    ulaw_decode,
    ulaw_encode,
    wire_format,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # reference only; gone in Python 3.13

ALL_CODES = bytes(range(256))
ALL_LINEAR = np.arange(-32768, 32768, dtype=np.int16)


def test_ulaw_decode_bit_exact_all_codes() -> None:
    assert ulaw_decode(ALL_CODES).tobytes() == audioop.ulaw2lin(ALL_CODES, 2)


def test_alaw_decode_bit_exact_all_codes() -> None:
    assert alaw_decode(ALL_CODES).tobytes() == audioop.alaw2lin(ALL_CODES, 2)


def test_ulaw_encode_bit_exact_all_linear_values() -> None:
    assert ulaw_encode(ALL_LINEAR) == audioop.lin2ulaw(ALL_LINEAR.tobytes(), 2)


def test_alaw_encode_bit_exact_all_linear_values() -> None:
    assert alaw_encode(ALL_LINEAR) == audioop.lin2alaw(ALL_LINEAR.tobytes(), 2)


def test_g711_known_codes() -> None:
    # Silence codes and full-scale ends of the ITU tables.
    assert ulaw_encode(np.array([0], dtype=np.int16)) == b"\xff"
    assert alaw_encode(np.array([0], dtype=np.int16)) == b"\xd5"
    assert ulaw_decode(b"\x00\x80").tolist() == [-32124, 32124]
    assert alaw_decode(b"\x2a\xaa").tolist() == [-32256, 32256]


@pytest.mark.parametrize(("enc", "dec"), [(ulaw_encode, ulaw_decode), (alaw_encode, alaw_decode)])
def test_g711_decode_encode_is_identity_on_codes(enc: object, dec: object) -> None:
    decoded = dec(ALL_CODES)  # type: ignore[operator]
    reencoded = enc(decoded)  # type: ignore[operator]
    # µ-law has two zeros (0x7f, 0xff), both decoding to 0; everything else round-trips.
    diffs = [i for i in range(256) if reencoded[i] != i]
    assert diffs in ([], [0x7F])


def test_encode_rejects_non_int16() -> None:
    with pytest.raises(ValueError, match="int16"):
        ulaw_encode(np.zeros(4, dtype=np.int32))
    with pytest.raises(ValueError, match="int16"):
        slin_encode(np.zeros(4, dtype=np.float32))


def test_slin_big_endian() -> None:
    pcm = np.array([1, -2, 0x1234, -32768, 32767], dtype=np.int16)
    data = slin_encode(pcm)
    assert data == bytes.fromhex("0001fffe123480007fff")
    back = slin_decode(data)
    assert back.dtype == np.int16 and back.tolist() == pcm.tolist()
    with pytest.raises(ValueError, match="3 bytes"):
        slin_decode(b"\x00\x01\x02")


def test_pcm_from_bytes_native_little_endian() -> None:
    assert pcm_from_bytes(b"\x01\x00\xff\xff").tolist() == [1, -1]
    with pytest.raises(ValueError):
        pcm_from_bytes(b"\x01")


def test_pcm_to_bytes_little_endian() -> None:
    assert pcm_to_bytes(np.array([1, -1, 300], dtype=np.int16)) == b"\x01\x00\xff\xff\x2c\x01"


def test_host_slin_formats_are_little_endian_both_ways() -> None:
    pcm = np.array([1, -2, 300], dtype=np.int16)
    for wire, rate in ((HOST_SLIN8, 8000), (HOST_SLIN16, 16000)):
        assert (wire.sample_rate, wire.bytes_per_frame, wire.outbound is wire) == (rate, rate // 25, True)
        assert wire.encode(pcm) == b"\x01\x00\xfe\xff\x2c\x01"
        assert wire.decode(b"\x01\x00\xfe\xff\x2c\x01").tolist() == [1, -2, 300]


def test_wire_formats() -> None:
    ulaw = wire_format("ulaw")
    assert ulaw is ULAW
    assert (ulaw.sample_rate, ulaw.send_payload_type, ulaw.bytes_per_frame, ulaw.samples_per_frame) == (
        8000,
        0,
        160,
        160,
    )
    slin = wire_format("slin16")
    assert slin is SLIN16
    # Static PT 11: Asterisk 22 drops slin16 sent back with a dynamic type (design note).
    assert (slin.sample_rate, slin.send_payload_type, slin.bytes_per_frame, slin.samples_per_frame) == (
        16000,
        11,
        640,
        320,
    )
    with pytest.raises(ValueError, match="unknown wire format 'g722'"):
        wire_format("g722")


def test_wire_payload_type_policy() -> None:
    assert ULAW.accepts_payload_type(0)
    assert not ULAW.accepts_payload_type(8)
    assert not ULAW.accepts_payload_type(13)
    assert SLIN16.accepts_payload_type(118)
    assert SLIN16.accepts_payload_type(11)
    assert not SLIN16.accepts_payload_type(13)


@pytest.mark.parametrize("wire", [ULAW, SLIN16])
def test_wire_encode_decode_round_trip(wire: object) -> None:
    from ari_agent.media.codecs import WireFormat

    assert isinstance(wire, WireFormat)
    t = np.arange(wire.samples_per_frame) / wire.sample_rate
    pcm = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
    payload = wire.encode(pcm)
    assert len(payload) == wire.bytes_per_frame
    back = wire.decode(payload)
    assert back.dtype == np.int16 and back.size == pcm.size
    # µ-law quantisation error stays within its step size (~1/32 of the magnitude + bias)
    err = np.abs(back.astype(np.int32) - pcm.astype(np.int32))
    assert int(err.max()) <= (0 if wire.name == "slin16" else 8000 // 16)
