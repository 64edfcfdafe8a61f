"""src.services.common: config reader, atomic writes, JSON logs, sd_notify, HTTP, Prometheus text."""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from src.services.common import (
    ConfigError,
    ConfigReader,
    JsonFormatter,
    ListenAddress,
    Notifier,
    Response,
    atomic_write_json,
    json_safe,
    parse_prometheus,
    prom_metric,
    start_http_server,
)
from tests.services.helpers import http_get


def test_config_reader_messages_name_key_and_type() -> None:
    r = ConfigReader({"a": "abc", "b": True, "c": [1], "t": {"x": "y"}})
    with pytest.raises(ConfigError, match=r"^a must be a positive number, got 'abc'$"):
        r.number("a", 1.0)
    with pytest.raises(ConfigError, match=r"^b must be an integer >= 1, got True$"):
        r.integer("b", 1)
    with pytest.raises(ConfigError, match=r"^c must be a non-empty list of distinct strings, got \[1\]$"):
        r.string_list("c", ())
    with pytest.raises(ConfigError, match=r"^t\.x must be a positive number, got 'y'$"):
        r.table("t").number("x", 1.0)
    assert r.number("missing", 2.5) == 2.5
    r2 = ConfigReader({"known": 1, "typo": 2})
    r2.integer("known", 1)
    with pytest.raises(ConfigError, match=r"^typo is not a known key"):
        r2.finish()


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_number_accepts_exactly_positive_finite(value: float) -> None:
    r = ConfigReader({"k": value})
    if math.isfinite(value) and value > 0:
        assert r.number("k", 1.0) == value
    else:
        with pytest.raises(ConfigError):
            r.number("k", 1.0)


def test_atomic_write_json_is_strict_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "state.json"
    atomic_write_json(target, {"x": math.nan, "y": [math.inf, 1.5]})
    assert json.loads(target.read_text()) == {"x": None, "y": [None, 1.5]}
    atomic_write_json(target, {"x": 2})
    assert json.loads(target.read_text()) == {"x": 2}
    assert [p.name for p in target.parent.iterdir()] == ["state.json"]


def test_atomic_write_failure_keeps_old_file(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    atomic_write_json(target, {"old": True})
    with pytest.raises(TypeError):
        atomic_write_json(target, {"bad": object()})
    assert json.loads(target.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_json_formatter_one_line_with_extras_and_traceback() -> None:
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "boom %s", ("here",), sys.exc_info())
    record.symbol = "BTC/USDT"
    line = JsonFormatter().format(record)
    assert "\n" not in line
    data = json.loads(line)
    assert data["msg"] == "boom here"
    assert data["symbol"] == "BTC/USDT"
    assert "Traceback (most recent call last)" in data["exc"]
    assert "ZeroDivisionError" in data["exc"]


def test_notifier_path_and_abstract(tmp_path: Path) -> None:
    assert not Notifier({}).enabled
    Notifier({}).ready()  # no-op without systemd
    path = Path("/tmp") / f"vn-{os.getpid()}.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sink:
        sink.bind(str(path))
        try:
            n = Notifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "3000000"})
            assert n.watchdog_seconds == 3.0
            n.ready("hi")
            n.watchdog()
            n.stopping()
            assert sink.recv(100) == b"READY=1\nSTATUS=hi"
            assert sink.recv(100) == b"WATCHDOG=1"
            assert sink.recv(100) == b"STOPPING=1"
            n.close()
        finally:
            path.unlink()
    # watchdog for another pid is not ours; a vanished socket never raises
    other = Notifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "1", "WATCHDOG_PID": "1"})
    assert other.watchdog_seconds is None
    assert other.notify("READY=1") is False
    other.close()
    assert Notifier({"NOTIFY_SOCKET": "@abstract-name"})._address == "\0abstract-name"


def test_http_server_routes_404_and_500() -> None:
    def boom() -> Response:
        raise RuntimeError("x")

    server = start_http_server(
        ListenAddress("127.0.0.1", 0), {"/ok": lambda: Response.json(200, {"v": math.nan}), "/boom": boom}
    )
    try:
        port = server.server_address[1]
        assert http_get(f"http://127.0.0.1:{port}/ok?x=1") == (200, '{\n  "v": null\n}\n')
        assert http_get(f"http://127.0.0.1:{port}/nope")[0] == 404
        assert http_get(f"http://127.0.0.1:{port}/boom")[0] == 500
    finally:
        server.shutdown()
        server.server_close()


def test_prometheus_round_trip() -> None:
    lines = prom_metric("m_total", "counter", "help", [({}, 3), ({"symbol": 'A"B'}, 1.5), ({}, math.inf)])
    assert lines[:3] == ["# HELP m_total help", "# TYPE m_total counter", "m_total 3"]
    assert lines[3] == 'm_total{symbol="A\\"B"} 1.5'
    parsed = parse_prometheus("\n".join(lines))
    assert parsed['m_total{symbol="A\\"B"}'] == 1.5
    assert json_safe({"a": (math.nan,)}) == {"a": [None]}
