"""Market data sources behind one small interface (:class:`MarketSource`).

* :class:`ReplaySource` - the bundled sample data (see :mod:`src.services.make_replay_data`),
  a sliding window advanced by one bar per fetch, wrapping around at the end.
* :class:`CcxtSource` - live public data via ``ccxt`` (imported lazily: it costs ~50 MB RSS),
  with ccxt's rate limiter on and network errors retried with capped exponential backoff.

Both return :class:`MarketSnapshot` in the array layout of ``src.indicators.scoring.analyze_symbol``.
Errors a caller should report and survive are raised as :class:`SourceError`.
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from src.services.common import ConfigError, Lifecycle

LOG = logging.getLogger("virtuoso.trading.source")

BUNDLED_REPLAY_FILE = Path(__file__).resolve().parent / "replay_data" / "sample_market.npz"

# Names of the environment variables an EnvironmentFile may set; never read from the config file.
ENV_API_KEY = "VIRTUOSO_EXCHANGE_API_KEY"
ENV_SECRET = "VIRTUOSO_EXCHANGE_SECRET"
ENV_PASSWORD = "VIRTUOSO_EXCHANGE_PASSWORD"

Arrays = dict[str, np.ndarray]


class SourceError(Exception):
    """A fetch failed (after retries); the loop reports it and carries on."""


@dataclass(frozen=True)
class MarketSnapshot:
    """One symbol's market data for one cycle (all arrays float64, time in epoch seconds)."""

    symbol: str
    bars: Arrays
    trades: Arrays
    bids: np.ndarray
    asks: np.ndarray

    @property
    def last_bar_time(self) -> float | None:
        """Timestamp of the newest bar, ``None`` without bars."""
        ts = self.bars["timestamp"]
        return float(ts[-1]) if ts.size else None

    @property
    def last_price(self) -> float | None:
        """Close of the newest bar, ``None`` without bars."""
        close = self.bars["close"]
        return float(close[-1]) if close.size else None


class MarketSource(Protocol):
    """What the trading loop needs from a data source."""

    name: str

    def fetch(self, symbol: str) -> MarketSnapshot:
        """Data for the next cycle; raises :class:`SourceError` on a reportable failure."""

    def close(self) -> None:
        """Release connections."""


# --------------------------------------------------------------------------------------------
# Replay


@dataclass
class _ReplaySeries:
    bars: Arrays
    trade_ts: np.ndarray
    trades: Arrays
    bid_prices: np.ndarray
    ask_prices: np.ndarray
    bid_size: np.ndarray
    ask_size: np.ndarray
    cursor: int = 0


@dataclass
class ReplaySource:
    """Replays the bundled file: each fetch of a symbol moves its ``window_bars`` window one bar on.

    Guarantees: arrays are float64 and time-ordered; trades are those inside the window's time span;
    the order book is the snapshot of the window's last bar (best level first).  Loading raises
    :class:`ConfigError` naming ``replay.data_file`` if the file is missing or malformed and
    ``symbols`` if a requested symbol is not in it.
    """

    data_file: Path = BUNDLED_REPLAY_FILE
    window_bars: int = 240
    symbols: tuple[str, ...] | None = None
    name: str = "replay"
    _series: dict[str, _ReplaySeries] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        raw = _load_npz(self.data_file)
        available = [str(s) for s in raw["symbols"]]
        wanted = self.symbols if self.symbols is not None else tuple(available)
        for sym in wanted:
            if sym not in available:
                raise ConfigError(f"symbols entry {sym!r} is not in the replay data (available: {available})")
        for sym in wanted:
            idx = available.index(sym)
            self._series[sym] = _build_series(raw, idx, float(raw["ticks"][idx]), int(raw["start"]))
            n_bars = self._series[sym].bars["close"].size
            if n_bars < self.window_bars:
                raise ConfigError(
                    f"replay.window_bars must be an integer <= {n_bars} (bars in the replay data), "
                    f"got {self.window_bars}"
                )
        self.symbols = tuple(wanted)

    def fetch(self, symbol: str) -> MarketSnapshot:
        """The next window for ``symbol`` (wraps to the start after the last bar)."""
        series = self._series.get(symbol)
        if series is None:
            raise SourceError(f"{symbol!r} is not in the replay data")
        n_bars = series.bars["close"].size
        start = series.cursor % (n_bars - self.window_bars + 1)
        stop = start + self.window_bars
        series.cursor = start + 1
        bars = {k: v[start:stop] for k, v in series.bars.items()}
        t0 = bars["timestamp"][0]
        t1 = bars["timestamp"][-1] + 60.0
        lo, hi = np.searchsorted(series.trade_ts, [t0, t1])
        trades = {k: v[lo:hi] for k, v in series.trades.items()}
        last = stop - 1
        bids = np.column_stack((series.bid_prices[last], series.bid_size[last]))
        asks = np.column_stack((series.ask_prices[last], series.ask_size[last]))
        return MarketSnapshot(symbol, bars, trades, bids, asks)

    def close(self) -> None:
        """Nothing to release."""


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise ConfigError(
            f"replay.data_file {str(path)!r} does not exist "
            "(regenerate the bundled file with: python -m src.services.make_replay_data)"
        )
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ConfigError(f"replay.data_file {str(path)!r} is not a replay .npz file: {exc}") from None


