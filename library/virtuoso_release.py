#!/usr/bin/python
"""Ansible module: manage Virtuoso releases (prepare, switch, verify, roll back, clean, adopt)."""

from __future__ import annotations

import contextlib
import os
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.virtuoso_releases import (
    Layout,
    ReleaseError,
    ReleaseManager,
    exclusive_lock,
    validate_legacy_paths,
    validate_release_id,
)

DOCUMENTATION = r"""
---
module: virtuoso_release
short_description: Manage atomic releases of the Virtuoso app (releases/, shared/, current)
description:
  - Manages an Ansistrano-style layout under O(root) - C(releases/<release_id>/) (each holding
    C(src/), C(tests/), C(venv311/) and C(REVISION)), C(shared/) and the symlink C(current).
  - C(current) is a B(relative) symlink C(current -> releases/<release_id>). It is always replaced
    atomically by creating a temporary symlink next to it and renaming it over C(current), so
    C(current) never disappears, not even for a moment.
  - Release status is kept as marker files inside each release directory
    (C(.virtuoso-unfinished) while it is being built, C(.virtuoso-failed) with the reason and UTC
    time once it failed) and in the append-only history C(<root>/.virtuoso-history.jsonl), one JSON
    object per line with keys C(release), C(event) (C(activated), C(good), C(failed),
    C(rolled_back_from), C(adopted)), C(at) (ISO-8601 UTC) and optionally C(reason).
  - A release is B(good) when the history has a C(good) event for it and it has no failed marker.
    The B(previous good release) is the most recently activated good release other than the one
    C(current) resolves to, decided from the order of the history and C(realpath(current)), never
    from modification times. A release that was rolled back from is skipped until it is activated
    again, so repeated rollbacks walk further back.
  - Mutating runs hold an exclusive C(fcntl) lock on C(<root>/.virtuoso-release.lock) (waiting up to
    300 seconds for another run), so two runs can never interleave.
  - Release ids sort chronologically by their embedded C(YYYYMMDDTHHMMSSZ) stamp (then by id); ids
    without a stamp sort as the oldest.
options:
  root:
    description:
      - The application root, for example C(/home/linuxuser/trading/Virtuoso_ccxt).
      - Created (with C(releases/) and C(shared/)) by O(state=prepare).
    type: path
    required: true
  state:
    description:
      - V(query) only reads and returns the facts.
      - V(prepare) creates O(root), C(releases/), C(shared/) if missing and C(releases/<release>/)
        holding the unfinished marker. An existing unfinished release is kept as is (re-used by the
        next build), an existing finished release is left untouched (C(changed=false)), a failed one
        is refused.
      - V(finalize) removes the unfinished marker; refused for a failed release.
      - V(switch) atomically points C(current) at the release and records C(activated). Refuses
        missing, unfinished and failed releases. C(changed=false) if it is already current.
      - V(mark_good) records C(good) (C(changed=false) if already good); refused for failed or
        unfinished releases.
      - V(mark_failed) writes the failed marker and records C(failed) with O(reason); C(changed=false)
        if it is already marked failed (the first reason is kept).
      - V(rollback) points C(current) at O(release) if given (must exist, be finished and not failed)
        or else at the previous good release, recording C(rolled_back_from) for the release that was
        current (with O(reason)) and C(activated) for the target. Fails with
        C(nothing to roll back to) when there is no candidate.
      - V(clean) deletes unfinished releases, then failed releases, then the oldest remaining
        releases beyond the O(keep) newest. The current release and the previous good release are
        never deleted (so up to O(keep)+2 releases can remain). Leftover C(.tmp-*)/C(.trash-*)
        directories of killed runs are removed too. Run it at the end of a deploy, not while another
        deploy is building a release.
      - V(adopt) turns the old flat layout (a directory of O(legacy_paths) under O(root) and no
        C(current)) into the first release - copies (never moves) the O(legacy_paths) directories
        into C(releases/<release>) (default id C(legacy-<UTC YYYYMMDDTHHMMSSZ>)), makes C(venv311)
        in it a symlink to the absolute path of C(<root>/venv311) if that exists (venvs are not
        relocatable and are never copied), writes C(REVISION), points C(current) at it and records
        C(adopted), C(activated) and C(good). No-op when C(current) exists or there is no flat layout.
    type: str
    required: true
    choices: [query, prepare, finalize, switch, mark_good, mark_failed, rollback, clean, adopt]
  release:
    description:
      - The release id, for example C(20261124T031500Z-ab12cd3).
      - 1-128 letters, digits, C(.), C(_) or C(-), starting with a letter or digit, no C(/) or C(..).
      - Required for O(state=prepare), O(state=finalize), O(state=switch), O(state=mark_good) and
        O(state=mark_failed); optional for O(state=rollback) and O(state=adopt); ignored otherwise.
    type: str
  keep:
    description:
      - Number of newest releases O(state=clean) keeps; at least 2.
    type: int
    default: 5
  reason:
    description:
      - Why the release failed (O(state=mark_failed), stored in the failed marker and the history;
        defaults to C(marked failed)) or why it is rolled back (O(state=rollback), stored with the
        C(rolled_back_from) event).
    type: str
  legacy_paths:
    description:
      - Directory names under O(root) that make up the old flat layout and are copied by
        O(state=adopt). Must not contain C(venv311), which is linked instead.
    type: list
    elements: str
    default: [src, tests]
extends_documentation_fragment:
  - action_common_attributes
attributes:
  check_mode:
    support: full
    details: Nothing is touched; the returned facts describe the state the real run would produce.
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - Only needs the Python standard library on the target host.
  - Malformed history lines (for example a torn write) are ignored with a warning.
author:
  - Virtuoso deploy team
"""

