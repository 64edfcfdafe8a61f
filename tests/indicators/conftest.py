"""Fixtures shared by the indicator tests: a small random market and degenerate inputs."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def market():
    rng = np.random.default_rng(7)
    n = 300
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    high = close * (1.0 + rng.random(n) * 0.01)
    low = close * (1.0 - rng.random(n) * 0.01)
    volume = rng.random(n) * 1000.0
    return high, low, close, volume


DEGENERATE_HLCV = {
    "empty": (np.array([]),) * 4,
    "one_bar": (np.array([10.0]), np.array([9.0]), np.array([9.5]), np.array([5.0])),
    "flat_zero_volume": (np.full(30, 5.0), np.full(30, 5.0), np.full(30, 5.0), np.zeros(30)),
    "nan_everywhere": (np.full(20, np.nan),) * 4,
    "nan_holes": (
        np.array([np.nan, 10.0, np.nan, 11.0, np.inf]),
        np.array([9.0, np.nan, 9.5, np.nan, 10.0]),
        np.array([9.5, 9.8, np.nan, 10.5, -np.inf]),
        np.array([1.0, np.nan, 2.0, np.inf, 3.0]),
    ),
}


@pytest.fixture(params=sorted(DEGENERATE_HLCV))
def degenerate(request):
    return DEGENERATE_HLCV[request.param]
