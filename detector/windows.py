"""One window's worth of telemetry folded into per-series numbers, vectorised per batch.

Three families of groups, each a row of preallocated numpy accumulators:

- span groups, per (entity, side): request count, error count and a log-spaced latency histogram, from SERVER /
  CONSUMER spans (side "server") and CLIENT / PRODUCER spans (side "client", what the caller saw: a slow network or
  a slow peer); spans without a kind count as server spans of their service; with ``operations_per_service``, also
  per operation (service and span name) for the first that many span names of each service (span names are the
  sender's to choose: the cap bounds the series, and spans of further names are counted in ``dropped``);
- value groups, per (entity, metric name): gauges as their mean, sums as rates (see ``_mode``); the Collector's
  kubeletstats and k8s_cluster metrics as the pod, node and workload signals of kube_metrics.py;
- histogram and exponential histogram points, as p50/p95/p99 series per (entity, metric) (histograms.py);
- log groups, per entity: records at WARN and above.

:meth:`Window.values` turns the groups into scalar series: rate, error_ratio, latency p50/p95/p99 (server),
client_p95, ``op:<span name>.p95``, one per metric, log_warnings and log_errors. The series table is shared across
windows and bounded (``max_series``); groups past it are refused and counted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from rootward.detector.baseline import OPERATION_PREFIX
from rootward.detector.histograms import Histograms
from rootward.detector.kube_metrics import NAMES as KUBE_NAMES
from rootward.detector.kube_metrics import SERIES as KUBE_SERIES
from rootward.detector.kube_metrics import TOTAL, KubeMetrics
from rootward.detector.quantiles import explicit_layout, interpolate
from rootward.model import (
    CALL_LATENCY_BUCKETS_S,
    KIND_CLIENT,
    KIND_CONSUMER,
    KIND_PRODUCER,
    KIND_SERVER,
    KIND_UNSPECIFIED,
    STATUS_ERROR,
    LogBatch,
    MetricBatch,
    MetricInfo,
    SpanBatch,
    entity_of,
)

#: Latency histogram: log-spaced bin edges from 50 µs to ~100 s, 8 bins an octave (quantiles within ~9 %).
LATENCY_EDGES_S = 50e-6 * 2.0 ** (np.arange(0, 21 * 8 + 1) / 8)
_BINS = len(LATENCY_EDGES_S) + 1

#: OTLP severity numbers of WARN (WARN is 13..16; INFO 9..12) and ERROR (17..20; FATAL 21..24).
WARN = 13
ERROR = 17
#: The log series per entity, by severity: WARN lines, and ERROR-and-above lines.
LOG_SIGNALS = ("log_warnings", "log_errors")

SPAN_SIGNALS = ("rate", "error_ratio", "p50", "p95", "p99")
CLIENT_SIGNALS = ("client_p95",)
#: Per operation: ``op:<span name>.rate`` / ``.error_ratio`` / ``.p95`` of its service (RED per operation).
OPERATION_SIGNALS = ("op_rate", "op_error_ratio", "op_p95")

#: Windows a cumulative stream may go unseen before its last value is forgotten (360: an hour of 10 s windows;
#: a stream seen again after that starts over: its first point gives no increase).
STREAM_TTL_WINDOWS = 360

#: Below this many spans in a window, ratios and quantiles of a group are not computed (too noisy).
MIN_SPANS = 5
#: Below this many calls on an edge in a window, its per-call means (latency, error ratio) are not computed.
MIN_CALLS = 3


@dataclass
class SeriesTable:
    """Scalar series by (entity, signal) -> index; bounded. Indexes of released series (long unseen: a deleted pod's)
    are given to new series first; ``reused`` lists those handed out since the owner last took the list, whose state
    (baseline, ...) must start over."""

    max_series: int = 100_000
    index: dict[tuple[str, str], int] = field(default_factory=dict)
    keys: list[tuple[str, str]] = field(default_factory=list)
    refused: int = 0
    free: list[int] = field(default_factory=list)
    reused: list[int] = field(default_factory=list)
    released: int = 0

    def get(self, entity: str, signal: str) -> int:
        """The series' index, or -1 when the table is full."""
        key = (entity, signal)
        i = self.index.get(key)
        if i is None:
            if self.free:
                i = self.free.pop()
                self.keys[i] = key
                self.reused.append(i)
            elif len(self.keys) >= self.max_series:
                self.refused += 1
                return -1
            else:
                i = len(self.keys)
                self.keys.append(key)
            self.index[key] = i
        return i

    def release(self, ids: list[int]) -> None:
        """Forget these series: their keys are unknown from now on (a value under one starts a new series) and their
        indexes go to the next new series."""
        for i in ids:
            if self.index.get(self.keys[i]) == i:
                del self.index[self.keys[i]]
                self.keys[i] = ("", "")
                self.free.append(i)
                self.released += 1


#: How a metric folds into a window's value: gauges as their mean; sums as a rate (``<name>.rate``): delta sums
#: summed over the window, cumulative ones as the sum of their streams' increases (a stream: one attribute set; a
#: drop is a counter reset). Histograms and exponential histograms become quantile series in histograms.py;
#: summaries are not read yet.
#: The Collector's kubeletstats / k8s_cluster metrics are read by name in kube_metrics.py, whose series fold as
#: their largest value in the window (ratios, usage) or their sum (increases).
#: Per-call means (an edge's latency and error ratio) fold as the mean over the window's calls, and give no value
#: below MIN_CALLS calls (too noisy, as a span group's quantiles). Network gaps (``net_in``, ``client_net``) fold
#: as the mean of the window's calls without its slowest, when it has two or more (``add_gaps``); a lone call's gap
#: is the window's value (an anomaly needs ``confirm`` windows in a row).
_SKIP, _GAUGE, _DELTA, _CUMULATIVE, _MAX, _TOTAL, _PER_CALL, _TRIMMED, _P95 = -1, 0, 1, 2, 3, 4, 5, 6, 7


def _stream(attributes: Mapping[str, object]) -> tuple[tuple[str, str], ...]:
    """A data point's attributes as a hashable key (values as text: arrays and maps are not hashable)."""
    return tuple(sorted((k, str(v)) for k, v in attributes.items()))


def _mode(metric: MetricInfo) -> int:
    if metric.name in KUBE_NAMES:
        return _SKIP
    if metric.type == "gauge":
        return _GAUGE
    if metric.type == "sum":
        return _DELTA if metric.temporality == 1 else _CUMULATIVE
    return _SKIP


_ROLE = np.zeros(129, np.int8)  # 0 ignore, 1 server, 2 client; index -1 (kind out of range) reads the last
_ROLE[[KIND_SERVER, KIND_CONSUMER, KIND_UNSPECIFIED]] = 1
_ROLE[[KIND_CLIENT, KIND_PRODUCER]] = 2


class _Groups:
    """Rows of accumulators keyed by a tuple; ``series`` maps a row to its scalar series indexes."""

    def __init__(self) -> None:
        self.index: dict[tuple[str, str], int] = {}
        self.keys: list[tuple[str, str]] = []
        self.series: list[tuple[int, ...]] = []

    def row(self, key: tuple[str, str], table: SeriesTable, signals: tuple[str, ...]) -> int:
        i = self.index.get(key)
        if i is None:
            ids = tuple(table.get(key[0], s) for s in signals)
            if min(ids) < 0:
                return -1
            i = self.index[key] = len(self.series)
            self.keys.append(key)
            self.series.append(ids)
        return i

    def clear(self) -> None:
        self.index.clear()
        self.keys.clear()
        self.series.clear()


class Window:
    """Accumulates batches; :meth:`values` gives the scalar series of the window. Reset with :meth:`clear`."""

    def __init__(self, table: SeriesTable, seconds: float, operations_per_service: int = 0) -> None:
        self.table = table
        self.seconds = seconds
        self.operations_per_service = operations_per_service
        self.operations: dict[str, set[str]] = {}  # service -> the span names that have series (bounded: the cap)
        self.dropped = Counter[str]()  # what was not folded in, and why
        self.spans = _Groups()
        self.values_ = _Groups()
        self.logs = _Groups()
        self.service_of: dict[str, str] = {}  # pod -> its service, from the resources seen (bounded by the table)
        self.streams: dict[tuple[int, tuple[tuple[str, str], ...]], float] = {}  # cumulative streams' last values
        self.stream_seen: dict[tuple[int, tuple[tuple[str, str], ...]], int] = {}  # and the window they were seen in
        self.windows = 0  # windows cleared so far
        self.histograms = Histograms(table.max_series, self.dropped)  # histogram points as quantile series
        self.kube = KubeMetrics(max_keys=table.max_series)  # kubeletstats / k8s_cluster metrics (kube_metrics.py)
        self.clear()

    def clear(self) -> None:
        self.windows += 1
        if self.windows % (STREAM_TTL_WINDOWS // 6) == 0:  # a look every ten minutes or so
            self.forget_streams(STREAM_TTL_WINDOWS)
        self.count = np.zeros(0, np.int64)
        self.errors = np.zeros(0, np.int64)
        self.hist = np.zeros((0, _BINS), np.int64)
        self.vsum = np.zeros(0, np.float64)
        self.vcount = np.zeros(0, np.int64)
        self.vmax = np.zeros(0, np.float64)
        self.buckets: dict[int, np.ndarray] = {}  # row -> its calls per latency bucket (_P95 rows)
        self.value_modes: list[int] = []
        self.lcount = np.zeros(0, np.int64)
        self.spans.clear()
        self.values_.clear()
        self.logs.clear()
        self.histograms.clear()

    # --- folding batches in ------------------------------------------------------------------------------------------

    def add_spans(self, batch: SpanBatch) -> None:
        if not len(batch):
            return
        entities = [entity_of(r) for r in batch.resources]
        role = _ROLE[batch.kind]
        rows = np.full((len(entities), 3), -1, np.int64)
        for r, entity in enumerate(entities):
            if entity is not None:
                rows[r, 1] = self.spans.row((entity, "server"), self.table, SPAN_SIGNALS)
                rows[r, 2] = self.spans.row((entity, "client"), self.table, CLIENT_SIGNALS)
        group = rows[batch.resource, role]
        span = np.arange(len(batch))
        if self.operations_per_service:  # each server span counts for its service and for its operation
            op = self._operations(batch, role == 1, entities)
            has = np.flatnonzero(op >= 0)
            group, span = np.concatenate([group, op[has]]), np.concatenate([span, has])
        keep = group >= 0
        group, span = group[keep], span[keep]
        self._grow_spans(len(self.spans.series))
        seconds = np.maximum(batch.end[span] - batch.start[span], 0) / 1e9
        self.count += np.bincount(group, minlength=len(self.count))
        errors = (batch.status[span] == STATUS_ERROR).astype(np.int64)
        self.errors += np.bincount(group, weights=errors, minlength=len(self.count)).astype(np.int64)
        bins = np.searchsorted(LATENCY_EDGES_S, seconds)
        flat = np.bincount(group * _BINS + bins, minlength=self.hist.size)
        self.hist += flat.reshape(self.hist.shape)

    def _operations(self, batch: SpanBatch, server: np.ndarray, entities: list[str | None]) -> np.ndarray:
        """Per span, the span group of its operation (service and span name) or -1: server spans only, the first
        ``operations_per_service`` names of each service (kept across windows); spans of further names are
        counted in ``dropped``."""
        out = np.full(len(batch), -1, np.int64)
        rows = np.flatnonzero(server & (batch.name >= 0))
        if not len(rows):
            return out
        width = len(batch.strings) + 1
        combos, inverse = np.unique(
            batch.resource[rows].astype(np.int64) * width + batch.name[rows], return_inverse=True
        )
        found = np.full(len(combos), -1, np.int64)
        for j, combo in enumerate(combos.tolist()):
            resource, name = divmod(combo, width)
            entity = entities[resource]
            if entity is None:
                continue
            names = self.operations.setdefault(entity, set())
            operation = batch.strings[name]
            if operation not in names:
                if len(names) >= self.operations_per_service:
                    found[j] = -2
                    continue
                names.add(operation)
            signal = f"{OPERATION_PREFIX}{operation}"
            found[j] = self.spans.row(
                (entity, signal), self.table, (f"{signal}.rate", f"{signal}.error_ratio", f"{signal}.p95")
            )
        out[rows] = found[inverse.reshape(-1)]
        overflow = int((out == -2).sum())
        if overflow:
            self.dropped["spans of operations past operations_per_service"] += overflow
        return out

    def add_metrics(self, batch: MetricBatch) -> None:
        if not len(batch):
            return
        entities = [entity_of(r, prefer_pod=True) for r in batch.resources]
        self.histograms.add(batch, entities)
        for r in batch.resources:
            pod, svc = r.pod_id, r.service_id
            if pod and svc and len(self.service_of) < self.table.max_series:
                self.service_of[pod] = svc
        modes = np.array([_mode(m) for m in batch.metrics], np.int8)
        pairs = np.stack([batch.resource, batch.metric], axis=1)
        combos, inverse = np.unique(pairs, axis=0, return_inverse=True)
        rows = np.array([self._value_row(entities[r], batch.metrics[m], int(modes[m])) for r, m in combos.tolist()])
        group = rows[inverse.reshape(-1)].astype(np.int64)
        self._fold_values(group, self._increases(batch, group, modes))
        kube = self.kube.read(batch).series
        if kube:
            group = np.array([self._row(e, s, _TOTAL if KUBE_SERIES[s] == TOTAL else _MAX) for e, s, _ in kube])
            self._fold_values(group, np.array([v for _, _, v in kube], np.float64))

    def _increases(self, batch: MetricBatch, group: np.ndarray, modes: np.ndarray) -> np.ndarray:
        """The batch's values with each cumulative sum's point replaced by its increase since its stream's last point
        (a stream: the series and the point's attributes; a value below the last one is a reset, counted from 0; a
        stream's first point gives no increase, NaN). A series' rate is then the sum of its streams' increases."""
        cumulative = np.flatnonzero((modes[batch.metric] == _CUMULATIVE) & (group >= 0) & np.isfinite(batch.value))
        if not len(cumulative):
            return batch.value
        values = batch.value.astype(np.float64, copy=True)
        series = self.values_.series
        sources = [_stream(r.attributes) for r in batch.resources]  # two instances of one entity: two streams
        for i in cumulative.tolist():
            key = (series[int(group[i])][0], sources[int(batch.resource[i])] + _stream(batch.attributes[i]))
            value, last = float(values[i]), self.streams.get(key)
            if last is None and len(self.streams) >= 4 * self.table.max_series:
                self.dropped["cumulative streams past 4 x max_series"] += 1
                values[i] = np.nan
                continue
            self.streams[key] = value
            self.stream_seen[key] = self.windows
            values[i] = np.nan if last is None else (value - last if value >= last else value)
        return values

    def forget_streams(self, windows: int) -> None:
        """Drop the cumulative streams not seen in the last ``windows`` windows (gone pods, old routes), so churn does
        not fill the table and refuse new streams."""
        cutoff = self.windows - windows
        for key in [k for k, seen in self.stream_seen.items() if seen < cutoff]:
            del self.streams[key], self.stream_seen[key]

    def _fold_values(self, group: np.ndarray, value: np.ndarray) -> None:
        """Add values to their value groups' sums, counts and maxima (``group`` -1: refused)."""
        keep = (group >= 0) & np.isfinite(value)
        group, value = group[keep], value[keep]
        n = len(self.values_.series)
        self._grow_values(n)
        self.vsum += np.bincount(group, weights=value, minlength=n)
        self.vcount += np.bincount(group, minlength=n)
        np.maximum.at(self.vmax, group, value)

    def add_gaps(self, items: list[tuple[str, str, Sequence[float] | np.ndarray]]) -> None:
        """(entity, signal, each call's seconds) of the network gaps of paired calls. A window's value is their mean
        without its slowest call when it has others: a delay on a pod's network, or a starved caller, stretches many
        calls, while one slow call in a quiet window (a connection set up, a retransmit: TrainTicket's gateway shows
        a 0.22 s gap on about one call in twenty) moved the mean of three tenfold and opened incidents alone."""
        if not items:
            return
        rows = [self._row(entity, signal, _TRIMMED) for entity, signal, _ in items]
        group = np.concatenate([np.full(len(g), r, np.int64) for r, (_, _, g) in zip(rows, items, strict=True)])
        self._fold_values(group, np.concatenate([np.asarray(g, np.float64) for _, _, g in items]))

    def add_rates(self, items: list[tuple[str, str, float, int]]) -> None:
        """(entity, signal, count, 1) of paired calls, summed into a rate (calls a second)."""
        self.add_calls(items, _DELTA)

    def add_calls(self, items: list[tuple[str, str, float, int]], mode: int = _PER_CALL) -> None:
        """(entity, signal, sum, count) of paired calls: per-call means (``_PER_CALL``) or, with ``_DELTA``, a count
        summed into a rate."""
        for entity, signal, total, count in items:
            row = self._counted_row(entity, signal, mode) if count > 0 else -1
            if row < 0:
                continue
            self.vsum[row] += total
            self.vcount[row] += count
            self.vmax[row] = max(self.vmax[row], total / count)

    def add_latency_buckets(self, items: list[tuple[str, str, np.ndarray]]) -> None:
        """(entity, signal, calls per bucket of CALL_LATENCY_BUCKETS_S and one past them) of paired calls: the
        window's p95, interpolated within its bucket, once ``MIN_CALLS`` calls are in."""
        for entity, signal, counts in items:
            total = int(counts.sum())
            row = self._counted_row(entity, signal, _P95) if total > 0 else -1
            if row < 0:
                continue
            self.vcount[row] += total
            held = self.buckets.get(row)
            self.buckets[row] = counts.astype(np.int64) if held is None else held + counts

    def _counted_row(self, entity: str, signal: str, mode: int) -> int:
        """The value row of (entity, signal), its accumulators grown to hold it; -1 past the series limit."""
        row = self._row(entity, signal, mode)
        if row >= 0:
            self._grow_values(len(self.values_.series))
        return row

    def _grow_values(self, n: int) -> None:
        if len(self.vsum) < n:
            grow = n - len(self.vsum)
            self.vsum = np.concatenate([self.vsum, np.zeros(grow)])
            self.vcount = np.concatenate([self.vcount, np.zeros(grow, np.int64)])
            self.vmax = np.concatenate([self.vmax, np.full(grow, -np.inf)])

    def _value_row(self, entity: str | None, metric: MetricInfo, mode: int) -> int:
        if entity is None or mode == _SKIP:
            return -1
        return self._row(entity, metric.name if mode == _GAUGE else f"{metric.name}.rate", mode)

    def _row(self, entity: str, signal: str, mode: int) -> int:
        row = self.values_.row((entity, signal), self.table, (signal,))
        if row == len(self.value_modes):
            self.value_modes.append(mode)
        return row

    def add_logs(self, batch: LogBatch) -> None:
        if not len(batch):
            return
        entities = [entity_of(r) for r in batch.resources]
        rows = np.array(
            [[self.logs.row((e, s), self.table, (s,)) if e is not None else -1 for s in LOG_SIGNALS] for e in entities],
            np.int64,
        ).reshape(-1, len(LOG_SIGNALS))
        # every entity that logs gets both series, errors or not: their zeros are the baseline a new trickle of
        # errors stands out against
        severe = batch.severity >= WARN
        group = rows[batch.resource[severe], (batch.severity[severe] >= ERROR).astype(np.int64)]
        n = len(self.logs.series)
        if len(self.lcount) < n:
            self.lcount = np.concatenate([self.lcount, np.zeros(n - len(self.lcount), np.int64)])
        self.lcount += np.bincount(group[group >= 0], minlength=n)

    def _grow_spans(self, n: int) -> None:
        if len(self.count) < n:
            grow = n - len(self.count)
            self.count = np.concatenate([self.count, np.zeros(grow, np.int64)])
            self.errors = np.concatenate([self.errors, np.zeros(grow, np.int64)])
            self.hist = np.concatenate([self.hist, np.zeros((grow, _BINS), np.int64)])

    # --- the window's numbers --------------------------------------------------------------------------------------

    def values(self) -> tuple[np.ndarray, np.ndarray]:
        """(series indexes, values) of every series the window has a value for."""
        ids: list[np.ndarray] = []
        vals: list[np.ndarray] = []
        if self.spans.series:
            sides = [OPERATION_PREFIX if s.startswith(OPERATION_PREFIX) else s for _, s in self.spans.keys]
            for side, signals in (
                ("server", SPAN_SIGNALS),
                ("client", CLIENT_SIGNALS),
                (OPERATION_PREFIX, OPERATION_SIGNALS),
            ):
                rows = np.array([i for i, s in enumerate(sides) if s == side], np.int64)
                if not len(rows):
                    continue
                sids = np.array([self.spans.series[r] for r in rows.tolist()], np.int64)
                count, errors, hist = self.count[rows], self.errors[rows], self.hist[rows]
                enough = count >= MIN_SPANS
                quantiles = _quantiles(hist, (0.5, 0.95, 0.99))
                if side == "server":
                    columns = {
                        "rate": (count / self.seconds, count > 0),  # none without server spans (silence.py)
                        "error_ratio": (errors / np.maximum(count, 1), enough),
                        "p50": (quantiles[:, 0], enough),
                        "p95": (quantiles[:, 1], enough),
                        "p99": (quantiles[:, 2], enough),
                    }
                elif side == "client":
                    columns = {"client_p95": (quantiles[:, 1], enough)}
                else:
                    columns = {
                        "op_rate": (count / self.seconds, enough),  # a quiet operation's rate says little
                        "op_error_ratio": (errors / np.maximum(count, 1), enough),
                        "op_p95": (quantiles[:, 1], enough),
                    }
                for j, signal in enumerate(signals):
                    value, valid = columns[signal]
                    ids.append(sids[valid, j])
                    vals.append(value[valid])
        if self.values_.series:
            sid = np.array([s[0] for s in self.values_.series], np.int64)
            mode = np.array(self.value_modes, np.int8)
            has = np.where((mode == _PER_CALL) | (mode == _P95), self.vcount >= MIN_CALLS, self.vcount > 0)
            rate = (mode == _DELTA) | (mode == _CUMULATIVE)  # a cumulative sum's points are increases by now
            value = np.where(rate, self.vsum / self.seconds, self.vsum / np.maximum(self.vcount, 1))
            value = np.where(mode == _MAX, self.vmax, np.where(mode == _TOTAL, self.vsum, value))
            trimmed = (self.vsum - self.vmax) / np.maximum(self.vcount - 1, 1)
            value = np.where((mode == _TRIMMED) & (self.vcount >= 2), trimmed, value)
            quantile = [row for row in self.buckets if has[row]]
            if quantile:
                value[quantile] = interpolate(*_CALL_LAYOUT, np.array([self.buckets[r] for r in quantile]), (0.95,))[
                    :, 0
                ]
            ids.append(sid[has])
            vals.append(value[has])
        if self.logs.series:
            ids.append(np.array([s[0] for s in self.logs.series], np.int64))
            vals.append(self.lcount.astype(np.float64))
        hist_ids, hist_values = self.histograms.values(self.table)
        if len(hist_ids):
            ids.append(hist_ids)
            vals.append(hist_values)
        if not ids:
            return np.zeros(0, np.int64), np.zeros(0, np.float64)
        return np.concatenate(ids), np.concatenate(vals).astype(np.float64)


#: The buckets of call edges' latency (rootward.model.CALL_LATENCY_BUCKETS_S, and the one past them).
_CALL_LAYOUT = explicit_layout(np.array(CALL_LATENCY_BUCKETS_S))


def _quantiles(hist: np.ndarray, qs: tuple[float, ...]) -> np.ndarray:
    """Quantiles from log-spaced histograms (rows), at the geometric middle of the bin holding each (NaN when
    empty)."""
    cum = np.cumsum(hist, axis=1)
    total = cum[:, -1:]
    edges = np.concatenate([[LATENCY_EDGES_S[0] / 2], LATENCY_EDGES_S, [LATENCY_EDGES_S[-1] * 2]])
    mids = np.sqrt(edges[:-1] * edges[1:])
    out = np.full((len(hist), len(qs)), np.nan)
    for j, q in enumerate(qs):
        b = (cum < q * total).sum(axis=1)
        out[:, j] = np.where(total[:, 0] > 0, mids[np.minimum(b, len(mids) - 1)], np.nan)
    return out
