"""Ansible callback plugin: write the deployment report of a deploy or rollback run.

At the end of a run that set the fact ``virtuoso_report_id`` (on any host), the controller writes
``<dir>/<report_id>.json`` and ``<dir>/<report_id>.md``; ``<dir>`` is the fact
``virtuoso_report_dir`` if set, else the variable ``virtuoso_report_dir`` (group_vars, -e) of the
host that set the report id, else ``<cwd>/reports``. Runs that never set the fact write nothing.
The plugin never breaks a run: every error becomes a warning (and, if a report is still written,
an entry of its ``errors`` list).

JSON schema (``schema: 1``; times are ISO-8601 UTC strings, durations seconds as floats)::

    {
      "schema": 1,
      "report_id": str,              # the fact virtuoso_report_id (its last value when set twice)
      "kind": str,                   # the fact virtuoso_report_kind ("deploy", "rollback"), default "deploy"
      "playbook": str,               # playbook path, relative to the cwd when below it
      "check_mode": bool,
      "started": str, "finished": str, "duration_s": float,
      "status": "success" | "failed",   # success: every host "success" and the controller did not fail
      "inventory": [str],            # inventory sources of the run, as usable with -i from the cwd
      "summary": {"success": int, "failed": int, "rolled_back": int, "not_started": int},
      "release": {
        "id": str | null,            # fact virtuoso_release_id, else report_id when kind == "deploy"
        "content_hash": str | null, "file_count": int | null, "total_bytes": int | null,
        "files": [{"path": str, "size": int, "sha256": str, "mode": str}]   # virtuoso_release_bundle manifest
      },
      "controller": {host: {"status": "success" | "failed", "failure": FAILURE | null, "timeline": [STEP]}},
      "hosts": {host: {
        "status": "success" | "failed" | "rolled_back" | "not_started",
        "previous_release": str | null,   # the backup: what `current` pointed to before this run
                                          # (rollback runs: the release rolled back from)
        "current_release": str | null,    # what `current` points to at the end (last virtuoso_release result)
        "rolled_back_to": str | null,     # target of a successful virtuoso_release state=rollback
        "failure": FAILURE | null,
        "rollback_command": str | null,   # needs previous_release
        "started": str | null, "finished": str | null, "duration_s": float | null,  # span of its steps
        "stats": {"ok", "changed", "failures", "unreachable", "skipped", "rescued", "ignored": int},
        "timeline": [STEP],           # every step of the host in the run, pre-flight included
        "verification": VERIFICATION
      }},
      "errors": [str]                # errors of the plugin itself (empty when the report is complete)
    }
    FAILURE = {"task": str, "role": str | null, "msg": str, "switched": bool | null,
               "unreachable": bool, "marked_failed": bool, "stop_msg": str | null}
        # task/msg/switched from the fact virtuoso_deploy_failure when set, else the first failed step;
        # stop_msg is the message of the last failed step when it differs ("Stop the rollout").
    STEP = {"task": str, "role": str | null, "play": str, "action": str, "start": str,
            "duration_s": float, "status": "ok" | "failed" | "ignored" | "skipped" | "unreachable",
            "changed": bool, "handler": bool, "msg": str | null}    # msg only for failed/ignored/unreachable
    VERIFICATION = {                 # every key holds the latest observation of the run (any phase)
      "imports": [{"name": str, "ok": bool, "import_ms": float, "error": str | null}],
      "failed_modules": [str],
      "audit": {"guarded": int, "unguarded": int} | null,
      "edge_cases": {"ok": bool, "rc": int | null, "result": any} | null,   # parsed stdout JSON or raw stdout
      "pytest": {"ok": bool, "rc": int | null, "summary": str, "counts": {str: int}} | null,
      "services": {unit: {"active_state", "sub_state", "memory_current", "n_restarts",
                          "active_enter_timestamp"}},
      "services_ok": bool | null,    # systemd_unit_health all_active
      "health": {url: int},          # HTTP status of every ansible.builtin.uri check (-1: no answer)
      "phases": {phase: {...the keys above...}}
    }

Phases: checks before the host's first ``virtuoso_release`` switch are ``pre_switch``, after it
``post_switch``, after a rollback ``post_rollback``. Checks are recognised by module:
python_import_health, division_guard_audit, systemd_unit_health, ansible.builtin.uri, and
command/shell tasks whose command runs pytest (pytest) or whose name mentions edge cases.

Hosts of the report: the hosts targeted by the plays from the one that set virtuoso_report_id on;
plays that only target the host(s) that set it (the controller) go to ``controller`` instead, unless
no other play follows. A host with no step in those plays is ``not_started``. The rollback command
is ``ansible-playbook -i <inventory> <dir of the playbook>/rollback.yml --limit <host>
-e virtuoso_release_rollback_to=<previous_release>`` (fact virtuoso_report_rollback_playbook
overrides the playbook path).
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import json
import os
import re
import shlex
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ansible import context
from ansible.plugins.callback import CallbackBase
from ansible.template import Templar

DOCUMENTATION = r"""
name: virtuoso_report
type: aggregate
short_description: Write the deployment report (Markdown and JSON) of a Virtuoso deploy or rollback
description:
  - Records every task result with its host, start time and duration, and at the end of the run
    writes C(<report_id>.json) and C(<report_id>.md) - per host a timeline, the files deployed, the
    verification results, the previous release with the exact rollback command, failures and the
    overall status.
  - Writes only when the run set the fact C(virtuoso_report_id) on some host (for example with
    M(ansible.builtin.set_fact) on the controller); other runs are not affected.
  - The directory is the fact C(virtuoso_report_dir) if set, else the variable
    C(virtuoso_report_dir) (group_vars, C(-e)) as the controller host sees it, else C(reports/)
    below the current working directory. Both files are written atomically (temporary file and
    rename).
  - The fact C(virtuoso_report_kind) (V(deploy) or V(rollback)) names the kind of run; the fact
    C(virtuoso_deploy_failure) (C(task), C(msg), C(switched)) describes a host's failure.
  - Errors of the plugin never fail the run; they are shown as warnings.
  - The JSON schema is documented in the plugin's module docstring.
