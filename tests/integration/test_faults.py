"""Fault injection on the 3-host sandbox: each fault is one rollout of a broken release (a source
tree built in a tmp dir), and every host's end state is asserted: where `current` points, both
services active, both /health 200 (asked from the host), shared/ intact, the release's status and
what the run (and, when written, the report) says.

Every test starts from a known good fleet (all hosts on one good, healthy release): checked in a
second; only when a test left something else is the baseline deployed again.
Times to detect and recover go to build/fault-timings.jsonl.
"""

from __future__ import annotations

import time

import pytest
import yaml

from tests.integration.conftest import REPO_ROOT, run_playbook
from tests.integration.faults import (
    add_payload,
    break_import,
    break_smoke_tests,
    code_change,
    crash_loop,
    deploy,
    disk_nearly_full,
    ensure_good_fleet,
    has_app_tmpfs,
    inventory_hosts,
    make_tree,
    new_release_on,
    recap,
    release_id_of,
    report,
    states,
    stream_playbook,
    unreachable,
    wait_healthy,
)
from tests.integration.faults.timing import fault_timing, record, run_span

pytestmark = pytest.mark.sandbox

KEEP = 5  # roles/virtuoso_release/defaults/main.yml: virtuoso_release_keep
_KEEPALIVE = yaml.safe_load((REPO_ROOT / "playbooks/group_vars/all/connection.yml").read_text())
# Seconds of silence after which the controller's SSH drops a host.
KEEPALIVE_BUDGET_S = _KEEPALIVE["mitogen_ssh_keepalive_interval"] * _KEEPALIVE["mitogen_ssh_keepalive_count"]


@pytest.fixture(scope="module")
def hosts(sandbox_hosts):
    assert len(sandbox_hosts) == 3, "the fault suite is written for the 3-host sandbox (SANDBOX_HOSTS=3)"
    return inventory_hosts()


@pytest.fixture(scope="module")
def baseline_tree(tmp_path_factory):
    return make_tree(tmp_path_factory.mktemp("baseline"), unique=False)


@pytest.fixture
def good(hosts, baseline_tree):
    """The state before the fault: every host on one good, healthy release."""
    return ensure_good_fleet(hosts, baseline_tree)


def assert_untouched(before, after, host):
    """``host`` was not changed at all: same current, same releases, same history, healthy."""
    assert after.current == before.current, after.summary()
    assert after.releases == before.releases, after.summary()
    assert after.raw["history"] == before.raw["history"], after.summary()
    assert after.healthy, after.summary()
    assert after.raw["sentinel"] == before.raw["sentinel"]


def assert_on_old_release(before, after, release):
    """The host runs what it ran before, healthy, with shared/ intact; ``release`` never runs."""
    assert after.current == before.current, after.summary()
    assert after.current != release
    assert after.healthy, after.summary()
    assert after.raw["sentinel"] == before.raw["sentinel"], "shared/ state was lost"
    assert not after.raw["leftovers"], after.summary()
    # Old releases may only go by the retention policy of `clean` (failed and unfinished ones first,
    # then the oldest beyond virtuoso_release_keep=5, never the current or the previous good one).
    kept = sorted(set(after.releases) - {release})
    assert before.current in after.releases
    lost = [
        rid
        for rid in sorted(set(before.releases) - set(after.releases) - {release})
        if before.status(rid) not in ("failed", "unfinished")
    ]
    survivors = [rid for rid in after.releases if after.status(rid) not in ("failed", "unfinished")]
    assert not lost or (len(survivors) >= KEEP and max(lost) < min(survivors)), (
        f"lost {lost}: {after.summary()}"
    )
    for rid in kept:
        assert rid not in before.releases or after.status(rid) == before.status(rid), after.summary()


def assert_report(release, statuses):
    """If the report plugin wrote reports/<release>.json, it agrees with the hosts' end states."""
    found = report(release)
    if found is None:
        return
    assert found["status"] == "failed"
    for host, status in statuses.items():
        assert found["hosts"][host]["status"] == status, (host, found["hosts"][host])


def timed_deploy(tree, **kwargs):
    """Run deploy.yml from ``tree``; (the run, its wall time in seconds)."""
    started = time.monotonic()
    run = deploy(tree, **kwargs)
    return run, time.monotonic() - started


