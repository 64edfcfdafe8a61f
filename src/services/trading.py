"""virtuoso-trading: the analysis loop (``python -m src.services.trading [--config PATH]``).

Every ``interval_seconds`` it fetches each symbol from the configured source, runs all indicator
families plus the composite score (``analyze_symbol``), writes ``trading_state.json`` atomically
and appends one line per symbol to ``signals.jsonl`` in ``state_dir``.  ``GET /health`` and
``GET /metrics`` are served on ``listen``.  It only analyses: no order is ever placed.

Without a config it replays the bundled sample data and listens on 127.0.0.1:8787; the state dir
is then ``$STATE_DIRECTORY`` (systemd StateDirectory=) or ``./state``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from src.services.common import (
    LOG_LEVELS,
    PROMETHEUS_CONTENT_TYPE,
    ConfigError,
    ConfigReader,
    Lifecycle,
    ListenAddress,
    Notifier,
    Response,
    atomic_write_json,
    closing_on_error,
    default_state_dir,
    ensure_writable_dir,
    json_safe,
    load_toml,
    prom_metric,
    read_listen,
    run_service,
    setup_logging,
    start_http_server,
    utc_iso,
)
from src.services.sources import (
    BUNDLED_REPLAY_FILE,
    CcxtSettings,
    CcxtSource,
    MarketSnapshot,
    MarketSource,
    ReplaySource,
    SourceError,
    check_exchange_id,
    credentials_from_env,
)

LOG = logging.getLogger("virtuoso.trading")

SERVICE = "virtuoso-trading"
STATE_FILE = "trading_state.json"
SIGNALS_FILE = "signals.jsonl"
STALE_INTERVALS = 3
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


# --------------------------------------------------------------------------------------------
# Config


@dataclass(frozen=True)
class TradingConfig:
    """Validated service config (see config/trading.example.toml for every key)."""

    symbols: tuple[str, ...] | None = None  # None: every symbol of the replay file
    interval_seconds: float = 60.0
    source: str = "replay"
    state_dir: Path = field(default_factory=default_state_dir)
    listen: ListenAddress = field(default_factory=lambda: ListenAddress("127.0.0.1", 8787))
    log_level: str = "INFO"
    log_file: Path | None = None
    log_max_bytes: int = 10 * 1024 * 1024
    log_backup_count: int = 5
    signal_buy_threshold: float = 65.0
    signal_sell_threshold: float = 35.0
    signals_max_bytes: int = 50 * 1024 * 1024
    replay_data_file: Path = BUNDLED_REPLAY_FILE
    replay_window_bars: int = 240
    ccxt: CcxtSettings = field(default_factory=CcxtSettings)


def parse_config(data: Mapping[str, Any]) -> TradingConfig:
    """Validate a parsed TOML document; raises ConfigError naming the first bad key.

    Checks that need no I/O only; the ccxt exchange id is checked in :func:`build_source`.
    """
    r = ConfigReader(data)
    source = r.string("source", "replay", choices=("replay", "ccxt"))
    symbols = r.string_list("symbols", ()) if "symbols" in data else None
    if source == "ccxt" and symbols is None:
        raise ConfigError(
            "symbols must be a non-empty list of distinct strings when source = 'ccxt', got nothing"
        )
    cfg = TradingConfig(
        symbols=symbols,
        interval_seconds=r.number("interval_seconds", 60.0),
        source=source,
        state_dir=r.path("state_dir", default_state_dir()),
        listen=read_listen(r, "listen", "127.0.0.1:8787"),
        log_level=r.string("log_level", "INFO", choices=LOG_LEVELS),
        log_file=r.optional_path("log_file"),
        log_max_bytes=r.integer("log_max_bytes", 10 * 1024 * 1024, minimum=1024),
        log_backup_count=r.integer("log_backup_count", 5, minimum=0),
        signal_buy_threshold=r.number("signal_buy_threshold", 65.0, minimum=0.0, strict=False),
        signal_sell_threshold=r.number("signal_sell_threshold", 35.0, minimum=0.0, strict=False),
        signals_max_bytes=r.integer("signals_max_bytes", 50 * 1024 * 1024, minimum=1024),
        **_replay_table(r.table("replay")),
        ccxt=_ccxt_table(r.table("ccxt")),
    )
    r.finish()
    if not cfg.signal_sell_threshold < cfg.signal_buy_threshold <= 100.0:
        raise ConfigError(
            "signal_buy_threshold must be a number in (signal_sell_threshold, 100], "
            f"got {cfg.signal_buy_threshold!r} (sell threshold {cfg.signal_sell_threshold!r})"
        )
    return cfg


def _replay_table(t: ConfigReader) -> dict[str, Any]:
    out = {
        "replay_data_file": t.path("data_file", BUNDLED_REPLAY_FILE),
        "replay_window_bars": t.integer("window_bars", 240, minimum=2),
    }
    t.finish()
    return out


def _ccxt_table(t: ConfigReader) -> CcxtSettings:
    d = CcxtSettings()
    settings = CcxtSettings(
        exchange=t.string("exchange", d.exchange),
        timeframe=t.string("timeframe", d.timeframe),
        ohlcv_limit=t.integer("ohlcv_limit", d.ohlcv_limit, minimum=2),
        trades_limit=t.integer("trades_limit", d.trades_limit),
        order_book_depth=t.integer("order_book_depth", d.order_book_depth),
        timeout_seconds=t.number("timeout_seconds", d.timeout_seconds),
        max_retries=t.integer("max_retries", d.max_retries, minimum=0),
        retry_backoff_seconds=t.number("retry_backoff_seconds", d.retry_backoff_seconds),
        retry_backoff_max_seconds=t.number("retry_backoff_max_seconds", d.retry_backoff_max_seconds),
    )
    t.finish()
    return settings


def load_config(path: Path | None) -> TradingConfig:
    """Read and validate ``path`` (``None``: all defaults)."""
    return parse_config(load_toml(path))


# --------------------------------------------------------------------------------------------
# Runtime state and metrics


def count_nonfinite(values: Mapping[str, float]) -> int:
    """How many values are NaN/inf or not numbers at all (the indicator contract says: zero)."""
    bad = 0
    for value in values.values():
        try:
            if not math.isfinite(float(value)):
                bad += 1
        except (TypeError, ValueError):
            bad += 1
    return bad


def classify(score: float, buy: float, sell: float) -> str:
    """``bullish`` at/above ``buy``, ``bearish`` at/below ``sell``, else ``neutral``."""
    if not math.isfinite(score):
        return "invalid"
    if score >= buy:
        return "bullish"
    if score <= sell:
        return "bearish"
    return "neutral"


@dataclass
class Metrics:
    """Counters behind ``/metrics``; mutated by the loop thread, read by HTTP threads under ``lock``."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    cycles: int = 0
    failed_cycles: int = 0
    errors: dict[str, int] = field(default_factory=lambda: {"source": 0, "analysis": 0, "state": 0})
    source_retries: int = 0
    nonfinite: int = 0
    fallbacks: int = 0
    runtime_warnings: int = 0
    duration_sum: float = 0.0
    duration_buckets: list[int] = field(default_factory=lambda: [0] * len(DURATION_BUCKETS))
    last_duration: float = 0.0
    last_cycle_time: float | None = None
    last_success_time: float | None = None
    last_error: dict[str, Any] | None = None
    scores: dict[str, float] = field(default_factory=dict)

    def observe_duration(self, seconds: float) -> None:
        """Add one cycle duration to the histogram (caller holds ``lock``)."""
        self.duration_sum += seconds
        self.last_duration = seconds
        for i, bound in enumerate(DURATION_BUCKETS):
            if seconds <= bound:
                self.duration_buckets[i] += 1


