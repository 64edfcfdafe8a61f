"""Plain deploys on the 3-host sandbox: converge, idempotent re-run, --check, code-only change +
rollback, and a rollback that has nothing to roll back to.

State is read from each host itself (podman exec: `current`, markers, systemctl is-active, /health
requested from the host). Tests share the module's first deploy and each leaves every host on the
release it started from.
"""

from __future__ import annotations

import pytest

from tests.integration.conftest import run_playbook
from tests.integration.faults import (
    code_change,
    deploy,
    inventory_hosts,
    make_tree,
    plant_sentinel,
    release_id_of,
    report,
    states,
)

pytestmark = pytest.mark.sandbox

ONE_BATCH = {"virtuoso_rollout_serial": ["100%"]}


@pytest.fixture(scope="module")
def hosts(sandbox_hosts_checked):
    return inventory_hosts()


@pytest.fixture(scope="module")
def sandbox_hosts_checked(sandbox_hosts):
    assert len(sandbox_hosts) >= 2, "the rollout tests need at least 2 sandbox hosts (SANDBOX_HOSTS=3)"
    return sandbox_hosts


@pytest.fixture(scope="module")
def baseline_tree(tmp_path_factory):
    """The repository's release content, copied once (others may edit the checkout meanwhile)."""
    return make_tree(tmp_path_factory.mktemp("baseline"), unique=False)


@pytest.fixture(scope="module")
def first_deploy(hosts, baseline_tree):
    run = deploy(baseline_tree)
    assert run.returncode == 0, run.messages() or run.stderr[-3000:]
    plant_sentinel(hosts)
    return run


def test_deploy_converges_on_every_host(first_deploy, hosts):
    release = release_id_of(first_deploy)
    assert release
    now = states(hosts)
    for host in hosts:
        state = now[host.name]
        assert state.current == release, state.summary()
        assert state.status(release) == "good", state.summary()
        assert state.raw["services"] == {
            "virtuoso-trading.service": "active",
            "virtuoso-health-monitor.service": "active",
        }, state.summary()
        assert state.raw["health"] == {"8787": 200, "8788": 200}, state.summary()
        assert first_deploy.stats[host.name]["failures"] == 0
        assert first_deploy.stats[host.name]["unreachable"] == 0
    found = report(release)
    if found is not None:
        assert found["status"] == "success"
        for host in hosts:
            assert found["hosts"][host.name]["status"] == "success"
            assert found["hosts"][host.name]["current_release"] == release


def test_rerun_changes_nothing(first_deploy, hosts, baseline_tree):
    # One batch: idempotence does not depend on the batch sizes, and it saves two batches' time.
    rerun = deploy(baseline_tree, extra_vars=ONE_BATCH)
    assert rerun.returncode == 0, rerun.messages() or rerun.stderr[-3000:]
    assert release_id_of(rerun) == release_id_of(first_deploy)
    for host in hosts:
        assert rerun.stats[host.name]["changed"] == 0, (host.name, rerun.stats[host.name])
        assert rerun.stats[host.name]["failures"] == 0


def test_check_mode_changes_nothing(first_deploy, hosts, tmp_path, baseline_tree):
    before = states(hosts)
    tree = make_tree(tmp_path / "tree", code_change, source=baseline_tree)
    run = deploy(tree, "--check", extra_vars=ONE_BATCH)
    assert run.returncode == 0, run.messages() or run.stderr[-3000:]
    after = states(hosts)
    for host in hosts:
        assert after[host.name].current == before[host.name].current
        assert after[host.name].releases == before[host.name].releases
        assert after[host.name].raw["history"] == before[host.name].raw["history"]
        assert after[host.name].healthy
    # The check run says what a real run would change.
    assert all(run.stats[host.name]["changed"] > 0 for host in hosts)


def test_code_change_makes_a_new_release_and_rollback_restores_the_previous(
    first_deploy, hosts, tmp_path, baseline_tree
):
    before = states(hosts)
    previous = {state.current for state in before.values()}
    assert len(previous) == 1, [state.summary() for state in before.values()]
    previous_release = previous.pop()

    tree = make_tree(tmp_path / "tree", code_change, source=baseline_tree)
    run = deploy(tree)
    assert run.returncode == 0, run.messages() or run.stderr[-3000:]
    release = release_id_of(run)
    assert release and release != previous_release
    now = states(hosts)
    for host in hosts:
        assert now[host.name].current == release, now[host.name].summary()
        assert now[host.name].status(release) == "good"
        assert now[host.name].healthy, now[host.name].summary()
        # A code-only change reuses the venv: the venv was not rebuilt (nothing pip-installed).
        assert (
            run.task_results("Install the pinned packages into the venv")
            .get(host.name, {})
            .get("skipped", True)
        )

    back = run_playbook("rollback.yml")
    assert back.returncode == 0, back.messages() or back.stderr[-3000:]
    now = states(hosts)
    for host in hosts:
        state = now[host.name]
        assert state.current == previous_release, state.summary()
        assert state.healthy, state.summary()
        assert "rolled_back_from" in state.events(release)
        assert state.raw["sentinel"] == before[host.name].raw["sentinel"]


def test_rollback_with_nothing_to_roll_back_to_refuses(first_deploy, hosts):
    before = states(hosts)
    # A host that never had a release: nothing to roll back to anywhere, so no host may be changed.
    run = run_playbook(
        "rollback.yml", extra_vars={"virtuoso_app_root": "/home/linuxuser/trading/never-deployed"}
    )
    assert run.returncode != 0
    messages = " ".join(run.messages())
    assert "rollback refused: nothing to roll back to" in messages, messages
    assert any(host.name in messages for host in hosts)
    assert "No host was changed" in messages
    after = states(hosts)
    for host in hosts:
        assert after[host.name].current == before[host.name].current
        assert after[host.name].raw["history"] == before[host.name].raw["history"]
        assert after[host.name].healthy
