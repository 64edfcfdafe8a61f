"""virtuoso_smoke: the gate passes a good release and stops a release with a module that cannot import.

molecule's converge must succeed, so the failing case runs here: resources/smoke-gate.yml applies the
role to a copy of the current release with one extra module that raises ImportError.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import APP_OWNER, APP_ROOT

PLAYBOOK = Path(__file__).resolve().parents[2] / "resources" / "smoke-gate.yml"
BROKEN = f"/home/{APP_OWNER}/molecule-broken-release"
BROKEN_MODULE = "src/indicators/molecule_broken.py"
IMPORT_TASK = "Import every shipped module with the release's interpreter"


def run_gate(release: str) -> tuple[int, dict]:
    """Run the smoke gate on one release of the scenario's host; return (rc, json callback output)."""
    ephemeral = os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]
    # The json callback: assert on per-task results (the timing callback prints around the document).
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json")
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i",
            f"{ephemeral}/inventory",
            str(PLAYBOOK),
            "-e",
            json.dumps({"molecule_smoke_release": release}),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    start = done.stdout.find("{\n")
    assert start >= 0, done.stdout + done.stderr
    return done.returncode, json.JSONDecoder().raw_decode(done.stdout, start)[0]


def failed_tasks(output: dict) -> dict[str, dict]:
    """Failed results by task name (without the role prefix the json callback adds)."""
    return {
        task["task"]["name"].split(" : ", 1)[-1]: result
        for play in output["plays"]
        for task in play["tasks"]
        for result in task["hosts"].values()
        if result.get("failed")
    }


@pytest.fixture
def broken_release(host):
    """A copy of the current release with a module that raises ImportError, owned like a release."""
    host.check_output("rm -rf %s && cp -a %s %s", BROKEN, f"{APP_ROOT}/current/", BROKEN)
    host.check_output(
        "printf '%%s\\n' %s > %s && chown %s: %s",
        'raise ImportError("molecule: deliberately broken release")',
        f"{BROKEN}/{BROKEN_MODULE}",
        APP_OWNER,
        f"{BROKEN}/{BROKEN_MODULE}",
    )
    yield BROKEN
    host.check_output("rm -rf %s", BROKEN)


def test_gate_passes_the_current_release():
    rc, output = run_gate(f"{APP_ROOT}/current")
    assert rc == 0, failed_tasks(output)
    assert not failed_tasks(output)


def test_gate_stops_a_release_whose_module_cannot_import(broken_release):
    rc, output = run_gate(broken_release)
    assert rc != 0
    failed = failed_tasks(output)
    assert list(failed) == [IMPORT_TASK], failed
    assert "molecule_broken" in json.dumps(failed[IMPORT_TASK])
    # The gate stops at the first failed check: nothing after the imports ran.
    ran = [task["task"]["name"].split(" : ", 1)[-1] for play in output["plays"] for task in play["tasks"]]
    assert "Run the smoke test suite" not in ran
