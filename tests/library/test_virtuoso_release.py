"""Unit tests for library/virtuoso_release.py and module_utils/virtuoso_releases.py."""

from __future__ import annotations

import fcntl
import json
import os
import re
import threading
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml
from ansible.module_utils import virtuoso_releases as vr

from tests.library.conftest import load_module

A = "20261120T080000Z-aaaaaaa"
B = "20261121T080000Z-bbbbbbb"
C = "20261122T080000Z-ccccccc"
D = "20261123T080000Z-ddddddd"
E = "20261124T080000Z-eeeeeee"
F = "20261125T080000Z-fffffff"
OLD_FAILED = "20261101T080000Z-0000000"

MUTATING_STATES = ["prepare", "finalize", "switch", "mark_good", "mark_failed", "rollback", "clean", "adopt"]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "Virtuoso_ccxt"


@pytest.fixture
def rel(run_module, root):
    """Run virtuoso_release against ``root``: rel(state, release=..., check_mode=..., **options)."""

    def _rel(state: str, release: str | None = None, check_mode: bool = False, **options: Any):
        args: dict[str, Any] = {"root": str(root), "state": state, **options}
        if release is not None:
            args["release"] = release
        return run_module("virtuoso_release", args, check_mode=check_mode)

    return _rel


def ok(result: dict[str, Any]) -> dict[str, Any]:
    assert not result.get("failed"), result.get("msg")
    return result


def failed(result: dict[str, Any], pattern: str) -> dict[str, Any]:
    assert result.get("failed"), result
    assert re.search(pattern, result["msg"]), result["msg"]
    return result


def build(rel, root: Path, release: str, good: bool = True) -> None:
    """A full deploy of ``release``: prepare, copy code, finalize, switch, (mark_good)."""
    ok(rel("prepare", release))
    path = root / "releases" / release
    (path / "src").mkdir()
    (path / "src" / "main.py").write_text(f"print({release!r})\n")
    (path / "REVISION").write_text(release + "\n")
    ok(rel("finalize", release))
    ok(rel("switch", release))
    if good:
        ok(rel("mark_good", release))


def tree(path: Path) -> dict[str, Any]:
    """Snapshot of everything under ``path`` (types, contents, link targets, mtimes)."""
    snap: dict[str, Any] = {}
    if not path.exists():
        return snap
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            if os.path.islink(full):
                snap[full] = ("link", os.readlink(full))
            elif os.path.isdir(full):
                snap[full] = ("dir", st.st_mtime_ns)
            else:
                snap[full] = ("file", Path(full).read_bytes(), st.st_mtime_ns)
    return snap


def history(root: Path) -> list[dict[str, Any]]:
    lines = (root / vr.HISTORY_FILE).read_text().splitlines()
    return [json.loads(line) for line in lines]


def statuses(result: dict[str, Any]) -> dict[str, str]:
    return {r["id"]: r["status"] for r in result["releases"]}


def current_target(root: Path) -> str:
    return os.readlink(root / "current")


# --- query ------------------------------------------------------------------------------------


def test_query_missing_root_returns_empty_facts(rel, root):
    result = ok(rel("query"))
    assert result == {
        "changed": False,
        "root": str(root),
        "current_release": None,
        "previous_good_release": None,
        "releases": [],
    }
    assert not root.exists()


def test_query_reports_facts_sorted_chronologically(rel, root):
    build(rel, root, B)
    build(rel, root, A)  # older id deployed later: list order is by id, not by deploy order
    ok(rel("prepare", C))
    result = ok(rel("query"))
    assert result["changed"] is False
    assert [r["id"] for r in result["releases"]] == [A, B, C]
    assert result["releases"][0] == {
        "id": A,
        "status": "good",
        "current": True,
        "path": str(root / "releases" / A),
    }
    assert statuses(result) == {A: "good", B: "good", C: "unfinished"}
    assert result["current_release"] == A
    assert result["previous_good_release"] == B


def test_legacy_ids_sort_by_their_timestamp():
    ids = [B, "legacy-20261120T090000Z", A, "manual"]
    assert sorted(ids, key=vr.release_sort_key) == ["manual", A, "legacy-20261120T090000Z", B]


