"""Unit and property tests for src.utils.safe_operations (warnings are errors: 'never warns')."""

from __future__ import annotations

import math
import threading
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from src.utils import safe_operations as so
from src.utils.safe_operations import (
    DEFAULT_PERCENTAGE,
    DEFAULT_RATIO,
    DEFAULT_SCORE,
    EPSILON,
    clamp_score,
    count_fallbacks,
    finite_or,
    safe_divide,
    safe_log,
    safe_mean,
    safe_pct_change,
    safe_percentage,
    safe_ratio,
    safe_sqrt,
    safe_std,
)

TINY = 5e-324
EDGE_FLOATS = [
    0.0,
    -0.0,
    TINY,
    -TINY,
    2.2250738585072014e-308,
    1e-300,
    1e-11,
    float(np.nextafter(1e-10, 0.0)),
    1e-10,
    -1e-10,
    float(np.nextafter(1e-10, 1.0)),
    float(np.nextafter(-1e-10, 0.0)),
    1.0,
    -1.0,
    3.0,
    1e300,
    -1e300,
    1.7976931348623157e308,
    math.inf,
    -math.inf,
    math.nan,
]
edge = st.sampled_from(EDGE_FLOATS) | st.floats(allow_nan=True, allow_infinity=True)
finite_default = st.sampled_from([0.0, -1.0, 1.0, 50.0]) | st.floats(allow_nan=False, allow_infinity=False)

N_SCALAR = 3000
N_ARRAY = 400


def reference(n, d, default, eps=EPSILON):
    """Slow, obviously-correct specification of safe_divide on arrays."""
    n = np.asarray(n, dtype=np.float64)
    d = np.asarray(d, dtype=np.float64)
    with np.errstate(all="ignore"):
        q = n / d
        bad = ~(np.abs(d) >= eps) | ~np.isfinite(d) | ~np.isfinite(n) | ~np.isfinite(q)
    q, bad, default = np.broadcast_arrays(q, bad, np.asarray(default, dtype=np.float64))
    return np.where(bad, default, q), bad


def bits_equal(a, b) -> bool:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return a.shape == b.shape and np.array_equal(a.view(np.uint64), b.view(np.uint64))


# --------------------------------------------------------------------------- unit tests


def test_constants():
    assert (EPSILON, DEFAULT_RATIO, DEFAULT_PERCENTAGE, DEFAULT_SCORE) == (1e-10, 1.0, 0.0, 50.0)


@pytest.mark.parametrize(
    ("num", "den", "expected"),
    [
        (10, 2, 5.0),
        (10, 0, 0.0),
        (10.0, -0.0, 0.0),
        (1, 3, 1 / 3),
        (-7.5, 2.5, -3.0),
        (1.0, 1e-11, 0.0),
        (1.0, 1e-10, 1e10),
        (1.0, math.inf, 0.0),
        (math.inf, 1.0, 0.0),
        (math.nan, 1.0, 0.0),
        (1.0, math.nan, 0.0),
        (1e300, 1e-300, 0.0),
        (10**400, 3, 0.0),
        (10**400, 10**399, 10.0),
        (0, 5, 0.0),
    ],
)
def test_safe_divide_scalars(num, den, expected):
    out = safe_divide(num, den)
    assert type(out) is float
    assert out == expected


def test_safe_divide_scalar_custom_default_and_epsilon():
    assert safe_divide(1, 0, default=-1.0) == -1.0
    assert safe_divide(1.0, 0.5, epsilon=1.0) == 0.0
    assert safe_divide(1.0, 2.0, epsilon=1.0) == 0.5
    assert safe_divide(1, 0, default=math.inf) == math.inf


@pytest.mark.parametrize("num", [np.float64(3.0), np.float32(3.0), np.int64(3), True, Fraction(3, 1)])
def test_safe_divide_other_scalars_return_float(num):
    out = safe_divide(num, 2)
    assert isinstance(out, float)
    assert out == (0.5 if num is True else 1.5)


def test_safe_divide_arrays_and_lists():
    out = safe_divide([10, 20], [2, 0])
    assert isinstance(out, np.ndarray)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, [5.0, 0.0])
    np.testing.assert_array_equal(safe_divide(np.array([1.0, 2.0]), 2.0), [0.5, 1.0])


def test_safe_divide_broadcasting_and_array_default():
    num = np.arange(6.0).reshape(2, 3)
    den = np.array([1.0, 0.0, 2.0])
    out = safe_divide(num, den, default=np.array([[-1.0], [-2.0]]))
    np.testing.assert_array_equal(out, [[0.0, -1.0, 1.0], [3.0, -2.0, 2.5]])
    assert safe_divide(1.0, 2.0, default=np.zeros(3)).shape == (3,)


