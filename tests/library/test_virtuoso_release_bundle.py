"""Unit tests for library/virtuoso_release_bundle.py (controller-side release archive)."""

from __future__ import annotations

import hashlib
import os
import re
import stat
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.library.conftest import load_module

MODULE = "virtuoso_release_bundle"

# Files that make up a release of the sample tree, in the order the manifest must list them.
RELEASE_FILES = {
    "requirements/runtime.txt": b"ccxt==4.3.0\n",
    "src/app/__init__.py": b"",
    "src/app/core.py": b"def add(a, b):\n    return a + b\n",
    "src/app/nested/deep.py": b"VALUE = 42\n",
    "src/utils/safe_operations.py": b"def safe_div(a, b):\n    return a / b if b else 0.0\n",
    "tests/test_core.py": b"from app.core import add\n\n\ndef test_add():\n    assert add(1, 2) == 3\n",
}
# Files in the tree that must never reach a release.
SKIPPED_FILES = {
    "src/app/__pycache__/core.cpython-311.pyc": b"\x00compiled",
    "src/app/nested/__pycache__/deep.cpython-311.pyc": b"\x00compiled",
    "src/app/__pycache__/notes.txt": b"a cache dir is skipped whole, not only its .pyc files\n",
    "src/app/stale.pyc": b"\x00stale",
    "src/app/stale.pyo": b"\x00stale",
    "tests/.pytest_cache/v/cache/lastfailed": b"{}",
    "docs/readme.md": b"not part of the default include list\n",
}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    for relpath, data in files.items():
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(0o644)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    root = tmp_path / "source"
    write_tree(root, {**RELEASE_FILES, **SKIPPED_FILES})
    return root


@pytest.fixture
def bundle(run_module, tmp_path: Path):
    """Run the module: bundle(source, dest=None, check_mode=False, **options) -> result."""

    def _bundle(
        source_dir: Path, dest: Path | None = None, check_mode: bool = False, **options: Any
    ) -> dict[str, Any]:
        args: dict[str, Any] = {
            "source_dir": str(source_dir),
            "dest_dir": str(dest if dest is not None else tmp_path / "releases"),
            **options,
        }
        return run_module(MODULE, args, check_mode=check_mode)

    return _bundle


def ok(result: dict[str, Any]) -> dict[str, Any]:
    assert not result.get("failed"), result.get("msg")
    return result


def all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink()) if root.exists() else []


# --- success ----------------------------------------------------------------------------------------


def test_manifest_lists_release_files_sorted_with_correct_digests(bundle, source, tmp_path):
    result = ok(bundle(source))

    paths = [entry["path"] for entry in result["manifest"]]
    assert paths == sorted(RELEASE_FILES)
    assert paths == sorted(paths)
    for entry in result["manifest"]:
        data = RELEASE_FILES[entry["path"]]
        assert entry["sha256"] == sha256(data), entry["path"]
        assert entry["size"] == len(data), entry["path"]
        assert entry["mode"] == oct(0o644), entry["path"]
        assert set(entry) == {"path", "size", "sha256", "mode"}


def test_byte_code_caches_and_unlisted_entries_are_skipped(bundle, source):
    paths = {entry["path"] for entry in ok(bundle(source))["manifest"]}

    assert not any("__pycache__" in p or ".pytest_cache" in p for p in paths), paths
    assert not any(p.endswith((".pyc", ".pyo")) for p in paths), paths
    assert "docs/readme.md" not in paths


def test_counts_hash_and_archive_path(bundle, source, tmp_path):
    result = ok(bundle(source))

    assert result["changed"] is True
    assert result["file_count"] == len(RELEASE_FILES)
    assert result["total_bytes"] == sum(len(data) for data in RELEASE_FILES.values())
    assert re.fullmatch(r"[0-9a-f]{64}", result["content_hash"])
    assert result["short_hash"] == result["content_hash"][:8]
    archive = tmp_path / "releases" / f"{result['content_hash']}.tar.gz"
    assert result["archive"] == str(archive)
    assert archive.is_file()
    # Only the archive is left behind: no temp/partial files.
    assert [p.name for p in (tmp_path / "releases").iterdir()] == [archive.name]


def test_include_accepts_top_level_files_and_ignores_absent_entries(bundle, source):
    (source / "VERSION").write_bytes(b"1.2.3\n")

    result = ok(bundle(source, include=["VERSION", "src/utils", "no-such-dir"]))

    assert [e["path"] for e in result["manifest"]] == ["VERSION", "src/utils/safe_operations.py"]
    assert result["total_bytes"] == len(b"1.2.3\n") + len(RELEASE_FILES["src/utils/safe_operations.py"])


# --- content addressing and determinism -------------------------------------------------------------


