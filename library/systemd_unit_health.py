#!/usr/bin/python
"""Ansible module: check that systemd units are active and not crash-looping (read-only)."""

from __future__ import annotations

import re
import time
from typing import Any, NamedTuple

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
---
module: systemd_unit_health
short_description: Check that systemd units are active and stay up (crash-loop detection)
description:
  - Reads the state of each unit in O(name) with
    C(systemctl show -p Id,ActiveState,SubState,NRestarts,MemoryCurrent,ActiveEnterTimestamp,MainPID,Result,ExecMainStatus,ActiveEnterTimestampMonotonic <unit>).
  - Optionally waits up to O(wait) seconds (polling every second) until every unit is active.
  - With O(stable_for), then makes sure every unit stays active for that many seconds. A unit
    that has already been active for at least O(stable_for) seconds (from
    C(ActiveEnterTimestampMonotonic)) counts as stable at once; the others are watched only for
    the rest of the time. A unit that leaves the C(active) state, whose C(NRestarts) grows or
    whose C(ActiveEnterTimestamp) changes (it was restarted) while it is watched is reported as
    not stable - this catches crash loops that are briefly C(active).
  - Fails (when O(require_active)) naming every unhealthy unit with its state, result and exit
    status, and returns the last 20 journal lines of each unhealthy unit in RV(journal_tail).
  - Never changes anything (C(changed) is always V(false)).
options:
  name:
    description:
      - Names of the units to check, for example V(virtuoso-web.service). A name without a suffix
        is resolved by systemctl (as a C(.service)).
    type: list
    elements: str
    required: true
  wait:
    description:
      - Seconds to wait until all units are active. V(0) checks once.
    type: int
    default: 0
  require_active:
    description:
      - Fail when a unit is not active (or not stable for O(stable_for)).
      - When V(false), only report; check RV(all_active).
    type: bool
    default: true
  stable_for:
    description:
      - Seconds every unit must have been active, without C(NRestarts) increasing and without
        being restarted, once all are active. V(0) disables the check.
      - Time a unit has already been active counts - C(ActiveEnterTimestampMonotonic) is compared
        with the host's C(CLOCK_MONOTONIC). A unit active for at least O(stable_for) seconds is
        stable without waiting (so re-running a deploy that restarted nothing does not wait);
        a unit active for less is watched only for the remaining seconds.
      - If systemd does not report C(ActiveEnterTimestampMonotonic) (missing or V(0)), the unit
        is watched for the full O(stable_for) seconds.
    type: int
    default: 0
extends_documentation_fragment:
  - action_common_attributes
attributes:
  check_mode:
    support: full
    details: The module is read-only, so it runs the same way in check mode.
  diff_mode:
    support: none
  platform:
    platforms: posix
requirements:
  - systemd (C(systemctl)); C(journalctl) is used for RV(journal_tail) if present.
author:
  - Virtuoso deploy team
"""

EXAMPLES = r"""
- name: Wait for the services and make sure they are not crash-looping
  systemd_unit_health:
    name:
      - virtuoso-web.service
      - virtuoso-monitor.service
    wait: 60
    stable_for: 20

- name: Only report the state
  systemd_unit_health:
    name: [virtuoso-web.service]
    require_active: false
  register: health

- name: Show memory use
  ansible.builtin.debug:
    msg: "{{ health.units['virtuoso-web.service'].memory_current }}"
