"""Release layout and state logic shared by the ``virtuoso_release`` module.

Layout under the application root ``<root>``::

    <root>/releases/<release_id>/        one directory per release (src/, tests/, venv311/, REVISION)
    <root>/releases/<id>/.virtuoso-unfinished   marker: the release is being built, never switchable
    <root>/releases/<id>/.virtuoso-failed       marker: JSON {"reason", "at"}, never a rollback target
    <root>/shared/                       state shared by all releases
    <root>/current -> releases/<id>      relative symlink, always replaced atomically (rename)
    <root>/.virtuoso-history.jsonl       append-only JSON lines {"release", "event", "at", "reason"?}
    <root>/.virtuoso-release.lock        fcntl lock held while a run mutates the layout

Guarantees:

* ``current`` is only ever replaced by ``os.rename`` of a fully created temporary symlink,
  so it never disappears and never points at a half-written link.
* A release directory only appears under its final name complete with its unfinished
  marker (prepare, adopt) and only disappears by first being renamed out of the way
  (clean), so a half-created or half-deleted tree never looks like a finished release.
* Release status and "previous good release" are decided from the markers, the history
  file and ``realpath(current)`` - never from modification times.
* In check mode every operation is applied to the in-memory snapshot only, so the
  returned facts describe the state the real run would produce and nothing is touched.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

RELEASE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
TIMESTAMP_RE = re.compile(r"\d{8}T\d{6}Z")
LEGACY_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")

RELEASES_DIR = "releases"
SHARED_DIR = "shared"
CURRENT_LINK = "current"
HISTORY_FILE = ".virtuoso-history.jsonl"
LOCK_FILE = ".virtuoso-release.lock"
UNFINISHED_MARKER = ".virtuoso-unfinished"
FAILED_MARKER = ".virtuoso-failed"
REVISION_FILE = "REVISION"
VENV_NAME = "venv311"
TMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".trash-"
RESERVED_NAMES = frozenset({RELEASES_DIR, SHARED_DIR, CURRENT_LINK, HISTORY_FILE, LOCK_FILE, VENV_NAME})

EVENTS = frozenset({"activated", "good", "failed", "rolled_back_from", "adopted"})
STATUS_UNFINISHED = "unfinished"
STATUS_FAILED = "failed"
STATUS_GOOD = "good"
STATUS_UNVERIFIED = "unverified"

LOCK_TIMEOUT_SECONDS = 300.0


class ReleaseError(Exception):
    """A request that cannot be carried out; the message says what to fix."""


def utc_now() -> datetime.datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.datetime.now(datetime.UTC)


def iso_utc(moment: datetime.datetime) -> str:
    """Format ``moment`` as ISO-8601 UTC with a ``Z`` suffix (second precision)."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def validate_release_id(release_id: str) -> str:
    """Return ``release_id`` unchanged if it is a safe single path component.

    Raises ReleaseError for anything with a slash, ``..``, a leading dot or dash,
    whitespace or other characters, so an id can never escape ``<root>/releases``.
    """
    if not isinstance(release_id, str) or not RELEASE_ID_RE.match(release_id) or ".." in release_id:
        raise ReleaseError(
            f"invalid release id {release_id!r}: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit, without '/' or '..' (e.g. 20261124T031500Z-ab12cd3)"
        )
    return release_id


def validate_legacy_paths(names: list[str]) -> list[str]:
    """Return ``names`` if each is a plain directory name of the flat layout.

    Raises ReleaseError for path separators, ``..``, the venv (venvs are linked, never
    copied) or the names the release layout itself uses.
    """
    for name in names:
        if name == VENV_NAME:
            raise ReleaseError(
                f"legacy_paths must not contain {VENV_NAME!r}: the venv is not relocatable, "
                "adopt links it instead of copying it"
            )
        if not LEGACY_NAME_RE.match(name) or ".." in name or name in RESERVED_NAMES:
            raise ReleaseError(
                f"invalid legacy_paths entry {name!r}: give plain directory names under root "
                f"(no '/', '..', or any of {sorted(RESERVED_NAMES)})"
            )
    return names


