"""Benchmark of the rollout: one host against the 3-host sandbox (a script, not a timed test).

Goal (issue): a 3-host rollout takes at most 1.5x the wall time of a one-host deploy (forks,
SSH pipelining + ControlPersist, one wheelhouse built on the controller for every host).

    VIRTUOSO_SANDBOX_INVENTORY=.sandbox/vfault/hosts.yml .venv/bin/python bench/bench_rollout.py

Needs a running sandbox with the app deployed once (the venv exists: the scenarios are code-only
releases, the everyday deploy). Each scenario deploys a fresh copy of src/ tests/ requirements/
with a unique nonce, so every targeted host really stages, smoke-tests, switches and restarts:

1. one host (--limit <first host>);
2. 3 hosts with the rollout policy of vars/rollout.yml (canary 1, then 50 %, then the rest);
3. 3 hosts in one batch (serial 100 %: what forks alone give, without the canary).

Prints wall times side by side with the ratio to (1), and per run the time of each play (pre-flight,
controller build, each batch), which shows what dominates.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.integration.conftest import SANDBOX_INVENTORY, run_playbook  # noqa: E402
from tests.integration.faults import code_change, inventory_hosts, make_tree  # noqa: E402
from tests.integration.faults.timing import seconds, stamp, task_time  # noqa: E402

GOAL_RATIO = 1.5


def play_times(run) -> list[tuple[str, float]]:
    """(play name, seconds) for every play of the run (serial batches are separate plays)."""
    out = []
    for play in run.plays:
        duration = play["play"].get("duration", {})
        if "start" in duration and "end" in duration:
            elapsed = (stamp(duration["end"]) - stamp(duration["start"])).total_seconds()
            out.append((play["play"]["name"], elapsed))
    return out


def short_names(plays: list[tuple[str, float]]) -> list[str]:
    """pre-flight / build / batch N labels for the plays of deploy.yml."""
    out, batch = [], 0
    for name, elapsed in plays:
        if name.startswith("Roll the release out"):
            batch += 1
            label = f"batch {batch}"
        elif name.startswith("Build"):
            label = "build"
        elif name.startswith("Check that every host"):
            label = "pre-flight"
        else:
            label = "inventory check"
        out.append(f"{label} {elapsed:.0f}s")
    return out


def timed_deploy(tree: Path, *args: str, extra_vars: dict | None = None) -> tuple[float, object]:
    extra = {"virtuoso_release_source_dir": str(tree), **(extra_vars or {})}
    started = time.monotonic()
    run = run_playbook("deploy.yml", *args, extra_vars=extra, timeout=1800)
    wall = time.monotonic() - started
    if run.returncode != 0:
        sys.exit(f"deploy failed ({' '.join(args)}): {run.messages() or run.stderr[-2000:]}")
    return wall, run


def stable_seconds() -> float:
    """virtuoso_services_stable_seconds: how long every restarted host must stay up before it passes."""
    defaults = yaml.safe_load((REPO / "roles/virtuoso_services/defaults/main.yml").read_text())
    return float(defaults["virtuoso_services_stable_seconds"])


def post_switch_seconds(run, host: str) -> float | None:
    """Seconds ``host`` spent from its switch to passing its last gate (/health) in ``run``.

    That span must follow the switch and precede the next batch under any canary policy, however
    early the next batch's release was staged: switch, restart, smoke against current, stability
    window, /health.
    """
    return seconds(
        task_time(run, "Switch current to the release", host),
        task_time(run, "Wait until both /health endpoints answer 200", host, edge="end", last=True),
    )


def print_batch_bound(results: list[dict]) -> None:
    """The least ratio any rollout with the same number of sequential batches can reach.

    A batch starts only after the previous one passed its gates, so k batches take at least one
    host's time + (k - 1) post-switch spans, each of which holds at least the stability window.
    """
    base, window = results[0]["wall_s"], stable_seconds()
    span = results[0]["post_switch_s"] or window
    for result in results[1:]:
        batches = sum(1 for name, _ in result["plays"] if name.startswith("Roll the release out"))
        if batches > 1:
            bound = (base + (batches - 1) * span) / base
            print(
                f"  {result['scenario']}: {batches} sequential batches, each >= {span:.1f} s from switch to "
                f"healthy (measured on 1 host; stability window alone {window:.0f} s): "
                f"ratio >= ({base:.1f} + {batches - 1} x {span:.1f}) / {base:.1f} = {bound:.2f}x"
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    options = parser.parse_args()

    inventory = SANDBOX_INVENTORY if SANDBOX_INVENTORY.is_file() else SANDBOX_INVENTORY / "hosts.yml"
    if not inventory.exists():
        print(f"bench_rollout: SKIPPED - no sandbox inventory at {inventory}: run `make sandbox-up` first")
        return 0
    hosts = inventory_hosts()
    if len(hosts) < 3:
        print(f"bench_rollout: SKIPPED - needs 3 sandbox hosts, found {len(hosts)}")
        return 0
    print(
        f"bench_rollout: {len(hosts)} hosts ({', '.join(h.name for h in hosts)}), {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}"
    )

    scenarios = [
        ("1 host (--limit)", 1, ["--limit", hosts[0].name], None),
        ("3 hosts, rollout [1, 50%, 100%]", len(hosts), [], None),
        ("3 hosts, one batch (100%)", len(hosts), [], {"virtuoso_rollout_serial": ["100%"]}),
    ]
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-rollout-") as tmp:
        for index, (label, count, args, extra) in enumerate(scenarios):
            tree = make_tree(Path(tmp) / f"tree{index}", code_change)
            wall, run = timed_deploy(tree, *args, extra_vars=extra)
            results.append(
                {
                    "scenario": label,
                    "hosts": count,
                    "wall_s": round(wall, 1),
                    "plays": [(name, round(sec, 1)) for name, sec in play_times(run)],
                    "post_switch_s": post_switch_seconds(run, hosts[0].name),
                }
            )
            print(f"  ran {label}: {wall:.1f} s")

    base = results[0]["wall_s"]
    print()
    print(f"{'scenario':<34} {'hosts':>5} {'wall s':>8} {'ratio':>6}  goal <= {GOAL_RATIO}x")
    for result in results:
        ratio = result["wall_s"] / base
        result["ratio"] = round(ratio, 2)
        verdict = "" if result["hosts"] == 1 else ("ok" if ratio <= GOAL_RATIO else "MISSED")
        row = f"{result['scenario']:<34} {result['hosts']:>5} {result['wall_s']:>8.1f} {ratio:>5.2f}x"
        print(f"{row}  {verdict}")
    print_batch_bound(results)
    print()
    print("time per play (pre-flight, controller build, one line per serial batch):")
    for result in results:
        print(f"  {result['scenario']:<34} {', '.join(short_names(result['plays']))}")
    if options.json:
        print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