"""

RETURN = r"""
units:
  description: State of each unit, keyed by the name given in O(name) (the last observation).
  returned: always
  type: dict
  sample:
    virtuoso-web.service:
      active_state: active
      sub_state: running
      n_restarts: 0
      memory_current: 183500800
      active_enter_timestamp: Tue 2026-11-24 03:15:02 UTC
      main_pid: 4242
      result: success
      active_seconds: 5412.318
  contains:
    active_state:
      description: C(ActiveState), for example V(active), V(activating), V(failed), V(inactive).
      type: str
    sub_state:
      description: C(SubState), for example V(running), V(auto-restart), V(dead).
      type: str
    n_restarts:
      description: C(NRestarts), how often systemd restarted the unit automatically (0 if unknown).
      type: int
    memory_current:
      description: C(MemoryCurrent) in bytes, or V(null) when systemd reports C([not set]).
      type: int
    active_enter_timestamp:
      description: C(ActiveEnterTimestamp) as printed by systemctl, or V(null) if empty.
      type: str
    main_pid:
      description: C(MainPID), V(0) when the unit has no main process.
      type: int
    result:
      description: C(Result), for example V(success), V(exit-code), V(signal), V(timeout).
      type: str
    active_seconds:
      description:
        - Seconds the unit has been active (since C(ActiveEnterTimestampMonotonic)) at the end of
          the check.
        - V(null) when the unit is not active or systemd does not report the monotonic timestamp.
      type: float
all_active:
  description:
    - Whether every unit is active (and, with O(stable_for), stayed active without restarting).
  returned: always
  type: bool
  sample: true
journal_tail:
  description:
    - The last 20 journal lines of each unhealthy unit (units whose journal cannot be read are
      left out).
  returned: when at least one unit is not active or not stable
  type: dict
  sample:
    virtuoso-web.service:
      - "Nov 24 03:15:04 vps python3[4242]: ModuleNotFoundError: No module named 'ccxt'"
