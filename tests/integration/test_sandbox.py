"""The sandbox behaves like the production VPS: real SSH as linuxuser, sudo, systemd, Python 3.11."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.integration.conftest import REPO_ROOT, VENV_BIN, ansible_env, run_playbook

pytestmark = pytest.mark.sandbox


def ad_hoc(module_args: str, *flags: str) -> dict[str, str]:
    """Run an ad-hoc command on every sandbox host; return host -> stdout."""
    done = subprocess.run(
        [str(VENV_BIN / "ansible"), "virtuoso", "-m", "ansible.builtin.command", "-a", module_args, *flags],
        cwd=REPO_ROOT,
        env=ansible_env(ANSIBLE_LOAD_CALLBACK_PLUGINS="1"),
        capture_output=True,
        text=True,
        check=True,
    )
    start = done.stdout.find("{\n")
    # One ad-hoc task; the mitogen strategy reports it once per host, stock Ansible once for all.
    tasks = json.JSONDecoder().raw_decode(done.stdout, start)[0]["plays"][0]["tasks"]
    return {host: result["stdout"].strip() for task in tasks for host, result in task["hosts"].items()}


def test_preflight_reaches_every_host_and_checks_systemd_and_python(sandbox_hosts):
    run = run_playbook("preflight.yml")
    assert run.returncode == 0, run.messages() or run.stderr
    assert set(sandbox_hosts) <= set(run.stats)
    for host in sandbox_hosts:
        assert run.stats[host]["failures"] == 0
        assert run.stats[host]["unreachable"] == 0
        assert run.stats[host]["changed"] == 0


def test_login_is_unprivileged_and_become_gives_root(sandbox_hosts):
    assert ad_hoc("id -un", "-e", "ansible_become=false") == dict.fromkeys(sandbox_hosts, "linuxuser")
    assert ad_hoc("id -un") == dict.fromkeys(sandbox_hosts, "root")


def test_pid1_is_systemd_and_python_is_311(sandbox_hosts):
    assert ad_hoc("ps -p 1 -o comm=") == dict.fromkeys(sandbox_hosts, "systemd")
    versions = ad_hoc("python3 -c 'import sys; print(sys.version_info[:2])'")
    assert versions == dict.fromkeys(sandbox_hosts, "(3, 11)")


def test_missing_inventory_is_named_with_the_fix(tmp_path):
    run = run_playbook("preflight.yml", inventory=tmp_path / "no-such-inventory")
    assert run.returncode != 0
    assert any("does not exist" in msg and "no-such-inventory" in msg for msg in run.messages())


def test_empty_inventory_says_run_sandbox_up(tmp_path):
    empty = tmp_path / "hosts.yml"
    empty.write_text("all:\n  children:\n    virtuoso:\n      hosts: {}\n")
    run = run_playbook("preflight.yml", inventory=empty)
    assert run.returncode != 0
    assert any("make sandbox-up" in msg for msg in run.messages())
