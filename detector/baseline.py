"""Robust streaming baselines: per series, the median and MAD of its last ``history`` values, vectorised across
series (one numpy call per window, whatever the number of series).

A value is anomalous when it is far from the median in units of the robust spread (z = |x - median| / scale with
scale = max(1.4826 * MAD, min_rel * |median|, min_abs)) in the direction that means trouble for its signal, and the
change is at least ``min_rel`` of the median and ``min_abs`` in absolute terms. A series needs ``warmup`` values
before it is judged. Each series keeps its own ring of values, advanced only when it has a value, so a metric sent
once a minute and a span rate computed every 10 s both have ``history`` samples of their own cadence.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

UP, DOWN, BOTH = 1, -1, 0


@dataclass(frozen=True, slots=True)
class Rule:
    """How a signal is judged: the direction that is bad, and the smallest change that matters."""

    direction: int = BOTH
    min_rel: float = 0.3
    min_abs: float = 0.0


#: Rules by signal name; metric names match by their last dotted part containing a word (see :func:`rule_for`).
RULES: dict[str, Rule] = {
    "rate": Rule(DOWN, 0.15, 0.5),
    "error_ratio": Rule(UP, 0.0, 0.05),
    "p50": Rule(UP, 0.5, 0.005),
    "p95": Rule(UP, 0.5, 0.01),
    "p99": Rule(UP, 0.5, 0.02),
    "client_p95": Rule(UP, 0.5, 0.01),
    "net_in": Rule(UP, 1.0, 0.005),
    "client_net": Rule(UP, 1.0, 0.005),
    "log_errors": Rule(UP, 1.0, 1.0),
    "log_warnings": Rule(UP, 1.0, 1.0),
}

#: Words in a metric's name and the rule they imply (first match wins).
METRIC_WORDS: tuple[tuple[str, Rule], ...] = (
    ("success", Rule(DOWN, 0.05, 1.0)),
    ("latency", Rule(UP, 0.5, 0.01)),
    ("cpu", Rule(UP, 0.5, 5.0)),
    ("memory", Rule(UP, 0.2, 0.0)),
    ("restart", Rule(UP, 0.0, 1.0)),
)
DEFAULT_RULE = Rule(BOTH, 0.5, 0.0)

#: Signals read by name from the Collector's kubeletstats and k8s_cluster metrics (kube_metrics.py): CPU in cores
#: (a change of at least 0.1 core matters on a pod); ratios of a limit or capacity, up is bad (the minimum change is
#: also the scale's floor, so at z 5 a ratio must rise by 0.25 of its limit from a flat baseline); restarts, any one
#: once the series is warm; workload availability, down is bad.
KUBE_RULES: dict[str, Rule] = {
    "k8s.pod.cpu.usage": Rule(UP, 0.5, 0.1),
    "container.cpu.usage": Rule(UP, 0.5, 0.1),
    "k8s.node.cpu.usage": Rule(UP, 0.5, 0.5),
    "k8s.cpu.limit_ratio": Rule(UP, 0.1, 0.05),
    "k8s.memory.limit_ratio": Rule(UP, 0.1, 0.05),
    "k8s.filesystem.usage_ratio": Rule(UP, 0.1, 0.05),
    "k8s.container.restarts.increase": Rule(UP, 0.0, 1.0),
    "k8s.workload.available_ratio": Rule(DOWN, 0.2, 0.1),
}
#: Histogram quantile series (``<metric>.p95``, histograms.py) of a duration: up is bad, as for latency.
DURATION = ("duration", Rule(UP, 0.5, 0.0))
#: Per-operation latency series (``op:<span name>.p95``, windows.py) read as the service's own p95.
OPERATION_PREFIX = "op:"
#: Per-edge series, on the callee: ``in:<caller>.rate`` (calls a second), ``in:<caller>.error_ratio`` and
#: ``in:<caller>.latency`` (the caller's mean client seconds), from the calls the topology paired (detector.py).
EDGE_PREFIX = "in:"


def edge_of(signal: str) -> tuple[str, str] | None:
    """(caller, measure) of an edge series ``in:<caller>.<measure>``, else None. The caller's name is the sender's:
    read nothing else from it."""
    if not signal.startswith(EDGE_PREFIX):
        return None
    caller, _, measure = signal[len(EDGE_PREFIX) :].rpartition(".")
    return caller, measure


EDGE_RULES: dict[str, Rule] = {
    "rate": RULES["rate"],
    "error_ratio": RULES["error_ratio"],
    "latency": Rule(UP, 0.5, 0.01),
    "p95": RULES["p95"],
}


def bad_side(z: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Signed robust z turned towards trouble: ``z`` for an UP rule, ``-z`` for DOWN, ``|z|`` for BOTH."""
    out: np.ndarray = np.where(direction == 0, np.abs(z), z * direction)
    return out


