"""Generate the bundled replay market data (deterministic: fixed seed, no network).

Usage (from the repo root)::

    python -m src.services.make_replay_data [--out PATH] [--seed N]

Writes one compressed ``.npz`` (~0.3 MB) holding, per symbol ``i`` (``s{i}_`` key prefix):

* ``bars_*``   - 1-minute OHLCV: ``timestamp`` (int64 epoch s), ``open``/``high``/``low``/``close``/
  ``volume`` (float64);
* ``trades_*`` - ``ts_ms`` (uint32 ms after the first bar), ``price`` (float64), ``amount`` (float32),
  ``side`` (int8, +1 buy / -1 sell);
* ``book_*``   - one snapshot per bar, ``BOOK_LEVELS`` levels a side: ``bid_ticks``/``ask_ticks``
  (int16 distance from the bar's close in ticks), ``bid_size``/``ask_size`` (float32);

plus ``symbols`` (unicode array), ``ticks`` (float64 tick size per symbol) and ``start`` (epoch s).
The data is a regime-switching random walk with realistic quirks on purpose: a few zero-volume
bars and a flat stretch, so the indicator guards get exercised during replay.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

DEFAULT_PATH = Path(__file__).resolve().parent / "replay_data" / "sample_market.npz"
SEED = 20240611
N_BARS = 480
BOOK_LEVELS = 10
START = 1_735_689_600  # 2025-01-01T00:00:00Z
# symbol, start price, tick, per-bar volatility, mean bar volume
SYMBOLS: tuple[tuple[str, float, float, float, float], ...] = (
    ("BTC/USDT", 94_000.0, 0.01, 0.0012, 12.0),
    ("ETH/USDT", 3_350.0, 0.01, 0.0016, 180.0),
    ("SOL/USDT", 190.0, 0.01, 0.0022, 2_400.0),
)


def _closes(rng: np.random.Generator, start: float, vol: float) -> np.ndarray:
    # Four regimes (up, chop, down, recovery) so trend and momentum indicators see all signs.
    drift = np.repeat(np.array([0.0004, 0.0, -0.0005, 0.0003]), N_BARS // 4)
    returns = drift + vol * rng.standard_normal(N_BARS)
    return start * np.exp(np.cumsum(returns))


def _symbol_arrays(rng: np.random.Generator, idx: int) -> dict[str, np.ndarray]:
    _, start, _tick, vol, mean_volume = SYMBOLS[idx]
    close = np.round(_closes(rng, start, vol), 2)
    opens = np.concatenate(([start], close[:-1]))
    wick = np.abs(rng.standard_normal((2, N_BARS))) * vol * close * 0.6
    high = np.round(np.maximum(opens, close) + wick[0], 2)
    low = np.round(np.minimum(opens, close) - wick[1], 2)
    volume = np.round(rng.lognormal(np.log(mean_volume), 0.5, N_BARS), 4)
    # Quirks seen in real feeds: idle minutes and a flat, zero-range stretch.
    volume[rng.choice(N_BARS, 4, replace=False)] = 0.0
    flat = slice(300, 306)
    close[flat] = opens[flat] = high[flat] = low[flat] = close[299]
    opens[306] = close[305]
    high[306] = max(high[306], opens[306])
    low[306] = min(low[306], opens[306])
    timestamps = START + 60 * np.arange(N_BARS, dtype=np.int64)

    counts = rng.poisson(6, N_BARS)
    bar_of_trade = np.repeat(np.arange(N_BARS), counts)
    ts_ms = (bar_of_trade * 60_000 + np.sort(rng.integers(0, 60_000, bar_of_trade.size))).astype(np.uint32)
    ts_ms.sort()
    frac = rng.random(bar_of_trade.size)
    price = np.round(low[bar_of_trade] + frac * (high[bar_of_trade] - low[bar_of_trade]), 2)
    amount = rng.lognormal(np.log(mean_volume / 6.0), 0.8, bar_of_trade.size).astype(np.float32)
    side = np.where(rng.random(bar_of_trade.size) < 0.5 + 0.1 * np.sign(close - opens)[bar_of_trade], 1, -1)

    spread = rng.integers(1, 4, (N_BARS, 1))
    steps = rng.integers(1, 6, (N_BARS, BOOK_LEVELS))
    bid_ticks = (spread + np.cumsum(steps, axis=1) - steps[:, :1]).astype(np.int16)
    ask_steps = rng.integers(1, 6, (N_BARS, BOOK_LEVELS))
    ask_ticks = (spread + np.cumsum(ask_steps, axis=1) - ask_steps[:, :1]).astype(np.int16)
    size_scale = mean_volume / 20.0
    bid_size = rng.lognormal(np.log(size_scale), 0.7, (N_BARS, BOOK_LEVELS)).astype(np.float32)
    ask_size = rng.lognormal(np.log(size_scale), 0.7, (N_BARS, BOOK_LEVELS)).astype(np.float32)
    return {
        "bars_timestamp": timestamps,
        "bars_open": opens,
        "bars_high": high,
        "bars_low": low,
        "bars_close": close,
        "bars_volume": volume,
        "trades_ts_ms": ts_ms,
        "trades_price": price,
        "trades_amount": amount,
        "trades_side": side.astype(np.int8),
        "book_bid_ticks": bid_ticks,
        "book_ask_ticks": ask_ticks,
        "book_bid_size": bid_size,
        "book_ask_size": ask_size,
    }


def generate(seed: int = SEED) -> dict[str, np.ndarray]:
    """All arrays of the replay file; identical output for identical ``seed``."""
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {
        "symbols": np.array([s[0] for s in SYMBOLS]),
        "ticks": np.array([s[2] for s in SYMBOLS]),
        "start": np.array(START, dtype=np.int64),
    }
    for idx in range(len(SYMBOLS)):
        for key, value in _symbol_arrays(rng, idx).items():
            arrays[f"s{idx}_{key}"] = value
    return arrays


def write(path: Path, seed: int = SEED) -> Path:
    """Generate and save to ``path`` (parent created); returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **generate(seed))  # type: ignore[arg-type]
    return path


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_PATH)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    out = write(args.out, args.seed)
    print(f"wrote {out} ({out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
