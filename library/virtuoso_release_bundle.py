#!/usr/bin/python
"""Build the release bundle on the controller: manifest, content hash and a deterministic archive."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: virtuoso_release_bundle
short_description: Pack an application source tree into a content-addressed release archive
description:
  - Walks the given top-level entries of O(source_dir) (by default C(src), C(tests) and C(requirements)),
    skipping byte-code caches, and computes the sha256 of every file.
  - The content hash is the sha256 of the sorted manifest (path, mode, sha256 of each file), so the
    same tree always gives the same hash, whatever the files' mtimes.
  - Writes C(<dest_dir>/<content_hash>.tar.gz) once (a deterministic archive with fixed mtimes, owners
    and order) and leaves an existing archive of the same hash untouched.
  - Fails before anything is written when O(source_dir) or any of O(required_files) is missing,
    naming every missing file.
  - Runs on the controller, delegated to C(localhost).
version_added: "0.1.0"
author: virtuoso-deploy
options:
  source_dir:
    description: Directory that holds the application tree (the repository root, or an operator's private tree).
    type: path
    required: true
  include:
    description: Top-level entries of O(source_dir) that make up a release.
    type: list
    elements: str
    default: [src, tests, requirements]
  required_files:
    description: Paths relative to O(source_dir) that must exist; the task fails naming each missing one.
    type: list
    elements: str
    default: []
  dest_dir:
    description: Directory on the controller where archives are kept.
    type: path
    required: true
extends_documentation_fragment: action_common_attributes
attributes:
  check_mode:
    support: full
    details: In check mode the manifest and hash are computed but no archive is written.
  diff_mode:
    support: none
  platform:
    platforms: posix
"""

EXAMPLES = r"""
- name: Pack the release on the controller
  virtuoso_release_bundle:
    source_dir: "{{ playbook_dir }}/.."
    dest_dir: "{{ playbook_dir }}/../build/releases"
    required_files:
      - src/utils/safe_operations.py
      - tests/validation/test_division_guard_smoke.py
  delegate_to: localhost
  run_once: true
  register: bundle
"""

RETURN = r"""
content_hash:
  description: sha256 over the manifest; equal trees give equal hashes.
  returned: success
  type: str
  sample: 3f1c2e0a9b...
short_hash:
  description: First 8 characters of RV(content_hash), used in release ids.
  returned: success
  type: str
  sample: 3f1c2e0a
archive:
  description: Path of the archive on the controller.
  returned: success
  type: str
  sample: /repo/build/releases/3f1c2e0a9b....tar.gz
manifest:
  description: One entry per file, sorted by path.
  returned: success
  type: list
  elements: dict
  contains:
    path:
      description: Path relative to the release root.
      type: str
    size:
      description: Size in bytes.
      type: int
    sha256:
      description: sha256 of the file's content.
      type: str
    mode:
      description: Permission bits as an octal string.
      type: str
file_count:
  description: Number of files in the release.
  returned: success
  type: int
total_bytes:
  description: Sum of the files' sizes.
  returned: success
  type: int
"""

import gzip
import hashlib
import os
import stat
import tarfile
import tempfile
from collections.abc import Iterator

from ansible.module_utils.basic import AnsibleModule

SKIPPED_DIRS = frozenset({"__pycache__", ".pytest_cache", ".ruff_cache", ".hypothesis", ".mypy_cache"})
SKIPPED_SUFFIXES = (".pyc", ".pyo")
ARCHIVE_MTIME = 0


def iter_files(source_dir: str, include: list[str]) -> Iterator[str]:
    """Yield every release file's path relative to source_dir, in sorted order."""
    found: list[str] = []
    for entry in include:
        top = os.path.join(source_dir, entry)
        if os.path.isfile(top):
            found.append(entry)
            continue
        for root, dirs, files in os.walk(top):
            dirs[:] = [d for d in dirs if d not in SKIPPED_DIRS]
            found += [
                os.path.relpath(os.path.join(root, name), source_dir)
                for name in files
                if not name.endswith(SKIPPED_SUFFIXES)
            ]
    yield from sorted(found)


def file_sha256(path: str) -> str:
    """sha256 of a file's content, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def build_manifest(source_dir: str, include: list[str]) -> list[dict[str, object]]:
    """Manifest entries (path, size, sha256, mode) for every release file."""
    manifest = []
    for relpath in iter_files(source_dir, include):
        info = os.stat(os.path.join(source_dir, relpath))
        manifest.append(
            {
                "path": relpath,
                "size": info.st_size,
                "sha256": file_sha256(os.path.join(source_dir, relpath)),
                "mode": oct(stat.S_IMODE(info.st_mode) | 0o644),
            }
        )
    return manifest


def content_hash(manifest: list[dict[str, object]]) -> str:
    """Hash of the manifest: depends on paths, modes and contents only."""
    lines = [f"{e['path']}\0{e['mode']}\0{e['sha256']}" for e in manifest]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def write_archive(source_dir: str, manifest: list[dict[str, object]], archive: str) -> None:
    """Write a deterministic tar.gz of the manifest's files atomically (temp file + rename)."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(archive), suffix=".partial")
    try:
        # GzipFile with an explicit mtime: tarfile's "w:gz" stamps the build's wall clock into the gzip header.
        with (
            os.fdopen(fd, "wb") as raw,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=ARCHIVE_MTIME) as gz,
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            for entry in manifest:
                relpath = str(entry["path"])
                # A plain regular-file entry built from the manifest (not gettarinfo, which lstat()s and
                # would store symlinks/hard links as links rather than the content the manifest hashed).
                info = tarfile.TarInfo(relpath)
                info.size = int(str(entry["size"]))
                info.mtime, info.uid, info.gid, info.uname, info.gname = ARCHIVE_MTIME, 0, 0, "", ""
                info.mode = int(str(entry["mode"]), 8)
                with open(os.path.join(source_dir, relpath), "rb") as handle:
                    tar.addfile(info, handle)
        os.rename(tmp, archive)
    except BaseException:
        os.unlink(tmp)
        raise


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "source_dir": {"type": "path", "required": True},
            "include": {"type": "list", "elements": "str", "default": ["src", "tests", "requirements"]},
            "required_files": {"type": "list", "elements": "str", "default": []},
            "dest_dir": {"type": "path", "required": True},
        },
        supports_check_mode=True,
    )
    source_dir = module.params["source_dir"]
    if not os.path.isdir(source_dir):
        module.fail_json(
            msg=f"source_dir {source_dir} is not a directory: set virtuoso_release_source_dir to the tree holding src/"
        )
    missing = [f for f in module.params["required_files"] if not os.path.isfile(os.path.join(source_dir, f))]
    if missing:
        module.fail_json(
            msg=f"{source_dir} lacks {len(missing)} expected file(s): {', '.join(missing)} — "
            "copy them into the source tree (or fix virtuoso_release_required_files)",
            missing_files=missing,
        )
    manifest = build_manifest(source_dir, module.params["include"])
    digest = content_hash(manifest)
    archive = os.path.join(module.params["dest_dir"], f"{digest}.tar.gz")
    changed = not os.path.exists(archive)
    if changed and not module.check_mode:
        os.makedirs(module.params["dest_dir"], exist_ok=True)
        write_archive(source_dir, manifest, archive)
    module.exit_json(
        changed=changed,
        content_hash=digest,
        short_hash=digest[:8],
        archive=archive,
        manifest=manifest,
        file_count=len(manifest),
        total_bytes=sum(int(str(e["size"])) for e in manifest),
    )


if __name__ == "__main__":
    main()
