"""Where the shared, read-only test data lives: ../shared/data beside the clone (as in CI), or
$ROOTWARD_SHARED_DATA."""

from __future__ import annotations

import os
from pathlib import Path

SHARED_DATA = Path(os.environ.get("ROOTWARD_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
if not SHARED_DATA.is_dir():  # pragma: no cover - a setup problem, said plainly
    raise RuntimeError(f"shared test data not found at {SHARED_DATA}; set ROOTWARD_SHARED_DATA")