requirements:
  - enable in configuration (C(callbacks_enabled = virtuoso_report)) and put the plugin on
    C(callback_plugins)
"""

REPORT_SCHEMA = 1
ID_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
PYTEST_COUNT = re.compile(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|warnings?|deselected)")
EDGE_CASE_NAME = re.compile(r"edge.?case", re.IGNORECASE)
MAX_MSG = 2000
MAX_WARNINGS = 10
HOST_STATUSES = ("success", "failed", "rolled_back", "not_started")
STAT_KEYS = ("ok", "changed", "failures", "unreachable", "skipped", "rescued", "ignored")
WATCHED_FACTS = (
    "virtuoso_report_id",
    "virtuoso_report_kind",
    "virtuoso_report_dir",
    "virtuoso_report_rollback_playbook",
    "virtuoso_release_id",
    "virtuoso_deploy_failure",
)

F = TypeVar("F", bound=Callable[..., None])


def utc_iso(stamp: float | None) -> str | None:
    """Epoch seconds as an ISO-8601 UTC string with milliseconds (``...Z``)."""
    if stamp is None:
        return None
    moment = datetime.datetime.fromtimestamp(stamp, tz=datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def shorten(text: object, limit: int = MAX_MSG) -> str:
    """``text`` as a string of at most ``limit`` characters."""
    value = text if isinstance(text, str) else json.dumps(text, default=str)
    return value if len(value) <= limit else value[: limit - 3] + "..."


def short_action(action: str | None) -> str:
    """``ansible.builtin.uri`` -> ``uri``."""
    return (action or "").rsplit(".", 1)[-1]


def error_message(data: dict[str, Any]) -> str:
    """The most useful error text of a failed (or unreachable) result, loops included."""
    for key in ("msg", "stderr", "reason"):
        if data.get(key):
            return shorten(data[key])
    items = [r for r in data.get("results") or [] if isinstance(r, dict) and r.get("failed")]
    if items:
        return shorten("; ".join(error_message(r) for r in items))
    if data.get("rc") not in (None, 0):
        return f"rc={data['rc']}"
    return "failed"


def pytest_summary(data: dict[str, Any]) -> dict[str, Any]:
    """The pytest result: last non-empty output line and its counts."""
    lines = [line for line in data.get("stdout_lines") or str(data.get("stdout", "")).splitlines() if line]
    summary = lines[-1].strip().strip("=").strip() if lines else ""
    counts = {kind: int(number) for number, kind in PYTEST_COUNT.findall(summary)}
    return {"ok": data.get("rc") == 0, "rc": data.get("rc"), "summary": summary, "counts": counts}


def edge_case_result(data: dict[str, Any], ok: bool) -> dict[str, Any]:
    """The edge case command's outcome, its stdout parsed as JSON when possible."""
    stdout = data.get("stdout", "")
    try:
        parsed: Any = json.loads(stdout)
    except (TypeError, ValueError):
        parsed = shorten(stdout)
    return {"ok": ok, "rc": data.get("rc"), "result": parsed}


def task_name(result: Any) -> str:
    """The task's own name (without the role prefix), or its action when it has none."""
    fields = getattr(result, "task_fields", None) or {}
    return str(fields.get("name") or getattr(result.task, "name", None) or result.task.action)


def command_text(data: dict[str, Any], task_args: dict[str, Any]) -> str:
    """The command a command/shell result ran, as one string."""
    cmd = data.get("cmd")
    if cmd is None:
        args = (data.get("invocation") or {}).get("module_args") or task_args
        cmd = args.get("argv") or args.get("cmd") or args.get("_raw_params") or ""
    return " ".join(str(part) for part in cmd) if isinstance(cmd, list) else str(cmd)


@dataclass
class PlayInfo:
    """A play of the run: its position, name, targeted hosts and the hosts that ran a step in it."""

    index: int
    name: str
    hosts: list[str]
    active: set[str] = field(default_factory=set)


@dataclass
class HostLog:
    """Everything recorded about one host."""

    timeline: list[dict[str, Any]] = field(default_factory=list)
    plays: list[int] = field(default_factory=list)  # play index of each timeline step
    starts: list[float] = field(default_factory=list)  # start time (epoch) of each timeline step
    ends: list[float] = field(default_factory=list)  # end time (epoch) of each timeline step
    releases: list[dict[str, Any]] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    phase: str = "pre_switch"
    phases: dict[str, dict[str, Any]] = field(default_factory=dict)

    def check(self, key: str, value: Any) -> None:
        """Record a verification result of the current phase."""
        self.phases.setdefault(self.phase, {})[key] = value


