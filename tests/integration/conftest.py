"""Integration harness: runs the project's playbooks against the live sandbox hosts.

Needs `make sandbox-up` (make test does it). Playbooks run with the json stdout callback so that
tests assert on per-host, per-task results instead of scraping text.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
# Another sandbox instance (scripts/sandbox.sh with SANDBOX_NAME/SANDBOX_INVENTORY) can be targeted
# by pointing VIRTUOSO_SANDBOX_INVENTORY at its hosts.yml.
SANDBOX_INVENTORY = Path(os.environ.get("VIRTUOSO_SANDBOX_INVENTORY", REPO_ROOT / "inventory" / "sandbox"))
VENV_BIN = Path(sys.executable).parent


@dataclass
class PlaybookRun:
    """Outcome of one ansible-playbook run, parsed from the json callback."""

    returncode: int
    stats: dict[str, dict[str, int]]
    plays: list[dict[str, Any]]
    stderr: str
    raw: dict[str, Any] = field(repr=False)

    def task_results(self, task_name: str) -> dict[str, dict[str, Any]]:
        """Per-host results of the (last) task with this name."""
        found: dict[str, dict[str, Any]] = {}
        for play in self.plays:
            for task in play["tasks"]:
                if task["task"]["name"] == task_name:
                    found = task["hosts"]
        return found

    def messages(self) -> list[str]:
        """Every failure message of the run, for assertions on what an operator is told."""
        msgs = []
        for play in self.plays:
            for task in play["tasks"]:
                msgs += [r.get("msg", "") for r in task["hosts"].values() if r.get("failed")]
        return msgs


def ansible_env(**extra: str) -> dict[str, str]:
    """Environment for ansible commands: the project's config, the venv first on PATH."""
    env = dict(os.environ)
    env.update(
        ANSIBLE_CONFIG=str(REPO_ROOT / "ansible.cfg"),
        ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json",
        ANSIBLE_FORCE_COLOR="0",
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    env.update(extra)
    return env


def run_playbook(
    playbook: str,
    *args: str,
    inventory: Path | str = SANDBOX_INVENTORY,
    extra_vars: dict[str, Any] | None = None,
    timeout: float = 900,
) -> PlaybookRun:
    """Run playbooks/<playbook> from the repo root and parse its json output."""
    command = [str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), f"playbooks/{playbook}", *args]
    if extra_vars:
        command += ["-e", json.dumps(extra_vars)]
    done = subprocess.run(
        command,
        cwd=REPO_ROOT,
        env=ansible_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    # The task-timing callback prints its table around the JSON document: decode just the document.
    start = done.stdout.find("{\n")
    raw = json.JSONDecoder().raw_decode(done.stdout, start)[0] if start >= 0 else {"stats": {}, "plays": []}
    return PlaybookRun(done.returncode, raw["stats"], raw["plays"], done.stderr, raw)


def inventory_listing(inventory: Path | str = SANDBOX_INVENTORY) -> dict[str, Any]:
    """``ansible-inventory --list`` of ``inventory``, parsed (groups, and hostvars under ``_meta``)."""
    done = subprocess.run(
        [str(VENV_BIN / "ansible-inventory"), "-i", str(inventory), "--list"],
        cwd=REPO_ROOT,
        env=ansible_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout)


@pytest.fixture(scope="session")
def sandbox_hosts() -> list[str]:
    """Names of the sandbox hosts; fails (never skips) when the sandbox is down."""
    hosts_file = SANDBOX_INVENTORY if SANDBOX_INVENTORY.is_file() else SANDBOX_INVENTORY / "hosts.yml"
    if not hosts_file.exists():
        pytest.fail("sandbox is down: run `make sandbox-up` (make test does it for you)")
    return sorted(inventory_listing()["virtuoso"]["hosts"])
