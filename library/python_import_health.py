#!/usr/bin/python
# Copyright: (c) Virtuoso deploy maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: python_import_health
short_description: Check that Python modules import cleanly with a given interpreter
description:
  - Imports each requested Python module with the interpreter O(python) and reports, per module,
    whether the import worked, how long it took, which file was loaded and that file's SHA-256.
  - One probe interpreter is started; it imports the O(preload) modules once, then forks one child
    per module, so every module is imported from scratch in a process of its own and one failing or
    hanging module cannot affect the others. Up to O(max_workers) children run at the same time.
  - The probe runs in isolated mode (C(python -I)), so C(PYTHONPATH) and the user's site-packages
    of the remote user are ignored. Its C(sys.path) is O(paths), then O(chdir), then the parent
    directory of O(discover), then the interpreter's default path.
  - A child that exceeds O(timeout) is killed together with its whole process group. The process
    group is also killed after a child finishes, so processes an import starts in the background
    are not left running either. Processes that leave the group (for example with C(setsid)) are
    not tracked.
  - The task fails when any module fails to import, and names the failed modules.
  - The module never changes anything on the host; it always returns C(changed=false).
author:
  - Virtuoso deploy maintainers
options:
  python:
    description:
      - Path of the Python interpreter to import the modules with, typically the release's virtualenv
        interpreter.
      - A bare command name such as V(python3) is looked up in E(PATH).
      - The file must exist and be executable.
    type: path
    required: true
  modules:
    description:
      - Dotted names of the modules to import, for example V(src.utils.safe_operations).
      - At least one of O(modules) and O(discover) is required; when both are set, their modules are merged.
    type: list
    elements: str
  discover:
    description:
      - A package directory. Every C(.py) file below it is imported, named relative to the directory's
        parent, so O(discover=/opt/virtuoso/current/src) yields V(src), V(src.utils),
        V(src.utils.safe_operations) and so on.
      - C(__pycache__), hidden directories and files whose names are not valid module names are skipped.
      - The directory's parent is put on C(sys.path) after O(paths) and O(chdir) so the discovered names
        can be imported.
    type: path
  paths:
    description:
      - Directories prepended to C(sys.path) of the child, in this order.
      - Paths that do not exist are still used, but produce a warning.
    type: list
    elements: path
    default: []
  chdir:
    description:
      - Working directory of the child processes. It is also put on C(sys.path) right after O(paths),
        as C(python -c) would do when run from there.
      - Must be an existing directory.
    type: path
  timeout:
    description:
      - Seconds one module's import may take before its child process group is killed and the module
        is reported as failed with RV(modules[].error_type=TimeoutError).
    type: float
    default: 30
  max_workers:
    description:
      - How many modules are imported in parallel.
    type: int
    default: 4
  preload:
    description:
      - Dotted names of modules the probe imports once, before it forks the child that imports each
        module. Every child starts with them already imported, so a heavy dependency that every module
        needs (V(numpy)) is loaded once instead of once per module.
      - A preload that fails to import produces a warning; the modules are then imported without it, so
        each of them reports that failure itself if it needs the module.
      - Use it only for third-party packages. A preloaded module of the probed code would hide whether
        the others import without it.
    type: list
    elements: str
    default: []
extends_documentation_fragment: action_common_attributes
attributes:
  check_mode:
    support: full
    details: The module is read-only and runs unchanged in check mode.
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - Importing a module runs its top-level code. Only probe code whose import has no side effects you
    would not want on the host.
requirements:
  - A POSIX host (process groups are used to clean up child processes).
"""

EXAMPLES = r"""
- name: Check that the new release's code imports with its own virtualenv
  python_import_health:
    python: "{{ virtuoso_release_dir }}/venv311/bin/python"
    discover: "{{ virtuoso_release_dir }}/src"
    chdir: "{{ virtuoso_release_dir }}"
    preload: [numpy]
    timeout: 20

- name: Check selected modules and the third-party packages they need
  python_import_health:
    python: /opt/virtuoso/current/venv311/bin/python
    modules:
      - numpy
      - src.utils.safe_operations
      - src.indicators
    paths:
      - /opt/virtuoso/current
  register: import_health

- name: Show the slowest import
  ansible.builtin.debug:
    msg: "{{ import_health.modules | sort(attribute='import_ms') | last }}"
"""

RETURN = r"""
python:
  description: The interpreter the modules were imported with.
  returned: always
  type: str
  sample: /opt/virtuoso/releases/20250101T000000/venv311/bin/python