EXAMPLES = r"""
- name: Prepare the new release directory
  virtuoso_release:
    root: /home/linuxuser/trading/Virtuoso_ccxt
    state: prepare
    release: "{{ virtuoso_release_id }}"

# ... copy src/ tests/, build venv311/, write REVISION into releases/<id> ...

- name: Mark the release as completely built
  virtuoso_release:
    root: /home/linuxuser/trading/Virtuoso_ccxt
    state: finalize
    release: "{{ virtuoso_release_id }}"

- name: Switch current to the new release
  virtuoso_release:
    root: /home/linuxuser/trading/Virtuoso_ccxt
    state: switch
    release: "{{ virtuoso_release_id }}"

- name: Record that the health checks passed
  virtuoso_release:
    root: /home/linuxuser/trading/Virtuoso_ccxt
    state: mark_good
    release: "{{ virtuoso_release_id }}"

- name: Mark the release failed and roll back to the previous good one
  block:
    - name: Mark failed
      virtuoso_release:
        root: /home/linuxuser/trading/Virtuoso_ccxt
        state: mark_failed
        release: "{{ virtuoso_release_id }}"
        reason: "health check failed: {{ health.msg | default('unknown') }}"
    - name: Roll back
      virtuoso_release:
        root: /home/linuxuser/trading/Virtuoso_ccxt
        state: rollback
        reason: health check failed

- name: Keep the 5 newest releases
  virtuoso_release:
    root: /home/linuxuser/trading/Virtuoso_ccxt
    state: clean
    keep: 5
  register: cleaned

- name: Adopt a host that still runs the old flat layout
  virtuoso_release:
    root: /home/linuxuser/trading/Virtuoso_ccxt
    state: adopt

- name: Read the facts
  virtuoso_release:
    root: /home/linuxuser/trading/Virtuoso_ccxt
    state: query
  register: releases
"""

RETURN = r"""
root:
  description: The application root (absolute).
  returned: always
  type: str
  sample: /home/linuxuser/trading/Virtuoso_ccxt
current_release:
  description:
    - Id of the release C(current) resolves to, or V(null) if C(current) is missing or does not
      point into C(releases/).
    - In check mode, the release it would point to.
  returned: always
  type: str
  sample: 20261124T031500Z-ab12cd3
previous_good_release:
  description: The most recently activated good release other than the current one, or V(null).
  returned: always
  type: str
  sample: 20261123T101500Z-9f8e7d6
releases:
  description: All releases, oldest first.
  returned: always
  type: list
  elements: dict
  contains:
    id:
      description: Release id.
      type: str
      sample: 20261124T031500Z-ab12cd3
    status:
      description:
        - V(unfinished) (being built), V(failed) (failed marker), V(good) (a C(good) event and no
          failed marker) or V(unverified) (finished, not yet marked good).
      type: str
      sample: good
    current:
      description: Whether C(current) points to this release.
      type: bool
      sample: true
    path:
      description: Absolute path of the release directory.
      type: str
      sample: /home/linuxuser/trading/Virtuoso_ccxt/releases/20261124T031500Z-ab12cd3
removed:
  description: Ids of the releases deleted (in check mode, that would be deleted).
  returned: when O(state=clean)
  type: list
  elements: str
  sample: [20261120T080000Z-0a1b2c3]
previous_release:
  description: Id of the release C(current) pointed to before the run, or V(null).
  returned: when O(state=switch) or O(state=rollback)
  type: str
  sample: 20261124T031500Z-ab12cd3
"""

