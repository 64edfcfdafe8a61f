from __future__ import annotations

import math

import numpy as np
import pytest

from src.indicators import orderflow_indicators as of

PRICE = np.array([100.0, 101.0, 100.5, 102.0])
AMOUNT = np.array([2.0, 1.0, 3.0, 4.0])
SIDE = np.array([1, -1, 1, 1])
TS = np.array([0.0, 10.0, 30.0, 70.0])


def test_hand_computed_tape():
    np.testing.assert_array_equal(of.cumulative_volume_delta(AMOUNT, SIDE), [2.0, 1.0, 4.0, 8.0])
    assert of.buy_sell_volumes(AMOUNT, SIDE) == (9.0, 1.0)
    assert of.buy_sell_ratio(AMOUNT, SIDE) == 9.0
    assert of.trade_imbalance(AMOUNT, SIDE) == pytest.approx(0.8)
    assert of.aggressor_ratio(SIDE) == 0.75
    assert of.large_trade_share(AMOUNT, threshold=2.5) == 0.7
    move = math.tanh(2.0)  # +2 % over the tape at scale 1 %
    assert of.delta_price_divergence(PRICE, AMOUNT, SIDE) == pytest.approx(0.8 - move)


def test_trade_intensity_window():
    # window 60 s: trade 3 at t=70 sees trades at 30 and 70 (10 is not > 10) -> 7 / 60
    np.testing.assert_allclose(of.trade_intensity(TS, AMOUNT, 60.0), [2 / 60, 3 / 60, 6 / 60, 7 / 60])
    shuffled = np.array([3, 0, 2, 1])
    np.testing.assert_allclose(
        of.trade_intensity(TS[shuffled], AMOUNT[shuffled], 60.0), np.array([7, 2, 6, 3]) / 60
    )
    np.testing.assert_array_equal(of.trade_intensity(TS, AMOUNT, 0.0), np.zeros(4))


@pytest.mark.parametrize(
    ("price", "amount", "side"),
    [
        (np.array([]), np.array([]), np.array([])),
        (np.array([5.0]), np.array([0.0]), np.array([1])),
        (np.full(4, 5.0), np.zeros(4), np.array([1, -1, 1, -1])),
        (np.full(3, np.nan), np.full(3, np.nan), np.full(3, np.nan)),
        (np.array([2.0, 2.0]), np.array([1.0, 1.0]), np.array([0, 0])),
    ],
)
def test_degenerate_tapes_are_neutral(price, amount, side):
    ts = np.arange(price.size, dtype=float)
    assert np.all(of.cumulative_volume_delta(amount, side) == 0.0)
    assert of.buy_sell_ratio(amount, side) == 1.0
    assert of.trade_imbalance(amount, side) == 0.0
    assert of.large_trade_share(amount) == 0.0
    assert of.delta_price_divergence(price, amount, side) == pytest.approx(0.0)
    intensity = of.trade_intensity(ts, amount)
    assert np.all(np.isfinite(intensity))
    if not np.nansum(amount):
        assert np.all(intensity == 0.0)
    assert of.aggressor_ratio(side) in (0.5, 1.0, 0.0)


def test_one_sided_flow_and_bounds():
    assert of.trade_imbalance([1.0, 2.0], [1, 1]) == 1.0
    assert of.trade_imbalance([1.0, 2.0], [-1, -1]) == -1.0
    assert of.buy_sell_ratio([1.0], [1]) == 1.0  # no sells: neutral, not infinite


def test_errors():
    with pytest.raises(ValueError, match="lengths differ"):
        of.cumulative_volume_delta([1.0, 2.0], [1])
    with pytest.raises(ValueError, match="1-D"):
        of.trade_imbalance(np.ones((2, 2)), np.ones((2, 2)))
