"""Deploy timings on one sandbox host, measured in one run and printed beside their goals.

    cold deploy of a fresh host   (goal <= 90 s)  the host is re-created from the image first
    no-op re-run, changed=0       (goal <= 15 s)
    code-only redeploy            (goal <= 30 s)  a copy of the source tree with one edited module
    rollback                      (goal <= 10 s)

Needs the sandbox (make sandbox-up) and re-creates its last host.
Run: .venv/bin/python bench/bench_deploy.py
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
INVENTORY = REPO_ROOT / "inventory" / "sandbox" / "hosts.yml"
RECAP = re.compile(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE)


def env() -> dict[str, str]:
    """The project's ansible configuration, the venv first on PATH."""
    return {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO_ROOT / "ansible.cfg"),
        "ANSIBLE_FORCE_COLOR": "0",
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
    }


def sandbox_hosts() -> list[str]:
    """Inventory names of the sandbox hosts."""
    listing = subprocess.run(
        [str(VENV_BIN / "ansible-inventory"), "-i", str(INVENTORY), "--list"],
        cwd=REPO_ROOT,
        env=env(),
        capture_output=True,
        text=True,
        check=True,
    )
    return sorted(json.loads(listing.stdout)["virtuoso"]["hosts"])


def recreate_host(host: str) -> None:
    """Throw the host's container away and start a fresh one from the image."""
    index = int(re.sub(r"\D", "", host))
    podman_env = {
        **env(),
        "CONTAINERS_CONF": str(REPO_ROOT / ".sandbox/containers.conf"),
        "CONTAINERS_STORAGE_CONF": str(REPO_ROOT / ".sandbox/storage.conf"),
    }
    subprocess.run(["podman", "rm", "-f", "-t", "3", f"virtuoso-sandbox-{index}"], env=podman_env, check=True)
    subprocess.run(["bash", "scripts/sandbox.sh", "up"], cwd=REPO_ROOT, env=podman_env, check=True)


def timed_playbook(playbook: str, host: str, *extra: str) -> tuple[float, int]:
    """Run a playbook limited to one host; return (seconds, changed count). Fails loudly."""
    started = time.perf_counter()
    run = subprocess.run(
        [
            str(VENV_BIN / "ansible-playbook"),
            "-i",
            str(INVENTORY),
            f"playbooks/{playbook}",
            "--limit",
            host,
            *extra,
        ],
        cwd=REPO_ROOT,
        env=env(),
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if run.returncode != 0:
        sys.exit(f"{playbook} failed on {host}:\n{run.stdout[-3000:]}\n{run.stderr[-2000:]}")
    changed = {m[0]: int(m[1]) for m in RECAP.findall(run.stdout)}
    return elapsed, changed.get(host, -1)


def edited_source_tree(into: Path) -> Path:
    """A copy of the shippable tree with one module edited (a code-only change)."""
    for entry in ("src", "tests", "requirements"):
        shutil.copytree(REPO_ROOT / entry, into / entry, ignore=shutil.ignore_patterns("__pycache__"))
    module = into / "src" / "indicators" / "scoring.py"
    module.write_text(module.read_text() + f"\n# bench edit {time.time_ns()}\n")
    return into


def main() -> None:
    host = sandbox_hosts()[-1]
    print(f"host: {host} (re-created from the image)")
    recreate_host(host)
    rows = []
    seconds, changed = timed_playbook("deploy.yml", host)
    rows.append(("cold deploy of a fresh host", seconds, 90.0, f"changed={changed}"))
    seconds, changed = timed_playbook("deploy.yml", host)
    rows.append(("no-op re-run", seconds, 15.0, f"changed={changed}"))
    with tempfile.TemporaryDirectory() as tmp:
        tree = edited_source_tree(Path(tmp))
        seconds, changed = timed_playbook("deploy.yml", host, "-e", f"virtuoso_release_source_dir={tree}")
    rows.append(("code-only redeploy", seconds, 30.0, f"changed={changed}"))
    seconds, changed = timed_playbook("rollback.yml", host)
    rows.append(("rollback", seconds, 10.0, f"changed={changed}"))
    print(f"{'step':30s} {'seconds':>8s} {'goal':>6s} {'ratio':>6s}  notes")
    for name, secs, goal, notes in rows:
        verdict = "OK" if secs <= goal else "MISS"
        print(f"{name:30s} {secs:8.1f} {goal:6.0f} {secs / goal:6.2f}  {verdict} {notes}")
    # Leave the host on the repository's release, as the other hosts are.
    timed_playbook("deploy.yml", host)


if __name__ == "__main__":
    main()
