"""Order-book indicators, finite on any well-shaped book (empty and one-sided included).

A side of the book is an ``(n, 2)`` array of ``(price, size)`` rows, best level first
(bids descending, asks ascending). Rows with a non-finite or non-positive price or size are
dropped; an empty list/array is an empty side; any other shape raises ``ValueError``.
Prices default to 0.0 and bps/ratios to their neutral values when a side is missing. Every
data-dependent division goes through :mod:`src.utils.safe_operations`.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from src.indicators._common import FloatArray, check_period
from src.utils.safe_operations import DEFAULT_RATIO, finite_or, safe_divide, safe_ratio

__all__ = [
    "absorption_ratio",
    "book_pressure",
    "book_side",
    "cumulative_depth",
    "depth_ratio",
    "execution_price",
    "liquidity_within_bps",
    "market_impact_bps",
    "microprice",
    "mid_price",
    "order_book_imbalance",
    "side_depth",
    "slippage_bps",
    "spread",
    "spread_bps",
    "weighted_mid",
]

_BPS = 10_000.0


def book_side(levels: npt.ArrayLike, name: str = "levels") -> FloatArray:
    """Validated ``(n, 2)`` float64 side with invalid rows dropped; ValueError on a bad shape."""
    try:
        arr = np.asarray(levels, dtype=np.float64)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name}: not a numeric (n, 2) array ({exc})") from None
    if arr.size == 0:
        return np.zeros((0, 2))
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name}: expected shape (n, 2) of (price, size), got {arr.shape}")
    with np.errstate(invalid="ignore"):
        ok = (arr > 0.0) & (arr < math.inf)
    keep = ok[:, 0] & ok[:, 1]
    return arr if bool(keep.all()) else arr[keep]


def _best(side: FloatArray) -> float:
    return float(side[0, 0]) if side.shape[0] else 0.0


def side_depth(levels: npt.ArrayLike, depth: int = 10) -> float:
    """Total size of the best ``depth`` levels (0.0 for an empty side)."""
    side = book_side(levels)
    return finite_or(float(np.sum(side[: check_period(depth, "depth"), 1])), 0.0)  # type: ignore[return-value]


def mid_price(bids: npt.ArrayLike, asks: npt.ArrayLike) -> float:
    """``(best_bid + best_ask) / 2``; the present side's best price if one-sided; 0.0 if empty."""
    b, a = _best(book_side(bids, "bids")), _best(book_side(asks, "asks"))
    if b and a:
        return (b + a) * 0.5
    return b or a


def spread(bids: npt.ArrayLike, asks: npt.ArrayLike) -> float:
    """``best_ask - best_bid``; neutral 0.0 unless both sides are present."""
    b, a = _best(book_side(bids, "bids")), _best(book_side(asks, "asks"))
    return finite_or(a - b, 0.0) if (a and b) else 0.0  # type: ignore[return-value]


def spread_bps(bids: npt.ArrayLike, asks: npt.ArrayLike) -> float:
    """Spread relative to mid in basis points; neutral 0.0 unless both sides are present."""
    return safe_divide(spread(bids, asks) * _BPS, mid_price(bids, asks), 0.0)  # type: ignore[return-value]


def microprice(bids: npt.ArrayLike, asks: npt.ArrayLike) -> float:
    """Size-weighted mid ``(bid * ask_size + ask * bid_size) / (bid_size + ask_size)``.

    Lies between best bid and best ask; falls back to :func:`mid_price` if a side is missing.
    """
    b, a = book_side(bids, "bids"), book_side(asks, "asks")
    mid = mid_price(b, a)
    if not (b.shape[0] and a.shape[0]):
        return mid
    (bp, bs), (ap, az) = b[0], a[0]
    return safe_divide(float(bp * az + ap * bs), float(bs + az), mid)  # type: ignore[return-value]


def order_book_imbalance(bids: npt.ArrayLike, asks: npt.ArrayLike, depth: int = 10) -> float:
    """``(bid_size - ask_size) / (bid_size + ask_size)`` over ``depth`` levels, in [-1, 1].

    Neutral 0.0 for an empty or one-sided book.
    """
    bv, av = _depths(bids, asks, depth)
    return min(1.0, max(-1.0, safe_divide(bv - av, bv + av, 0.0)))  # type: ignore[type-var]


def _depths(bids: npt.ArrayLike, asks: npt.ArrayLike, depth_levels: int) -> tuple[float, float]:
    # A one-sided book is a broken snapshot, not an infinite imbalance: report it as neutral.
    b, a = book_side(bids, "bids"), book_side(asks, "asks")
    if not (b.shape[0] and a.shape[0]):
        return 0.0, 0.0
    return side_depth(b, depth_levels), side_depth(a, depth_levels)


def depth_ratio(bids: npt.ArrayLike, asks: npt.ArrayLike, depth: int = 10) -> float:
    """Bid size / ask size over ``depth`` levels; neutral 1.0 for an empty or one-sided book."""
    bv, av = _depths(bids, asks, depth)
    return safe_ratio(bv, av, DEFAULT_RATIO)  # type: ignore[return-value]


def cumulative_depth(levels: npt.ArrayLike) -> FloatArray:
    """Running total of size from the best level outwards (empty side -> empty array)."""
    return np.cumsum(book_side(levels)[:, 1])


def _distance_bps(prices: FloatArray, mid: float) -> FloatArray:
    return np.abs(safe_divide(prices - mid, mid, math.inf)) * _BPS


