"""Tests of library/division_guard_audit.py (and module_utils/virtuoso_division_audit.py)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.module_utils.virtuoso_division_audit import DEFAULT_GUARD_FUNCTIONS, audit_source

from tests.library.conftest import REPO_ROOT, load_module

MODULE = "division_guard_audit"
FIXTURES = Path(__file__).parent / "fixtures" / "division_audit"
STANDARD_KEYS = {"changed", "failed", "msg", "invocation", "warnings"}


def scan(source: str, guards: tuple[str, ...] = DEFAULT_GUARD_FUNCTIONS) -> tuple[int, list[tuple[int, str]]]:
    """Audit a snippet; return (guarded, [(line, op), ...])."""
    report = audit_source(textwrap.dedent(source), "snippet.py", "snippet.py", guards)
    return report.guarded, [(finding.line, finding.op) for finding in report.findings]


def file_entry(result: dict[str, Any], path: Path) -> dict[str, Any]:
    """Return the ``files`` entry of ``path``."""
    return result["files"][str(path)]


def assert_documented(result: dict[str, Any]) -> None:
    """Every key the module returns is in RETURN, down to the findings."""
    returns = yaml.safe_load(load_module(MODULE).RETURN)
    assert set(result) - STANDARD_KEYS <= set(returns)
    file_keys = set(returns["files"]["contains"])
    finding_keys = set(returns["files"]["contains"]["findings"]["contains"])
    for entry in result["files"].values():
        assert set(entry) == file_keys
        for finding in entry["findings"]:
            assert set(finding) == finding_keys


# --- the scanner -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "y = x / 2",
        "y = x // 60",
        "y = x % 2",
        "y = x / -1.5",
        "y = x / +3",
        "y = x / 1e3",
        "y = x / 1_000",
        "y = x / (24 * 60)",
        "y = x / 2 ** 10",
        "x /= 2",
        "x //= 4",
        "x %= 7",
        "s = '%s and %d' % (a, b)",
        "s = b'%d' % n",
        "s = 'a' 'b %s' % name",
        "y = np.divide(x, 100.0)",
        "y = safe_divide(a / b, c)",
        "y = so.safe_log(high / low)",
        "y = numpy.add(a, b)",
        "y = x * 3 - 1",
    ],
)
def test_safe_constructs_are_not_raw_divisions(source):
    assert scan(source)[1] == []


@pytest.mark.parametrize(
    ("source", "op"),
    [
        ("y = a / b", "/"),
        ("y = a // b", "//"),
        ("y = a % b", "%"),
        ("a /= b", "/="),
        ("a //= b", "//="),
        ("a %= b", "%="),
        ("y = a / 0", "/"),
        ("y = a / 0.0", "/"),
        ("y = a / -0", "/"),
        ("y = a / (1 - 1)", "/"),
        ("y = a / True", "/"),
        ("y = fmt % args", "%"),
        ("y = ('%s' + suffix) % args", "%"),
        ("y = np.divide(a, b)", "np.divide"),
        ("y = np.true_divide(a, b)", "np.true_divide"),
        ("y = numpy.divide(a, b)", "numpy.divide"),
        ("y = np.floor_divide(a, b)", "np.floor_divide"),
        ("y = np.mod(a, b)", "np.mod"),
        ("y = np.remainder(a, b)", "np.remainder"),
        ("y = np.divide(a, 0)", "np.divide"),
        ("import numpy as xp\ny = xp.divide(a, b)", "xp.divide"),
        ("from numpy import divide as dv\ny = dv(a, b)", "dv"),
    ],
)
def test_raw_divisions_are_found(source, op):
    guarded, findings = scan(source)
    assert guarded == 0
    assert [found_op for _, found_op in findings] == [op]


def test_guard_calls_are_counted_plain_attribute_and_nested():
    guarded, findings = scan(
        """
        a = safe_divide(x, y)
        b = so.safe_ratio(x, y)
        c = safe_operations.clamp_score(safe_mean(values))
        d = safe_std(values) + safe_sqrt(v) + safe_log(v) + safe_percentage(p, t) + safe_pct_change(n, o)
        """
    )
    assert guarded == 9
    assert findings == []


def test_custom_guard_functions_replace_the_defaults():
    guarded, findings = scan("a = checked_div(x, y)\nb = safe_divide(x / y, z)\n", guards=("checked_div",))
    assert guarded == 1
    assert findings == [(2, "/")]


def test_finding_points_at_the_operator():
    report = audit_source(
        "def f(a, b, c):\n    y = (a + b) / c  # note\n    z = (a\n         // b)\n    return y, z\n",
        "f.py",
        "f.py",
        DEFAULT_GUARD_FUNCTIONS,
    )
    first, second = (finding.as_dict() for finding in report.findings)
    assert first == {"line": 2, "col": 17, "op": "/", "source": "y = (a + b) / c  # note"}
    assert second == {"line": 4, "col": 10, "op": "//", "source": "// b)"}


def test_column_counts_characters_not_bytes():
    report = audit_source("é = 'é'; w = é / b\n", "u.py", "u.py", DEFAULT_GUARD_FUNCTIONS)
    assert report.findings[0].col == 16


# --- the module --------------------------------------------------------------------------------


def test_clean_file_passes_and_counts_guarded_calls(run_module):
    path = FIXTURES / "clean.py"

    result = run_module(MODULE, {"paths": [str(path)]})

    assert not result.get("failed"), result["msg"]
    assert result["changed"] is False
    assert result["unguarded"] == 0
    assert result["guarded"] == 4
    assert result["over_baseline"] == []
    entry = file_entry(result, path)
    assert entry == {"relpath": "clean.py", "guarded": 4, "unguarded": 0, "allowed": 0, "findings": []}
    assert result["msg"] == "audited 1 file(s): 4 guarded, 0 unguarded divisions"
    assert_documented(result)


def test_one_raw_division_fails_and_names_its_line(run_module):
    path = FIXTURES / "one_raw.py"

    result = run_module(MODULE, {"paths": [str(path)]})

    assert result["failed"] is True
    assert result["unguarded"] == 1
    assert result["guarded"] == 1
    assert result["over_baseline"] == [str(path)]
    assert file_entry(result, path)["findings"] == [
        {"line": 7, "col": 19, "op": "/", "source": "rs = avg_gain / avg_loss"}
    ]
    assert f"{path}:7:19 (/) rs = avg_gain / avg_loss" in result["msg"]
    assert "safe_divide" in result["msg"]
    assert "baseline" in result["msg"]
    assert_documented(result)


def test_division_by_zero_literal_is_flagged(run_module):
    path = FIXTURES / "zero_literal.py"

    result = run_module(MODULE, {"paths": [str(path)]})

    assert result["failed"] is True
    assert [(f["line"], f["op"]) for f in file_entry(result, path)["findings"]] == [(5, "/"), (6, "%")]


def test_fail_on_unguarded_false_only_reports(run_module):
    result = run_module(MODULE, {"paths": [str(FIXTURES / "one_raw.py")], "fail_on_unguarded": False})

    assert not result.get("failed")
    assert result["unguarded"] == 1
    assert "over the baseline" in result["msg"]


@pytest.mark.parametrize("key", ["one_raw.py", str(FIXTURES / "one_raw.py")])
def test_baseline_allows_known_divisions(run_module, key):
    result = run_module(MODULE, {"paths": [str(FIXTURES / "one_raw.py")], "baseline": {key: 1}})

    assert not result.get("failed"), result["msg"]
    assert result["unguarded"] == 1
    assert file_entry(result, FIXTURES / "one_raw.py")["allowed"] == 1
    assert result["over_baseline"] == []


def test_baseline_keys_are_relative_to_the_directory(run_module):
    tree = FIXTURES / "tree"

    allowed = run_module(MODULE, {"paths": [str(tree)], "baseline": {"sub/b.py": 2}})
    too_low = run_module(MODULE, {"paths": [str(tree)], "baseline": {"sub/b.py": 1}})
    basename_only = run_module(MODULE, {"paths": [str(tree)], "baseline": {"b.py": 2}})

    assert not allowed.get("failed"), allowed["msg"]
    assert too_low["failed"] is True
    assert basename_only["failed"] is True


def test_directories_are_walked_recursively(run_module):
    tree = FIXTURES / "tree"

    result = run_module(MODULE, {"paths": [str(tree)]})

    assert sorted(result["files"]) == [str(tree / "a.py"), str(tree / "sub" / "b.py")]  # no .hidden, no .txt
    assert result["guarded"] == 1
    assert result["unguarded"] == 2
    b_entry = file_entry(result, tree / "sub" / "b.py")
    assert b_entry["relpath"] == "sub/b.py"
    assert [(f["line"], f["op"]) for f in b_entry["findings"]] == [(5, "/="), (6, "np.true_divide")]
    assert result["failed"] is True
    assert_documented(result)


def test_several_paths_are_combined_without_duplicates(run_module):
    paths = [str(FIXTURES / "clean.py"), str(FIXTURES / "tree"), str(FIXTURES / "tree" / "a.py")]

    result = run_module(MODULE, {"paths": paths, "fail_on_unguarded": False})

    assert len(result["files"]) == 3
    assert result["guarded"] == 5


def test_syntax_error_is_reported_with_file_and_line(run_module, tmp_path):
    (tmp_path / "good.py").write_text("x = 1\n")
    broken = tmp_path / "broken.py"
    broken.write_text("x = 1\ndef f(:\n    return 1\n")

    result = run_module(MODULE, {"paths": [str(tmp_path)]})

    assert result["failed"] is True
    assert f"{broken} line 2: SyntaxError" in result["msg"]


def test_undecodable_file_is_reported(run_module, tmp_path):
    bad = tmp_path / "latin.py"
    bad.write_bytes(b"name = '\xe9'\n")

    result = run_module(MODULE, {"paths": [str(bad)]})

    assert result["failed"] is True
    assert str(bad) in result["msg"]
    assert "cannot decode" in result["msg"]


def test_nonexistent_path_fails_naming_it(run_module, tmp_path):
    missing = tmp_path / "src" / "indicators"

    result = run_module(MODULE, {"paths": [str(FIXTURES / "clean.py"), str(missing)]})

    assert result["failed"] is True
    assert str(missing) in result["msg"]
    assert "do not exist" in result["msg"]


def test_empty_directory_passes_with_nothing_audited(run_module, tmp_path):
    result = run_module(MODULE, {"paths": [str(tmp_path)]})

    assert not result.get("failed"), result["msg"]
    assert result["files"] == {}
    assert result["guarded"] == result["unguarded"] == 0


def test_check_mode_audits_the_same_way(run_module):
    passing = run_module(MODULE, {"paths": [str(FIXTURES / "clean.py")]}, check_mode=True)
    failing = run_module(MODULE, {"paths": [str(FIXTURES / "one_raw.py")]}, check_mode=True)

    assert not passing.get("failed")
    assert passing["changed"] is False
    assert passing["guarded"] == 4
    assert failing["failed"] is True
    assert failing["changed"] is False


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({}, "missing required arguments: paths"),
        ({"paths": []}, "paths is empty"),
        ({"paths": [str(FIXTURES)], "guard_functions": ["so.safe_divide"]}, "plain function names"),
        ({"paths": [str(FIXTURES)], "baseline": {"one_raw.py": -1}}, "baseline['one_raw.py'] must be"),
        ({"paths": [str(FIXTURES)], "baseline": {"one_raw.py": "many"}}, "non-negative integer"),
        ({"paths": [str(FIXTURES)], "baseline": ["one_raw.py"]}, "baseline"),
        ({"paths": [str(FIXTURES)], "fail_on_unguarded": "perhaps"}, "fail_on_unguarded"),
        ({"paths": [str(FIXTURES)], "bogus": 1}, "Unsupported parameters"),
    ],
)
def test_bad_parameters_fail_with_a_helpful_message(run_module, args, message):
    result = run_module(MODULE, args)

    assert result["failed"] is True
    assert message in result["msg"]


def test_shipped_indicator_code_has_no_unguarded_division(run_module):
    indicators = REPO_ROOT / "src" / "indicators"
    if not indicators.is_dir():
        pytest.skip(f"{indicators} does not exist yet")

    result = run_module(MODULE, {"paths": [str(indicators)]})

    assert not result.get("failed"), result["msg"]
    assert result["unguarded"] == 0
    assert result["guarded"] > 0
