"""An injected clock, so that windows, TTLs and timeouts can be driven by tests and by replayed telemetry; and the
wall-clock :class:`Ticker` a live App closes its detection windows with.

Components take a :class:`Clock` instead of calling ``time`` themselves. :class:`SystemClock` is the real one;
:class:`ManualClock` only moves when told to (tests, replay at recorded time).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

logger = logging.getLogger(__name__)


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


class Ticker:
    """Calls ``fn`` every ``seconds`` of wall time on a daemon thread until stopped (the detector's window close
    when no telemetry arrives). ``last_ok`` is when a call last succeeded (monotonic; the start before the first),
    so that health can tell detection that stopped closing windows."""

    def __init__(self, fn: Callable[[], None], seconds: float, failed: Callable[[], None] = lambda: None) -> None:
        self.fn, self.seconds, self.failed = fn, seconds, failed
        self.last_ok: float | None = None  # None: not started
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rootward-ticker", daemon=True)

    def start(self) -> None:
        self.last_ok = time.monotonic()
        self._thread.start()

    def since_ok(self) -> float:
        """Seconds since a call last succeeded (0 when not started)."""
        return 0.0 if self.last_ok is None else max(0.0, time.monotonic() - self.last_ok)

    def stalled(self) -> bool:
        """Started, and no call succeeded for three periods (a minute at least): a thread that died, or a tick
        that fails every time."""
        if self.last_ok is None:
            return False
        return not self._thread.is_alive() or time.monotonic() - self.last_ok > max(3 * self.seconds, 60.0)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.last_ok = None  # stopped: not stalled

    def _run(self) -> None:
        while not self._stop.wait(self.seconds):
            try:
                self.fn()
            except Exception:  # a failed tick must not end the loop; it is logged with its traceback and counted
                logger.exception("detector tick failed")
                self.failed()
            else:
                self.last_ok = time.monotonic()
