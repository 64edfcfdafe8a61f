"""Price-structure indicators: ranges, volatility, pivots, swings; finite everywhere.

Inputs are equal-length 1-D array-likes (NaN/inf prices forward-filled). Outputs are float64
arrays of the input length unless stated. Every data-dependent division goes through
:mod:`src.utils.safe_operations`.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from src.indicators._common import (
    FloatArray,
    check_period,
    clean_price,
    ewm_wilder,
    rolling_max,
    rolling_min,
    same_length,
)
from src.utils.safe_operations import finite_or, safe_divide, safe_sqrt

__all__ = [
    "average_true_range",
    "donchian_channel",
    "pivot_points",
    "range_position",
    "support_resistance",
    "swing_highs",
    "swing_lows",
    "trend_strength",
    "true_range",
]


def _hlc(
    high: npt.ArrayLike, low: npt.ArrayLike, close: npt.ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    h, lo, c = clean_price(high, "high"), clean_price(low, "low"), clean_price(close, "close")
    same_length(high=h, low=lo, close=c)
    return h, lo, c


def true_range(high: npt.ArrayLike, low: npt.ArrayLike, close: npt.ArrayLike) -> FloatArray:
    """``max(h - l, |h - prev_close|, |l - prev_close|)``; bar 0 (no previous close) is ``h - l``."""
    h, lo, c = _hlc(high, low, close)
    tr = h - lo
    if tr.size > 1:
        prev = c[:-1]
        gap = np.abs(h[1:] - prev)
        np.maximum(tr[1:], gap, out=tr[1:])
        np.subtract(lo[1:], prev, out=gap)
        np.abs(gap, out=gap)
        np.maximum(tr[1:], gap, out=tr[1:])
    return finite_or(tr, 0.0)


def average_true_range(
    high: npt.ArrayLike, low: npt.ArrayLike, close: npt.ArrayLike, period: int = 14
) -> FloatArray:
    """Wilder ATR as TA-Lib: seed at bar ``period`` = mean of TR[1..period], then
    ``atr = (atr_prev * (period - 1) + tr) / period``.

    Neutral value 0.0 for the first ``period`` bars (TA-Lib's lookback). The recursion runs as
    a vectorised blocked scan (:func:`src.indicators._common.linear_recurrence`).
    """
    period = check_period(period)
    tr = true_range(high, low, close)
    out = np.zeros(tr.size)
    if tr.size <= period:
        return out
    seed = safe_divide(float(np.sum(tr[1 : period + 1])), float(period), 0.0)
    out[period:] = ewm_wilder(tr[period:], period, seed)
    return finite_or(out, 0.0)


def donchian_channel(
    high: npt.ArrayLike, low: npt.ArrayLike, period: int = 20
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(upper, lower, middle): highest high / lowest low of the last ``period`` bars and their mean.

    During warm-up the window covers the bars seen so far.
    """
    period = check_period(period)
    h, lo = clean_price(high, "high"), clean_price(low, "low")
    same_length(high=h, low=lo)
    upper, lower = rolling_max(h, period), rolling_min(lo, period)
    return upper, lower, (upper + lower) * 0.5


def range_position(
    high: npt.ArrayLike, low: npt.ArrayLike, close: npt.ArrayLike, period: int = 20
) -> FloatArray:
    """Where the close sits in its Donchian channel, in [0, 1]; neutral 0.5 on a flat channel."""
    h, lo, c = _hlc(high, low, close)
    upper, lower, _ = donchian_channel(h, lo, period)
    pos = safe_divide(c - lower, upper - lower, 0.5)
    return np.clip(pos, 0.0, 1.0)


def pivot_points(high: npt.ArrayLike, low: npt.ArrayLike, close: npt.ArrayLike) -> dict[str, FloatArray]:
    """Classic floor pivots of each bar (apply to the *previous* bar to trade the next one).

    Keys ``pivot, r1, s1, r2, s2, r3, s3``: ``P = (H + L + C) / 3``, ``R1 = 2P - L``,
    ``S1 = 2P - H``, ``R2 = P + (H - L)``, ``S2 = P - (H - L)``, ``R3 = H + 2(P - L)``,
    ``S3 = L - 2(H - P)``.
    """
    h, lo, c = _hlc(high, low, close)
    p = (h + lo + c) / 3.0
    rng = h - lo
    return {
        "pivot": p,
        "r1": 2.0 * p - lo,
        "s1": 2.0 * p - h,
        "r2": p + rng,
        "s2": p - rng,
        "r3": h + 2.0 * (p - lo),
        "s3": lo - 2.0 * (h - p),
    }


def _swings(x: FloatArray, left: int, right: int, *, highs: bool) -> npt.NDArray[np.bool_]:
    left, right = check_period(left, "left"), check_period(right, "right")
    n = x.size
    out = np.zeros(n, dtype=bool)
    width = left + right + 1
    if n < width:
        return out
    windows = np.lib.stride_tricks.sliding_window_view(x, width)
    centre = x[left : n - right]
    if highs:
        # strict on the left, non-strict on the right: a plateau marks its first bar only
        ok = (centre > windows[:, :left].max(axis=1)) & (centre >= windows[:, left + 1 :].max(axis=1))
    else:
        ok = (centre < windows[:, :left].min(axis=1)) & (centre <= windows[:, left + 1 :].min(axis=1))
    out[left : n - right] = ok
    return out


def swing_highs(high: npt.ArrayLike, left: int = 2, right: int = 2) -> npt.NDArray[np.bool_]:
    """Boolean mask of bars whose high exceeds the ``left`` bars before and the ``right`` after."""
    return _swings(clean_price(high, "high"), left, right, highs=True)


def swing_lows(low: npt.ArrayLike, left: int = 2, right: int = 2) -> npt.NDArray[np.bool_]:
    """Boolean mask of bars whose low undercuts the ``left`` bars before and the ``right`` after."""
    return _swings(clean_price(low, "low"), left, right, highs=False)


def support_resistance(
    high: npt.ArrayLike,
    low: npt.ArrayLike,
    close: npt.ArrayLike,
    left: int = 2,
    right: int = 2,
) -> tuple[float, float]:
    """(support, resistance) for the last close from swing levels.

    Support is the highest swing low at or below the close, resistance the lowest swing high
    at or above it; without such a swing the series low / high is used. (0.0, 0.0) if empty.
    """
    h, lo, c = _hlc(high, low, close)
    if c.size == 0:
        return 0.0, 0.0
    last = float(c[-1])
    lows = lo[swing_lows(lo, left, right)]
    highs = h[swing_highs(h, left, right)]
    below, above = lows[lows <= last], highs[highs >= last]
    support = float(below.max()) if below.size else min(float(lo.min()), last)
    resistance = float(above.min()) if above.size else max(float(h.max()), last)
    return support, resistance


def trend_strength(
    high: npt.ArrayLike, low: npt.ArrayLike, close: npt.ArrayLike, period: int = 14
) -> FloatArray:
    """Net close move over ``period`` bars in units of ``ATR * sqrt(period)`` (random-walk scale).

    ~0 for noise, |x| > 1 for a directional move. Neutral 0.0 for the first ``period`` bars
    and wherever ATR is 0.
    """
    period = check_period(period)
    h, lo, c = _hlc(high, low, close)
    atr = average_true_range(h, lo, c, period)
    out = np.zeros(c.size)
    if c.size > period:
        scale = atr[period:] * safe_sqrt(float(period))
        out[period:] = safe_divide(c[period:] - c[:-period], scale, 0.0)
    return finite_or(out, 0.0)