def guarded(method: F) -> F:
    """Run a callback method, turning any exception into a warning (a report must never break a run)."""

    @functools.wraps(method)
    def wrapper(self: CallbackModule, *args: Any, **kwargs: Any) -> None:
        try:
            method(self, *args, **kwargs)
        except Exception as exc:
            self.report_error(f"{method.__name__}: {type(exc).__name__}: {exc}")

    return wrapper  # type: ignore[return-value]


class CallbackModule(CallbackBase):
    """Record the task results of a run and write the deployment report at its end."""

    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "virtuoso_report"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, display: Any = None) -> None:
        super().__init__(display=display)
        self.reset()

    def reset(self) -> None:
        """Forget everything: a new playbook starts (ansible-playbook a.yml b.yml reports each)."""
        self.started = time.time()
        self.playbook: str | None = None
        self.inventory_sources: list[str] = []
        self.plays: dict[str, PlayInfo] = {}
        self.play_objects: dict[int, Any] = {}
        self.play: PlayInfo | None = None
        self.task_starts: dict[str, float] = {}
        self.handler_tasks: set[str] = set()
        self.host_starts: dict[tuple[str, str], float] = {}
        self.item_marks: dict[tuple[str, str], float] = {}
        self.hosts: dict[str, HostLog] = {}
        self.report_id: str | None = None
        self.report_play: int | None = None
        self.controller: list[str] = []
        self.bundle: dict[str, Any] | None = None
        self.errors: list[str] = []

    # -- helpers -------------------------------------------------------------------------------

    def report_error(self, message: str) -> None:
        """Show a plugin error as a warning (the first few) and keep it for the report."""
        self.errors.append(shorten(message, 500))
        if len(self.errors) > MAX_WARNINGS:
            return
        if len(self.errors) == MAX_WARNINGS:
            message += " (further errors of the report plugin are not shown)"
        with contextlib.suppress(Exception):
            self._display.warning(f"virtuoso_report: {message}")

    def host_log(self, name: str) -> HostLog:
        """The log of host ``name``, created on first use."""
        return self.hosts.setdefault(name, HostLog())

    # -- events --------------------------------------------------------------------------------

    @guarded
    def v2_playbook_on_start(self, playbook: Any) -> None:
        """Remember the playbook and the start of the run."""
        self.reset()
        self.playbook = getattr(playbook, "_file_name", None)

    @guarded
    def v2_playbook_on_play_start(self, play: Any) -> None:
        """Remember the play and every host it targets (all batches, not only this one)."""
        uuid = getattr(play, "_uuid", None) or str(id(play))
        if uuid in self.plays:
            self.play = self.plays[uuid]  # the next serial batch of the same play
            return
        self.play = self.plays[uuid] = PlayInfo(
            index=len(self.plays), name=str(play.get_name()).strip(), hosts=[]
        )
        self.play_objects[self.play.index] = play
        inventory = play.get_variable_manager()._inventory
        self.play.hosts = [h.name for h in inventory.get_hosts(play.hosts, ignore_restrictions=True)]
        if not self.inventory_sources:
            self.inventory_sources = list(getattr(inventory, "_sources", []) or [])

    @guarded
    def v2_playbook_on_task_start(self, task: Any, is_conditional: bool) -> None:
        """Remember when the task started (fallback for hosts without a runner start)."""
        self.task_starts[task._uuid] = time.time()

    @guarded
    def v2_playbook_on_handler_task_start(self, task: Any) -> None:
        """Remember when the handler started."""
        self.task_starts[task._uuid] = time.time()
        self.handler_tasks.add(task._uuid)

    @guarded
    def v2_runner_on_start(self, host: Any, task: Any) -> None:
        """Remember when the task started on this host."""
        self.host_starts[(host.name, task._uuid)] = time.time()

    @guarded
    def v2_runner_on_ok(self, result: Any) -> None:
        """Record a successful result."""
        self.record(result, "ok")

    @guarded
    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        """Record a failed result (``ignored`` when ignore_errors applied)."""
        self.record(result, "ignored" if ignore_errors else "failed")

    @guarded
    def v2_runner_on_skipped(self, result: Any) -> None:
        """Record a skipped task."""
        self.record(result, "skipped")

    @guarded
    def v2_runner_on_unreachable(self, result: Any) -> None:
        """Record an unreachable host."""
        self.record(result, "unreachable")

    @guarded
    def v2_playbook_on_stats(self, stats: Any) -> None:
        """Build and write the report, if this run asked for one."""
        if not self.report_id:
            return
        report = build_report(self, stats, finished=time.time())
        directory = self.report_dir()
        try:
            paths = write_report(report, str(directory))
        except OSError as exc:
            self.report_error(f"could not write the report {self.report_id} to {directory}: {exc}")
            return
        self._display.display(f"virtuoso_report: wrote {paths[0]} and {paths[1]}", stderr=True)

    # -- recording -----------------------------------------------------------------------------

    def report_dir(self) -> str:
        """The fact virtuoso_report_dir, else the variable of that name (group_vars, -e), else ./reports."""
        directory = self.fact("virtuoso_report_dir")
        if not directory:
            try:
                directory = self.variable("virtuoso_report_dir")
            except Exception as exc:
                self.report_error(f"could not resolve the variable virtuoso_report_dir: {exc}")
        return str(directory or os.path.join(os.getcwd(), "reports"))

    def variable(self, name: str) -> Any:
        """Variable ``name`` of the first controller host as the play that set the report id sees it."""
        play = self.play_objects.get(self.report_play or 0)
        if play is None or not self.controller:
            return None
        manager = play.get_variable_manager()
        host = manager._inventory.get_host(self.controller[0])
        variables = manager.get_vars(play=play, host=host)
        if name not in variables:
            return None
        return Templar(loader=getattr(play, "_loader", None), variables=variables).template(variables[name])

    def fact(self, name: str) -> Any:
        """A watched fact: the value set on the controller first, else on any host."""
        for host in [*self.controller, *self.hosts]:
            value = self.host_log(host).facts.get(name)
            if value not in (None, ""):
                return value
        return None

    def record(self, result: Any, status: str) -> None:
        """Add a result to its host's timeline and pick out what the report needs."""
        host, task = result.host.name, result.task
        data: dict[str, Any] = dict(result.result or {})
        now = time.time()
        start = self.host_starts.pop((host, task._uuid), None) or self.task_starts.get(task._uuid) or now
        self.item_marks.pop((host, task._uuid), None)
        play = self.add_step(host, result, data, status, start=start, end=now)
        if status == "ok":
            self.record_facts(host, data, play.index)
        target = self.target_host(result, host)
        if target != host:  # delegated: the module ran on (and describes) the target
            self.add_step(target, result, data, status, start=start, end=now, run_by=host)
        if status in ("ok", "failed", "ignored"):
            self.record_module(self.host_log(target), task, data, ok=status == "ok")

    def add_step(
        self,
        host: str,
        result: Any,
        data: dict[str, Any],
        status: str,
        *,
        start: float,
        end: float,
        run_by: str | None = None,
    ) -> PlayInfo:
        """Append a step to the host's timeline; return the play it belongs to."""
        task = result.task
        role = getattr(task, "_role", None)
        log = self.host_log(host)
        play = self.play or self.ensure_play()
        play.active.add(host)
        name = task_name(result)
        log.timeline.append(
            {
                "task": f"{name} (run by {run_by})" if run_by else name,
                "role": role.get_name(include_role_fqcn=False) if role else None,
                "play": play.name,
                "action": task.action,
                "start": utc_iso(start),
                "duration_s": round(max(end - start, 0.0), 3),
                "status": status,
                "changed": bool(data.get("changed")) or result.is_changed(),
                "handler": task._uuid in self.handler_tasks,
                "msg": error_message(data) if status in ("failed", "ignored", "unreachable") else None,
            }
        )
        log.plays.append(play.index)
        log.starts.append(start)
        log.ends.append(end)
        return play

    def target_host(self, result: Any, host: str) -> str:
        """The host a result describes: the inventory host it was delegated to, else its own host."""
        fields = getattr(result, "task_fields", None) or {}
        delegate = fields.get("delegate_to")
        known = isinstance(delegate, str) and any(delegate in play.hosts for play in self.plays.values())
        return delegate if known and delegate != host else host

    @guarded
    def v2_runner_item_on_ok(self, result: Any) -> None:
        """Record each release change of a looped virtuoso_release (for example one per host)."""
        if short_action(result.task.action) != "virtuoso_release":
            return
        host, task = result.host.name, result.task
        data: dict[str, Any] = dict(result.result or {})
        now = time.time()
        key = (host, task._uuid)
        start = (
            self.item_marks.get(key) or self.host_starts.get(key) or self.task_starts.get(task._uuid) or now
        )
        self.item_marks[key] = now
        target = self.target_host(result, host)
        if target != host:
            self.add_step(target, result, data, "ok", start=start, end=now, run_by=host)
        self.record_release(self.host_log(target), task, data)

    def record_release(self, log: HostLog, task: Any, data: dict[str, Any]) -> None:
        """Keep a successful virtuoso_release result (the release facts) and move the host's phase on."""
        state = ((data.get("invocation") or {}).get("module_args") or task.args or {}).get("state")
        log.releases.append({"state": state, **{k: data.get(k) for k in RELEASE_KEYS}})
        if state in ("switch", "rollback"):
            log.phase = "post_switch" if state == "switch" else "post_rollback"

    def ensure_play(self) -> PlayInfo:
        """A placeholder play for results that arrive outside any play (never expected)."""
        self.play = self.plays.setdefault("?", PlayInfo(index=len(self.plays), name="?", hosts=[]))
        return self.play

    def record_facts(self, host: str, data: dict[str, Any], play_index: int) -> None:
        """Keep the watched facts a result sets (set_fact, also in loops)."""
        results = [data, *[r for r in data.get("results") or [] if isinstance(r, dict)]]
        for item in results:
            facts = item.get("ansible_facts")
            if not isinstance(facts, dict):
                continue
            for name in WATCHED_FACTS:
                if name in facts:
                    self.host_log(host).facts[name] = facts[name]
            report_id = facts.get("virtuoso_report_id")
            if not report_id:
                continue
            self.report_id = str(
                report_id
            )  # the last value set wins; the report starts where it was first set
            if self.report_play is None:
                self.report_play = play_index
            if play_index == self.report_play and host not in self.controller:
                self.controller.append(host)

    def record_module(self, log: HostLog, task: Any, data: dict[str, Any], ok: bool) -> None:
        """Pick the release facts and verification results out of a module's result."""
        action = short_action(task.action)
        if action == "virtuoso_release_bundle" and ok:
            self.bundle = data
        elif action == "virtuoso_release" and ok and "results" not in data:  # loops: per item
            self.record_release(log, task, data)
        elif action == "python_import_health" and "modules" in data:
            log.check("imports", [import_entry(m) for m in data.get("modules") or []])
            log.check("failed_modules", list(data.get("failed_modules") or []))
        elif action == "division_guard_audit" and "files" in data:
            log.check("audit", audit_totals(data))
        elif action == "systemd_unit_health" and "units" in data:
            log.check("services", {name: unit_entry(u) for name, u in (data.get("units") or {}).items()})
            log.check("services_ok", data.get("all_active"))
        elif action == "uri":
            health = dict(log.phases.get(log.phase, {}).get("health") or {})
            for item in [data, *[r for r in data.get("results") or [] if isinstance(r, dict)]]:
                url = item.get("url") or ((item.get("invocation") or {}).get("module_args") or {}).get("url")
                if url and ("status" in item or item is not data):
                    health[str(url)] = int(item.get("status", -1) or -1)
            log.check("health", health)
        elif action in ("command", "shell"):
            if "pytest" in command_text(data, task.args or {}):
                log.check("pytest", pytest_summary(data))
            elif EDGE_CASE_NAME.search(str(task.name or "")):
                log.check("edge_cases", edge_case_result(data, ok))


