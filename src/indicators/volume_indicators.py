"""Volume indicators (TA-Lib definitions where TA-Lib has them), finite everywhere.

All functions accept 1-D array-likes of equal length and return float64 arrays of that
length. NaN/inf prices are forward-filled and NaN/inf volumes count as 0 (see
:mod:`src.indicators._common`). Every data-dependent division goes through
:mod:`src.utils.safe_operations`.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from src.indicators._common import (
    FloatArray,
    check_period,
    clean_price,
    clean_volume,
    finite_result,
    rolling_sum,
    same_length,
)
from src.utils.safe_operations import DEFAULT_RATIO, DEFAULT_SCORE, finite_or, safe_divide

__all__ = [
    "accumulation_distribution",
    "chaikin_money_flow",
    "close_location_value",
    "money_flow_index",
    "obv",
    "relative_volume",
    "volume_price_trend",
    "vwap",
]


def _hlcv(
    high: npt.ArrayLike, low: npt.ArrayLike, close: npt.ArrayLike, volume: npt.ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    h, lo, c = clean_price(high, "high"), clean_price(low, "low"), clean_price(close, "close")
    v = clean_volume(volume)
    same_length(high=h, low=lo, close=c, volume=v)
    return h, lo, c, v


def typical_price(high: FloatArray, low: FloatArray, close: FloatArray) -> FloatArray:
    """``(high + low + close) / 3`` (TA-Lib TYPPRICE)."""
    tp = high + low
    tp += close
    tp /= 3.0
    return tp


def vwap(high: npt.ArrayLike, low: npt.ArrayLike, close: npt.ArrayLike, volume: npt.ArrayLike) -> FloatArray:
    """Cumulative VWAP of the typical price: ``cumsum(tp * v) / cumsum(v)``.

    Neutral value: the bar's typical price while no volume has traded yet.
    """
    h, lo, c, v = _hlcv(high, low, close, volume)
    tp = typical_price(h, lo, c)
    pv = np.multiply(tp, v)
    np.cumsum(pv, out=pv)
    cv = np.cumsum(v)
    return finite_result(safe_divide(pv, cv, tp), 0.0)


def obv(close: npt.ArrayLike, volume: npt.ArrayLike) -> FloatArray:
    """On-balance volume as TA-Lib: ``obv[0] = v[0]``; +v on up close, -v on down, 0 if unchanged."""
    c, v = clean_price(close, "close"), clean_volume(volume)
    n = same_length(close=c, volume=v)
    out = np.empty(n)
    if n == 0:
        return out
    out[0] = v[0]
    # np.sign in place is ~6x slower than into another buffer (no SIMD loop for aliased
    # operands), so the price change gets its own temporary
    np.sign(np.subtract(c[1:], c[:-1]), out=out[1:])
    out[1:] *= v[1:]
    return np.cumsum(out, out=out)


def close_location_value(high: FloatArray, low: FloatArray, close: FloatArray) -> FloatArray:
    """CLV ``((c - l) - (h - c)) / (h - l)`` in [-1, 1]; 0 (neutral) on flat bars."""
    rng = high - low
    num = close - low
    num -= high
    num += close
    return safe_divide(num, rng, 0.0)


def accumulation_distribution(
    high: npt.ArrayLike, low: npt.ArrayLike, close: npt.ArrayLike, volume: npt.ArrayLike
) -> FloatArray:
    """Chaikin A/D line (TA-Lib AD): ``cumsum(CLV * volume)``; flat bars add 0."""
    h, lo, c, v = _hlcv(high, low, close, volume)
    mfv = close_location_value(h, lo, c)
    mfv *= v
    return finite_result(np.cumsum(mfv, out=mfv), 0.0)


def chaikin_money_flow(
    high: npt.ArrayLike,
    low: npt.ArrayLike,
    close: npt.ArrayLike,
    volume: npt.ArrayLike,
    period: int = 20,
) -> FloatArray:
    """CMF: ``sum(CLV * v) / sum(v)`` over ``period`` bars, in [-1, 1].

    Neutral value 0.0 for the first ``period - 1`` bars and where the window has no volume.
    """
    period = check_period(period)
    h, lo, c, v = _hlcv(high, low, close, volume)
    mfv = close_location_value(h, lo, c) * v
    out = safe_divide(rolling_sum(mfv, period), rolling_sum(v, period), 0.0)
    out[: period - 1] = 0.0
    return np.clip(finite_or(out, 0.0), -1.0, 1.0)


def money_flow_index(
    high: npt.ArrayLike,
    low: npt.ArrayLike,
    close: npt.ArrayLike,
    volume: npt.ArrayLike,
    period: int = 14,
) -> FloatArray:
    """MFI as TA-Lib: ``100 * pos / (pos + neg)`` of typical-price money flow over ``period``.

    Neutral value 50.0 for the first ``period`` bars (TA-Lib's lookback) and where the
    window carries no money flow.
    """
    period = check_period(period)
    h, lo, c, v = _hlcv(high, low, close, volume)
    n = c.size
    tp = typical_price(h, lo, c)
    mf = tp * v
    up = np.zeros(n)
    down = np.zeros(n)
    if n > 1:
        direction = np.subtract(tp[1:], tp[:-1])
        np.multiply(mf[1:], direction > 0.0, out=up[1:])
        np.multiply(mf[1:], direction < 0.0, out=down[1:])
        del direction
    del mf, tp
    pos = rolling_sum(up, period)
    del up
    total = rolling_sum(down, period)
    del down
    total += pos
    pos *= 100.0
    out = safe_divide(pos, total, DEFAULT_SCORE)
    out[:period] = DEFAULT_SCORE
    out = finite_result(out, DEFAULT_SCORE)
    return np.clip(out, 0.0, 100.0, out=out)


def volume_price_trend(close: npt.ArrayLike, volume: npt.ArrayLike) -> FloatArray:
    """VPT: ``cumsum(v[i] * (c[i] - c[i-1]) / c[i-1])``, starting at 0; a zero previous close adds 0."""
    c, v = clean_price(close, "close"), clean_volume(volume)
    n = same_length(close=c, volume=v)
    out = np.zeros(n)
    if n > 1:
        out[1:] = safe_divide(c[1:] - c[:-1], c[:-1], 0.0)
        out[1:] *= v[1:]
    return finite_or(np.cumsum(out, out=out), 0.0)


def relative_volume(volume: npt.ArrayLike, period: int = 20) -> FloatArray:
    """Volume over the mean volume of the preceding ``period`` bars.

    Neutral value 1.0 for the first ``period`` bars and where the preceding mean is 0.
    """
    period = check_period(period)
    v = clean_volume(volume)
    n = v.size
    out = np.full(n, DEFAULT_RATIO)
    if n > period:
        prior_mean = rolling_sum(v, period)[period - 1 : n - 1] * safe_divide(1.0, period)
        out[period:] = safe_divide(v[period:], prior_mean, DEFAULT_RATIO)
    return finite_or(out, DEFAULT_RATIO)