def test_same_tree_gives_same_hash_and_identical_archive_whatever_the_mtimes(
    bundle, source, tmp_path, monkeypatch
):
    first = ok(bundle(source, dest=tmp_path / "a"))

    for i, path in enumerate(all_files(source)):
        os.utime(path, (1_000_000 + i * 7919, 1_500_000_000 + i * 104729))
    # A build at another wall-clock time must not leak the clock into the archive either.
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 86_400 * 365)
    second = ok(bundle(source, dest=tmp_path / "b"))
    monkeypatch.undo()

    assert second["content_hash"] == first["content_hash"]
    assert second["manifest"] == first["manifest"]
    assert second["changed"] is True  # a fresh dest_dir, so it was written again
    assert Path(second["archive"]).read_bytes() == Path(first["archive"]).read_bytes()


def test_same_content_in_another_directory_gives_same_hash(bundle, source, tmp_path):
    other = tmp_path / "elsewhere" / "checkout"
    write_tree(other, RELEASE_FILES)

    assert ok(bundle(other, dest=tmp_path / "b"))["content_hash"] == ok(bundle(source))["content_hash"]


def test_changed_content_changes_hash(bundle, source, tmp_path):
    before = ok(bundle(source))
    (source / "src/app/core.py").write_bytes(b"def add(a, b):\n    return a - b\n")

    after = ok(bundle(source))

    assert after["content_hash"] != before["content_hash"]
    assert after["archive"] != before["archive"]
    assert after["changed"] is True
    assert Path(before["archive"]).is_file() and Path(after["archive"]).is_file()


def test_added_file_changes_hash(bundle, source):
    before = ok(bundle(source))
    (source / "src/app/extra.py").write_bytes(b"")

    after = ok(bundle(source))

    assert after["content_hash"] != before["content_hash"]
    assert after["file_count"] == before["file_count"] + 1


def test_renamed_file_changes_hash(bundle, source):
    before = ok(bundle(source))
    (source / "src/app/core.py").rename(source / "src/app/kernel.py")

    after = ok(bundle(source))

    assert after["content_hash"] != before["content_hash"]
    assert after["total_bytes"] == before["total_bytes"]


def test_executable_bit_changes_hash(bundle, source):
    before = ok(bundle(source))
    script = source / "src/app/core.py"
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)

    after = ok(bundle(source))

    assert after["content_hash"] != before["content_hash"]
    modes = {e["path"]: e["mode"] for e in after["manifest"]}
    assert modes["src/app/core.py"] == oct(0o755)
    assert modes["src/app/__init__.py"] == oct(0o644)


# --- idempotence and check mode ---------------------------------------------------------------------


def test_second_run_is_unchanged_and_leaves_archive_untouched(bundle, source, tmp_path):
    first = ok(bundle(source))
    archive = Path(first["archive"])
    os.utime(archive, (1_000_000_000, 1_000_000_000))
    before = archive.stat()
    data = archive.read_bytes()

    second = ok(bundle(source))

    assert second["changed"] is False
    assert second["content_hash"] == first["content_hash"]
    assert second["archive"] == first["archive"]
    after = archive.stat()
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (
        before.st_ino,
        before.st_mtime_ns,
        before.st_size,
    )
    assert archive.read_bytes() == data
    assert [p.name for p in archive.parent.iterdir()] == [archive.name]


def test_check_mode_writes_nothing_but_returns_the_hash(bundle, source, tmp_path):
    dest = tmp_path / "releases"

    checked = ok(bundle(source, dest=dest, check_mode=True))

    assert checked["changed"] is True
    assert not dest.exists()
    real = ok(bundle(source, dest=dest))
    assert checked["content_hash"] == real["content_hash"]
    assert checked["archive"] == real["archive"]
    assert checked["manifest"] == real["manifest"]


def test_check_mode_reports_unchanged_when_archive_exists(bundle, source):
    real = ok(bundle(source))

    checked = ok(bundle(source, check_mode=True))

    assert checked["changed"] is False
    assert checked["archive"] == real["archive"]


# --- failures ---------------------------------------------------------------------------------------


def test_missing_source_dir_fails_naming_it(bundle, tmp_path):
    missing = tmp_path / "no-such-tree"
    dest = tmp_path / "releases"

    result = bundle(missing, dest=dest)

    assert result.get("failed") is True
    assert str(missing) in result["msg"]
    assert not dest.exists()


def test_source_dir_that_is_a_file_fails(bundle, tmp_path):
    not_a_dir = tmp_path / "file.txt"
    not_a_dir.write_text("x")

    result = bundle(not_a_dir)

    assert result.get("failed") is True
    assert str(not_a_dir) in result["msg"]
    assert not (tmp_path / "releases").exists()


def test_missing_required_files_fail_naming_each_before_writing(bundle, source, tmp_path):
    dest = tmp_path / "releases"
    required = [
        "src/utils/safe_operations.py",
        "tests/validation/test_division_guard_smoke.py",
        "src/app/missing.py",
        "src/app",  # a directory is not a file
    ]

    result = bundle(source, dest=dest, required_files=required)

    assert result.get("failed") is True
    assert result["missing_files"] == required[1:]
    for name in required[1:]:
        assert name in result["msg"]
    assert "safe_operations" not in result["msg"]
    assert "3 expected file" in result["msg"]
    assert "content_hash" not in result
    assert not dest.exists()