def test_query_ignores_malformed_history_lines(rel, root):
    build(rel, root, A)
    with open(root / vr.HISTORY_FILE, "a") as handle:
        handle.write('{"release": "x", "event": "go\n[1, 2]\n\n')
    snapshot = vr.load_snapshot(vr.Layout(str(root)))
    assert len(snapshot.warnings) == 2
    assert statuses(ok(rel("query"))) == {A: "good"}


def test_query_current_pointing_outside_releases(rel, root):
    build(rel, root, A)
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    os.rename(root / "current", root / "old-current")
    os.symlink(elsewhere, root / "current")
    result = ok(rel("query"))
    assert result["current_release"] is None
    assert result["previous_good_release"] == A


# --- prepare ----------------------------------------------------------------------------------


def test_prepare_creates_layout_and_unfinished_release(rel, root):
    result = ok(rel("prepare", A))
    assert result["changed"] is True
    assert (root / "releases").is_dir()
    assert (root / "shared").is_dir()
    assert (root / "releases" / A / vr.UNFINISHED_MARKER).is_file()
    assert not (root / "current").exists()
    assert statuses(result) == {A: "unfinished"}
    assert result["current_release"] is None
    assert [p.name for p in (root / "releases").iterdir()] == [A]  # no temp leftovers


def test_prepare_is_idempotent_and_reuses_unfinished_release(rel, root):
    ok(rel("prepare", A))
    (root / "releases" / A / "half-copied.py").write_text("x")
    before = tree(root)
    result = ok(rel("prepare", A))
    assert result["changed"] is False
    assert statuses(result) == {A: "unfinished"}
    assert tree(root) == before


def test_prepare_leaves_finished_release_untouched(rel, root):
    build(rel, root, A)
    before = tree(root)
    result = ok(rel("prepare", A))
    assert result["changed"] is False
    assert tree(root) == before
    assert statuses(result) == {A: "good"}


def test_prepare_refuses_failed_release(rel, root):
    ok(rel("prepare", A))
    ok(rel("mark_failed", A, reason="build broke"))
    failed(rel("prepare", A), r"marked failed.*new release id.*state=clean")


def test_prepare_refuses_non_directory_at_release_path(rel, root):
    ok(rel("prepare", A))
    (root / "releases" / B).write_text("not a dir")
    failed(rel("prepare", B), r"is not a release directory")


def test_prepare_refuses_file_in_place_of_shared(rel, root):
    root.mkdir()
    (root / "shared").write_text("oops")
    failed(rel("prepare", A), r"shared exists but is not a directory")


# --- finalize ---------------------------------------------------------------------------------


def test_finalize_removes_marker_and_is_idempotent(rel, root):
    ok(rel("prepare", A))
    result = ok(rel("finalize", A))
    assert result["changed"] is True
    assert not (root / "releases" / A / vr.UNFINISHED_MARKER).exists()
    assert statuses(result) == {A: "unverified"}
    assert ok(rel("finalize", A))["changed"] is False


def test_finalize_missing_release_fails(rel, root):
    ok(rel("prepare", A))
    failed(rel("finalize", B), rf"release '{B}' does not exist.*existing releases: {A}.*state=prepare")


def test_finalize_failed_release_fails(rel, root):
    ok(rel("prepare", A))
    ok(rel("mark_failed", A))
    failed(rel("finalize", A), r"cannot finalize: .* marked failed")


# --- switch -----------------------------------------------------------------------------------


def test_switch_points_current_with_relative_link_and_records_activation(rel, root):
    build(rel, root, A)
    ok(rel("prepare", B))
    ok(rel("finalize", B))
    result = ok(rel("switch", B))
    assert result["changed"] is True
    assert result["previous_release"] == A
    assert result["current_release"] == B
    assert current_target(root) == os.path.join("releases", B)
    assert os.path.realpath(root / "current") == str((root / "releases" / B).resolve())
    assert [(e["release"], e["event"]) for e in history(root)][-1] == (B, "activated")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", history(root)[-1]["at"])
    assert sorted(os.listdir(root)) == sorted(
        ["current", "releases", "shared", vr.HISTORY_FILE, vr.LOCK_FILE]
    )  # no temporary symlink left behind