def _norm_ppf(q: float) -> float:
    """The standard normal's quantile function."""
    return NormalDist().inv_cdf(q)


def rule_for(signal: str, overrides: Mapping[str, Mapping[str, float]] | None = None) -> Rule:
    """The rule of a signal: its default, with the fields ``overrides`` gives for its name (``in.<measure>`` for an
    edge series, the measure for a per-operation series; ``direction`` as UP, DOWN or BOTH)."""
    rule = _default_rule(signal)
    if overrides:
        edge = edge_of(signal)
        if edge:
            key = f"in.{edge[1]}"
        elif signal.startswith(OPERATION_PREFIX):  # judged as the service's own measure, overridden as it is
            key = signal.rsplit(".", 1)[-1]
        else:
            key = signal
        changes = overrides.get(key)
        if changes:
            rule = dataclasses.replace(rule, **changes)  # type: ignore[arg-type]
    return rule


def _default_rule(signal: str) -> Rule:
    found = RULES.get(signal) or KUBE_RULES.get(signal)
    if found is not None:
        return found
    if signal.startswith(OPERATION_PREFIX):  # the span name is the sender's: no words are read from it
        return RULES.get(signal.rsplit(".", 1)[-1], RULES["p95"])
    if edge := edge_of(signal):  # so is the caller's name
        return EDGE_RULES.get(edge[1], DEFAULT_RULE)
    lowered = signal.lower()
    return next((rule for word, rule in (*METRIC_WORDS, DURATION) if word in lowered), DEFAULT_RULE)


