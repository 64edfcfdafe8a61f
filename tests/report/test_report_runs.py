"""Real ansible-playbook runs with the virtuoso_report callback: success, failure, silence, plugin error."""

from __future__ import annotations

import datetime
import re
import shlex
from pathlib import Path

import pytest

from tests.report.conftest import (
    INVENTORY,
    OLD_RELEASE,
    BackgroundRun,
    Run,
    install_good_release,
    run_playbook,
    write_app_source,
)

NEW_RELEASE = "20261124T031500Z-ab12cd34"
FAILED_RELEASE = "20261124T041500Z-badbad00"
HOSTS = ["web1", "web2"]
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def parse_utc(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, health_url: str) -> dict[str, Run]:
    """The success and the failure run, started together to keep the suite fast.

    success: a deploy of web1 and web2 run from a fresh directory (so the default report dir).
    failure: a deploy that fails on web1 after its switch (rolled back) and never starts web2.
    """
    success, failure = tmp_path_factory.mktemp("success"), tmp_path_factory.mktemp("failure")
    for base in (success, failure):
        for host in HOSTS:
            install_good_release(base / "app" / host)
    success_vars = {
        "app_root": str(success / "app"),
        "src_dir": str(write_app_source(success / "source")),
        "build_dir": str(success / "build"),
        "release_id": NEW_RELEASE,
        "health_url": health_url,
    }
    report_dir = failure / "out" / "reports"
    failure_vars = {
        "app_root": str(failure / "app"),
        "release_id": FAILED_RELEASE,
        "report_dir": str(report_dir),
    }
    started = {
        "success": BackgroundRun("success.yml", success, success_vars, success / "logs"),
        "failure": BackgroundRun("failure.yml", failure, failure_vars, failure / "logs"),
    }
    done = {name: run.wait() for name, run in started.items()}
    return {
        "success": Run(
            done["success"].returncode,
            done["success"].stdout,
            done["success"].stderr,
            success / "reports",
            NEW_RELEASE,
        ),
        "failure": Run(
            done["failure"].returncode,
            done["failure"].stdout,
            done["failure"].stderr,
            report_dir,
            FAILED_RELEASE,
        ),
    }


@pytest.fixture
def success_run(runs: dict[str, Run]) -> Run:
    run = runs["success"]
    assert run.returncode == 0, run.stdout + run.stderr
    return run


@pytest.fixture
def failure_run(runs: dict[str, Run]) -> Run:
    run = runs["failure"]
    assert run.returncode == 2, run.stdout + run.stderr
    return run


# -- success -----------------------------------------------------------------------------------


def test_success_writes_both_files_atomically(success_run: Run) -> None:
    assert success_run.json_path.is_file()
    assert success_run.md_path.is_file()
    # Nothing but the two reports: the temporary files were renamed.
    assert sorted(p.name for p in success_run.report_dir.iterdir()) == [
        f"{NEW_RELEASE}.json",
        f"{NEW_RELEASE}.md",
    ]
    assert f"virtuoso_report: wrote {success_run.md_path}" in success_run.stderr
    assert "virtuoso_report" not in success_run.stdout


def test_success_run_level_fields(success_run: Run) -> None:
    report = success_run.report()
    assert report["schema"] == 1
    assert report["report_id"] == NEW_RELEASE
    assert report["kind"] == "deploy"
    assert report["status"] == "success"
    assert report["check_mode"] is False
    assert report["playbook"].endswith("tests/report/playbooks/success.yml")
    assert report["inventory"] == [str(INVENTORY)]
    assert report["summary"] == {"success": 2, "failed": 0, "rolled_back": 0, "not_started": 0}
    assert report["errors"] == []
    started, finished = parse_utc(report["started"]), parse_utc(report["finished"])
    assert 0 < report["duration_s"] == pytest.approx((finished - started).total_seconds(), abs=0.01)
    assert list(report["hosts"]) == HOSTS
    assert list(report["controller"]) == ["localhost"]


