"""What only the whole deploy.yml does: a timestamped release id, marked good after its checks."""

from __future__ import annotations

import json
import os
import re

from conftest import APP_ROOT


def test_release_id_is_utc_stamp_and_content_hash(current_release, revision):
    release_id = os.path.basename(current_release)
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{8}", release_id), release_id
    assert release_id.endswith(revision["content_hash"][:8])


def test_current_release_is_marked_good_once(host, current_release):
    lines = host.file(f"{APP_ROOT}/.virtuoso-history.jsonl").content_string.splitlines()
    events = [json.loads(line) for line in lines if line.strip()]
    release_id = os.path.basename(current_release)
    assert [e["event"] for e in events if e["release"] == release_id].count("good") == 1, events
    # The re-run (idempotence) reused the release: one release, activated once.
    assert [e["event"] for e in events].count("activated") == 1, events
    assert host.check_output("ls %s", f"{APP_ROOT}/releases").split() == [release_id]
