"""virtuoso-health-monitor (``python -m src.services.health_monitor [--config PATH]``).

Every ``poll_interval_seconds`` it checks the trading service (``/health``, ``/metrics``), host
memory/disk/load and the new part of the trading service's ``log_file`` (division errors,
NaN/inf warnings, tracebacks), then writes ``health_status.json`` atomically to ``state_dir``:
``{"status": "ok" | "degraded" | "failing", "reasons": [...], "checks": {...}}``.

``GET /health`` on ``listen`` (default 127.0.0.1:8788) returns that document: 200 for ok/degraded,
503 for failing (and before the first poll).  Status transitions are logged and, if
``alert_webhook_url`` is set, POSTed there as JSON.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from src.services.common import (
    LOG_LEVELS,
    ConfigReader,
    Lifecycle,
    ListenAddress,
    Notifier,
    Response,
    atomic_write_json,
    default_state_dir,
    ensure_writable_dir,
    json_safe,
    load_toml,
    parse_prometheus,
    read_listen,
    run_service,
    setup_logging,
    start_http_server,
    utc_iso,
)

LOG = logging.getLogger("virtuoso.health_monitor")

SERVICE = "virtuoso-health-monitor"
STATUS_FILE = "health_status.json"
OK, DEGRADED, FAILING = "ok", "degraded", "failing"
_RANK = {OK: 0, DEGRADED: 1, FAILING: 2}

# The 24-48 h watch list of the manual process, as substrings of raw log lines.
LOG_PATTERNS: dict[str, tuple[str, ...]] = {
    "division_error": ("ZeroDivisionError", "division by zero"),
    "nonfinite_warning": ("RuntimeWarning", "invalid value", "divide by zero", "overflow encountered"),
    "traceback": ("Traceback (most recent call last)",),
}


# --------------------------------------------------------------------------------------------
# Config


@dataclass(frozen=True)
class Thresholds:
    """The ``[thresholds]`` table; a ``*_failing`` limit of 0 disables that failing rule."""

    trading_failures_before_failing: int = 2
    memory_available_degraded_percent: float = 15.0
    memory_available_failing_percent: float = 5.0
    disk_free_degraded_percent: float = 15.0
    disk_free_failing_percent: float = 5.0
    load_per_cpu_degraded: float = 2.0
    load_per_cpu_failing: float = 0.0
    log_events_degraded: int = 1
    log_events_failing: int = 0
    nonfinite_values_degraded: int = 1


@dataclass(frozen=True)
class MonitorConfig:
    """Validated monitor config (see config/health_monitor.example.toml for every key)."""

    trading_url: str = "http://127.0.0.1:8787"
    poll_interval_seconds: float = 30.0
    request_timeout_seconds: float = 5.0
    state_dir: Path = field(default_factory=default_state_dir)
    listen: ListenAddress = field(default_factory=lambda: ListenAddress("127.0.0.1", 8788))
    log_level: str = "INFO"
    log_file: Path | None = None
    log_max_bytes: int = 10 * 1024 * 1024
    log_backup_count: int = 5
    trading_log_file: Path | None = None
    log_scan_max_bytes: int = 1024 * 1024
    log_event_window_seconds: float = 3600.0
    disk_paths: tuple[Path, ...] = ()
    meminfo_path: Path = Path("/proc/meminfo")
    alert_webhook_url: str | None = None
    alert_timeout_seconds: float = 5.0
    thresholds: Thresholds = field(default_factory=Thresholds)


def parse_config(data: Mapping[str, Any]) -> MonitorConfig:
    """Validate a parsed TOML document; raises ConfigError naming the first bad key."""
    r = ConfigReader(data)
    d = MonitorConfig()
    trading_url = r.string("trading_url", d.trading_url).rstrip("/")
    if not trading_url.startswith(("http://", "https://")):
        raise r.fail("trading_url", "an http:// or https:// URL", trading_url)
    webhook = r.optional_string("alert_webhook_url")
    if webhook is not None and not webhook.startswith(("http://", "https://")):
        raise r.fail("alert_webhook_url", "an http:// or https:// URL", webhook)
    state_dir = r.path("state_dir", default_state_dir())
    disk_paths = tuple(Path(p) for p in r.string_list("disk_paths", (str(state_dir),)))
    cfg = MonitorConfig(
        trading_url=trading_url,
        poll_interval_seconds=r.number("poll_interval_seconds", d.poll_interval_seconds),
        request_timeout_seconds=r.number("request_timeout_seconds", d.request_timeout_seconds),
        state_dir=state_dir,
        listen=read_listen(r, "listen", "127.0.0.1:8788"),
        log_level=r.string("log_level", d.log_level, choices=LOG_LEVELS),
        log_file=r.optional_path("log_file"),
        log_max_bytes=r.integer("log_max_bytes", d.log_max_bytes, minimum=1024),
        log_backup_count=r.integer("log_backup_count", d.log_backup_count, minimum=0),
        trading_log_file=r.optional_path("trading_log_file"),
        log_scan_max_bytes=r.integer("log_scan_max_bytes", d.log_scan_max_bytes, minimum=1024),
        log_event_window_seconds=r.number("log_event_window_seconds", d.log_event_window_seconds),
        disk_paths=disk_paths,
        meminfo_path=r.path("meminfo_path", d.meminfo_path),
        alert_webhook_url=webhook,
        alert_timeout_seconds=r.number("alert_timeout_seconds", d.alert_timeout_seconds),
        thresholds=_thresholds(r.table("thresholds")),
    )
    r.finish()
    return cfg


def _thresholds(t: ConfigReader) -> Thresholds:
    d = Thresholds()

    def pct(key: str, default: float) -> float:
        value = t.number(key, default, strict=False)
        if value > 100:
            raise t.fail(key, "a percentage between 0 and 100", value)
        return value

    out = Thresholds(
        trading_failures_before_failing=t.integer(
            "trading_failures_before_failing", d.trading_failures_before_failing
        ),
        memory_available_degraded_percent=pct(
            "memory_available_degraded_percent", d.memory_available_degraded_percent
        ),
        memory_available_failing_percent=pct(
            "memory_available_failing_percent", d.memory_available_failing_percent
        ),
        disk_free_degraded_percent=pct("disk_free_degraded_percent", d.disk_free_degraded_percent),
        disk_free_failing_percent=pct("disk_free_failing_percent", d.disk_free_failing_percent),
        load_per_cpu_degraded=t.number("load_per_cpu_degraded", d.load_per_cpu_degraded, strict=False),
        load_per_cpu_failing=t.number("load_per_cpu_failing", d.load_per_cpu_failing, strict=False),
        log_events_degraded=t.integer("log_events_degraded", d.log_events_degraded, minimum=0),
        log_events_failing=t.integer("log_events_failing", d.log_events_failing, minimum=0),
        nonfinite_values_degraded=t.integer(
            "nonfinite_values_degraded", d.nonfinite_values_degraded, minimum=0
        ),
    )
    t.finish()
    return out


def load_config(path: Path | None) -> MonitorConfig:
    """Read and validate ``path`` (``None``: all defaults)."""
    return parse_config(load_toml(path))


# --------------------------------------------------------------------------------------------
# Checks (each returns a JSON-able dict plus (severity, reason) findings)

Finding = tuple[str, str]


def _limit_check(value: float, degraded: float, failing: float, below: bool) -> str:
    """Severity of ``value`` against thresholds; 0 disables a limit."""

    def crossed(limit: float) -> bool:
        return limit > 0 and (value < limit if below else value > limit)

    if crossed(failing):
        return FAILING
    if crossed(degraded):
        return DEGRADED
    return OK


def read_memory(meminfo_path: Path) -> dict[str, Any]:
    """MemTotal/MemAvailable from meminfo, falling back to sysconf when the unit hides /proc.

    Never raises: an unreadable source yields ``{"available": False, "error": ...}``.
    """
    try:
        fields: dict[str, int] = {}
        with meminfo_path.open(encoding="ascii") as fh:
            for line in fh:
                name, _, rest = line.partition(":")
                parts = rest.split()
                if parts and parts[0].isdigit():
                    fields[name] = int(parts[0]) * 1024
        total, avail = fields["MemTotal"], fields["MemAvailable"]
        source = str(meminfo_path)
    except (OSError, KeyError, ValueError) as exc:
        try:
            page = os.sysconf("SC_PAGE_SIZE")
            total = os.sysconf("SC_PHYS_PAGES") * page
            # Free pages only (ignores reclaimable cache): pessimistic, hence marked approximate.
            avail = os.sysconf("SC_AVPHYS_PAGES") * page
            source = f"sysconf (approximate; meminfo unreadable: {exc.__class__.__name__})"
        except (OSError, ValueError) as exc2:
            return {"available": False, "error": f"{exc}; sysconf: {exc2}"}
    if total <= 0:
        return {"available": False, "error": "MemTotal is 0"}
    return {
        "available": True,
        "source": source,
        "total_bytes": total,
        "available_bytes": avail,
        "available_percent": round(100.0 * avail / total, 2),
    }


def read_disk(path: Path) -> dict[str, Any]:
    """Free space of the filesystem holding ``path`` (``os.statvfs``); never raises."""
    try:
        st = os.statvfs(path)
    except OSError as exc:
        return {"path": str(path), "available": False, "error": exc.strerror or str(exc)}
    total = st.f_blocks * st.f_frsize
    free = st.f_bavail * st.f_frsize
    return {
        "path": str(path),
        "available": total > 0,
        "total_bytes": total,
        "free_bytes": free,
        "free_percent": round(100.0 * free / total, 2) if total else None,
    }


def read_load() -> dict[str, Any]:
    """1/5/15-min load averages and the 1-min load per CPU; never raises."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError as exc:
        return {"available": False, "error": str(exc)}
    cpus = os.cpu_count() or 1
    return {
        "available": True,
        "load1": one,
        "load5": five,
        "load15": fifteen,
        "cpus": cpus,
        "per_cpu": one / cpus,
    }


