"""virtuoso-trading end to end: subprocess on a free loopback port with the replay source."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from src.services.common import parse_prometheus
from src.services.sources import ReplaySource
from src.services.trading import (
    TradingConfig,
    TradingService,
    classify,
    count_nonfinite,
    load_config,
    parse_config,
)
from tests.services.helpers import (
    REPO,
    free_port,
    http_get,
    http_json,
    trading_config,
    wait_until,
    write_toml,
)

MODULE = "src.services.trading"


def _metrics(port: int) -> dict[str, float]:
    code, body = http_get(f"http://127.0.0.1:{port}/metrics")
    assert code == 200
    return parse_prometheus(body)


def test_replay_end_to_end(tmp_path: Path, spawn) -> None:
    port = free_port()
    cfg = write_toml(tmp_path / "trading.toml", trading_config(tmp_path, port))
    secret = "sk-test-DO-NOT-LEAK-12345"
    svc = spawn(MODULE, cfg, env={"VIRTUOSO_EXCHANGE_API_KEY": secret, "VIRTUOSO_EXCHANGE_SECRET": secret})

    # cycle 4 counted => outputs of cycles 1-3 are on disk (a cycle is counted just before its writes)
    wait_until(lambda: _metrics(port)["virtuoso_trading_cycles_total"] >= 4)
    code, health = http_json(f"http://127.0.0.1:{port}/health")
    assert code == 200
    assert health["status"] == "ok"
    assert health["symbols"] == ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
    assert health["cycle_count"] >= 3
    assert health["last_cycle_time"] is not None
    assert health["last_error"] is None

    code, body = http_get(f"http://127.0.0.1:{port}/metrics")
    for name in (
        "virtuoso_trading_cycles_total",
        "virtuoso_trading_cycle_duration_seconds_count",
        'virtuoso_trading_errors_total{kind="source"}',
        "virtuoso_trading_nonfinite_values_total",
        "virtuoso_trading_guard_fallbacks_total",
    ):
        assert name in parse_prometheus(body), name
    assert "# TYPE virtuoso_trading_cycle_duration_seconds histogram" in body
    assert all(line.startswith(("#", "virtuoso_trading_")) for line in body.splitlines())
    assert parse_prometheus(body)["virtuoso_trading_nonfinite_values_total"] == 0

    state = json.loads((tmp_path / "state" / "trading_state.json").read_text())
    assert set(state["symbols"]) == {"BTC/USDT", "ETH/USDT", "SOL/USDT"}
    for entry in state["symbols"].values():
        assert entry["error"] is None
        assert 0.0 <= entry["score"] <= 100.0
        assert entry["signal"] in {"bullish", "bearish", "neutral"}
        families = {k.split(".")[0] for k in entry["indicators"]}
        assert {"volume", "orderflow", "orderbook", "price_structure"} <= families
        assert all(isinstance(v, float) and math.isfinite(v) for v in entry["indicators"].values())
    signals = [json.loads(line) for line in (tmp_path / "state" / "signals.jsonl").read_text().splitlines()]
    assert len(signals) >= 9
    assert {s["symbol"] for s in signals} == {"BTC/USDT", "ETH/USDT", "SOL/USDT"}
    assert set(signals[0]) == {"time", "cycle", "symbol", "bar_time", "price", "score", "signal"}
    # no temp files left behind by the atomic writes
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == ["signals.jsonl", "trading_state.json"]

    code, elapsed = svc.terminate()
    assert code == 0
    assert elapsed < 5.0
    assert svc.stderr == ""
    log_lines = [json.loads(line) for line in svc.stdout.splitlines()]
    assert any(rec["msg"] == "cycle done" for rec in log_lines)
    assert log_lines[-1]["msg"] == "stopped"
    log_file = (tmp_path / "log" / "trading.log").read_text()
    assert "cycle done" in log_file
    everything = svc.stdout + log_file + "".join(p.read_text() for p in (tmp_path / "state").iterdir())
    assert secret not in everything


def test_health_is_503_until_first_cycle_and_when_stale(tmp_path: Path) -> None:
    config = TradingConfig(interval_seconds=0.05, state_dir=tmp_path)
    service = TradingService(config, ReplaySource(window_bars=100), symbols=["BTC/USDT"])
    healthy, body = service.health_payload()
    assert (healthy, body["status"]) == (False, "starting")
    service.run_cycle()
    healthy, body = service.health_payload()
    assert (healthy, body["status"]) == (True, "ok")
    healthy, body = service.health_payload(now=service.metrics.last_success_time + 0.2)
    assert (healthy, body["status"]) == (False, "stale")


def test_sd_notify_ready_watchdog_stopping(tmp_path: Path, spawn, notify_sink) -> None:
    port = free_port()
    cfg = write_toml(tmp_path / "trading.toml", trading_config(tmp_path, port))
    svc = spawn(MODULE, cfg, env={"NOTIFY_SOCKET": str(notify_sink.path), "WATCHDOG_USEC": "2000000"})
    wait_until(lambda: notify_sink.has("READY=1"))
    wait_until(lambda: sum("WATCHDOG=1" in m.splitlines() for m in notify_sink.drain()) >= 2)
    code, elapsed = svc.terminate()
    assert (code, elapsed < 5.0) == (0, True)
    assert notify_sink.has("STOPPING=1")
    ready_at = next(i for i, m in enumerate(notify_sink.messages) if "READY=1" in m.splitlines())
    first_watchdog = next(i for i, m in enumerate(notify_sink.messages) if "WATCHDOG=1" in m.splitlines())
    assert ready_at < first_watchdog


def test_sd_notify_abstract_namespace_socket(tmp_path: Path, spawn) -> None:
    name = f"virtuoso-test-{os.getpid()}-{free_port()}"
    sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sink.bind("\0" + name)
    sink.settimeout(10)
    try:
        port = free_port()
        cfg = write_toml(tmp_path / "trading.toml", trading_config(tmp_path, port))
        svc = spawn(MODULE, cfg, env={"NOTIFY_SOCKET": "@" + name})
        assert "READY=1" in sink.recv(4096).decode().splitlines()
        assert svc.terminate()[0] == 0
    finally:
        sink.close()


def test_no_config_uses_defaults(tmp_path: Path, spawn) -> None:
    """No --config: replay data, 127.0.0.1:8787, state in $STATE_DIRECTORY."""
    with socket.socket() as probe:
        # same option as the service: a TIME_WAIT left by an earlier run must not count as "in use"
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", 8787))
        except OSError:
            pytest.skip("127.0.0.1:8787 is in use on this machine")
    svc = spawn(MODULE, None, env={"STATE_DIRECTORY": str(tmp_path / "sd-state")}, cwd=tmp_path)
    _, health = wait_until(lambda: http_json("http://127.0.0.1:8787/health"))
    assert health["source"] == "replay"
    assert health["interval_seconds"] == 60.0
    wait_until((tmp_path / "sd-state" / "trading_state.json").exists)
    assert svc.terminate()[0] == 0
    assert not (tmp_path / "state").exists()


def _run_bad(tmp_path: Path, data: dict) -> subprocess.CompletedProcess[str]:
    cfg = write_toml(tmp_path / "bad.toml", data)
    return subprocess.run(
        [sys.executable, "-m", MODULE, "--config", str(cfg)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"interval_seconds": "abc"}, "config error: interval_seconds must be a positive number, got 'abc'"),
        ({"interval_seconds": -1}, "config error: interval_seconds must be a positive number, got -1"),
        ({"source": "csv"}, "config error: source must be one of 'replay', 'ccxt', got 'csv'"),
        ({"symbols": "BTC/USDT"}, "config error: symbols must be a non-empty list of distinct strings, got"),
        ({"listen": "localhost"}, "config error: listen must be a 'host:port' string, got 'localhost'"),
        ({"intervall_seconds": 5}, "config error: intervall_seconds is not a known key"),
        ({"ccxt": {"timeout_seconds": "x"}}, "config error: ccxt.timeout_seconds must be a positive number"),
        (
            {"replay": {"window_bars": 1.5}},
            "config error: replay.window_bars must be an integer >= 2, got 1.5",
        ),
        ({"log_level": "LOUD"}, "config error: log_level must be one of"),
    ],
)
def test_invalid_config_exits_2_with_one_line(tmp_path: Path, data: dict, expected: str) -> None:
    result = _run_bad(tmp_path, data)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(expected), lines[0]
    assert result.stdout == ""


def test_unparsable_and_missing_config_files(tmp_path: Path) -> None:
    bad = tmp_path / "broken.toml"
    bad.write_text("interval_seconds = = 3\n")
    for path, needle in ((bad, "is not valid TOML"), (tmp_path / "nope.toml", "does not exist")):
        result = subprocess.run(
            [sys.executable, "-m", MODULE, "--config", str(path)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 2
        assert len(result.stderr.splitlines()) == 1
        assert needle in result.stderr


def test_missing_replay_data_file_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-data.npz"
    result = _run_bad(tmp_path, {"replay": {"data_file": str(missing)}, "state_dir": str(tmp_path)})
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"config error: replay.data_file {str(missing)!r} does not exist "
        "(regenerate the bundled file with: python -m src.services.make_replay_data)"
    ]


def test_unknown_replay_symbol_and_unwritable_state_dir(tmp_path: Path) -> None:
    result = _run_bad(tmp_path, {"symbols": ["DOGE/USDT"], "state_dir": str(tmp_path)})
    assert result.returncode == 2
    assert "symbols entry 'DOGE/USDT' is not in the replay data" in result.stderr
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = _run_bad(tmp_path, {"state_dir": str(blocker / "sub"), "listen": f"127.0.0.1:{free_port()}"})
    assert result.returncode == 2
    assert result.stderr.startswith("config error: state_dir ")
    assert len(result.stderr.splitlines()) == 1


def test_port_in_use_is_exit_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _run_bad(tmp_path, trading_config(tmp_path, port))
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("error: ")


def test_check_config_flag(tmp_path: Path) -> None:
    cfg = write_toml(tmp_path / "ok.toml", trading_config(tmp_path, 1))
    result = subprocess.run(
        [sys.executable, "-m", MODULE, "--config", str(cfg), "--check-config"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (result.returncode, result.stdout.strip()) == (0, "config ok")
    assert not (tmp_path / "state").exists()


def test_example_config_is_valid_and_documents_every_key() -> None:
    example = REPO / "config" / "trading.example.toml"
    config = load_config(example)
    assert config.source == "replay"
    text = example.read_text()
    for key in (*TradingConfig.__dataclass_fields__, "data_file", "window_bars", "exchange", "max_retries"):
        if key in ("replay_data_file", "replay_window_bars", "ccxt"):
            continue
        assert f"{key} =" in text, key


def test_parse_config_rules() -> None:
    with pytest.raises(Exception, match="symbols must be a non-empty list"):
        parse_config({"source": "ccxt"})
    with pytest.raises(Exception, match="signal_buy_threshold"):
        parse_config({"signal_buy_threshold": 20, "signal_sell_threshold": 30})
    cfg = parse_config({"listen": "[::1]:9000", "symbols": ["BTC/USDT"]})
    assert (cfg.listen.host, cfg.listen.port, str(cfg.listen)) == ("::1", 9000, "[::1]:9000")


def test_helpers() -> None:
    assert count_nonfinite({"a": 1.0, "b": math.nan, "c": math.inf, "d": "x"}) == 3  # type: ignore[dict-item]
    assert classify(70, 65, 35) == "bullish"
    assert classify(30, 65, 35) == "bearish"
    assert classify(50, 65, 35) == "neutral"
    assert classify(math.nan, 65, 35) == "invalid"
