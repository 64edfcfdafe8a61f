"""Fault-injection helpers for the sandbox tests: host state, fault source trees, network cuts.

Host state is read with `podman exec` (no SSH, about a second for all hosts) by a small Python
script run on each host: where `current` points, the releases and their markers, both services,
both /health endpoints (requested from the host itself), a sentinel file in shared/ and free space.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.integration.conftest import (
    REPO_ROOT,
    SANDBOX_INVENTORY,
    VENV_BIN,
    ansible_env,
    inventory_listing,
    run_playbook,
)

APP_ROOT = "/home/linuxuser/trading/Virtuoso_ccxt"
UNITS = ("virtuoso-trading.service", "virtuoso-health-monitor.service")
PORTS = (8787, 8788)
SENTINEL = "shared/fault-sentinel.txt"
SENTINEL_TEXT = "shared state written before the fault\n"
FILLER = "/home/linuxuser/trading/fault-filler"
IPTABLES_COMMENT = "virtuoso-fault-unreachable"
SANDBOX_DIR = REPO_ROOT / ".sandbox"

STATE_SCRIPT = r"""
import json, os, shutil, subprocess, sys, urllib.error, urllib.request
root, sentinel = sys.argv[1], sys.argv[2]
units, ports = sys.argv[3].split(","), [int(p) for p in sys.argv[4].split(",")]
out = {"current": None, "releases": {}, "leftovers": [], "services": {}, "health": {}}
link = os.path.join(root, "current")
if os.path.islink(link):
    out["current"] = os.path.basename(os.readlink(link))
releases = os.path.join(root, "releases")
for name in sorted(os.listdir(releases)) if os.path.isdir(releases) else []:
    path = os.path.join(releases, name)
    if name.startswith((".tmp-", ".trash-")):
        out["leftovers"].append(name)
        continue
    out["releases"][name] = {
        "unfinished": os.path.exists(os.path.join(path, ".virtuoso-unfinished")),
        "failed": os.path.exists(os.path.join(path, ".virtuoso-failed")),
        "files": sum(len(files) for _, _, files in os.walk(path)),
    }
for unit in units:
    done = subprocess.run(["systemctl", "is-active", unit], capture_output=True, text=True)
    out["services"][unit] = done.stdout.strip()
for port in ports:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=3) as answer:
            out["health"][str(port)] = answer.status
    except urllib.error.HTTPError as exc:
        out["health"][str(port)] = exc.code
    except OSError:
        out["health"][str(port)] = -1
try:
    with open(os.path.join(root, sentinel)) as handle:
        out["sentinel"] = handle.read()
except OSError:
    out["sentinel"] = None
history = os.path.join(root, ".virtuoso-history.jsonl")
out["history"] = [json.loads(line) for line in open(history)] if os.path.exists(history) else []
base = root
while not os.path.exists(base):
    base = os.path.dirname(base)