def _build_series(raw: Mapping[str, np.ndarray], idx: int, tick: float, start: int) -> _ReplaySeries:
    p = f"s{idx}_"
    try:
        bars = {k: raw[p + "bars_" + k].astype(np.float64) for k in ("timestamp", "open", "high", "low")}
        bars["close"] = raw[p + "bars_close"].astype(np.float64)
        bars["volume"] = raw[p + "bars_volume"].astype(np.float64)
        trade_ts = start + raw[p + "trades_ts_ms"].astype(np.float64) / 1000.0
        trades = {
            "timestamp": trade_ts,
            "price": raw[p + "trades_price"].astype(np.float64),
            "amount": raw[p + "trades_amount"].astype(np.float64),
            "side": raw[p + "trades_side"].astype(np.float64),
        }
        close = bars["close"][:, None]
        bid_prices = close - raw[p + "book_bid_ticks"].astype(np.float64) * tick
        ask_prices = close + raw[p + "book_ask_ticks"].astype(np.float64) * tick
        bid_size = raw[p + "book_bid_size"].astype(np.float64)
        ask_size = raw[p + "book_ask_size"].astype(np.float64)
    except KeyError as exc:
        raise ConfigError(f"replay.data_file lacks array {exc.args[0]!r}") from None
    return _ReplaySeries(bars, trade_ts, trades, bid_prices, ask_prices, bid_size, ask_size)


# --------------------------------------------------------------------------------------------
# ccxt


@dataclass(frozen=True)
class CcxtSettings:
    """The ``[ccxt]`` config table."""

    exchange: str = "binance"
    timeframe: str = "1m"
    ohlcv_limit: int = 300
    trades_limit: int = 500
    order_book_depth: int = 20
    timeout_seconds: float = 10.0
    max_retries: int = 3
    retry_backoff_seconds: float = 1.0
    retry_backoff_max_seconds: float = 30.0


def credentials_from_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """ccxt credential options from ``VIRTUOSO_EXCHANGE_*`` (empty dict when unset).

    Only needed for exchanges that gate public endpoints; the values must never be logged.
    """
    env = os.environ if environ is None else environ
    creds: dict[str, str] = {}
    for option, var in (("apiKey", ENV_API_KEY), ("secret", ENV_SECRET), ("password", ENV_PASSWORD)):
        value = env.get(var, "").strip()
        if value:
            creds[option] = value
    return creds


def import_ccxt() -> Any:
    """Import ccxt on demand (never at module import: it is large)."""
    import ccxt  # noqa: PLC0415 - lazy on purpose, keeps the replay service's RSS low

    return ccxt


def check_exchange_id(exchange: str) -> None:
    """Raise ConfigError naming ``ccxt.exchange`` unless ccxt knows ``exchange``."""
    try:
        ccxt = import_ccxt()
    except ImportError:
        raise ConfigError("source 'ccxt' needs the ccxt package (pip install ccxt==4.5.90)") from None
    if exchange not in ccxt.exchanges:
        raise ConfigError(f"ccxt.exchange must be an exchange id known to ccxt, got {exchange!r}")


ErrorReporter = Callable[[str, str], None]


