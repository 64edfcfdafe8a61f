#!/usr/bin/python
# Copyright: (c) Virtuoso deploy maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: division_guard_audit
short_description: Find divisions in Python code that are not protected by a guard function
description:
  - Parses Python files (without running them) and counts, per file, the calls of guard functions
    (guarded divisions) and the raw divisions that could divide by zero.
  - Raw divisions are the operators C(/), C(//), C(%), C(/=), C(//=), C(%=) and calls of the numpy division
    functions C(divide), C(true_divide), C(floor_divide), C(mod) and C(remainder) through C(np), C(numpy),
    any other name numpy was imported as, or names imported with C(from numpy import ...).
  - Not reported as raw are divisions inside the arguments of a guard call, as the one in
    V(safe_log\(high / low\)); divisions by a non-zero numeric constant, including negative and computed
    ones such as C(x / 2), C(x / -1.5), C(x / 1e3) and V(x / \(24 * 60\)), while a division by C(0) or
    C(0.0) is reported; and C(%) whose left operand is a string or bytes literal, which is string
    formatting, as in C("%s" % value).
  - Guard calls are recognised by the called name, both as a plain call, V(safe_divide\(a, b\)), and as an
    attribute call, V(so.safe_divide\(a, b\)).
  - The task fails when a file has more raw divisions than O(baseline) allows (none by default), unless
    O(fail_on_unguarded=false). It also fails when a path does not exist or a file is not valid Python.
  - "Read-only; runs on the managed hosts or on the controller (C(delegate_to: localhost)) and never
    reports a change."
author:
  - Virtuoso deploy maintainers
options:
  paths:
    description:
      - Python files or directories to audit.
      - Directories are walked recursively for C(*.py) files; C(__pycache__) and hidden directories
        (C(.venv), C(.git)) are skipped. A file given directly is audited whatever its name.
      - Relative paths are relative to the working directory of the module; prefer absolute paths,
        for example C({{ playbook_dir }}/../src/indicators) when delegating to the controller.
    type: list
    elements: path
    required: true
  guard_functions:
    description:
      - Names of the functions whose calls count as guarded divisions.
      - Setting this replaces the default list.
    type: list
    elements: str
    default: [safe_divide, safe_ratio, safe_percentage, safe_pct_change, clamp_score, safe_log, safe_sqrt,
              safe_mean, safe_std]
  fail_on_unguarded:
    description:
      - Fail the task when a file has more raw divisions than its O(baseline) entry allows.
      - With V(false) the findings are only reported.
    type: bool
    default: true
  baseline:
    description:
      - Known raw divisions to tolerate, as a mapping of file to the number of raw divisions allowed in it.
      - A key is matched against the file's path relative to the O(paths) entry it was found under, with C(/)
        separators (for O(paths=[/srv/app/src]) the key for C(/srv/app/src/utils/safe_operations.py) is
        V(utils/safe_operations.py)); when the O(paths) entry is a file, against its basename. A key equal to
        the full path reported in RV(files) matches too.
      - Keys that match no audited file, and entries that allow more raw divisions than remain, produce a
        warning so the baseline can be tightened.
    type: dict
    default: {}
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
  - The implementation of the guard functions itself contains raw divisions; leave it out of O(paths)
    or allow them with O(baseline).
  - The audit is syntactic. It cannot tell whether a divisor that is not a constant can be zero, and it does not
    follow divisions through other helpers, pandas methods such as C(Series.div) or the C(divmod) builtin.
"""

EXAMPLES = r"""
- name: Audit the indicator code on the controller before it is shipped
  division_guard_audit:
    paths:
      - "{{ playbook_dir }}/../src/indicators"
  delegate_to: localhost
  run_once: true

- name: Audit the deployed release, tolerating the guard implementation itself
  division_guard_audit:
    paths:
      - /opt/virtuoso/current/src
    baseline:
      utils/safe_operations.py: 9
  register: division_audit

- name: Only report, with a project-specific list of guards
  division_guard_audit:
    paths:
      - /opt/virtuoso/current/src/services
    guard_functions: [safe_divide, safe_ratio, checked_div]
    fail_on_unguarded: false
"""

RETURN = r"""
files:
  description: Audit result per file, keyed by the file's path (the O(paths) entry joined with the path
    below it).
  returned: always
  type: dict
  sample:
    /opt/virtuoso/current/src/indicators/rsi.py:
      relpath: rsi.py
      guarded: 4
      unguarded: 1
      allowed: 0
      findings:
        - line: 42
          col: 17
          op: /
          source: rs = avg_gain / avg_loss
  contains:
    relpath:
      description: The path relative to the O(paths) entry the file was found under (its basename when the
        entry is the file); the key O(baseline) entries are matched against.
      returned: always
      type: str
      sample: rsi.py
    guarded:
      description: Number of guard function calls.
      returned: always
      type: int
      sample: 4
    unguarded:
      description: Number of raw divisions.
      returned: always
      type: int
      sample: 1
    allowed:
      description: Raw divisions allowed in this file by O(baseline) (V(0) without an entry).
      returned: always
      type: int
      sample: 0
    findings:
      description: The raw divisions, in source order.
      returned: always
      type: list
      elements: dict
      contains:
        line:
          description: 1-based line of the operator (of the callee for numpy calls).
          returned: always
          type: int
          sample: 42
        col:
          description: 1-based column of the operator (of the callee for numpy calls).
          returned: always
          type: int
          sample: 17
        op:
          description: The operator (V(/), V(//), V(%), V(/=), V(//=), V(%=)) or the numpy callee as written
            (V(np.divide)).
          returned: always
          type: str
          sample: /
        source:
          description: The stripped source line (at most 200 characters).
          returned: always
          type: str
          sample: rs = avg_gain / avg_loss
guarded:
  description: Total number of guard function calls in all files.
  returned: always
  type: int
  sample: 57
unguarded:
  description: Total number of raw divisions in all files, including those allowed by O(baseline).
  returned: always
  type: int
  sample: 1
over_baseline:
  description: Paths (keys of RV(files)) that have more raw divisions than O(baseline) allows.
  returned: always
  type: list
  elements: str
  sample: [/opt/virtuoso/current/src/indicators/rsi.py]
msg:
  description: Summary of the audit; on failure it lists the offending lines and what to do.
  returned: always
  type: str
  sample: "audited 14 files: 57 guarded, 0 unguarded divisions"
"""

import os
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.virtuoso_division_audit import (
    DEFAULT_GUARD_FUNCTIONS,
    AuditError,
    FileReport,
    audit_file,
    iter_python_files,
)

MAX_LISTED_FINDINGS = 10


def build_module() -> AnsibleModule:
    """Create the AnsibleModule with this module's argument spec."""
    return AnsibleModule(
        argument_spec={
            "paths": {"type": "list", "elements": "path", "required": True},
            "guard_functions": {"type": "list", "elements": "str", "default": list(DEFAULT_GUARD_FUNCTIONS)},
            "fail_on_unguarded": {"type": "bool", "default": True},
            "baseline": {"type": "dict", "default": {}},
        },
        supports_check_mode=True,
    )


def validate_params(module: AnsibleModule) -> dict[str, int]:
    """Fail on option values the argument spec cannot check; return the baseline as str -> int."""
    params = module.params
    if not params["paths"]:
        module.fail_json(msg="paths is empty; give at least one Python file or directory to audit")
    missing = [path for path in params["paths"] if not os.path.exists(path)]
    if missing:
        module.fail_json(
            msg=f"paths do not exist: {', '.join(missing)}; check the paths (relative paths are "
            "resolved against the module's working directory, prefer absolute ones)"
        )
    bad = [name for name in params["guard_functions"] if not name.isidentifier()]
    if bad:
        module.fail_json(
            msg=f"guard_functions must be plain function names (without module prefix): {', '.join(bad)}"
        )
    baseline: dict[str, int] = {}
    for key, value in params["baseline"].items():
        try:
            allowed = int(value)
        except (TypeError, ValueError):
            allowed = -1
        if isinstance(value, bool) or allowed < 0:
            module.fail_json(
                msg=f"baseline[{key!r}] must be a non-negative integer (allowed raw divisions), got {value!r}"
            )
        baseline[str(key)] = allowed
    return baseline


def collect_files(paths: list[str]) -> list[tuple[str, str]]:
    """List (path, relpath) of every file to audit, without duplicates."""
    seen: set[str] = set()
    files: list[tuple[str, str]] = []
    for entry in paths:
        for path, relpath in iter_python_files(entry):
            key = os.path.realpath(path)
            if key not in seen:
                seen.add(key)
                files.append((os.path.normpath(path), relpath))
    return files


def audit_all(module: AnsibleModule, files: list[tuple[str, str]]) -> list[FileReport]:
    """Audit every file; fail the task listing all files that cannot be parsed."""
    reports: list[FileReport] = []
    errors: list[str] = []
    for path, relpath in files:
        try:
            reports.append(audit_file(path, relpath, module.params["guard_functions"]))
        except AuditError as exc:
            errors.append(str(exc))
    if errors:
        module.fail_json(msg=f"cannot audit {len(errors)} file(s), fix them first: {'; '.join(errors)}")
    return reports


def allowed_for(report: FileReport, baseline: dict[str, int]) -> int:
    """Return the raw divisions the baseline allows for ``report``'s file."""
    return baseline.get(report.relpath, baseline.get(report.path, 0))


def warn_about_baseline(module: AnsibleModule, reports: list[FileReport], baseline: dict[str, int]) -> None:
    """Warn about baseline entries that match nothing or allow more than remains."""
    known = {report.relpath for report in reports} | {report.path for report in reports}
    for key in sorted(set(baseline) - known):
        module.warn(f"baseline entry {key!r} matches no audited file; remove or fix it")
    for report in reports:
        allowed = allowed_for(report, baseline)
        if report.unguarded < allowed:
            module.warn(
                f"baseline allows {allowed} raw divisions in {report.relpath} but only {report.unguarded} "
                "remain; lower the baseline entry"
            )


def report_dict(report: FileReport, allowed: int) -> dict[str, Any]:
    """Return one file's entry of the ``files`` result."""
    return {
        "relpath": report.relpath,
        "guarded": report.guarded,
        "unguarded": report.unguarded,
        "allowed": allowed,
        "findings": [finding.as_dict() for finding in report.findings],
    }


def failure_message(module: AnsibleModule, over: list[FileReport], baseline: dict[str, int]) -> str:
    """Describe the files over their baseline, their first findings and how to fix them."""
    excess = sum(report.unguarded - allowed_for(report, baseline) for report in over)
    lines = [
        f"{report.path}:{finding.line}:{finding.col} ({finding.op}) {finding.source}"
        for report in over
        for finding in report.findings
    ]
    listed = "; ".join(lines[:MAX_LISTED_FINDINGS])
    if len(lines) > MAX_LISTED_FINDINGS:
        listed += f"; ... and {len(lines) - MAX_LISTED_FINDINGS} more (see files[].findings)"
    guards = ", ".join(module.params["guard_functions"][:3])
    return (
        f"{excess} unguarded division(s) over the baseline in {len(over)} file(s): {listed}. "
        f"Wrap each division in a guard function ({guards}, ...), divide by a non-zero constant, or "
        "if it is provably safe add the file to baseline"
    )


def main() -> None:
    """Entry point: audit the paths and report."""
    module = build_module()
    baseline = validate_params(module)
    files = collect_files(module.params["paths"])
    if not files:
        module.warn(f"no Python files found under {', '.join(module.params['paths'])}")
    reports = audit_all(module, files)
    warn_about_baseline(module, reports, baseline)
    over = [report for report in reports if report.unguarded > allowed_for(report, baseline)]
    result: dict[str, Any] = {
        "changed": False,
        "files": {report.path: report_dict(report, allowed_for(report, baseline)) for report in reports},
        "guarded": sum(report.guarded for report in reports),
        "unguarded": sum(report.unguarded for report in reports),
        "over_baseline": [report.path for report in over],
    }
    summary = f"audited {len(reports)} file(s): {result['guarded']} guarded, {result['unguarded']} unguarded divisions"
    if over and module.params["fail_on_unguarded"]:
        module.fail_json(msg=failure_message(module, over, baseline), **result)
    if over:
        summary += f"; {len(over)} file(s) over the baseline (not failing: fail_on_unguarded=false)"
    module.exit_json(msg=summary, **result)


if __name__ == "__main__":
    main()
