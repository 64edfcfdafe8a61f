"""safe_divide vs the unguarded baselines, measured side by side in one run (not a test).

Usage: .venv/bin/python bench/bench_safe_operations.py [repeat]
Goals: array path <= 3x raw np.divide at 1e6 float64; scalar path <= 2x a plain ``a / b``.
The two "floor" rows time reference bodies (float/float) that do only what any pure-Python guard
must do: they bound the scalar ratio from below.

Timings on a shared 2-core box are noisy, so each case times the baseline and safe_divide
alternately (interleaved rounds, same data, same process) and reports the best round of
each; the ratio is best(safe_divide) / best(baseline).
"""

from __future__ import annotations

import sys
import timeit
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.utils.safe_operations import safe_divide


def raw_divide(a, b):
    with np.errstate(all="ignore"):
        return np.divide(a, b)


def plain(a, b):
    return a / b


def plain_guarded(a, b):
    return a / b if b else 0.0


# What a pure-Python guard cannot do without, to show the floor of the scalar ratio: the same
# signature, the two exact-type tests that keep numpy scalars off the scalar path (they would warn),
# then the |d| >= epsilon, finite-operand and finite-quotient tests (no fallback counting).
def floor_dispatch_only(n, d, default=0.0, epsilon=1e-10):
    if d.__class__ is float is n.__class__:
        return n / d
    return default


def floor_minimal_guard(n, d, default=0.0, epsilon=1e-10):
    if d.__class__ is float is n.__class__:
        if epsilon <= d or d <= -epsilon:
            q = n / d
            if q - q == 0.0 and (q or d - d == 0.0):
                return q
        return default
    return default


def interleaved(base: timeit.Timer, ours: timeit.Timer, number: int, repeat: int) -> tuple[float, float]:
    """Best per-call time of each timer over ``repeat`` alternating rounds of ``number`` calls."""
    best_base = best_ours = float("inf")
    for i in range(repeat):
        # alternate which goes first so neither always runs on a "warmer" machine
        first, second = (base, ours) if i % 2 == 0 else (ours, base)
        t_first = first.timeit(number)
        t_second = second.timeit(number)
        t_base, t_ours = (t_first, t_second) if i % 2 == 0 else (t_second, t_first)
        best_base, best_ours = min(best_base, t_base), min(best_ours, t_ours)
    return best_base / number, best_ours / number


def main(repeat: int = 15) -> None:
    rng = np.random.default_rng(0)
    print(f"interleaved, best of {repeat} rounds each")
    print(f"{'case':<34}{'baseline':>14}{'safe_divide':>14}{'ratio':>8}{'goal':>7}")
    for n in (1_000, 100_000, 1_000_000):
        a = rng.normal(size=n)
        b = rng.normal(size=n)
        b[:: max(1, n // 100)] = 0.0  # 1% zero denominators: exercises the fix-up path too
        clean = rng.normal(size=n) + 3.0
        number = max(1, 200_000 // n)
        for label, den in (("1% zeros", b), ("no fallbacks", clean)):
            env = {"a": a, "den": den, "raw": raw_divide, "sd": safe_divide}
            base, ours = interleaved(
                timeit.Timer("raw(a, den)", globals=env),
                timeit.Timer("sd(a, den)", globals=env),
                number,
                repeat,
            )
            goal = "<=3x" if n == 1_000_000 else ""
            print(
                f"array n={n:<9,} {label:<14}{base * 1e6:>11.1f} us{ours * 1e6:>11.1f} us"
                f"{ours / base:>7.2f}x{goal:>7}"
            )
    for label, (x, y) in (
        ("scalar float/float", (7.5, 2.5)),
        ("scalar int/int", (7, 3)),
        ("scalar fallback (/0) vs `if b`", (7.5, 0.0)),
    ):
        ref = plain if y else plain_guarded  # a plain a / b raises on 0: compare with `if b`
        base, ours = interleaved(
            timeit.Timer("f(x, y)", globals={"f": ref, "x": x, "y": y}),
            timeit.Timer("f(x, y)", globals={"f": safe_divide, "x": x, "y": y}),
            200_000,
            repeat,
        )
        print(f"{label:<34}{base * 1e9:>11.1f} ns{ours * 1e9:>11.1f} ns{ours / base:>7.2f}x{'<=2x':>7}")
    for label, floor in (
        ("floor: type tests only", floor_dispatch_only),
        ("floor: minimal guard", floor_minimal_guard),
    ):
        base, ours = interleaved(
            timeit.Timer("f(x, y)", globals={"f": plain, "x": 7.5, "y": 2.5}),
            timeit.Timer("f(x, y)", globals={"f": floor, "x": 7.5, "y": 2.5}),
            200_000,
            repeat,
        )
        print(f"{label:<34}{base * 1e9:>11.1f} ns{ours * 1e9:>11.1f} ns{ours / base:>7.2f}x{'ref':>7}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 15)