def failed_on_the_canary(hosts, good, tree):
    """Deploy ``tree``, which must fail on the canary: the canary ends on its old release, healthy,
    with the new release marked failed; no other host is touched. (run, wall, release, end states)."""
    canary, *rest = hosts
    run, wall = timed_deploy(tree)
    assert run.returncode != 0
    release = release_id_of(run)
    after = states(hosts)
    state = after[canary.name]
    assert_on_old_release(good[canary.name], state, release)
    assert state.status(release) == "failed", state.summary()
    for host in rest:
        assert_untouched(good[host.name], after[host.name], host)
    return run, wall, release, after


def stopped_before_switch(hosts, good, tmp_path, mutate, failing_task, *, baseline_tree):
    canary, *rest = hosts
    tree = make_tree(tmp_path / "tree", mutate, source=baseline_tree)
    run, wall, release, after = failed_on_the_canary(hosts, good, tree)
    events = after[canary.name].events(release)
    assert "activated" not in events, "the canary was switched to the broken release"
    for host in rest:
        assert run.stats[host.name]["changed"] == 0
    messages = " ".join(run.messages())
    assert f"failed on {canary.name} at '{failing_task}'" in messages, messages
    assert "not switched; current is unchanged" in messages
    assert_report(release, {canary.name: "failed", **{h.name: "not_started" for h in rest}})
    return run, wall


def test_import_error_stops_at_the_canary_smoke_gate(hosts, good, tmp_path, baseline_tree):
    run, wall = stopped_before_switch(
        hosts,
        good,
        tmp_path,
        break_import,
        "Import every shipped module with the release's interpreter",
        baseline_tree=baseline_tree,
    )
    assert "virtuoso_fault_no_such_module" in " ".join(run.messages()) + str(run.raw)
    record("import_error", wall_s=round(wall, 1), **fault_timing(run, hosts[0].name, switched=False))


def test_failing_smoke_tests_stop_at_the_canary(hosts, good, tmp_path, baseline_tree):
    run, wall = stopped_before_switch(
        hosts, good, tmp_path, break_smoke_tests, "Run the smoke test suite", baseline_tree=baseline_tree
    )
    record("smoke_tests_fail", wall_s=round(wall, 1), **fault_timing(run, hosts[0].name, switched=False))


def test_crash_loop_after_the_switch_rolls_the_canary_back(hosts, good, tmp_path, baseline_tree):
    canary, *rest = hosts
    tree = make_tree(tmp_path / "tree", crash_loop(), source=baseline_tree)
    run, wall, release, after = failed_on_the_canary(hosts, good, tree)
    events = after[canary.name].events(release)
    assert "activated" in events and "rolled_back_from" in events and "failed" in events, events
    messages = " ".join(run.messages())
    assert f"failed on {canary.name}" in messages
    assert f"rolled back from {release} to {good[canary.name].current}" in messages, messages
    assert "crash loop" in messages or "left the active state" in messages or "restarted within" in messages
    assert_report(release, {canary.name: "rolled_back", **{h.name: "not_started" for h in rest}})
    record("crash_loop", wall_s=round(wall, 1), **fault_timing(run, canary.name, switched=True))


def test_no_space_left_during_the_copy_fails_before_the_switch(hosts, good, tmp_path, baseline_tree):
    canary, *rest = hosts
    if not has_app_tmpfs(canary):
        pytest.fail(
            "the sandbox hosts have no app tmpfs (make sandbox-up gives them one): "
            "run `make sandbox-down && make sandbox-up`"
        )
    tree = make_tree(tmp_path / "tree", add_payload(8), source=baseline_tree)
    with disk_nearly_full(canary, leave_mb=2) as free_mb:
        assert free_mb <= 3
        # With the default threshold the pre-flight refuses before anything is changed ...
        preflight = run_playbook("preflight.yml")
        assert preflight.returncode != 0
        assert any(
            f"pre-flight: {canary.name} has" in msg and "MiB free" in msg for msg in preflight.messages()
        )
        # ... and when the space goes while the release is copied, the copy fails before the switch.
        run, wall = timed_deploy(tree, extra_vars={"virtuoso_preflight_min_free_mb": 0})
        assert run.returncode != 0
        release = release_id_of(run)
        state = canary.state()
        # While the disk is full: current untouched, services running, the partial release gone.
        # (/health of the monitor answers 503 meanwhile: it reports the full disk, as it should.)
        assert state.current == good[canary.name].current, state.summary()
        assert set(state.raw["services"].values()) == {"active"}, state.summary()
        assert release not in state.releases, f"the partial release was left behind: {state.summary()}"
        assert not state.raw["leftovers"], state.summary()
        assert state.raw["sentinel"] == good[canary.name].raw["sentinel"]
    wait_healthy(canary)
    after = states(hosts)

    assert_on_old_release(good[canary.name], after[canary.name], release)
    for host in rest:
        assert_untouched(good[host.name], after[host.name], host)
    messages = " ".join(run.messages())
    assert "No space left" in messages or "no space" in messages.lower(), messages
    assert "removed (partial copy)" in messages
    assert_report(release, {canary.name: "failed", **{h.name: "not_started" for h in rest}})
    record("disk_full", wall_s=round(wall, 1), **fault_timing(run, canary.name, switched=False))