def release_sort_key(release_id: str) -> tuple[str, str]:
    """Chronological sort key: the embedded ``YYYYMMDDTHHMMSSZ`` stamp, then the id.

    Ids without a timestamp sort before all timestamped ones (oldest).
    ``legacy-20261124T031500Z`` therefore sorts by its stamp, not after every digit id.
    """
    match = TIMESTAMP_RE.search(release_id)
    return (match.group(0) if match else "", release_id)


@dataclass(frozen=True)
class Layout:
    """Paths of the release layout under one application root."""

    root: str

    @property
    def releases_dir(self) -> str:
        return os.path.join(self.root, RELEASES_DIR)

    @property
    def shared_dir(self) -> str:
        return os.path.join(self.root, SHARED_DIR)

    @property
    def current_link(self) -> str:
        return os.path.join(self.root, CURRENT_LINK)

    @property
    def history_file(self) -> str:
        return os.path.join(self.root, HISTORY_FILE)

    @property
    def lock_file(self) -> str:
        return os.path.join(self.root, LOCK_FILE)

    def release_path(self, release_id: str) -> str:
        return os.path.join(self.releases_dir, release_id)

    def marker(self, release_id: str, marker: str) -> str:
        return os.path.join(self.release_path(release_id), marker)


@dataclass
class ReleaseInfo:
    """Marker state of one release directory."""

    unfinished: bool = False
    failed: bool = False


@dataclass
class Snapshot:
    """In-memory view of a layout; operations update it alongside the file system.

    ``current_kind`` is one of ``missing`` (no ``current``), ``release`` (a symlink into
    ``releases/``), ``foreign`` (a symlink elsewhere or dangling) or ``not_symlink``.
    """

    layout: Layout
    releases: dict[str, ReleaseInfo] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    current: str | None = None
    current_kind: str = "missing"
    leftovers: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def status(self, release_id: str) -> str:
        """Status of a release: failed > unfinished > good (has a good event) > unverified."""
        info = self.releases[release_id]
        if info.failed:
            return STATUS_FAILED
        if info.unfinished:
            return STATUS_UNFINISHED
        if any(ev["release"] == release_id and ev["event"] == "good" for ev in self.history):
            return STATUS_GOOD
        return STATUS_UNVERIFIED

    def previous_good(self) -> str | None:
        """The most recently activated GOOD release other than current.

        Order comes from the position of "activated" events in the history file (not
        timestamps, not mtimes). A release that was rolled back from after its last
        activation is skipped, so repeated rollbacks walk further back instead of
        bouncing between two releases.
        """
        last_activated: dict[str, int] = {}
        last_rolled_back: dict[str, int] = {}
        for index, event in enumerate(self.history):
            if event["event"] == "activated":
                last_activated[event["release"]] = index
            elif event["event"] == "rolled_back_from":
                last_rolled_back[event["release"]] = index
        candidates = [
            rid
            for rid, index in last_activated.items()
            if rid in self.releases
            and rid != self.current
            and self.status(rid) == STATUS_GOOD
            and last_rolled_back.get(rid, -1) < index
        ]
        return max(candidates, key=last_activated.__getitem__, default=None)

    def sorted_ids(self) -> list[str]:
        """Release ids, oldest first (see release_sort_key)."""
        return sorted(self.releases, key=release_sort_key)

    def facts(self) -> dict[str, Any]:
        """The facts every run returns: root, current/previous good release, releases."""
        return {
            "root": self.layout.root,
            "current_release": self.current,
            "previous_good_release": self.previous_good(),
            "releases": [
                {
                    "id": rid,
                    "status": self.status(rid),
                    "current": rid == self.current,
                    "path": self.layout.release_path(rid),
                }
                for rid in self.sorted_ids()
            ],
        }


