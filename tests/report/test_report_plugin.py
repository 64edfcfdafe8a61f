"""The virtuoso_report callback driven in-process with stand-ins for Ansible's objects.

Covers what a local playbook run cannot produce quickly: unreachable hosts, systemd units, failing
/health checks, rollback runs, ignored errors, plugin errors, Markdown escaping.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.report.conftest import REPO_ROOT, VENV_BIN

GROUPS = {"localhost": ["localhost"], "virtuoso": ["web1", "web2"], "all": ["localhost", "web1", "web2"]}


class FakeHost:
    def __init__(self, name: str) -> None:
        self.name = name


class FakeRole:
    def __init__(self, name: str) -> None:
        self.name = name

    def get_name(self, include_role_fqcn: bool = True) -> str:
        return self.name


class FakeTask:
    def __init__(self, name: str, action: str, args: dict[str, Any] | None = None, role: str | None = None):
        self._uuid = uuid.uuid4().hex
        self.name = name
        self.action = action
        self.args = args or {}
        self._role = FakeRole(role) if role else None

    def get_name(self, include_role_fqcn: bool = True) -> str:
        return f"{self._role.name} : {self.name}" if self._role and include_role_fqcn else self.name


class FakeResult:
    def __init__(
        self, host: str, task: FakeTask, result: dict[str, Any], task_fields: dict[str, Any] | None = None
    ) -> None:
        self.host = FakeHost(host)
        self.task = task
        self.result = result
        self.task_fields = task_fields or {}

    def is_changed(self) -> bool:
        return bool(self.result.get("changed"))


class BrokenResult(FakeResult):
    @property
    def result(self) -> dict[str, Any]:
        raise RuntimeError("result exploded")

    @result.setter
    def result(self, value: dict[str, Any]) -> None:
        pass


class FakeInventory:
    _sources = ("/repo/inventory/sandbox",)

    def get_hosts(self, pattern: Any, ignore_restrictions: bool = False) -> list[FakeHost]:
        patterns = pattern if isinstance(pattern, list) else [pattern]
        return [FakeHost(h) for p in patterns for h in GROUPS[p]]


class FakeVariableManager:
    _inventory = FakeInventory()


class FakePlay:
    def __init__(self, name: str, hosts: str) -> None:
        self._uuid = uuid.uuid4().hex
        self.name = name
        self.hosts = hosts

    def get_name(self) -> str:
        return self.name

    def get_variable_manager(self) -> FakeVariableManager:
        return FakeVariableManager()


class FakeStats:
    def __init__(self, counters: dict[str, dict[str, int]]) -> None:
        self.counters = counters

    def summarize(self, host: str) -> dict[str, int]:
        return self.counters.get(host, {})


class FakeDisplay:
    def __init__(self) -> None:
        self.verbosity = 0
        self.warnings: list[str] = []
        self.shown: list[str] = []

    def warning(self, msg: str) -> None:
        self.warnings.append(msg)

    def display(self, msg: str, stderr: bool = False, **kwargs: Any) -> None:
        self.shown.append(msg)


class Sim:
    """Feeds events to a fresh plugin instance."""

    def __init__(self, plugin: ModuleType, report_dir: Path) -> None:
        self.display = FakeDisplay()
        self.cb = plugin.CallbackModule(display=self.display)
        self.report_dir = report_dir
        self.cb.v2_playbook_on_start(type("Playbook", (), {"_file_name": "/repo/playbooks/deploy.yml"})())

    def play(self, name: str, hosts: str) -> None:
        self.cb.v2_playbook_on_play_start(FakePlay(name, hosts))

    def task(
        self,
        host: str,
        name: str,
        action: str,
        result: dict[str, Any] | None = None,
        status: str = "ok",
        args: dict[str, Any] | None = None,
        role: str | None = None,
    ) -> None:
        task = FakeTask(name, action, args, role)
        self.cb.v2_playbook_on_task_start(task, False)
        self.cb.v2_runner_on_start(FakeHost(host), task)
        res = FakeResult(host, task, result or {})
        if status == "ok":
            self.cb.v2_runner_on_ok(res)
        elif status == "failed":
            self.cb.v2_runner_on_failed(res)
        elif status == "ignored":
            self.cb.v2_runner_on_failed(res, ignore_errors=True)
        elif status == "unreachable":
            self.cb.v2_runner_on_unreachable(res)
        else:
            self.cb.v2_runner_on_skipped(res)

    def choose(self, report_id: str, kind: str = "deploy") -> None:
        self.play("Build the release on the controller", "localhost")
        facts = {
            "virtuoso_report_id": report_id,
            "virtuoso_report_kind": kind,
            "virtuoso_report_dir": str(self.report_dir),
        }
        self.task("localhost", "Choose the release id", "ansible.builtin.set_fact", {"ansible_facts": facts})

    def release(self, host: str, state: str, **result: Any) -> None:
        self.task(
            host, f"release {state}", "virtuoso_release", {"changed": True, **result}, args={"state": state}
        )

    def finish(self, counters: dict[str, dict[str, int]] | None = None) -> dict[str, Any] | None:
        self.cb.v2_playbook_on_stats(FakeStats(counters or {}))
        path = self.report_dir / f"{self.cb.report_id}.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


@pytest.fixture
def sim(plugin: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Sim:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(plugin.context, "CLIARGS", {"inventory": ("/repo/inventory/sandbox",)})
    return Sim(plugin, tmp_path / "reports")


UNITS = {
    "virtuoso-trading.service": {
        "active_state": "active",
        "sub_state": "running",
        "n_restarts": 0,
        "memory_current": 183500800,
        "active_enter_timestamp": "Tue 2026-11-24 03:15:02 UTC",
        "main_pid": 42,
    }
}


def test_unreachable_host_is_failed_with_where_and_why(sim: Sim) -> None:
    sim.choose("r2")
    sim.play("Roll the release out", "virtuoso")
    sim.release("web1", "prepare", current_release="r1")
    sim.task(
        "web1",
        "Create the venv",
        "ansible.builtin.command",
        role="virtuoso_python",
        status="unreachable",
        result={"msg": "Failed to connect to the host via ssh: Connection refused", "unreachable": True},
    )
    report = sim.finish({"web1": {"unreachable": 1}})
    web1 = report["hosts"]["web1"]
    assert web1["status"] == "failed"
    assert web1["failure"]["task"] == "Create the venv"
    assert web1["failure"]["role"] == "virtuoso_python"
    assert web1["failure"]["unreachable"] is True
    assert "Connection refused" in web1["failure"]["msg"]
    assert web1["timeline"][-1]["status"] == "unreachable"
    assert web1["previous_release"] == "r1"
    assert report["hosts"]["web2"]["status"] == "not_started"
    assert report["status"] == "failed"
    text = (sim.report_dir / "r2.md").read_text(encoding="utf-8")
    assert "- The host was unreachable" in text


def test_failed_health_after_switch_then_rollback_keeps_every_phase(sim: Sim) -> None:
    sim.choose("r2")
    sim.play("Roll the release out", "virtuoso")
    for host in ("web1", "web2"):
        sim.release(host, "prepare", current_release="r1", previous_good_release=None)
        sim.task(
            host,
            "Import",
            "python_import_health",
            {"modules": [{"name": "src", "ok": True, "import_ms": 3.5}], "failed_modules": []},
        )
        sim.release(host, "switch", previous_release="r1", current_release="r2")
    sim.task(
        "web1",
        "Wait until both services are active and stable",
        "systemd_unit_health",
        {"units": UNITS, "all_active": True},
        role="virtuoso_services",
    )
    sim.task(
        "web1",
        "Wait until both /health endpoints answer 200",
        "ansible.builtin.uri",
        status="failed",
        result={
            "results": [
                {
                    "url": "http://127.0.0.1:8003/health",
                    "status": 503,
                    "failed": True,
                    "msg": "Status code was 503",
                },
                {"url": "http://127.0.0.1:8004/health", "status": 200},
            ]
        },
    )
    sim.task(
        "web1",
        "Remember why the deploy failed",
        "ansible.builtin.set_fact",
        {
            "ansible_facts": {
                "virtuoso_deploy_failure": {
                    "task": "Wait until both /health endpoints answer 200",
                    "msg": "Status code was 503",
                    "switched": "True",
                }
            }
        },
    )
    sim.release("web1", "mark_failed", current_release="r2")
    sim.release("web1", "rollback", previous_release="r2", current_release="r1")
    sim.task(
        "web1",
        "Wait until both /health endpoints answer 200",
        "ansible.builtin.uri",
        {
            "results": [
                {"url": "http://127.0.0.1:8003/health", "status": 200},
                {"url": "http://127.0.0.1:8004/health", "status": 200},
            ]
        },
    )
    sim.task(
        "web1", "Stop the rollout", "ansible.builtin.fail", {"msg": "deploy of r2 failed"}, status="failed"
    )
    sim.release("web2", "mark_good", current_release="r2", previous_good_release="r1")
    report = sim.finish({"web1": {"failures": 1, "rescued": 1}})

    web1 = report["hosts"]["web1"]
    assert web1["status"] == "rolled_back"
    assert (web1["previous_release"], web1["current_release"], web1["rolled_back_to"]) == ("r1", "r1", "r1")
    assert web1["failure"]["task"] == "Wait until both /health endpoints answer 200"
    assert web1["failure"]["role"] is None
    assert web1["failure"]["switched"] is True
    assert web1["failure"]["stop_msg"] == "deploy of r2 failed"
    checks = web1["verification"]
    assert checks["health"] == {"http://127.0.0.1:8003/health": 200, "http://127.0.0.1:8004/health": 200}
    assert checks["phases"]["post_switch"]["health"]["http://127.0.0.1:8003/health"] == 503
    assert checks["services"] == {
        "virtuoso-trading.service": {
            "active_state": "active",
            "sub_state": "running",
            "memory_current": 183500800,
            "n_restarts": 0,
            "active_enter_timestamp": "Tue 2026-11-24 03:15:02 UTC",
        }
    }
    assert checks["services_ok"] is True
    assert list(checks["phases"]) == ["pre_switch", "post_switch", "post_rollback"]
    assert checks["imports"] == [{"name": "src", "ok": True, "import_ms": 3.5, "error": None}]

    web2 = report["hosts"]["web2"]
    assert web2["status"] == "success"
    assert web2["rollback_command"] == (
        "ansible-playbook -i /repo/inventory/sandbox /repo/playbooks/rollback.yml --limit web2 "
        "-e virtuoso_release_rollback_to=r1"
    )
    assert report["status"] == "failed"
    assert report["summary"] == {"success": 1, "failed": 0, "rolled_back": 1, "not_started": 0}
    text = (sim.report_dir / "r2.md").read_text(encoding="utf-8")
    assert "| virtuoso-trading.service | active/running | 175.0 MiB | 0 |" in text
    # Only web2 still runs the new release: only it gets a rollback command in the Rollback section.
    rollback_section = text.split("## Rollback", 1)[1].split("## Release", 1)[0]
    assert "--limit web2" in rollback_section
    assert "--limit web1" not in rollback_section


def test_rollback_run_reports_what_was_rolled_back(sim: Sim) -> None:
    sim.choose("rollback-20261124T050000Z", kind="rollback")
    sim.play("Roll back to the previous good release", "virtuoso")
    sim.release("web1", "rollback", previous_release="r2", current_release="r1")
    sim.task(
        "web2",
        "Switch current back",
        "virtuoso_release",
        status="failed",
        result={"msg": "nothing to roll back to: no GOOD release"},
        args={"state": "rollback"},
    )
    report = sim.finish({"web2": {"failures": 1}})
    assert report["kind"] == "rollback"
    assert report["release"]["id"] is None
    web1, web2 = report["hosts"]["web1"], report["hosts"]["web2"]
    assert web1["status"] == "success"
    assert (web1["previous_release"], web1["current_release"], web1["rolled_back_to"]) == ("r2", "r1", "r1")
    assert web1["rollback_command"].endswith("--limit web1 -e virtuoso_release_rollback_to=r2")
    assert web2["status"] == "failed"
    assert web2["failure"]["msg"] == "nothing to roll back to: no GOOD release"
    assert web2["rollback_command"] is None
    text = (sim.report_dir / "rollback-20261124T050000Z.md").read_text(encoding="utf-8")
    assert text.startswith("# Rollback rollback-20261124T050000Z: FAILED")


def test_single_play_run_reports_its_own_host(sim: Sim) -> None:
    sim.play("All in one", "localhost")
    sim.task("localhost", "Name the report", "set_fact", {"ansible_facts": {"virtuoso_report_id": "solo"}})
    sim.task("localhost", "Work", "ansible.builtin.command", {"rc": 0, "changed": True})
    sim.task("localhost", "Tolerated", "ansible.builtin.command", {"rc": 1, "msg": "meh"}, status="ignored")
    sim.task("localhost", "Not needed", "ansible.builtin.command", status="skipped")
    sim.cb.v2_playbook_on_stats(FakeStats({}))
    report = json.loads((Path("reports") / "solo.json").read_text(encoding="utf-8"))
    assert list(report["hosts"]) == ["localhost"]
    assert report["controller"] == {}
    host = report["hosts"]["localhost"]
    assert host["status"] == "success"
    assert [s["status"] for s in host["timeline"]] == ["ok", "ok", "ignored", "skipped"]
    assert host["timeline"][2]["msg"] == "meh"
    assert host["timeline"][1]["changed"] is True
    assert host["previous_release"] is None and host["rollback_command"] is None


def test_vault_options_are_part_of_the_rollback_command(sim: Sim, plugin: ModuleType, monkeypatch) -> None:
    monkeypatch.setattr(
        plugin.context,
        "CLIARGS",
        {"inventory": ("inventory/production",), "ask_vault_pass": True, "vault_password_files": ()},
    )
    sim.choose("r2")
    sim.play("Roll the release out", "virtuoso")
    sim.release("web1", "switch", previous_release="r1", current_release="r2")
    report = sim.finish()
    assert report["inventory"] == ["inventory/production"]
    assert report["hosts"]["web1"]["rollback_command"] == (
        "ansible-playbook -i inventory/production /repo/playbooks/rollback.yml --limit web1 "
        "-e virtuoso_release_rollback_to=r1 --ask-vault-pass"
    )


def test_no_report_without_a_report_id(sim: Sim, tmp_path: Path) -> None:
    sim.play("Check the inventory", "all")
    sim.task("web1", "Check", "ansible.builtin.assert", {"changed": False})
    assert sim.finish() is None
    assert list(tmp_path.iterdir()) == []
    assert sim.display.warnings == [] and sim.display.shown == []


def test_plugin_errors_become_warnings_and_reach_the_report(sim: Sim) -> None:
    sim.choose("r2")
    sim.play("Roll the release out", "virtuoso")
    task = FakeTask("Exploding", "command")
    sim.cb.v2_runner_on_ok(BrokenResult("web1", task, {}))  # must not raise
    assert len(sim.display.warnings) == 1
    assert "v2_runner_on_ok: RuntimeError: result exploded" in sim.display.warnings[0]
    report = sim.finish()
    assert report["errors"] == ["v2_runner_on_ok: RuntimeError: result exploded"]
    assert "## Report errors" in (sim.report_dir / "r2.md").read_text(encoding="utf-8")


def test_warnings_are_capped(sim: Sim) -> None:
    for _ in range(30):
        sim.cb.v2_runner_on_ok(BrokenResult("web1", FakeTask("Exploding", "command"), {}))
    assert len(sim.display.warnings) == 10
    assert "further errors" in sim.display.warnings[-1]
    assert len(sim.cb.errors) == 30


def test_markdown_escapes_table_cells_and_fences(sim: Sim) -> None:
    sim.choose("r2")
    sim.play("Roll the release out", "virtuoso")
    msg = "bad | pipe\nsecond line ``` fence"
    sim.task("web1", "Fails", "ansible.builtin.fail", {"msg": msg}, status="failed")
    sim.finish({"web1": {"failures": 1}})
    text = (sim.report_dir / "r2.md").read_text(encoding="utf-8")
    assert "| bad \\| pipe second line ``` fence |" in text
    assert f"````\n{msg}\n````" in text


def test_report_id_becomes_a_safe_file_name(sim: Sim, plugin: ModuleType) -> None:
    assert plugin.safe_name("../../etc/passwd") == "_.._etc_passwd"
    assert plugin.safe_name("20261124T031500Z-ab12cd34") == "20261124T031500Z-ab12cd34"
    sim.choose("a/b c")
    sim.finish()
    assert sorted(p.name for p in sim.report_dir.iterdir()) == ["a_b_c.json", "a_b_c.md"]


def test_existing_report_is_replaced_atomically(plugin: ModuleType, tmp_path: Path) -> None:
    report = {
        "report_id": "r",
        "kind": "deploy",
        "status": "success",
        "playbook": "p",
        "inventory": [],
        "started": "s",
        "finished": "f",
        "duration_s": 1.0,
        "summary": {"success": 0},
        "release": {"id": None, "content_hash": None, "file_count": None, "total_bytes": None, "files": []},
        "hosts": {},
        "controller": {},
    }
    (tmp_path / "r.json").write_text("old", encoding="utf-8")
    plugin.write_report(report, str(tmp_path))
    assert json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))["report_id"] == "r"
    assert sorted(os.listdir(tmp_path)) == ["r.json", "r.md"]
    assert (tmp_path / "r.md").stat().st_mode & 0o777 == 0o644


def test_pytest_summary_is_parsed(plugin: ModuleType) -> None:
    parsed = plugin.pytest_summary(
        {"rc": 1, "stdout_lines": ["....F", "", "===== 1 failed, 14 passed, 2 warnings in 2.31s ====="]}
    )
    assert parsed == {
        "ok": False,
        "rc": 1,
        "summary": "1 failed, 14 passed, 2 warnings in 2.31s",
        "counts": {"failed": 1, "passed": 14, "warnings": 2},
    }


def test_documentation_renders_with_ansible_doc() -> None:
    done = subprocess.run(
        [str(VENV_BIN / "ansible-doc"), "-t", "callback", "virtuoso_report"],
        cwd=REPO_ROOT,
        env={
            **os.environ,
            "ANSIBLE_CALLBACK_PLUGINS": str(REPO_ROOT / "callback_plugins"),
            "PAGER": "cat",
            "ANSIBLE_NOCOLOR": "1",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "WARNING" not in done.stderr, done.stderr
    assert "CALLBACK virtuoso_report" in done.stdout
    assert "TYPE: aggregate" in done.stdout


def test_each_playbook_of_a_run_gets_its_own_report(sim: Sim, tmp_path: Path) -> None:
    sim.choose("first")
    sim.play("Roll the release out", "virtuoso")
    sim.release("web1", "switch", previous_release="r1", current_release="first")
    assert sim.finish()["hosts"]["web1"]["current_release"] == "first"
    # ansible-playbook a.yml b.yml: the second playbook starts from scratch and asks for no report.
    sim.cb.v2_playbook_on_start(type("Playbook", (), {"_file_name": "/repo/playbooks/verify.yml"})())
    sim.play("Verify", "virtuoso")
    sim.task("web1", "Check", "ansible.builtin.assert", {"changed": False})
    sim.cb.v2_playbook_on_stats(FakeStats({}))
    assert sim.cb.report_id is None
    assert sorted(p.name for p in sim.report_dir.iterdir()) == ["first.json", "first.md"]


def test_fleet_rollback_delegated_to_each_host_is_reported_on_that_host(sim: Sim) -> None:
    sim.choose("r2")
    sim.play("Roll the release out", "virtuoso")
    sim.release("web1", "prepare", current_release="r1")
    sim.release("web1", "switch", previous_release="r1", current_release="r2")
    sim.release("web1", "mark_good", current_release="r2", previous_good_release="r1")
    sim.release("web2", "prepare", current_release="r1")
    sim.release("web2", "switch", previous_release="r1", current_release="r2")
    sim.task(
        "web2",
        "Check the running release after the restart",
        "ansible.builtin.fail",
        {"msg": "smoke failed"},
        status="failed",
    )
    # web2's rescue puts every switched host back, one loop item per host, delegated to it.
    task = FakeTask("Put every host of the run back", "virtuoso_release", {"state": "rollback"})
    sim.cb.v2_playbook_on_task_start(task, False)
    sim.cb.v2_runner_on_start(FakeHost("web2"), task)
    items = []
    for host in ("web1", "web2"):
        item = {
            "changed": True,
            "previous_release": "r2",
            "current_release": "r1",
            "item": host,
            "invocation": {"module_args": {"state": "rollback"}},
        }
        sim.cb.v2_runner_item_on_ok(FakeResult("web2", task, item, {"delegate_to": host}))
        items.append(item)
    sim.cb.v2_runner_on_ok(
        FakeResult("web2", task, {"changed": True, "results": items}, {"delegate_to": "{{ item }}"})
    )
    report = sim.finish({"web2": {"failures": 1}})
    web1, web2 = report["hosts"]["web1"], report["hosts"]["web2"]
    assert (web1["status"], web1["failure"], web1["rolled_back_to"], web1["current_release"]) == (
        "rolled_back",
        None,
        "r1",
        "r1",
    )
    assert web1["timeline"][-1]["task"] == "Put every host of the run back (run by web2)"
    assert (web2["status"], web2["rolled_back_to"], web2["current_release"]) == ("rolled_back", "r1", "r1")
    assert web2["failure"]["task"] == "Check the running release after the restart"
    assert [s["task"] for s in web2["timeline"]].count("Put every host of the run back") == 1
    assert report["summary"]["rolled_back"] == 2


def test_the_last_report_id_wins(sim: Sim) -> None:
    sim.choose("20261124T031500Z-ab12cd34")
    sim.task(
        "localhost",
        "Name the report after the release",
        "set_fact",
        {"ansible_facts": {"virtuoso_report_id": "20261124T031501Z-ab12cd34"}},
    )
    sim.play("Roll the release out", "virtuoso")
    sim.release("web1", "switch", previous_release="r1", current_release="20261124T031501Z-ab12cd34")
    report = sim.finish()
    assert report["report_id"] == "20261124T031501Z-ab12cd34"
    assert list(report["controller"]) == ["localhost"]
