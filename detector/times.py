"""Times in Kubernetes objects and audit entries: RFC 3339 strings, read as Unix seconds."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any


def stamp(obj: Mapping[str, Any], keys: tuple[str, ...], now: float) -> float:
    """The first of ``keys`` that is an RFC 3339 time with a zone, at most ``now`` (a skewed clock must not put
    something after what it would explain); else ``now``."""
    for key in keys:
        raw = obj.get(key)
        if isinstance(raw, str):
            try:
                at = datetime.fromisoformat(raw)
            except ValueError:
                continue
            if at.tzinfo is not None:
                return min(at.timestamp(), now)
    return now