def test_unreachable_host_stops_the_run_in_pre_flight(hosts, good, tmp_path, baseline_tree):
    victim = hosts[-1]
    tree = make_tree(tmp_path / "tree", code_change, source=baseline_tree)
    with unreachable(victim) as cut:
        cut()
        run, wall = timed_deploy(tree, extra_vars={"virtuoso_preflight_connect_timeout": 5})
        assert run.returncode != 0
        messages = " ".join(run.messages())
        assert f"pre-flight: {victim.name} (linuxuser@127.0.0.1:{victim.port}) is unreachable" in messages, (
            messages
        )
        assert "Nothing was changed on any host" in messages
        assert f'"virtuoso_rollout_skip_hosts": ["{victim.name}"]' in messages
        # Excluding it explicitly lets the pre-flight pass for the others.
        skipped = run_playbook(
            "preflight.yml",
            extra_vars={
                "virtuoso_rollout_skip_hosts": [victim.name],
                "virtuoso_preflight_connect_timeout": 5,
            },
        )
        assert skipped.returncode == 0, skipped.messages()
        assert victim.name not in skipped.stats
    after = states(hosts)
    for host in hosts:
        assert_untouched(good[host.name], after[host.name], host)
    record("preflight_unreachable", wall_s=round(wall, 1))


def test_fleet_rollback_puts_every_switched_host_back(hosts, good, tmp_path, baseline_tree):
    canary, second, last = hosts
    tree = make_tree(tmp_path / "tree", crash_loop(only_host=second.name), source=baseline_tree)
    run, wall = timed_deploy(tree, extra_vars={"virtuoso_rollout_fleet_rollback": True})
    assert run.returncode != 0
    release = release_id_of(run)
    after = states(hosts)

    # The canary finished (switched, verified) before the second batch failed: put back too.
    assert_on_old_release(good[canary.name], after[canary.name], release)
    assert "good" in after[canary.name].events(release)
    assert "rolled_back_from" in after[canary.name].events(release)
    # The failed host rolled itself back and marked the release failed.
    assert_on_old_release(good[second.name], after[second.name], release)
    assert after[second.name].status(release) == "failed"
    # The last batch never started.
    assert_untouched(good[last.name], after[last.name], last)
    messages = " ".join(run.messages())
    assert f"failed on {second.name}" in messages
    assert f"fleet rollback: {canary.name} -> {good[canary.name].current}" in messages, messages
    assert_report(release, {second.name: "rolled_back", last.name: "not_started"})
    record("fleet_rollback", wall_s=round(wall, 1), **fault_timing(run, second.name, switched=True))