@dataclass
class LogScanner:
    """Incremental scan of a (possibly rotating) log file for :data:`LOG_PATTERNS`.

    Guarantees: every byte is scanned at most once; at most ``max_bytes`` are read per call
    (the first call and any backlog larger than that read only the tail); rotation or
    truncation (inode change / shrink) restarts at the new file's tail; only complete lines are
    consumed, a partial last line waits for the next call.
    """

    path: Path
    max_bytes: int
    _inode: int | None = None
    _offset: int = 0

    def scan(self) -> dict[str, Any]:
        """``{"available", "bytes_read", "counts": {kind: n}, "samples": [...]}`` for the new bytes."""
        counts = dict.fromkeys(LOG_PATTERNS, 0)
        try:
            with self.path.open("rb") as fh:
                st = os.fstat(fh.fileno())
                if self._inode != st.st_ino or st.st_size < self._offset:
                    self._inode = st.st_ino
                    self._offset = max(0, st.st_size - self.max_bytes)
                start = max(self._offset, st.st_size - self.max_bytes)
                fh.seek(start)
                data = fh.read(st.st_size - start)
        except OSError as exc:
            return {"available": False, "error": exc.strerror or str(exc), "counts": counts, "samples": []}
        end = data.rfind(b"\n") + 1
        consumed = data[:end]
        if start > self._offset and b"\n" in consumed:
            # Skipped ahead into the middle of a line: drop that fragment.
            consumed = consumed[consumed.index(b"\n") + 1 :]
        self._offset = start + end
        samples: list[str] = []
        for line in consumed.decode("utf-8", "replace").splitlines():
            hit = False
            for kind, needles in LOG_PATTERNS.items():
                if any(n in line for n in needles):
                    counts[kind] += 1
                    hit = True
            if hit and len(samples) < 5:
                samples.append(line[:300])
        return {"available": True, "bytes_read": end, "counts": counts, "samples": samples}


