# Copyright: (c) Virtuoso deploy maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Import Python modules in isolated child interpreters and report how each went.

Used by the ``python_import_health`` module. Standard library only: this file is
shipped to the managed hosts inside the module payload.

Every module is imported by its own child process (``python -I -c PROBE_SOURCE``)
started in a new session, so it leads its own process group. Once the child has
exited - or its timeout has expired - the whole group is killed with SIGKILL
*before* the child is reaped, so neither a hanging import nor a process that the
import spawned is left behind, and the group id cannot have been reused yet.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

RESULT_MARKER = "@@VIRTUOSO_IMPORT_PROBE@@"
TRACEBACK_TAIL_LINES = 20
STDERR_TAIL_CHARS = 4000
DOTTED_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")

# Runs inside the probed interpreter (any CPython >= 3.8). argv[1] is a JSON payload
# {"module": name, "paths": [...], "dump_after": seconds}. The result is one RESULT_MARKER-prefixed JSON line
# on the real stdout; whatever the import prints goes to stderr. os._exit() skips the
# interpreter shutdown so non-daemon threads or atexit hooks of the module cannot hang it.
PROBE_SOURCE = r"""
import faulthandler, hashlib, importlib, importlib.util, json, os, sys, time, traceback

MARKER = "__MARKER__"
TAIL = __TAIL__


def origin(name):
    parent = name.rpartition(".")[0]
    if parent and parent not in sys.modules:
        return None
    try:
        spec = importlib.util.find_spec(name)
    except BaseException:
        return None
    if spec is None or not spec.has_location:
        return None
    return spec.origin


def user_frames(tb):
    # Drop the probe's and importlib's own frames at the top of the traceback.
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename != "<string>" and not filename.startswith("<frozen importlib"):
            if os.path.basename(os.path.dirname(filename)) != "importlib":
                break
        tb = tb.tb_next
    return tb


def sha256(path):
    if not path:
        return None
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(65536), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def main():
    payload = json.loads(sys.argv[1])
    name = payload["module"]
    sys.path[:0] = payload["paths"]
    real_stdout = sys.stdout
    sys.stdout = sys.stderr
    result = {"name": name, "ok": False, "import_ms": 0.0, "file": None, "sha256": None}
    # Shortly before the parent's timeout, dump every thread's stack to stderr: it
    # becomes the traceback_tail of a hanging import.
    faulthandler.dump_traceback_later(payload["dump_after"], exit=False, file=sys.__stderr__)
    start = time.perf_counter()
    try:
        module = importlib.import_module(name)
    except BaseException as exc:
        result["import_ms"] = round((time.perf_counter() - start) * 1000.0, 1)
        tb = user_frames(exc.__traceback__)
        lines = "".join(traceback.format_exception(type(exc), exc, tb)).splitlines()
        result["error_type"] = type(exc).__name__
        result["error"] = str(exc)
        result["traceback_tail"] = "\n".join(lines[-TAIL:])
        result["file"] = origin(name)
    else:
        result["import_ms"] = round((time.perf_counter() - start) * 1000.0, 1)
        result["ok"] = True
        result["file"] = getattr(module, "__file__", None)
    faulthandler.cancel_dump_traceback_later()
    result["sha256"] = sha256(result["file"])
    real_stdout.write(MARKER + json.dumps(result) + "\n")
    real_stdout.flush()
    sys.stderr.flush()
    os._exit(0)


main()
""".replace("__MARKER__", RESULT_MARKER).replace("__TAIL__", str(TRACEBACK_TAIL_LINES))


def is_dotted_name(name: str) -> bool:
    """Return True when ``name`` is a dotted Python module name such as ``src.utils.x``."""
    return bool(DOTTED_NAME_RE.match(name))


def _is_package_dir(name: str) -> bool:
    """Return True for directory names that can hold importable modules."""
    return name != "__pycache__" and not name.startswith(".") and name.isidentifier()


def discover_modules(package_dir: str) -> list[str]:
    """List the dotted names of all ``.py`` modules under ``package_dir``.

    Names are relative to the parent of ``package_dir``: for ``/rel/src`` the file
    ``/rel/src/utils/safe_operations.py`` becomes ``src.utils.safe_operations`` and
    ``/rel/src/utils/__init__.py`` becomes ``src.utils``. ``__pycache__``, hidden
    directories and names that cannot be imported (``my-tool.py``) are skipped.
    """
    root = os.path.normpath(os.path.abspath(package_dir))
    parent = os.path.dirname(root)
    names: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [name for name in dirnames if _is_package_dir(name)]
        package = os.path.relpath(dirpath, parent).split(os.sep)
        for filename in filenames:
            stem, ext = os.path.splitext(filename)
            if ext != ".py":
                continue
            parts = package if stem == "__init__" else [*package, stem]
            dotted = ".".join(parts)
            if is_dotted_name(dotted):
                names.add(dotted)
    return sorted(names)