def test_host_unreachable_mid_rollout_is_named_and_the_rest_stays_consistent(
    hosts, good, tmp_path, baseline_tree
):
    canary, victim, last = hosts
    tree = make_tree(tmp_path / "tree", code_change, source=baseline_tree)
    batches = 0
    cut_at = named_at = None

    with unreachable(victim) as cut:

        def on_line(line, _lines):
            nonlocal batches, cut_at, named_at
            if line.startswith("PLAY [Roll the release out]"):
                batches += 1
                if batches == 2:  # the canary is done; the second batch (the victim) starts now
                    cut()
                    cut_at = time.monotonic()
            if named_at is None and f"[{victim.name}]: UNREACHABLE!" in line:
                named_at = time.monotonic()
            return False

        started = time.monotonic()
        returncode, lines = stream_playbook(
            "deploy.yml", extra_vars={"virtuoso_release_source_dir": str(tree)}, on_line=on_line, timeout=1200
        )
        wall = time.monotonic() - started
    assert returncode not in (0, None)
    assert batches == 2, "the rollout must stop after the victim's batch"
    text = "\n".join(lines)
    assert named_at is not None and cut_at is not None, text[-3000:]
    # Not a timing goal: a margin of 4x the keepalive budget (30 s) still catches mitogen's own
    # default of 300 s, which left a cut host unnamed for five minutes.
    detect_s = named_at - cut_at
    assert detect_s < KEEPALIVE_BUDGET_S * 4, f"the cut host was named {detect_s:.0f} s after the cut"
    assert recap(lines)[victim.name]["unreachable"] >= 1
    after = states(hosts)
    new = new_release_on(after[canary.name], good[canary.name])
    assert len(new) == 1, after[canary.name].summary()
    release = new[0]
    # Canary: on the new release, verified. Victim: still on its old release, healthy. Last: untouched.
    assert after[canary.name].current == release and after[canary.name].status(release) == "good"
    assert after[canary.name].healthy
    assert_on_old_release(good[victim.name], after[victim.name], release)
    assert_untouched(good[last.name], after[last.name], last)
    assert_report(release, {canary.name: "success", victim.name: "failed", last.name: "not_started"})
    found = report(release)
    if found is not None:
        failure = found["hosts"][victim.name]["failure"]
        assert failure["unreachable"], failure

    # Once the host is back, the same rollout completes on every host.
    rerun, rerun_wall = timed_deploy(tree)
    assert rerun.returncode == 0, rerun.messages()
    assert release_id_of(rerun) == release
    final = states(hosts)
    for host in hosts:
        assert final[host.name].current == release and final[host.name].healthy, final[host.name].summary()
    record(
        "unreachable_mid_rollout",
        wall_s=round(wall, 1),
        detect_s=round(detect_s, 1),
        rerun_s=round(rerun_wall, 1),
    )


def test_killed_mid_copy_then_a_rerun_completes(hosts, good, tmp_path, baseline_tree):
    canary, *rest = hosts
    tree = make_tree(tmp_path / "tree", code_change, source=baseline_tree)

    def on_line(line, _lines):
        # The code is unpacked into the (unfinished) release; the release is not complete yet.
        return line.startswith("TASK [virtuoso_release : Link the release to its venv]")

    returncode, lines = stream_playbook(
        "deploy.yml", extra_vars={"virtuoso_release_source_dir": str(tree)}, on_line=on_line
    )
    assert returncode is None, "the playbook was not killed mid-copy:\n" + "\n".join(lines[-40:])
    time.sleep(2)  # the module that was running on the host finishes or dies with its connection
    after = states(hosts)
    half = new_release_on(after[canary.name], good[canary.name])
    assert len(half) == 1, after[canary.name].summary()
    half_release = half[0]
    assert after[canary.name].status(half_release) == "unfinished"
    assert after[canary.name].current == good[canary.name].current
    assert after[canary.name].healthy
    for host in rest:
        assert_untouched(good[host.name], after[host.name], host)

    rerun, wall = timed_deploy(tree)
    assert rerun.returncode == 0, rerun.messages() or rerun.stderr[-3000:]
    release = release_id_of(rerun)
    assert release != half_release, "the half-copied release must never become current"
    final = states(hosts)
    for host in hosts:
        state = final[host.name]
        assert state.current == release and state.status(release) == "good", state.summary()
        assert state.healthy, state.summary()
        assert all(state.status(rid) != "unfinished" for rid in state.releases), state.summary()
        assert not state.raw["leftovers"]
        assert half_release not in state.events(half_release) or "activated" not in state.events(half_release)
        assert state.raw["sentinel"] == good[host.name].raw["sentinel"]
    assert half_release not in final[canary.name].releases, "the half-copied release was not cleaned"
    record("killed_mid_copy", rerun_s=round(wall, 1), rerun_span_s=run_span(rerun))
