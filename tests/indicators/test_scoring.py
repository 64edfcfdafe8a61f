from __future__ import annotations

import math
import time

import numpy as np
import pytest

from src.indicators.scoring import FAMILIES, analyze_symbol
from src.utils.safe_operations import count_fallbacks


def make_inputs(n_bars=1000, n_trades=2000, levels=50, seed=0, drift=0.0):
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(drift, 0.001, n_bars)))
    bars = {
        "timestamp": np.arange(n_bars) * 60.0,
        "open": close,
        "high": close * (1 + rng.random(n_bars) * 0.002),
        "low": close * (1 - rng.random(n_bars) * 0.002),
        "close": close,
        "volume": rng.random(n_bars) * 10,
    }
    trades = {
        "timestamp": np.sort(rng.random(n_trades) * 3600.0),
        "price": close[-1] + rng.normal(0, 0.05, n_trades),
        "amount": rng.random(n_trades),
        "side": rng.choice([-1, 1], n_trades),
    }
    steps = np.arange(levels) * 0.01
    bids = np.column_stack([close[-1] - 0.01 - steps, rng.random(levels) * 5])
    asks = np.column_stack([close[-1] + 0.01 + steps, rng.random(levels) * 5])
    return bars, trades, bids, asks


def _empty(keys):
    return {k: np.array([]) for k in keys}


BAR_KEYS = ("timestamp", "open", "high", "low", "close", "volume")
TRADE_KEYS = ("timestamp", "price", "amount", "side")


def test_contract_keys_and_types():
    out = analyze_symbol(*make_inputs())
    assert "score" in out
    assert 0.0 <= out["score"] <= 100.0
    for key, value in out.items():
        assert type(value) is float, key
        assert math.isfinite(value), key
        if key != "score":
            assert key.split(".", 1)[0] in FAMILIES
    for fam in FAMILIES:
        assert f"{fam}.score" in out


def test_degenerate_inputs_score_exactly_neutral():
    flat = np.full(50, 10.0)
    bars = dict.fromkeys(BAR_KEYS, flat) | {"timestamp": np.arange(50.0), "volume": np.zeros(50)}
    for trades, bids, asks in [
        (_empty(TRADE_KEYS), [], []),
        (_empty(TRADE_KEYS), np.array([[9.9, 1.0]]), np.zeros((0, 2))),
    ]:
        out = analyze_symbol(bars, trades, bids, asks)
        assert out["score"] == 50.0
        assert all(math.isfinite(v) for v in out.values())
    out = analyze_symbol(_empty(BAR_KEYS), _empty(TRADE_KEYS), [], [])
    assert out["score"] == 50.0


def test_nan_inputs_never_raise():
    bars, trades, bids, asks = make_inputs(n_bars=100, n_trades=50)
    bars["close"][::7] = np.nan
    bars["volume"][::5] = np.inf
    trades["amount"][::3] = np.nan
    trades["side"] = trades["side"].astype(float)
    trades["side"][::4] = np.nan
    bids[::2, 1] = np.nan
    out = analyze_symbol(bars, trades, bids, asks)
    assert all(math.isfinite(v) for v in out.values())


def test_score_direction():
    up = analyze_symbol(*make_inputs(drift=0.002))
    down = analyze_symbol(*make_inputs(drift=-0.002))
    assert up["price_structure.score"] > 50.0 > down["price_structure.score"]


def test_malformed_inputs_raise_value_error():
    bars, trades, bids, asks = make_inputs(n_bars=20, n_trades=10)
    with pytest.raises(ValueError, match="missing"):
        analyze_symbol({k: v for k, v in bars.items() if k != "close"}, trades, bids, asks)
    bars["close"] = bars["close"][:-1]
    with pytest.raises(ValueError, match="lengths differ"):
        analyze_symbol(bars, trades, bids, asks)
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        analyze_symbol(make_inputs(20, 10)[0], trades, np.ones((3, 3)), asks)


def test_fast_enough_and_counts_fallbacks():
    inputs = make_inputs()
    analyze_symbol(*inputs)
    t0 = time.perf_counter()
    for _ in range(20):
        analyze_symbol(*inputs)
    per_call = (time.perf_counter() - t0) / 20
    assert per_call < 0.010  # contract: well under 10 ms (typically ~3 ms)
    with count_fallbacks() as counter:
        analyze_symbol(_empty(BAR_KEYS), _empty(TRADE_KEYS), [], [])
    assert counter.count > 0
