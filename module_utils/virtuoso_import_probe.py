# Copyright: (c) Virtuoso deploy maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Import Python modules in isolated children of one interpreter and report how each went.

Used by the ``python_import_health`` module. Standard library only: this file is
shipped to the managed hosts inside the module payload.

One probe interpreter (``python -I -c PROBE_SOURCE``) is started in a new session. It
imports the ``preload`` modules once, then forks one child per probed module, each in a
process group of its own, so every module is imported from scratch (with only the probe's
standard-library modules and the preloads already loaded). Once a child has exited - or its
timeout has expired - its whole group is killed with SIGKILL *before* the child is reaped,
so neither a hanging import nor a process that the import spawned is left behind, and the
group id cannot have been reused yet. The probe itself is swept the same way when it ends.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from typing import Any

RESULT_MARKER = "@@VIRTUOSO_IMPORT_PROBE@@"
TRACEBACK_TAIL_LINES = 20
STDERR_TAIL_CHARS = 4000
# Time the probe interpreter may take beyond its imports (start, forks, bookkeeping).
PROBE_SLACK_SECONDS = 30.0
DOTTED_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")

# Runs inside the probed interpreter (any CPython >= 3.8, POSIX). argv[1] is a JSON payload
# {"modules": [...], "preload": [...], "paths": [...], "timeout": s, "workers": n, "dump_after": s}.
# Every report is one RESULT_MARKER-prefixed JSON line on the real stdout, written as soon as it is
# known: {"result": entry} per module, {"preload_error": {...}} per preload that failed. Whatever
# the imports print goes to stderr (the probe's) or to the child's own stderr file. os._exit()
# skips the interpreter shutdown so non-daemon threads or atexit hooks cannot hang anything.
PROBE_SOURCE = (
    r"""
import collections, faulthandler, hashlib, importlib, importlib.util, json, os, signal, sys
import tempfile, time, traceback

MARKER = "__MARKER__"
TAIL_LINES = __TAIL_LINES__
TAIL_CHARS = __TAIL_CHARS__
REAL_STDOUT = sys.stdout
Job = collections.namedtuple("Job", "pid name started out err")


def emit(report):
    REAL_STDOUT.write(MARKER + json.dumps(report) + "\n")
    REAL_STDOUT.flush()


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


def import_one(name, dump_after):
    result = {"name": name, "ok": False, "import_ms": 0.0, "file": None, "sha256": None}
    # Shortly before the timeout, dump every thread's stack to stderr: it becomes the
    # traceback_tail of a hanging import.
    faulthandler.dump_traceback_later(dump_after, exit=False, file=sys.__stderr__)
    start = time.perf_counter()
    try:
        module = importlib.import_module(name)
    except BaseException as exc:
        result["import_ms"] = round((time.perf_counter() - start) * 1000.0, 1)
        tb = user_frames(exc.__traceback__)
        lines = "".join(traceback.format_exception(type(exc), exc, tb)).splitlines()
        result["error_type"] = type(exc).__name__
        result["error"] = str(exc)
        result["traceback_tail"] = "\n".join(lines[-TAIL_LINES:])
        result["file"] = origin(name)
    else:
        result["import_ms"] = round((time.perf_counter() - start) * 1000.0, 1)
        result["ok"] = True
        result["file"] = getattr(module, "__file__", None)
    faulthandler.cancel_dump_traceback_later()
    result["sha256"] = sha256(result["file"])
    return result


def child(name, dump_after, out, err):
    # The forked child: its own process group, stdout and stderr into its own file.
    try:
        os.setpgid(0, 0)
        os.dup2(err.fileno(), 1)
        os.dup2(err.fileno(), 2)
        result = import_one(name, dump_after)
        out.write(json.dumps(result).encode("utf-8"))
        out.flush()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(0)


def spawn(name, dump_after):
    out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        child(name, dump_after, out, err)
    try:
        os.setpgid(pid, pid)  # also here: the timeout's killpg must not race the child's setpgid
    except OSError:
        pass
    return Job(pid, name, time.monotonic(), out, err)


def exited(pid):
    # Without reaping: the pid, and so the group id, stays reserved until the sweep.
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def tail(text):
    text = text.strip()
    return text if len(text) <= TAIL_CHARS else "..." + text[-TAIL_CHARS:]


def failure(job, elapsed_ms, error_type, error):
    job.err.seek(0)
    return {"name": job.name, "ok": False, "import_ms": elapsed_ms, "file": None, "sha256": None,
            "error_type": error_type, "error": error,
            "traceback_tail": tail(job.err.read().decode("utf-8", errors="replace"))}


def finish(job, timed_out, timeout):
    for kill, target in ((os.killpg, job.pid), (os.kill, job.pid)):
        try:
            kill(target, signal.SIGKILL)
        except OSError:
            pass
    _, status = os.waitpid(job.pid, 0)
    code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    elapsed_ms = round((time.monotonic() - job.started) * 1000.0, 1)
    if timed_out:
        return failure(job, elapsed_ms, "TimeoutError",
                       "import did not finish within %gs; its process group was killed" % timeout)
    job.out.seek(0)
    try:
        result = json.loads(job.out.read().decode("utf-8", errors="replace"))
    except ValueError:
        result = None
    if not isinstance(result, dict):
        return failure(job, elapsed_ms, "ProbeError",
                       "the probe process exited with code %d without reporting a result" % code)
    return result


def preload(names):
    for name in names:
        try:
            importlib.import_module(name)
        except BaseException as exc:
            emit({"preload_error": {"name": name, "error_type": type(exc).__name__, "error": str(exc)}})


def main():
    payload = json.loads(sys.argv[1])
    sys.path[:0] = payload["paths"]
    sys.stdout = sys.stderr
    preload(payload["preload"])
    pending, running = collections.deque(payload["modules"]), []
    timeout, delay = payload["timeout"], 0.001
    while pending or running:
        while pending and len(running) < payload["workers"]:
            running.append(spawn(pending.popleft(), payload["dump_after"]))
        waiting = []
        for job in running:
            done = exited(job.pid)
            if done or time.monotonic() - job.started >= timeout:
                emit({"result": finish(job, not done, timeout)})
                job.out.close()
                job.err.close()
            else:
                waiting.append(job)
        if len(waiting) == len(running):
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        else:
            delay = 0.001
        running = waiting
    os._exit(0)


main()
""".replace("__MARKER__", RESULT_MARKER)
    .replace("__TAIL_LINES__", str(TRACEBACK_TAIL_LINES))
    .replace("__TAIL_CHARS__", str(STDERR_TAIL_CHARS))
)


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
    it started in the background. Returns True when the timeout expired.
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