RELEASE_KEYS = ("current_release", "previous_release", "previous_good_release", "changed")


def import_entry(module: dict[str, Any]) -> dict[str, Any]:
    """One python_import_health module entry, trimmed to what the report shows."""
    error = f"{module.get('error_type', '')}: {module.get('error', '')}" if not module.get("ok") else None
    return {
        "name": module.get("name"),
        "ok": bool(module.get("ok")),
        "import_ms": module.get("import_ms"),
        "error": shorten(error, 500) if error else None,
    }


def audit_totals(data: dict[str, Any]) -> dict[str, int]:
    """Guarded and unguarded division counts of a division_guard_audit result."""
    files = (data.get("files") or {}).values()
    return {
        "guarded": int(data.get("guarded", sum(f.get("guarded", 0) for f in files))),
        "unguarded": int(data.get("unguarded", sum(f.get("unguarded", 0) for f in files))),
    }


def unit_entry(unit: dict[str, Any]) -> dict[str, Any]:
    """The report's view of one systemd_unit_health unit."""
    keys = ("active_state", "sub_state", "memory_current", "n_restarts", "active_enter_timestamp")
    return {key: unit.get(key) for key in keys}


# -- building the report ---------------------------------------------------------------------------


def ordered_union(lists: Iterable[Iterable[str]]) -> list[str]:
    """The names of all lists, each once, in order of first appearance."""
    seen: dict[str, None] = {}
    for names in lists:
        for name in names:
            seen.setdefault(name, None)
    return list(seen)