def _exited(proc: subprocess.Popen[bytes]) -> bool:
    """Return True once the child has exited, without reaping it (its pid stays reserved)."""
    waitid = getattr(os, "waitid", None)
    if waitid is None:  # pragma: no cover - platforms without waitid(2), e.g. macOS
        return proc.poll() is not None
    return waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _kill_group(pgid: int) -> None:
    """SIGKILL every process still in the process group ``pgid``."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def wait_and_sweep(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for ``proc``, then kill its process group and reap it.

    ``proc`` must have been started with ``start_new_session=True``. The group is
    killed whether or not the child finished in time, which also removes processes
    the import started in the background. Returns True when the timeout expired.
    """
    deadline = time.monotonic() + timeout
    delay = 0.001
    timed_out = False
    while not _exited(proc):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            timed_out = True
            break
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, 0.05)
    _kill_group(proc.pid)
    proc.wait()
    return timed_out


def _tail(text: str, limit: int = STDERR_TAIL_CHARS) -> str:
    """Return at most the last ``limit`` characters of ``text``, stripped."""
    text = text.strip()
    return text if len(text) <= limit else "..." + text[-limit:]


def _failure(name: str, elapsed_ms: float, error_type: str, error: str, tail: str) -> dict[str, Any]:
    """Build the result entry of a module whose probe produced no result of its own."""
    return {
        "name": name,
        "ok": False,
        "import_ms": elapsed_ms,
        "file": None,
        "sha256": None,
        "error_type": error_type,
        "error": error,
        "traceback_tail": tail,
    }


def _parse_result(stdout: str) -> dict[str, Any] | None:
    """Return the probe's JSON result from its stdout, or None if it never reported one."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_MARKER):
            try:
                result = json.loads(line[len(RESULT_MARKER) :])
            except ValueError:
                return None
            return result if isinstance(result, dict) else None
    return None


def probe_module(
    python: str, name: str, *, paths: Sequence[str], chdir: str | None, timeout: float
) -> dict[str, Any]:
    """Import ``name`` with the interpreter ``python`` in a child process; return its result entry.

    The child runs in isolated mode (``-I``: no PYTHONPATH, no user site-packages,
    no current directory on ``sys.path``) with ``paths`` prepended to ``sys.path`` and
    ``chdir`` as its working directory.
    """
    payload = json.dumps({"module": name, "paths": list(paths), "dump_after": timeout * 0.9})
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.monotonic()
        try:
            proc = subprocess.Popen(
                [python, "-I", "-c", PROBE_SOURCE, payload],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=chdir,
                start_new_session=True,
            )
        except OSError as exc:
            return _failure(name, 0.0, type(exc).__name__, f"cannot start {python}: {exc}", "")
        timed_out = wait_and_sweep(proc, timeout)
        elapsed_ms = round((time.monotonic() - start) * 1000.0, 1)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", errors="replace")
        stderr = err.read().decode("utf-8", errors="replace")
    if timed_out:
        return _failure(
            name,
            elapsed_ms,
            "TimeoutError",
            f"import did not finish within {timeout:g}s; its process group was killed",
            _tail(stderr),
        )
    result = _parse_result(stdout)
    if result is None:
        return _failure(
            name,
            elapsed_ms,
            "ProbeError",
            f"the probe process exited with code {proc.returncode} without reporting a result",
            _tail(stderr),
        )
    return result


def probe_modules(
    python: str,
    names: Sequence[str],
    *,
    paths: Sequence[str],
    chdir: str | None,
    timeout: float,
    max_workers: int = 4,
) -> list[dict[str, Any]]:
    """Probe ``names`` with at most ``max_workers`` children at once; results keep input order."""
    if not names:
        return []
    workers = max(1, min(max_workers, len(names)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [
            pool.submit(probe_module, python, name, paths=paths, chdir=chdir, timeout=timeout)
            for name in names
        ]
        return [future.result() for future in futures]
