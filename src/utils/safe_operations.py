"""Division guards: numeric helpers that never raise, never warn and never return NaN/inf.

Every guard has two paths:

* **scalar** - plain Python ``int``/``float`` operands (and ``default``) take a pure-Python
  path that never touches numpy and returns a ``float``;
* **array** - anything else numeric (numpy arrays, numpy scalars, lists, ``bool``...) is
  converted to float64 and handled with a fixed number of vectorised numpy passes; the
  result is a float64 ``ndarray`` (a numpy 0-d input yields a ``float``).

Non-numeric input (strings, ``None``, complex, objects) raises ``TypeError``.

While a :func:`count_fallbacks` block is active in the current thread (or asyncio task),
every guard adds to its counter the number of elements for which it returned the default.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import threading
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "DEFAULT_PERCENTAGE",
    "DEFAULT_RATIO",
    "DEFAULT_SCORE",
    "EPSILON",
    "FallbackCounter",
    "clamp_score",
    "count_fallbacks",
    "finite_or",
    "safe_divide",
    "safe_log",
    "safe_mean",
    "safe_pct_change",
    "safe_percentage",
    "safe_ratio",
    "safe_sqrt",
    "safe_std",
]

EPSILON = 1e-10
DEFAULT_RATIO = 1.0
DEFAULT_PERCENTAGE = 0.0
DEFAULT_SCORE = 50.0

_INF = math.inf
_ZERO = 0.0  # safe_divide's default default: an identity test beats a type test
_PLAIN = (int, float)
_NUMERIC_KINDS = frozenset("biuf")

Numeric = float | int | npt.ArrayLike
FloatOrArray = float | npt.NDArray[np.float64]


# --------------------------------------------------------------------------- fallback counting


@dataclass
class FallbackCounter:
    """Number of elements for which a guard returned its default while this counter was active."""

    count: int = 0


_COUNTERS: ContextVar[tuple[FallbackCounter, ...]] = ContextVar("safe_operations_counters", default=())
# Process-wide number of active counters: the only thing a guard looks at when nobody counts,
# so the uncounted cost is one list index on the fallback path.
_ACTIVE = [0]
_ACTIVE_LOCK = threading.Lock()


@contextlib.contextmanager
def count_fallbacks() -> Iterator[FallbackCounter]:
    """Count guard fallbacks made in the current thread/task while the block runs.

    Guarantees: the yielded counter's ``.count`` grows by exactly the number of elements
    each guard call replaced by its default (scalar call: 1 or 0); calls in other threads
    are not counted; nested blocks each see the fallbacks made inside them.
    """
    counter = FallbackCounter()
    token = _COUNTERS.set((*_COUNTERS.get(), counter))
    with _ACTIVE_LOCK:
        _ACTIVE[0] += 1
    try:
        yield counter
    finally:
        with _ACTIVE_LOCK:
            _ACTIVE[0] -= 1
        _COUNTERS.reset(token)


def _record(n: int) -> None:
    if _ACTIVE[0] and n:
        for counter in _COUNTERS.get():
            counter.count += n


# --------------------------------------------------------------------------- conversion helpers


def _as_float_array(x: object, name: str) -> npt.NDArray[np.float64]:
    """Convert numeric input to float64 without copying float64 arrays; TypeError otherwise."""
    if isinstance(x, np.ndarray):
        arr = x
    else:
        if isinstance(x, str | bytes) or x is None:
            raise TypeError(f"{name} must be numeric, got {type(x).__name__}")
        try:
            arr = np.asarray(x)
        except (ValueError, TypeError) as exc:  # ragged nested lists and the like
            raise TypeError(f"{name} must be numeric array-like: {exc}") from None
    if arr.dtype.kind not in _NUMERIC_KINDS:
        if arr.dtype.kind == "O" and arr.ndim == 0 and isinstance(arr.item(), numbers.Real):
            return np.asarray(float(arr.item()), dtype=np.float64)
        raise TypeError(f"{name} must be numeric (int, float or bool), got dtype {arr.dtype}")
    return arr if arr.dtype == np.float64 else arr.astype(np.float64)


def _result(out: npt.NDArray[np.float64]) -> FloatOrArray:
    return float(out) if out.ndim == 0 else out


def _fill_default(
    out: npt.NDArray[np.float64], bad: npt.NDArray[np.bool_], default: npt.NDArray[np.float64]
) -> None:
    np.copyto(out, default, where=bad)
    if _ACTIVE[0]:
        _record(int(np.count_nonzero(bad)))


# --------------------------------------------------------------------------- division


def _divide_array(
    numerator: object, denominator: object, default: object, epsilon: float, scale: float
) -> FloatOrArray:
    n = _as_float_array(numerator, "numerator")
    d = _as_float_array(denominator, "denominator")
    dflt = _as_float_array(default, "default")
    try:
        shape = np.broadcast_shapes(n.shape, d.shape, dflt.shape)
    except ValueError as exc:
        raise ValueError(f"safe_divide operands do not broadcast: {exc}") from None
    out = np.empty(shape, dtype=np.float64)
    with np.errstate(all="ignore"):
        bad_d = _bad_denominators(d, epsilon)
        # Unmasked division (the fast SIMD loop); unusable positions are overwritten below.
        np.divide(n, d, out=out)
        if scale != 1.0:
            out *= scale
        if bad_d is not None:
            np.copyto(out, dflt, where=bad_d)
        # With the bad denominators replaced, one NaN/inf-propagating reduction proves every
        # remaining quotient finite in the common case; only a failed screen pays for a mask.
        if math.isfinite(float(np.add.reduce(out, axis=None))):
            if bad_d is not None and _ACTIVE[0]:
                _record(int(np.count_nonzero(np.broadcast_to(bad_d, shape))))
            return _result(out)
        bad = np.isfinite(out, out=np.empty(shape, dtype=np.bool_))
        np.logical_not(bad, out=bad)
        if bad_d is not None:
            np.logical_or(bad, bad_d, out=bad)
    _fill_default(out, bad, dflt)
    return _result(out)


def _bad_denominators(d: npt.NDArray[np.float64], epsilon: float) -> npt.NDArray[np.bool_] | None:
    """``None`` if every ``epsilon <= |d| < inf``, else the bool mask of ``|d| < epsilon or inf``.

    NaN denominators need not be flagged (their quotient is NaN and caught afterwards).
    Two cheap reductions settle the common one-signed case; mixed signs cost two bool
    comparisons (1/8 of the memory traffic of an ``|d|`` temporary).
    """
    if d.size == 0:
        return None
    lo = float(np.minimum.reduce(d, axis=None))
    hi = float(np.maximum.reduce(d, axis=None))
    if lo >= epsilon or hi <= -epsilon:  # one-signed, away from zero (NaN fails both)
        if lo > -_INF and hi < _INF:
            return None
        ok = np.empty(d.shape, dtype=np.bool_)
        if lo >= epsilon:
            np.greater_equal(d, epsilon, out=ok)
        else:
            np.less_equal(d, -epsilon, out=ok)
    else:
        ok = np.greater_equal(d, epsilon, out=np.empty(d.shape, dtype=np.bool_))
        ok |= np.less_equal(d, -epsilon)
        if lo > -_INF and hi < _INF:  # finite (NaN fails): only |d| < epsilon can be bad
            if ok.all():
                return None
            return np.logical_not(ok, out=ok)
    ok &= np.isfinite(d)
    return np.logical_not(ok, out=ok)


def _plain_divide(
    numerator: float, denominator: float, default: float, epsilon: float, scale: float
) -> float:
    if -_INF < denominator < _INF and not -epsilon < denominator < epsilon:
        try:
            q = numerator / denominator * scale
        except (ZeroDivisionError, OverflowError):  # epsilon <= 0; int / int beyond float range
            q = _INF
        if q - q == 0.0:
            return q
    _record(1)
    return float(default)


def _divide_general(
    numerator: object, denominator: object, default: object, epsilon: float, scale: float
) -> FloatOrArray:
    """Slow path for everything that is not a plain int/float triple."""
    if (
        isinstance(numerator, numbers.Real)
        and isinstance(denominator, numbers.Real)
        and isinstance(default, numbers.Real)
        and not isinstance(numerator, np.generic | bool)
        and not isinstance(denominator, np.generic | bool)
        and not isinstance(default, np.generic | bool)
    ):
        # Fraction/Decimal-like scalars: reduce to floats, stay off numpy.
        try:
            dflt = float(default)
        except OverflowError:
            dflt = _INF if default > 0 else -_INF
        try:
            n, d = float(numerator), float(denominator)
        except OverflowError:
            _record(1)
            return dflt
        return _plain_divide(n, d, dflt, epsilon, scale)
    return _divide_array(numerator, denominator, default, epsilon, scale)


def safe_divide(
    numerator: Numeric, denominator: Numeric, default: Numeric = _ZERO, epsilon: float = EPSILON
) -> FloatOrArray:
    """Return ``numerator / denominator``, or ``default`` where that is unsafe.

    Guarantees:

    * the result is ``default`` wherever ``|denominator| < epsilon``, either operand is NaN
      or +-inf, or the quotient is not finite; everywhere else it is exactly (bit for bit)
      ``numerator / denominator`` computed in float64 (Python's own ``/`` for int/float pairs);
    * plain Python int/float operands give a ``float`` without touching numpy; arrays and
      array-likes give a float64 ``ndarray`` of the broadcast shape of all three arguments;
    * never raises on numeric input and never emits a numpy ``RuntimeWarning``;
      non-numeric input raises ``TypeError``, non-broadcastable shapes ``ValueError``;
    * the result is finite wherever ``default`` is finite.
    """
    # Fast paths, no numpy (numpy scalars would warn on overflow, so they go the slow way).
    # Each bytecode counts here (the goal is <= 2x a bare ``a / b`` function): exact-type
    # checks, ``default is _ZERO`` before the type test for the usual default, and
    # ``epsilon <= d or d <= -epsilon`` (== ``epsilon <= abs(d)``, NaN fails both) with the
    # rare infinite denominator caught after the division: a finite numerator over +-inf
    # gives a zero quotient, so only ``q == 0`` needs the ``d - d == 0`` look.
    if type(denominator) is float and type(numerator) is float:
        if default is _ZERO or type(default) is float:
            if epsilon <= denominator or denominator <= -epsilon:
                try:
                    q = numerator / denominator
                except ZeroDivisionError:  # only reachable with epsilon <= 0
                    q = _INF
                if q - q == 0.0 and (q or denominator - denominator == 0.0):
                    return q
            if _ACTIVE[0]:
                _record(1)
            return default
    elif (
        type(denominator) is int
        and type(numerator) is int
        and (default is _ZERO or type(default) is float or type(default) is int)
    ):
        # a non-zero int has |d| >= 1: a float/float test of epsilon beats int/float ones
        if denominator and (epsilon <= 1.0 or epsilon <= denominator or denominator <= -epsilon):
            try:
                return numerator / denominator  # int / int: a finite float or OverflowError
            except (ZeroDivisionError, OverflowError):  # epsilon <= 0; beyond float range
                pass
        if _ACTIVE[0]:
            _record(1)
        return float(default)
    return _divide_mixed(numerator, denominator, default, epsilon)


def _divide_mixed(numerator: object, denominator: object, default: object, epsilon: float) -> FloatOrArray:
    """``safe_divide`` for mixed int/float scalars, non-float defaults and everything else."""
    td, tn = type(denominator), type(numerator)
    if (td is int or td is float) and (tn is int or tn is float):
        tf = type(default)
        if tf is float or tf is int:
            if epsilon <= denominator < _INF or -_INF < denominator <= -epsilon:
                try:
                    q = numerator / denominator  # type: ignore[operator]
                except (ZeroDivisionError, OverflowError):  # epsilon <= 0; int beyond float range
                    q = _INF
                if q - q == 0.0:
                    return q
            if _ACTIVE[0]:
                _record(1)
            return float(default)  # type: ignore[arg-type]
    return _divide_general(numerator, denominator, default, epsilon, 1.0)


def safe_ratio(
    numerator: Numeric, denominator: Numeric, default: Numeric = DEFAULT_RATIO, epsilon: float = EPSILON
) -> FloatOrArray:
    """``safe_divide`` with the neutral ratio 1.0 as default (same guarantees)."""
    return safe_divide(numerator, denominator, default, epsilon)


def safe_percentage(
    part: Numeric, whole: Numeric, default: Numeric = DEFAULT_PERCENTAGE, epsilon: float = EPSILON
) -> FloatOrArray:
    """``100 * part / whole`` (computed as ``(part / whole) * 100``), default 0.0 where unsafe.

    Same guarantees as :func:`safe_divide`; a quotient that overflows when scaled also
    yields the default.
    """
    if type(whole) in _PLAIN and type(part) in _PLAIN and type(default) in _PLAIN:
        return _plain_divide(part, whole, default, epsilon, 100.0)
    return _divide_general(part, whole, default, epsilon, 100.0)


def safe_pct_change(
    new: Numeric, old: Numeric, default: Numeric = DEFAULT_PERCENTAGE, epsilon: float = EPSILON
) -> FloatOrArray:
    """Percent change ``100 * (new - old) / old``; ``default`` where ``|old| < epsilon`` or non-finite."""
    if type(new) in _PLAIN and type(old) in _PLAIN:
        return safe_percentage(new - old, old, default, epsilon)
    n = _as_float_array(new, "new")
    o = _as_float_array(old, "old")
    with np.errstate(all="ignore"):
        diff = np.subtract(n, o)
    return safe_percentage(diff, o, default, epsilon)


def finite_or(x: Numeric, default: Numeric = 0.0) -> FloatOrArray:
    """Return ``x`` with every NaN/+-inf replaced by ``default`` (float or float64 array)."""
    if type(x) in _PLAIN and type(default) in _PLAIN:
        try:
            xf = float(x)
        except OverflowError:  # int beyond float range
            xf = _INF
        if xf - xf == 0.0:
            return xf
        _record(1)
        return float(default)
    arr = _as_float_array(x, "x")
    dflt = _as_float_array(default, "default")
    if arr.size and _sum_is_finite(arr) and dflt.ndim <= arr.ndim:
        out = np.array(arr, dtype=np.float64, copy=True)
        if out.shape == np.broadcast_shapes(out.shape, dflt.shape):
            return _result(out)
    shape = np.broadcast_shapes(arr.shape, dflt.shape)
    out = np.array(np.broadcast_to(arr, shape), dtype=np.float64, copy=True)
    _fill_default(out, ~np.isfinite(out), dflt)
    return _result(out)


def clamp_score(
    x: Numeric, lo: float = 0.0, hi: float = 100.0, default: Numeric = DEFAULT_SCORE
) -> FloatOrArray:
    """Clip ``x`` into ``[lo, hi]``; NaN/+-inf become ``default`` (which is returned as given)."""
    if type(x) in _PLAIN and type(default) in _PLAIN:
        xf = finite_or(x, _INF)
        if xf == _INF:
            return float(default)
        return min(max(xf, float(lo)), float(hi))
    out = finite_or(x, np.nan)
    arr = np.asarray(out, dtype=np.float64)
    nan_mask = np.isnan(arr)
    with np.errstate(invalid="ignore"):
        arr = np.clip(arr, lo, hi)
    dflt = _as_float_array(default, "default")
    arr = np.array(np.broadcast_to(arr, np.broadcast_shapes(arr.shape, dflt.shape)), copy=True)
    np.copyto(arr, dflt, where=np.broadcast_to(nan_mask, arr.shape))
    return _result(arr)


def _unary_guard(
    x: Numeric,
    default: Numeric,
    *,
    scalar_ok: Callable[[float], bool],
    scalar_fn: Callable[[float], float],
    ufunc: np.ufunc,
    valid: Callable[[npt.NDArray[np.float64]], npt.NDArray[np.bool_]],
) -> FloatOrArray:
    if type(x) in _PLAIN and type(default) in _PLAIN:
        xf = finite_or(x, math.nan)
        if scalar_ok(xf):
            return scalar_fn(xf)
        if not math.isnan(xf):  # NaN was already counted by finite_or
            _record(1)
        return float(default)
    arr = _as_float_array(x, "x")
    dflt = _as_float_array(default, "default")
    shape = np.broadcast_shapes(arr.shape, dflt.shape)
    out = np.empty(shape, dtype=np.float64)
    with np.errstate(all="ignore"):
        ok = valid(arr)
        ufunc(arr, out=out, where=np.broadcast_to(ok, shape))
        bad = ~np.broadcast_to(ok, shape) | ~np.isfinite(out)
    _fill_default(out, bad, dflt)
    return _result(out)


def safe_log(x: Numeric, default: Numeric = 0.0) -> FloatOrArray:
    """Natural log where ``x`` is finite and > 0, ``default`` elsewhere (finite if default is)."""
    return _unary_guard(
        x,
        default,
        scalar_ok=lambda v: 0.0 < v < _INF,
        scalar_fn=math.log,
        ufunc=np.log,
        valid=lambda a: (a > 0.0) & (a < _INF),
    )


def safe_sqrt(x: Numeric, default: Numeric = 0.0) -> FloatOrArray:
    """Square root where ``x`` is finite and >= 0, ``default`` elsewhere (finite if default is)."""
    return _unary_guard(
        x,
        default,
        scalar_ok=lambda v: 0.0 <= v < _INF,
        scalar_fn=math.sqrt,
        ufunc=np.sqrt,
        valid=lambda a: (a >= 0.0) & (a < _INF),
    )


def _sum_is_finite(arr: npt.NDArray[np.float64]) -> bool:
    # One NaN/inf-propagating reduction, no temporary; an overflowing sum of finite values
    # only sends the caller to its exact path.
    with np.errstate(all="ignore"):
        return math.isfinite(float(np.add.reduce(arr, axis=None)))


def _finite_values(x: Numeric) -> npt.NDArray[np.float64]:
    arr = _as_float_array(x, "x").ravel()
    if arr.size and _sum_is_finite(arr):
        return arr
    return arr[np.isfinite(arr)]


def safe_mean(x: Numeric, default: float = 0.0) -> float:
    """Mean of the finite elements of ``x``; ``default`` if there are none or the mean overflows."""
    vals = _finite_values(x)
    if vals.size == 0:
        _record(1)
        return float(default)
    with np.errstate(all="ignore"):
        total = float(np.add.reduce(vals))
        if math.isfinite(total):
            return _plain_divide(total, vals.size, float(default), 0.0, 1.0)
        # the float64 sum overflowed: average a scaled copy (exact power-of-two scaling)
        scaled = float(np.add.reduce(vals * 0.5**64))
    return _plain_divide(scaled, vals.size, float(default), 0.0, 2.0**64)


def safe_std(x: Numeric, ddof: int = 0, default: float = 0.0) -> float:
    """Standard deviation of the finite elements of ``x``; ``default`` when fewer than ``ddof+1``.

    The result is always finite (when ``default`` is) and >= 0.
    """
    vals = _finite_values(x)
    if vals.size <= ddof:
        _record(1)
        return float(default)
    with np.errstate(all="ignore"):
        scale = float(np.max(np.abs(vals))) if vals.size else 0.0
        if scale == 0.0:
            return 0.0
        # scaling by the max keeps the squares in range for huge inputs
        scaled = vals * safe_divide(1.0, scale, 0.0, 0.0)
        var = float(np.var(scaled, ddof=ddof))
    res = safe_sqrt(var, math.nan)
    return finite_or(res * scale, float(default))  # type: ignore[operator,return-value]