def test_switch_is_idempotent(rel, root):
    build(rel, root, A)
    before = tree(root)
    result = ok(rel("switch", A))
    assert result["changed"] is False
    assert result["previous_release"] == A
    assert tree(root) == before


def test_switch_refuses_unfinished_release(rel, root):
    build(rel, root, A)
    ok(rel("prepare", B))
    failed(rel("switch", B), rf"cannot switch: release '{B}' is unfinished.*state=finalize")
    assert current_target(root) == os.path.join("releases", A)


def test_switch_refuses_failed_and_missing_release(rel, root):
    build(rel, root, A)
    ok(rel("prepare", B))
    ok(rel("finalize", B))
    ok(rel("mark_failed", B, reason="smoke test failed"))
    failed(rel("switch", B), r"cannot switch: .* is marked failed")
    failed(rel("switch", C), r"cannot switch: .* does not exist")
    assert current_target(root) == os.path.join("releases", A)


def test_switch_refuses_current_that_is_a_directory(rel, root):
    ok(rel("prepare", A))
    ok(rel("finalize", A))
    (root / "current").mkdir()
    failed(rel("switch", A), r"current exists but is not a symlink.*state=adopt")


def test_switch_uses_rename_over_current_never_unlink(rel, root):
    build(rel, root, A)
    ok(rel("prepare", B))
    ok(rel("finalize", B))
    current = str(root / "current")
    renames: list[tuple[str, str]] = []
    real_rename = os.rename

    def spy_rename(src, dst, *args, **kwargs):
        renames.append((str(src), str(dst)))
        return real_rename(src, dst, *args, **kwargs)

    with (
        mock.patch("os.rename", side_effect=spy_rename),
        mock.patch("os.unlink", wraps=os.unlink) as unlink,
        mock.patch("os.remove", wraps=os.remove) as remove,
        mock.patch("shutil.rmtree") as rmtree,
    ):
        ok(rel("switch", B))
    assert [dst for _, dst in renames] == [current]
    assert os.path.basename(renames[0][0]).startswith(".current.tmp-")
    for call in unlink.call_args_list + remove.call_args_list + rmtree.call_args_list:
        assert str(call.args[0]) != current


def test_current_always_exists_during_many_switches(rel, root):
    build(rel, root, A)
    build(rel, root, B)
    current = root / "current"
    missing: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            if not os.path.lexists(current):
                missing.append(1)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for i in range(40):
            ok(rel("switch", A if i % 2 else B))
    finally:
        stop.set()
        watcher.join()
    assert missing == []


# --- mark_good / mark_failed --------------------------------------------------------------------


def test_mark_good_records_event_once(rel, root):
    build(rel, root, A, good=False)
    result = ok(rel("mark_good", A))
    assert result["changed"] is True
    assert statuses(result) == {A: "good"}
    size = (root / vr.HISTORY_FILE).stat().st_size
    assert ok(rel("mark_good", A))["changed"] is False
    assert (root / vr.HISTORY_FILE).stat().st_size == size


def test_mark_good_refuses_failed_unfinished_and_missing(rel, root):
    ok(rel("prepare", A))
    failed(rel("mark_good", A), r"cannot mark_good: .* is unfinished")
    ok(rel("finalize", A))
    ok(rel("mark_failed", A))
    failed(rel("mark_good", A), r"cannot mark_good: .* is marked failed")
    failed(rel("mark_good", B), r"does not exist")


def test_mark_failed_writes_marker_and_event_once(rel, root):
    build(rel, root, A)
    result = ok(rel("mark_failed", A, reason="health check: web not active"))
    assert result["changed"] is True
    assert statuses(result) == {A: "failed"}
    marker = json.loads((root / "releases" / A / vr.FAILED_MARKER).read_text())
    assert marker["reason"] == "health check: web not active"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", marker["at"])
    last = history(root)[-1]
    assert (last["release"], last["event"], last["reason"]) == (A, "failed", "health check: web not active")
    again = ok(rel("mark_failed", A, reason="another reason"))
    assert again["changed"] is False
    assert json.loads((root / "releases" / A / vr.FAILED_MARKER).read_text())["reason"] == marker["reason"]


