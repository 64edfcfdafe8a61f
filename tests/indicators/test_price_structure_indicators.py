from __future__ import annotations

import numpy as np
import pytest

from src.indicators import price_structure_indicators as ps

H = np.array([10.0, 12.0, 11.0, 15.0, 13.0])
L = np.array([8.0, 9.0, 7.0, 12.0, 12.5])
C = np.array([9.0, 11.0, 8.0, 14.0, 13.0])


def test_true_range_hand_computed():
    # bar0 h-l=2; bar1 max(3,|12-9|,|9-9|)=3; bar2 max(4,0,4)=4; bar3 max(3,7,4)=7; bar4 max(.5,1,1.5)=1.5
    np.testing.assert_array_equal(ps.true_range(H, L, C), [2.0, 3.0, 4.0, 7.0, 1.5])


def test_atr_wilder_hand_computed():
    out = ps.average_true_range(H, L, C, period=2)
    seed = (3.0 + 4.0) / 2.0
    nxt = (seed * 1.0 + 7.0) / 2.0
    np.testing.assert_allclose(out, [0.0, 0.0, seed, nxt, (nxt + 1.5) / 2.0])


def test_atr_matches_python_loop_on_long_series(market):
    h, lo, c, _ = market
    h, lo, c = np.tile(h, 20), np.tile(lo, 20), np.tile(c, 20)
    tr = ps.true_range(h, lo, c)
    period = 14
    expected = np.zeros(tr.size)
    expected[period] = tr[1 : period + 1].mean()
    for i in range(period + 1, tr.size):
        expected[i] = (expected[i - 1] * (period - 1) + tr[i]) / period
    np.testing.assert_allclose(ps.average_true_range(h, lo, c, period), expected, rtol=1e-12)


def test_donchian_and_range_position():
    upper, lower, mid = ps.donchian_channel(H, L, period=2)
    np.testing.assert_array_equal(upper, [10.0, 12.0, 12.0, 15.0, 15.0])
    np.testing.assert_array_equal(lower, [8.0, 8.0, 7.0, 7.0, 12.0])
    np.testing.assert_array_equal(mid, (upper + lower) / 2.0)
    pos = ps.range_position(H, L, C, period=2)
    np.testing.assert_allclose(pos, [0.5, 0.75, 0.2, 7.0 / 8.0, 1.0 / 3.0])


def test_pivot_points_classic():
    piv = ps.pivot_points([12.0], [8.0], [10.0])
    assert piv["pivot"][0] == 10.0
    assert (piv["r1"][0], piv["s1"][0]) == (12.0, 8.0)
    assert (piv["r2"][0], piv["s2"][0]) == (14.0, 6.0)
    assert (piv["r3"][0], piv["s3"][0]) == (16.0, 4.0)


def test_swings_and_support_resistance():
    high = np.array([1.0, 2.0, 5.0, 2.0, 1.0, 3.0, 4.0, 3.0, 2.0])
    low = high - 0.5
    np.testing.assert_array_equal(np.flatnonzero(ps.swing_highs(high, 2, 2)), [2, 6])
    np.testing.assert_array_equal(np.flatnonzero(ps.swing_lows(low, 2, 2)), [4])
    support, resistance = ps.support_resistance(high, low, high - 0.2)
    assert support == 0.5
    assert resistance == 4.0


def test_trend_strength_sign_and_neutral():
    n = 40
    up = np.arange(n, dtype=float) + 100.0
    ts = ps.trend_strength(up + 0.5, up - 0.5, up, period=5)
    assert np.all(ts[:5] == 0.0)
    assert np.all(ts[6:] > 0.0)
    flat = np.full(n, 3.0)
    np.testing.assert_array_equal(ps.trend_strength(flat, flat, flat), np.zeros(n))


NEUTRAL = {
    "true_range": (ps.true_range, 0.0),
    "atr": (ps.average_true_range, 0.0),
    "range_position": (ps.range_position, 0.5),
    "trend_strength": (ps.trend_strength, 0.0),
}


@pytest.mark.parametrize("name", sorted(NEUTRAL))
def test_degenerate_finite_and_neutral(name, degenerate):
    fn, neutral = NEUTRAL[name]
    h, lo, c, _ = degenerate
    out = fn(h, lo, c)
    assert out.shape == np.shape(h)
    assert np.all(np.isfinite(out))
    flat = np.full(25, 2.0)
    np.testing.assert_array_equal(fn(flat, flat, flat), np.full(25, neutral))


def test_degenerate_structure_helpers(degenerate):
    h, lo, c, _ = degenerate
    upper, lower, _ = ps.donchian_channel(h, lo)
    assert np.all(np.isfinite(upper)) and np.all(np.isfinite(lower))
    assert all(np.all(np.isfinite(v)) for v in ps.pivot_points(h, lo, c).values())
    assert all(np.isfinite(ps.support_resistance(h, lo, c)))


def test_errors():
    with pytest.raises(ValueError, match="lengths differ"):
        ps.true_range([1.0], [1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="period"):
        ps.average_true_range(H, L, C, period=-1)
