"""virtuoso_python: Python 3.11 from Debian, and one finished venv per pinned package set."""

from __future__ import annotations

import re

from conftest import APP_OWNER, APP_ROOT, lock_requirements, normalise, source_dir


def test_python311_is_installed(host):
    assert host.package("python3").is_installed
    assert host.package("python3-venv").is_installed
    version = host.check_output("/usr/bin/python3.11 -c 'import sys; print(sys.version_info[:2])'")
    assert version == "(3, 11)"


def test_one_venv_named_by_its_key_and_marked_complete(host, venvs):
    assert len(venvs) == 1, venvs
    venv = venvs[0]
    assert re.fullmatch(rf"{APP_ROOT}/venvs/[0-9a-f]{{16}}", venv), venv
    complete = host.file(f"{venv}/.virtuoso-complete")
    assert complete.is_file
    assert complete.user == APP_OWNER
    # The marker holds the lock it was built from.
    lock = (source_dir() / "requirements" / "venv311.lock").read_text()
    assert complete.content_string.strip() == lock.strip()


def test_venv_belongs_to_the_owner_and_runs_python311(host, venvs):
    venv = venvs[0]
    assert host.file(venv).user == APP_OWNER
    assert host.file(f"{venv}/bin/python").is_symlink
    version = host.check_output("%s/bin/python -c 'import sys; print(sys.version_info[:2])'", venv)
    assert version == "(3, 11)"
    assert "home = /usr/bin" in host.file(f"{venv}/pyvenv.cfg").content_string


def test_pip_freeze_equals_the_lock(host, venvs):
    frozen = {}
    for line in host.check_output("%s/bin/pip freeze --disable-pip-version-check", venvs[0]).splitlines():
        name, _, version = line.partition("==")
        frozen[normalise(name)] = version
    assert frozen == lock_requirements()


def test_wheelhouse_was_removed_from_the_host(host):
    assert not host.file(f"{APP_ROOT}/.wheelhouse").exists
