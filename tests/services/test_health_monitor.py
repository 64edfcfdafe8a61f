"""virtuoso-health-monitor: subprocess against a real trading subprocess, log scanning, webhook."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from src.services.health_monitor import (
    HealthMonitor,
    LogScanner,
    MonitorConfig,
    Thresholds,
    load_config,
    parse_config,
    read_disk,
    read_load,
    read_memory,
)
from tests.services.helpers import REPO, free_port, http_json, trading_config, wait_until, write_toml

MONITOR = "src.services.health_monitor"
TRADING = "src.services.trading"
QUIET_HOST = {  # host checks off: this test machine's load/disk must not decide the outcome
    "load_per_cpu_degraded": 0.0,
    "disk_free_degraded_percent": 0.0,
    "disk_free_failing_percent": 0.0,
    "memory_available_degraded_percent": 0.0,
    "memory_available_failing_percent": 0.0,
}


class WebhookSink:
    """Local HTTP server collecting POSTed JSON alerts."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                sink.received.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook():
    sink = WebhookSink()
    yield sink
    sink.close()


def _status(port: int) -> tuple[int, dict[str, Any]]:
    return http_json(f"http://127.0.0.1:{port}/health")


def test_monitor_follows_trading_down_and_up(tmp_path: Path, spawn, webhook, notify_sink) -> None:
    trading_port, monitor_port = free_port(), free_port()
    # a 0.5 s interval (stale after 1.5 s) so a loaded CI machine does not flap the status
    tcfg = write_toml(tmp_path / "trading.toml", trading_config(tmp_path, trading_port, interval_seconds=0.5))
    mcfg = write_toml(
        tmp_path / "monitor.toml",
        {
            "trading_url": f"http://127.0.0.1:{trading_port}",
            "poll_interval_seconds": 0.2,
            "request_timeout_seconds": 1,
            "state_dir": tmp_path / "monitor-state",
            "listen": f"127.0.0.1:{monitor_port}",
            "trading_log_file": tmp_path / "log" / "trading.log",
            "alert_webhook_url": webhook.url,
            "thresholds": {"trading_failures_before_failing": 1, **QUIET_HOST},
        },
    )
    trading = spawn(TRADING, tcfg)
    wait_until((tmp_path / "state" / "trading_state.json").exists)
    monitor = spawn(MONITOR, mcfg, env={"NOTIFY_SOCKET": str(notify_sink.path), "WATCHDOG_USEC": "5000000"})

    last = lambda: _status(monitor_port)  # noqa: E731
    code, doc = wait_until(lambda: (r := last())[1]["status"] == "ok" and r, describe=last)
    assert code == 200
    assert doc["reasons"] == []
    assert doc["checks"]["trading"]["http_status"] == 200
    assert doc["checks"]["metrics"]["values"]["nonfinite_values_total"] == 0
    assert doc["checks"]["log"]["configured"] is True
    assert doc["checks"]["memory"]["available"] is True
    status_file = json.loads((tmp_path / "monitor-state" / "health_status.json").read_text())
    assert status_file["status"] == "ok"
    assert notify_sink.has("READY=1")
    assert notify_sink.has("WATCHDOG=1")

    assert trading.terminate()[0] == 0
    code, doc = wait_until(lambda: (r := last())[1]["status"] == "failing" and r, describe=last)
    assert code == 503
    assert any("trading service unreachable" in r for r in doc["reasons"])

    trading = spawn(TRADING, tcfg)
    code, doc = wait_until(lambda: (r := last())[1]["status"] == "ok" and r, timeout=15, describe=last)
    assert code == 200

    wait_until(lambda: len(webhook.received) >= 2)
    assert [(a["previous"], a["status"]) for a in webhook.received[:2]] == [
        ("ok", "failing"),
        ("failing", "ok"),
    ]
    assert all(a["service"] == "virtuoso-health-monitor" for a in webhook.received)

    code, elapsed = monitor.terminate()
    assert (code, elapsed < 5) == (0, True)
    assert notify_sink.has("STOPPING=1")
    transitions = [json.loads(line) for line in monitor.stdout.splitlines() if '"status ' in line]
    assert [t["msg"] for t in transitions][:3] == [
        "status starting -> ok",
        "status ok -> failing",
        "status failing -> ok",
    ]
    assert trading.terminate()[0] == 0


def _monitor(tmp_path: Path, failures: int = 2, **kw: Any) -> HealthMonitor:
    cfg = MonitorConfig(
        trading_url=f"http://127.0.0.1:{free_port()}",  # nothing listens there
        request_timeout_seconds=0.5,
        state_dir=tmp_path,
        disk_paths=(tmp_path,),
        thresholds=Thresholds(**{"trading_failures_before_failing": failures, **QUIET_HOST}),
        **kw,
    )
    return HealthMonitor(cfg)