# The trading service is local: an http_proxy in the environment must not reroute the polls.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _http_get(url: str, timeout: float) -> tuple[int, str]:
    """``(status, body)``; HTTP error statuses are returned, transport errors raise OSError."""
    try:
        with _DIRECT.open(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode("utf-8", "replace")


# --------------------------------------------------------------------------------------------
# Monitor


class HealthMonitor:
    """Poll loop, status document and ``/health``; see the module docstring.

    Thread model: :meth:`run` (worker thread) computes statuses; HTTP threads read the latest
    document under ``_lock``.
    """

    def __init__(self, config: MonitorConfig, notifier: Notifier | None = None) -> None:
        self.config = config
        self.notifier = notifier or Notifier({})
        self.status_path = config.state_dir / STATUS_FILE
        self.server: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()
        self._document: dict[str, Any] = {
            "service": SERVICE,
            "status": "starting",
            "reasons": ["no poll yet"],
        }
        self._status: str | None = None
        self._since: float | None = None
        self._trading_failures = 0
        self._polls = 0
        self._scanner = (
            LogScanner(config.trading_log_file, config.log_scan_max_bytes)
            if config.trading_log_file
            else None
        )
        # (time, kind, count) of log hits inside the event window
        self._log_events: deque[tuple[float, str, int]] = deque()
        self._prev_counters: dict[str, float] = {}

    # -- HTTP ---------------------------------------------------------------------------------

    def start_http(self) -> ListenAddress:
        """Bind and serve ``/health``; returns the bound address."""
        self.server = start_http_server(self.config.listen, {"/health": self.health})
        host, port = self.server.server_address[:2]
        return ListenAddress(str(host), int(port))

    def health(self) -> Response:
        """``GET /health``: the status document, 503 when failing or before the first poll."""
        with self._lock:
            doc = dict(self._document)
        return Response.json(200 if doc["status"] in (OK, DEGRADED) else 503, doc)

    # -- loop ---------------------------------------------------------------------------------

    def run(self, lifecycle: Lifecycle) -> None:
        """Poll every ``poll_interval_seconds`` until stopping."""
        LOG.info("health monitor loop started", extra={"trading_url": self.config.trading_url})
        next_start = time.monotonic()
        while not lifecycle.stopping:
            self.poll()
            next_start = max(next_start + self.config.poll_interval_seconds, time.monotonic())
            if lifecycle.sleep(next_start - time.monotonic()):
                break

    def poll(self) -> dict[str, Any]:
        """Run every check once, publish the status document and handle transitions."""
        now = time.time()
        findings: list[Finding] = []
        checks = {
            "trading": self._check_trading(findings),
            "metrics": self._check_metrics(findings),
            "memory": self._check_memory(findings),
            "disk": self._check_disk(findings),
            "load": self._check_load(findings),
            "log": self._check_log(findings, now),
        }
        status = max((sev for sev, _ in findings), key=_RANK.__getitem__, default=OK)
        previous = self._status
        if status != previous:
            self._since = now
        self._polls += 1
        document = {
            "service": SERVICE,
            "status": status,
            "reasons": [f"{sev}: {text}" for sev, text in sorted(findings, key=lambda f: -_RANK[f[0]])],
            "checked_at": utc_iso(now),
            "status_since": utc_iso(self._since),
            "polls": self._polls,
            "trading_url": self.config.trading_url,
            "checks": checks,
        }
        # File first: whoever sees the new status over HTTP can also read it from disk.
        try:
            atomic_write_json(self.status_path, document)
        except OSError as exc:
            LOG.error("cannot write status file", extra={"path": str(self.status_path), "error": str(exc)})
        with self._lock:
            self._document = json_safe(document)
            self._status = status
        if status != previous:
            self._on_transition(previous, document)
        if self._polls == 1:
            self.notifier.ready(f"first poll: {status}")
        self.notifier.watchdog()
        self.notifier.status(f"{status}: {'; '.join(document['reasons'][:2]) or 'all checks passed'}")
        return document

    def _on_transition(self, previous: str | None, document: dict[str, Any]) -> None:
        level = logging.INFO if document["status"] == OK else logging.WARNING
        LOG.log(
            level,
            f"status {previous or 'starting'} -> {document['status']}",
            extra={"previous": previous, "status": document["status"], "reasons": document["reasons"]},
        )
        if self.config.alert_webhook_url and previous is not None:
            self._send_alert(previous, document)

    def _send_alert(self, previous: str, document: dict[str, Any]) -> None:
        payload = {
            "service": SERVICE,
            "host": socket.gethostname(),
            "previous": previous,
            "status": document["status"],
            "reasons": document["reasons"],
            "at": document["checked_at"],
        }
        request = urllib.request.Request(
            str(self.config.alert_webhook_url),
            data=json.dumps(payload).encode("utf-8"),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.config.alert_timeout_seconds) as resp:
                resp.read()
            LOG.info("alert sent", extra={"status": document["status"]})
        except (OSError, ValueError) as exc:
            # An unreachable webhook must not stop monitoring; the transition is in the log anyway.
            LOG.warning("alert webhook failed", extra={"error": str(exc)})

    # -- individual checks ----------------------------------------------------------------------

    def _check_trading(self, findings: list[Finding]) -> dict[str, Any]:
        url = self.config.trading_url + "/health"
        try:
            code, body = _http_get(url, self.config.request_timeout_seconds)
        except (OSError, ValueError) as exc:
            code, body, error = None, "", f"unreachable: {getattr(exc, 'reason', exc)}"
        else:
            error = None if code == 200 else f"/health answered {code}"
        try:
            detail = json.loads(body) if body else None
        except ValueError:
            detail = None
        self._trading_failures = 0 if error is None else self._trading_failures + 1
        if error is not None:
            last_error = detail.get("last_error") if isinstance(detail, dict) else None
            reason = f"trading service {error}" + (
                f" (last error: {last_error['message']})" if last_error else ""
            )
            limit = self.config.thresholds.trading_failures_before_failing
            findings.append((FAILING if self._trading_failures >= limit else DEGRADED, reason))
        return {
            "url": url,
            "http_status": code,
            "error": error,
            "consecutive_failures": self._trading_failures,
            "health": detail,
        }

    def _check_metrics(self, findings: list[Finding]) -> dict[str, Any]:
        url = self.config.trading_url + "/metrics"
        try:
            code, body = _http_get(url, self.config.request_timeout_seconds)
        except (OSError, ValueError) as exc:
            return {"available": False, "error": str(getattr(exc, "reason", exc))}
        if code != 200:
            return {"available": False, "error": f"/metrics answered {code}"}
        samples = parse_prometheus(body)
        wanted = {
            "cycles_total": "virtuoso_trading_cycles_total",
            "nonfinite_values_total": "virtuoso_trading_nonfinite_values_total",
            "guard_fallbacks_total": "virtuoso_trading_guard_fallbacks_total",
            "runtime_warnings_total": "virtuoso_trading_runtime_warnings_total",
            "source_retries_total": "virtuoso_trading_source_retries_total",
        }
        values = {k: samples.get(v) for k, v in wanted.items()}
        values["errors_total"] = sum(
            v for k, v in samples.items() if k.startswith("virtuoso_trading_errors_total")
        )
        deltas = {
            k: (v - self._prev_counters[k]) if k in self._prev_counters and v is not None else None
            for k, v in values.items()
        }
        self._prev_counters = {k: v for k, v in values.items() if v is not None}
        nonfinite = values["nonfinite_values_total"] or 0
        limit = self.config.thresholds.nonfinite_values_degraded
        if limit and nonfinite >= limit:
            findings.append((DEGRADED, f"trading produced {int(nonfinite)} non-finite indicator values"))
        return {"available": True, "values": values, "deltas_since_last_poll": deltas}

    def _check_memory(self, findings: list[Finding]) -> dict[str, Any]:
        mem = read_memory(self.config.meminfo_path)
        if mem["available"]:
            t = self.config.thresholds
            pct = mem["available_percent"]
            sev = _limit_check(
                pct, t.memory_available_degraded_percent, t.memory_available_failing_percent, True
            )
            if sev != OK:
                findings.append((sev, f"memory available {pct:.1f}%"))
        return mem

    def _check_disk(self, findings: list[Finding]) -> list[dict[str, Any]]:
        t = self.config.thresholds
        out = []
        for path in self.config.disk_paths:
            disk = read_disk(path)
            if disk["available"] and disk["free_percent"] is not None:
                sev = _limit_check(
                    disk["free_percent"], t.disk_free_degraded_percent, t.disk_free_failing_percent, True
                )
                if sev != OK:
                    findings.append((sev, f"disk free {disk['free_percent']:.1f}% on {path}"))
            out.append(disk)
        return out

    def _check_load(self, findings: list[Finding]) -> dict[str, Any]:
        load = read_load()
        if load["available"]:
            t = self.config.thresholds
            sev = _limit_check(load["per_cpu"], t.load_per_cpu_degraded, t.load_per_cpu_failing, False)
            if sev != OK:
                findings.append((sev, f"load {load['load1']:.2f} on {load['cpus']} CPUs"))
        return load

    def _check_log(self, findings: list[Finding], now: float) -> dict[str, Any]:
        if self._scanner is None:
            return {"configured": False}
        result = self._scanner.scan()
        for kind, n in result["counts"].items():
            if n:
                self._log_events.append((now, kind, n))
        horizon = now - self.config.log_event_window_seconds
        while self._log_events and self._log_events[0][0] < horizon:
            self._log_events.popleft()
        window: dict[str, int] = dict.fromkeys(LOG_PATTERNS, 0)
        for _, kind, n in self._log_events:
            window[kind] += n
        total = sum(window.values())
        t = self.config.thresholds
        if t.log_events_failing and total >= t.log_events_failing:
            sev = FAILING
        elif t.log_events_degraded and total >= t.log_events_degraded:
            sev = DEGRADED
        else:
            sev = OK
        if sev != OK:
            detail = ", ".join(f"{k}={v}" for k, v in window.items() if v)
            findings.append(
                (sev, f"trading log: {detail} in the last {self.config.log_event_window_seconds:g}s")
            )
        if not result["available"]:
            findings.append((DEGRADED, f"trading log unreadable: {result['error']}"))
        return {"configured": True, "path": str(self._scanner.path), **result, "window_counts": window}

    def close(self) -> None:
        """Stop HTTP."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


# --------------------------------------------------------------------------------------------
# Wiring


def start(config: MonitorConfig, notifier: Notifier, _lifecycle: Lifecycle) -> HealthMonitor:
    """Logging, state dir, HTTP listener (the run_service ``build`` hook)."""
    setup_logging(config.log_level, config.log_file, config.log_max_bytes, config.log_backup_count)
    ensure_writable_dir(config.state_dir, "state_dir")
    monitor = HealthMonitor(config, notifier)
    address = monitor.start_http()
    LOG.info(
        "virtuoso-health-monitor starting",
        extra={
            "pid": os.getpid(),
            "listen": str(address),
            "trading_url": config.trading_url,
            "trading_log_file": str(config.trading_log_file) if config.trading_log_file else None,
            "state_dir": str(config.state_dir),
            "webhook": bool(config.alert_webhook_url),
            "systemd_notify": notifier.enabled,
        },
    )
    return monitor


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0 clean stop, 2 config error, 1 other failure)."""
    return run_service(
        "python -m src.services.health_monitor",
        "Virtuoso health monitor for the trading service and its host.",
        argv,
        load_config,
        start,
    )


if __name__ == "__main__":
    raise SystemExit(main())
