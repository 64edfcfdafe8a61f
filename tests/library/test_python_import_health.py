"""Tests of library/python_import_health.py (and module_utils/virtuoso_import_probe.py)."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.module_utils.common.warnings import get_warning_messages

from tests.library.conftest import load_module

MODULE = "python_import_health"
PYTHON = sys.executable
FIXTURES = Path(__file__).parent / "fixtures" / "import_health"
STANDARD_KEYS = {"changed", "failed", "msg", "invocation", "warnings"}


def write(path: Path, source: str) -> Path:
    """Write dedented ``source`` to ``path`` (creating parents) and return it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source), encoding="utf-8")
    return path


def by_name(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Index the ``modules`` entries of a result by module name."""
    return {entry["name"]: entry for entry in result["modules"]}


def process_gone(pid: int, wait: float = 5.0) -> bool:
    """Return True once ``pid`` no longer runs (gone, or a zombie nobody reaped yet)."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            return True
        if "\nState:\tZ" in status:
            return True
        time.sleep(0.05)
    return False


def assert_documented(result: dict[str, Any]) -> None:
    """Every key the module returns is in RETURN, including the per-module entries."""
    returns = yaml.safe_load(load_module(MODULE).RETURN)
    assert set(result) - STANDARD_KEYS <= set(returns)
    entry_keys = set(returns["modules"]["contains"])
    for entry in result["modules"]:
        assert set(entry) <= entry_keys
        assert {"name", "ok", "import_ms", "file", "sha256"} <= set(entry)


@pytest.fixture
def broken_tree(tmp_path: Path) -> Path:
    """A directory with a good module, one raising ImportError and one with a SyntaxError."""
    write(tmp_path / "fine.py", "VALUE = 1\n")
    write(tmp_path / "needs_missing.py", "import module_that_does_not_exist_42  # noqa\n")
    write(tmp_path / "bad_syntax.py", "x = 1\ndef broken(:\n    pass\n")
    return tmp_path


def test_good_module_reports_file_hash_and_timing(run_module):
    result = run_module(MODULE, {"python": PYTHON, "modules": ["goodpkg.ok"], "paths": [str(FIXTURES)]})

    assert not result.get("failed"), result["msg"]
    assert result["changed"] is False
    assert result["failed_modules"] == []
    assert result["python"] == PYTHON
    entry = by_name(result)["goodpkg.ok"]
    expected_file = FIXTURES / "goodpkg" / "ok.py"
    assert entry["ok"] is True
    assert entry["file"] == str(expected_file)
    assert entry["sha256"] == hashlib.sha256(expected_file.read_bytes()).hexdigest()
    assert isinstance(entry["import_ms"], float)
    assert entry["import_ms"] >= 0
    assert "error" not in entry
    assert "1 modules imported" in result["msg"]
    assert_documented(result)


def test_import_error_fails_and_names_the_module(run_module, broken_tree):
    result = run_module(
        MODULE, {"python": PYTHON, "modules": ["fine", "needs_missing"], "paths": [str(broken_tree)]}
    )

    assert result["failed"] is True
    assert result["failed_modules"] == ["needs_missing"]
    assert "needs_missing" in result["msg"]
    assert "1 of 2 modules failed" in result["msg"]
    entries = by_name(result)
    assert entries["fine"]["ok"] is True
    bad = entries["needs_missing"]
    assert bad["ok"] is False
    assert bad["error_type"] == "ModuleNotFoundError"
    assert "module_that_does_not_exist_42" in bad["error"]
    assert bad["file"] == str(broken_tree / "needs_missing.py")
    assert bad["sha256"] == hashlib.sha256((broken_tree / "needs_missing.py").read_bytes()).hexdigest()
    assert "needs_missing.py" in bad["traceback_tail"]
    assert "<frozen importlib" not in bad["traceback_tail"]
    assert_documented(result)


def test_syntax_error_reports_file_and_line(run_module, broken_tree):
    result = run_module(MODULE, {"python": PYTHON, "modules": ["bad_syntax"], "paths": [str(broken_tree)]})

    assert result["failed"] is True
    entry = by_name(result)["bad_syntax"]
    assert entry["error_type"] == "SyntaxError"
    assert "line 2" in entry["error"]
    assert entry["file"] == str(broken_tree / "bad_syntax.py")
    assert "def broken(:" in entry["traceback_tail"]


def test_missing_module_has_no_file(run_module):
    result = run_module(MODULE, {"python": PYTHON, "modules": ["no_such_module_anywhere_42"]})

    entry = by_name(result)["no_such_module_anywhere_42"]
    assert result["failed"] is True
    assert entry["error_type"] == "ModuleNotFoundError"
    assert entry["file"] is None
    assert entry["sha256"] is None


def test_hanging_module_times_out_and_leaves_no_process(run_module, tmp_path):
    pids = tmp_path / "pids"
    write(
        tmp_path / "hangs.py",
        f"""
        import os, subprocess, sys, time
        grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        with open({str(pids)!r}, "w") as handle:
            handle.write(f"{{os.getpid()}} {{grandchild.pid}}")
        time.sleep(120)
        """,
    )
    write(tmp_path / "fine.py", "VALUE = 1\n")

    started = time.monotonic()
    result = run_module(
        MODULE, {"python": PYTHON, "modules": ["hangs", "fine"], "paths": [str(tmp_path)], "timeout": 2}
    )
    elapsed = time.monotonic() - started

    assert elapsed < 20
    assert result["failed"] is True
    assert result["failed_modules"] == ["hangs"]
    entries = by_name(result)
    assert entries["fine"]["ok"] is True
    hang = entries["hangs"]
    assert hang["error_type"] == "TimeoutError"
    assert "within 2s" in hang["error"]
    assert hang["import_ms"] >= 2000
    assert "hangs.py" in hang["traceback_tail"]  # faulthandler's dump of the stuck stack
    child, grandchild = (int(pid) for pid in pids.read_text().split())
    assert process_gone(child), f"probe child {child} still running"
    assert process_gone(grandchild), f"grandchild {grandchild} still running"


def test_background_process_of_a_good_import_is_cleaned_up(run_module, tmp_path):
    pids = tmp_path / "pids"
    write(
        tmp_path / "spawns.py",
        f"""
        import subprocess, sys
        background = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        with open({str(pids)!r}, "w") as handle:
            handle.write(str(background.pid))
        """,
    )

    result = run_module(MODULE, {"python": PYTHON, "modules": ["spawns"], "paths": [str(tmp_path)]})

    assert not result.get("failed"), result["msg"]
    assert process_gone(int(pids.read_text()))


def test_child_crash_without_result_is_reported(run_module, tmp_path):
    write(tmp_path / "dies.py", "import os, sys\nsys.stderr.write('going down\\n')\nos._exit(3)\n")

    result = run_module(MODULE, {"python": PYTHON, "modules": ["dies"], "paths": [str(tmp_path)]})

    entry = by_name(result)["dies"]
    assert result["failed"] is True
    assert entry["error_type"] == "ProbeError"
    assert "code 3" in entry["error"]
    assert "going down" in entry["traceback_tail"]


def test_output_printed_at_import_does_not_confuse_the_probe(run_module, tmp_path):
    write(tmp_path / "chatty.py", "print('hello')\nprint('{\"ok\": false}')\n")

    result = run_module(MODULE, {"python": PYTHON, "modules": ["chatty"], "paths": [str(tmp_path)]})

    assert not result.get("failed"), result["msg"]
    assert by_name(result)["chatty"]["ok"] is True


def test_discover_imports_every_module_of_the_package(run_module, tmp_path):
    package = tmp_path / "goodpkg"
    shutil.copytree(FIXTURES / "goodpkg", package)
    write(package / "__pycache__" / "stale.py", "raise RuntimeError('must not be imported')\n")
    write(package / ".hidden" / "secret.py", "raise RuntimeError('must not be imported')\n")
    write(package / "not-a-module.py", "raise RuntimeError('must not be imported')\n")

    result = run_module(MODULE, {"python": PYTHON, "discover": str(package)})

    assert not result.get("failed"), result["msg"]
    assert [entry["name"] for entry in result["modules"]] == [
        "goodpkg",
        "goodpkg.ok",
        "goodpkg.sub",
        "goodpkg.sub.leaf",
    ]
    assert all(entry["ok"] for entry in result["modules"])
    assert by_name(result)["goodpkg.sub"]["file"] == str(package / "sub" / "__init__.py")


def test_modules_and_discover_are_merged_without_duplicates(run_module):
    result = run_module(
        MODULE, {"python": PYTHON, "modules": ["json", "goodpkg.ok"], "discover": str(FIXTURES / "goodpkg")}
    )

    names = [entry["name"] for entry in result["modules"]]
    assert names == ["json", "goodpkg.ok", "goodpkg", "goodpkg.sub", "goodpkg.sub.leaf"]


def test_discover_of_an_empty_package_fails(run_module, tmp_path):
    (tmp_path / "empty").mkdir()

    result = run_module(MODULE, {"python": PYTHON, "discover": str(tmp_path / "empty")})

    assert result["failed"] is True
    assert "no importable .py modules" in result["msg"]


def test_paths_are_prepended_to_sys_path(run_module, tmp_path):
    write(tmp_path / "first" / "shadowed.py", "WHERE = 'first'\n")
    write(tmp_path / "second" / "shadowed.py", "WHERE = 'second'\n")

    without = run_module(MODULE, {"python": PYTHON, "modules": ["shadowed"]})
    ordered = run_module(
        MODULE,
        {
            "python": PYTHON,
            "modules": ["shadowed"],
            "paths": [str(tmp_path / "second"), str(tmp_path / "first")],
        },
    )

    assert without["failed"] is True
    assert by_name(without)["shadowed"]["error_type"] == "ModuleNotFoundError"
    assert not ordered.get("failed"), ordered["msg"]
    assert by_name(ordered)["shadowed"]["file"] == str(tmp_path / "second" / "shadowed.py")


def test_chdir_sets_working_directory_and_sys_path(run_module, tmp_path):
    write(tmp_path / "release" / "marker.txt", "here\n")
    write(
        tmp_path / "release" / "needs_cwd.py",
        "with open('marker.txt') as handle:\n    MARK = handle.read()\n",
    )

    outside = run_module(
        MODULE, {"python": PYTHON, "modules": ["needs_cwd"], "paths": [str(tmp_path / "release")]}
    )
    inside = run_module(
        MODULE, {"python": PYTHON, "modules": ["needs_cwd"], "chdir": str(tmp_path / "release")}
    )

    assert outside["failed"] is True
    assert by_name(outside)["needs_cwd"]["error_type"] == "FileNotFoundError"
    assert not inside.get("failed"), inside["msg"]
    assert by_name(inside)["needs_cwd"]["file"] == str(tmp_path / "release" / "needs_cwd.py")


def test_pythonpath_of_the_environment_is_ignored(run_module, tmp_path, monkeypatch):
    write(tmp_path / "only_on_pythonpath.py", "VALUE = 1\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))

    result = run_module(MODULE, {"python": PYTHON, "modules": ["only_on_pythonpath"]})

    assert result["failed"] is True


def test_modules_are_probed_in_parallel(run_module, tmp_path):
    names = [f"slow{index}" for index in range(4)]
    for name in names:
        write(tmp_path / f"{name}.py", "import time\ntime.sleep(1.0)\n")

    started = time.monotonic()
    result = run_module(MODULE, {"python": PYTHON, "modules": names, "paths": [str(tmp_path)]})
    elapsed = time.monotonic() - started

    assert not result.get("failed"), result["msg"]
    assert elapsed < 3.5, f"4 x 1s imports took {elapsed:.1f}s: not parallel"


def test_preload_is_imported_once_for_all_modules(run_module, tmp_path):
    imports = tmp_path / "imports"
    write(tmp_path / "heavy.py", f"import os\nwith open({str(imports)!r}, 'a') as f:\n    f.write('x')\n")
    for name in ("uses1", "uses2", "uses3"):
        write(tmp_path / f"{name}.py", "import heavy\n")
    args = {"python": PYTHON, "modules": ["uses1", "uses2", "uses3"], "paths": [str(tmp_path)]}

    result = run_module(MODULE, {**args, "preload": ["heavy"]})
    assert not result.get("failed"), result["msg"]
    assert imports.read_text() == "x", "the preload was imported more than once"

    imports.unlink()
    result = run_module(MODULE, args)
    assert not result.get("failed"), result["msg"]
    assert imports.read_text() == "xxx", "without preload every module imports it itself"


def test_every_module_imports_from_scratch_in_its_own_child(run_module, tmp_path):
    # If the modules shared one interpreter, the second would see the first one's state.
    write(tmp_path / "registry.py", "items = []\n")
    write(tmp_path / "first.py", "import registry\nregistry.items.append('first')\n")
    write(tmp_path / "second.py", "import registry\nassert registry.items == [], registry.items\n")

    result = run_module(
        MODULE,
        {"python": PYTHON, "modules": ["first", "second"], "paths": [str(tmp_path)], "max_workers": 1},
    )

    assert not result.get("failed"), result["msg"]
    assert [entry["ok"] for entry in result["modules"]] == [True, True]


def test_a_failing_preload_warns_and_the_modules_still_report(run_module, tmp_path):
    write(tmp_path / "fine.py", "VALUE = 1\n")

    result = run_module(
        MODULE,
        {"python": PYTHON, "modules": ["fine"], "paths": [str(tmp_path)], "preload": ["no_such_preload_42"]},
    )

    assert not result.get("failed"), result["msg"]
    assert by_name(result)["fine"]["ok"] is True
    warnings = " ".join(get_warning_messages())
    assert "preload no_such_preload_42 failed to import (ModuleNotFoundError" in warnings, warnings


def test_a_probe_that_dies_reports_every_module_failed(run_module, tmp_path):
    write(
        tmp_path / "kills_the_probe.py",
        "import os, sys\nsys.stderr.write('probe going down\\n')\nos._exit(7)\n",
    )
    write(tmp_path / "fine.py", "VALUE = 1\n")

    result = run_module(
        MODULE,
        {"python": PYTHON, "modules": ["fine"], "paths": [str(tmp_path)], "preload": ["kills_the_probe"]},
    )

    assert result["failed"] is True
    assert result["failed_modules"] == ["fine"]
    entry = by_name(result)["fine"]
    assert entry["error_type"] == "ProbeError"
    assert "the probe exited with code 7" in entry["error"]
    assert "probe going down" in entry["traceback_tail"]


def test_check_mode_runs_the_same_read_only_probe(run_module):
    result = run_module(
        MODULE, {"python": PYTHON, "modules": ["goodpkg.ok"], "paths": [str(FIXTURES)]}, check_mode=True
    )

    assert not result.get("failed"), result["msg"]
    assert result["changed"] is False
    assert by_name(result)["goodpkg.ok"]["ok"] is True


def test_check_mode_still_reports_failures(run_module, broken_tree):
    result = run_module(
        MODULE, {"python": PYTHON, "modules": ["needs_missing"], "paths": [str(broken_tree)]}, check_mode=True
    )

    assert result["failed"] is True
    assert result["changed"] is False


def test_missing_interpreter_fails_clearly(run_module, tmp_path):
    missing = tmp_path / "venv311" / "bin" / "python"

    result = run_module(MODULE, {"python": str(missing), "modules": ["json"]})

    assert result["failed"] is True
    assert str(missing) in result["msg"]
    assert "does not exist" in result["msg"]


def test_non_executable_interpreter_fails_clearly(run_module, tmp_path):
    fake = write(tmp_path / "python", "#!/bin/sh\n")
    fake.chmod(0o644)

    result = run_module(MODULE, {"python": str(fake), "modules": ["json"]})

    assert result["failed"] is True
    assert "not executable" in result["msg"]


def test_bare_interpreter_name_is_looked_up_in_path(run_module, monkeypatch):
    monkeypatch.setenv("PATH", os.path.dirname(PYTHON) + os.pathsep + os.environ.get("PATH", ""))

    result = run_module(MODULE, {"python": os.path.basename(PYTHON), "modules": ["json"]})

    assert not result.get("failed"), result["msg"]
    assert os.path.isabs(result["python"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"modules": ["json"]}, "missing required arguments: python"),
        ({"python": PYTHON}, "one of the following is required: modules, discover"),
        ({"python": PYTHON, "modules": ["json"], "timeout": 0}, "timeout must be greater than 0"),
        ({"python": PYTHON, "modules": ["json"], "timeout": "soon"}, "timeout"),
        ({"python": PYTHON, "modules": ["json"], "max_workers": 0}, "max_workers must be at least 1"),
        ({"python": PYTHON, "modules": ["src/utils/x.py", "ok"]}, "not dotted module names: src/utils/x.py"),
        (
            {"python": PYTHON, "modules": ["json"], "preload": ["numpy/core"]},
            "preload contains names that are not dotted module names: numpy/core",
        ),
        ({"python": PYTHON, "modules": []}, "nothing to import"),
        ({"python": PYTHON, "discover": "/nonexistent/src"}, "discover=/nonexistent/src is not a directory"),
        ({"python": PYTHON, "modules": ["json"], "chdir": "/nonexistent"}, "chdir=/nonexistent"),
        ({"python": PYTHON, "modules": ["json"], "bogus": 1}, "Unsupported parameters"),
    ],
)
def test_bad_parameters_fail_with_a_helpful_message(run_module, args, message):
    result = run_module(MODULE, args)

    assert result["failed"] is True
    assert message in result["msg"]
