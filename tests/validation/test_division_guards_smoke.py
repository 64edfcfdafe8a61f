"""On-host smoke gate for the division guards: numpy + pytest + src only, well under 5 s.

Run from the release root: ``python -m pytest tests/validation``.
"""

from __future__ import annotations

import importlib
import math
import warnings

import numpy as np
import pytest

from src.indicators import price_structure_indicators as ps
from src.indicators import volume_indicators as vi
from src.indicators.scoring import analyze_symbol
from src.utils.safe_operations import count_fallbacks, safe_divide

INDICATOR_MODULES = (
    "src.indicators.volume_indicators",
    "src.indicators.orderflow_indicators",
    "src.indicators.orderbook_indicators",
    "src.indicators.price_structure_indicators",
    "src.indicators.scoring",
)


@pytest.fixture(autouse=True)
def _warnings_are_errors():
    # The production venv may run without pyproject.toml's filterwarnings: enforce it here.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def test_scalar_division_by_zero_returns_default():
    assert safe_divide(10, 0) == 0.0
    assert type(safe_divide(10, 0)) is float
    assert safe_divide(10, 4) == 2.5
    assert safe_divide(1.0, math.nan, default=-1.0) == -1.0


def test_vectorised_division():
    out = safe_divide([10, 20], [2, 0])
    assert isinstance(out, np.ndarray)
    np.testing.assert_array_equal(out, [5.0, 0.0])
    out = safe_divide(np.array([1.0, np.inf, 1e300]), np.array([1e-320, 1.0, 1e-300]))
    np.testing.assert_array_equal(out, [0.0, 0.0, 0.0])


def test_fallback_counter():
    with count_fallbacks() as counter:
        safe_divide(1, 0)
        safe_divide([1, 2], [0, 1])
    assert counter.count == 2


@pytest.mark.parametrize("name", INDICATOR_MODULES)
def test_indicator_modules_import(name):
    assert importlib.import_module(name).__all__


def _degenerate_bars(n):
    flat = np.full(n, 100.0)
    return {
        "timestamp": np.arange(n, dtype=float),
        "open": flat,
        "high": flat,
        "low": flat,
        "close": flat,
        "volume": np.zeros(n),
    }


EMPTY_TRADES = {
    "timestamp": np.array([]),
    "price": np.array([]),
    "amount": np.array([]),
    "side": np.array([]),
}


@pytest.mark.parametrize("n_bars", [0, 1, 50])
@pytest.mark.parametrize("book", ["empty", "one_sided"])
def test_every_family_runs_on_degenerate_data(n_bars, book):
    bids = np.array([[99.0, 1.0]]) if book == "one_sided" else np.zeros((0, 2))
    out = analyze_symbol(_degenerate_bars(n_bars), EMPTY_TRADES, bids, np.zeros((0, 2)))
    assert out["score"] == 50.0
    families = {key.split(".", 1)[0] for key in out if key != "score"}
    assert families == {"volume", "orderflow", "orderbook", "price_structure"}
    assert all(type(v) is float and math.isfinite(v) for v in out.values())


def test_indicators_on_nan_input():
    nan = np.full(10, np.nan)
    for out in (
        vi.vwap(nan, nan, nan, nan),
        vi.money_flow_index(nan, nan, nan, nan),
        ps.average_true_range(nan, nan, nan),
        ps.range_position(nan, nan, nan),
    ):
        assert np.all(np.isfinite(out))