def report_hosts(plugin: CallbackModule) -> tuple[list[str], list[str], set[int]]:
    """The deployed hosts, the controller hosts and the play indexes whose steps count as deploying."""
    later = [p for p in plugin.plays.values() if p.index >= (plugin.report_play or 0)]
    controller = set(plugin.controller)
    targets = [p for p in later if not set(p.hosts) <= controller]
    if not targets:
        targets = later
    hosts = ordered_union(p.hosts for p in targets)
    active_hosts = ordered_union(sorted(p.active) for p in targets)
    hosts += [h for h in active_hosts if h not in hosts]
    return hosts, [c for c in plugin.controller if c not in hosts], {p.index for p in targets}


def relative(path: str) -> str:
    """``path`` relative to the cwd when it is below it, else unchanged."""
    if "," in path or not os.path.isabs(path):
        return path
    rel = os.path.relpath(path, os.getcwd())
    return path if rel.startswith("..") else rel


def inventory_args(plugin: CallbackModule) -> list[str]:
    """The inventory sources of the run as given (made relative to the cwd where possible)."""
    cli = context.CLIARGS.get("inventory") if context.CLIARGS else None
    sources = list(cli or plugin.inventory_sources)
    return [relative(str(source)) for source in sources]


def extra_cli_args() -> list[str]:
    """Vault and become-password options of this run, which the rollback needs as well."""
    args: list[str] = []
    if not context.CLIARGS:
        return args
    if context.CLIARGS.get("ask_vault_pass"):
        args.append("--ask-vault-pass")
    for password_file in context.CLIARGS.get("vault_password_files") or ():
        args += ["--vault-password-file", relative(str(password_file))]
    if context.CLIARGS.get("become_ask_pass"):
        args.append("--ask-become-pass")
    return args


def rollback_playbook(plugin: CallbackModule) -> str:
    """The rollback playbook: the fact virtuoso_report_rollback_playbook, else next to this playbook."""
    configured = plugin.fact("virtuoso_report_rollback_playbook")
    if configured:
        return str(configured)
    base = os.path.dirname(os.path.abspath(plugin.playbook)) if plugin.playbook else os.getcwd()
    return relative(os.path.join(base, "rollback.yml"))


def previous_release(log: HostLog, kind: str, release_id: str | None) -> str | None:
    """The release ``current`` pointed to before the run (the backup)."""
    events = log.releases
    if not events:
        return None
    if kind == "rollback":
        rollbacks = [e for e in events if e["state"] == "rollback"]
        if rollbacks:
            return rollbacks[0].get("previous_release")
    switches = [e for e in events if e["state"] == "switch" and e.get("changed")]
    if switches:
        return switches[0].get("previous_release")
    before = events[0].get("previous_release") if events[0]["state"] == "rollback" else None
    before = before or events[0].get("current_release")
    if before and before != release_id:
        return before
    return events[-1].get("previous_good_release")


