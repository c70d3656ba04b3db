"""The aggregator's side of gateway mode: other replicas' call edges, received as OTLP metrics, folded into this
replica's graph, so that it holds the cluster-wide graph (../shared/DESIGN.md, "Scaling out").

Replicas send cumulative servicegraph metrics (topology/export.py) every interval, tagged with the resource
attribute ``rootward.replica``; points without it (a Collector's servicegraph connector, an application) are left
alone. Entities and structural edges a replica saw (sightings) are seen here when they arrive. Per replica and
series (metric, client, server) the last point is kept, and only the difference to it is
added to the graph, so that:

- a retried or repeated export adds nothing (same counts; or not newer than the last point: ignored as stale);
- a replica whose counter started again from zero (it restarted without its history, or the edge aged out and came
  back) sends a later start time: that is a reset, and the whole new count is added;
- a replica that restarted from its history may send counts lower than its last export, under the same start (the
  history lags its live graph by up to a checkpoint): the new counts become the base and nothing is added, since
  what was lost had been counted already;
- a replica seen for the first time adds its whole count, unless this graph was restored from a checkpoint
  (``counted_until``, the checkpoint's time) and the series started before it: what it counted then is in the
  restored graph already, and the per-series state is not checkpointed, so the point becomes the base and adds
  nothing. That loses what the replica paired between the checkpoint and its first export after the restart, but
  never counts anything twice (as the history itself trades a little loss for counters that never go backwards).

Points of delta temporality are added as they come (a sender of deltas makes retries its own concern). Histograms
must have the bounds of LATENCY_BUCKETS_S; others are refused and counted. Points from this replica's own name are
ignored, so that a replica misconfigured to export to itself cannot feed its counts back into them. What this
replica pairs itself stays in the graph as always: the aggregator is one of the replicas. The state per series is
forgotten after ``ttl_s`` without a point (the replica's edge has aged out; it comes back under a new start).
"""

from __future__ import annotations

import logging
import re
import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
from prometheus_client.metrics_core import CounterMetricFamily, Metric

from rootward.clock import Clock, SystemClock
from rootward.model import AttrValue, LogBatch, MetricBatch, SpanBatch
from rootward.topology.entities import Entity
from rootward.topology.export import (
    EDGE_KEYS,
    ENTITY,
    ENTITY_KEYS,
    FAILED,
    NAMES,
    REPLICA_ATTRIBUTE,
    REQUESTS,
    SECONDS,
    STRUCTURE,
)
from rootward.topology.graph import TopologyGraph
from rootward.topology.red import LATENCY_BUCKETS_S, EdgeDelta

logger = logging.getLogger(__name__)

_DELTA = 1
STRUCTURAL_KINDS = frozenset({"instance_of", "owned_by", "runs_on", "in", "backed_by"})
_WIDTH = len(LATENCY_BUCKETS_S) + 1


@dataclass(slots=True)
class _Last:
    """The last point of one series: its start and time (unix ns) and its values (for a histogram: count, sum and
    the bucket counts), and when it came (aggregator clock, seconds)."""

    start: int
    time: int
    values: np.ndarray
    received: float


def _entity(attrs: Mapping[str, AttrValue], prefix: str, name_key: str) -> Entity | None:
    id_, kind, namespace, virtual = (attrs.get(f"{prefix}{key}") for key in ENTITY_KEYS)
    name = attrs.get(name_key)
    if not isinstance(id_, str) or not id_ or not isinstance(kind, str) or not isinstance(name, str):
        return None
    return Entity(id_, kind, name, namespace if isinstance(namespace, str) else "", virtual is True)


