"""virtuoso_services: both hardened units installed, enabled, running as `virtuoso`, healthy."""

from __future__ import annotations

import re

import pytest
from conftest import APP_ROOT, PORTS, SERVICE_USER

MAX_EXPOSURE = 2.0
HEALTH = """
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=5) as response:
    print(response.status)
"""


@pytest.mark.parametrize("unit", sorted(PORTS))
def test_unit_is_installed_enabled_and_active(host, unit):
    unit_file = host.file(f"/etc/systemd/system/{unit}.service")
    assert unit_file.is_file
    assert (unit_file.user, unit_file.mode) == ("root", 0o644)
    service = host.service(unit)
    assert service.is_enabled
    assert service.is_running


@pytest.mark.parametrize("unit", sorted(PORTS))
def test_service_runs_as_the_unprivileged_service_user(host, unit):
    pid = host.check_output("systemctl show --property=MainPID --value %s", f"{unit}.service")
    assert pid not in ("", "0"), f"{unit} has no main process"
    assert host.check_output("ps -o user= -p %s", pid) == SERVICE_USER
    assert host.check_output("ps -o uid= -p %s", pid) != "0"
    assert host.user(SERVICE_USER).shell == "/usr/sbin/nologin"
    # It runs the current release with the release's venv.
    exe = host.check_output("readlink -f /proc/%s/exe", pid)
    assert re.fullmatch(r"/usr/bin/python3\.11", exe), exe
    current = host.check_output("readlink -f %s/current", APP_ROOT)
    assert host.check_output("readlink -f /proc/%s/cwd", pid) == current


@pytest.mark.parametrize("unit", sorted(PORTS))
def test_hardening_exposure_is_at_most_2(host, unit):
    report = host.check_output("systemd-analyze security --no-pager %s", f"{unit}.service")
    last = report.splitlines()[-1]
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", last)
    assert match, last
    assert float(match.group(1)) <= MAX_EXPOSURE, last


def test_environment_file_is_root_only(host):
    env = host.file("/etc/virtuoso/trading.env")
    assert env.is_file
    assert (env.user, env.group, env.mode) == ("root", "root", 0o600)


def test_configs_are_readable_by_the_service_group_only(host):
    for name in ("trading", "health_monitor"):
        config = host.file(f"{APP_ROOT}/shared/config/{name}.toml")
        assert (config.user, config.group, config.mode) == ("root", SERVICE_USER, 0o640)
    assert "interval_seconds = 5" in host.file(f"{APP_ROOT}/shared/config/trading.toml").content_string


@pytest.mark.parametrize(("unit", "port"), sorted(PORTS.items()))
def test_health_answers_200_on_loopback_only(host, unit, port):
    assert host.socket(f"tcp://127.0.0.1:{port}").is_listening, unit
    assert not host.socket(f"tcp://0.0.0.0:{port}").is_listening, unit
    assert host.check_output("python3 -c %s %s", HEALTH, f"http://127.0.0.1:{port}/health") == "200"
