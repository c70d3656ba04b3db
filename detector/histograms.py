"""OTLP histograms and exponential histograms folded into per-window quantile series (``<metric>.p50/.p95/.p99``).

Why a module of its own: a histogram point is not a value but a distribution since some start, so folding it takes
state the gauges and sums of detector/windows.py do not need:

- Cumulative points (the SDK's default) are turned into this window's delta bucket counts against the stream's
  previous point. A stream is one (entity, metric, data point attributes). A bucket count that went down, or a new
  start time, is a reset (the process restarted): the point's counts are then the delta. A stream's first cumulative
  point only sets its reference (its counts are its whole life, not this window), as a counter's first value gives
  no rate.
- Delta points are added as they are.
- The window's delta counts of all streams of an (entity, metric) are summed, and the quantiles computed once at
  the window's end by detector/quantiles.py (linear interpolation within buckets, as Prometheus does). Below
  ``MIN_COUNT`` observations a window gives no quantiles (too noisy).

Explicit-bounds points are vectorised per bucket layout (the streams of one metric share their bounds): one matrix
of reference counts per layout, the window's sums in another. Exponential points, far rarer, are kept per stream as
(scale, zero count, positive and negative bucket runs) and merged at the lower of two scales (a lower scale merges
2 ** n adjacent buckets), so a stream whose SDK rescaled between exports still subtracts exactly.

Bounded: at most ``max_streams`` streams keep a reference (further ones are refused and counted in ``dropped``),
and series go through the shared :class:`~rootward.detector.windows.SeriesTable`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from rootward.detector.quantiles import (
    QUANTILES,
    SUFFIXES,
    align,
    downscale,
    explicit_layout,
    exponential_counts,
    exponential_layout,
    interpolate,
)
from rootward.model import AttrValue, MetricBatch

#: Below this many observations in a window, a histogram series gives no quantiles (as MIN_SPANS for spans).
MIN_COUNT = 5

StreamKey = tuple[str, str, tuple[tuple[str, object], ...]]


class SeriesIndex(Protocol):
    """What this module needs of windows.SeriesTable (a protocol: windows.py imports this module)."""

    def get(self, entity: str, signal: str) -> int:
        """The series' index, or -1 when the table is full."""
        ...


def attributes_key(attrs: Mapping[str, AttrValue]) -> tuple[tuple[str, object], ...]:
    """A hashable key of a data point's attributes (arrays and maps by their repr)."""
    return tuple(
        sorted(
            (k, v if isinstance(v, (str, int, float, bool, bytes)) or v is None else repr(v)) for k, v in attrs.items()
        )
    )


#: Distinct explicit bucket layouts kept, and bounds a layout may have: a service has a handful of layouts (one
#: per instrument and SDK default); a sender varying its bounds per point must not grow memory without end.
MAX_LAYOUTS, MAX_BOUNDS = 256, 256


def _sane(bounds: tuple[float, ...]) -> bool:
    """Explicit bounds that make buckets: at most MAX_BOUNDS, finite and strictly increasing."""
    if len(bounds) > MAX_BOUNDS:
        return False
    b = np.asarray(bounds, np.float64)
    return bool(np.isfinite(b).all() and (np.diff(b) > 0).all())


#: The OpenTelemetry spec's scale range for exponential histograms, and how many buckets a side a merged
#: histogram may hold (the SDK's default maximum is 160; past this it is rescaled).
MIN_SCALE, MAX_SCALE, MAX_EXP_BUCKETS = -10, 20, 640


def _span(a: tuple[int, np.ndarray], b: tuple[int, np.ndarray]) -> int:
    """How many buckets two (offset, counts) runs at one scale cover together (0 when both are empty)."""
    runs = [(o, o + len(c)) for o, c in (a, b) if len(c)]
    return max(hi for _, hi in runs) - min(lo for lo, _ in runs) if runs else 0


