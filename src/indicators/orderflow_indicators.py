"""Order-flow indicators over a trade tape, finite everywhere.

A tape is three equal-length 1-D arrays: ``price``, ``amount`` (base-asset size, >= 0) and
``side`` (+1 buyer-initiated, -1 seller-initiated; any other value, NaN included, counts as
neither). Timestamps, where needed, are epoch seconds in non-decreasing order. Non-finite
amounts count as 0, non-finite prices are forward-filled. Every data-dependent division goes
through :mod:`src.utils.safe_operations`.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from src.indicators._common import FloatArray, as_series, clean_price, clean_volume, same_length
from src.utils.safe_operations import DEFAULT_RATIO, finite_or, safe_divide, safe_pct_change

__all__ = [
    "aggressor_ratio",
    "buy_sell_ratio",
    "buy_sell_volumes",
    "cumulative_volume_delta",
    "delta_price_divergence",
    "large_trade_share",
    "signed_volume",
    "trade_imbalance",
    "trade_intensity",
]


def _side(side: npt.ArrayLike) -> FloatArray:
    s = as_series(side, "side")
    # Only exact +-1 count; anything else (0, NaN, garbage) is neither buy nor sell.
    return np.where(s == 1.0, 1.0, 0.0) - np.where(s == -1.0, 1.0, 0.0)


def signed_volume(amount: npt.ArrayLike, side: npt.ArrayLike) -> FloatArray:
    """Per-trade ``amount * side`` (buys positive, sells negative, unknown side 0)."""
    a, s = clean_volume(amount, "amount"), _side(side)
    same_length(amount=a, side=s)
    return a * s


def buy_sell_volumes(amount: npt.ArrayLike, side: npt.ArrayLike) -> tuple[float, float]:
    """Total (buy, sell) volume of the tape; (0.0, 0.0) for an empty tape."""
    a, s = clean_volume(amount, "amount"), _side(side)
    same_length(amount=a, side=s)
    buy = float(np.dot(a, s > 0.0)) if a.size else 0.0
    sell = float(np.dot(a, s < 0.0)) if a.size else 0.0
    return finite_or(buy, 0.0), finite_or(sell, 0.0)  # type: ignore[return-value]


def cumulative_volume_delta(amount: npt.ArrayLike, side: npt.ArrayLike) -> FloatArray:
    """CVD: running sum of signed volume (same length as the tape; empty tape -> empty)."""
    return finite_or(np.cumsum(signed_volume(amount, side)), 0.0)


def buy_sell_ratio(amount: npt.ArrayLike, side: npt.ArrayLike) -> float:
    """Buy volume / sell volume; neutral 1.0 when there is no sell volume (or no trades)."""
    buy, sell = buy_sell_volumes(amount, side)
    return safe_divide(buy, sell, DEFAULT_RATIO)  # type: ignore[return-value]


def trade_imbalance(amount: npt.ArrayLike, side: npt.ArrayLike) -> float:
    """``(buy - sell) / (buy + sell)`` in [-1, 1]; neutral 0.0 without volume."""
    buy, sell = buy_sell_volumes(amount, side)
    return min(1.0, max(-1.0, safe_divide(buy - sell, buy + sell, 0.0)))  # type: ignore[type-var]


def aggressor_ratio(side: npt.ArrayLike) -> float:
    """Share of sided trades that were buyer-initiated, in [0, 1]; neutral 0.5 without trades."""
    s = _side(side)
    buys = float(np.count_nonzero(s > 0.0))
    sells = float(np.count_nonzero(s < 0.0))
    return safe_divide(buys, buys + sells, 0.5)  # type: ignore[return-value]


def large_trade_share(amount: npt.ArrayLike, threshold: float | None = None, quantile: float = 0.9) -> float:
    """Share of volume from trades with ``amount > threshold``, in [0, 1]; neutral 0.0.

    Without ``threshold`` the tape's own ``quantile`` of trade sizes is used, so a tape of
    equal-sized trades has no large trades.
    """
    a = clean_volume(amount, "amount")
    if a.size == 0:
        return 0.0
    if threshold is None:
        threshold = float(np.quantile(a, min(1.0, max(0.0, quantile))))
    large = float(np.dot(a, a > threshold))
    share = safe_divide(large, float(np.sum(a)), 0.0)
    return min(1.0, max(0.0, finite_or(share, 0.0)))  # type: ignore[type-var]


def delta_price_divergence(
    price: npt.ArrayLike, amount: npt.ArrayLike, side: npt.ArrayLike, scale_pct: float = 1.0
) -> float:
    """Flow imbalance minus the price move it should have caused, in [-2, 2]; neutral 0.0.

    ``trade_imbalance - tanh(pct_change(last, first) / scale_pct)``: positive means buyers
    dominate while price lags (bullish divergence), negative the opposite.
    """
    p = clean_price(price, "price")
    same_length(price=p, amount=as_series(amount, "amount"), side=as_series(side, "side"))
    if p.size < 2:
        return 0.0
    move = safe_divide(safe_pct_change(float(p[-1]), float(p[0])), scale_pct, 0.0)
    return trade_imbalance(amount, side) - math.tanh(move)  # type: ignore[arg-type]


def trade_intensity(timestamp: npt.ArrayLike, amount: npt.ArrayLike, window: float = 60.0) -> FloatArray:
    """Volume per second over the trailing ``window`` seconds ending at each trade.

    Trade ``i`` counts trades with ``timestamp > t_i - window`` up to and including ``i``.
    Unsorted timestamps are processed in time order and returned in input order.
    Neutral 0.0 for an empty tape or a non-positive window.
    """
    t = clean_price(timestamp, "timestamp")
    a = clean_volume(amount, "amount")
    n = same_length(timestamp=t, amount=a)
    if n == 0:
        return np.zeros(0)
    order = None
    if n > 1 and bool(np.any(t[1:] < t[:-1])):
        order = np.argsort(t, kind="stable")
        t, a = t[order], a[order]
    csum = np.concatenate(([0.0], np.cumsum(a)))
    start = np.searchsorted(t, t - window, side="right")
    vol = csum[1:] - csum[start]
    out = finite_or(safe_divide(vol, float(window), 0.0), 0.0)
    if order is not None:
        unsorted = np.empty_like(out)
        unsorted[order] = out
        out = unsorted
    return out