class Baselines:
    """Rings of past values per series, and their judgement of new values."""

    def __init__(
        self, history: int = 60, warmup: int = 12, z: float = 4.0, tail_q: float = 0.0, refresh: int = 8
    ) -> None:
        self.history, self.warmup, self.z = history, warmup, z
        self.tail_q = tail_q
        self.refresh = refresh
        self.stats = np.full((0, 4), np.nan)  # per full series: median, MAD, low and high tail quantiles
        self.values = np.full((0, history), np.nan)
        self.kept = np.ones((0, history), bool)  # whether each value counts for the baseline (see learn)
        self.left_out = np.zeros(0, np.int64)  # per series: values in its ring that do not count
        self.seen = np.zeros(0, np.int64)  # values written per series (the ring position is seen % history)
        self.direction = np.zeros(0, np.int8)
        self.min_rel = np.zeros(0)
        self.min_abs = np.zeros(0)

    def add_series(self, rules: list[Rule]) -> None:
        """Append series with these rules (series indexes are assigned in order by the caller's table)."""
        n = len(rules)
        self.values = np.concatenate([self.values, np.full((n, self.history), np.nan)])
        self.kept = np.concatenate([self.kept, np.ones((n, self.history), bool)])
        self.left_out = np.concatenate([self.left_out, np.zeros(n, np.int64)])
        self.seen = np.concatenate([self.seen, np.zeros(n, np.int64)])
        self.stats = np.concatenate([self.stats, np.full((n, 4), np.nan)])
        self.direction = np.concatenate([self.direction, np.array([r.direction for r in rules], np.int8)])
        self.min_rel = np.concatenate([self.min_rel, np.array([r.min_rel for r in rules])])
        self.min_abs = np.concatenate([self.min_abs, np.array([r.min_abs for r in rules])])

    def reset(self, ids: np.ndarray, rules: list[Rule]) -> None:
        """Series ``ids`` start over (their indexes were given to new series) with these rules."""
        self.values[ids] = np.nan
        self.kept[ids] = True
        self.left_out[ids] = 0
        self.seen[ids] = 0
        self.stats[ids] = np.nan
        self.direction[ids] = [r.direction for r in rules]
        self.min_rel[ids] = [r.min_rel for r in rules]
        self.min_abs[ids] = [r.min_abs for r in rules]

    def seed(self, i: int, values: np.ndarray, kept: np.ndarray) -> None:
        """Series ``i`` (new, empty) starts from ``values`` (oldest first; the last ``history`` of them) and which of
        them count for its baseline; its statistics are recomputed at its next judgement."""
        n = min(len(values), self.history)
        self.values[i, :n] = values[len(values) - n :]
        self.kept[i, :n] = kept[len(kept) - n :]
        self.seen[i] = n
        self.left_out[i] = int((~self.kept[i, :n]).sum())
        self.stats[i] = np.nan

    def _refresh(self, ids: np.ndarray) -> None:
        """Recompute the order statistics (median, MAD, tail quantiles; nearest rank, one partial sort each) of the
        series of ``ids`` that are due: each series every ``refresh`` of its values, staggered by its index, or when
        it has none yet. A baseline of 240 values barely moves in 8, and this keeps a tick over 10,000 series within
        its budget (bench/detector_bench.py)."""
        due = ids[((self.seen[ids] + ids) % self.refresh == 0) | np.isnan(self.stats[ids, 0])]
        if not len(due):
            return
        qs = (1 - self.tail_q, 0.5, self.tail_q) if self.tail_q > 0.5 else (0.5, 0.5, 0.5)
        whole = self.kept[due].all(axis=1)
        if whole.any():  # the usual case: one partial sort per statistic
            n = self.history
            p = self.values[due[whole]]
            ranks = [round(q * (n - 1)) for q in qs]
            part = np.partition(p, sorted(set(ranks)), axis=1)
            median = part[:, ranks[1]]
            mad = np.partition(np.abs(p - median[:, None]), n // 2, axis=1)[:, n // 2]
            self.stats[due[whole]] = np.stack([median, mad, part[:, ranks[0]], part[:, ranks[2]]], axis=1)
        if not whole.all():  # some values left out: nearest ranks among the kept ones (NaN sorts last)
            rows = due[~whole]
            p = np.where(self.kept[rows], self.values[rows], np.nan)
            count = np.maximum(self.kept[rows].sum(axis=1), 1)
            at = np.arange(len(rows))
            ordered = np.sort(p, axis=1)
            low, median, high = (ordered[at, np.round(q * (count - 1)).astype(np.int64)] for q in qs)
            mad = np.sort(np.abs(p - median[:, None]), axis=1)[at, count // 2]
            self.stats[rows] = np.stack([median, mad, low, high], axis=1)

    def __len__(self) -> int:
        return len(self.seen)

    def recent(self, i: int, n: int) -> tuple[float, ...]:
        """Series ``i``'s last ``n`` values (at most ``history``), oldest first."""
        seen = int(self.seen[i])
        n = min(n, seen, self.history)
        positions = np.arange(seen - n, seen) % self.history
        return tuple(float(v) for v in self.values[i, positions])

    def judge(self, ids: np.ndarray, x: np.ndarray, learn: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Judge values ``x`` of series ``ids`` against their baselines, then (``learn``) add them to the history.

        Returns (anomalous mask, expected values (medians; NaN while warming up), scores (signed z))."""
        warm = self.seen[ids] >= self.warmup
        full = self.seen[ids] >= self.history
        median = np.full(len(ids), np.nan)
        mad = np.full(len(ids), np.nan)
        lo = np.full(len(ids), np.nan)
        hi = np.full(len(ids), np.nan)
        tails = self.tail_q > 0.5
        qs = (1 - self.tail_q, 0.5, self.tail_q) if tails else (0.5,)
        if full.any():
            self._refresh(ids[full])
            stats = self.stats[ids[full]]
            median[full], mad[full], lo[full], hi[full] = stats.T
        partial = warm & ~full
        if partial.any():
            p = np.where(self.kept[ids[partial]], self.values[ids[partial]], np.nan)
            q = np.nanquantile(p, qs, axis=1)
            median[partial] = q[len(qs) // 2]
            mad[partial] = np.nanmedian(np.abs(p - median[partial, None]), axis=1)
            if tails:
                lo[partial], hi[partial] = q[0], q[-1]
        delta = x - median
        spread = [1.4826 * mad, self.min_rel[ids] * np.abs(median), self.min_abs[ids], np.full(len(ids), 1e-9)]
        if tails:  # a skewed or heavy-tailed series: its own tail in the bad direction, read as a normal's
            k = _norm_ppf(self.tail_q)
            direction0 = self.direction[ids]
            up, down = (hi - median) / k, (median - lo) / k
            tail = np.where(direction0 > 0, up, np.where(direction0 < 0, down, np.maximum(up, down)))
            # only once the tail is more than the last value or two: ~2 / (1 - q) values (40 at q = 0.95)
            known = np.minimum(self.seen[ids], self.history) - self.left_out[ids] >= 2 / (1 - self.tail_q)
            spread.append(np.where(known, tail, 0.0))
        scale = np.maximum.reduce(spread)
        score = np.where(warm, delta / scale, 0.0)
        direction = self.direction[ids]
        bad = bad_side(score, direction)
        big_enough = (np.abs(delta) >= self.min_rel[ids] * np.abs(median)) & (np.abs(delta) >= self.min_abs[ids])
        anomalous = warm & (bad >= self.z) & big_enough
        if learn:
            self.learn(ids, x)
        return anomalous, np.where(warm, median, np.nan), score

    def learn(self, ids: np.ndarray, x: np.ndarray, kept: np.ndarray | None = None) -> None:
        """Add values ``x`` of series ``ids`` to their histories; those not ``kept`` are shown (:meth:`recent`) but
        left out of the baseline's statistics."""
        position = self.seen[ids] % self.history
        new = np.ones(len(ids), bool) if kept is None else kept
        replaced = (self.seen[ids] >= self.history) & ~self.kept[ids, position]  # a left-out value leaves the ring
        self.left_out[ids] += (~new).astype(np.int64) - replaced
        self.values[ids, position] = x
        self.kept[ids, position] = new
        self.seen[ids] += 1