@dataclass(frozen=True, slots=True)
class Exponential:
    """An exponential histogram's counts: scale, zero count, and the (offset, counts) runs of positive and negative
    buckets."""

    scale: int
    zero: float
    positive: tuple[int, np.ndarray]
    negative: tuple[int, np.ndarray]

    def at_scale(self, scale: int) -> Exponential:
        shift = self.scale - scale
        return Exponential(scale, self.zero, downscale(*self.positive, shift), downscale(*self.negative, shift))

    def combine(self, other: Exponential, sign: float) -> Exponential:
        """self + sign * other, at the lower of the two scales, or lower still until the merged buckets number at
        most :data:`MAX_EXP_BUCKETS` a side (two streams of one service, one near 1 ms and one near 1 s at scale 20,
        would otherwise span ten million buckets), as the SDK itself rescales."""
        scale = min(self.scale, other.scale)
        while True:
            a, b = self.at_scale(scale), other.at_scale(scale)
            widest = max(_span(a.positive, b.positive), _span(a.negative, b.negative))
            if scale <= MIN_SCALE or widest <= MAX_EXP_BUCKETS:
                break
            scale -= 1
        po, pa, pb = align(a.positive, b.positive)
        no, na, nb = align(a.negative, b.negative)
        return Exponential(scale, a.zero + sign * b.zero, (po, pa + sign * pb), (no, na + sign * nb))

    def negative_anywhere(self) -> bool:
        return self.zero < 0 or bool((self.positive[1] < 0).any()) or bool((self.negative[1] < 0).any())

    def total(self) -> float:
        return self.zero + float(self.positive[1].sum()) + float(self.negative[1].sum())

    def quantiles(self) -> np.ndarray:
        """p50, p95, p99 (NaN when empty)."""
        lower, upper = exponential_layout(
            self.scale, self.positive[0], len(self.positive[1]), self.negative[0], len(self.negative[1])
        )
        counts = exponential_counts(self.zero, self.positive[1], self.negative[1])
        out: np.ndarray = interpolate(lower, upper, counts[None, :], QUANTILES)[0]
        return out