def test_safe_divide_empty_and_dtypes():
    assert safe_divide(np.array([]), np.array([])).shape == (0,)
    assert safe_divide(np.zeros((0, 3)), 1.0).shape == (0, 3)
    np.testing.assert_array_equal(safe_divide(np.array([True, False]), np.array([True, True])), [1.0, 0.0])
    np.testing.assert_array_equal(safe_divide(np.array([3], np.int8), np.array([0], np.uint8)), [0.0])
    out = safe_divide(np.array([1.0], np.float32), np.array([3.0], np.float32))
    assert out.dtype == np.float64
    assert out[0] == np.float64(np.float32(1.0)) / np.float64(np.float32(3.0))


def test_safe_divide_zero_d_array_returns_float():
    assert safe_divide(np.array(6.0), np.array(3.0)) == 2.0
    assert isinstance(safe_divide(np.array(6.0), np.array(0.0)), float)


@pytest.mark.parametrize("bad", ["abc", None, b"x", 1 + 2j, [1, "a"], {"a": 1}, object()])
def test_safe_divide_rejects_non_numeric(bad):
    with pytest.raises(TypeError):
        safe_divide(bad, 1.0)
    with pytest.raises(TypeError):
        safe_divide(1.0, bad)


def test_safe_divide_shape_mismatch_is_value_error():
    with pytest.raises(ValueError, match="broadcast"):
        safe_divide(np.ones(3), np.ones(4))


def test_safe_divide_does_not_modify_inputs():
    num, den = np.array([1.0, np.nan]), np.array([0.0, 2.0])
    safe_divide(num, den)
    assert np.isnan(num[1])
    assert den[0] == 0.0


def test_helpers_scalar():
    assert safe_ratio(1, 0) == 1.0
    assert safe_ratio(3, 4) == 0.75
    assert safe_percentage(1, 4) == 25.0
    assert safe_percentage(1, 0) == 0.0
    assert safe_percentage(1e307, 1.0) == 0.0
    assert safe_pct_change(110, 100) == pytest.approx(10.0)
    assert safe_pct_change(5, 0) == 0.0
    assert safe_pct_change(math.inf, 1.0) == 0.0
    assert clamp_score(120) == 100.0
    assert clamp_score(-3) == 0.0
    assert clamp_score(math.nan) == 50.0
    assert clamp_score(math.inf) == 50.0
    assert clamp_score(5, lo=10, hi=20) == 10.0
    assert safe_log(math.e) == pytest.approx(1.0)
    assert safe_log(0.0) == 0.0
    assert safe_log(-1.0, default=-9.0) == -9.0
    assert safe_sqrt(9) == 3.0
    assert safe_sqrt(-1) == 0.0
    assert safe_sqrt(math.inf) == 0.0
    assert finite_or(math.nan, 7.0) == 7.0
    assert finite_or(10**400, 7.0) == 7.0
    assert finite_or(2, 7.0) == 2.0