def test_present_required_files_pass(bundle, source):
    result = ok(bundle(source, required_files=["src/utils/safe_operations.py", "tests/test_core.py"]))

    assert "missing_files" not in result
    assert Path(result["archive"]).is_file()


@pytest.mark.parametrize("absent", ["dest_dir", "source_dir"])
def test_missing_required_option_fails(run_module, source, tmp_path, absent):
    args = {"source_dir": str(source), "dest_dir": str(tmp_path / "releases")}
    del args[absent]

    result = run_module(MODULE, args)

    assert result.get("failed") is True
    assert absent in result["msg"]
    assert "content_hash" not in result
    assert not (tmp_path / "releases").exists()


def test_unknown_option_fails(run_module, source, tmp_path):
    result = run_module(
        MODULE, {"source_dir": str(source), "dest_dir": str(tmp_path / "releases"), "exclude": ["x"]}
    )

    assert result.get("failed") is True
    assert "exclude" in result["msg"]


# --- archive contents -------------------------------------------------------------------------------


def test_archive_extracts_to_exactly_the_manifest(bundle, source, tmp_path):
    result = ok(bundle(source))
    manifest = {e["path"]: e for e in result["manifest"]}
    out = tmp_path / "extracted"

    with tarfile.open(result["archive"], "r:gz") as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == [e["path"] for e in result["manifest"]]
        for member in members:
            assert member.isreg(), member.name
            assert (member.uid, member.gid, member.uname, member.gname) == (0, 0, "", "")
            assert member.mtime == 0
            assert member.mode == int(manifest[member.name]["mode"], 8)
            assert member.size == manifest[member.name]["size"]
        if hasattr(tarfile, "data_filter"):
            tar.extractall(out, filter="data")
        else:  # Python < 3.11.4
            tar.extractall(out)

    extracted = {p.relative_to(out).as_posix(): p.read_bytes() for p in all_files(out)}
    assert set(extracted) == set(manifest)
    assert extracted == RELEASE_FILES
    for path, data in extracted.items():
        assert sha256(data) == manifest[path]["sha256"]


def test_archive_keeps_executable_mode(bundle, source):
    (source / "src/app/core.py").chmod(0o755)

    result = ok(bundle(source))

    with tarfile.open(result["archive"], "r:gz") as tar:
        assert tar.getmember("src/app/core.py").mode == 0o755
        assert tar.getmember("src/app/__init__.py").mode == 0o644


def test_symlinked_file_is_archived_as_its_content(bundle, source, tmp_path):
    outside = tmp_path / "outside.py"
    outside.write_bytes(b"SHARED = True\n")
    (source / "src/app/shared.py").symlink_to(outside)

    result = ok(bundle(source))
    entry = next(e for e in result["manifest"] if e["path"] == "src/app/shared.py")
    assert entry["sha256"] == sha256(b"SHARED = True\n")

    with tarfile.open(result["archive"], "r:gz") as tar:
        member = tar.getmember("src/app/shared.py")
        assert member.isreg(), "a symlink would point at a controller path that the host does not have"
        handle = tar.extractfile(member)
        assert handle is not None
        assert handle.read() == b"SHARED = True\n"


def test_hard_linked_files_are_both_archived_with_content(bundle, source):
    os.link(source / "src/app/core.py", source / "src/app/core_alias.py")

    result = ok(bundle(source))

    with tarfile.open(result["archive"], "r:gz") as tar:
        for name in ("src/app/core.py", "src/app/core_alias.py"):
            member = tar.getmember(name)
            assert member.isreg(), name
            handle = tar.extractfile(member)
            assert handle is not None
            assert handle.read() == RELEASE_FILES["src/app/core.py"], name


def test_gzip_header_carries_no_timestamp(bundle, source):
    header = Path(ok(bundle(source))["archive"]).read_bytes()[:10]

    assert header[:2] == b"\x1f\x8b"
    assert int.from_bytes(header[4:8], "little") == 0, "gzip MTIME must be fixed, not the build time"


# --- documentation ----------------------------------------------------------------------------------


def test_every_returned_key_is_documented_in_return():
    doc = yaml.safe_load(load_module(MODULE).RETURN)
    assert isinstance(doc, dict)
    assert set(doc["manifest"]["contains"]) == {"path", "size", "sha256", "mode"}


def test_returned_keys_match_return_documentation(bundle, source):
    doc = yaml.safe_load(load_module(MODULE).RETURN)
    result = ok(bundle(source))

    returned = set(result) - {"changed"}
    assert returned <= set(doc), returned - set(doc)
    success_keys = {key for key, spec in doc.items() if spec.get("returned") == "success"}
    assert success_keys <= returned, success_keys - returned
    for entry in result["manifest"]:
        assert set(entry) <= set(doc["manifest"]["contains"])
    for key in ("file_count", "total_bytes"):
        assert doc[key]["type"] == "int" and isinstance(result[key], int)
    for key in ("content_hash", "short_hash", "archive"):
        assert doc[key]["type"] == "str" and isinstance(result[key], str)
    assert doc["manifest"]["type"] == "list" and isinstance(result["manifest"], list)
