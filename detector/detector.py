"""The detector: a :class:`~rootward.model.Consumer` that folds telemetry into fixed windows (``window_s``, by the
injected clock, so a replay on replayed time windows as live data would) and, when a window closes, judges every
series that has a value against its baseline, in one vectorised pass. Anomalies confirmed over ``confirm``
consecutive judged values of a series are handed to a sink (the incident lifecycle).

``log_warnings`` and ``log_errors`` are judged as the trailing ``log_trail_s`` sum of a service's WARN lines and
its ERROR-and-above lines, not one
window's count: a service that logs an error every few seconds is a trend a minute shows and a 10 s window hides
(the TrainTicket "return" faults raise their service's error logs from ~0 to 5-20 a minute).

Windows close when telemetry of a later window arrives, or when :meth:`Detector.tick` is called (the app calls it
every window, so a quiet pipeline still closes its windows; a replay calls it as its clock moves).
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from rootward.clock import Clock, SystemClock, roll
from rootward.detector.baseline import EDGE_PREFIX, Baselines, bad_side, rule_for
from rootward.detector.kube_metrics import Bounded
from rootward.detector.multivariate import Multivariate
from rootward.detector.seasonal import Seasonal
from rootward.detector.silence import Silence
from rootward.detector.windows import LOG_SIGNALS, SeriesTable, Window
from rootward.model import LogBatch, MetricBatch, SpanBatch


@dataclass(frozen=True, slots=True)
class Anomaly:
    """One series out of line in one window: observed vs expected (the baseline median), and the signed robust z."""

    entity: str
    signal: str
    value: float
    expected: float
    score: float
    start: float
    end: float
    source: str = ""  # the Rootward that found it, when another one did (forwarded: rootward/forwarded.py)


#: Windows between looks for series to release (360: hourly at 10 s windows).
_RELEASE_EVERY = 360
#: Other replicas' series windows kept (``Detector.remember``): ~1 KiB each at 30 values, ~4 KiB at the most
#: (rootward.forwarded.MAX_WINDOW).
MAX_FOREIGN = 5000


class Call(NamedTuple):
    """One edge's calls in one batch, as the topology paired them: ``seconds`` is what the caller saw (its client
    spans' time; a callee's server time where the client span was not seen), ``gaps`` the client-minus-server
    seconds of each call that had both spans."""

    caller: str
    callee: str
    requests: int
    errors: int
    seconds: float
    gaps: Sequence[float] | np.ndarray = ()
    buckets: np.ndarray | None = None  # calls per bucket of rootward.model.CALL_LATENCY_BUCKETS_S (and one past)


@dataclass(frozen=True, slots=True)
class DetectorSettings:
    window_s: float = 10.0
    history: int = 240
    warmup: int = 12
    z: float = 5.0
    tail_q: float = 0.95
    confirm: int = 2
    max_series: int = 100_000
    log_trail_s: float = 60.0
    seasonality: bool = True
    operations_per_service: int = 0
    silence_s: float = 120.0
    series_ttl_s: float = 25 * 3600.0
    callers_per_callee: int = 50
    learn_after_s: float = 300.0
    edge_quantiles: bool = False
    rules: Mapping[str, Mapping[str, float]] = field(default_factory=dict)  # per-signal overrides (baseline.rule_for)


class Detector:
    """Thread-safe: the pipeline thread consumes, the app's timer ticks."""

    def __init__(
        self,
        sink: Callable[[float, list[Anomaly]], None],
        settings: DetectorSettings | None = None,
        clock: Clock | None = None,
        multivariate: Multivariate | None = None,
        lock: threading.RLock | None = None,
    ) -> None:
        self.settings = settings or DetectorSettings()
        self.multivariate = multivariate
        #: the series in open incidents (Incidents.open_series), whose anomalous values stay out of the baselines
        self.holding: Callable[[], Collection[tuple[str, str]]] | None = None
        self.seasonal = Seasonal() if self.settings.seasonality else None
        self.clock = clock or SystemClock()
        self.sink = sink
        self.table = SeriesTable(self.settings.max_series)
        self.window = Window(self.table, self.settings.window_s, self.settings.operations_per_service)
        s = self.settings
        self.baselines = Baselines(s.history, s.warmup, s.z, s.tail_q)
        self.streak = np.zeros(0, np.int64)
        self.onset = np.zeros(0, np.int64)  # per series: the window its current run of anomalous values began in
        self.trail_n = max(1, round(s.log_trail_s / s.window_s))
        self.learn_after_n = math.ceil(s.learn_after_s / s.window_s)  # windows an incident's anomaly stays unlearned
        self.is_log = np.zeros(0, bool)  # per series: a log_errors or log_warnings series (summed over the trail)
        self.trail = np.zeros((0, self.trail_n))  # per series: its last windows' counts, a ring by window number
        self.trail_at = np.full(self.trail_n, -1, np.int64)  # the window number each ring slot holds
        self.silence = Silence(math.ceil(s.silence_s / s.window_s))  # steady rates that stopped read as 0
        self.valued = np.zeros(0, np.int64)  # per series: the last window it had a value (or was created)
        self.callers: dict[str, set[str]] = {}  # callee -> the callers its edge series are for
        self.current: int | None = None  # the open window's number (start / window_s)
        self.judged = Counter[str]()  # windows, values, anomalies
        self.last_tick_s = 0.0
        # saved rings by key (detector/warm.py): a series seen again after a restart starts from its own
        self.warm: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
        # windows of series other replicas judged, with when they came (Detector.remember)
        self.foreign: Bounded[tuple[str, str], tuple[float, tuple[float, ...]]] = Bounded(MAX_FOREIGN)
        # re-entered when a sink (the agent) reads series windows. The App gives the incidents the same lock: a
        # closing window folds anomalies into incidents holding it, and an incident's sinks, told on any thread
        # (the log miner's, the Kubernetes signals'), read series windows; two locks would be taken in both orders
        self._lock = lock or threading.RLock()

    @property
    def service_of(self) -> dict[str, str]:
        """pod entity -> its service entity, as the resources told."""
        return self.window.service_of

    def held(self) -> threading.RLock:
        """The detector's lock (``with detector.held():``); in the App, the incidents' too."""
        return self._lock

    def recent(self, entity: str, signal: str, n: int) -> tuple[float, ...]:
        """The last ``n`` values of a series, oldest first (empty for an unknown series): an incident's series
        window for the agent."""
        with self._lock:
            i = self.table.index.get((entity, signal))
            if i is None or i >= len(self.baselines):
                came, values = self.foreign.get((entity, signal), (0.0, ()))
                fresh = came >= self.clock.now() - self.settings.series_ttl_s
                return values[-n:] if n > 0 and fresh else ()
            return self.baselines.recent(i, n)

    def remember(self, entity: str, signal: str, values: tuple[float, ...]) -> None:
        """Keep the recent values of a series another replica judged and forwarded an anomaly of (gateway mode):
        ``recent`` answers with them where this Rootward has no such series of its own (a pod's resource series
        routed to another replica; its own share of a service's spans is its own series), for ``series_ttl_s``.
        The newest ``MAX_FOREIGN`` are kept."""
        with self._lock:
            self.foreign.put((entity, signal), (self.clock.now(), values))

    # --- Consumer ----------------------------------------------------------------------------------------------------

    def consume_traces(self, batch: SpanBatch) -> None:
        with self._lock:
            self._roll(self.clock.now())
            self.window.add_spans(batch)

    def consume_metrics(self, batch: MetricBatch) -> None:
        with self._lock:
            self._roll(self.clock.now())
            self.window.add_metrics(batch)

    def consume_logs(self, batch: LogBatch) -> None:
        with self._lock:
            self._roll(self.clock.now())
            self.window.add_logs(batch)

    def consume_calls(self, calls: list[Call]) -> None:
        """One batch's paired calls per edge, from the topology: per edge, on the callee, ``in:<caller>.rate``,
        ``.error_ratio`` and ``.latency`` (what the caller saw: errors and delays of a callee that never shows
        them itself, such as a database) and, with ``edge_quantiles``, ``.p95`` (of the calls' server-side
        durations, the servicegraph connector's request_server_seconds: the network shows in ``net_in``, not
        there); the network gaps judged as the callee's ``net_in`` (a network delay at a pod shows on every call
        into it, and in none of its own spans) and the caller's ``client_net`` (a starved caller stretches all its
        calls)."""
        with self._lock:
            self._roll(self.clock.now())
            edges = [c for c in calls if c.caller and c.caller != c.callee and self._edge(c)]
            self.window.add_rates([(c.callee, f"{EDGE_PREFIX}{c.caller}.rate", c.requests, 1) for c in edges])
            self.window.add_calls(
                [(c.callee, f"{EDGE_PREFIX}{c.caller}.latency", c.seconds, c.requests) for c in edges]
                + [(c.callee, f"{EDGE_PREFIX}{c.caller}.error_ratio", c.errors, c.requests) for c in edges]
            )
            if self.settings.edge_quantiles:
                self.window.add_latency_buckets(
                    [(c.callee, f"{EDGE_PREFIX}{c.caller}.p95", c.buckets) for c in edges if c.buckets is not None]
                )
            gaps = [(c.callee, "net_in", c.gaps) for c in calls if len(c.gaps)]
            gaps += [(c.caller, "client_net", c.gaps) for c in calls if len(c.gaps)]
            self.window.add_gaps(gaps)

    def _edge(self, call: Call) -> bool:
        """Whether the edge gets series: the first ``callers_per_callee`` callers of a callee do (a hub called by
        hundreds, or peers under churning addresses, would fill ``max_series``); calls of the others are counted."""
        callers = self.callers.setdefault(call.callee, set())
        if call.caller in callers or len(callers) < self.settings.callers_per_callee:
            callers.add(call.caller)
            return True
        self.window.dropped["calls of callers past callers_per_callee"] += call.requests
        return False

    def tick(self) -> None:
        """Close the open window if its time has passed."""
        with self._lock:
            self._roll(self.clock.now())

    # --- windows -----------------------------------------------------------------------------------------------------

    def _roll(self, now: float) -> None:
        self.current = roll(self.current, now, self.settings.window_s, self._close)

    def _close(self, number: int) -> None:
        started = time.perf_counter()
        ids, values = self.window.values()
        self.window.clear()
        if len(self.table.keys) > len(self.baselines):
            first = len(self.baselines)
            new = self.table.keys[first:]
            self.baselines.add_series([rule_for(signal, self.settings.rules) for _, signal in new])
            self.silence.add_series([signal for _, signal in new])
            if self.multivariate is not None:
                self.multivariate.add_series(new)
            if self.seasonal is not None:
                self.seasonal.add_series(len(new))
            grow = len(new)
            self.streak, self.onset, self.valued = (
                np.concatenate([a, np.zeros(grow, np.int64)]) for a in (self.streak, self.onset, self.valued)
            )
            self.is_log = np.concatenate([self.is_log, np.zeros(grow, bool)])
            self.trail = np.concatenate([self.trail, np.zeros((grow, self.trail_n))])
            self._fresh(np.arange(first, first + grow), number)
        if self.table.reused:
            self._start_over(np.array(self.table.reused, np.int64), number)
            self.table.reused.clear()
        if len(ids):
            values = self._trailing_logs(number, ids, values)
        sent = len(ids)
        ids, values = self.silence.fill(ids, values)  # an empty window too: nothing came, a telemetry gap
        anomalies: list[Anomaly] = []
        self.judged["windows"] += 1
        if len(ids):
            finite = np.isfinite(values)
            filled = (np.arange(len(ids)) >= sent)[finite]  # the silence's zeros: judged, never learned
            ids, values = ids[finite], values[finite]
            anomalous, expected, score = self.baselines.judge(ids, values, learn=False)
            start = number * self.settings.window_s
            end = start + self.settings.window_s
            direction = self.baselines.direction[ids]
            if self.seasonal is not None:  # what the same hour yesterday also did is not news
                explained = self.seasonal.explains(ids, values, expected, score, direction, self.settings.z, start)
                anomalous &= ~explained
                self.judged["explained"] += int(explained.sum())
                usual = ~anomalous  # a fault's values must not become tomorrow's "same hour yesterday"
                self.seasonal.observe(ids[usual], values[usual], start)
            after = self.learn_after_n
            fresh = number - self.valued[ids] <= max(after, 1)  # a longer gap in a series' values ends its run
            self.streak[ids] = np.where(anomalous, np.where(fresh, self.streak[ids] + 1, 1), 0)
            self.onset[ids] = np.where(self.streak[ids] == 1, number, self.onset[ids])
            # a fault's values stay out of the baseline, or the next fault on the service hides in the tail they
            # leave; an anomaly lasting learn_after_s is a new level, and is learned
            self.baselines.learn(ids, values, self._kept(ids, anomalous, number, after) & ~filled)
            confirmed = np.flatnonzero(anomalous & (self.streak[ids] >= self.settings.confirm))
            keys = self.table.keys
            for i in confirmed.tolist():
                entity, signal = keys[int(ids[i])]
                anomalies.append(
                    Anomaly(entity, signal, float(values[i]), float(expected[i]), float(score[i]), start, end)
                )
            if self.multivariate is not None:
                for entity, below, largest in self.multivariate.observe(ids, bad_side(score, direction)):
                    anomalies.append(Anomaly(entity, "multivariate", below, 0.0, largest, start, end))
            self.judged["values"] += len(ids)
            self.judged["anomalies"] += len(anomalies)
            self.valued[ids] = number
        if number % _RELEASE_EVERY == 0:
            self._release(number)
        self.last_tick_s = time.perf_counter() - started
        self.sink((number + 1) * self.settings.window_s, anomalies)

    def _kept(self, ids: np.ndarray, anomalous: np.ndarray, number: int, after: int) -> np.ndarray:
        """Which of this window's values count for their baselines: all but the anomalous values of series in an
        open incident, until they have been anomalous ``learn_after_s`` without a break (a new level is learned
        then). A fault's values would otherwise widen the baseline's tail for ``history`` windows, and the next
        fault on the same service would hide in it; a burst that opens no incident is learned at once (a series' own
        heavy tail)."""
        kept = np.ones(len(ids), bool)
        if self.holding is None or not anomalous.any():
            return kept
        held = self.holding()
        keys = self.table.keys
        for i in np.flatnonzero(anomalous & (number - self.onset[ids] < after)).tolist():
            kept[i] = keys[int(ids[i])] not in held
        return kept

    def _release(self, number: int) -> None:
        """Series without a value for ``series_ttl_s`` (a deleted pod's, a peer no longer called) give their indexes
        to new series: pods come and go with every rollout, and the table would otherwise fill and refuse new ones.
        A released series seen again starts over (warm-up, no seasonal profile)."""
        ttl = math.ceil(self.settings.series_ttl_s / self.settings.window_s)
        stale = np.flatnonzero(self.valued < number - ttl)
        self.table.release(stale.tolist())
        index = self.table.index
        held = {entity for entity, _ in index}
        for pod in [p for p in self.window.service_of if p not in held]:  # a deleted pod's service is no news
            del self.window.service_of[pod]
        for callee, callers in list(self.callers.items()):  # a released edge frees its place
            kept = {c for c in callers if (callee, f"{EDGE_PREFIX}{c}.rate") in index}
            if kept:
                self.callers[callee] = kept
            else:
                del self.callers[callee]

    def _start_over(self, ids: np.ndarray, number: int) -> None:
        """Series ``ids`` were given to new keys: their state is the new series', empty."""
        keys = [self.table.keys[i] for i in ids.tolist()]
        signals = [signal for _, signal in keys]
        self.baselines.reset(ids, [rule_for(signal, self.settings.rules) for signal in signals])
        self.silence.reset(ids, signals)
        if self.multivariate is not None:
            self.multivariate.reset(ids, keys)
        if self.seasonal is not None:
            self.seasonal.reset(ids)
        self._fresh(ids, number)

    def _fresh(self, ids: np.ndarray, number: int) -> None:
        """The detector's own state of new series ``ids`` (created, or given to new keys): no run, no trail, valued
        now (their time-to-live counts from here)."""
        self.streak[ids] = 0
        self.onset[ids] = 0
        self.is_log[ids] = [self.table.keys[i][1] in LOG_SIGNALS for i in ids.tolist()]
        self.trail[ids] = 0.0
        self.valued[ids] = number
        if self.warm:
            self._seed(ids)

    def _seed(self, ids: np.ndarray) -> None:
        """New series whose keys have saved rings (a restart) take them up: values oldest first from the ring's
        start, as many counted as were written, the statistics recomputed at their next judgement."""
        for i in ids.tolist():
            ring = self.warm.pop(self.table.keys[i], None)
            if ring is not None:
                self.baselines.seed(i, *ring)

    def _trailing_logs(self, number: int, ids: np.ndarray, values: np.ndarray) -> np.ndarray:
        """``values`` with each log series' count replaced by its sum over the windows of the last ``log_trail_s``
        (those the ring holds from before a gap in the telemetry do not count)."""
        slot = number % self.trail_n
        self.trail[:, slot] = 0.0
        self.trail_at[slot] = number
        log = self.is_log[ids]
        if not log.any():
            return values
        self.trail[ids[log], slot] = values[log]
        fresh = self.trail_at > number - self.trail_n
        values = values.copy()
        values[log] = self.trail[ids[log]][:, fresh].sum(axis=1)
        return values
