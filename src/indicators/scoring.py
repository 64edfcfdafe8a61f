"""Confluence score: one 0-100 number per symbol from the four indicator families (50 = neutral).

Each family contributes the mean of a few directional components mapped into [-1, 1]
(+1 bullish, -1 bearish, 0 neutral); the score is ``50 + 50 * mean(family components)``.
Degenerate inputs make every component neutral, hence a score of exactly 50.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from src.indicators import orderbook_indicators as ob
from src.indicators import orderflow_indicators as of
from src.indicators import price_structure_indicators as ps
from src.indicators import volume_indicators as vi
from src.indicators._common import as_series, clean_price, clean_volume, same_length
from src.utils.safe_operations import (
    DEFAULT_SCORE,
    clamp_score,
    finite_or,
    safe_divide,
    safe_mean,
    safe_pct_change,
)

__all__ = ["BAR_KEYS", "FAMILIES", "TRADE_KEYS", "analyze_symbol", "confluence_score"]

BAR_KEYS = ("timestamp", "open", "high", "low", "close", "volume")
TRADE_KEYS = ("timestamp", "price", "amount", "side")
FAMILIES = ("volume", "orderflow", "orderbook", "price_structure")

# Scale (in percent) at which the close-vs-VWAP distance saturates the volume component.
_VWAP_SCALE_PCT = 1.0
_LIQUIDITY_BPS = 50.0


def _columns(data: Mapping[str, npt.ArrayLike], keys: tuple[str, ...], what: str) -> dict[str, np.ndarray]:
    missing = [k for k in keys if k not in data]
    if missing:
        raise ValueError(f"{what} is missing keys {missing}")
    cols = {k: as_series(data[k], f"{what}[{k!r}]") for k in keys}
    same_length(**cols)
    return cols


def _last(x: np.ndarray, default: float = 0.0) -> float:
    return float(x[-1]) if x.size else default


def _volume_family(bars: dict[str, np.ndarray]) -> dict[str, float]:
    h, lo, c, v = bars["high"], bars["low"], bars["close"], bars["volume"]
    vw = _last(vi.vwap(h, lo, c, v))
    last_close = _last(clean_price(c))
    return {
        "vwap": vw,
        "vwap_distance_pct": safe_pct_change(last_close, vw) if vw else 0.0,
        "obv": _last(vi.obv(c, v)),
        "ad": _last(vi.accumulation_distribution(h, lo, c, v)),
        "cmf": _last(vi.chaikin_money_flow(h, lo, c, v)),
        "mfi": _last(vi.money_flow_index(h, lo, c, v), DEFAULT_SCORE),
        "vpt": _last(vi.volume_price_trend(c, v)),
        "relative_volume": _last(vi.relative_volume(v), 1.0),
    }


def _orderflow_family(trades: dict[str, np.ndarray]) -> dict[str, float]:
    p, a, s, t = trades["price"], trades["amount"], trades["side"], trades["timestamp"]
    buy, sell = of.buy_sell_volumes(a, s)
    return {
        "cvd": buy - sell,
        "buy_volume": buy,
        "sell_volume": sell,
        "buy_sell_ratio": of.buy_sell_ratio(a, s),
        "trade_imbalance": of.trade_imbalance(a, s),
        "aggressor_ratio": of.aggressor_ratio(s),
        "large_trade_share": of.large_trade_share(a),
        "delta_price_divergence": of.delta_price_divergence(p, a, s),
        "trade_intensity": _last(of.trade_intensity(t, a)),
    }


def _orderbook_family(
    bids: np.ndarray, asks: np.ndarray, order_size: float, buy_volume: float, sell_volume: float
) -> dict[str, float]:
    bid_liq, ask_liq = ob.liquidity_within_bps(bids, asks, _LIQUIDITY_BPS)
    return {
        "mid_price": ob.mid_price(bids, asks),
        "spread": ob.spread(bids, asks),
        "spread_bps": ob.spread_bps(bids, asks),
        "microprice": ob.microprice(bids, asks),
        "weighted_mid": ob.weighted_mid(bids, asks),
        "imbalance": ob.order_book_imbalance(bids, asks),
        "depth_ratio": ob.depth_ratio(bids, asks),
        "bid_liquidity_50bps": bid_liq,
        "ask_liquidity_50bps": ask_liq,
        "slippage_buy_bps": ob.slippage_bps(bids, asks, order_size, side=1),
        "slippage_sell_bps": ob.slippage_bps(bids, asks, order_size, side=-1),
        "market_impact_buy_bps": ob.market_impact_bps(bids, asks, order_size, side=1),
        "market_impact_sell_bps": ob.market_impact_bps(bids, asks, order_size, side=-1),
        "book_pressure": ob.book_pressure(bids, asks),
        "absorption_bid": ob.absorption_ratio(bids, sell_volume),
        "absorption_ask": ob.absorption_ratio(asks, buy_volume),
    }


def _price_structure_family(bars: dict[str, np.ndarray]) -> dict[str, float]:
    h, lo, c = bars["high"], bars["low"], bars["close"]
    upper, lower, _ = ps.donchian_channel(h, lo)
    support, resistance = ps.support_resistance(h, lo, c)
    pivots = ps.pivot_points(h, lo, c)
    return {
        "true_range": _last(ps.true_range(h, lo, c)),
        "atr": _last(ps.average_true_range(h, lo, c)),
        "donchian_upper": _last(upper),
        "donchian_lower": _last(lower),
        "range_position": _last(ps.range_position(h, lo, c), 0.5),
        "pivot": _last(pivots["pivot"]),
        "r1": _last(pivots["r1"]),
        "s1": _last(pivots["s1"]),
        "support": support,
        "resistance": resistance,
        "trend_strength": _last(ps.trend_strength(h, lo, c)),
    }


def _order_size(trades: dict[str, np.ndarray], bids: np.ndarray, asks: np.ndarray) -> float:
    # Probe size for slippage: ten average trades, or the best level when there is no tape.
    amounts = clean_volume(trades["amount"])
    if amounts.size:
        return 10.0 * safe_mean(amounts)
    tops = [float(side[0, 1]) for side in (bids, asks) if side.shape[0]]
    return max(tops, default=0.0)


def confluence_score(values: Mapping[str, float]) -> dict[str, float]:
    """Family components in [-1, 1] and the 0-100 score from an :func:`analyze_symbol` dict.

    Guarantees: every output is finite; each ``<family>.score`` is in [0, 100] and ``score``
    is their mean; all-neutral inputs give exactly 50.0.
    """
    comps = {
        "volume": (
            values["volume.cmf"],
            (values["volume.mfi"] - DEFAULT_SCORE) * 0.02,
            math.tanh(safe_divide(values["volume.vwap_distance_pct"], _VWAP_SCALE_PCT)),
        ),
        "orderflow": (
            values["orderflow.trade_imbalance"],
            2.0 * values["orderflow.aggressor_ratio"] - 1.0,
        ),
        "orderbook": (values["orderbook.imbalance"], values["orderbook.book_pressure"]),
        "price_structure": (
            2.0 * values["price_structure.range_position"] - 1.0,
            math.tanh(values["price_structure.trend_strength"]),
        ),
    }
    out: dict[str, float] = {}
    for family, parts in comps.items():
        direction = min(1.0, max(-1.0, safe_mean(np.asarray(parts, dtype=np.float64))))
        out[f"{family}.score"] = clamp_score(DEFAULT_SCORE + 50.0 * direction)
    out["score"] = clamp_score(safe_mean(np.fromiter(out.values(), dtype=np.float64), DEFAULT_SCORE))
    return out


def analyze_symbol(
    bars: Mapping[str, npt.ArrayLike],
    trades: Mapping[str, npt.ArrayLike],
    bids: npt.ArrayLike,
    asks: npt.ArrayLike,
) -> dict[str, float]:
    """Latest value of every indicator plus the confluence ``score`` for one symbol.

    ``bars``: ``timestamp`` (epoch s), ``open``, ``high``, ``low``, ``close``, ``volume``;
    ``trades``: ``timestamp`` (epoch s), ``price``, ``amount``, ``side`` (+1 buy / -1 sell);
    ``bids``/``asks``: ``(n, 2)`` ``(price, size)`` best first.

    Returns a flat ``{"<family>.<indicator>": float}`` dict (families: volume, orderflow,
    orderbook, price_structure; each also has ``<family>.score``) plus ``"score"`` in
    [0, 100], 50 = neutral. Guarantees: every value is a finite Python float; degenerate but
    well-shaped data (no bars, no trades, empty/one-sided book, flat prices, zero volume,
    NaNs) never raises and yields neutral values. Missing keys, mismatched column lengths or
    a book not shaped ``(n, 2)`` raise ``ValueError``.
    """
    bar_cols = _columns(bars, BAR_KEYS, "bars")
    trade_cols = _columns(trades, TRADE_KEYS, "trades")
    b, a = ob.book_side(bids, "bids"), ob.book_side(asks, "asks")
    flow = _orderflow_family(trade_cols)
    families = {
        "volume": _volume_family(bar_cols),
        "orderflow": flow,
        "orderbook": _orderbook_family(
            b, a, _order_size(trade_cols, b, a), flow["buy_volume"], flow["sell_volume"]
        ),
        "price_structure": _price_structure_family(bar_cols),
    }
    result = {
        f"{family}.{name}": float(finite_or(float(value), 0.0))
        for family, values in families.items()
        for name, value in values.items()
    }
    result.update(confluence_score(result))
    return result