modules:
  description: One entry per module, in the order they were requested (O(modules) first, then the
    discovered ones, without duplicates).
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Dotted module name.
      returned: always
      type: str
      sample: src.utils.safe_operations
    ok:
      description: Whether the import succeeded.
      returned: always
      type: bool
      sample: true
    import_ms:
      description: Wall-clock milliseconds the import took (for timeouts and crashes, the time until
        the child was stopped).
      returned: always
      type: float
      sample: 12.4
    file:
      description: File the module was loaded from; V(null) for namespace packages, built-in modules,
        modules that were not found, timeouts and crashes.
      returned: always
      type: str
      sample: /opt/virtuoso/current/src/utils/safe_operations.py
    sha256:
      description: SHA-256 of RV(modules[].file); V(null) when there is no file.
      returned: always
      type: str
      sample: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
    error_type:
      description: Exception class name raised by the import, V(TimeoutError) when O(timeout) expired,
        or V(ProbeError) when the child died without reporting (for example on a segfault).
      returned: when the import failed
      type: str
      sample: ModuleNotFoundError
    error:
      description: The exception message.
      returned: when the import failed
      type: str
      sample: No module named 'numpy'
    traceback_tail:
      description: Last lines of the traceback (for timeouts and crashes, of the child's stderr).
      returned: when the import failed
      type: str
      sample: |-
        File "/opt/virtuoso/current/src/utils/safe_operations.py", line 3, in <module>
          import numpy as np
        ModuleNotFoundError: No module named 'numpy'
failed_modules:
  description: Names of the modules that failed to import.
  returned: always
  type: list
  elements: str
  sample: [src.indicators.rsi]
msg:
  description: Summary of the outcome.
  returned: always
  type: str
  sample: all 12 modules imported with /opt/virtuoso/current/venv311/bin/python
"""

import os
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.virtuoso_import_probe import discover_modules, is_dotted_name, probe_modules


def build_module() -> AnsibleModule:
    """Create the AnsibleModule with this module's argument spec."""
    return AnsibleModule(
        argument_spec={
            "python": {"type": "path", "required": True},
            "modules": {"type": "list", "elements": "str"},
            "discover": {"type": "path"},
            "paths": {"type": "list", "elements": "path", "default": []},
            "chdir": {"type": "path"},
            "timeout": {"type": "float", "default": 30},
            "max_workers": {"type": "int", "default": 4},
            "preload": {"type": "list", "elements": "str", "default": []},
        },
        required_one_of=[["modules", "discover"]],
        supports_check_mode=True,
    )


def resolve_python(module: AnsibleModule, python: str) -> str:
    """Return the interpreter path to use, or fail the task saying what is wrong with it."""
    if os.sep not in python:
        found = module.get_bin_path(python)
        if not found:
            module.fail_json(msg=f"python={python} was not found in PATH; give the interpreter's full path")
        python = found
    if not os.path.isfile(python):
        module.fail_json(
            msg=f"python={python} does not exist; point it at the release's interpreter, "
            "for example <release>/venv311/bin/python, and make sure the virtualenv was created"
        )
    if not os.access(python, os.X_OK):
        module.fail_json(msg=f"python={python} is not executable; fix its permissions (chmod +x)")
    return python


def validate_params(module: AnsibleModule) -> None:
    """Fail the task on option values the argument spec cannot check."""
    params = module.params
    for option in ("modules", "preload"):
        bad = [name for name in params[option] or [] if not is_dotted_name(name)]
        if bad:
            module.fail_json(
                msg=f"{option} contains names that are not dotted module names: {', '.join(bad)}"
            )
    if params["discover"] is not None and not os.path.isdir(params["discover"]):
        module.fail_json(msg=f"discover={params['discover']} is not a directory; give the package directory")
    if params["chdir"] is not None and not os.path.isdir(params["chdir"]):
        module.fail_json(msg=f"chdir={params['chdir']} is not an existing directory")
    if params["timeout"] <= 0:
        module.fail_json(msg=f"timeout must be greater than 0, got {params['timeout']}")
    if params["max_workers"] < 1:
        module.fail_json(msg=f"max_workers must be at least 1, got {params['max_workers']}")


def module_names(module: AnsibleModule) -> list[str]:
    """Merge O(modules) and the discovered modules, keeping order and dropping duplicates."""
    names = list(module.params["modules"] or [])
    if module.params["discover"] is not None:
        discovered = discover_modules(module.params["discover"])
        if not discovered:
            module.fail_json(msg=f"discover={module.params['discover']} contains no importable .py modules")
        names.extend(discovered)
    if not names:
        module.fail_json(msg="nothing to import: give at least one name in modules or a package in discover")
    return list(dict.fromkeys(names))


def search_path(module: AnsibleModule) -> list[str]:
    """Build the entries prepended to the child's sys.path: paths, chdir, then discover's parent."""
    params = module.params
    entries = [os.path.abspath(path) for path in params["paths"]]
    for entry in entries:
        if not os.path.isdir(entry):
            module.warn(f"paths entry {entry} is not a directory; it is put on sys.path anyway")
    if params["chdir"] is not None:
        entries.append(os.path.abspath(params["chdir"]))
    if params["discover"] is not None:
        entries.append(os.path.dirname(os.path.normpath(os.path.abspath(params["discover"]))))
    return list(dict.fromkeys(entries))


def main() -> None:
    """Entry point: probe the modules and report."""
    module = build_module()
    validate_params(module)
    python = resolve_python(module, module.params["python"])
    names = module_names(module)
    results, warnings = probe_modules(
        python,
        names,
        paths=search_path(module),
        chdir=module.params["chdir"],
        timeout=module.params["timeout"],
        max_workers=module.params["max_workers"],
        preload=module.params["preload"],
    )
    for warning in warnings:
        module.warn(warning)
    failed = [entry["name"] for entry in results if not entry["ok"]]
    outcome: dict[str, Any] = {
        "changed": False,
        "python": python,
        "modules": results,
        "failed_modules": failed,
    }
    if failed:
        module.fail_json(
            msg=f"{len(failed)} of {len(results)} modules failed to import with {python}: "
            f"{', '.join(failed)}; see modules[].error and modules[].traceback_tail",
            **outcome,
        )
    module.exit_json(msg=f"all {len(results)} modules imported with {python}", **outcome)


if __name__ == "__main__":
    main()