def _read_history(path: str, warnings: list[str]) -> list[dict[str, Any]]:
    """Parse the history file; malformed lines (e.g. a torn write) are skipped with a warning."""
    events: list[dict[str, Any]] = []
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.readlines()
    except FileNotFoundError:
        return events
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError:
            event = None
        if (
            not isinstance(event, dict)
            or not isinstance(event.get("release"), str)
            or event.get("event") not in EVENTS
        ):
            warnings.append(f"{path}:{number}: ignoring malformed history line {line.strip()[:120]!r}")
            continue
        events.append(event)
    return events


def load_snapshot(layout: Layout) -> Snapshot:
    """Read the layout's release directories, markers, history and ``current`` link."""
    snapshot = Snapshot(layout=layout)
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in os.scandir(layout.releases_dir):
            if entry.name.startswith((TMP_PREFIX, TRASH_PREFIX)):
                snapshot.leftovers.append(entry.name)
                continue
            if not entry.is_dir(follow_symlinks=False) or not RELEASE_ID_RE.match(entry.name):
                continue
            snapshot.releases[entry.name] = ReleaseInfo(
                unfinished=os.path.lexists(os.path.join(entry.path, UNFINISHED_MARKER)),
                failed=os.path.lexists(os.path.join(entry.path, FAILED_MARKER)),
            )
    snapshot.history = _read_history(layout.history_file, snapshot.warnings)
    link = layout.current_link
    if os.path.islink(link):
        target = os.path.realpath(link)
        name = os.path.basename(target)
        if os.path.dirname(target) == os.path.realpath(layout.releases_dir) and name in snapshot.releases:
            snapshot.current, snapshot.current_kind = name, "release"
        else:
            snapshot.current_kind = "foreign"
            snapshot.warnings.append(
                f"{link} points to {os.readlink(link)!r}, which is not a release under {layout.releases_dir}"
            )
    elif os.path.lexists(link):
        snapshot.current_kind = "not_symlink"
    return snapshot


# --- file-system primitives --------------------------------------------------------------


def fsync_dir(path: str) -> None:
    """Flush a directory entry change (rename, create) to disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_symlink(target: str, link_path: str) -> None:
    """Point ``link_path`` at ``target`` without a moment where ``link_path`` is missing.

    A temporary symlink is created next to ``link_path`` and renamed over it (rename(2)
    is atomic on POSIX); the old link is never unlinked first.
    """
    directory = os.path.dirname(link_path)
    tmp = os.path.join(directory, f".{os.path.basename(link_path)}{TMP_PREFIX}{secrets.token_hex(6)}")
    os.symlink(target, tmp)
    try:
        os.rename(tmp, link_path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(directory)


def write_file_atomic(path: str, content: str) -> None:
    """Write ``content`` to ``path`` via a temporary file and rename: readers see all or nothing."""
    tmp = f"{path}{TMP_PREFIX}{secrets.token_hex(6)}"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())
    os.rename(tmp, path)


def append_line(path: str, line: str) -> None:
    """Append one line with a single O_APPEND write and fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_tree_safely(path: str, trash_dir: str) -> None:
    """Delete a directory tree by first renaming it to a hidden trash name, then removing it.

    After the rename the tree is no longer visible as a release, so a run killed during
    the removal leaves only a ``.trash-*`` leftover (cleaned by the next ``clean``).
    """
    trash = os.path.join(trash_dir, f"{TRASH_PREFIX}{os.path.basename(path)}-{secrets.token_hex(4)}")
    os.rename(path, trash)
    shutil.rmtree(trash)


