"""virtuoso_release: releases/<id> with a REVISION manifest that matches its files, `current`, history."""

from __future__ import annotations

import json
import os

from conftest import APP_OWNER, APP_ROOT, host_json

# Every file of a release, as (sha256, size, mode) measured on the host; byte-code caches written by
# the smoke gate's imports are not part of a release.
MEASURE = r"""
import hashlib, json, os, stat, sys
root = sys.argv[1]
found = {}
for top in ("src", "tests", "requirements"):
    for base, dirs, files in os.walk(os.path.join(root, top)):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            path = os.path.join(base, name)
            info = os.lstat(path)
            with open(path, "rb") as handle:
                digest = hashlib.sha256(handle.read()).hexdigest()
            found[os.path.relpath(path, root)] = {
                "sha256": digest, "size": info.st_size, "mode": oct(stat.S_IMODE(info.st_mode)),
                "regular": stat.S_ISREG(info.st_mode), "owner": info.st_uid,
            }
print(json.dumps(found))
"""


def test_layout(host):
    for name in ("releases", "shared"):
        assert host.file(f"{APP_ROOT}/{name}").is_directory
    assert host.file(APP_ROOT).user == APP_OWNER


def test_current_is_a_relative_link_into_releases(host, current_release):
    current = host.file(f"{APP_ROOT}/current")
    assert current.is_symlink
    target = current.linked_to
    assert os.path.dirname(current_release) == f"{APP_ROOT}/releases"
    assert host.check_output("readlink %s", f"{APP_ROOT}/current") == os.path.relpath(target, APP_ROOT)
    assert host.file(current_release).is_directory


def test_current_release_is_finished_and_not_failed(host, current_release):
    assert not host.file(f"{current_release}/.virtuoso-unfinished").exists
    assert not host.file(f"{current_release}/.virtuoso-failed").exists


def test_revision_names_the_release_and_its_content(revision, current_release):
    release_id = os.path.basename(current_release)
    assert revision["release_id"] == release_id
    assert release_id.endswith("-" + revision["content_hash"][:8])
    assert revision["files"], "REVISION lists no files"
    for entry in revision["files"]:
        assert set(entry) >= {"path", "size", "sha256", "mode"}, entry


def test_files_match_the_sha256_manifest(host, revision, current_release):
    measured = host_json(host, MEASURE, current_release)
    expected = {entry["path"]: entry for entry in revision["files"]}
    assert sorted(measured) == sorted(expected), "files on the host differ from the manifest's list"
    for path, entry in expected.items():
        found = measured[path]
        assert found["regular"], path
        keys = ("sha256", "size", "mode")
        assert [found[k] for k in keys] == [entry[k] for k in keys], path


def test_release_files_belong_to_the_owner(host, current_release):
    owner_uid = host.user(APP_OWNER).uid
    measured = host_json(host, MEASURE, current_release)
    assert {path for path, found in measured.items() if found["owner"] != owner_uid} == set()
    assert host.file(f"{current_release}/REVISION").uid == owner_uid


def test_release_links_its_venv(host, current_release):
    link = host.file(f"{current_release}/venv311")
    assert link.is_symlink
    assert link.linked_to.startswith(f"{APP_ROOT}/venvs/")
    assert host.file(f"{link.linked_to}/.virtuoso-complete").is_file


def test_history_records_the_activation(host, current_release):
    lines = host.file(f"{APP_ROOT}/.virtuoso-history.jsonl").content_string.splitlines()
    events = [json.loads(line) for line in lines if line.strip()]
    release_id = os.path.basename(current_release)
    activations = [e for e in events if e["event"] == "activated"]
    assert activations, events
    assert activations[-1]["release"] == release_id
    assert all({"release", "event", "at"} <= set(e) for e in events), events
