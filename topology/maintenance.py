"""The graph's upkeep in one background thread: every ``interval_s``, age out what was not seen for the TTL, then
(with the history on) write a checkpoint and thin and prune old ones. At shutdown a final checkpoint records every
last change, so a clean restart loses nothing.

The loop never dies: a failed checkpoint is logged and counted (``rootward_topology_checkpoint_failures_total``)
and the next one writes what it missed.
"""

from __future__ import annotations

import logging
import threading

from rootward.telemetry import Telemetry
from rootward.topology.graph import TopologyGraph
from rootward.topology.history import History

logger = logging.getLogger(__name__)


class Maintenance:
    """Ageing and checkpoints of one :class:`TopologyGraph`. ``start``/``shutdown`` are safe to repeat."""

    def __init__(
        self, topology: TopologyGraph, history: History | None, interval_s: float, telemetry: Telemetry
    ) -> None:
        self.topology = topology
        self.history = history
        self.interval_s = interval_s
        self.telemetry = telemetry
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._finished = False
        self._last: float | None = None  # when upkeep_at last ran a round

    def upkeep_at(self, now: float) -> None:
        """Run a round once ``interval_s`` of ``now`` (the App's clock) has passed since the last: an in-process
        replay's upkeep, on replayed time. The thread's rounds come every ``interval_s`` of wall time, so in a replay
        they fell at a different replayed time in every run (edges aged out earlier or later), and the shared
        TrainTicket day's incidents changed with the machine's load."""
        if self._last is None:
            self._last = now
        elif now - self._last >= self.interval_s:
            self._last = now
            self.run_once()

    def start(self) -> None:
        if self._thread is not None or self._finished:
            return
        self._thread = threading.Thread(target=self._run, name="rootward-topology-upkeep", daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        """Stop the thread, then write a final checkpoint (once, and only when the upkeep ran: the thread was
        started, or ``upkeep_at`` was called)."""
        self._stop.set()
        ran = self._last is not None
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            ran = True
        if ran and not self._finished:
            self.checkpoint(prune=False)
        self._finished = True

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.run_once()

    def run_once(self) -> None:
        """One round: age out, checkpoint, prune."""
        try:
            self.topology.expire_pending()  # with detection off there is no ticker to do it
        except Exception:  # the loop boundary: log, go on to the ageing
            logger.exception("expiring the topology's pending spans failed")
        try:
            self.telemetry.aged_out.inc(self.topology.age_out())
        except Exception:  # the loop boundary: log, count, go on
            logger.exception("ageing out the topology graph failed")
        self.checkpoint()

    def checkpoint(self, prune: bool = True) -> None:
        """Write a checkpoint and prune (no-op without a history); failures are logged and counted."""
        history = self.history
        if history is None:
            return
        t = self.telemetry
        try:
            stats = history.checkpoint(self.topology)
            t.checkpoint_seconds.observe(stats.seconds)
            t.checkpoint_rows.inc(stats.rows)
            t.last_checkpoint.set(stats.t)
            if prune:
                history.prune()
            t.history_bytes.set(history.size_bytes())
        except Exception:
            t.checkpoint_failures.inc()
            logger.exception("topology checkpoint to %s failed", history.path)
