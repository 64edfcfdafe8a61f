"""Unit tests for library/systemd_unit_health.py (systemctl/journalctl are mocked)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
import yaml
from ansible.module_utils import basic

from tests.library.conftest import load_module

WEB = "virtuoso-web.service"
MON = "virtuoso-monitor.service"
PROPS = (
    "Id,ActiveState,SubState,NRestarts,MemoryCurrent,ActiveEnterTimestamp,MainPID,Result,ExecMainStatus,"
    "ActiveEnterTimestampMonotonic"
)
TS = "Tue 2026-11-24 03:15:02 UTC"
NOW = 50_000.0  # fake monotonic clock for the tests that use ActiveEnterTimestampMonotonic


def usec(seconds: float) -> int:
    """A CLOCK_MONOTONIC time in µs, as in ActiveEnterTimestampMonotonic."""
    return round(seconds * 1_000_000)


def show(
    unit: str = WEB,
    active: str = "active",
    sub: str = "running",
    restarts: int | str = 0,
    memory: str = "183500800",
    since: str = TS,
    pid: int = 4242,
    result: str = "success",
    status: int = 0,
    mono: int | str | None = None,
) -> str:
    """``systemctl show`` output; ``mono=None`` leaves ActiveEnterTimestampMonotonic out."""
    return (
        f"Id={unit}\nActiveState={active}\nSubState={sub}\nNRestarts={restarts}\n"
        f"MemoryCurrent={memory}\nActiveEnterTimestamp={since}\nMainPID={pid}\n"
        f"Result={result}\nExecMainStatus={status}\n"
        + ("" if mono is None else f"ActiveEnterTimestampMonotonic={mono}\n")
    )


ACTIVE = show()
FAILED = show(
    active="failed", sub="failed", since="", pid=0, result="exit-code", status=1, memory="[not set]"
)
ACTIVATING = show(active="activating", sub="auto-restart", since="", pid=0, result="exit-code", status=1)


class FakeHost:
    """Fake systemctl/journalctl plus a fake clock.

    ``units`` maps a unit to the outputs of successive ``systemctl show`` calls (the last one
    repeats). ``sleep`` advances the clock instead of sleeping.
    """

    def __init__(self, units: dict[str, list[str]], journal: bool = True, show_rc: int = 0) -> None:
        self.units = {name: list(outputs) for name, outputs in units.items()}
        self.journal = journal
        self.show_rc = show_rc
        self.now = 1000.0
        self.calls: list[list[str]] = []
        self.sleeps: list[float] = []

    def run_command(self, args: list[str], **_kwargs: Any) -> tuple[int, str, str]:
        self.calls.append(list(args))
        if args[0].endswith("systemctl"):
            if self.show_rc:
                return self.show_rc, "", "Failed to connect to bus: No such file or directory"
            outputs = self.units[args[-1]]
            return 0, outputs.pop(0) if len(outputs) > 1 else outputs[0], ""
        unit = args[args.index("-u") + 1]
        lines = "\n".join(f"Nov 24 03:15:{i:02d} vps python3[4242]: {unit} line {i}" for i in range(30))
        return 0, lines + "\n", ""

    def get_bin_path(self, arg: str, required: bool = False, opt_dirs: Any = None) -> str | None:
        if arg == "journalctl" and not self.journal:
            return None
        return f"/usr/bin/{arg}"

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.sleeps.append(seconds)
        self.now += seconds

    def monotonic(self) -> float:
        return self.now

    def show_calls(self) -> list[list[str]]:
        return [c for c in self.calls if c[0].endswith("systemctl")]


@pytest.fixture
def host() -> Iterator[FakeHost]:
    fake = FakeHost({})
    with (
        mock.patch.object(basic.AnsibleModule, "run_command", fake.run_command),
        mock.patch.object(basic.AnsibleModule, "get_bin_path", fake.get_bin_path),
        mock.patch("time.sleep", fake.sleep),
        mock.patch("time.monotonic", fake.monotonic),
    ):
        yield fake


@pytest.fixture
def check(run_module):
    def _check(check_mode: bool = False, **args: Any) -> dict[str, Any]:
        return run_module("systemd_unit_health", args, check_mode=check_mode)

    return _check


# --- success ------------------------------------------------------------------------------


def test_active_units_are_reported(host, check):
    host.units = {WEB: [ACTIVE], MON: [show(unit=MON, memory="1024", pid=7, restarts=2)]}
    result = check(name=[WEB, MON])
    assert result == {
        "changed": False,
        "all_active": True,
        "units": {
            WEB: {
                "active_state": "active",
                "sub_state": "running",
                "n_restarts": 0,
                "memory_current": 183500800,
                "active_enter_timestamp": TS,
                "main_pid": 4242,
                "result": "success",
                "active_seconds": None,
            },
            MON: {
                "active_state": "active",
                "sub_state": "running",
                "n_restarts": 2,
                "memory_current": 1024,
                "active_enter_timestamp": TS,
                "main_pid": 7,
                "result": "success",
                "active_seconds": None,
            },
        },
    }
    assert host.calls == [
        ["/usr/bin/systemctl", "show", "-p", PROPS, WEB],
        ["/usr/bin/systemctl", "show", "-p", PROPS, MON],
    ]
    assert host.sleeps == []


@pytest.mark.parametrize("memory", ["[not set]", "", str(2**64 - 1), "garbage"])
def test_memory_not_set_is_null(host, check, memory):
    host.units = {WEB: [show(memory=memory)]}
    result = check(name=[WEB])
    assert result["units"][WEB]["memory_current"] is None
    assert result["all_active"] is True


def test_missing_properties_get_neutral_defaults(host, check):
    host.units = {WEB: ["ActiveState=active\nSubState=running\n"]}
    unit = check(name=[WEB])["units"][WEB]
    assert unit["n_restarts"] == 0
    assert unit["main_pid"] == 0
    assert unit["memory_current"] is None
    assert unit["active_enter_timestamp"] is None
    assert unit["result"] == "unknown"


def test_duplicate_names_are_checked_once(host, check):
    host.units = {WEB: [ACTIVE]}
    result = check(name=[WEB, WEB])
    assert list(result["units"]) == [WEB]
    assert len(host.show_calls()) == 1


def test_check_mode_gives_same_result(host, check):
    host.units = {WEB: [ACTIVE]}
    normal = check(name=[WEB])
    assert check(name=[WEB], check_mode=True) == normal


# --- failure ------------------------------------------------------------------------------


def test_inactive_unit_fails_with_state_result_and_journal(host, check):
    host.units = {
        WEB: [ACTIVE],
        MON: [show(unit=MON, active="failed", sub="failed", result="exit-code", status=1)],
    }
    result = check(name=[WEB, MON])
    assert result["failed"] is True
    assert MON in result["msg"]
    assert WEB not in result["msg"]
    assert "failed/failed, result=exit-code, exit status 1" in result["msg"]
    assert result["all_active"] is False
    assert result["units"][MON]["active_state"] == "failed"
    assert list(result["journal_tail"]) == [MON]
    assert len(result["journal_tail"][MON]) == 20
    assert result["journal_tail"][MON][-1].endswith(f"{MON} line 29")
    assert ["/usr/bin/journalctl", "-u", MON, "-n", "20", "--no-pager"] in host.calls


def test_failed_unit_with_memory_not_set(host, check):
    host.units = {WEB: [FAILED]}
    result = check(name=[WEB])
    assert result["failed"] is True
    assert result["units"][WEB]["memory_current"] is None
    assert result["units"][WEB]["main_pid"] == 0


def test_inactive_unit_reported_without_failing_when_not_required(host, check):
    host.units = {WEB: [show(active="inactive", sub="dead", result="success")]}
    result = check(name=[WEB], require_active=False)
    assert not result.get("failed")
    assert result["all_active"] is False
    assert result["units"][WEB]["active_state"] == "inactive"
    assert WEB in result["journal_tail"]


def test_journal_tail_empty_when_journalctl_missing(host, check):
    host.units = {WEB: [FAILED]}
    host.journal = False
    result = check(name=[WEB])
    assert result["failed"] is True
    assert result["journal_tail"] == {}


def test_systemctl_error_fails_clearly(host, check):
    host.units = {WEB: [ACTIVE]}
    host.show_rc = 1
    result = check(name=[WEB])
    assert result["failed"] is True
    assert re.search(
        r"'systemctl show virtuoso-web.service' failed \(rc=1\): Failed to connect", result["msg"]
    )


def test_missing_systemctl_fails(run_module):
    with mock.patch.object(
        basic, "get_bin_path", side_effect=ValueError('Failed to find required executable "systemctl"')
    ):
        result = run_module("systemd_unit_health", {"name": [WEB]})
    assert result["failed"] is True
    assert "systemctl" in result["msg"]


# --- wait ---------------------------------------------------------------------------------


def test_wait_until_active(host, check):
    host.units = {WEB: [ACTIVATING, ACTIVATING, ACTIVE]}
    result = check(name=[WEB], wait=30)
    assert result["all_active"] is True
    assert host.sleeps == [1.0, 1.0]
    assert len(host.show_calls()) == 3


def test_wait_timeout_fails(host, check):
    host.units = {WEB: [ACTIVATING], MON: [show(unit=MON)]}
    result = check(name=[WEB, MON], wait=5)
    assert result["failed"] is True
    assert result["msg"].startswith(
        "1 unit(s) not healthy after waiting 5s: virtuoso-web.service: not active"
    )
    assert "activating/auto-restart" in result["msg"]
    assert host.now == pytest.approx(1005.0)
    assert sum(host.sleeps) == pytest.approx(5.0)
    assert result["units"][MON]["active_state"] == "active"


def test_no_wait_checks_once(host, check):
    host.units = {WEB: [ACTIVATING, ACTIVE]}
    result = check(name=[WEB])
    assert result["failed"] is True
    assert host.sleeps == []


# --- stable_for ---------------------------------------------------------------------------


def test_stable_units_pass(host, check):
    host.units = {WEB: [show(restarts=3)], MON: [show(unit=MON)]}
    result = check(name=[WEB, MON], stable_for=5)
    assert result["all_active"] is True
    assert sum(host.sleeps) == pytest.approx(5.0)
    assert result["units"][WEB]["n_restarts"] == 3


def test_crash_loop_detected_by_growing_nrestarts(host, check):
    # Briefly active every time we look, but systemd keeps restarting it.
    host.units = {
        WEB: [show(restarts=3), show(restarts=3), show(restarts=3), show(restarts=4)],
        MON: [show(unit=MON)],
    }
    result = check(name=[WEB, MON], stable_for=10)
    assert result["failed"] is True
    assert (
        "virtuoso-web.service: crash loop: NRestarts went from 3 to 4 within stable_for=10s" in result["msg"]
    )
    assert MON not in result["msg"]
    assert result["all_active"] is False
    assert result["units"][WEB]["n_restarts"] == 4
    assert list(result["journal_tail"]) == [WEB]


def test_crash_loop_not_failing_when_not_required(host, check):
    host.units = {WEB: [show(restarts=0), show(restarts=1)]}
    result = check(name=[WEB], stable_for=3, require_active=False)
    assert not result.get("failed")
    assert result["all_active"] is False


def test_unit_leaving_active_state_during_stable_for(host, check):
    host.units = {WEB: [ACTIVE, ACTIVE, FAILED]}
    result = check(name=[WEB], stable_for=10)
    assert result["failed"] is True
    assert "left the active state within stable_for=10s (failed/failed" in result["msg"]
    assert sum(host.sleeps) == pytest.approx(2.0)  # stops watching once every unit is unstable


def test_restart_detected_by_active_enter_timestamp(host, check):
    host.units = {WEB: [ACTIVE, show(since="Tue 2026-11-24 03:16:00 UTC")]}
    result = check(name=[WEB], stable_for=4)
    assert result["failed"] is True
    assert "restarted within stable_for=4s" in result["msg"]


def test_stable_for_skipped_when_not_active(host, check):
    host.units = {WEB: [FAILED]}
    result = check(name=[WEB], stable_for=30)
    assert result["failed"] is True
    assert host.sleeps == []


def test_wait_then_stable(host, check):
    host.units = {WEB: [ACTIVATING, show(restarts=1)]}
    result = check(name=[WEB], wait=10, stable_for=3)
    assert result["all_active"] is True
    assert sum(host.sleeps) == pytest.approx(4.0)


# --- stable_for counts the time a unit has already been active ----------------------------


def test_active_seconds_reported(host, check):
    host.now = NOW
    host.units = {WEB: [show(mono=usec(NOW - 5412.318))]}
    result = check(name=[WEB])
    assert result["units"][WEB]["active_seconds"] == pytest.approx(5412.318)
    assert isinstance(result["units"][WEB]["active_seconds"], float)


def test_already_stable_units_do_not_wait(host, check):
    # A no-op deploy re-run: both units have been up for an hour.
    host.now = NOW
    host.units = {
        WEB: [show(restarts=2, mono=usec(NOW - 3600))],
        MON: [show(unit=MON, mono=usec(NOW - 30))],
    }
    result = check(name=[WEB, MON], stable_for=30)
    assert result["all_active"] is True
    assert not result.get("failed")
    assert host.sleeps == []
    assert host.now == NOW  # the fake clock never advanced
    assert len(host.show_calls()) == 2  # one look at each unit, no watching
    assert result["units"][WEB]["active_seconds"] == pytest.approx(3600.0)
    assert result["units"][MON]["active_seconds"] == pytest.approx(30.0)


def test_partially_stable_unit_waits_only_the_remainder(host, check):
    host.now = NOW
    host.units = {WEB: [show(mono=usec(NOW - 7.5))]}
    result = check(name=[WEB], stable_for=10)
    assert result["all_active"] is True
    assert host.sleeps == pytest.approx([1.0, 1.0, 0.5])
    assert host.now == pytest.approx(NOW + 2.5)
    assert len(host.show_calls()) == 4  # the first look plus one poll per sleep
    assert result["units"][WEB]["active_seconds"] == pytest.approx(10.0)


def test_each_unit_is_watched_only_for_its_own_remainder(host, check):
    host.now = NOW
    host.units = {
        WEB: [show(mono=usec(NOW - 8))],  # needs 2 more seconds
        MON: [show(unit=MON, mono=usec(NOW - 4))],  # needs 6 more seconds
    }
    result = check(name=[WEB, MON], stable_for=10)
    assert result["all_active"] is True
    assert sum(host.sleeps) == pytest.approx(6.0)
    web_calls = [c for c in host.show_calls() if c[-1] == WEB]
    mon_calls = [c for c in host.show_calls() if c[-1] == MON]
    assert len(web_calls) == 1 + 2
    assert len(mon_calls) == 1 + 6
    assert result["units"][WEB]["active_seconds"] == pytest.approx(14.0)  # at the end of the check
    assert result["units"][MON]["active_seconds"] == pytest.approx(10.0)


def test_crash_loop_detected_while_watching_the_remainder(host, check):
    # Systemd restarted the unit 2s ago and keeps restarting it.
    host.now = NOW
    host.units = {
        WEB: [
            show(restarts=5, mono=usec(NOW - 2)),
            show(restarts=5, mono=usec(NOW - 2)),
            show(restarts=6, mono=usec(NOW + 1.5)),
        ],
    }
    result = check(name=[WEB], stable_for=10)
    assert result["failed"] is True
    assert "crash loop: NRestarts went from 5 to 6 within stable_for=10s" in result["msg"]
    assert result["all_active"] is False
    assert sum(host.sleeps) == pytest.approx(2.0)
    assert list(result["journal_tail"]) == [WEB]


def test_restart_within_the_same_second_detected_by_monotonic_timestamp(host, check):
    # A manual restart (NRestarts unchanged) with the same second-resolution ActiveEnterTimestamp.
    host.now = NOW
    host.units = {WEB: [show(mono=usec(NOW - 0.2)), show(mono=usec(NOW + 0.6))]}
    result = check(name=[WEB], stable_for=5)
    assert result["failed"] is True
    assert "restarted within stable_for=5s (ActiveEnterTimestampMonotonic" in result["msg"]


def test_unit_leaving_active_state_during_remainder(host, check):
    host.now = NOW
    host.units = {WEB: [show(mono=usec(NOW - 1)), FAILED]}
    result = check(name=[WEB], stable_for=10)
    assert result["failed"] is True
    assert "left the active state within stable_for=10s" in result["msg"]
    assert result["units"][WEB]["active_seconds"] is None  # not active


@pytest.mark.parametrize(
    "mono",
    [
        None,  # property not reported
        0,  # never entered the active state as far as systemd knows
        "",
        "[not set]",
        usec(NOW + 60),  # in the future: not the same clock, do not trust it
    ],
)
def test_unknown_monotonic_timestamp_falls_back_to_full_watch(host, check, mono):
    host.now = NOW
    host.units = {WEB: [show(mono=mono)]}
    result = check(name=[WEB], stable_for=5)
    assert result["all_active"] is True
    assert sum(host.sleeps) == pytest.approx(5.0)
    assert host.now == pytest.approx(NOW + 5)
    assert result["units"][WEB]["active_seconds"] is None


def test_stable_for_zero_does_not_watch(host, check):
    host.now = NOW
    host.units = {WEB: [show(mono=usec(NOW - 0.1))]}
    result = check(name=[WEB], stable_for=0)
    assert result["all_active"] is True
    assert host.sleeps == []
    assert len(host.show_calls()) == 1


# --- bad parameters -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        ({}, r"missing required arguments: name"),
        ({"name": []}, r"name must list at least one unit"),
        ({"name": ["-H evil"]}, r"invalid unit name"),
        ({"name": ["a b.service"]}, r"invalid unit name"),
        ({"name": [WEB], "wait": -1}, r"wait must be >= 0"),
        ({"name": [WEB], "stable_for": -5}, r"stable_for must be >= 0"),
        ({"name": [WEB], "wait": "soon"}, r"wait"),
        ({"name": [WEB], "require_active": "maybe"}, r"require_active"),
    ],
)
def test_bad_parameters(host, check, args, pattern):
    host.units = {WEB: [ACTIVE]}
    result = check(**args)
    assert result["failed"] is True
    assert re.search(pattern, result["msg"]), result["msg"]
    assert host.show_calls() == []


def test_unit_names_with_escapes_and_templates_are_accepted(host, check):
    names = ["virtuoso@btc.service", r"home-linuxuser-trading\x2dbot.mount", "sshd"]
    host.units = {name: [ACTIVE] for name in names}
    assert check(name=names)["all_active"] is True


# --- documentation matches the code -------------------------------------------------------


def test_documentation_matches_argument_spec():
    module = load_module("systemd_unit_health")
    doc = yaml.safe_load(module.DOCUMENTATION)
    assert doc["module"] == "systemd_unit_health"
    assert PROPS == module.PROPERTIES
    options = doc["options"]
    assert set(options) == set(module.ARGUMENT_SPEC)
    for name, spec in module.ARGUMENT_SPEC.items():
        assert options[name]["type"] == spec["type"], name
        assert options[name].get("default") == spec.get("default"), name
        assert bool(options[name].get("required")) == bool(spec.get("required")), name
        assert options[name].get("elements") == spec.get("elements"), name
    yaml.safe_load(module.EXAMPLES)


def test_return_doc_matches_results(host, check):
    documented = yaml.safe_load(load_module("systemd_unit_health").RETURN)
    host.units = {WEB: [ACTIVE]}
    result = check(name=[WEB])
    assert set(result) - {"changed"} == {k for k, v in documented.items() if v["returned"] == "always"}
    assert set(result["units"][WEB]) == set(documented["units"]["contains"])
    assert set(documented["units"]["sample"][WEB]) == set(documented["units"]["contains"])
    host.units = {WEB: [FAILED]}
    failed = check(name=[WEB])
    assert set(failed) - {"changed", "failed", "msg"} == set(documented)
