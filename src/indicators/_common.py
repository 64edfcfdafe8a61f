"""Shared input validation and vectorised building blocks for the indicator modules.

Everything here returns float64 arrays and is free of data-dependent division (the
indicator modules route those through :mod:`src.utils.safe_operations`).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from src.utils.safe_operations import finite_or, safe_divide

FloatArray = npt.NDArray[np.float64]

__all__ = [
    "FloatArray",
    "as_series",
    "check_period",
    "clean_price",
    "clean_volume",
    "ewm_wilder",
    "finite_result",
    "linear_recurrence",
    "rolling_max",
    "rolling_min",
    "rolling_sum",
    "same_length",
]


def as_series(x: npt.ArrayLike, name: str) -> FloatArray:
    """Return ``x`` as a 1-D float64 array (no copy for float64 input); ValueError otherwise."""
    try:
        arr = np.asarray(x)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name}: not a numeric 1-D array ({exc})") from None
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name}: expected numeric values, got dtype {arr.dtype}")
    return arr if arr.dtype == np.float64 else arr.astype(np.float64)


def same_length(**arrays: FloatArray) -> int:
    """Return the common length of ``arrays``; ValueError naming the lengths if they differ."""
    lengths = {name: arr.shape[0] for name, arr in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"input lengths differ: {lengths}")
    return next(iter(lengths.values()), 0)


def check_period(period: int, name: str = "period") -> int:
    """Validate a window length (int >= 1)."""
    if isinstance(period, bool) or not isinstance(period, int | np.integer) or period < 1:
        raise ValueError(f"{name} must be an int >= 1, got {period!r}")
    return int(period)


def _all_finite(x: FloatArray) -> bool:
    # One NaN-propagating reduction instead of an isfinite pass + temporary; a sum that merely
    # overflows sends us to the exact (slower) path, never the wrong way.
    with np.errstate(all="ignore"):
        return math.isfinite(float(np.add.reduce(x))) if x.size else True


def clean_price(x: npt.ArrayLike, name: str = "price") -> FloatArray:
    """1-D float64 prices with NaN/inf replaced by the previous finite value.

    Leading non-finite values take the first finite value; an all-non-finite series becomes 0.
    Returns the input unchanged (no copy) when it is already finite float64.
    """
    arr = as_series(x, name)
    if _all_finite(arr):
        return arr
    ok = np.isfinite(arr)
    if not ok.any():
        return np.zeros_like(arr)
    idx = np.where(ok, np.arange(arr.size), 0)
    np.maximum.accumulate(idx, out=idx)
    out = arr[idx]
    first = int(np.argmax(ok))
    out[:first] = arr[first]
    return out


def clean_volume(x: npt.ArrayLike, name: str = "volume") -> FloatArray:
    """1-D float64 volumes with NaN/inf replaced by 0 (no copy when already finite)."""
    arr = as_series(x, name)
    if _all_finite(arr):
        return arr
    return np.where(np.isfinite(arr), arr, 0.0)


def finite_result(x: FloatArray, default: float) -> FloatArray:
    """``finite_or(x, default)`` for an array the caller owns: ``x`` itself when already finite.

    Same values and same fallback counting as :func:`finite_or` (which copies); the common
    all-finite case costs one reduction instead of a copy.
    """
    if _all_finite(x):
        return x
    return finite_or(x, default)  # type: ignore[return-value]


def rolling_sum(x: FloatArray, period: int) -> FloatArray:
    """Trailing window sums: ``out[i] = sum(x[max(0, i - period + 1): i + 1])``."""
    csum = np.cumsum(x)
    if period >= csum.size:
        return csum
    # cumsum[i] - cumsum[i - period], written to a fresh array: no copy of the subtrahend
    out = np.empty_like(csum)
    out[:period] = csum[:period]
    np.subtract(csum[period:], csum[:-period], out=out[period:])
    return out


def _window_view(x: FloatArray, period: int) -> FloatArray:
    # Pad with the first value so warm-up windows cover only the bars seen so far.
    padded = np.concatenate((np.full(period - 1, x[0]), x))
    return np.lib.stride_tricks.sliding_window_view(padded, period)


def rolling_max(x: FloatArray, period: int) -> FloatArray:
    """Trailing window maximum (expanding during warm-up); empty input gives empty output."""
    if x.size == 0:
        return x.copy()
    return _window_view(x, period).max(axis=1)


def rolling_min(x: FloatArray, period: int) -> FloatArray:
    """Trailing window minimum (expanding during warm-up); empty input gives empty output."""
    if x.size == 0:
        return x.copy()
    return _window_view(x, period).min(axis=1)


# Precision budget of the blocked scan: in-block weights span at most this factor.
_BLOCK_WEIGHT_SPAN = 1024.0
# Terms weighted below this relative factor cannot change a float64 result.
_NEGLIGIBLE = 2.0**-60


def _doubling_scan(x: FloatArray, a: float, horizon: int) -> FloatArray:
    """Hillis-Steele scan of ``y[i] = a*y[i-1] + x[i]`` truncated to ``horizon`` lags."""
    y = x.copy()
    step, power = 1, a
    while step < min(horizon, y.size):
        shifted = y[:-step] * power
        y[step:] += shifted
        step, power = step * 2, power * power
    return y


def linear_recurrence(x: FloatArray, a: float) -> FloatArray:
    """Vectorised ``y[0] = x[0]; y[i] = a * y[i-1] + x[i]`` for ``0 <= a < 1``.

    Blocked prefix scan: each block of ``B`` values is solved with one weighted cumulative
    sum (weights span at most ``_BLOCK_WEIGHT_SPAN``, so relative error stays ~1e-13), the
    block carries form the same recurrence with factor ``a**B`` (solved recursively) and are
    broadcast back. Python-level iterations are O(log n), never O(n).
    """
    n = x.size
    if n == 0 or a == 0.0:
        return x.copy()
    log_a = math.log(a)
    horizon = math.ceil(math.log(_NEGLIGIBLE) * safe_divide(1.0, log_a, 0.0, 0.0)) + 1
    block = max(1, math.floor(math.log(_BLOCK_WEIGHT_SPAN) * safe_divide(-1.0, log_a, 0.0, 0.0)) + 1)
    if horizon <= 64 or n <= 2 * block or block < 8:
        return _doubling_scan(x, a, horizon)
    nblocks = math.ceil(safe_divide(n, block))
    padded = np.zeros(nblocks * block)
    padded[:n] = x
    mat = padded.reshape(nblocks, block)
    k = np.arange(block, dtype=np.float64)
    mat *= np.power(a, -k)
    np.cumsum(mat, axis=1, out=mat)
    mat *= np.power(a, k)
    carry = linear_recurrence(mat[:, -1].copy(), a**block)
    mat[1:] += np.multiply.outer(carry[:-1], np.power(a, k + 1.0))
    return mat.reshape(-1)[:n].copy()


def ewm_wilder(x: FloatArray, period: int, seed: float) -> FloatArray:
    """Wilder smoothing ``y[0] = seed; y[i] = y[i-1] + (x[i] - y[i-1]) / period`` over ``x[1:]``."""
    a = safe_divide(period - 1.0, float(period), 0.0)
    b = 1.0 - a
    drive = x * b
    drive[0] = seed
    return linear_recurrence(drive, a)
