"""Call quality estimate: a simplified ITU-T G.107 E-model, as VoIP monitors use it.

R = 93.2 - Id - Ie_eff, with
  Id = 0.024 d + 0.11 (d - 177.3) H(d - 177.3)       (delay impairment, d in ms)
  Ie_eff = Ie + (95 - Ie) Ppl / (Ppl / BurstR + Bpl)   (equipment + packet loss, Ppl in %)
and MOS from R by the G.107 mapping. The mouth-to-ear delay d is the
one-way latency plus a jitter buffer assumed to hold twice the jitter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

R_DEFAULT = 93.2


@dataclass(frozen=True, slots=True)
class CodecImpairment:
    ie: float  # equipment impairment factor
    bpl: float  # packet-loss robustness factor


# G.113 Appendix I values.
CODECS: dict[str, CodecImpairment] = {
    "g711": CodecImpairment(ie=0.0, bpl=25.1),  # with packet loss concealment
    "g711_noplc": CodecImpairment(ie=0.0, bpl=4.3),
    "g729a": CodecImpairment(ie=11.0, bpl=19.0),
}


def _check(name: str, value: float, upper: float = math.inf) -> None:
    if math.isnan(value) or not 0.0 <= value <= upper:
        raise ValueError(f"{name} must be in [0, {upper}], got {value}")


def r_factor(
    loss_fraction: float,
    jitter_ms: float,
    latency_ms: float,
    codec: str = "g711",
    burst_ratio: float = 1.0,
) -> float:
    _check("loss_fraction", loss_fraction, 1.0)
    _check("jitter_ms", jitter_ms)
    _check("latency_ms", latency_ms)
    if burst_ratio < 1.0:
        raise ValueError(f"burst_ratio must be >= 1 (1 = random loss), got {burst_ratio}")
    try:
        impairment = CODECS[codec]
    except KeyError:
        raise ValueError(f"unknown codec {codec!r}; known: {', '.join(sorted(CODECS))}") from None
    d = latency_ms + 2.0 * jitter_ms
    id_ = 0.024 * d + (0.11 * (d - 177.3) if d > 177.3 else 0.0)
    ppl = loss_fraction * 100.0
    ie_eff = impairment.ie + (95.0 - impairment.ie) * ppl / (ppl / burst_ratio + impairment.bpl)
    return R_DEFAULT - id_ - ie_eff


def mos_from_r(r: float) -> float:
    if r <= 0.0:
        return 1.0
    if r >= 100.0:
        return 4.5
    value = 1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7e-6
    # The G.107 cubic dips just below 1 for R < ~6.5; clamp keeps MOS monotonic in R.
    return min(4.5, max(1.0, value))


def mos(
    loss_fraction: float,
    jitter_ms: float,
    latency_ms: float,
    codec: str = "g711",
    burst_ratio: float = 1.0,
) -> float:
    """Estimated MOS-CQE in [1, 4.5]; G.711 with no loss and low delay gives about 4.4."""
    return mos_from_r(r_factor(loss_fraction, jitter_ms, latency_ms, codec, burst_ratio))