STATES = ["query", "prepare", "finalize", "switch", "mark_good", "mark_failed", "rollback", "clean", "adopt"]
NEEDS_RELEASE = ["prepare", "finalize", "switch", "mark_good", "mark_failed"]

ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    "root": {"type": "path", "required": True},
    "state": {"type": "str", "required": True, "choices": STATES},
    "release": {"type": "str"},
    "keep": {"type": "int", "default": 5},
    "reason": {"type": "str"},
    "legacy_paths": {"type": "list", "elements": "str", "default": ["src", "tests"]},
}


def validate_params(params: dict[str, Any]) -> None:
    """Raise ReleaseError for parameters the argument spec cannot express."""
    if params["keep"] < 2:
        raise ReleaseError(
            f"keep must be at least 2 (current and the previous good release are always kept); "
            f"got {params['keep']}"
        )
    if params["release"] is not None:
        validate_release_id(params["release"])
    validate_legacy_paths(params["legacy_paths"])


def lock_for(
    layout: Layout, params: dict[str, Any], check_mode: bool
) -> contextlib.AbstractContextManager[None]:
    """The lock a run needs, or a null context when the run cannot mutate anything.

    Query and check mode never lock. Without ``releases/`` there is nothing to lock except for
    prepare (which creates root first so it can lock it) and an adopt that will find a flat
    layout; the state is re-checked under the lock, so skipping it for no-ops is race free.
    """
    state = params["state"]
    if state == "query" or check_mode:
        return contextlib.nullcontext()
    if not os.path.isdir(layout.releases_dir):
        if state == "prepare":
            os.makedirs(layout.root, exist_ok=True)
        elif state != "adopt" or not adoptable(layout, params["legacy_paths"]):
            return contextlib.nullcontext()
    return exclusive_lock(layout.lock_file)


def adoptable(layout: Layout, legacy_paths: list[str]) -> bool:
    """Whether root looks like the old flat layout: a legacy directory and no ``current``."""
    return not os.path.lexists(layout.current_link) and any(
        os.path.isdir(os.path.join(layout.root, name)) for name in legacy_paths
    )


def dispatch(manager: ReleaseManager, params: dict[str, Any]) -> dict[str, Any]:
    """Run the requested state on ``manager``; return the state-specific result keys."""
    state, release = params["state"], params["release"]
    if state == "prepare":
        manager.prepare(release)
    elif state == "finalize":
        manager.finalize(release)
    elif state == "switch":
        return {"previous_release": manager.switch(release)}
    elif state == "mark_good":
        manager.mark_good(release)
    elif state == "mark_failed":
        manager.mark_failed(release, params["reason"])
    elif state == "rollback":
        return {"previous_release": manager.rollback(release, params["reason"])}
    elif state == "clean":
        return {"removed": manager.clean(params["keep"])}
    elif state == "adopt":
        manager.adopt(release, params["legacy_paths"])
    return {}


def run(module: AnsibleModule) -> dict[str, Any]:
    """Validate, lock, run the state and return the full result (raises ReleaseError/OSError)."""
    params = module.params
    validate_params(params)
    layout = Layout(os.path.abspath(params["root"]))
    read_only = params["state"] == "query" or module.check_mode
    with lock_for(layout, params, module.check_mode):
        manager = ReleaseManager(layout, check_mode=read_only)
        for warning in manager.snapshot.warnings:
            module.warn(warning)
        extra = dispatch(manager, params)
        return {"changed": manager.changed, **manager.snapshot.facts(), **extra}


def main() -> None:
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        required_if=[("state", state, ["release"]) for state in NEEDS_RELEASE],
        supports_check_mode=True,
    )
    try:
        result = run(module)
    except ReleaseError as exc:
        module.fail_json(msg=str(exc), root=module.params["root"])
    except OSError as exc:
        where = f" on {exc.filename}" if exc.filename else ""
        module.fail_json(
            msg=f"state={module.params['state']} failed{where}: {exc.strerror or exc}; "
            "check permissions and free space, then re-run (completed steps are not repeated)",
            root=module.params["root"],
        )
    else:
        module.exit_json(**result)


if __name__ == "__main__":
    main()