out["free_mb"] = shutil.disk_usage(base).free // 1048576
print(json.dumps(out))
"""


def podman_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        CONTAINERS_CONF=str(SANDBOX_DIR / "containers.conf"),
        CONTAINERS_STORAGE_CONF=str(SANDBOX_DIR / "storage.conf"),
    )
    return env


def podman(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", *args], env=podman_env(), capture_output=True, text=True, check=check, timeout=timeout
    )


@dataclass(frozen=True)
class Host:
    name: str
    container: str
    port: int

    def exec(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return podman("exec", self.container, *argv, check=check)

    def state(self) -> HostState:
        done = self.exec(
            "python3", "-c", STATE_SCRIPT, APP_ROOT, SENTINEL, ",".join(UNITS), ",".join(map(str, PORTS))
        )
        return HostState(self.name, json.loads(done.stdout))


@dataclass
class HostState:
    host: str
    raw: dict[str, Any]

    @property
    def current(self) -> str | None:
        return self.raw["current"]

    @property
    def releases(self) -> dict[str, dict[str, Any]]:
        return self.raw["releases"]

    @property
    def healthy(self) -> bool:
        """Both services active and both /health endpoints answer 200."""
        return set(self.raw["services"].values()) == {"active"} and set(self.raw["health"].values()) == {200}

    def status(self, release: str) -> str:
        """absent / unfinished / failed / good / unverified, as virtuoso_release decides it."""
        info = self.releases.get(release)
        if info is None:
            return "absent"
        if info["failed"]:
            return "failed"
        if info["unfinished"]:
            return "unfinished"
        good = any(ev["release"] == release and ev["event"] == "good" for ev in self.raw["history"])
        return "good" if good else "unverified"

    def events(self, release: str) -> list[str]:
        return [ev["event"] for ev in self.raw["history"] if ev["release"] == release]

    def summary(self) -> str:
        return (
            f"{self.host}: current={self.current} services={self.raw['services']} "
            f"health={self.raw['health']} "
            f"releases={ {rid: self.status(rid) for rid in self.releases} } leftovers={self.raw['leftovers']}"
        )


def inventory_hosts() -> list[Host]:
    """The hosts of the sandbox inventory (sorted by name) with their container and SSH port."""
    data = inventory_listing()
    hostvars = data["_meta"]["hostvars"]
    return [
        Host(name, hostvars[name]["virtuoso_sandbox_container"], int(hostvars[name]["ansible_port"]))
        for name in sorted(data["virtuoso"]["hosts"])
    ]


def states(hosts: list[Host]) -> dict[str, HostState]:
    return {host.name: host.state() for host in hosts}


def wait_healthy(host: Host, timeout: float = 60) -> HostState:
    """The host's state once it is healthy (or the last state after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    state = host.state()
    while not state.healthy and time.monotonic() < deadline:
        time.sleep(2)
        state = host.state()
    return state


# --- source trees ----------------------------------------------------------------------------


def make_tree(
    dest: Path,
    mutate: Callable[[Path], None] | None = None,
    *,
    unique: bool = True,
    source: Path = REPO_ROOT,
) -> Path:
    """Copy src/ tests/ requirements/ of ``source`` to ``dest``, then apply ``mutate``.

    ``unique`` adds a nonce file, so the tree is a new release (a new content hash) every time.
    Tests pass their module's baseline copy as ``source``: others may be editing the checkout.
    """
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", ".hypothesis")
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("src", "tests", "requirements"):
        shutil.copytree(source / name, dest / name, ignore=ignore)
    if unique:
        (dest / "tests" / "fault-nonce.txt").write_text(f"{uuid.uuid4()}\n")
    if mutate:
        mutate(dest)
    return dest


def break_import(tree: Path) -> None:
    """The volume indicator module imports a module that does not exist."""
    path = tree / "src" / "indicators" / "volume_indicators.py"
    path.write_text(
        path.read_text() + "\nimport virtuoso_fault_no_such_module  # noqa: E402,F401 injected fault\n"
    )


def break_smoke_tests(tree: Path) -> None:
    """Every module imports, but the on-host smoke test suite has a failing test."""
    (tree / "tests" / "validation" / "test_fault_injected.py").write_text(
        "def test_injected_fault():\n"
        "    assert 1 / 1 == 2, 'injected fault: this release fails its smoke tests'\n"
    )


def crash_loop(only_host: str | None = None, after_seconds: float = 2.0) -> Callable[[Path], None]:
    """The trading service exits ``after_seconds`` after its loop starts (on ``only_host`` or everywhere)."""

    def mutate(tree: Path) -> None:
        path = tree / "src" / "services" / "trading.py"
        text = path.read_text()
        anchor = '        """Cycle every ``interval_seconds`` (measured start to start) until stopping."""\n'
        assert anchor in text, "trading.py changed: update the crash-loop fault"
        condition = f"__import__('socket').gethostname() == {only_host!r}" if only_host else "True"
        inject = (
            f"        if {condition}:  # injected fault: crash a few seconds after start\n"
            f"            __import__('threading').Timer({after_seconds}, __import__('os')._exit, (3,))"
            ".start()\n"
        )
        path.write_text(text.replace(anchor, anchor + inject))

    return mutate


