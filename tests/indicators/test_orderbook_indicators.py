from __future__ import annotations

import numpy as np
import pytest

from src.indicators import orderbook_indicators as ob

BIDS = np.array([[99.0, 2.0], [98.0, 3.0], [97.0, 5.0]])
ASKS = np.array([[101.0, 1.0], [102.0, 4.0], [110.0, 10.0]])


def test_top_of_book():
    assert ob.mid_price(BIDS, ASKS) == 100.0
    assert ob.spread(BIDS, ASKS) == 2.0
    assert ob.spread_bps(BIDS, ASKS) == 200.0
    # (99 * 1 + 101 * 2) / 3
    assert ob.microprice(BIDS, ASKS) == pytest.approx(301.0 / 3.0)


def test_depth_measures():
    assert ob.order_book_imbalance(BIDS, ASKS, depth=2) == 0.0  # 5 vs 5
    assert ob.order_book_imbalance(BIDS, ASKS, depth=3) == pytest.approx((10 - 15) / 25)
    assert ob.depth_ratio(BIDS, ASKS, depth=1) == 2.0
    np.testing.assert_array_equal(ob.cumulative_depth(BIDS), [2.0, 5.0, 10.0])
    assert ob.liquidity_within_bps(BIDS, ASKS, bps=200.0) == (5.0, 5.0)
    assert ob.weighted_mid(BIDS, ASKS, depth=2) == pytest.approx(
        ((99 * 2 + 98 * 3) / 5 + (101 + 102 * 4) / 5) / 2
    )


def test_walk_the_book():
    avg, filled = ob.execution_price(ASKS, 3.0)
    assert (avg, filled) == (pytest.approx((101 + 2 * 102) / 3), 3.0)
    assert ob.execution_price(ASKS, 100.0)[1] == 15.0
    assert ob.slippage_bps(BIDS, ASKS, 3.0, side=1) == pytest.approx(((101 + 204) / 3 - 101) / 101 * 1e4)
    assert ob.slippage_bps(BIDS, ASKS, 1.0, side=-1) == 0.0
    assert ob.market_impact_bps(BIDS, ASKS, 1.0, side=-1) == pytest.approx(100.0)
    assert ob.absorption_ratio(ASKS, 7.5, depth=2) == 1.5


def test_book_pressure_sign():
    # 2 bid vs 1 ask at the touch, deeper levels decay away
    assert 0.0 < ob.book_pressure(BIDS, ASKS) <= 1.0
    heavy_asks = ASKS * [1.0, 10.0]
    assert -1.0 <= ob.book_pressure(BIDS, heavy_asks) < 0.0


EMPTY = np.zeros((0, 2))
CASES = {
    "empty": (EMPTY, EMPTY),
    "empty_lists": ([], []),
    "bids_only": (BIDS, EMPTY),
    "asks_only": (EMPTY, ASKS),
    "garbage_rows": (np.array([[np.nan, 1.0], [-1.0, 2.0], [5.0, 0.0]]), np.array([[np.inf, 1.0]])),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_degenerate_books_are_neutral(case):
    bids, asks = CASES[case]
    assert ob.spread(bids, asks) == 0.0
    assert ob.spread_bps(bids, asks) == 0.0
    assert ob.order_book_imbalance(bids, asks) == 0.0
    assert ob.depth_ratio(bids, asks) == 1.0
    assert ob.book_pressure(bids, asks) == 0.0
    for value in (
        ob.mid_price(bids, asks),
        ob.microprice(bids, asks),
        ob.weighted_mid(bids, asks),
        ob.slippage_bps(bids, asks, 5.0),
        ob.market_impact_bps(bids, asks, 5.0, side=-1),
        ob.absorption_ratio(bids, 3.0),
        *ob.liquidity_within_bps(bids, asks),
    ):
        assert np.isfinite(value)
    assert ob.mid_price(bids, asks) in (0.0, 99.0, 101.0)


def test_bad_shapes():
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        ob.mid_price(np.ones((3, 3)), ASKS)
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        ob.spread(BIDS, np.ones(4))
    with pytest.raises(ValueError, match="depth"):
        ob.order_book_imbalance(BIDS, ASKS, depth=0)