class CcxtSource:
    """Live public market data; never places orders (only ``fetch_*`` methods are ever called).

    ``exchange`` may be injected (tests); otherwise ``ccxt.<settings.exchange>`` is built with
    ``enableRateLimit`` on and credentials from the environment.  Each fetch is retried on
    ``ccxt.NetworkError`` up to ``max_retries`` times, sleeping ``retry_backoff_seconds * 2**n``
    (capped) between attempts; every failed attempt is passed to ``on_error`` and the final
    failure raises :class:`SourceError`.  Sleeps end early when ``lifecycle`` is stopping.
    """

    name = "ccxt"

    def __init__(
        self,
        settings: CcxtSettings,
        lifecycle: Lifecycle,
        on_error: ErrorReporter | None = None,
        exchange: Any = None,
        on_retry: Callable[[], None] | None = None,
    ) -> None:
        ccxt = import_ccxt()
        self._network_error: type[Exception] = ccxt.NetworkError
        self._base_error: type[Exception] = ccxt.BaseError
        self.settings = settings
        self._lifecycle = lifecycle
        self._on_error = on_error or (lambda _sym, _msg: None)
        self._on_retry = on_retry or (lambda: None)
        if exchange is None:
            options: dict[str, Any] = {
                "enableRateLimit": True,
                "timeout": int(settings.timeout_seconds * 1000),
                **credentials_from_env(),
            }
            exchange = getattr(ccxt, settings.exchange)(options)
        self.exchange = exchange

    def fetch(self, symbol: str) -> MarketSnapshot:
        """OHLCV, recent trades and the order book of ``symbol`` as one snapshot."""
        s = self.settings
        ohlcv = self._call(symbol, "fetch_ohlcv", symbol, s.timeframe, None, s.ohlcv_limit)
        trades = self._call(symbol, "fetch_trades", symbol, None, s.trades_limit)
        book = self._call(symbol, "fetch_order_book", symbol, s.order_book_depth)
        try:
            return MarketSnapshot(
                symbol, _bars_from_ohlcv(ohlcv), _trades_from_ccxt(trades), *_book_from_ccxt(book)
            )
        except (TypeError, ValueError, KeyError, IndexError) as exc:
            raise SourceError(f"{symbol}: malformed exchange data: {type(exc).__name__}: {exc}") from exc

    def _call(self, symbol: str, method: str, *args: Any) -> Any:
        s = self.settings
        for attempt in range(s.max_retries + 1):
            try:
                return getattr(self.exchange, method)(*args)
            except self._network_error as exc:
                message = f"{method} {symbol}: {type(exc).__name__}: {_short(exc)}"
                if attempt == s.max_retries:
                    self._on_error(symbol, f"{message} (gave up after {s.max_retries} retries)")
                    raise SourceError(message) from exc
                delay = min(s.retry_backoff_max_seconds, s.retry_backoff_seconds * 2**attempt)
                self._on_error(symbol, f"{message} (retry {attempt + 1}/{s.max_retries} in {delay:g}s)")
                self._on_retry()
                LOG.warning(
                    "network error, retrying",
                    extra={"symbol": symbol, "method": method, "attempt": attempt + 1, "delay_s": delay},
                )
                if self._lifecycle.sleep(delay):
                    raise SourceError(f"{message} (stopping)") from exc
            except self._base_error as exc:
                # Exchange-side refusals (bad symbol, ...) will not heal by retrying soon.
                message = f"{method} {symbol}: {type(exc).__name__}: {_short(exc)}"
                self._on_error(symbol, message)
                raise SourceError(message) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        """Close the exchange's HTTP session if it has one."""
        closer = getattr(self.exchange, "close", None)
        if callable(closer):
            try:
                closer()
            except Exception as exc:  # closing is best effort
                LOG.debug("exchange close failed", extra={"error": str(exc)})


def _short(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _bars_from_ohlcv(rows: Any) -> Arrays:
    arr = np.asarray(rows, dtype=np.float64).reshape(-1, 6)
    return {
        "timestamp": arr[:, 0] / 1000.0,
        "open": arr[:, 1],
        "high": arr[:, 2],
        "low": arr[:, 3],
        "close": arr[:, 4],
        "volume": arr[:, 5],
    }


_SIDES = {"buy": 1.0, "sell": -1.0}


def _trades_from_ccxt(rows: Any) -> Arrays:
    ordered = sorted(rows, key=lambda t: t.get("timestamp") or 0)
    n = len(ordered)
    ts = np.fromiter(((t.get("timestamp") or 0) / 1000.0 for t in ordered), np.float64, n)
    price = np.fromiter((float(t["price"]) for t in ordered), np.float64, n)
    amount = np.fromiter((float(t["amount"]) for t in ordered), np.float64, n)
    # Unknown aggressor side counts as neither buy nor sell.
    side = np.fromiter((_SIDES.get(t.get("side") or "", 0.0) for t in ordered), np.float64, n)
    return {"timestamp": ts, "price": price, "amount": amount, "side": side}


def _book_from_ccxt(book: Any) -> tuple[np.ndarray, np.ndarray]:
    def side(levels: Any) -> np.ndarray:
        # ccxt levels may carry a third element (order count) on some exchanges.
        rows = [(float(level[0]), float(level[1])) for level in levels]
        return np.asarray(rows, dtype=np.float64).reshape(-1, 2)

    return side(book["bids"]), side(book["asks"])