def test_mark_failed_missing_release_fails(rel, root):
    failed(rel("mark_failed", A), r"cannot mark_failed: release .* does not exist")


def test_release_marked_good_then_failed_is_failed(rel, root):
    build(rel, root, A)
    ok(rel("mark_failed", A))
    result = ok(rel("query"))
    assert statuses(result) == {A: "failed"}


# --- rollback ---------------------------------------------------------------------------------


def test_rollback_picks_previous_good_not_failed_not_by_mtime(rel, root):
    build(rel, root, A)
    build(rel, root, B)
    build(rel, root, C, good=False)
    ok(rel("mark_failed", C, reason="smoke failed"))
    # Make the mtimes lie: A looks newest, B oldest.
    for release, stamp in ((A, 2_000_000_000), (B, 1_000_000_000), (C, 1_500_000_000)):
        for path in (root / "releases" / release).rglob("*"):
            os.utime(path, (stamp, stamp), follow_symlinks=False)
        os.utime(root / "releases" / release, (stamp, stamp))
    assert ok(rel("query"))["previous_good_release"] == B

    result = ok(rel("rollback", reason="C broke"))
    assert result["changed"] is True
    assert result["previous_release"] == C
    assert result["current_release"] == B
    assert result["previous_good_release"] == A
    assert current_target(root) == os.path.join("releases", B)
    events = [(e["release"], e["event"]) for e in history(root)[-2:]]
    assert events == [(C, "rolled_back_from"), (B, "activated")]
    assert history(root)[-2]["reason"] == "C broke"

    # A second rollback walks further back, never to the failed release.
    second = ok(rel("rollback"))
    assert (second["previous_release"], second["current_release"]) == (B, A)
    failed(rel("rollback"), r"nothing to roll back to: .*current one \(" + A)


def test_rollback_prefers_most_recent_activation_over_id_order(rel, root):
    build(rel, root, B)
    build(rel, root, A)  # older id, activated later
    build(rel, root, C)
    assert ok(rel("rollback"))["current_release"] == A


def test_rollback_to_explicit_release(rel, root):
    build(rel, root, A)
    build(rel, root, B)
    build(rel, root, C)
    result = ok(rel("rollback", A))
    assert (result["previous_release"], result["current_release"]) == (C, A)
    again = ok(rel("rollback", A))
    assert again["changed"] is False


def test_rollback_refuses_failed_unfinished_missing_targets(rel, root):
    build(rel, root, A)
    ok(rel("mark_failed", A))
    build(rel, root, B)
    ok(rel("prepare", C))
    failed(rel("rollback", A), r"cannot roll back: .* marked failed")
    failed(rel("rollback", C), r"cannot roll back: .* unfinished")
    failed(rel("rollback", D), r"cannot roll back: .* does not exist")
    failed(rel("rollback"), r"^nothing to roll back to: .*" + re.escape(f"{A}=failed"))
    assert current_target(root) == os.path.join("releases", B)


def test_rollback_skips_unverified_release(rel, root):
    build(rel, root, A)
    build(rel, root, B, good=False)
    build(rel, root, C, good=False)
    assert ok(rel("rollback"))["current_release"] == A


def test_rollback_with_no_releases_fails(rel, root):
    failed(rel("rollback"), r"nothing to roll back to: .*\(none\)")


# --- clean ------------------------------------------------------------------------------------


def make_clean_scenario(rel, root: Path) -> None:
    """OLD_FAILED failed; A, B good (B previous good); C, D finished never activated;
    E current; F unfinished (newest)."""
    build(rel, root, OLD_FAILED, good=False)
    ok(rel("mark_failed", OLD_FAILED))
    build(rel, root, A)
    build(rel, root, B)
    for release in (C, D):
        ok(rel("prepare", release))
        ok(rel("finalize", release))
    build(rel, root, E)
    ok(rel("prepare", F))


