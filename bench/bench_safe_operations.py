"""safe_divide vs the unguarded baselines, measured side by side in one run (not a test).

Usage: .venv/bin/python bench/bench_safe_operations.py
Goals: array path <= 3x raw np.divide at 1e6 float64; scalar path <= 2x a plain ``a / b``.
"""

from __future__ import annotations

import sys
import timeit
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.utils.safe_operations import safe_divide


def best_of(fn, number, repeat=7):
    if isinstance(fn, type(timeit.Timer().timeit)):
        return min(fn(number) for _ in range(repeat)) / number
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number


def raw_divide(a, b):
    with np.errstate(all="ignore"):
        return np.divide(a, b)


def plain(a, b):
    return a / b


def plain_guarded(a, b):
    return a / b if b else 0.0


def main() -> None:
    rng = np.random.default_rng(0)
    print(f"{'case':<34}{'baseline':>14}{'safe_divide':>14}{'ratio':>8}{'goal':>7}")
    for n in (1_000, 100_000, 1_000_000):
        a = rng.normal(size=n)
        b = rng.normal(size=n)
        b[:: max(1, n // 100)] = 0.0  # 1% zero denominators: exercises the fix-up path too
        clean = rng.normal(size=n) + 3.0
        number = max(1, 200_000 // n)
        for label, den in (("1% zeros", b), ("no fallbacks", clean)):
            base = best_of(lambda a=a, den=den: raw_divide(a, den), number)
            ours = best_of(lambda a=a, den=den: safe_divide(a, den), number)
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
        number = 1_000_000
        ref = plain if y else plain_guarded  # a plain a / b raises on 0: compare with `if b`
        base = best_of(timeit.Timer("f(x, y)", globals={"f": ref, "x": x, "y": y}).timeit, number)
        ours = best_of(timeit.Timer("f(x, y)", globals={"f": safe_divide, "x": x, "y": y}).timeit, number)
        print(f"{label:<34}{base * 1e9:>11.1f} ns{ours * 1e9:>11.1f} ns{ours / base:>7.2f}x{'<=2x':>7}")


if __name__ == "__main__":
    main()