def host_failure(log: HostLog, stats: dict[str, int]) -> dict[str, Any] | None:
    """Where and why the host failed, or None."""
    fact = log.facts.get("virtuoso_deploy_failure")
    failed_steps = [s for s in log.timeline if s["status"] in ("failed", "unreachable")]
    if not isinstance(fact, dict) and not failed_steps and not (stats["failures"] or stats["unreachable"]):
        return None
    first = failed_steps[0] if failed_steps else None
    last_msg = failed_steps[-1]["msg"] if failed_steps else None
    if isinstance(fact, dict):
        task, msg = str(fact.get("task", "?")), shorten(fact.get("msg", "failed"))
        switched = fact.get("switched")
        switched = switched if isinstance(switched, bool) else str(switched).lower() == "true"
    else:
        task, msg, switched = (
            (first["task"], first["msg"] or "failed", None) if first else ("?", "failed", None)
        )
    role = next((s["role"] for s in log.timeline if s["task"] == task), first["role"] if first else None)
    return {
        "task": task,
        "role": role,
        "msg": msg,
        "switched": switched,
        "unreachable": any(s["status"] == "unreachable" for s in log.timeline),
        "marked_failed": any(e["state"] == "mark_failed" for e in log.releases),
        "stop_msg": last_msg if last_msg and last_msg != msg else None,
    }


def verification(log: HostLog) -> dict[str, Any]:
    """The host's verification results: the latest of every check, and every phase."""
    merged: dict[str, Any] = {
        "imports": [],
        "failed_modules": [],
        "audit": None,
        "edge_cases": None,
        "pytest": None,
        "services": {},
        "services_ok": None,
        "health": {},
    }
    for checks in log.phases.values():
        merged.update(checks)
    merged["phases"] = log.phases
    return merged


def host_report(
    plugin: CallbackModule, name: str, stats: dict[str, int], ctx: dict[str, Any]
) -> dict[str, Any]:
    """The report of one deployed host."""
    log = plugin.host_log(name)
    mine = [i for i, play in enumerate(log.plays) if play in ctx["plays"]]
    failure = host_failure(log, stats)
    rollbacks = [e for e in log.releases if e["state"] == "rollback"]
    rolled_back_to = rollbacks[-1].get("current_release") if rollbacks else None
    if rolled_back_to and ctx["kind"] != "rollback":
        status = "rolled_back"  # after its own failure, or put back because another host failed
    elif failure:
        status = "failed"
    else:
        status = "success" if mine else "not_started"
    previous = previous_release(log, ctx["kind"], ctx["release_id"])
    command = None
    if previous:
        argv = [
            "ansible-playbook",
            *[a for inv in ctx["inventory"] for a in ("-i", inv)],
            ctx["rollback_playbook"],
        ]
        argv += ["--limit", name, "-e", f"virtuoso_release_rollback_to={previous}", *ctx["extra_args"]]
        command = shlex.join(argv)
    start = min((log.starts[i] for i in mine), default=None)
    end = max((log.ends[i] for i in mine), default=None)
    return {
        "status": status,
        "previous_release": previous,
        "current_release": log.releases[-1].get("current_release") if log.releases else None,
        "rolled_back_to": rolled_back_to,
        "failure": failure,
        "rollback_command": command,
        "started": utc_iso(start),
        "finished": utc_iso(end),
        "duration_s": round(end - start, 3) if start is not None and end is not None else None,
        "stats": stats,
        "timeline": log.timeline,
        "verification": verification(log),
    }


def host_stats(stats: Any, name: str) -> dict[str, int]:
    """The recap counters of a host."""
    try:
        summary = stats.summarize(name)
    except Exception:
        summary = {}
    return {key: int(summary.get(key, 0) or 0) for key in STAT_KEYS}


def release_section(plugin: CallbackModule, kind: str) -> dict[str, Any]:
    """The release that was deployed (from virtuoso_release_bundle)."""
    bundle = plugin.bundle or {}
    release_id = plugin.fact("virtuoso_release_id") or (plugin.report_id if kind == "deploy" else None)
    files = [
        {key: entry.get(key) for key in ("path", "size", "sha256", "mode")}
        for entry in bundle.get("manifest") or []
        if isinstance(entry, dict)
    ]
    return {
        "id": release_id,
        "content_hash": bundle.get("content_hash"),
        "file_count": bundle.get("file_count"),
        "total_bytes": bundle.get("total_bytes"),
        "files": files,
    }


def build_report(plugin: CallbackModule, stats: Any, finished: float) -> dict[str, Any]:
    """The complete report as a JSON-serialisable dict (schema in the module docstring)."""
    kind = str(plugin.fact("virtuoso_report_kind") or "deploy")
    release = release_section(plugin, kind)
    hosts, controller, plays = report_hosts(plugin)
    ctx = {
        "kind": kind,
        "release_id": release["id"],
        "plays": plays,
        "inventory": inventory_args(plugin),
        "rollback_playbook": rollback_playbook(plugin),
        "extra_args": extra_cli_args(),
    }
    host_reports = {name: host_report(plugin, name, host_stats(stats, name), ctx) for name in hosts}
    controller_reports = {}
    for name in controller:
        log, counters = plugin.host_log(name), host_stats(stats, name)
        failure = host_failure(log, counters)
        controller_reports[name] = {
            "status": "failed" if failure else "success",
            "failure": failure,
            "timeline": log.timeline,
        }
    summary = {status: 0 for status in HOST_STATUSES}
    for entry in host_reports.values():
        summary[entry["status"]] += 1
    ok = all(h["status"] == "success" for h in host_reports.values()) and not any(
        c["failure"] for c in controller_reports.values()
    )
    return {
        "schema": REPORT_SCHEMA,
        "report_id": plugin.report_id,
        "kind": kind,
        "playbook": relative(os.path.abspath(plugin.playbook)) if plugin.playbook else None,
        "check_mode": bool(context.CLIARGS.get("check")) if context.CLIARGS else False,
        "started": utc_iso(plugin.started),
        "finished": utc_iso(finished),
        "duration_s": round(finished - plugin.started, 3),
        "status": "success" if ok else "failed",
        "inventory": ctx["inventory"],
        "summary": summary,
        "release": release,
        "controller": controller_reports,
        "hosts": host_reports,
        "errors": list(plugin.errors),
    }