"""

PROPERTIES = (
    "Id,ActiveState,SubState,NRestarts,MemoryCurrent,ActiveEnterTimestamp,MainPID,Result,ExecMainStatus,"
    "ActiveEnterTimestampMonotonic"
)
POLL_INTERVAL = 1.0
JOURNAL_LINES = 20
UINT64_MAX = 2**64 - 1
USEC_PER_SEC = 1_000_000
UNIT_NAME_RE = re.compile(r"^[A-Za-z0-9:_.\\@][A-Za-z0-9:_.\\@-]*$")

ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    "name": {"type": "list", "elements": "str", "required": True},
    "wait": {"type": "int", "default": 0},
    "require_active": {"type": "bool", "default": True},
    "stable_for": {"type": "int", "default": 0},
}


def _int_or_none(value: str | None) -> int | None:
    """Parse a systemd integer; ``[not set]``, empty, garbage and UINT64_MAX give None."""
    if value is None:
        return None
    try:
        number = int(value.strip())
    except ValueError:
        return None
    return None if number >= UINT64_MAX else number


class UnitState(NamedTuple):
    """One observation of a unit, parsed from ``systemctl show``.

    A NamedTuple rather than a dataclass: dataclasses need the defining module in
    ``sys.modules``, which modules loaded from a file path (as in the test harness) are not.
    """

    active_state: str
    sub_state: str
    n_restarts: int
    memory_current: int | None
    active_enter_timestamp: str | None
    main_pid: int
    result: str
    exec_main_status: int | None
    # CLOCK_MONOTONIC in µs when the unit last entered the active state; None if unknown (or 0).
    active_enter_monotonic: int | None
    # time.monotonic() just before systemctl was asked (the unit's state is at least this recent).
    observed_at: float

    @classmethod
    def from_show(cls, output: str, observed_at: float) -> UnitState:
        """Parse ``KEY=VALUE`` lines; missing properties get neutral defaults."""
        props: dict[str, str] = {}
        for line in output.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                props[key.strip()] = value.strip()
        return cls(
            active_state=props.get("ActiveState", "unknown") or "unknown",
            sub_state=props.get("SubState", "unknown") or "unknown",
            n_restarts=_int_or_none(props.get("NRestarts")) or 0,
            memory_current=_int_or_none(props.get("MemoryCurrent")),
            active_enter_timestamp=props.get("ActiveEnterTimestamp") or None,
            main_pid=_int_or_none(props.get("MainPID")) or 0,
            result=props.get("Result", "unknown") or "unknown",
            exec_main_status=_int_or_none(props.get("ExecMainStatus")),
            active_enter_monotonic=_int_or_none(props.get("ActiveEnterTimestampMonotonic")) or None,
            observed_at=observed_at,
        )

    @property
    def active(self) -> bool:
        return self.active_state == "active"

    def active_seconds(self, now: float) -> float | None:
        """Seconds the unit has been active at monotonic time ``now``, or None if unknown.

        None when the unit is not active, systemd gave no monotonic timestamp, or the timestamp
        lies after ``now`` (the clocks do not match), so callers fall back to watching.
        """
        if not self.active or self.active_enter_monotonic is None:
            return None
        seconds = now - self.active_enter_monotonic / USEC_PER_SEC
        return seconds if seconds >= 0 else None

    def describe(self) -> str:
        """Short human-readable state, e.g. ``failed/failed, result=exit-code, exit status 1``."""
        text = f"{self.active_state}/{self.sub_state}, result={self.result}"
        if self.exec_main_status:
            text += f", exit status {self.exec_main_status}"
        return text

    def as_dict(self, now: float) -> dict[str, Any]:
        """The documented per-unit return value; ``active_seconds`` is taken at ``now``."""
        active_seconds = self.active_seconds(now)
        return {
            "active_state": self.active_state,
            "sub_state": self.sub_state,
            "n_restarts": self.n_restarts,
            "memory_current": self.memory_current,
            "active_enter_timestamp": self.active_enter_timestamp,
            "main_pid": self.main_pid,
            "result": self.result,
            "active_seconds": None if active_seconds is None else round(active_seconds, 3),
        }


def instability(before: UnitState, state: UnitState, stable_for: int) -> str | None:
    """Why ``state`` shows the unit was not stable since ``before``, or None if it was."""
    if state.n_restarts > before.n_restarts:
        return (
            f"crash loop: NRestarts went from {before.n_restarts} to {state.n_restarts} "
            f"within stable_for={stable_for}s (now {state.describe()})"
        )
    if not state.active:
        return f"left the active state within stable_for={stable_for}s ({state.describe()})"
    if state.active_enter_timestamp != before.active_enter_timestamp:
        return (
            f"restarted within stable_for={stable_for}s (ActiveEnterTimestamp "
            f"{before.active_enter_timestamp} -> {state.active_enter_timestamp})"
        )
    if None not in (before.active_enter_monotonic, state.active_enter_monotonic) and (
        state.active_enter_monotonic != before.active_enter_monotonic
    ):
        # Restarted within the same second: only the µs timestamp shows it.
        return (
            f"restarted within stable_for={stable_for}s (ActiveEnterTimestampMonotonic "
            f"{before.active_enter_monotonic} -> {state.active_enter_monotonic})"
        )
    return None


class Checker:
    """Queries units through ``module.run_command``; fails the module on systemctl errors."""

    def __init__(self, module: AnsibleModule) -> None:
        self.module = module
        self.systemctl = module.get_bin_path("systemctl", required=True)

    def show(self, unit: str) -> UnitState:
        """Return the current state of ``unit`` (fails the module if systemctl fails)."""
        observed_at = time.monotonic()
        rc, out, err = self.module.run_command([self.systemctl, "show", "-p", PROPERTIES, unit])
        if rc != 0:
            detail = " / ".join(line.strip() for line in (err or out).splitlines() if line.strip())
            self.module.fail_json(
                msg=f"'systemctl show {unit}' failed (rc={rc}): {detail}; "
                "check the unit name and that systemd is running on the host",
                rc=rc,
                stderr=err,
            )
        return UnitState.from_show(out, observed_at)

    def show_all(self, names: list[str]) -> dict[str, UnitState]:
        return {name: self.show(name) for name in names}

    def wait_until_active(self, names: list[str], wait: int) -> dict[str, UnitState]:
        """Poll until every unit is active or ``wait`` seconds passed; return the last states."""
        deadline = time.monotonic() + wait
        while True:
            states = self.show_all(names)
            remaining = deadline - time.monotonic()
            if all(state.active for state in states.values()) or remaining <= 0:
                return states
            time.sleep(min(POLL_INTERVAL, remaining))

    def watch_stability(
        self, states: dict[str, UnitState], stable_for: int
    ) -> tuple[dict[str, UnitState], dict[str, str]]:
        """Make sure every (active) unit in ``states`` has been active for ``stable_for`` seconds.

        Time a unit has already been active (ActiveEnterTimestampMonotonic) counts: a unit active
        for ``stable_for`` seconds is stable at once, the others are watched (polled every
        second) until they have been active that long, or for the full ``stable_for`` when the
        monotonic timestamp is unknown. Returns the last states and, per unstable unit, why: it
        left the active state, its NRestarts grew or it was restarted. Stops early once every
        watched unit is unstable.
        """
        baseline = dict(states)
        states = dict(states)
        problems: dict[str, str] = {}
        # Per unit, the monotonic time until which it still has to be watched.
        pending: dict[str, float] = {}
        for name, state in states.items():
            already = state.active_seconds(state.observed_at) or 0.0
            if already < stable_for:
                pending[name] = state.observed_at + stable_for - already
        while pending:
            pause = min(POLL_INTERVAL, min(pending.values()) - time.monotonic())
            if pause > 0:
                time.sleep(pause)
            for name in list(pending):
                state = self.show(name)
                states[name] = state
                problem = instability(baseline[name], state, stable_for)
                if problem:
                    problems[name] = problem
                if problem or state.observed_at >= pending[name]:
                    del pending[name]
        return states, problems

    def journal_tail(self, names: list[str]) -> dict[str, list[str]]:
        """Last journal lines per unit; units whose journal cannot be read are left out."""
        journalctl = self.module.get_bin_path("journalctl")
        tails: dict[str, list[str]] = {}
        if not journalctl:
            return tails
        for name in names:
            rc, out, _err = self.module.run_command(
                [journalctl, "-u", name, "-n", str(JOURNAL_LINES), "--no-pager"]
            )
            if rc == 0:
                tails[name] = out.splitlines()[-JOURNAL_LINES:]
        return tails


def validate_params(params: dict[str, Any]) -> str | None:
    """Return an error message for invalid parameters, or None."""
    names = params["name"]
    if not names:
        return "name must list at least one unit"
    bad = [name for name in names if not UNIT_NAME_RE.match(name)]
    if bad:
        return f"invalid unit name(s) {bad}: use systemd unit names such as virtuoso-web.service"
    for option in ("wait", "stable_for"):
        if params[option] < 0:
            return f"{option} must be >= 0 seconds; got {params[option]}"
    return None


def failure_message(problems: dict[str, str], wait: int) -> str:
    """Message naming every unhealthy unit and why."""
    waited = f" after waiting {wait}s" if wait else ""
    details = "; ".join(f"{name}: {why}" for name, why in problems.items())
    return (
        f"{len(problems)} unit(s) not healthy{waited}: {details}. "
        "See journal_tail (or journalctl -u <unit>) for the cause"
    )


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    params = module.params
    error = validate_params(params)
    if error:
        module.fail_json(msg=error)
    names: list[str] = list(dict.fromkeys(params["name"]))
    checker = Checker(module)

    states = checker.wait_until_active(names, params["wait"])
    problems = {
        name: f"not active ({state.describe()})" for name, state in states.items() if not state.active
    }
    if not problems and params["stable_for"] > 0:
        states, problems = checker.watch_stability(states, params["stable_for"])

    now = time.monotonic()

    result: dict[str, Any] = {
        "changed": False,
        "units": {name: state.as_dict(now) for name, state in states.items()},
        "all_active": not problems,
    }
    if problems:
        result["journal_tail"] = checker.journal_tail(list(problems))
        if params["require_active"]:
            module.fail_json(msg=failure_message(problems, params["wait"]), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
