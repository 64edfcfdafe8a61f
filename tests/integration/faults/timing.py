"""Times of a rollout run, read from the json callback's per-task durations."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

from tests.integration.conftest import REPO_ROOT

TIMINGS_FILE = REPO_ROOT / "build" / "fault-timings.jsonl"


def stamp(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def task_time(
    run: Any, name: str, host: str, *, edge: str = "start", last: bool = False
) -> datetime.datetime | None:
    """Start or end of the first (or last) task called ``name`` that ran on ``host``."""
    found = None
    for play in run.plays:
        for task in play["tasks"]:
            if task_named(task, name) and host in task["hosts"]:
                found = stamp(task["task"]["duration"][edge])
                if not last:
                    return found
    return found


def task_named(task: dict[str, Any], name: str) -> bool:
    """The json callback names role tasks "<role> : <name>"."""
    full = task["task"]["name"]
    return full == name or full.endswith(f" : {name}")


def results_of(run: Any, name: str) -> dict[str, dict[str, Any]]:
    """Per-host results of the last task called ``name`` (role prefix ignored)."""
    found: dict[str, dict[str, Any]] = {}
    for play in run.plays:
        for task in play["tasks"]:
            if task_named(task, name):
                found = task["hosts"]
    return found


def run_span(run: Any) -> float | None:
    """Seconds from the first task to the last one of the run."""
    starts, ends = [], []
    for play in run.plays:
        for task in play["tasks"]:
            duration = task["task"].get("duration", {})
            if "start" in duration and "end" in duration:
                starts.append(stamp(duration["start"]))
                ends.append(stamp(duration["end"]))
    return (max(ends) - min(starts)).total_seconds() if starts else None


def seconds(start: datetime.datetime | None, end: datetime.datetime | None) -> float | None:
    return round((end - start).total_seconds(), 1) if start and end else None


def fault_timing(run: Any, host: str, *, switched: bool) -> dict[str, float | None]:
    """detect: from the start of the host's rollout (or from its switch) to the first step of the
    rescue; recover: the rescue itself (mark failed, roll back, restart, verify) up to the stop."""
    rescue_start = task_time(run, "Remember why the deploy failed", host)
    stop = task_time(run, "Stop the rollout", host, edge="start")
    if switched:
        origin = task_time(run, "Switch current to the release", host, edge="end")
    else:
        origin = task_time(run, "Check the system and the inputs", host)
    return {"detect_s": seconds(origin, rescue_start), "recover_s": seconds(rescue_start, stop)}


def record(test: str, **data: Any) -> None:
    """Append one line to build/fault-timings.jsonl (read by the suite's summary and the report)."""
    TIMINGS_FILE.parent.mkdir(parents=True, exist_ok=True)
    with Path(TIMINGS_FILE).open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"test": test, **data}, default=str) + "\n")
