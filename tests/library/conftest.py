"""Shared harness for unit tests of the playbook-level modules in library/.

Modules are loaded from their files (they are not a package), and the project's
module_utils/ is made importable as ``ansible.module_utils.<name>`` exactly as
Ansible does when it ships a module to a host.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock

import ansible.module_utils
import pytest
from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args

REPO_ROOT = Path(__file__).resolve().parents[2]
LIBRARY_DIR = REPO_ROOT / "library"
MODULE_UTILS_DIR = REPO_ROOT / "module_utils"

if str(MODULE_UTILS_DIR) not in ansible.module_utils.__path__:
    ansible.module_utils.__path__.append(str(MODULE_UTILS_DIR))


class ModuleExit(Exception):  # noqa: N818 - control flow, not an error
    """Raised instead of exit_json: carries the module's result."""

    def __init__(self, result: dict[str, Any]) -> None:
        super().__init__(result)
        self.result = result


class ModuleFail(Exception):  # noqa: N818 - mirrors fail_json
    """Raised instead of fail_json: carries the module's result (with ``msg``)."""

    def __init__(self, result: dict[str, Any]) -> None:
        super().__init__(result)
        self.result = result


def load_module(name: str) -> ModuleType:
    """Import library/<name>.py as a fresh module object."""
    spec = importlib.util.spec_from_file_location(f"library_{name}", LIBRARY_DIR / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    # dataclasses and pickling look a class's module up in sys.modules.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _exit_json(self: basic.AnsibleModule, **kwargs: Any) -> None:
    kwargs.setdefault("changed", False)
    raise ModuleExit(kwargs)


def _fail_json(self: basic.AnsibleModule, msg: str, **kwargs: Any) -> None:
    kwargs["msg"] = msg
    kwargs["failed"] = True
    raise ModuleFail(kwargs)


RunModule = Callable[..., dict[str, Any]]


@pytest.fixture
def run_module() -> RunModule:
    """Run a library module's main() with the given args.

    Returns the result dict of exit_json; a fail_json result is returned too,
    with ``failed: True``, so tests assert on both outcomes the same way.
    """

    def _run(name: str, args: dict[str, Any], check_mode: bool = False) -> dict[str, Any]:
        module = load_module(name)
        module_args = dict(args)
        if check_mode:
            module_args["_ansible_check_mode"] = True
        with (
            patch_module_args(module_args),
            mock.patch.object(basic.AnsibleModule, "exit_json", _exit_json),
            mock.patch.object(basic.AnsibleModule, "fail_json", _fail_json),
        ):
            try:
                module.main()
            except ModuleExit as done:
                return done.result
            except ModuleFail as failed:
                return failed.result
        raise AssertionError(f"module {name} returned without exit_json/fail_json")

    return _run
