"""Make the release root importable when run as ``python -m pytest tests/validation``.

The on-host smoke gate runs inside the production venv from a release directory holding
``src/`` and ``tests/`` side by side, possibly without pyproject.toml; this conftest is the
only one it loads and needs nothing beyond the standard library.
"""

from __future__ import annotations

import sys
from pathlib import Path

RELEASE_ROOT = Path(__file__).resolve().parents[2]
if str(RELEASE_ROOT) not in sys.path:
    sys.path.insert(0, str(RELEASE_ROOT))
