"""Helpers for the service tests: free loopback ports, subprocess services, polling with deadlines.

Fixtures are registered in conftest.py (which imports them from here).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(
    predicate: Callable[[], Any],
    timeout: float = 10.0,
    interval: float = 0.05,
    describe: Callable[[], Any] | None = None,
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test at the deadline.

    ``describe`` is called on timeout to put the last observed state into the failure message.
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except (OSError, ValueError, KeyError, AssertionError) as exc:
            last_exc = exc
            value = None
        if value:
            return value
        time.sleep(interval)
    state = ""
    if describe is not None:
        try:
            state = f"; last state: {describe()!r}"
        except Exception as exc:
            state = f"; describe failed: {exc!r}"
    raise AssertionError(f"condition not met within {timeout}s (last error: {last_exc!r}){state}")


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with _DIRECT.open(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()


def http_json(url: str) -> tuple[int, dict[str, Any]]:
    code, body = http_get(url)
    return code, json.loads(body)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | Path):
        return json.dumps(str(value))
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return repr(value)


def write_toml(path: Path, data: dict[str, Any]) -> Path:
    """Minimal TOML writer (flat keys plus one level of tables) for test configs."""
    lines = [f"{k} = {toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for k, v in data.items():
        if isinstance(v, dict):
            lines.append(f"\n[{k}]")
            lines.extend(f"{kk} = {toml_value(vv)}" for kk, vv in v.items())
    path.write_text("\n".join(lines) + "\n")
    return path


class ServiceProcess:
    """A service started as ``sys.executable -m <module> --config <path>`` from the repo root."""

    def __init__(self, module: str, config: Path | None, env: dict[str, str] | None = None, cwd: Path = REPO):
        self.module = module
        full_env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
        full_env["PYTHONPATH"] = str(REPO)
        full_env.update(env or {})
        args = [sys.executable, "-m", module] + (["--config", str(config)] if config else [])
        self.proc = subprocess.Popen(
            args, cwd=cwd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.stdout = ""
        self.stderr = ""

    def terminate(self, timeout: float = 5.0) -> tuple[int, float]:
        """SIGTERM; returns (exit code, seconds until exit)."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.stdout, self.stderr = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.stdout, self.stderr = self.proc.communicate()
            raise AssertionError(f"{self.module} did not exit within {timeout}s of SIGTERM") from None
        return self.proc.returncode, time.monotonic() - started

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.stdout, self.stderr = self.proc.communicate()


@pytest.fixture
def spawn() -> Iterator[Callable[..., ServiceProcess]]:
    """Start services; anything still running at teardown is killed."""
    started: list[ServiceProcess] = []

    def _spawn(module: str, config: Path | None, **kwargs: Any) -> ServiceProcess:
        svc = ServiceProcess(module, config, **kwargs)
        started.append(svc)
        return svc

    yield _spawn
    for svc in started:
        svc.kill()


class NotifySink:
    """A unix datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                return self.messages

    def has(self, needle: str) -> bool:
        return any(needle in m.splitlines() for m in self.drain())


@pytest.fixture
def notify_sink(tmp_path: Path) -> Iterator[NotifySink]:
    # AF_UNIX paths are limited to ~107 bytes; tmp_path can be longer.
    short = Path("/tmp") / f"vnotify-{os.getpid()}-{time.monotonic_ns()}.sock"
    sink = NotifySink(short)
    yield sink
    sink.sock.close()
    short.unlink(missing_ok=True)


def trading_config(tmp_path: Path, port: int, **overrides: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        # 0.25 s keeps the runs short; /health goes stale only after 3 intervals (0.75 s) of stall
        "interval_seconds": 0.25,
        "state_dir": tmp_path / "state",
        "listen": f"127.0.0.1:{port}",
        "log_file": tmp_path / "log" / "trading.log",
    }
    cfg.update(overrides)
    return cfg