def test_helpers_array():
    np.testing.assert_array_equal(safe_ratio([1, 1], [2, 0]), [0.5, 1.0])
    np.testing.assert_array_equal(safe_percentage([1, 1, 1e307], [4, 0, 1]), [25.0, 0.0, 0.0])
    np.testing.assert_allclose(safe_pct_change([110, 1, np.inf], [100, 0, np.inf]), [10.0, 0.0, 0.0])
    np.testing.assert_array_equal(clamp_score([120, -3, np.nan, 42]), [100.0, 0.0, 50.0, 42.0])
    np.testing.assert_array_equal(safe_log([1.0, 0.0, -1.0, np.inf, np.nan]), [0.0] * 5)
    np.testing.assert_array_equal(safe_sqrt([4.0, -4.0, np.inf, np.nan]), [2.0, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(finite_or([1.0, np.nan, -np.inf], 3.0), [1.0, 3.0, 3.0])


def test_mean_and_std():
    assert safe_mean([]) == 0.0
    assert safe_mean([np.nan, np.inf]) == 0.0
    assert safe_mean([np.nan, 1.0, 3.0]) == 2.0
    assert safe_mean([], default=50.0) == 50.0
    assert safe_mean([1e308, 1e308]) == pytest.approx(1e308)
    assert safe_std([]) == 0.0
    assert safe_std([5.0]) == 0.0
    assert safe_std([5.0], ddof=1, default=-1.0) == -1.0
    assert safe_std([1.0, 2.0, 3.0, 4.0]) == pytest.approx(np.std([1.0, 2.0, 3.0, 4.0]))
    assert safe_std([1e300, -1e300]) == pytest.approx(1e300)
    assert safe_std([np.nan, 2.0, 4.0], ddof=1) == pytest.approx(math.sqrt(2.0))


# --------------------------------------------------------------------------- fallback counter


def test_count_fallbacks_scalar_and_array():
    with count_fallbacks() as counter:
        safe_divide(1, 0)
        safe_divide(1, 2)
        safe_divide([1, 2, 3, 4], [0, 1, np.nan, 2])
        safe_ratio(1, 0)
        clamp_score(np.nan)
        safe_log([-1.0, 1.0])
    assert counter.count == 1 + 0 + 2 + 1 + 1 + 1


def test_count_fallbacks_nested_and_inactive():
    safe_divide(1, 0)  # nobody counts: must not fail
    with count_fallbacks() as outer:
        safe_divide(1, 0)
        with count_fallbacks() as inner:
            safe_divide([0.0, 0.0], 0.0)
        safe_divide(1, 0)
    assert (outer.count, inner.count) == (4, 2)
    assert so._ACTIVE[0] == 0


def test_count_fallbacks_is_thread_local():
    counts: dict[str, int] = {}

    def worker() -> None:
        with count_fallbacks() as c:
            safe_divide(np.zeros(5), 0.0)
        counts["thread"] = c.count

    with count_fallbacks() as mine:
        t = threading.Thread(target=worker)
        t.start()
        t.join()
        safe_divide(1, 0)
    assert counts["thread"] == 5
    assert mine.count == 1


# --------------------------------------------------------------------------- properties


@settings(max_examples=N_SCALAR, deadline=None)
@given(num=edge, den=edge, default=finite_default)
def test_prop_scalar_matches_spec(num, den, default):
    out = safe_divide(num, den, default)
    assert type(out) is float
    assert math.isfinite(out)
    expected, bad = reference(num, den, default)
    assert bits_equal(out, expected)
    if not bad:
        assert bits_equal(out, num / den)


@settings(max_examples=N_SCALAR, deadline=None)
@given(num=edge | st.integers(-(10**320), 10**320), den=edge | st.integers(-(10**320), 10**320))
def test_prop_scalar_never_raises_and_counts(num, den):
    with count_fallbacks() as counter:
        out = safe_divide(num, den)
    assert type(out) is float
    assert math.isfinite(out)
    assert counter.count in (0, 1)
    if counter.count == 0:
        assert bits_equal(out, num / den)
    else:
        assert out == 0.0


def _arrays(dtype, shape):
    if np.dtype(dtype).kind == "f":
        elements = st.sampled_from(EDGE_FLOATS) | st.floats(allow_nan=True, allow_infinity=True, width=64)
        if np.dtype(dtype) == np.float32:
            elements = st.floats(allow_nan=True, allow_infinity=True, width=32)
        return hnp.arrays(dtype, shape, elements=elements)
    return hnp.arrays(dtype, shape)


dtypes = st.sampled_from([np.float64, np.float32, np.int64, np.int32, np.uint8, np.bool_])


@settings(max_examples=N_ARRAY, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    shapes=hnp.mutually_broadcastable_shapes(num_shapes=3, min_dims=0, max_dims=3, min_side=0, max_side=4),
    ndtype=dtypes,
    ddtype=dtypes,
)
def test_prop_array_matches_spec(data, shapes, ndtype, ddtype):
    num = data.draw(_arrays(ndtype, shapes.input_shapes[0]), label="num")
    den = data.draw(_arrays(ddtype, shapes.input_shapes[1]), label="den")
    default = data.draw(hnp.arrays(np.float64, shapes.input_shapes[2], elements=finite_default), label="dflt")
    num_before, den_before = num.copy(), den.copy()
    with count_fallbacks() as counter:
        out = safe_divide(num, den, default)
    expected, bad = reference(num, den, default)
    out_arr = np.asarray(out)
    assert out_arr.shape == shapes.result_shape
    if shapes.result_shape == ():
        assert isinstance(out, float)
    else:
        assert out.dtype == np.float64
    assert np.all(np.isfinite(out_arr))
    assert bits_equal(out_arr, expected)
    assert counter.count == int(np.count_nonzero(bad))
    assert np.array_equal(num, num_before, equal_nan=num.dtype.kind == "f")
    assert np.array_equal(den, den_before, equal_nan=den.dtype.kind == "f")


@settings(max_examples=N_ARRAY, deadline=None)
@given(
    num=hnp.arrays(np.float64, st.integers(0, 50), elements=edge),
    den=st.sampled_from(EDGE_FLOATS),
)
def test_prop_array_vs_scalar_agree(num, den):
    out = safe_divide(num, den, 7.0)
    scalars = [safe_divide(float(x), den, 7.0) for x in num]
    assert bits_equal(out, np.array(scalars, dtype=np.float64))


@settings(max_examples=N_ARRAY, deadline=None)
@given(x=hnp.arrays(np.float64, st.integers(0, 30), elements=edge))
def test_prop_unary_guards_finite(x):
    for fn in (safe_log, safe_sqrt, finite_or, clamp_score):
        out = fn(x)
        assert out.shape == x.shape
        assert np.all(np.isfinite(out))
    assert math.isfinite(safe_mean(x))
    assert math.isfinite(safe_std(x))
    assert safe_std(x) >= 0.0
    scores = clamp_score(x)
    assert np.all((scores >= 0.0) & (scores <= 100.0))


@settings(max_examples=N_ARRAY, deadline=None)
@given(
    part=hnp.arrays(np.float64, 6, elements=edge),
    whole=hnp.arrays(np.float64, 6, elements=edge),
)
def test_prop_percentages_finite_and_consistent(part, whole):
    pct = safe_percentage(part, whole)
    assert np.all(np.isfinite(pct))
    for p, w, got in zip(part, whole, pct, strict=True):
        assert bits_equal(safe_percentage(float(p), float(w)), got)
    assert np.all(np.isfinite(safe_pct_change(part, whole)))


# --------------------------------------------------------------------------- fast-path edges


@pytest.mark.parametrize("num", [1.0, -2.5, 0.0, 3, 0])
@pytest.mark.parametrize("den", [0.0, -0.0, 0])
@pytest.mark.parametrize("eps", [0.0, -1.0])
def test_scalar_zero_denominator_with_non_positive_epsilon_returns_default(num, den, eps):
    with count_fallbacks() as counter:
        out = safe_divide(num, den, -3.0, eps)
    assert type(out) is float
    assert out == -3.0
    assert counter.count == 1
    assert bits_equal(out, safe_divide(np.array([num], dtype=np.float64), den, -3.0, eps)[0])


@pytest.mark.parametrize(
    ("num", "den", "kwargs", "expected"),
    [
        (1.0, math.inf, {}, 0.0),
        (0.0, -math.inf, {"default": 4.0}, 4.0),
        (-0.0, 2.0, {}, -0.0),
        (0.0, -2.0, {"default": 4.0}, -0.0),
        (3.0, -1e-10, {}, -3e10),
        (4, -3, {"epsilon": 2}, 4 / -3),
        (1, 1, {"epsilon": 2.0}, 0.0),
        (1, -1, {"epsilon": math.nan, "default": 9}, 9.0),
        (1.0, 2.0, {"epsilon": math.nan, "default": 9.0}, 9.0),
        (10**400, 10**399, {"default": 1}, 10.0),
        (7, 3, {"default": 0}, 7 / 3),
        (7.5, 3, {}, 2.5),
        (7, 2.5, {}, 2.8),
    ],
)
def test_scalar_fast_paths_edges(num, den, kwargs, expected):
    out = safe_divide(num, den, **kwargs)
    assert type(out) is float
    assert bits_equal(out, expected)


def test_scalar_default_array_still_broadcasts_on_fast_types():
    out = safe_divide(1.0, 4.0, default=np.full(2, 7.0))
    assert isinstance(out, np.ndarray)
    np.testing.assert_array_equal(out, [0.25, 0.25])
    np.testing.assert_array_equal(safe_divide(1, 0, default=np.full(2, 7.0)), [7.0, 7.0])


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_array_one_signed_denominators_with_infinities_and_nans(sign):
    den = sign * np.array([1.0, np.inf, 2.0, np.nan, 1e-11, 4.0])
    num = np.array([1.0, 1.0, np.inf, 1.0, 1.0, 8.0])
    with count_fallbacks() as counter:
        out = safe_divide(num, den, 5.0)
    np.testing.assert_array_equal(out, [sign, 5.0, 5.0, 5.0, 5.0, 2.0 * sign])
    assert counter.count == 4


def test_array_large_mixed_sign_paths_match_reference():
    rng = np.random.default_rng(3)
    num = rng.normal(size=20_000)
    for den in (rng.normal(size=20_000), rng.normal(size=20_000) + 4.0, -rng.random(20_000) - 1.0):
        den[::97] = 0.0
        den[5::501] = 1e-12
        for d in (den, np.abs(den) + 1.0):
            with count_fallbacks() as counter:
                out = safe_divide(num, d, 2.0)
            expected, bad = reference(num, d, 2.0)
            assert bits_equal(out, expected)
            assert counter.count == int(np.count_nonzero(bad))
    with count_fallbacks() as counter:
        out = safe_divide(np.full(1000, 1e300), np.full(1000, 1e-300), 3.0)  # every quotient overflows
    assert bits_equal(out, np.full(1000, 3.0))
    assert counter.count == 1000