# -- writing ---------------------------------------------------------------------------------------


def safe_name(report_id: str) -> str:
    """A file name for the report id (anything but letters, digits, ``._-`` becomes ``_``)."""
    name = ID_UNSAFE.sub("_", report_id).lstrip(".") or "report"
    return name[:200]


def write_atomically(path: str, content: str) -> None:
    """Write ``content`` to ``path`` through a temporary file renamed over it."""
    directory, base = os.path.split(path)
    handle, temp = tempfile.mkstemp(dir=directory, prefix=f".{base}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(content)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def write_report(report: dict[str, Any], directory: str) -> tuple[str, str]:
    """Write ``<id>.json`` and ``<id>.md`` into ``directory``; return their paths."""
    os.makedirs(directory, exist_ok=True)
    base = os.path.join(directory, safe_name(str(report["report_id"])))
    json_path, md_path = f"{base}.json", f"{base}.md"
    write_atomically(json_path, json.dumps(report, indent=2, default=str) + "\n")
    write_atomically(md_path, render_markdown(report))
    return md_path, json_path


# -- Markdown --------------------------------------------------------------------------------------


def cell(value: object) -> str:
    """A value as the content of a Markdown table cell."""
    if value is None or value == "":
        return "-"
    text = str(value).replace("\\", "\\\\").replace("|", "\\|")
    return " ".join(text.split())


def table(header: list[str], rows: Iterable[list[object]]) -> list[str]:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return [*lines, ""]


def fenced(text: str, language: str = "") -> list[str]:
    """``text`` in a fenced code block whose fence cannot occur in it."""
    fence = "```"
    while fence in text:
        fence += "`"
    return [f"{fence}{language}", text, fence, ""]


def human_bytes(size: object) -> str:
    """Bytes as B/KiB/MiB/GiB."""
    if not isinstance(size, int | float):
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def seconds(value: object) -> str:
    """Seconds for humans."""
    return f"{value:.2f} s" if isinstance(value, int | float) else "-"


STATUS_LABEL = {
    "success": "SUCCESS",
    "failed": "FAILED",
    "rolled_back": "ROLLED BACK",
    "not_started": "NOT STARTED",
}


def render_markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown document."""
    status = STATUS_LABEL.get(report["status"], report["status"])
    lines = [
        f"# {report['kind'].capitalize()} {report['report_id']}: {status}",
        "",
        f"- Playbook: `{report['playbook']}`{' (check mode)' if report.get('check_mode') else ''}",
        f"- Inventory: {', '.join(f'`{i}`' for i in report['inventory']) or '-'}",
        f"- Started {report['started']}, finished {report['finished']} ({seconds(report['duration_s'])})",
        "- Hosts: " + ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in report["summary"].items() if n),
        "",
        "## Summary",
        "",
    ]
    hosts = report["hosts"]
    lines += table(
        [
            "Host",
            "Status",
            "Previous release (backup)",
            "Current release",
            "Rolled back to",
            "Duration",
            "Failed task",
        ],
        [
            [
                name,
                STATUS_LABEL.get(h["status"], h["status"]),
                h["previous_release"],
                h["current_release"],
                h["rolled_back_to"],
                seconds(h["duration_s"]),
                (h["failure"] or {}).get("task"),
            ]
            for name, h in hosts.items()
        ],
    )
    lines += render_failures(report)
    lines += render_rollback(report)
    lines += render_release(report["release"])
    for name, host in hosts.items():
        lines += render_host(name, host)
    for name, ctl in report["controller"].items():
        lines += [f"## Controller {name}: {STATUS_LABEL.get(ctl['status'], ctl['status'])}", ""]
        lines += render_timeline(ctl["timeline"])
    if report.get("errors"):
        lines += ["## Report errors", "", *[f"- {cell(e)}" for e in report["errors"]], ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def render_failures(report: dict[str, Any]) -> list[str]:
    """The failure section: where each host failed, why, and what was rolled back."""
    failed = {n: h for n, h in report["hosts"].items() if h["failure"]}
    failed.update({f"{n} (controller)": c for n, c in report["controller"].items() if c["failure"]})
    if not failed:
        return []
    lines = ["## Failures", ""]
    for name, host in failed.items():
        failure = host["failure"]
        role = f" (role {failure['role']})" if failure.get("role") else ""
        lines += [f"### {name}", "", f"- Failed task: `{failure['task']}`{role}"]
        if failure.get("unreachable"):
            lines.append("- The host was unreachable")
        if failure.get("switched") is not None:
            lines.append(
                f"- Switched to the new release before the failure: {'yes' if failure['switched'] else 'no'}"
            )
        if failure.get("marked_failed"):
            lines.append(f"- Release `{report['release']['id'] or '?'}` marked failed on the host")
        if host.get("rolled_back_to"):
            lines.append(f"- Rolled back to: `{host['rolled_back_to']}`")
        elif "current_release" in host:
            lines.append(f"- Nothing rolled back; current release: `{host['current_release'] or 'none'}`")
        lines += ["", "Error:", "", *fenced(failure["msg"])]
        if failure.get("stop_msg"):
            lines += ["Outcome:", "", *fenced(failure["stop_msg"])]
    not_started = [n for n, h in report["hosts"].items() if h["status"] == "not_started"]
    if not_started:
        lines += [f"Not started (the rollout stopped before them): {', '.join(not_started)}", ""]
    return lines


def render_rollback(report: dict[str, Any]) -> list[str]:
    """The rollback commands, one per host that has a previous release."""
    commands = [
        h["rollback_command"]
        for h in report["hosts"].values()
        if h["rollback_command"] and h["current_release"] != h["previous_release"]
    ]
    if not commands:
        return []
    intro = "To put a host back on its previous release (the backup), run from the same directory:"
    return ["## Rollback", "", intro, "", *fenced("\n".join(commands), "sh")]


def render_release(release: dict[str, Any]) -> list[str]:
    """The release section with its files."""
    lines = [
        "## Release",
        "",
        f"- Id: `{release['id'] or '-'}`",
        f"- Content hash: `{release['content_hash'] or '-'}`",
        f"- Files: {release['file_count'] if release['file_count'] is not None else '-'}, "
        f"{human_bytes(release['total_bytes'])}",
        "",
    ]
    if release["files"]:
        lines += ["### Files deployed", ""]
        lines += table(
            ["Path", "Size", "Mode", "sha256"],
            [[f["path"], f["size"], f["mode"], f["sha256"]] for f in release["files"]],
        )
    return lines


def render_host(name: str, host: dict[str, Any]) -> list[str]:
    """One host's section: releases, verification and timeline."""
    lines = [
        f"## {name}: {STATUS_LABEL.get(host['status'], host['status'])}",
        "",
        f"- Previous release (backup): `{host['previous_release'] or '-'}`",
        f"- Current release: `{host['current_release'] or '-'}`",
    ]
    if host["rolled_back_to"]:
        lines.append(f"- Rolled back to: `{host['rolled_back_to']}`")
    if host["rollback_command"]:
        lines.append(f"- Rollback: `{host['rollback_command']}`")
    lines.append("")
    if host["status"] == "not_started":
        return [*lines, "Not started: the rollout stopped before this host's batch.", ""]
    lines += render_verification(host["verification"])
    lines += render_timeline(host["timeline"])
    return lines


def render_verification(checks: dict[str, Any]) -> list[str]:
    """The verification results of a host."""
    lines = ["### Verification", ""]
    if checks.get("phases"):
        lines += [f"Phases checked: {', '.join(checks['phases'])} (latest results below).", ""]
    imports = checks.get("imports") or []
    if imports:
        bad = [i["name"] for i in imports if not i["ok"]]
        lines.append(
            f"- Imports: {len(imports) - len(bad)}/{len(imports)} ok"
            + (f"; failed: {', '.join(bad)}" if bad else "")
        )
    if checks.get("audit"):
        audit = checks["audit"]
        lines.append(f"- Division audit: {audit['guarded']} guarded, {audit['unguarded']} unguarded")
    if checks.get("edge_cases"):
        edge = checks["edge_cases"]
        lines.append(
            f"- Edge cases: {'ok' if edge['ok'] else 'FAILED'} `{json.dumps(edge['result'], default=str)}`"
        )
    if checks.get("pytest"):
        smoke = checks["pytest"]
        lines.append(f"- Pytest smoke: {'ok' if smoke['ok'] else 'FAILED'} ({smoke['summary'] or '-'})")
    if checks.get("services_ok") is not None:
        lines.append(f"- Services all active: {'yes' if checks['services_ok'] else 'NO'}")
    for url, status in (checks.get("health") or {}).items():
        lines.append(f"- Health `{url}`: {status}")
    if len(lines) == 2:
        lines.append("No verification results recorded.")
    lines.append("")
    if checks.get("services"):
        lines += table(
            ["Unit", "State", "Memory", "Restarts", "Active since"],
            [
                [
                    unit,
                    f"{u['active_state']}/{u['sub_state']}",
                    human_bytes(u["memory_current"]),
                    u["n_restarts"],
                    u["active_enter_timestamp"],
                ]
                for unit, u in checks["services"].items()
            ],
        )
    if imports:
        lines += table(
            ["Module", "Import", "Time (ms)", "Error"],
            [[i["name"], "ok" if i["ok"] else "FAILED", i["import_ms"], i["error"]] for i in imports],
        )
    return lines


def render_timeline(timeline: list[dict[str, Any]]) -> list[str]:
    """A timeline table."""
    if not timeline:
        return []
    rows = [
        [
            n,
            step["start"],
            seconds(step["duration_s"]),
            step["play"],
            step["role"],
            step["task"] + (" (handler)" if step["handler"] else ""),
            step["status"] + (", changed" if step["changed"] and step["status"] == "ok" else ""),
            step["msg"],
        ]
        for n, step in enumerate(timeline, 1)
    ]
    return [
        "### Timeline",
        "",
        *table(["#", "Start (UTC)", "Duration", "Play", "Role", "Task", "Status", "Message"], rows),
    ]
