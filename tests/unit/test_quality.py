from __future__ import annotations

import itertools
import math

import pytest

from ari_agent.media.quality import mos, mos_from_r, r_factor


def test_clean_g711_is_about_4_4() -> None:
    assert mos(0.0, 0.0, 0.0) == pytest.approx(4.41, abs=0.01)
    assert mos(0.0, 2.0, 20.0) == pytest.approx(4.4, abs=0.02)


def test_known_points() -> None:
    # 5 % random loss with PLC: Ie_eff = 95 * 5 / (5 + 25.1) = 15.78 -> R = 77.42, MOS 3.92
    assert r_factor(0.05, 0.0, 0.0) == pytest.approx(93.2 - 95 * 5 / 30.1, abs=1e-9)
    assert mos(0.05, 0.0, 0.0) == pytest.approx(3.92, abs=0.01)
    # the same loss without concealment is much worse
    assert mos(0.05, 0.0, 0.0, codec="g711_noplc") < 2.8
    # delay: below 177.3 ms only the 0.024/ms slope; R=70 at 400 ms-ish is "some users dissatisfied"
    assert r_factor(0.0, 0.0, 150.0) == pytest.approx(93.2 - 0.024 * 150, abs=1e-9)
    assert r_factor(0.0, 0.0, 300.0) == pytest.approx(93.2 - 0.024 * 300 - 0.11 * (300 - 177.3), abs=1e-9)
    # jitter counts twice (jitter buffer) into the delay
    assert r_factor(0.0, 50.0, 100.0) == pytest.approx(r_factor(0.0, 0.0, 200.0))


def test_g729_is_worse_than_g711() -> None:
    assert mos(0.0, 0.0, 0.0, codec="g729a") < mos(0.0, 0.0, 0.0)


def test_monotonic_in_every_input() -> None:
    losses = [i / 100 for i in range(0, 101)]
    values = [mos(p, 5.0, 50.0) for p in losses]
    assert all(a >= b for a, b in itertools.pairwise(values))
    assert values[0] > 4.3 and values[-1] < 1.6
    delays = [mos(0.01, 0.0, float(d)) for d in range(0, 1000, 10)]
    assert all(a >= b for a, b in itertools.pairwise(delays))
    jitters = [mos(0.01, float(j), 20.0) for j in range(0, 300, 5)]
    assert all(a >= b for a, b in itertools.pairwise(jitters))
    rs = [mos_from_r(r / 2) for r in range(-20, 230)]
    assert all(a <= b for a, b in itertools.pairwise(rs))


def test_range_is_1_to_4_5() -> None:
    for loss in (0.0, 0.3, 1.0):
        for delay in (0.0, 500.0, 5000.0):
            assert 1.0 <= mos(loss, 10.0, delay) <= 4.5
    assert mos(1.0, 0.0, 2000.0) == 1.0
    assert mos_from_r(120.0) == 4.5


@pytest.mark.parametrize(
    "args",
    [(-0.1, 0.0, 0.0), (1.5, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, -5.0), (math.nan, 0.0, 0.0)],
)
def test_rejects_bad_inputs(args: tuple[float, float, float]) -> None:
    with pytest.raises(ValueError):
        mos(*args)


def test_rejects_unknown_codec() -> None:
    with pytest.raises(ValueError, match="unknown codec 'opus'"):
        mos(0.0, 0.0, 0.0, codec="opus")