def test_clean_keeps_current_and_previous_good_and_removes_failed_unfinished_first(rel, root):
    make_clean_scenario(rel, root)
    result = ok(rel("clean", keep=2))
    assert result["changed"] is True
    assert result["removed"] == [F, OLD_FAILED, A, C]
    assert sorted(os.listdir(root / "releases")) == [B, D, E]
    assert result["current_release"] == E
    assert result["previous_good_release"] == B
    assert current_target(root) == os.path.join("releases", E)

    again = ok(rel("clean", keep=2))
    assert again["changed"] is False
    assert again["removed"] == []


def test_clean_never_removes_current_even_if_failed_or_old(rel, root):
    for release in (A, B, C, D):
        build(rel, root, release)
    ok(rel("switch", B))  # current is now an old release ...
    ok(rel("mark_failed", B))  # ... and failed (not rolled back yet)
    result = ok(rel("clean", keep=2))
    assert result["removed"] == [A]
    assert sorted(os.listdir(root / "releases")) == [B, C, D]
    assert result["current_release"] == B
    assert result["previous_good_release"] == D


def test_clean_keep_default_is_five(rel, root):
    for release in (OLD_FAILED, A, B, C, D, E, F):
        build(rel, root, release)
    result = ok(rel("clean"))
    assert result["removed"] == [OLD_FAILED, A]


def test_clean_removes_leftovers_of_killed_runs(rel, root):
    build(rel, root, A)
    (root / "releases" / f"{vr.TMP_PREFIX}{B}-1234").mkdir()
    (root / "releases" / f"{vr.TRASH_PREFIX}{C}-abcd" / "src").mkdir(parents=True)
    result = ok(rel("clean"))
    assert result["changed"] is True
    assert result["removed"] == []
    assert os.listdir(root / "releases") == [A]


def test_clean_check_mode_reports_without_deleting(rel, root):
    make_clean_scenario(rel, root)
    before = tree(root)
    result = ok(rel("clean", keep=2, check_mode=True))
    assert result["changed"] is True
    assert result["removed"] == [F, OLD_FAILED, A, C]
    assert [r["id"] for r in result["releases"]] == [B, D, E]
    assert tree(root) == before


def test_clean_rejects_keep_below_two(rel, root):
    build(rel, root, A)
    failed(rel("clean", keep=1), r"keep must be at least 2.*got 1")
    failed(rel("query", keep=0), r"keep must be at least 2")


def test_killed_build_never_becomes_current_and_is_cleaned(rel, root):
    build(rel, root, A)
    ok(rel("prepare", B))
    (root / "releases" / B / "src").mkdir()  # copy interrupted: no finalize
    failed(rel("switch", B), r"unfinished")
    failed(rel("rollback", B), r"unfinished")
    failed(rel("rollback"), r"nothing to roll back to")
    result = ok(rel("clean"))
    assert result["removed"] == [B]
    assert current_target(root) == os.path.join("releases", A)


# --- adopt ------------------------------------------------------------------------------------


def make_flat_layout(root: Path) -> None:
    (root / "src" / "pkg").mkdir(parents=True)
    (root / "src" / "pkg" / "main.py").write_text("print('legacy')\n")
    (root / "tests").mkdir()
    (root / "tests" / "test_x.py").write_text("def test(): pass\n")
    (root / "venv311" / "bin").mkdir(parents=True)
    (root / "venv311" / "bin" / "python").write_text("#!/bin/sh\n")
    (root / "config.yaml").write_text("a: 1\n")


def test_adopt_flat_layout_copies_code_and_links_venv(rel, root):
    make_flat_layout(root)
    result = ok(rel("adopt"))
    assert result["changed"] is True
    release = result["current_release"]
    assert re.fullmatch(r"legacy-\d{8}T\d{6}Z", release)
    path = root / "releases" / release
    assert (path / "src" / "pkg" / "main.py").read_text() == "print('legacy')\n"
    assert (path / "tests" / "test_x.py").is_file()
    assert os.readlink(path / "venv311") == str(root / "venv311")
    assert os.path.isabs(os.readlink(path / "venv311"))
    assert "adopted" in (path / "REVISION").read_text()
    assert not (path / "config.yaml").exists()
    # The flat layout is still there for the running services.
    assert (root / "src" / "pkg" / "main.py").is_file()
    assert (root / "venv311" / "bin" / "python").is_file()
    assert current_target(root) == os.path.join("releases", release)
    assert [e["event"] for e in history(root)] == ["adopted", "activated", "good"]
    assert statuses(result) == {release: "good"}