class _Layout:
    """One explicit bucket layout: the cumulative streams' reference counts, and the window's summed deltas per
    (entity, metric) group."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.lower, self.upper = explicit_layout(np.array(bounds, np.float64))
        width = len(bounds) + 1
        self.prev = np.full((0, width), np.nan)
        self.prev_start = np.zeros(0, np.int64)
        self.streams = 0
        self.sums = np.zeros((0, width))
        self.groups: dict[tuple[str, str], int] = {}

    def slot(self) -> int:
        if self.streams == len(self.prev):
            grow = max(16, len(self.prev))
            self.prev = np.concatenate([self.prev, np.full((grow, self.prev.shape[1]), np.nan)])
            self.prev_start = np.concatenate([self.prev_start, np.zeros(grow, np.int64)])
        self.streams += 1
        return self.streams - 1

    def group(self, key: tuple[str, str]) -> int:
        row = self.groups.get(key)
        if row is None:
            row = self.groups[key] = len(self.groups)
            if row == len(self.sums):
                self.sums = np.concatenate([self.sums, np.zeros((max(16, len(self.sums)), self.sums.shape[1]))])
        return row

    def deltas(self, slots: np.ndarray, counts: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """This window's counts of cumulative points (rows of ``counts``) of streams ``slots``, and which rows had
        a reference. A stream seen twice in one batch is taken in order (the caller sorts by time)."""
        delta = np.zeros_like(counts)
        known = np.zeros(len(slots), bool)
        n = len(slots)
        order = np.argsort(slots, kind="stable")
        ordered = slots[order]
        run_start = np.maximum.accumulate(np.where(np.r_[True, ordered[1:] != ordered[:-1]], np.arange(n), 0))
        rank = np.empty(n, np.int64)
        rank[order] = np.arange(n) - run_start  # 0 for a stream's first point in the batch, 1 for its second, ...
        for level in range(int(rank.max()) + 1 if len(rank) else 0):
            rows = np.flatnonzero(rank == level)
            s = slots[rows]
            prev = self.prev[s]
            known[rows] = ~np.isnan(prev[:, 0])
            reset = (counts[rows] < prev).any(axis=1) | (starts[rows] != self.prev_start[s])
            delta[rows] = np.where(reset[:, None], counts[rows], counts[rows] - prev)
            self.prev[s] = counts[rows]
            self.prev_start[s] = starts[rows]
        return delta, known

    def clear(self) -> None:
        self.sums[:] = 0
        self.groups.clear()


class Histograms:
    """The histogram part of a detector window (see the module docstring): :meth:`add` per batch, :meth:`values`
    and :meth:`clear` per window."""

    def __init__(self, max_streams: int, dropped: Counter[str] | None = None) -> None:
        self.max_streams = max_streams
        self.layouts: dict[tuple[float, ...], _Layout] = {}
        self.streams: dict[StreamKey, tuple[_Layout, int]] = {}
        self.exp_prev: dict[StreamKey, tuple[Exponential, int]] = {}
        self.exp_sums: dict[tuple[str, str], Exponential] = {}
        self.dropped = Counter[str]() if dropped is None else dropped  # what was not folded in, and why

    def clear(self) -> None:
        """Forget the window's sums (streams keep their references)."""
        for layout in self.layouts.values():
            layout.clear()
        self.exp_sums.clear()

    def _full(self) -> bool:
        if len(self.streams) + len(self.exp_prev) >= self.max_streams:
            self.dropped["histogram points of streams past max_series"] += 1
            return True
        return False

    def add(self, batch: MetricBatch, entities: Sequence[str | None]) -> None:
        """Fold the histogram and exponential histogram points of ``batch``; ``entities`` per resource."""
        kinds = [m.type for m in batch.metrics]
        if "histogram" not in kinds and "exponential_histogram" not in kinds:
            return
        rows = np.flatnonzero(np.isin(np.array(kinds)[batch.metric], ("histogram", "exponential_histogram")))
        rows = rows[np.argsort(batch.time[rows], kind="stable")]
        explicit: dict[tuple[float, ...], list[tuple[int, int, tuple[str, str]]]] = {}
        for r in rows.tolist():
            entity = entities[int(batch.resource[r])]
            info = batch.metrics[int(batch.metric[r])]
            found = batch.buckets.get(r)
            if entity is None or found is None:
                continue
            group = (entity, info.name)
            key: StreamKey = (entity, info.name, attributes_key(batch.attributes[r]))
            if info.type == "exponential_histogram":
                self._add_exponential(found, key, group, info.temporality == 1, int(batch.start[r]))
                continue
            bounds, counts = found
            if not isinstance(bounds, tuple) or not isinstance(counts, tuple) or not counts:
                continue  # no buckets: the point only has a count and a sum
            if len(counts) != len(bounds) + 1:
                self.dropped["histogram points with bucket counts not matching their bounds"] += 1
                continue
            if not _sane(bounds) or (bounds not in self.layouts and len(self.layouts) >= MAX_LAYOUTS):
                self.dropped["histogram points with bounds that are unsorted, not finite, too many or too varied"] += 1
                continue
            explicit.setdefault(bounds, []).append((r, -1 if info.temporality == 1 else self._slot(key, bounds), group))
        for bounds, points in explicit.items():
            self._add_explicit(batch, self._layout(bounds), points)

    def _layout(self, bounds: tuple[float, ...]) -> _Layout:
        layout = self.layouts.get(bounds)
        if layout is None:
            layout = self.layouts[bounds] = _Layout(bounds)
        return layout

    def _slot(self, key: StreamKey, bounds: tuple[float, ...]) -> int:
        """The cumulative stream's reference slot in the layout of ``bounds``, or -2 when the stream is refused. A
        stream whose bounds changed gets a new slot: its first point with the new bounds only sets the reference."""
        layout = self._layout(bounds)
        found = self.streams.get(key)
        if found is not None and found[0] is layout:
            return found[1]
        if found is None and self._full():
            return -2
        slot = layout.slot()
        self.streams[key] = (layout, slot)
        return slot

    def _add_explicit(
        self, batch: MetricBatch, layout: _Layout, points: list[tuple[int, int, tuple[str, str]]]
    ) -> None:
        points = [p for p in points if p[1] != -2]
        if not points:
            return
        rows = np.array([p[0] for p in points], np.int64)
        slots = np.array([p[1] for p in points], np.int64)
        groups = np.array([layout.group(p[2]) for p in points], np.int64)
        counts = np.array([batch.buckets[r][1] for r in rows.tolist()], np.float64)
        cumulative = slots >= 0
        use = ~cumulative
        if cumulative.any():
            delta, known = layout.deltas(slots[cumulative], counts[cumulative], batch.start[rows[cumulative]])
            counts[cumulative] = delta
            use[np.flatnonzero(cumulative)[known]] = True
        np.add.at(layout.sums, groups[use], counts[use])

    def _add_exponential(
        self, found: tuple[object, ...], key: StreamKey, group: tuple[str, str], delta: bool, start: int
    ) -> None:
        scale, zero, p_offset, p_counts, n_offset, n_counts = found
        if not MIN_SCALE <= int(scale) <= MAX_SCALE or max(len(p_counts), len(n_counts)) > MAX_EXP_BUCKETS:  # type: ignore[call-overload, arg-type]
            self.dropped["exponential histogram points out of the spec's scale or bucket range"] += 1
            return
        point = Exponential(
            int(scale),  # type: ignore[call-overload]
            float(zero),  # type: ignore[arg-type]
            (int(p_offset), np.array(p_counts, np.float64)),  # type: ignore[call-overload]
            (int(n_offset), np.array(n_counts, np.float64)),  # type: ignore[call-overload]
        )
        if point.total() == 0:  # nothing recorded (or a flagged no-value point): a later reset still shows as one
            return
        if not delta:
            previous = self.exp_prev.get(key)
            if previous is None and self._full():
                return
            self.exp_prev[key] = (point, start)
            if previous is None:
                return
            change = point.combine(previous[0], -1.0)
            point = point if change.negative_anywhere() or start != previous[1] else change
        acc = self.exp_sums.get(group)
        self.exp_sums[group] = point if acc is None else acc.combine(point, 1.0)

    def values(self, series: SeriesIndex) -> tuple[np.ndarray, np.ndarray]:
        """(series indexes, values) of the window's quantile series (``<metric>.p50`` ...)."""
        get = series.get
        ids: list[int] = []
        vals: list[float] = []
        totals: list[float] = []
        for layout in self.layouts.values():
            if not layout.groups:
                continue
            sums = layout.sums[: len(layout.groups)]
            total = sums.sum(axis=1)
            qs = interpolate(layout.lower, layout.upper, sums)
            for (entity, name), row in layout.groups.items():
                if total[row] >= MIN_COUNT:
                    self._emit(get, entity, name, qs[row], float(total[row]), ids, vals, totals)
        for (entity, name), h in self.exp_sums.items():
            total = h.total()
            if total >= MIN_COUNT:
                self._emit(get, entity, name, h.quantiles(), total, ids, vals, totals)
        if not ids:
            return np.zeros(0, np.int64), np.zeros(0)
        sid, value, weight = np.array(ids, np.int64), np.array(vals), np.array(totals)
        # a metric seen with two layouts in one window (its bounds changed): the one with more observations
        order = np.argsort(-weight, kind="stable")
        _, first = np.unique(sid[order], return_index=True)
        keep = order[first]
        return sid[keep], value[keep]

    @staticmethod
    def _emit(
        get: Callable[[str, str], int],
        entity: str,
        name: str,
        qs: np.ndarray,
        total: float,
        ids: list[int],
        vals: list[float],
        totals: list[float],
    ) -> None:
        for suffix, q in zip(SUFFIXES, qs.tolist(), strict=True):
            i = get(entity, f"{name}.{suffix}")
            if i >= 0 and np.isfinite(q):
                ids.append(i)
                vals.append(q)
                totals.append(total)