def test_log_scan_detects_watch_list_and_degrades(tmp_path: Path) -> None:
    log = tmp_path / "trading.log"
    log.write_text('{"msg": "old Traceback (most recent call last) before start"}\n' * 3)
    monitor = _monitor(tmp_path, failures=4, trading_log_file=log, log_scan_max_bytes=1024)
    first = monitor.poll()
    # first poll reads only the tail (1 KiB) -> the old tracebacks still count once seen
    assert first["checks"]["log"]["counts"]["traceback"] == 3
    with log.open("a") as fh:
        fh.write('{"msg": "ZeroDivisionError: float division by zero"}\n')
        fh.write('{"msg": "RuntimeWarning: invalid value encountered in divide"}\n')
        fh.write('{"msg": "cycle done"}\n')
        fh.write('{"msg": "partial line without newline RuntimeWarning')
    doc = monitor.poll()
    counts = doc["checks"]["log"]["counts"]
    assert counts == {"division_error": 1, "nonfinite_warning": 1, "traceback": 0}
    assert doc["status"] == "degraded"  # trading unreachable (< 4 polls) + log events
    assert any("trading log:" in r for r in doc["reasons"])
    with log.open("a") as fh:
        fh.write(" end\n")
    assert monitor.poll()["checks"]["log"]["counts"]["nonfinite_warning"] == 1
    assert monitor.poll()["status"] == "failing"  # trading now unreachable for 4 polls


def test_log_scanner_rotation_and_tail_limit(tmp_path: Path) -> None:
    log = tmp_path / "t.log"
    log.write_text("x" * 5000 + "\nZeroDivisionError\n")
    scanner = LogScanner(log, max_bytes=1024)
    assert scanner.scan()["counts"]["division_error"] == 1
    assert scanner.scan()["counts"]["division_error"] == 0  # nothing new
    log.rename(tmp_path / "t.log.1")
    log.write_text("Traceback (most recent call last)\n")
    assert scanner.scan()["counts"]["traceback"] == 1
    log.write_text("")  # truncated
    assert scanner.scan()["bytes_read"] == 0
    missing = LogScanner(tmp_path / "nope.log", 1024).scan()
    assert missing["available"] is False


def test_host_readers_degrade_gracefully(tmp_path: Path) -> None:
    mem = read_memory(tmp_path / "no-meminfo")
    assert mem["available"] is True and "sysconf" in mem["source"]
    real = read_memory(Path("/proc/meminfo"))
    assert 0 < real["available_percent"] <= 100
    assert read_disk(tmp_path)["free_percent"] > 0
    assert read_disk(tmp_path / "missing")["available"] is False
    assert read_load()["cpus"] >= 1


def test_thresholds_drive_status(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 1000 kB\nMemFree: 10 kB\nMemAvailable: 30 kB\n")
    monitor = _monitor(tmp_path, meminfo_path=meminfo)
    object.__setattr__(
        monitor.config,
        "thresholds",
        Thresholds(trading_failures_before_failing=5, memory_available_failing_percent=5),
    )
    doc = monitor.poll()
    assert doc["status"] == "failing"
    assert "failing: memory available 3.0%" in doc["reasons"]


def test_monitor_503_before_first_poll(tmp_path: Path) -> None:
    monitor = _monitor(tmp_path)
    assert monitor.health().status == 503


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"poll_interval_seconds": "abc"},
            "config error: poll_interval_seconds must be a positive number, got 'abc'",
        ),
        ({"trading_url": "127.0.0.1:8787"}, "config error: trading_url must be an http:// or https:// URL"),
        (
            {"thresholds": {"disk_free_failing_percent": 150}},
            "config error: thresholds.disk_free_failing_percent",
        ),
        ({"thresholds": 3}, "config error: thresholds must be a table, got 3"),
        ({"disk_paths": []}, "config error: disk_paths must be a non-empty list of distinct strings, got []"),
    ],
)
def test_invalid_config_exits_2(tmp_path: Path, data: dict, expected: str) -> None:
    cfg = write_toml(tmp_path / "m.toml", data)
    result = subprocess.run(
        [sys.executable, "-m", MONITOR, "--config", str(cfg)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith(expected), result.stderr


def test_example_config_is_valid_and_documents_every_key() -> None:
    example = REPO / "config" / "health_monitor.example.toml"
    load_config(example)
    text = example.read_text()
    for key in (*MonitorConfig.__dataclass_fields__, *Thresholds.__dataclass_fields__):
        if key != "thresholds":
            assert f"{key} =" in text, key


def test_state_dir_default_honours_state_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", f"{tmp_path}/a:{tmp_path}/b")
    cfg = parse_config({})
    assert cfg.state_dir == tmp_path / "a"
    assert cfg.disk_paths == (tmp_path / "a",)
    monkeypatch.delenv("STATE_DIRECTORY")
    assert parse_config({}).state_dir == Path("state")
    assert os.environ.get("STATE_DIRECTORY") is None