def add_payload(size_mb: int, name: str = "fault_payload.bin") -> Callable[[Path], None]:
    """Add an incompressible file, so copying the release needs that much space and time."""

    def mutate(tree: Path) -> None:
        (tree / "src" / name).write_bytes(os.urandom(size_mb * 1048576))

    return mutate


def code_change(tree: Path) -> None:
    """A harmless code-only change (the lock file and so the venv stay the same)."""
    path = tree / "src" / "services" / "common.py"
    path.write_text(path.read_text() + "\n# code-only change for a new release\n")


# --- running the rollout -------------------------------------------------------------------


def deploy(tree: Path | None = None, *args: str, extra_vars: dict[str, Any] | None = None, **kw: Any):
    """Run deploy.yml (optionally from a source tree) with the json callback; returns a PlaybookRun."""
    extra = dict(extra_vars or {})
    if tree is not None:
        extra["virtuoso_release_source_dir"] = str(tree)
    return run_playbook("deploy.yml", *args, extra_vars=extra or None, **kw)


def stream_playbook(
    playbook: str,
    *args: str,
    extra_vars: dict[str, Any] | None = None,
    on_line: Callable[[str, list[str]], bool] | None = None,
    timeout: float = 900,
) -> tuple[int | None, list[str]]:
    """Run a playbook with the default (line) callback, calling ``on_line(line, lines_so_far)``.

    When ``on_line`` returns True the whole process group is killed with SIGKILL (as an operator's
    kill -9 or a lost controller would) and the return code is None.
    """
    command = [
        str(VENV_BIN / "ansible-playbook"),
        "-i",
        str(SANDBOX_INVENTORY),
        f"playbooks/{playbook}",
        *args,
    ]
    if extra_vars:
        command += ["-e", json.dumps(extra_vars)]
    # Ansible's display does not flush: without this, lines arrive in 8 KiB chunks, long after the fact.
    env = ansible_env(
        ANSIBLE_STDOUT_CALLBACK="default", ANSIBLE_CALLBACKS_ENABLED="virtuoso_report", PYTHONUNBUFFERED="1"
    )
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    with subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if on_line is not None and on_line(lines[-1], lines):
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
                return None, lines
            if time.monotonic() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                raise TimeoutError(f"{playbook} ran longer than {timeout}s")
        return proc.wait(timeout=60), lines


# --- faults on the hosts --------------------------------------------------------------------


@contextlib.contextmanager
def unreachable(host: Host) -> Iterator[Callable[[], None]]:
    """Yield a function that cuts the controller's SSH to ``host`` (existing connections too).

    The sandbox forwards 127.0.0.1:<port> to the container with DNAT, so the rule matches the
    original destination port in conntrack and answers with a TCP reset. Always removed on exit.
    """
    rule = [
        "OUTPUT", "-p", "tcp", "-m", "conntrack",
        "--ctorigdst", "127.0.0.1", "--ctorigdstport", str(host.port),
        "-m", "comment", "--comment", IPTABLES_COMMENT, "-j", "REJECT", "--reject-with", "tcp-reset",
    ]  # fmt: skip

    def cut() -> None:
        subprocess.run(["iptables", "-I", *rule], check=True)

    try:
        yield cut
    finally:
        while subprocess.run(["iptables", "-D", *rule], capture_output=True, check=False).returncode == 0:
            pass