def test_success_release_files(success_run: Run) -> None:
    release = success_run.report()["release"]
    assert release["id"] == NEW_RELEASE
    assert re.fullmatch(r"[0-9a-f]{64}", release["content_hash"])
    assert release["file_count"] == 3
    assert [f["path"] for f in release["files"]] == ["src/__init__.py", "src/calc.py", "tests/test_calc.py"]
    assert release["total_bytes"] == sum(f["size"] for f in release["files"])
    for entry in release["files"]:
        assert set(entry) == {"path", "size", "sha256", "mode"}
        assert re.fullmatch(r"[0-9a-f]{64}", entry["sha256"])


def test_success_hosts_releases_and_rollback_command(success_run: Run) -> None:
    report = success_run.report()
    for host in HOSTS:
        entry = report["hosts"][host]
        assert entry["status"] == "success"
        assert entry["failure"] is None
        assert entry["previous_release"] == OLD_RELEASE
        assert entry["current_release"] == NEW_RELEASE
        assert entry["rolled_back_to"] is None
        rollback = Path(report["playbook"]).parent / "rollback.yml"
        assert shlex.split(entry["rollback_command"]) == [
            "ansible-playbook",
            "-i",
            str(INVENTORY),
            str(rollback),
            "--limit",
            host,
            "-e",
            f"virtuoso_release_rollback_to={OLD_RELEASE}",
        ]
        assert entry["stats"]["failures"] == 0
        assert entry["stats"]["changed"] >= 3


def test_success_timeline_has_every_step_with_durations(success_run: Run) -> None:
    report = success_run.report()
    for host in HOSTS:
        entry = report["hosts"][host]
        timeline = entry["timeline"]
        assert [step["task"] for step in timeline] == [
            "Create the release directory, marked unfinished",
            "Mark the release finished",
            "Import every shipped module with the release's interpreter",
            "Run the division edge cases",
            "Run the smoke test suite",
            "Switch current to the release",
            "Wait until the /health endpoint answers 200",
            "Mark the release good",
            "Note the switch",
        ]
        assert [step["handler"] for step in timeline] == [False] * 8 + [True]
        starts = [parse_utc(step["start"]) for step in timeline]
        assert starts == sorted(starts)
        for step in timeline:
            assert ISO_UTC.match(step["start"])
            assert 0 < step["duration_s"] < 60
            assert step["status"] == "ok"
            assert step["play"] == "Roll the release out"
            assert step["msg"] is None
        assert [s["changed"] for s in timeline if s["action"] == "virtuoso_release"] == [True] * 4
        assert entry["duration_s"] >= max(step["duration_s"] for step in timeline)
        assert parse_utc(entry["started"]) == starts[0]
    controller = report["controller"]["localhost"]
    assert [step["task"] for step in controller["timeline"]] == [
        "Pack the release source",
        "Choose the release id for every host and batch of this run",
    ]


def test_success_verification(success_run: Run, health_url: str) -> None:
    for host in HOSTS:
        checks = success_run.report()["hosts"][host]["verification"]
        assert [(i["name"], i["ok"]) for i in checks["imports"]] == [("src", True), ("src.calc", True)]
        assert all(isinstance(i["import_ms"], float) and i["import_ms"] >= 0 for i in checks["imports"])
        assert checks["failed_modules"] == []
        assert checks["edge_cases"] == {"ok": True, "rc": 0, "result": {"scalar": 0.0}}
        assert checks["pytest"]["ok"] is True
        assert checks["pytest"]["summary"] == "2 passed, 1 skipped in 0.05s"
        assert checks["pytest"]["counts"] == {"passed": 2, "skipped": 1}
        assert checks["health"] == {health_url: 200}
        assert checks["services"] == {}
        assert checks["services_ok"] is None
        # The checks before the switch and the one after it are kept apart.
        assert set(checks["phases"]) == {"pre_switch", "post_switch"}
        assert set(checks["phases"]["pre_switch"]) == {"imports", "failed_modules", "edge_cases", "pytest"}
        assert set(checks["phases"]["post_switch"]) == {"health"}