def liquidity_within_bps(bids: npt.ArrayLike, asks: npt.ArrayLike, bps: float = 50.0) -> tuple[float, float]:
    """(bid size, ask size) resting within ``bps`` basis points of mid; (0, 0) for an empty book."""
    b, a = book_side(bids, "bids"), book_side(asks, "asks")
    mid = mid_price(b, a)
    bid_liq = float(np.sum(b[:, 1], where=_distance_bps(b[:, 0], mid) <= bps))
    ask_liq = float(np.sum(a[:, 1], where=_distance_bps(a[:, 0], mid) <= bps))
    return finite_or(bid_liq, 0.0), finite_or(ask_liq, 0.0)  # type: ignore[return-value]


def weighted_mid(bids: npt.ArrayLike, asks: npt.ArrayLike, depth: int = 5) -> float:
    """Midpoint of the size-weighted average prices of the top ``depth`` levels of each side.

    Falls back to the present side's weighted price if one-sided, 0.0 for an empty book.
    """
    d = check_period(depth, "depth")
    b, a = book_side(bids, "bids")[:d], book_side(asks, "asks")[:d]
    wb = safe_divide(float(np.dot(b[:, 0], b[:, 1])), float(np.sum(b[:, 1])), 0.0)
    wa = safe_divide(float(np.dot(a[:, 0], a[:, 1])), float(np.sum(a[:, 1])), 0.0)
    if wb and wa:
        return finite_or((wb + wa) * 0.5, 0.0)  # type: ignore[return-value,operator]
    return finite_or(wb or wa, 0.0)  # type: ignore[return-value]


def execution_price(levels: npt.ArrayLike, quantity: float) -> tuple[float, float]:
    """Walk one side of the book for ``quantity``: (average fill price, filled quantity).

    Fills level by level from the best price; if the side is too thin, only the available
    size fills. (0.0, 0.0) for an empty side or a non-positive quantity.
    """
    side = book_side(levels)
    if side.shape[0] == 0 or not quantity > 0.0:
        return 0.0, 0.0
    sizes = side[:, 1]
    before = np.cumsum(sizes) - sizes
    take = np.clip(quantity - before, 0.0, sizes)
    filled = float(np.sum(take))
    avg = safe_divide(float(np.dot(take, side[:, 0])), filled, 0.0)
    return finite_or(avg, 0.0), finite_or(filled, 0.0)  # type: ignore[return-value]


def slippage_bps(bids: npt.ArrayLike, asks: npt.ArrayLike, quantity: float, side: int = 1) -> float:
    """Cost of a market order vs the best price, in bps (>= 0); neutral 0.0 if it cannot fill.

    ``side=+1`` buys from the asks, ``side=-1`` sells into the bids.
    """
    levels = book_side(asks, "asks") if side > 0 else book_side(bids, "bids")
    avg, filled = execution_price(levels, quantity)
    if filled == 0.0:
        return 0.0
    best = _best(levels)
    return max(0.0, safe_divide(abs(avg - best) * _BPS, best, 0.0))  # type: ignore[type-var]


def market_impact_bps(bids: npt.ArrayLike, asks: npt.ArrayLike, quantity: float, side: int = 1) -> float:
    """Distance of the average fill price from mid, in bps (>= 0; includes half the spread).

    Neutral 0.0 when the order cannot fill or the book is empty.
    """
    b, a = book_side(bids, "bids"), book_side(asks, "asks")
    avg, filled = execution_price(a if side > 0 else b, quantity)
    if filled == 0.0:
        return 0.0
    mid = mid_price(b, a)
    return max(0.0, safe_divide(abs(avg - mid) * _BPS, mid, 0.0))  # type: ignore[type-var]


def book_pressure(
    bids: npt.ArrayLike, asks: npt.ArrayLike, depth: int = 10, half_life_bps: float = 10.0
) -> float:
    """Distance-weighted imbalance in [-1, 1] (neutral 0.0).

    Each level's size is weighted by ``0.5 ** (distance_from_mid_bps / half_life_bps)`` so
    liquidity near the touch dominates; then ``(wb - wa) / (wb + wa)``. Neutral 0.0 for an
    empty or one-sided book.
    """
    d = check_period(depth, "depth")
    b, a = book_side(bids, "bids")[:d], book_side(asks, "asks")[:d]
    if not (b.shape[0] and a.shape[0]):
        return 0.0
    mid = mid_price(b, a)
    with np.errstate(all="ignore"):
        wb = float(np.dot(b[:, 1], np.exp2(-safe_divide(_distance_bps(b[:, 0], mid), half_life_bps))))
        wa = float(np.dot(a[:, 1], np.exp2(-safe_divide(_distance_bps(a[:, 0], mid), half_life_bps))))
    wb, wa = finite_or(wb, 0.0), finite_or(wa, 0.0)
    return min(1.0, max(-1.0, safe_divide(wb - wa, wb + wa, 0.0)))  # type: ignore[type-var,operator]


def absorption_ratio(levels: npt.ArrayLike, traded_volume: float, depth: int = 5) -> float:
    """Aggressive volume traded into a side over the size resting on its top ``depth`` levels.

    ``> 1`` means the flow exceeded the visible liquidity (it was absorbed by refills or
    swept the book). Neutral 0.0 when the side is empty or nothing traded.
    """
    resting = side_depth(levels, depth)
    return max(0.0, safe_divide(float(traded_volume), resting, 0.0))  # type: ignore[type-var]