def remove_network_cuts() -> None:
    """Remove every cut a killed test run may have left (matched by the rule's comment)."""
    done = subprocess.run(["iptables", "-S", "OUTPUT"], capture_output=True, text=True, check=False)
    for line in done.stdout.splitlines():
        if IPTABLES_COMMENT in line and line.startswith("-A "):
            subprocess.run(["iptables", "-D", *line.split()[1:]], check=False)


@contextlib.contextmanager
def disk_nearly_full(host: Host, leave_mb: int = 2) -> Iterator[int]:
    """Fill the app file system of ``host`` (a tmpfs, SANDBOX_APP_TMPFS) until ``leave_mb`` MiB are free."""
    free = host.state().raw["free_mb"]
    size = max(free - leave_mb, 0)
    host.exec("fallocate", "-l", f"{size}M", FILLER)
    try:
        yield host.state().raw["free_mb"]
    finally:
        host.exec("rm", "-f", FILLER, check=False)


def has_app_tmpfs(host: Host) -> bool:
    done = host.exec("findmnt", "-n", "-o", "FSTYPE", "/home/linuxuser/trading", check=False)
    return done.stdout.strip() == "tmpfs"


def plant_sentinel(hosts: list[Host]) -> None:
    for host in hosts:
        host.exec(
            "sh", "-c", f"test -d {APP_ROOT}/shared && printf %s '{SENTINEL_TEXT}' > {APP_ROOT}/{SENTINEL}"
        )


# --- the known good state every fault starts from ------------------------------------------


def fleet_is_good(hosts: list[Host]) -> tuple[bool, dict[str, HostState]]:
    """Every host on the same finished, good release, both services active and /health 200."""
    now = states(hosts)
    currents = {state.current for state in now.values()}
    good = (
        len(currents) == 1
        and None not in currents
        and all(state.status(state.current) == "good" and state.healthy for state in now.values())
        and all(state.raw["sentinel"] == SENTINEL_TEXT for state in now.values())
        and all(not state.raw["leftovers"] for state in now.values())
    )
    return good, now


def ensure_good_fleet(hosts: list[Host], baseline_tree: Path) -> dict[str, HostState]:
    """Bring every host to a known good state (deploying ``baseline_tree`` only if needed)."""
    remove_network_cuts()
    for host in hosts:
        host.exec("rm", "-f", FILLER, check=False)
    good, now = fleet_is_good(hosts)
    if good:
        return now
    run = deploy(baseline_tree, extra_vars={"virtuoso_rollout_serial": ["100%"]})
    assert run.returncode == 0, f"could not restore a good fleet: {run.messages() or run.stderr[-2000:]}"
    plant_sentinel(hosts)
    good, now = fleet_is_good(hosts)
    assert good, "\n".join(state.summary() for state in now.values())
    return now


def report(release_id: str | None) -> dict[str, Any] | None:
    """The JSON report of a run (reports/<release_id>.json), or None if the plugin wrote none."""
    if not release_id:
        return None
    path = REPO_ROOT / "reports" / f"{release_id}.json"
    return json.loads(path.read_text()) if path.exists() else None


def release_id_of(run) -> str | None:
    """The release id a deploy run chose (from the controller's set_fact result, run once)."""
    results = run.task_results("Choose the release id for every host and batch of this run")
    for result in results.values():
        release = result.get("ansible_facts", {}).get("virtuoso_release_id")
        if release:
            return release
    return None


def new_release_on(state: HostState, before: HostState) -> list[str]:
    return sorted(set(state.releases) - set(before.releases))


RECAP_RE = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)")


def recap(lines: list[str]) -> dict[str, dict[str, int]]:
    """PLAY RECAP of a default-callback run: host -> {ok, changed, unreachable, failed}."""
    out = {}
    for line in lines:
        match = RECAP_RE.match(line)
        if match:
            host, ok, changed, unreach, failed = match.groups()
            out[host] = {
                "ok": int(ok),
                "changed": int(changed),
                "unreachable": int(unreach),
                "failed": int(failed),
            }
    return out