def test_success_markdown(success_run: Run, health_url: str) -> None:
    report = success_run.report()
    text = success_run.markdown()
    assert text.startswith(f"# Deploy {NEW_RELEASE}: SUCCESS\n")
    for host in HOSTS:
        assert f"## {host}: SUCCESS" in text
        assert f"| {host} | SUCCESS | {OLD_RELEASE} | {NEW_RELEASE} |" in text
        assert report["hosts"][host]["rollback_command"] in text
    assert "## Rollback" in text
    assert "| src/calc.py |" in text
    assert "- Pytest smoke: ok (2 passed, 1 skipped in 0.05s)" in text
    assert f"- Health `{health_url}`: 200" in text
    assert "Note the switch (handler)" in text
    assert "## Failures" not in text


# -- failure -----------------------------------------------------------------------------------


def test_failure_report_says_where_why_and_what_was_rolled_back(failure_run: Run) -> None:
    report = failure_run.report()
    assert report["status"] == "failed"
    assert report["summary"] == {"success": 0, "failed": 0, "rolled_back": 1, "not_started": 1}
    web1 = report["hosts"]["web1"]
    assert web1["status"] == "rolled_back"
    assert web1["failure"] == {
        "task": "Check the running release after the restart",
        "role": None,
        "msg": "health check failed: /health answered 503",
        "switched": True,
        "unreachable": False,
        "marked_failed": True,
        "stop_msg": (
            f"deploy of {FAILED_RELEASE} failed on web1 at 'Check the running release after the restart': "
            f"health check failed: /health answered 503 -- rolled back to {OLD_RELEASE}"
        ),
    }
    assert web1["previous_release"] == OLD_RELEASE
    assert web1["rolled_back_to"] == OLD_RELEASE
    assert web1["current_release"] == OLD_RELEASE
    assert web1["stats"]["failures"] == 1
    assert web1["stats"]["rescued"] == 1
    statuses = {step["task"]: step["status"] for step in web1["timeline"]}
    assert statuses["Check the running release after the restart"] == "failed"
    assert statuses["Switch current back to the last good release"] == "ok"
    assert statuses["Stop the rollout"] == "failed"
    # Failing steps carry their message.
    failing = [step for step in web1["timeline"] if step["status"] == "failed"]
    assert failing[0]["msg"] == "health check failed: /health answered 503"
    assert web1["verification"]["phases"] == {}


def test_failure_report_lists_the_host_never_started(failure_run: Run) -> None:
    web2 = failure_run.report()["hosts"]["web2"]
    assert web2["status"] == "not_started"
    assert web2["failure"] is None
    assert web2["timeline"] == []
    assert web2["previous_release"] is None
    assert web2["rollback_command"] is None


def test_failure_markdown(failure_run: Run) -> None:
    text = failure_run.markdown()
    assert text.startswith(f"# Deploy {FAILED_RELEASE}: FAILED\n")
    assert "## Failures" in text
    assert "### web1" in text
    assert "- Failed task: `Check the running release after the restart`" in text
    assert "health check failed: /health answered 503" in text
    assert f"- Release `{FAILED_RELEASE}` marked failed on the host" in text
    assert f"- Rolled back to: `{OLD_RELEASE}`" in text
    # web1 is back on its backup already: no rollback command to suggest.
    assert "## Rollback" not in text
    assert "- Switched to the new release before the failure: yes" in text
    assert "Not started (the rollout stopped before them): web2" in text
    assert "## web2: NOT STARTED" in text
    assert f"| web1 | ROLLED BACK | {OLD_RELEASE} | {OLD_RELEASE} | {OLD_RELEASE} |" in text


# -- silence and robustness ------------------------------------------------------------------------


def test_no_report_without_report_id(tmp_path: Path) -> None:
    done = run_playbook("no_report.yml", cwd=tmp_path, extra_vars={})
    assert done.returncode == 0, done.stdout + done.stderr
    assert list(tmp_path.iterdir()) == []
    assert "virtuoso_report" not in done.stdout + done.stderr


def test_unwritable_report_dir_warns_and_the_run_succeeds(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the report directory should be\n", encoding="utf-8")
    # The directory comes from the variable (as in group_vars), templated.
    extra_vars = {"base": str(tmp_path), "virtuoso_report_dir": "{{ base }}/not-a-dir/reports"}
    done = run_playbook("bad_dir.yml", cwd=tmp_path, extra_vars=extra_vars)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "virtuoso_report" in done.stderr
    assert f"could not write the report bad-dir-test to {blocker}/reports" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not-a-dir"]
