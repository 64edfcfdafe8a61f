from __future__ import annotations

import numpy as np
import pytest

from src.indicators import volume_indicators as vi

H = np.array([10.0, 11.0, 12.0, 11.0])
L = np.array([8.0, 9.0, 10.0, 9.0])
C = np.array([9.0, 10.0, 11.0, 9.0])
V = np.array([100.0, 200.0, 0.0, 100.0])


def test_vwap_hand_computed():
    tp = (H + L + C) / 3.0  # 9, 10, 11, 9.666..
    expected = np.cumsum(tp * V) / np.cumsum(V)
    np.testing.assert_allclose(vi.vwap(H, L, C, V), expected)


def test_vwap_neutral_is_typical_price_without_volume():
    np.testing.assert_allclose(vi.vwap(H, L, C, np.zeros(4)), (H + L + C) / 3.0)


def test_obv_ta_lib_convention():
    close = [10.0, 11.0, 11.0, 9.0, 12.0]
    vol = [5.0, 3.0, 7.0, 2.0, 1.0]
    np.testing.assert_array_equal(vi.obv(close, vol), [5.0, 8.0, 8.0, 6.0, 7.0])


def test_ad_hand_computed():
    # CLV: (9-8)-(10-9)=0 ->0; (10-9)-(11-10)=0 ->0; v=0 ->0; (9-9)-(11-9)=-2 /2 = -1 -> -100
    np.testing.assert_allclose(vi.accumulation_distribution(H, L, C, V), [0.0, 0.0, 0.0, -100.0])
    np.testing.assert_allclose(vi.accumulation_distribution([2.0], [1.0], [2.0], [10.0]), [10.0])


def test_cmf_hand_computed_and_warmup():
    out = vi.chaikin_money_flow(H, L, C, V, period=2)
    # window [2,3]: mfv = 0*0 + (-1*100) ; vol = 0 + 100
    np.testing.assert_allclose(out, [0.0, 0.0, 0.0, -1.0])


def test_mfi_hand_computed():
    high = np.array([3.0, 4.0, 5.0, 4.0, 6.0])
    low = high - 2.0
    close = high - 1.0
    vol = np.array([1.0, 1.0, 1.0, 1.0, 1.0])
    tp = close  # symmetric bars: typical price == close
    out = vi.money_flow_index(high, low, close, vol, period=2)
    # bar 2: up 3, up 4 -> 100 ; bar 3: up 4, down 3 -> 4/7 ; bar 4: down 3, up 5 -> 5/8
    np.testing.assert_allclose(out, [50.0, 50.0, 100.0, 100 * tp[2] / (tp[2] + tp[3]), 62.5])


def test_vpt_and_relative_volume():
    np.testing.assert_allclose(
        vi.volume_price_trend([10.0, 11.0, 0.0, 5.0], [1.0, 10.0, 3.0, 4.0]), [0.0, 1.0, 1.0 - 3.0, 1.0 - 3.0]
    )
    np.testing.assert_allclose(
        vi.relative_volume([1.0, 3.0, 4.0, 0.0, 0.0, 2.0], period=2), [1.0, 1.0, 2.0, 0.0, 0.0, 1.0]
    )


ALL = {
    "vwap": (vi.vwap, None),
    "obv": (lambda h, lo, c, v: vi.obv(c, v), 0.0),
    "ad": (vi.accumulation_distribution, 0.0),
    "cmf": (vi.chaikin_money_flow, 0.0),
    "mfi": (vi.money_flow_index, 50.0),
    "vpt": (lambda h, lo, c, v: vi.volume_price_trend(c, v), 0.0),
    "rvol": (lambda h, lo, c, v: vi.relative_volume(v), 1.0),
}


@pytest.mark.parametrize("name", sorted(ALL))
def test_degenerate_inputs_are_finite(name, degenerate):
    fn, _ = ALL[name]
    out = fn(*degenerate)
    assert out.shape == np.shape(degenerate[0])
    assert out.dtype == np.float64
    assert np.all(np.isfinite(out))


@pytest.mark.parametrize("name", sorted(ALL))
def test_flat_zero_volume_is_neutral(name):
    fn, neutral = ALL[name]
    flat = np.full(30, 5.0)
    out = fn(flat, flat, flat, np.zeros(30))
    np.testing.assert_array_equal(out, np.full(30, 5.0 if neutral is None else neutral))