def test_adopt_then_deploy_then_rollback_to_legacy(rel, root):
    make_flat_layout(root)
    legacy = "legacy-20261001T000000Z"
    ok(rel("adopt", legacy))
    assert ok(rel("adopt"))["changed"] is False  # idempotent: current exists now
    build(rel, root, A, good=False)
    ok(rel("mark_failed", A, reason="first release broke"))
    result = ok(rel("rollback"))
    assert (result["previous_release"], result["current_release"]) == (A, legacy)
    assert os.path.realpath(root / "current" / "venv311") == str((root / "venv311").resolve())


def test_adopt_without_venv(rel, root):
    (root / "src").mkdir(parents=True)
    result = ok(rel("adopt", "legacy-20261001T000000Z"))
    path = root / "releases" / "legacy-20261001T000000Z"
    assert (path / "src").is_dir()
    assert not (path / "tests").exists()
    assert not os.path.lexists(path / "venv311")
    assert "none (no flat venv found)" in (path / "REVISION").read_text()
    assert result["changed"] is True


def test_adopt_is_noop_without_flat_layout_or_with_current(rel, root):
    root.mkdir()
    assert ok(rel("adopt"))["changed"] is False
    assert os.listdir(root) == []
    build(rel, root, A)
    (root / "src").mkdir()
    before = tree(root)
    assert ok(rel("adopt"))["changed"] is False
    assert tree(root) == before


def test_adopt_custom_legacy_paths(rel, root):
    (root / "app").mkdir(parents=True)
    (root / "app" / "x.py").write_text("x")
    result = ok(rel("adopt", legacy_paths=["app", "missing"]))
    assert (root / "releases" / result["current_release"] / "app" / "x.py").is_file()


def test_adopt_rejects_venv_in_legacy_paths_and_bad_names(rel, root):
    make_flat_layout(root)
    failed(rel("adopt", legacy_paths=["src", "venv311"]), r"must not contain 'venv311'.*links it")
    failed(rel("adopt", legacy_paths=["../etc"]), r"invalid legacy_paths entry")
    failed(rel("adopt", legacy_paths=["releases"]), r"invalid legacy_paths entry")


def test_adopt_refuses_existing_release_id(rel, root):
    make_flat_layout(root)
    (root / "releases" / A).mkdir(parents=True)
    failed(rel("adopt", A), rf"release '{A}' already exists")


# --- check mode -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "release", "options", "expect_current"),
    [
        ("prepare", D, {}, C),
        ("finalize", B, {}, C),
        ("switch", A, {}, A),
        ("mark_good", E, {}, C),
        ("mark_failed", C, {"reason": "x"}, C),
        ("rollback", None, {}, A),
        ("clean", None, {"keep": 2}, C),
    ],
)
def test_check_mode_changes_nothing_but_predicts(rel, root, state, release, options, expect_current):
    build(rel, root, A)
    ok(rel("prepare", B))
    build(rel, root, C)
    ok(rel("prepare", E))
    ok(rel("finalize", E))
    ok(rel("switch", E))  # activated, unverified
    ok(rel("switch", C))
    before = tree(root)
    predicted = ok(rel(state, release, check_mode=True, **options))
    assert predicted["changed"] is True
    assert tree(root) == before
    assert predicted["current_release"] == expect_current
    real = ok(rel(state, release, **options))
    assert predicted == real


def test_check_mode_prepare_on_missing_root_creates_nothing(rel, root):
    result = ok(rel("prepare", A, check_mode=True))
    assert result["changed"] is True
    assert statuses(result) == {A: "unfinished"}
    assert not root.exists()


