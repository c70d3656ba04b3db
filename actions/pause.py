"""Pausing actions: the brake a human pulls. While paused, every request runs as in ``dry-run`` mode (decided and
dry-run on the server, never changing the cluster) and no approval is accepted; detection, incidents, diagnoses and
alerts go on.

With a Lease (``actions.lease``, the shipped manifests), the pause is the Lease's annotation ``rootward.dev/paused``
(actions/leader.py): every Rootward reads it on each election round, so it holds across handovers and restarts, and
``kubectl annotate`` pulls it without Rootward's API. Its value is the JSON ``rootward actions pause`` writes
(``{"by", "at", "reason"}``) or any text, which is then the reason: whatever it says, a non-empty value pauses.
Without a Lease, :class:`LocalPause` pauses this Rootward only, until it restarts.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import NamedTuple, Protocol

from rootward.clock import Clock, SystemClock

#: The longest reason (and name) kept.
MAX_TEXT = 500


class Paused(NamedTuple):
    by: str
    at: float | None
    reason: str

    @classmethod
    def now(cls, by: str, reason: str, clock: Clock) -> Paused:
        """A pause ``by`` someone, now, for ``reason`` (both bounded)."""
        return cls(by[:MAX_TEXT], round(clock.now(), 3), reason[:MAX_TEXT])

    def describe(self) -> str:
        when = f" at {datetime.fromtimestamp(self.at, UTC):%Y-%m-%d %H:%M:%S} UTC" if self.at is not None else ""
        return f"paused by {self.by}{when}" + (f": {self.reason}" if self.reason else "")

    def as_json(self) -> dict[str, object]:
        return {"by": self.by, "at": self.at, "reason": self.reason}


def parse(raw: object) -> Paused | None:
    """A pause from an annotation's value: None when absent or blank; the JSON ``{"by", "at", "reason"}``, or any
    other text as the reason (a malformed value pauses all the same: the safe reading)."""
    if not isinstance(raw, str) or not raw.strip():
        return None
    try:
        value = json.loads(raw[: 64 * 1024])
    except (ValueError, RecursionError):
        value = None
    if isinstance(value, dict):
        at = value.get("at")
        finite = isinstance(at, int | float) and not isinstance(at, bool) and math.isfinite(at)
        return Paused(
            str(value.get("by") or "someone")[:MAX_TEXT], float(at) if finite else None,  # type: ignore[arg-type]
            str(value.get("reason") or "")[:MAX_TEXT],
        )  # fmt: skip
    return Paused("the Lease's annotation", None, raw.strip()[:MAX_TEXT])


def text(paused: Paused) -> str:
    """The annotation's value for ``paused``."""
    return json.dumps(paused.as_json())


class Pause(Protocol):
    """Where the pause lives: the Lease (LeaderElector) or this process (LocalPause)."""

    @property
    def paused(self) -> Paused | None: ...

    def set_paused(self, by: str, reason: str) -> Paused: ...

    def clear_paused(self) -> None: ...


class LocalPause:
    """A pause of this Rootward only (no Lease), until it restarts."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.paused: Paused | None = None
        self.clock = clock or SystemClock()

    def set_paused(self, by: str, reason: str) -> Paused:
        self.paused = Paused.now(by, reason, self.clock)
        return self.paused

    def clear_paused(self) -> None:
        self.paused = None
