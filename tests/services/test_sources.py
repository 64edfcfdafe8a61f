"""Data sources: bundled replay data, ccxt source with an injected fake exchange, real ccxt."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from src.services import make_replay_data
from src.services.common import ConfigError, Lifecycle
from src.services.sources import (
    BUNDLED_REPLAY_FILE,
    CcxtSettings,
    CcxtSource,
    ReplaySource,
    SourceError,
    check_exchange_id,
    credentials_from_env,
)
from src.services.trading import TradingConfig, TradingService, parse_config
from tests.services.helpers import free_port, http_json, trading_config, wait_until, write_toml

ccxt = pytest.importorskip("ccxt")


# ------------------------------------------------------------------ replay


def test_bundled_replay_file_is_small_and_reproducible(tmp_path: Path) -> None:
    assert BUNDLED_REPLAY_FILE.stat().st_size < 1_000_000
    regenerated = make_replay_data.write(tmp_path / "again.npz")
    with np.load(BUNDLED_REPLAY_FILE) as shipped, np.load(regenerated) as fresh:
        assert sorted(shipped.files) == sorted(fresh.files)
        for key in shipped.files:
            np.testing.assert_array_equal(shipped[key], fresh[key], err_msg=key)


def test_replay_windows_advance_and_are_consistent() -> None:
    source = ReplaySource(window_bars=50)
    assert source.symbols == ("BTC/USDT", "ETH/USDT", "SOL/USDT")
    first = source.fetch("ETH/USDT")
    second = source.fetch("ETH/USDT")
    assert second.bars["timestamp"][0] == first.bars["timestamp"][0] + 60
    for snap in (first, second):
        assert all(v.dtype == np.float64 and v.size == 50 for v in snap.bars.values())
        ts = snap.trades["timestamp"]
        assert ts.size > 0
        assert np.all(np.diff(ts) >= 0)
        assert ts[0] >= snap.bars["timestamp"][0]
        assert ts[-1] < snap.bars["timestamp"][-1] + 60
        assert set(np.unique(snap.trades["side"])) <= {-1.0, 1.0}
        assert snap.bids.shape[1] == snap.asks.shape[1] == 2
        assert np.all(np.diff(snap.bids[:, 0]) < 0)  # best bid first
        assert np.all(np.diff(snap.asks[:, 0]) > 0)  # best ask first
        assert snap.bids[0, 0] < snap.asks[0, 0]
        bars = snap.bars
        assert np.all(bars["high"] >= np.maximum(bars["open"], bars["close"]))
        assert np.all(bars["low"] <= np.minimum(bars["open"], bars["close"]))


def test_replay_wraps_around() -> None:
    source = ReplaySource(window_bars=479, symbols=("SOL/USDT",))
    starts = [source.fetch("SOL/USDT").bars["timestamp"][0] for _ in range(3)]
    assert starts[0] == starts[2] != starts[1]


def test_replay_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"replay.data_file .* does not exist"):
        ReplaySource(tmp_path / "missing.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match=r"is not a replay \.npz file"):
        ReplaySource(junk)
    with pytest.raises(ConfigError, match=r"replay\.window_bars must be an integer <= 480"):
        ReplaySource(window_bars=1000)
    with pytest.raises(SourceError):
        ReplaySource(symbols=("BTC/USDT",)).fetch("ETH/USDT")


# ------------------------------------------------------------------ ccxt (fake exchange)


class FakeExchange:
    """Mimics the ccxt methods the source calls (same signatures as ccxt 4.5)."""

    def __init__(self, network_failures: int = 0, always_fail: bool = False) -> None:
        self.network_failures = network_failures
        self.always_fail = always_fail
        self.calls: list[tuple[str, float]] = []
        self.closed = False

    def _maybe_fail(self, method: str) -> None:
        self.calls.append((method, time.monotonic()))
        if self.always_fail:
            raise ccxt.NetworkError("binance GET https://api.example.invalid connection refused")
        if self.network_failures > 0:
            self.network_failures -= 1
            raise ccxt.RequestTimeout(f"{method} timed out")

    def fetch_ohlcv(
        self,
        symbol: str,
        timeframe: str = "1m",
        since: int | None = None,
        limit: int | None = None,
        params=None,
    ) -> list[list[float]]:
        self._maybe_fail("fetch_ohlcv")
        n = limit or 100
        t0 = 1_735_689_600_000
        close = 100 + np.sin(np.arange(n) / 7.0)
        return [[t0 + 60_000 * i, c - 0.1, c + 0.5, c - 0.5, c, 10.0 + i % 5] for i, c in enumerate(close)]

    def fetch_trades(
        self, symbol: str, since: int | None = None, limit: int | None = None, params=None
    ) -> list[dict[str, Any]]:
        self._maybe_fail("fetch_trades")
        rows = [
            {
                "timestamp": 1_735_689_600_000 + 1000 * i,
                "price": 100 + (i % 3) * 0.1,
                "amount": 1.0 + i % 4,
                "side": "buy" if i % 3 else "sell",
            }
            for i in range(limit or 50)
        ]
        rows.append({"timestamp": None, "price": 100.0, "amount": 0.5, "side": None})
        return list(reversed(rows))

    def fetch_order_book(self, symbol: str, limit: int | None = None, params=None) -> dict[str, Any]:
        self._maybe_fail("fetch_order_book")
        depth = limit or 10
        return {
            "bids": [[99.9 - 0.1 * i, 2.0 + i] for i in range(depth)],
            "asks": [[100.1 + 0.1 * i, 1.5 + i, 3] for i in range(depth)],
        }

    def close(self) -> None:
        self.closed = True


def _settings(**kw: Any) -> CcxtSettings:
    base = {"ohlcv_limit": 120, "trades_limit": 60, "order_book_depth": 10, "retry_backoff_seconds": 0.05}
    base.update(kw)
    return CcxtSettings(**base)


def test_ccxt_source_converts_to_analysis_layout() -> None:
    fake = FakeExchange()
    source = CcxtSource(_settings(), Lifecycle(), exchange=fake)
    snap = source.fetch("BTC/USDT")
    assert [c[0] for c in fake.calls] == ["fetch_ohlcv", "fetch_trades", "fetch_order_book"]
    assert snap.bars["timestamp"][0] == 1_735_689_600.0
    assert snap.bars["close"].size == 120
    assert snap.trades["timestamp"].size == 61
    assert np.all(np.diff(snap.trades["timestamp"]) >= 0)
    assert set(np.unique(snap.trades["side"])) == {-1.0, 0.0, 1.0}
    assert snap.bids.shape == snap.asks.shape == (10, 2)
    source.close()
    assert fake.closed


def test_ccxt_network_errors_retried_with_backoff() -> None:
    fake = FakeExchange(network_failures=3)
    reported: list[str] = []
    source = CcxtSource(
        _settings(max_retries=3), Lifecycle(), on_error=lambda _s, m: reported.append(m), exchange=fake
    )
    snap = source.fetch("BTC/USDT")
    assert snap.bars["close"].size == 120
    ohlcv_times = [t for name, t in fake.calls if name == "fetch_ohlcv"]
    assert len(ohlcv_times) == 4
    gaps = np.diff(ohlcv_times)
    # 0.05, 0.1, 0.2 s: exponential backoff
    assert gaps[0] >= 0.045 and gaps[1] >= 0.095 and gaps[2] >= 0.19
    assert len(reported) == 3
    assert "RequestTimeout" in reported[0] and "retry 1/3" in reported[0]


def test_ccxt_gives_up_after_max_retries_and_non_network_errors_not_retried() -> None:
    source = CcxtSource(_settings(max_retries=2), Lifecycle(), exchange=FakeExchange(always_fail=True))
    with pytest.raises(SourceError, match="NetworkError"):
        source.fetch("BTC/USDT")

    class BadSymbol(FakeExchange):
        def fetch_ohlcv(self, *args: Any, **kwargs: Any) -> list[list[float]]:
            self.calls.append(("fetch_ohlcv", time.monotonic()))
            raise ccxt.BadSymbol("binance does not have market symbol NOPE/USDT")

    fake = BadSymbol()
    with pytest.raises(SourceError, match="BadSymbol"):
        CcxtSource(_settings(), Lifecycle(), exchange=fake).fetch("NOPE/USDT")
    assert len(fake.calls) == 1


def test_ccxt_backoff_sleep_ends_on_stop() -> None:
    lifecycle = Lifecycle()
    source = CcxtSource(
        _settings(max_retries=5, retry_backoff_seconds=30), lifecycle, exchange=FakeExchange(always_fail=True)
    )
    threading.Timer(0.2, lifecycle.request_stop).start()
    started = time.monotonic()
    with pytest.raises(SourceError, match="stopping"):
        source.fetch("BTC/USDT")
    assert time.monotonic() - started < 2


def _run_in_thread(service: TradingService, lifecycle: Lifecycle) -> threading.Thread:
    thread = threading.Thread(target=service.run, args=(lifecycle,), daemon=True)
    thread.start()
    return thread


def test_service_with_flaky_exchange_reports_error_and_keeps_going(tmp_path: Path) -> None:
    port = free_port()
    config = parse_config(
        {
            **{k: str(v) if isinstance(v, Path) else v for k, v in trading_config(tmp_path, port).items()},
            "source": "ccxt",
            "symbols": ["BTC/USDT", "ETH/USDT"],
            "ccxt": {"ohlcv_limit": 120, "trades_limit": 60, "max_retries": 2, "retry_backoff_seconds": 0.02},
        }
    )
    lifecycle = Lifecycle()
    holder: list[TradingService] = []
    fake = FakeExchange(network_failures=2)

    def on_error(symbol: str, message: str) -> None:
        holder[0].report_error(symbol, message)

    def on_retry() -> None:
        holder[0].count_retry()

    source = CcxtSource(
        config.ccxt,
        lifecycle,
        exchange=fake,
        on_error=on_error,
        on_retry=on_retry,
    )
    service = TradingService(config, source)
    holder.append(service)
    service.start_http()
    thread = _run_in_thread(service, lifecycle)
    try:
        wait_until(lambda: service.metrics.cycles >= 3)
        code, health = http_json(f"http://127.0.0.1:{port}/health")
        assert code == 200
        assert "RequestTimeout" in health["last_error"]["message"]
        assert service.metrics.source_retries == 2
        assert service.metrics.failed_cycles == 0
        # now the exchange goes away entirely: the loop survives, /health turns 503 once stale
        fake.always_fail = True
        code, health = wait_until(
            lambda: (r := http_json(f"http://127.0.0.1:{port}/health"))[0] == 503 and r, timeout=10
        )
        assert health["status"] == "stale"
        assert "NetworkError" in health["last_error"]["message"]
        assert thread.is_alive()
        assert service.metrics.errors["source"] >= 1
    finally:
        lifecycle.request_stop()
        thread.join(5)
        service.close()
    assert not thread.is_alive()


# ------------------------------------------------------------------ real ccxt


def test_real_ccxt_imports_and_knows_the_configured_exchange() -> None:
    example = parse_config({"source": "ccxt", "symbols": ["BTC/USDT"]})
    assert example.ccxt.exchange in ccxt.exchanges
    check_exchange_id(example.ccxt.exchange)
    with pytest.raises(
        ConfigError, match=r"ccxt\.exchange must be an exchange id known to ccxt, got 'nopex'"
    ):
        check_exchange_id("nopex")
    # the real class exposes the methods with the signatures the fake mimics
    exchange_cls = getattr(ccxt, example.ccxt.exchange)
    for method in ("fetch_ohlcv", "fetch_trades", "fetch_order_book"):
        assert callable(getattr(exchange_cls, method))


def test_credentials_come_from_env_only() -> None:
    env = {"VIRTUOSO_EXCHANGE_API_KEY": " k ", "VIRTUOSO_EXCHANGE_SECRET": "s", "HOME": "/x"}
    assert credentials_from_env(env) == {"apiKey": "k", "secret": "s"}
    assert credentials_from_env({}) == {}
    with pytest.raises(ConfigError, match="api_key is not a known key"):
        parse_config({"api_key": "abc"})


def test_unreachable_exchange_subprocess_stays_up_and_turns_503(tmp_path: Path, spawn) -> None:
    """Real ccxt, every request refused (proxy on a closed loopback port): alive, error shown, 503."""
    port = free_port()
    dead = free_port()
    cfg = write_toml(
        tmp_path / "trading.toml",
        trading_config(
            tmp_path,
            port,
            source="ccxt",
            symbols=["BTC/USDT"],
            interval_seconds=0.3,
            ccxt={
                "exchange": "binance",
                "max_retries": 1,
                "retry_backoff_seconds": 0.05,
                "timeout_seconds": 2,
            },
        ),
    )
    proxy = f"http://127.0.0.1:{dead}"
    env = {
        "HTTPS_PROXY": proxy,
        "HTTP_PROXY": proxy,
        "https_proxy": proxy,
        "http_proxy": proxy,
        "NO_PROXY": "",
    }
    svc = spawn("src.services.trading", cfg, env=env)
    code, health = wait_until(
        lambda: (r := http_json(f"http://127.0.0.1:{port}/health"))[1]["cycle_count"] >= 2 and r, timeout=20
    )
    assert code == 503
    assert health["status"] == "stale"
    assert "NetworkError" in health["last_error"]["message"]
    assert svc.proc.poll() is None
    assert (tmp_path / "state" / "trading_state.json").exists()
    code, elapsed = svc.terminate()
    assert (code, elapsed < 5) == (0, True)


def test_trading_config_defaults() -> None:
    cfg = TradingConfig()
    assert (cfg.source, cfg.interval_seconds, str(cfg.listen)) == ("replay", 60.0, "127.0.0.1:8787")