def _unreported(name: str, elapsed_ms: float, error_type: str, error: str, tail: str) -> dict[str, Any]:
    """The result entry of a module the probe interpreter never reported on."""
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


def _parse_reports(stdout: str) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The probe's results by module name and its preload warnings, from its stdout."""
    results: dict[str, dict[str, Any]] = {}
    warnings: list[str] = []
    for line in stdout.splitlines():
        if not line.startswith(RESULT_MARKER):
            continue
        try:
            report = json.loads(line[len(RESULT_MARKER) :])
        except ValueError:
            continue
        result, preload_error = report.get("result"), report.get("preload_error")
        if isinstance(result, dict) and isinstance(result.get("name"), str):
            results[result["name"]] = result
        elif isinstance(preload_error, dict):
            warnings.append(
                f"preload {preload_error.get('name')} failed to import "
                f"({preload_error.get('error_type')}: {preload_error.get('error')}); "
                "every module was imported without it"
            )
    return results, warnings


def probe_modules(
    python: str,
    names: Sequence[str],
    *,
    paths: Sequence[str],
    chdir: str | None,
    timeout: float,
    max_workers: int = 4,
    preload: Sequence[str] = (),
) -> tuple[list[dict[str, Any]], list[str]]:
    """Import each of ``names`` in its own child of one ``python`` probe; (results, warnings).

    Results keep the order of ``names``; at most ``max_workers`` children run at once, each
    killed with its process group after ``timeout`` seconds. The probe runs in isolated mode
    (``-I``: no PYTHONPATH, no user site-packages, no current directory on ``sys.path``) with
    ``paths`` prepended to ``sys.path`` and ``chdir`` as its working directory, and imports
    ``preload`` once before it forks the children.
    """
    if not names:
        return [], []
    workers = max(1, min(max_workers, len(names)))
    payload = json.dumps(
        {
            "modules": list(names),
            "preload": list(preload),
            "paths": list(paths),
            "timeout": timeout,
            "workers": workers,
            "dump_after": timeout * 0.9,
        }
    )
    # The preloads, then one timeout per round of workers, then the probe's own slack.
    budget = timeout * (1 + math.ceil(len(names) / workers)) + PROBE_SLACK_SECONDS
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
            why = f"cannot start {python}: {exc}"
            return [_unreported(name, 0.0, type(exc).__name__, why, "") for name in names], []
        timed_out = wait_and_sweep(proc, budget)
        elapsed_ms = round((time.monotonic() - start) * 1000.0, 1)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", errors="replace")
        stderr = err.read().decode("utf-8", errors="replace")
    results, warnings = _parse_reports(stdout)
    if timed_out:
        error_type, why = "TimeoutError", f"the probe did not finish within {budget:g}s and was killed"
    else:
        error_type, why = "ProbeError", f"the probe exited with code {proc.returncode} before reporting it"
    entries = [
        results.get(name) or _unreported(name, elapsed_ms, error_type, why, _tail(stderr)) for name in names
    ]
    return entries, warnings
