"""Shared facts and helpers of the molecule verify suites (testinfra, podman backend).

Every scenario's host is one container of the sandbox image, converged as the `linuxuser` login;
the paths below are what playbooks/group_vars/all/virtuoso.yml gives for that login.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

APP_ROOT = "/home/linuxuser/trading/Virtuoso_ccxt"
APP_OWNER = "linuxuser"
SERVICE_USER = "virtuoso"
PORTS = {"virtuoso-trading": 8787, "virtuoso-health-monitor": 8788}
REPO_ROOT = Path(__file__).resolve().parents[2]


def source_dir() -> Path:
    """The release source the scenario shipped: prepare's snapshot of the checkout."""
    ephemeral = os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY")
    snapshot = Path(ephemeral, "source") if ephemeral else None
    return snapshot if snapshot and snapshot.is_dir() else REPO_ROOT


def lock_requirements() -> dict[str, str]:
    """requirements/venv311.lock as {normalised name: version}."""
    pins = {}
    for raw in (source_dir() / "requirements" / "venv311.lock").read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[normalise(name)] = version.strip()
    return pins


def normalise(name: str) -> str:
    """PEP 503 name normalisation (pip freeze prints typing_extensions, the lock typing-extensions)."""
    return "-".join(name.replace("_", "-").replace(".", "-").lower().split("-"))


def host_json(host, script: str, *args: str) -> object:
    """Run a Python snippet with the host's python3 (as root) and decode its JSON output."""
    return json.loads(host.check_output("python3 -c %s" + " %s" * len(args), script, *args))


@pytest.fixture(scope="module")
def venvs(host) -> list[str]:
    """Paths of the venvs under <app_root>/venvs."""
    listing = host.check_output("find %s -mindepth 1 -maxdepth 1 -type d", f"{APP_ROOT}/venvs")
    return sorted(listing.split())


@pytest.fixture(scope="module")
def current_release(host) -> str:
    """Absolute path of the release `current` points to."""
    return host.check_output("readlink -f %s", f"{APP_ROOT}/current")


@pytest.fixture(scope="module")
def revision(host, current_release) -> dict:
    """The REVISION manifest of the current release."""
    return json.loads(host.file(f"{current_release}/REVISION").content_string)