def test_check_mode_adopt_changes_nothing(rel, root):
    make_flat_layout(root)
    before = tree(root)
    result = ok(rel("adopt", "legacy-20261001T000000Z", check_mode=True))
    assert result["changed"] is True
    assert result["current_release"] == "legacy-20261001T000000Z"
    assert statuses(result) == {"legacy-20261001T000000Z": "good"}
    assert tree(root) == before


def test_check_mode_failures_are_reported(rel, root):
    ok(rel("prepare", A))
    failed(rel("switch", A, check_mode=True), r"unfinished")


# --- bad parameters ---------------------------------------------------------------------------


@pytest.mark.parametrize("bad_id", ["../evil", "a/b", "..", ".hidden", "-rf", "", "a..b", "x" * 129, "a b"])
@pytest.mark.parametrize("state", ["prepare", "finalize", "switch", "mark_good", "mark_failed", "rollback"])
def test_bad_release_id_is_rejected(rel, root, state, bad_id):
    failed(rel(state, bad_id), r"invalid release id")
    assert not root.exists()


@pytest.mark.parametrize("state", ["prepare", "finalize", "switch", "mark_good", "mark_failed"])
def test_release_is_required(rel, state):
    failed(rel(state), r"state is .* but all of the following are missing: release")


def test_unknown_state_is_rejected(rel):
    failed(rel("deploy"), r"value of state must be one of")


def test_unknown_option_is_rejected(run_module, root):
    result = run_module("virtuoso_release", {"root": str(root), "state": "query", "kep": 3})
    assert result["failed"]
    assert "kep" in result["msg"]


def test_validate_release_id_accepts_expected_ids():
    for good in (A, "legacy-20261124T031500Z", "v1.2.3", "r_1"):
        assert vr.validate_release_id(good) == good


# --- locking ----------------------------------------------------------------------------------


def test_mutation_waits_for_lock_and_fails_clearly(rel, root):
    build(rel, root, A)
    ok(rel("prepare", B))
    with open(root / vr.LOCK_FILE, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        with mock.patch.object(vr, "LOCK_TIMEOUT_SECONDS", 0.3):
            failed(rel("finalize", B), r"another virtuoso_release run holds .*lock")
        assert ok(rel("query"))["changed"] is False  # reads do not need the lock
        assert (root / "releases" / B / vr.UNFINISHED_MARKER).exists()
    assert ok(rel("finalize", B))["changed"] is True


def test_os_error_is_reported_with_path(rel, root):
    build(rel, root, A)
    with mock.patch.object(
        vr, "append_line", side_effect=PermissionError(13, "Permission denied", "x.jsonl")
    ):
        failed(rel("mark_failed", A), r"state=mark_failed failed on x.jsonl: Permission denied")


# --- documentation matches the code ---------------------------------------------------------


def test_documentation_matches_argument_spec():
    module = load_module("virtuoso_release")
    doc = yaml.safe_load(module.DOCUMENTATION)
    assert doc["module"] == "virtuoso_release"
    options = doc["options"]
    assert set(options) == set(module.ARGUMENT_SPEC)
    for name, spec in module.ARGUMENT_SPEC.items():
        assert options[name]["type"] == spec["type"], name
        assert options[name].get("default") == spec.get("default"), name
        assert options[name].get("choices") == spec.get("choices"), name
        assert bool(options[name].get("required")) == bool(spec.get("required")), name
        assert options[name].get("elements") == spec.get("elements"), name
    yaml.safe_load(module.EXAMPLES)


def test_return_doc_matches_results(rel, root):
    module = load_module("virtuoso_release")
    documented = yaml.safe_load(module.RETURN)
    always = {key for key, value in documented.items() if value["returned"] == "always"}
    release_keys = set(documented["releases"]["contains"])
    build(rel, root, A)
    for state, release, extra in (
        ("query", None, set()),
        ("switch", A, {"previous_release"}),
        ("rollback", A, {"previous_release"}),
        ("clean", None, {"removed"}),
        ("mark_good", A, set()),
    ):
        result = ok(rel(state, release))
        assert set(result) - {"changed"} == always | extra, state
        assert all(set(entry) == release_keys for entry in result["releases"])
