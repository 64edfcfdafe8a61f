"""Plumbing shared by the trading service and the health monitor.

Everything here is stdlib-only so that importing it costs no memory beyond the interpreter:

* :class:`ConfigReader` - typed, strict TOML config access; every problem is a :class:`ConfigError`
  whose message names the key and the expected type.
* :func:`setup_logging` - one-JSON-object-per-line logs on stdout (journald) and optionally a
  rotating ``log_file``.
* :func:`atomic_write_text` / :func:`atomic_write_json` - readers never see a partial file.
* :class:`Notifier` - the sd_notify datagram protocol (``READY=1``, ``WATCHDOG=1``, ``STOPPING=1``).
* :func:`start_http_server` - a tiny threaded GET-only router for ``/health`` and ``/metrics``.
* :class:`Lifecycle` / :func:`run_service` - SIGTERM handling and the shared ``main()`` skeleton
  (exit 0 on clean stop, 2 with one stderr line on a config error, 1 on other startup failures).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import logging.handlers
import math
import os
import signal
import socket
import sys
import tempfile
import threading
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any, Protocol, TypeVar

LOG = logging.getLogger("virtuoso.services")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


# --------------------------------------------------------------------------------------------
# Config


class ConfigError(Exception):
    """A config problem; ``str(err)`` is a single line naming the key and what was expected."""


def _describe(value: object) -> str:
    # repr() keeps strings quoted ('abc'), which makes "got ..." unambiguous in one line.
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


_MISSING = object()


class ConfigReader:
    """Typed access to one TOML table; unknown keys are an error (typos must not pass silently).

    Every getter returns the default when the key is absent and raises :class:`ConfigError`
    naming ``<prefix><key>`` when the value has the wrong type or range.  Call :meth:`finish`
    after reading all keys so that leftover (unknown) keys are reported.
    """

    def __init__(self, data: Mapping[str, Any], prefix: str = "") -> None:
        self._data = dict(data)
        self._prefix = prefix
        self._seen: set[str] = set()

    def name(self, key: str) -> str:
        """Full dotted key name used in error messages."""
        return f"{self._prefix}{key}"

    def _get(self, key: str) -> object:
        self._seen.add(key)
        return self._data.get(key, _MISSING)

    def fail(self, key: str, expected: str, value: object) -> ConfigError:
        """Build the canonical error: ``<key> must be <expected>, got <value>``."""
        return ConfigError(f"{self.name(key)} must be {expected}, got {_describe(value)}")

    def string(self, key: str, default: str, choices: Sequence[str] | None = None) -> str:
        """A non-empty string (optionally one of ``choices``)."""
        value = self._get(key)
        if value is _MISSING:
            return default
        if choices is not None:
            if value not in choices:
                raise self.fail(key, "one of " + ", ".join(repr(c) for c in choices), value)
            return str(value)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, "a non-empty string", value)
        return value

    def optional_string(self, key: str) -> str | None:
        """A non-empty string or ``None`` when absent (an empty string also means "unset")."""
        value = self._get(key)
        if value is _MISSING or value == "":
            return None
        if not isinstance(value, str):
            raise self.fail(key, "a string", value)
        return value

    def number(self, key: str, default: float, *, minimum: float = 0.0, strict: bool = True) -> float:
        """A finite number, ``> minimum`` when ``strict`` else ``>= minimum``."""
        value = self._get(key)
        if value is _MISSING:
            return default
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        if ok:
            ok = value > minimum if strict else value >= minimum
        if not ok:
            if minimum == 0.0:
                expected = "a positive number" if strict else "a non-negative number"
            else:
                expected = f"a number {'>' if strict else '>='} {minimum:g}"
            raise self.fail(key, expected, value)
        return float(value)  # type: ignore[arg-type]

    def integer(self, key: str, default: int, *, minimum: int = 1) -> int:
        """An integer ``>= minimum``."""
        value = self._get(key)
        if value is _MISSING:
            return default
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise self.fail(key, f"an integer >= {minimum}", value)
        return value

    def string_list(self, key: str, default: Sequence[str]) -> tuple[str, ...]:
        """A non-empty list of distinct non-empty strings."""
        value = self._get(key)
        if value is _MISSING:
            return tuple(default)
        if (
            not isinstance(value, list)
            or not value
            or not all(isinstance(v, str) and v.strip() for v in value)
            or len(set(value)) != len(value)
        ):
            raise self.fail(key, "a non-empty list of distinct strings", value)
        return tuple(value)

    def path(self, key: str, default: Path) -> Path:
        """A filesystem path (``~`` is not expanded: services run without HOME)."""
        value = self._get(key)
        if value is _MISSING:
            return default
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, "a path string", value)
        return Path(value)

    def optional_path(self, key: str) -> Path | None:
        """A path or ``None`` when absent or empty."""
        raw = self.optional_string(key)
        return Path(raw) if raw is not None else None

    def table(self, key: str) -> ConfigReader:
        """A sub-table (absent means empty); its keys are reported as ``<key>.<sub>``."""
        value = self._get(key)
        if value is _MISSING:
            value = {}
        if not isinstance(value, dict):
            raise self.fail(key, "a table", value)
        return ConfigReader(value, prefix=f"{self.name(key)}.")

    def finish(self) -> None:
        """Raise for the first key that no getter asked for."""
        unknown = sorted(set(self._data) - self._seen)
        if unknown:
            known = ", ".join(sorted(self._seen))
            raise ConfigError(f"{self.name(unknown[0])} is not a known key (known: {known})")


def load_toml(path: Path | None) -> dict[str, Any]:
    """Parse a TOML file; ``None`` means "no config" (all defaults).  Errors are ConfigErrors."""
    if path is None:
        return {}
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"config file {str(path)!r} cannot be read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}") from None


def default_state_dir() -> Path:
    """``$STATE_DIRECTORY`` (set by systemd's StateDirectory=, first entry) else ``./state``."""
    env = os.environ.get("STATE_DIRECTORY", "")
    first = env.split(":")[0].strip()
    return Path(first) if first else Path("state")


@dataclass(frozen=True)
class ListenAddress:
    """A parsed ``host:port`` (IPv6 hosts in brackets: ``[::1]:8787``)."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def read_listen(reader: ConfigReader, key: str, default: str) -> ListenAddress:
    """Read a ``host:port`` string; port 0 means "any free port" (tests)."""
    raw = reader.string(key, default)
    host, sep, port_text = raw.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise reader.fail(key, "a 'host:port' string", raw)
    return ListenAddress(host, int(port_text))


# --------------------------------------------------------------------------------------------
# Time, files


def utc_iso(epoch: float | None) -> str | None:
    """Epoch seconds as ISO-8601 UTC with milliseconds, ``None`` stays ``None``."""
    if epoch is None:
        return None
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="milliseconds")


def json_safe(value: Any) -> Any:
    """Recursively replace non-finite floats by ``None`` so the output is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` so that readers see either the old or the complete new file.

    The temp file lives in the target directory (rename is only atomic within a filesystem)
    and is fsynced before the rename, so a crash never leaves a truncated file behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, payload: Any) -> None:
    """:func:`atomic_write_text` of strict JSON (non-finite floats become ``null``)."""
    atomic_write_text(path, json.dumps(json_safe(payload), indent=2, sort_keys=True) + "\n")


def ensure_writable_dir(path: Path, what: str) -> None:
    """Create ``path`` if needed and prove it is writable; raise ConfigError naming ``what``."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".probe.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(f"{what} {str(path)!r} is not a writable directory: {exc.strerror}") from None


# --------------------------------------------------------------------------------------------
# Logging


_STD_RECORD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, any ``extra=`` fields, exc (traceback).

    Tracebacks stay inside the single line (newlines escaped by JSON), so a log scanner that
    reads lines still sees the ``Traceback (most recent call last)`` marker.
    """

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as one line of JSON."""
        entry: dict[str, Any] = {
            "ts": utc_iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STD_RECORD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(json_safe(entry), default=str)


def setup_logging(level: str, log_file: Path | None, max_bytes: int, backup_count: int) -> None:
    """Route all logging (and ``warnings``) as JSON to stdout and optionally a rotating file.

    Raises ConfigError naming ``log_file`` if that file cannot be opened for appending.
    """
    formatter = JsonFormatter()
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stdout)]
    if log_file is not None:
        try:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            handlers.append(
                logging.handlers.RotatingFileHandler(
                    log_file, maxBytes=max_bytes, backupCount=backup_count, encoding="utf-8"
                )
            )
        except OSError as exc:
            raise ConfigError(f"log_file {str(log_file)!r} cannot be opened: {exc.strerror}") from None
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)


# --------------------------------------------------------------------------------------------
# sd_notify


class Notifier:
    """systemd's notify protocol over ``$NOTIFY_SOCKET``; a no-op when the variable is unset.

    Sending never raises: a vanished socket must not take the service down with it.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET", "")
        # '@' marks the Linux abstract namespace, spelled with a leading NUL at the socket API.
        self._address: str | None = ("\0" + raw[1:] if raw.startswith("@") else raw) or None
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self.watchdog_seconds = _watchdog_seconds(env)

    @property
    def enabled(self) -> bool:
        """True when ``$NOTIFY_SOCKET`` was set."""
        return self._address is not None

    def notify(self, message: str) -> bool:
        """Send one datagram (e.g. ``"READY=1"``); returns whether it was sent."""
        if self._address is None:
            return False
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.sendto(message.encode("utf-8"), self._address)
            except OSError as exc:
                LOG.warning("sd_notify failed", extra={"notify": message, "error": str(exc)})
                return False
        return True

    def ready(self, status: str = "") -> None:
        """``READY=1`` plus an optional ``STATUS=`` line."""
        self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def watchdog(self) -> None:
        """``WATCHDOG=1`` - only when systemd asked for it via ``$WATCHDOG_USEC``."""
        if self.watchdog_seconds is not None:
            self.notify("WATCHDOG=1")

    def status(self, text: str) -> None:
        """Free-form ``STATUS=`` shown by ``systemctl status``."""
        self.notify(f"STATUS={text}")

    def stopping(self) -> None:
        """``STOPPING=1``."""
        self.notify("STOPPING=1")

    def close(self) -> None:
        """Release the socket."""
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


def _watchdog_seconds(env: Mapping[str, str]) -> float | None:
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    # WATCHDOG_PID guards against a forked child inheriting its parent's watchdog duty.
    if not usec.isdigit() or int(usec) == 0 or (pid.isdigit() and int(pid) != os.getpid()):
        return None
    return int(usec) / 1_000_000


# --------------------------------------------------------------------------------------------
# HTTP


@dataclass(frozen=True)
class Response:
    """An HTTP answer produced by a route handler."""

    status: int
    body: bytes
    content_type: str = "application/json"

    @classmethod
    def json(cls, status: int, payload: Any) -> Response:
        """Strict-JSON body."""
        body = json.dumps(json_safe(payload), indent=2, sort_keys=True) + "\n"
        return cls(status, body.encode("utf-8"))

    @classmethod
    def text(cls, status: int, text: str, content_type: str = "text/plain; charset=utf-8") -> Response:
        """Text body."""
        return cls(status, text.encode("utf-8"), content_type)


Route = Callable[[], Response]

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def start_http_server(address: ListenAddress, routes: Mapping[str, Route]) -> ThreadingHTTPServer:
    """Serve ``GET <path>`` from ``routes`` in a background thread; returns the running server.

    Unknown paths answer 404, handler exceptions 500 (logged); the query string is ignored.
    Raises OSError when the address cannot be bound.  Stop with ``shutdown(); server_close()``.
    """

    class Handler(BaseHTTPRequestHandler):
        # A stalled client must not pin a thread forever.
        timeout = 10
        server_version = "virtuoso"
        sys_version = ""

        def do_GET(self) -> None:
            route = routes.get(self.path.split("?", 1)[0])
            if route is None:
                response = Response.json(404, {"error": "not found", "paths": sorted(routes)})
            else:
                try:
                    response = route()
                except Exception:
                    LOG.exception("http handler failed", extra={"path": self.path})
                    response = Response.json(500, {"error": "internal error"})
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(response.body)

        def log_message(self, format: str, *args: Any) -> None:
            LOG.debug("http " + format, *args)

    server_cls = _Server
    if ":" in address.host:
        server_cls = type("_Server6", (_Server,), {"address_family": socket.AF_INET6})
    server = server_cls((address.host, address.port), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.name = "http"
    thread.start()
    return server


# --------------------------------------------------------------------------------------------
# Prometheus text exposition


def prom_escape(value: str) -> str:
    """Escape a label value per the exposition format."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def prom_number(value: float) -> str:
    """Format a sample value (``+Inf``/``NaN`` spelled the Prometheus way)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def prom_metric(
    name: str, kind: str, help_text: str, samples: Sequence[tuple[Mapping[str, str], float]]
) -> list[str]:
    """``# HELP``/``# TYPE`` lines plus one line per ``(labels, value)`` sample."""
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    for labels, value in samples:
        label_text = ",".join(f'{k}="{prom_escape(v)}"' for k, v in labels.items())
        lines.append(
            f"{name}{{{label_text}}} {prom_number(value)}" if label_text else f"{name} {prom_number(value)}"
        )
    return lines


def parse_prometheus(text: str) -> dict[str, float]:
    """Parse exposition text into ``{"name{labels}": value}`` (comments skipped, bad lines ignored)."""
    out: dict[str, float] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        with contextlib.suppress(ValueError):
            out[key] = float(value)
    return out


# --------------------------------------------------------------------------------------------
# Process lifecycle


class Lifecycle:
    """A stop flag set by SIGTERM/SIGINT; workers wait on it instead of sleeping."""

    def __init__(self) -> None:
        self.stop_event = threading.Event()
        self.crashed = False

    def install_signal_handlers(self) -> None:
        """Route SIGTERM and SIGINT to :meth:`request_stop` (main thread only)."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        LOG.info("stop requested", extra={"signal": signal.Signals(signum).name})
        self.stop_event.set()

    def request_stop(self) -> None:
        """Ask every loop to finish."""
        self.stop_event.set()

    @property
    def stopping(self) -> bool:
        """True once a stop was requested."""
        return self.stop_event.is_set()

    def sleep(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; returns True (early) when a stop was requested."""
        return self.stop_event.wait(max(0.0, seconds))


class Service(Protocol):
    """What :func:`run_service` drives."""

    def run(self, lifecycle: Lifecycle) -> None:
        """Loop until ``lifecycle.stopping``; must return promptly after a stop request."""

    def close(self) -> None:
        """Release resources (HTTP server, sockets); called once after :meth:`run` stops."""


# A worker blocked in network I/O gets this long after SIGTERM; systemd's default stop timeout
# is far longer, but the contract here is "clean exit within 5 s".
SHUTDOWN_GRACE_SECONDS = 3.0

_C = TypeVar("_C")


def run_service(
    prog: str,
    description: str,
    argv: Sequence[str] | None,
    load: Callable[[Path | None], _C],
    build: Callable[[_C, Notifier, Lifecycle], Service],
) -> int:
    """The shared ``main()``: parse ``--config``, load it, build the service, run it until SIGTERM.

    ``load`` must validate everything checkable without side effects (``--check-config`` runs only
    it); ``build`` sets up logging, binds the HTTP port and returns the service.  Returns the exit
    code: 0 after a clean stop or a passing ``--check-config``; 2 with exactly one
    ``config error: ...`` line on stderr for a config problem; 1 with one ``error: ...`` line for
    any other startup failure (e.g. the port is taken) or when the loop crashed.
    """
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", type=Path, default=None, help="TOML config file (default: built-in)")
    parser.add_argument("--check-config", action="store_true", help="validate the config and exit")
    args = parser.parse_args(argv)
    notifier = Notifier()
    lifecycle = Lifecycle()
    try:
        config = load(args.config)
        if args.check_config:
            print("config ok")
            return EXIT_OK
        service = build(config, notifier, lifecycle)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    lifecycle.install_signal_handlers()
    worker = threading.Thread(target=_run_worker, args=(service, lifecycle), name="worker", daemon=True)
    worker.start()
    # Wake periodically: a bare wait() would delay signal handlers on some platforms.
    while not lifecycle.stop_event.wait(0.5):
        if not worker.is_alive():
            break
    notifier.stopping()
    worker.join(SHUTDOWN_GRACE_SECONDS)
    if worker.is_alive():
        LOG.warning("worker still busy at shutdown; exiting anyway (state files are atomic)")
    service.close()
    notifier.close()
    LOG.info("stopped", extra={"crashed": lifecycle.crashed})
    logging.shutdown()
    return EXIT_FAILURE if lifecycle.crashed else EXIT_OK


def _run_worker(service: Service, lifecycle: Lifecycle) -> None:
    try:
        service.run(lifecycle)
    except Exception:
        # The loops catch their own errors; reaching this is a bug - stop instead of hanging.
        LOG.exception("service loop crashed")
        lifecycle.crashed = True
        lifecycle.request_stop()


@contextlib.contextmanager
def closing_on_error(closer: Callable[[], None]) -> Iterator[None]:
    """Run ``closer`` if the block raises (half-built services must release their port)."""
    try:
        yield
    except BaseException:
        closer()
        raise
