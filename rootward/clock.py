"""An injected clock, so that windows, TTLs and timeouts can be driven by tests and by replayed telemetry.

Components take a :class:`Clock` instead of calling ``time`` themselves. :class:`SystemClock` is the real one;
:class:`ManualClock` only moves when told to (tests, replay at recorded time).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Wall-clock time, seconds since the Unix epoch."""
        ...

    def monotonic(self) -> float:
        """A monotonic time in seconds, for measuring intervals and deadlines."""
        ...


class SystemClock:
    """The machine's clock."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


class ManualClock:
    """A clock that moves only by :meth:`advance` or :meth:`set`; thread-safe."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._t = start
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._t

    def monotonic(self) -> float:
        return self.now()

    def advance(self, seconds: float) -> None:
        """Move forward by ``seconds`` (>= 0)."""
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        with self._lock:
            self._t += seconds

    def set(self, t: float) -> None:
        """Jump to ``t`` if it is later than now (replayed time never goes backwards)."""
        with self._lock:
            self._t = max(self._t, t)


def roll(current: int | None, now: float, window_s: float, close: Callable[[int], None]) -> int:
    """The number of the window ``now`` falls in, after closing the open window ``current`` when ``now`` has passed it
    (windows are ``now // window_s``; the first call only opens one)."""
    number = int(now // window_s)
    if current is not None and number > current:
        close(current)
    return number if current is None or number > current else current
