"""Harness for the tests of the deployment report (callback_plugins/virtuoso_report.py).

Playbook runs are real ``ansible-playbook`` runs against two inventory hosts that are both this
machine (connection local), with the project's ansible.cfg and only this callback enabled.
"""

from __future__ import annotations

import http.server
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
PLAYBOOKS = HERE / "playbooks"
INVENTORY = HERE / "fixtures" / "hosts.ini"
VENV_BIN = Path(sys.executable).parent
PLUGIN_FILE = REPO_ROOT / "callback_plugins" / "virtuoso_report.py"
OLD_RELEASE = "20260101T000000Z-0ld0ld00"


def load_source(name: str, path: Path) -> ModuleType:
    """Import a Python file that is not part of a package."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look the module up
    spec.loader.exec_module(module)
    return module


def load_plugin() -> ModuleType:
    """The callback plugin as a module."""
    return load_source("virtuoso_report_plugin", PLUGIN_FILE)


@dataclass
class Run:
    """Outcome of one ansible-playbook run and the report files it wrote."""

    returncode: int
    stdout: str
    stderr: str
    report_dir: Path
    report_id: str | None = None

    @property
    def json_path(self) -> Path:
        return self.report_dir / f"{self.report_id}.json"

    @property
    def md_path(self) -> Path:
        return self.report_dir / f"{self.report_id}.md"

    def report(self) -> dict[str, Any]:
        return json.loads(self.json_path.read_text(encoding="utf-8"))

    def markdown(self) -> str:
        return self.md_path.read_text(encoding="utf-8")


def playbook_command(playbook: str, extra_vars: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    """Command and environment to run tests/report/playbooks/<playbook> with only the report callback."""
    env = dict(os.environ)
    env.update(
        ANSIBLE_CONFIG=str(REPO_ROOT / "ansible.cfg"),
        ANSIBLE_CALLBACK_PLUGINS=str(REPO_ROOT / "callback_plugins"),
        ANSIBLE_CALLBACKS_ENABLED="virtuoso_report",
        # Never touch the project's jsonfile fact cache from a test.
        ANSIBLE_CACHE_PLUGIN="memory",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_NOCOLOR="1",
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    extra = {"ansible_python_interpreter": sys.executable, **extra_vars}
    command = [str(VENV_BIN / "ansible-playbook"), "-i", str(INVENTORY), str(PLAYBOOKS / playbook)]
    return [*command, "-e", json.dumps(extra)], env


def run_playbook(
    playbook: str, cwd: Path, extra_vars: dict[str, Any], timeout: float = 120
) -> subprocess.CompletedProcess:
    """Run a test playbook from ``cwd`` and wait for it."""
    command, env = playbook_command(playbook, extra_vars)
    return subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


class BackgroundRun:
    """A test playbook running in the background (output in files, so it can never block on a pipe)."""

    def __init__(self, playbook: str, cwd: Path, extra_vars: dict[str, Any], logs: Path) -> None:
        command, env = playbook_command(playbook, extra_vars)
        logs.mkdir(parents=True, exist_ok=True)
        self.stdout_path, self.stderr_path = logs / "stdout", logs / "stderr"
        with self.stdout_path.open("w") as out, self.stderr_path.open("w") as err:
            self.process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=err, text=True)

    def wait(self, timeout: float = 120) -> subprocess.CompletedProcess:
        """Wait for the run to end."""
        try:
            returncode = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise
        return subprocess.CompletedProcess(
            self.process.args, returncode, self.stdout_path.read_text(), self.stderr_path.read_text()
        )


def install_good_release(root: Path, release_id: str = OLD_RELEASE) -> None:
    """Give ``root`` a finished, current, good release (what a host has before a deploy)."""
    releases = load_source(
        "report_test_virtuoso_releases", REPO_ROOT / "module_utils" / "virtuoso_releases.py"
    )
    root.mkdir(parents=True, exist_ok=True)
    layout = releases.Layout(str(root))
    with releases.exclusive_lock(layout.lock_file):
        for step in ("prepare", "finalize", "switch", "mark_good"):
            getattr(releases.ReleaseManager(layout), step)(release_id)


def write_app_source(root: Path) -> Path:
    """A tiny application tree: a package with a guarded division and a test."""
    files = {
        "src/__init__.py": "",
        "src/calc.py": """
            def safe_divide(a, b):
                return a / b if b else 0.0
            """,
        "tests/test_calc.py": """
            from src.calc import safe_divide


            def test_zero():
                assert safe_divide(1, 0) == 0.0
            """,
    }
    for name, source in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source).lstrip(), encoding="utf-8")
    return root


class HealthHandler(http.server.BaseHTTPRequestHandler):
    """Answers every GET with 200 and a small JSON body, like the services' /health."""

    def do_GET(self) -> None:
        body = b'{"status": "ok"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet."""


@pytest.fixture(scope="session")
def health_url() -> Iterator[str]:
    """URL of a local /health endpoint that answers 200."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HealthHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/health"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def plugin() -> ModuleType:
    """The callback plugin module."""
    return load_plugin()
