"""Deploy timings on one sandbox host, measured in one run and printed beside their goals.

    cold deploy of a fresh host   (goal <= 90 s)  the host is re-created from the image first
    no-op re-run, changed=0       (goal <= 15 s)
    code-only redeploy            (goal <= 30 s)  a copy of the source tree with one edited module
    rollback                      (goal <= 10 s)

Needs the sandbox (make sandbox-up) and re-creates its last host.
Run: .venv/bin/python bench/bench_deploy.py
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.integration.conftest import SANDBOX_INVENTORY, VENV_BIN, ansible_env  # noqa: E402
from tests.integration.faults import Host, code_change, inventory_hosts, make_tree, podman, podman_env  # noqa: E402

RECAP = re.compile(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE)


def env() -> dict[str, str]:
    """The project's ansible configuration with the default (text) output, whose recap is parsed."""
    return ansible_env(ANSIBLE_STDOUT_CALLBACK="ansible.builtin.default")


def recreate_host(host: Host) -> None:
    """Throw the host's container away and start a fresh one from the image."""
    podman("rm", "-f", "-t", "3", host.container)
    sandbox_env = {**env(), **podman_env()}
    subprocess.run(["bash", "scripts/sandbox.sh", "up"], cwd=REPO_ROOT, env=sandbox_env, check=True)


def timed_playbook(playbook: str, host: str, *extra: str) -> tuple[float, int]:
    """Run a playbook limited to one host; return (seconds, changed count). Fails loudly."""
    started = time.perf_counter()
    run = subprocess.run(
        [
            str(VENV_BIN / "ansible-playbook"),
            "-i",
            str(SANDBOX_INVENTORY),
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


def main() -> None:
    target = inventory_hosts()[-1]
    host = target.name
    print(f"host: {host} (re-created from the image)")
    recreate_host(target)
    rows = []
    seconds, changed = timed_playbook("deploy.yml", host)
    rows.append(("cold deploy of a fresh host", seconds, 90.0, f"changed={changed}"))
    seconds, changed = timed_playbook("deploy.yml", host)
    rows.append(("no-op re-run", seconds, 15.0, f"changed={changed}"))
    with tempfile.TemporaryDirectory() as tmp:
        tree = make_tree(Path(tmp) / "tree", code_change)
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