def remove_leftover(path: str) -> None:
    """Remove a leftover temporary entry (directory tree, file or symlink)."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)


@contextlib.contextmanager
def exclusive_lock(path: str, timeout: float | None = None) -> Iterator[None]:
    """Hold an exclusive fcntl (flock) lock on ``path`` for the duration of the block.

    Waits up to ``timeout`` seconds (default LOCK_TIMEOUT_SECONDS) for another run to
    release it, then raises ReleaseError. The lock is released when the file descriptor is
    closed, also if the process dies.
    """
    timeout = LOCK_TIMEOUT_SECONDS if timeout is None else timeout
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    raise ReleaseError(
                        f"another virtuoso_release run holds {path} for more than {timeout:.0f}s; "
                        "wait for it to finish (or kill it) and retry"
                    ) from exc
                time.sleep(0.2)
        yield
    finally:
        os.close(fd)


# --- operations ---------------------------------------------------------------------------


class ReleaseManager:
    """Carries out release operations on a snapshot and, unless in check mode, on disk.

    Every method validates first (raising ReleaseError with a message saying what to fix),
    then updates ``self.snapshot`` and performs the matching file-system action. In check
    mode only the snapshot changes. ``self.changed`` tells whether anything would change.
    The caller must hold the layout lock while calling mutating methods for real.
    """

    def __init__(
        self,
        layout: Layout,
        check_mode: bool = False,
        clock: Callable[[], datetime.datetime] = utc_now,
    ) -> None:
        self.layout = layout
        self.check_mode = check_mode
        self.clock = clock
        self.snapshot = load_snapshot(layout)
        self.changed = False

    # helpers

    def _apply(self, action: Callable[[], None]) -> None:
        self.changed = True
        if not self.check_mode:
            action()

    def _record(self, release_id: str, event: str, reason: str | None = None) -> None:
        entry: dict[str, Any] = {"release": release_id, "event": event, "at": iso_utc(self.clock())}
        if reason:
            entry["reason"] = reason
        self.snapshot.history.append(entry)
        line = json.dumps(entry, sort_keys=True)
        self._apply(lambda: append_line(self.layout.history_file, line))

    def _ensure_dirs(self) -> None:
        for path in (self.layout.root, self.layout.releases_dir, self.layout.shared_dir):
            if not os.path.isdir(path):
                if os.path.lexists(path):
                    raise ReleaseError(f"{path} exists but is not a directory; move it away")
                self._apply(lambda path=path: os.makedirs(path, exist_ok=True))

    def _require(self, release_id: str, action: str) -> ReleaseInfo:
        validate_release_id(release_id)
        info = self.snapshot.releases.get(release_id)
        if info is None:
            known = ", ".join(self.snapshot.sorted_ids()) or "none"
            raise ReleaseError(
                f"cannot {action}: release {release_id!r} does not exist under "
                f"{self.layout.releases_dir} (existing releases: {known}); run state=prepare first"
            )
        return info

    def _require_switchable(self, release_id: str, action: str) -> None:
        info = self._require(release_id, action)
        if info.failed:
            raise ReleaseError(
                f"cannot {action}: release {release_id!r} is marked failed "
                f"({self.layout.marker(release_id, FAILED_MARKER)}); deploy a new release instead"
            )
        if info.unfinished:
            raise ReleaseError(
                f"cannot {action}: release {release_id!r} is unfinished "
                f"({self.layout.marker(release_id, UNFINISHED_MARKER)} exists); "
                "finish the build and run state=finalize first"
            )

    def _check_current_replaceable(self) -> None:
        if self.snapshot.current_kind == "not_symlink":
            raise ReleaseError(
                f"{self.layout.current_link} exists but is not a symlink; move it away "
                "(or, for the old flat layout, use state=adopt) before switching releases"
            )

    def _point_current(self, release_id: str) -> None:
        self._check_current_replaceable()
        target = os.path.join(RELEASES_DIR, release_id)
        self.snapshot.current = release_id
        self.snapshot.current_kind = "release"
        self._apply(lambda: atomic_symlink(target, self.layout.current_link))

    def _create_release(self, release_id: str, build: Callable[[str], None]) -> None:
        """Create ``releases/<id>`` by building it in a hidden temp dir and renaming it in place."""
        releases_dir = self.layout.releases_dir

        def action() -> None:
            tmp = os.path.join(releases_dir, f"{TMP_PREFIX}{release_id}-{secrets.token_hex(4)}")
            os.mkdir(tmp)
            try:
                build(tmp)
                os.rename(tmp, self.layout.release_path(release_id))
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            fsync_dir(releases_dir)

        self._apply(action)

    # states

    def prepare(self, release_id: str) -> None:
        """Create root, releases/, shared/ and ``releases/<id>/`` holding the unfinished marker.

        An existing unfinished release is kept as is (a half-copied tree is re-used by the
        next build); an existing finished release is left untouched; a failed one is refused.
        """
        validate_release_id(release_id)
        self._ensure_dirs()
        info = self.snapshot.releases.get(release_id)
        if info is not None:
            if info.failed:
                raise ReleaseError(
                    f"cannot prepare: release {release_id!r} exists and is marked failed; "
                    "use a new release id or run state=clean to remove failed releases first"
                )
            return
        path = self.layout.release_path(release_id)
        if os.path.lexists(path):
            raise ReleaseError(f"cannot prepare: {path} exists but is not a release directory; remove it")

        def build(tmp: str) -> None:
            write_file_atomic(os.path.join(tmp, UNFINISHED_MARKER), f"prepared at {iso_utc(self.clock())}\n")

        self.snapshot.releases[release_id] = ReleaseInfo(unfinished=True)
        self._create_release(release_id, build)

    def finalize(self, release_id: str) -> None:
        """Remove the unfinished marker of an existing, not failed release."""
        info = self._require(release_id, "finalize")
        if info.failed:
            raise ReleaseError(
                f"cannot finalize: release {release_id!r} is marked failed; deploy a new release instead"
            )
        if info.unfinished:
            info.unfinished = False
            marker = self.layout.marker(release_id, UNFINISHED_MARKER)
            self._apply(lambda: os.unlink(marker))

    def switch(self, release_id: str) -> str | None:
        """Atomically point ``current`` at a finished, not failed release; return the previous one."""
        self._require_switchable(release_id, "switch")
        previous = self.snapshot.current
        if previous == release_id:
            return previous
        self._point_current(release_id)
        self._record(release_id, "activated")
        return previous

    def mark_good(self, release_id: str) -> None:
        """Record a "good" event; no-op for a release already good, refused for failed/unfinished."""
        info = self._require(release_id, "mark_good")
        if info.failed:
            raise ReleaseError(
                f"cannot mark_good: release {release_id!r} is marked failed; a failed release "
                "stays failed - deploy a new release instead"
            )
        if info.unfinished:
            raise ReleaseError(
                f"cannot mark_good: release {release_id!r} is unfinished; run state=finalize and "
                "state=switch before verifying it"
            )
        if self.snapshot.status(release_id) != STATUS_GOOD:
            self._record(release_id, "good")

    def mark_failed(self, release_id: str, reason: str | None) -> None:
        """Write the failed marker (reason + UTC time) and record a "failed" event.

        No-op if the release is already marked failed (the first reason is kept).
        """
        info = self._require(release_id, "mark_failed")
        if info.failed:
            return
        info.failed = True
        reason = reason or "marked failed"
        content = json.dumps({"reason": reason, "at": iso_utc(self.clock())}, sort_keys=True) + "\n"
        marker = self.layout.marker(release_id, FAILED_MARKER)
        self._apply(lambda: write_file_atomic(marker, content))
        self._record(release_id, "failed", reason)

    def rollback(self, release_id: str | None, reason: str | None = None) -> str | None:
        """Point ``current`` at ``release_id`` or, if None, at the previous good release.

        Records "rolled_back_from" for the release that was current and "activated" for the
        target. Returns the release that was current before.
        """
        previous = self.snapshot.current
        if release_id is not None:
            self._require_switchable(release_id, "roll back")
            target = release_id
        else:
            target = self.snapshot.previous_good()
            if target is None:
                statuses = ", ".join(
                    f"{rid}={self.snapshot.status(rid)}" for rid in self.snapshot.sorted_ids()
                )
                raise ReleaseError(
                    f"nothing to roll back to: no GOOD release other than the current one "
                    f"({previous or 'none'}) has been activated (releases: {statuses or 'none'}); "
                    "pass release=<id> to roll back to a specific finished release"
                )
        if target == previous:
            return previous
        self._check_current_replaceable()
        if previous is not None:
            self._record(previous, "rolled_back_from", reason)
        self._point_current(target)
        self._record(target, "activated")
        return previous

    def clean(self, keep: int) -> list[str]:
        """Delete releases, never current nor the previous good release; return removed ids.

        Order: unfinished ones, then failed ones, then the oldest remaining (good/unverified)
        beyond the ``keep`` newest. Hidden ``.tmp-*``/``.trash-*`` leftovers of killed runs
        are removed too (not listed in the result).
        """
        if keep < 2:
            raise ReleaseError(
                f"keep must be at least 2 (current and the previous good release are always kept); got {keep}"
            )
        snapshot = self.snapshot
        protected = {snapshot.current, snapshot.previous_good()}
        ordered = snapshot.sorted_ids()
        doomed = [rid for rid in ordered if snapshot.status(rid) == STATUS_UNFINISHED]
        doomed += [rid for rid in ordered if snapshot.status(rid) == STATUS_FAILED]
        doomed = [rid for rid in doomed if rid not in protected]
        remaining = [rid for rid in ordered if rid not in doomed]
        surplus = remaining[: max(len(remaining) - keep, 0)]
        doomed += [rid for rid in surplus if rid not in protected]
        for rid in doomed:
            del snapshot.releases[rid]
            path = self.layout.release_path(rid)
            self._apply(lambda path=path: remove_tree_safely(path, self.layout.releases_dir))
        for name in snapshot.leftovers:
            path = os.path.join(self.layout.releases_dir, name)
            self._apply(lambda path=path: remove_leftover(path))
        snapshot.leftovers = []
        return doomed

    def adopt(self, release_id: str | None, legacy_paths: list[str]) -> bool:
        """Turn the old flat layout (``<root>/src`` …, no ``current``) into the first release.

        Copies (never moves) the existing ``legacy_paths`` directories into
        ``releases/<id>``, links ``venv311`` to the absolute flat venv path (venvs are not
        relocatable), writes REVISION, points ``current`` at it and records
        adopted/activated/good. Returns False (no-op) when ``current`` exists or no flat
        layout is present.
        """
        validate_legacy_paths(legacy_paths)
        root = self.layout.root
        if os.path.lexists(self.layout.current_link):
            return False
        present = [name for name in legacy_paths if os.path.isdir(os.path.join(root, name))]
        if not present:
            return False
        moment = self.clock()
        release_id = validate_release_id(release_id or f"legacy-{moment.strftime('%Y%m%dT%H%M%SZ')}")
        if release_id in self.snapshot.releases or os.path.lexists(self.layout.release_path(release_id)):
            raise ReleaseError(
                f"cannot adopt: release {release_id!r} already exists under {self.layout.releases_dir}; "
                "pass another release id"
            )
        self._ensure_dirs()
        venv = os.path.join(os.path.abspath(root), VENV_NAME)
        link_venv = os.path.isdir(venv)
        revision = (
            f"adopted from the flat layout in {root} at {iso_utc(moment)}\n"
            f"copied: {', '.join(present)}\n"
            f"{VENV_NAME}: {'symlink to ' + venv if link_venv else 'none (no flat venv found)'}\n"
        )

        def build(tmp: str) -> None:
            for name in present:
                shutil.copytree(os.path.join(root, name), os.path.join(tmp, name), symlinks=True)
            if link_venv:
                os.symlink(venv, os.path.join(tmp, VENV_NAME))
            write_file_atomic(os.path.join(tmp, REVISION_FILE), revision)

        self.snapshot.releases[release_id] = ReleaseInfo()
        self._create_release(release_id, build)
        self._point_current(release_id)
        self._record(release_id, "adopted")
        self._record(release_id, "activated")
        self._record(release_id, "good")
        return True
