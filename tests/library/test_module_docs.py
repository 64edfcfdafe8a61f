"""Every module in library/ must render with ansible-doc (DOCUMENTATION/EXAMPLES/RETURN are valid)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.library.conftest import LIBRARY_DIR, MODULE_UTILS_DIR, REPO_ROOT

ANSIBLE_DOC = Path(sys.executable).parent / "ansible-doc"
MODULES = sorted(path.stem for path in LIBRARY_DIR.glob("*.py") if not path.name.startswith("_"))


def ansible_doc(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the venv's ansible-doc against the project's library/ and module_utils/."""
    env = {
        **os.environ,
        "ANSIBLE_LIBRARY": str(LIBRARY_DIR),
        "ANSIBLE_MODULE_UTILS": str(MODULE_UTILS_DIR),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "PAGER": "cat",
    }
    return subprocess.run(
        [str(ANSIBLE_DOC), *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_there_are_modules_to_check():
    assert ANSIBLE_DOC.exists(), f"{ANSIBLE_DOC} is missing; run the tests with the project's venv"
    assert MODULES


@pytest.mark.parametrize("name", MODULES)
def test_module_documentation_renders(name):
    rendered = ansible_doc("-t", "module", name)
    assert rendered.returncode == 0, rendered.stderr
    assert "WARNING" not in rendered.stderr, rendered.stderr
    assert f"> MODULE {name}" in rendered.stdout

    as_json = ansible_doc("-t", "module", "--json", name)
    assert as_json.returncode == 0, as_json.stderr
    entry = json.loads(as_json.stdout)[name]
    doc = entry["doc"]
    assert doc["module"] == name
    assert doc.get("short_description"), "DOCUMENTATION needs a short_description"
    assert doc.get("description"), "DOCUMENTATION needs a description"
    assert entry.get("examples"), "EXAMPLES is missing or empty"
    assert entry.get("return"), "RETURN is missing or empty"