class ReplicaMerge:
    """A :class:`~rootward.model.Consumer` of other replicas' servicegraph metrics, merging them into ``topology``.

    ``outcomes`` counts points by what became of them: ``merged`` (counts added), ``unchanged`` (nothing new),
    ``reset``, ``rebased``, ``stale``, ``sighted`` (an entity or structural edge), ``refused`` (malformed, or
    histogram bounds not LATENCY_BUCKETS_S), ``own`` (this replica's own name)."""

    def __init__(
        self, topology: TopologyGraph, replica: str | None = None, ttl_s: float = 900.0, clock: Clock | None = None
    ) -> None:
        self.topology = topology
        self.replica = replica
        self.ttl_s = ttl_s
        self.clock = clock or SystemClock()
        self.outcomes: Counter[str] = Counter()
        self.counted_until: float | None = None
        """The time of the checkpoint the graph was restored from (set by the app), else None."""
        self._last: dict[tuple[str, str, str, str], _Last] = {}
        self._last_prune = 0.0
        self._lock = threading.Lock()

    def consume_traces(self, batch: SpanBatch) -> None:
        """Nothing: spans are the graph's own business."""

    def consume_logs(self, batch: LogBatch) -> None:
        """Nothing: logs are the graph's own business."""

    def consume_metrics(self, batch: MetricBatch) -> None:
        """Merge the batch's points that are replicas' servicegraph metrics; leave every other point alone."""
        names = [m.name in NAMES or m.name in STRUCTURE for m in batch.metrics]
        replicas = [r.attributes.get(REPLICA_ATTRIBUTE) for r in batch.resources]
        if not any(names) or not any(isinstance(r, str) for r in replicas):
            return
        rows = [
            i
            for i, (m, r) in enumerate(zip(batch.metric.tolist(), batch.resource.tolist(), strict=True))
            if names[m] and isinstance(replicas[r], str)
        ]
        now = self.clock.now()
        deltas: dict[tuple[str, str], EdgeDelta] = {}
        entities: dict[str, Entity] = {}
        edges: list[tuple[str, str, str]] = []
        with self._lock:
            for i in rows:
                replica = str(replicas[int(batch.resource[i])])
                name = batch.metrics[int(batch.metric[i])].name
                if replica == self.replica:
                    self.outcomes["own"] += 1
                elif name in STRUCTURE:
                    self._sighting(batch.attributes[i], name, entities, edges)
                else:
                    self._point(batch, i, replica, now, deltas, entities)
            if now - self._last_prune >= 60.0:
                self._last_prune = now
                self._prune(now)
        changed = {edge: d for edge, d in deltas.items() if d.requests or d.errors or d.buckets.any()}
        if changed or entities or edges:
            self.topology.merge_calls(changed, entities.values(), edges)

    def _sighting(
        self, attrs: Mapping[str, AttrValue], name: str, entities: dict[str, Entity], edges: list[tuple[str, str, str]]
    ) -> None:
        """An entity or a structural edge another replica saw: seen here now."""
        if name == ENTITY:
            entity = _entity(attrs, "", "rootward.entity.name")
            if entity is not None:
                entities[entity.id] = entity
                self.outcomes["sighted"] += 1
                return
        else:
            src, dst, kind = (attrs.get(key) for key in EDGE_KEYS)
            if isinstance(src, str) and isinstance(dst, str) and kind in STRUCTURAL_KINDS and _plausible(src, dst):
                edges.append((src, dst, str(kind)))
                self.outcomes["sighted"] += 1
                return
        self.outcomes["refused"] += 1

    def _point(
        self,
        batch: MetricBatch,
        i: int,
        replica: str,
        now: float,
        deltas: dict[tuple[str, str], EdgeDelta],
        entities: dict[str, Entity],
    ) -> None:
        info = batch.metrics[int(batch.metric[i])]
        attrs = batch.attributes[i]
        client, server = _entity(attrs, "client_", "client"), _entity(attrs, "server_", "server")
        values = self._values(batch, i, info.name)
        if client is None or server is None or values is None or client.id == server.id:
            self.outcomes["refused"] += 1
            return
        key = (replica, info.name, client.id, server.id)
        if info.temporality == _DELTA:
            delta: np.ndarray | None = values
            self.outcomes["merged"] += 1
        else:
            delta = self._difference(key, int(batch.start[i]), int(batch.time[i]), values, now)
        if delta is None or not delta.any():
            return  # nothing new: the two ends were not seen again either
        entities.setdefault(client.id, client)
        entities.setdefault(server.id, server)
        edge = deltas.setdefault((client.id, server.id), EdgeDelta())
        if info.name == REQUESTS:
            edge.requests += int(delta[0])
        elif info.name == FAILED:
            edge.errors += int(delta[0])
        else:
            edge.latency_sum += float(delta[1])
            edge.buckets += delta[2:].astype(np.int64)

    def _values(self, batch: MetricBatch, i: int, name: str) -> np.ndarray | None:
        """The point's values as floats ([count] for a sum; [count, sum, *buckets] for a histogram), or None when
        the point is not what topology/export.py sends."""
        if name != SECONDS:
            value = float(batch.value[i])
            return np.array([value]) if np.isfinite(value) and 0 <= value < 2.0**53 else None
        found = batch.buckets.get(i)
        if found is None or len(found) != 2:
            return None
        bounds, counts = found
        if tuple(bounds) != LATENCY_BUCKETS_S or len(counts) != _WIDTH:  # type: ignore[arg-type]
            return None
        values = np.array([float(batch.count[i]), float(batch.value[i]), *counts], np.float64)  # type: ignore[misc]
        if not np.isfinite(values).all() or (values < 0).any() or values.max() >= 2.0**53:
            return None  # a NaN sum would stay in the edge for good (and JSON cannot carry it)
        return values

    def _difference(
        self, key: tuple[str, str, str, str], start: int, time: int, values: np.ndarray, now: float
    ) -> np.ndarray | None:
        """What a cumulative point adds over the last one of its series (None: nothing), as the module says."""
        last = self._last.get(key)
        if last is not None and (time <= last.time or start < last.start):
            self.outcomes["stale"] += 1  # a retry, or a point from before a reset that arrived late
            return None
        self._last[key] = _Last(start, time, values, now)
        if last is None and self.counted_until is not None and start <= self.counted_until * 1e9:
            self.outcomes["rebased"] += 1  # counted before the restart, as far as the checkpoint goes
            return None
        if last is None or start > last.start:
            self.outcomes["merged" if last is None else "reset"] += 1
            return values
        if (values < last.values).any():
            self.outcomes["rebased"] += 1
            logger.info("replica %s: %s %s -> %s went back; taking it as the new base", *key)
            return None
        delta: np.ndarray = values - last.values
        self.outcomes["merged" if delta.any() else "unchanged"] += 1
        return delta

    def _prune(self, now: float) -> None:
        """Forget series without a point for ``ttl_s``."""
        stale = [key for key, last in self._last.items() if now - last.received > self.ttl_s]
        for key in stale:
            del self._last[key]

    def collect(self) -> Iterator[Metric]:
        """``rootward_gateway_merged_points_total{outcome}`` (a prometheus_client collector: register the merge)."""
        family = CounterMetricFamily(
            "rootward_gateway_merged_points",
            "Servicegraph points from other replicas (gateway mode) by what became of them: merged, unchanged, reset, "
            "rebased, stale, sighted, refused, own.",
            labels=["outcome"],
        )
        with self._lock:
            for outcome, n in sorted(self.outcomes.items()):
                family.add_metric([outcome], float(n))
        yield family

    def series(self) -> int:
        """Series whose last point is kept."""
        with self._lock:
            return len(self._last)


_ID = re.compile(r"^(service|pod|workload|node|namespace|database|queue|host):[^\s]{1,512}$")


def _plausible(src: str, dst: str) -> bool:
    """Whether a structural edge another replica sent has ids of Rootward's forms and stays in one namespace where
    both ends have one (a forged owned_by from a shop pod to kube-system's coredns must not steer actions)."""
    if not (_ID.match(src) and _ID.match(dst)):
        return False
    spaces = [_namespace(e) for e in (src, dst)]
    return None in spaces or spaces[0] == spaces[1]


def _namespace(entity: str) -> str | None:
    kind, _, rest = entity.partition(":")
    if kind in ("pod", "workload"):  # Kubernetes namespaces (a service's is service.namespace, another thing)
        return rest.split("/", 1)[0]
    return rest if kind == "namespace" else None