@pytest.mark.parametrize("name", sorted(ALL))
def test_random_market_bounds(name, market):
    out = ALL[name][0](*market)
    assert np.all(np.isfinite(out))
    if name == "cmf":
        assert np.all(np.abs(out) <= 1.0)
    if name == "mfi":
        assert np.all((out >= 0.0) & (out <= 100.0))


def test_length_mismatch_and_shape_errors():
    with pytest.raises(ValueError, match="lengths differ"):
        vi.vwap([1.0, 2.0], [1.0], [1.0, 2.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="1-D"):
        vi.obv(np.ones((2, 2)), np.ones((2, 2)))
    with pytest.raises(ValueError, match="period"):
        vi.money_flow_index(H, L, C, V, period=0)


# --------------------------------------------------------------------------- bitwise references


def _bits(a):
    return np.asarray(a, dtype=np.float64).view(np.uint64)


def _ref_rolling_sum(x, period):
    cs = np.cumsum(x)
    out = cs.copy()
    out[period:] = cs[period:] - cs[:-period]
    return out


@pytest.fixture(params=["positive", "negative_volume_and_ties"])
def wide_market(request):
    rng = np.random.default_rng(11)
    n = 2000
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    high = close * (1.0 + rng.random(n) * 0.01)
    low = close * (1.0 - rng.random(n) * 0.01)
    volume = rng.random(n) * 1000.0
    if request.param != "positive":
        close = np.round(close, 1)
        high, low = np.maximum(high, close), np.minimum(low, close)
        high[::50] = low[::50] = close[::50]
        volume = rng.normal(size=n) * 100.0
        volume[::7] = 0.0
    return high, low, close, volume


def test_obv_matches_sign_cumsum_bitwise(wide_market):
    _, _, c, v = wide_market
    expected = np.concatenate(([v[0]], np.sign(np.diff(c)) * v[1:])).cumsum()
    assert np.array_equal(_bits(vi.obv(c, v)), _bits(expected))


def test_ad_matches_reference_bitwise(wide_market):
    h, lo, c, v = wide_market
    clv = np.zeros_like(c)
    rng = h - lo
    ok = np.abs(rng) >= 1e-10
    clv[ok] = (((c - lo) - h) + c)[ok] / rng[ok]
    assert np.array_equal(_bits(vi.accumulation_distribution(h, lo, c, v)), _bits(np.cumsum(clv * v)))


@pytest.mark.parametrize("period", [1, 3, 14, 5000])
def test_mfi_matches_reference_bitwise(wide_market, period):
    h, lo, c, v = wide_market
    tp = ((h + lo) + c) / 3.0
    mf = tp * v
    direction = np.diff(tp)
    up = np.concatenate(([0.0], mf[1:] * (direction > 0.0)))
    down = np.concatenate(([0.0], mf[1:] * (direction < 0.0)))
    pos = _ref_rolling_sum(up, period)
    total = _ref_rolling_sum(down, period) + pos
    with np.errstate(all="ignore"):
        raw = (pos * 100.0) / total
    expected = np.where((np.abs(total) >= 1e-10) & np.isfinite(raw), raw, 50.0)
    expected[:period] = 50.0
    expected = np.clip(expected, 0.0, 100.0)
    assert np.array_equal(_bits(vi.money_flow_index(h, lo, c, v, period)), _bits(expected))


def test_vwap_matches_reference_bitwise(wide_market):
    h, lo, c, v = wide_market
    tp = ((h + lo) + c) / 3.0
    cv = np.cumsum(v)
    with np.errstate(all="ignore"):
        raw = np.cumsum(tp * v) / cv
    expected = np.where((np.abs(cv) >= 1e-10) & np.isfinite(raw), raw, tp)
    assert np.array_equal(_bits(vi.vwap(h, lo, c, v)), _bits(expected))


def test_outputs_do_not_alias_inputs(wide_market):
    h, lo, c, v = wide_market
    before = [x.copy() for x in wide_market]
    outs = [
        vi.vwap(h, lo, c, v),
        vi.obv(c, v),
        vi.accumulation_distribution(h, lo, c, v),
        vi.money_flow_index(h, lo, c, v),
        vi.chaikin_money_flow(h, lo, c, v),
    ]
    for out in outs:
        assert not any(np.shares_memory(out, x) for x in wide_market)
    for x, y in zip(wide_market, before, strict=True):
        assert np.array_equal(x, y)