@dataclass
class SymbolResult:
    """Outcome of one symbol in one cycle."""

    symbol: str
    values: dict[str, float] | None = None
    snapshot: MarketSnapshot | None = None
    nonfinite: int = 0
    fallbacks: int = 0
    error: str | None = None


class TradingService:
    """The analysis loop plus its HTTP endpoints; see the module docstring for the outputs.

    Thread model: :meth:`run` (one worker thread) is the only writer of ``metrics`` and the state
    files; HTTP threads only read ``metrics`` under its lock.
    """

    def __init__(
        self,
        config: TradingConfig,
        source: MarketSource,
        notifier: Notifier | None = None,
        symbols: Sequence[str] | None = None,
    ) -> None:
        from src.indicators.scoring import analyze_symbol  # noqa: PLC0415 - heavy; after config checks
        from src.utils.safe_operations import count_fallbacks  # noqa: PLC0415

        self._analyze = analyze_symbol
        self._count_fallbacks = count_fallbacks
        self.config = config
        self.source = source
        # Replay without a configured list analyses every symbol the source has.
        self.symbols: tuple[str, ...] = tuple(
            symbols or config.symbols or getattr(source, "symbols", None) or ()
        )
        self.notifier = notifier or Notifier({})
        self.metrics = Metrics()
        self.state_path = config.state_dir / STATE_FILE
        self.signals_path = config.state_dir / SIGNALS_FILE
        self.server: ThreadingHTTPServer | None = None
        self._ready_sent = False
        self._stale_after = round(STALE_INTERVALS * config.interval_seconds, 6)

    # -- HTTP ---------------------------------------------------------------------------------

    def start_http(self) -> ListenAddress:
        """Bind and serve ``/health`` and ``/metrics``; returns the bound address."""
        self.server = start_http_server(
            self.config.listen, {"/health": self.health, "/metrics": self.prometheus}
        )
        host, port = self.server.server_address[:2]
        return ListenAddress(str(host), int(port))

    def health_payload(self, now: float | None = None) -> tuple[bool, dict[str, Any]]:
        """``(healthy, body)``: healthy iff a cycle succeeded within 3 intervals."""
        now = time.time() if now is None else now
        m = self.metrics
        with m.lock:
            last_ok = m.last_success_time
            healthy = last_ok is not None and now - last_ok <= self._stale_after
            status = "ok" if healthy else ("starting" if last_ok is None and m.cycles == 0 else "stale")
            body = {
                "service": SERVICE,
                "status": status,
                "source": self.source.name,
                "symbols": list(self.symbols),
                "cycle_count": m.cycles,
                "failed_cycles": m.failed_cycles,
                "last_cycle_time": utc_iso(m.last_cycle_time),
                "last_success_time": utc_iso(last_ok),
                "seconds_since_success": None if last_ok is None else round(now - last_ok, 3),
                "last_cycle_duration_seconds": round(m.last_duration, 6),
                "interval_seconds": self.config.interval_seconds,
                "stale_after_seconds": self._stale_after,
                "last_error": dict(m.last_error) if m.last_error else None,
                "nonfinite_values_total": m.nonfinite,
            }
        return healthy, body

    def health(self) -> Response:
        """``GET /health``: 200 when healthy, 503 when stale or before the first success."""
        healthy, body = self.health_payload()
        return Response.json(200 if healthy else 503, body)

    def prometheus(self) -> Response:
        """``GET /metrics`` in the Prometheus text exposition format."""
        return Response.text(200, self.render_metrics(), PROMETHEUS_CONTENT_TYPE)

    def render_metrics(self) -> str:
        """All ``virtuoso_trading_*`` series."""
        p = "virtuoso_trading_"
        healthy, _ = self.health_payload()
        m = self.metrics
        with m.lock:
            buckets = [
                ({"le": f"{b:g}"}, float(n))
                for b, n in zip(DURATION_BUCKETS, m.duration_buckets, strict=True)
            ]
            buckets.append(({"le": "+Inf"}, float(m.cycles)))
            lines = [
                *prom_metric(
                    p + "up",
                    "gauge",
                    "1 while the last success is within 3 intervals.",
                    [({}, float(healthy))],
                ),
                *prom_metric(p + "cycles_total", "counter", "Completed analysis cycles.", [({}, m.cycles)]),
                *prom_metric(
                    p + "failed_cycles_total",
                    "counter",
                    "Cycles in which a symbol failed.",
                    [({}, m.failed_cycles)],
                ),
                *prom_metric(p + "cycle_duration_seconds", "histogram", "Wall time of one cycle.", []),
                *[
                    f'{p}cycle_duration_seconds_bucket{{le="{labels["le"]}"}} {int(v)}'
                    for labels, v in buckets
                ],
                f"{p}cycle_duration_seconds_sum {m.duration_sum!r}",
                f"{p}cycle_duration_seconds_count {m.cycles}",
                *prom_metric(
                    p + "last_cycle_duration_seconds",
                    "gauge",
                    "Wall time of the last cycle.",
                    [({}, m.last_duration)],
                ),
                *prom_metric(
                    p + "errors_total",
                    "counter",
                    "Failures by kind (source: fetch after retries, analysis, state: file writes).",
                    [({"kind": k}, v) for k, v in sorted(m.errors.items())],
                ),
                *prom_metric(
                    p + "source_retries_total",
                    "counter",
                    "Fetches retried after a network error.",
                    [({}, m.source_retries)],
                ),
                *prom_metric(
                    p + "nonfinite_values_total",
                    "counter",
                    "Non-finite indicator values produced (must stay 0).",
                    [({}, m.nonfinite)],
                ),
                *prom_metric(
                    p + "guard_fallbacks_total",
                    "counter",
                    "Times a numeric guard returned its default instead of a computed value.",
                    [({}, m.fallbacks)],
                ),
                *prom_metric(
                    p + "runtime_warnings_total",
                    "counter",
                    "Python warnings raised during analysis.",
                    [({}, m.runtime_warnings)],
                ),
                *prom_metric(
                    p + "last_success_timestamp_seconds",
                    "gauge",
                    "Unix time of the last successful cycle.",
                    [({}, m.last_success_time or 0.0)],
                ),
                *prom_metric(
                    p + "score",
                    "gauge",
                    "Latest composite score (0-100) per symbol.",
                    [({"symbol": s}, v) for s, v in sorted(m.scores.items())],
                ),
            ]
        return "\n".join(lines) + "\n"

    # -- loop ---------------------------------------------------------------------------------

    def report_error(self, symbol: str, message: str) -> None:
        """Remember ``message`` as the latest error (shown in /health and the state file)."""
        with self.metrics.lock:
            self.metrics.last_error = {"time": utc_iso(time.time()), "symbol": symbol, "message": message}

    def count_retry(self) -> None:
        """One more network retry (called by the ccxt source)."""
        with self.metrics.lock:
            self.metrics.source_retries += 1

    def run(self, lifecycle: Lifecycle) -> None:
        """Cycle every ``interval_seconds`` (measured start to start) until stopping."""
        LOG.info(
            "trading loop started",
            extra={
                "source": self.source.name,
                "symbols": list(self.symbols),
                "interval_s": self.config.interval_seconds,
            },
        )
        next_start = time.monotonic()
        while not lifecycle.stopping:
            self.run_cycle()
            next_start += self.config.interval_seconds
            # After a long stall, do not fire a burst of catch-up cycles.
            next_start = max(next_start, time.monotonic())
            if lifecycle.sleep(next_start - time.monotonic()):
                break

    def run_cycle(self) -> list[SymbolResult]:
        """One cycle over all symbols; never raises (failures become errors in metrics/state)."""
        started = time.monotonic()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            results = [self._analyze_one(symbol) for symbol in self.symbols]
        now = time.time()
        duration = time.monotonic() - started
        ok = bool(results) and all(r.error is None for r in results)
        self._log_warnings(caught)
        self._update_metrics(results, caught, now, duration, ok)
        self._write_outputs(results, now, ok)
        healthy, _ = self.health_payload(now)
        if ok and not self._ready_sent:
            self.notifier.ready(f"first cycle ok ({len(results)} symbols)")
            self._ready_sent = True
        if healthy:
            self.notifier.watchdog()
        self.notifier.status(f"cycle {self.metrics.cycles}: {'ok' if ok else 'errors'}")
        LOG.info(
            "cycle done",
            extra={
                "cycle": self.metrics.cycles,
                "ok": ok,
                "duration_ms": round(duration * 1000, 2),
                "scores": {r.symbol: r.values.get("score") for r in results if r.values},
                "errors": {r.symbol: r.error for r in results if r.error},
            },
        )
        return results

    def _analyze_one(self, symbol: str) -> SymbolResult:
        try:
            snapshot = self.source.fetch(symbol)
        except SourceError as exc:
            return SymbolResult(symbol, error=f"source: {exc}")
        except Exception as exc:
            LOG.exception("source failed", extra={"symbol": symbol})
            return SymbolResult(symbol, error=f"source: {type(exc).__name__}: {exc}")
        try:
            with self._count_fallbacks() as counter:
                values = self._analyze(snapshot.bars, snapshot.trades, snapshot.bids, snapshot.asks)
            values = dict(values)
        except Exception as exc:
            LOG.exception("analysis failed", extra={"symbol": symbol})
            return SymbolResult(symbol, snapshot=snapshot, error=f"analysis: {type(exc).__name__}: {exc}")
        return SymbolResult(symbol, values, snapshot, count_nonfinite(values), int(counter.count))

    def _log_warnings(self, caught: list[warnings.WarningMessage]) -> None:
        # Logged with the category name so the health monitor's scan sees "RuntimeWarning".
        for w in {(w.category.__name__, str(w.message), w.filename, w.lineno) for w in caught}:
            LOG.warning(f"{w[0]}: {w[1]}", extra={"warning_at": f"{w[2]}:{w[3]}"})

    def _update_metrics(
        self, results: list[SymbolResult], caught: list[Any], now: float, duration: float, ok: bool
    ) -> None:
        m = self.metrics
        with m.lock:
            m.cycles += 1
            m.last_cycle_time = now
            m.observe_duration(duration)
            m.runtime_warnings += len(caught)
            if ok:
                m.last_success_time = now
            else:
                m.failed_cycles += 1
            for r in results:
                m.nonfinite += r.nonfinite
                m.fallbacks += r.fallbacks
                if r.error is not None:
                    m.errors["source" if r.error.startswith("source") else "analysis"] += 1
                    m.last_error = {"time": utc_iso(now), "symbol": r.symbol, "message": r.error}
                if r.values is not None and "score" in r.values:
                    m.scores[r.symbol] = float(r.values["score"])
            if any(r.nonfinite for r in results):
                LOG.error(
                    "non-finite indicator values",
                    extra={"counts": {r.symbol: r.nonfinite for r in results if r.nonfinite}},
                )

    def _write_outputs(self, results: list[SymbolResult], now: float, ok: bool) -> None:
        try:
            # Recreated if someone removed it at runtime; the rest of the service keeps working.
            self.config.state_dir.mkdir(parents=True, exist_ok=True)
            self._append_signals(results, now)
            atomic_write_json(self.state_path, self.state_document(results, now, ok))
        except OSError as exc:
            LOG.error(
                "cannot write state", extra={"error": str(exc), "state_dir": str(self.config.state_dir)}
            )
            with self.metrics.lock:
                self.metrics.errors["state"] += 1
                self.metrics.last_error = {"time": utc_iso(now), "symbol": None, "message": f"state: {exc}"}

    def state_document(self, results: list[SymbolResult], now: float, ok: bool) -> dict[str, Any]:
        """The ``trading_state.json`` payload (no credentials, strict JSON)."""
        _, health = self.health_payload(now)
        symbols: dict[str, Any] = {}
        for r in results:
            entry: dict[str, Any] = {"error": r.error}
            if r.snapshot is not None:
                entry["bar_time"] = utc_iso(r.snapshot.last_bar_time)
                entry["price"] = r.snapshot.last_price
            if r.values is not None:
                score = float(r.values.get("score", math.nan))
                entry.update(
                    score=score,
                    signal=self._signal(score),
                    indicators=dict(sorted(r.values.items())),
                    nonfinite=r.nonfinite,
                    guard_fallbacks=r.fallbacks,
                )
            symbols[r.symbol] = entry
        return {
            "service": SERVICE,
            "updated_at": utc_iso(now),
            "cycle": self.metrics.cycles,
            "cycle_ok": ok,
            "health": health,
            "symbols": symbols,
        }

    def _signal(self, score: float) -> str:
        return classify(score, self.config.signal_buy_threshold, self.config.signal_sell_threshold)

    def _append_signals(self, results: list[SymbolResult], now: float) -> None:
        lines = []
        for r in results:
            if r.values is None or r.snapshot is None:
                continue
            score = float(r.values.get("score", math.nan))
            record = {
                "time": utc_iso(now),
                "cycle": self.metrics.cycles,
                "symbol": r.symbol,
                "bar_time": utc_iso(r.snapshot.last_bar_time),
                "price": r.snapshot.last_price,
                "score": score,
                "signal": self._signal(score),
            }
            lines.append(json.dumps(json_safe(record), sort_keys=True) + "\n")
        if not lines:
            return
        self._rotate_signals_if_needed()
        # One write() of whole lines in append mode: a reader never sees half a record.
        with self.signals_path.open("a", encoding="utf-8") as fh:
            fh.write("".join(lines))

    def _rotate_signals_if_needed(self) -> None:
        try:
            size = self.signals_path.stat().st_size
        except FileNotFoundError:
            return
        if size >= self.config.signals_max_bytes:
            os.replace(self.signals_path, self.signals_path.with_name(SIGNALS_FILE + ".1"))

    def close(self) -> None:
        """Stop HTTP and release the source."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        self.source.close()


# --------------------------------------------------------------------------------------------
# Wiring


def build_source(
    config: TradingConfig, lifecycle: Lifecycle, service_ref: list[TradingService]
) -> MarketSource:
    """The configured data source; ConfigError for a bad data file / symbol / exchange id."""
    if config.source == "replay":
        return ReplaySource(config.replay_data_file, config.replay_window_bars, config.symbols)
    check_exchange_id(config.ccxt.exchange)

    def on_error(symbol: str, message: str) -> None:
        if service_ref:
            service_ref[0].report_error(symbol, message)

    def on_retry() -> None:
        if service_ref:
            service_ref[0].count_retry()

    return CcxtSource(config.ccxt, lifecycle, on_error=on_error, on_retry=on_retry)


def build_service(config: TradingConfig, lifecycle: Lifecycle, notifier: Notifier) -> TradingService:
    """Source + service + HTTP listener, logging the effective settings (never credentials)."""
    ensure_writable_dir(config.state_dir, "state_dir")
    ref: list[TradingService] = []
    source = build_source(config, lifecycle, ref)
    service = TradingService(config, source, notifier)
    ref.append(service)
    with closing_on_error(source.close):
        address = service.start_http()
    LOG.info(
        "virtuoso-trading starting",
        extra={
            "pid": os.getpid(),
            "source": config.source,
            "symbols": list(service.symbols),
            "interval_s": config.interval_seconds,
            "listen": str(address),
            "state_dir": str(config.state_dir),
            "log_file": str(config.log_file) if config.log_file else None,
            "exchange": config.ccxt.exchange if config.source == "ccxt" else None,
            "credentials_configured": bool(credentials_from_env()) if config.source == "ccxt" else False,
            "systemd_notify": notifier.enabled,
            "watchdog_s": notifier.watchdog_seconds,
        },
    )
    return service


def load_checked(path: Path | None) -> TradingConfig:
    """:func:`load_config` plus the checks that read files: replay data / ccxt exchange id."""
    config = load_config(path)
    if config.source == "replay":
        ReplaySource(config.replay_data_file, config.replay_window_bars, config.symbols)
    else:
        check_exchange_id(config.ccxt.exchange)
    return config


def start(config: TradingConfig, notifier: Notifier, lifecycle: Lifecycle) -> TradingService:
    """Logging, then :func:`build_service` (the run_service ``build`` hook)."""
    setup_logging(config.log_level, config.log_file, config.log_max_bytes, config.log_backup_count)
    return build_service(config, lifecycle, notifier)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0 clean stop, 2 config error, 1 other failure)."""
    return run_service(
        "python -m src.services.trading",
        "Virtuoso trading analysis loop (analysis only, never places orders).",
        argv,
        load_checked,
        start,
    )


if __name__ == "__main__":
    raise SystemExit(main())
