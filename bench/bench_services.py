"""Benchmark of the trading service (a script, not a timed test).

Goals (issue): one cycle for 3 symbols on replay data <= 50 ms; service RSS <= 150 MB after
100 cycles (the previous production service used 291 MB).

    .venv/bin/python bench/bench_services.py [--cycles 200] [--rss-cycles 100]

1. In-process: ``TradingService.run_cycle()`` over the bundled replay data (3 symbols), state
   and signals written to a temp dir exactly as in production; reports median / p95 / max.
2. Subprocess: ``python -m src.services.trading`` with a 10 ms interval, polled via /metrics until
   it has run the requested cycles, then VmRSS / VmHWM read from /proc/<pid>/status.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from src.indicators.scoring import analyze_symbol  # noqa: E402
from src.services.common import parse_prometheus  # noqa: E402
from src.services.sources import ReplaySource  # noqa: E402
from src.services.trading import TradingConfig, TradingService  # noqa: E402

CYCLE_GOAL_MS = 50.0
RSS_GOAL_MB = 150.0
PREVIOUS_RSS_MB = 291.0


def _summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median": statistics.median(ordered),
        "p95": ordered[int(0.95 * (len(ordered) - 1))],
        "max": ordered[-1],
    }


def bench_cycle(cycles: int) -> dict[str, object]:
    """Full cycles (fetch, analyze, fsync'd state write, signals append) and analysis alone."""
    with tempfile.TemporaryDirectory() as tmp:
        source = ReplaySource()
        service = TradingService(TradingConfig(state_dir=Path(tmp)), source)
        service.run_cycle()  # warm-up: first-call costs (imports, caches) are not steady state
        wall, cpu = [], []
        for _ in range(cycles):
            w0, c0 = time.perf_counter(), time.thread_time()
            results = service.run_cycle()
            cpu.append((time.thread_time() - c0) * 1000)
            wall.append((time.perf_counter() - w0) * 1000)
            assert all(r.error is None for r in results), [r.error for r in results]
        analysis = []
        for _ in range(cycles):
            w0 = time.perf_counter()
            for symbol in service.symbols:
                snap = source.fetch(symbol)
                analyze_symbol(snap.bars, snap.trades, snap.bids, snap.asks)
            analysis.append((time.perf_counter() - w0) * 1000)
        m = service.metrics
        return {
            "wall": _summary(wall),
            "cpu": _summary(cpu),
            "analysis": _summary(analysis),
            "symbols": len(service.symbols),
            "cycles": cycles,
            "nonfinite": m.nonfinite,
            "fallbacks_per_cycle": m.fallbacks / max(1, m.cycles),
        }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def bench_rss(cycles: int) -> dict[str, float]:
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "trading.toml"
        cfg.write_text(
            f'interval_seconds = 0.01\nstate_dir = "{tmp}/state"\nlisten = "127.0.0.1:{port}"\n'
            f'log_level = "WARNING"\nlog_file = "{tmp}/trading.log"\n'
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "src.services.trading", "--config", str(cfg)],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 120
            done = 0.0
            while time.monotonic() < deadline:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
                        done = parse_prometheus(resp.read().decode())["virtuoso_trading_cycles_total"]
                except OSError:
                    pass
                if done >= cycles:
                    break
                time.sleep(0.05)
            rss = _status_kb(proc.pid, "VmRSS") / 1024
            hwm = _status_kb(proc.pid, "VmHWM") / 1024
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(10)
    return {"cycles": done, "rss_mb": rss, "peak_rss_mb": hwm, "exit_code": code}


def _fmt(stats: dict[str, float]) -> str:
    return f"median {stats['median']:6.2f} ms   p95 {stats['p95']:6.2f} ms   max {stats['max']:6.2f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=200)
    parser.add_argument("--rss-cycles", type=int, default=100)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    c = bench_cycle(args.cycles)
    wall, cpu, analysis = c["wall"], c["cpu"], c["analysis"]
    assert isinstance(wall, dict) and isinstance(cpu, dict) and isinstance(analysis, dict)
    ok_cycle = wall["median"] <= CYCLE_GOAL_MS
    cycle_verdict = "OK" if ok_cycle else "MISSED"
    print(f"cycle, {c['symbols']} symbols on replay data, {c['cycles']} cycles:")
    print(f"  full cycle, wall      {_fmt(wall)}   goal <= {CYCLE_GOAL_MS:.0f} ms  [{cycle_verdict}]")
    print(f"  full cycle, CPU       {_fmt(cpu)}")
    print(f"  analysis only, wall   {_fmt(analysis)}")
    print(f"  non-finite values: {c['nonfinite']} (goal 0)")
    print(f"  guard fallbacks per cycle: {c['fallbacks_per_cycle']:.2f}")
    r = bench_rss(args.rss_cycles)
    ok_rss = r["rss_mb"] <= RSS_GOAL_MB and r["cycles"] >= args.rss_cycles
    verdict = "OK" if ok_rss else "MISSED"
    print(f"service (subprocess, replay, 10 ms interval) after {int(r['cycles'])} cycles:")
    print(
        f"  VmRSS {r['rss_mb']:.1f} MB (VmHWM {r['peak_rss_mb']:.1f} MB)"
        f"   goal <= {RSS_GOAL_MB:.0f} MB  [{verdict}]"
    )
    print(f"  previous production service: {PREVIOUS_RSS_MB:.0f} MB; SIGTERM exit code {r['exit_code']}")
    return 0 if ok_cycle and ok_rss else 1


if __name__ == "__main__":
    raise SystemExit(main())
