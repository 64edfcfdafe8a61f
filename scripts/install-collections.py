"""Unpack the Ansible collections the project needs from the PyPI `ansible` bundle wheel.

Galaxy is not reachable from these machines, but PyPI is: the `ansible` wheel carries every
collection. Only the named ones are extracted (about 2 MB of a 54 MB wheel), so the project
never depends on the 570 MB full install.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

BUNDLE = "ansible==12.3.0"
COLLECTIONS = ("containers/podman", "ansible/posix")


def download_bundle(into: Path) -> Path:
    """Download the bundle wheel (no dependencies) and return its path."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(into), BUNDLE],
        check=True,
    )
    return next(into.glob("ansible-*.whl"))


def extract(wheel: Path, destination: Path) -> list[str]:
    """Extract only the wanted collections; return the member prefixes that were found."""
    prefixes = [f"ansible_collections/{name}/" for name in COLLECTIONS]
    with zipfile.ZipFile(wheel) as bundle:
        members = [m for m in bundle.namelist() if m.startswith(tuple(prefixes))]
        bundle.extractall(destination, members)
    return [p for p in prefixes if any(m.startswith(p) for m in members)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("destination", type=Path, help="collections path (holds ansible_collections/)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        found = extract(download_bundle(Path(tmp)), args.destination)
    if len(found) != len(COLLECTIONS):
        print(f"install-collections: error: {BUNDLE} lacks one of {COLLECTIONS}", file=sys.stderr)
        return 1
    print(f"install-collections: {', '.join(COLLECTIONS)} from {BUNDLE} -> {args.destination}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
