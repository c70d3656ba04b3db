"""A replica's call edges as OTLP metrics, for gateway mode (../shared/DESIGN.md, "Scaling out").

In gateway mode a Collector routes spans by trace id to N Rootward replicas; each pairs the traces it gets into call
edges with RED, and the cluster-wide graph is the sum of theirs. This module is the wire format between them: the
edges of one replica's graph as an OTLP ``ExportMetricsServiceRequest`` (built here, sent by rootward/gateway.py),
read back into edges on the aggregating replica by topology/merge.py. It uses the Collector servicegraph connector's
names and labels, so what a replica sends is also readable by any OTLP backend, Grafana's service-graph panels
included:

    traces_service_graph_request_total            sum, monotonic, cumulative
    traces_service_graph_request_failed_total     sum, monotonic, cumulative
    traces_service_graph_request_server_seconds   histogram over LATENCY_BUCKETS_S, cumulative

Each point has the connector's labels ``client``, ``server`` and ``connection_type``, and, in the connector's
``client_<dimension>`` style, what the aggregator needs to rebuild the two nodes exactly as the replica has them:
``client_rootward.entity.id`` / ``.kind`` / ``.namespace`` / ``.virtual`` and the same with ``server_``.

Besides the call edges, the entities and structural edges (``instance_of``, ``runs_on``, ``owned_by``, ``in``,
``backed_by``) a replica saw since its last export travel as sightings, gauges of value 1 that the aggregator reads
as "seen now": ``rootward_topology_entity`` (``rootward.entity.id`` / ``.kind`` / ``.name`` / ``.namespace`` /
``.virtual``) and ``rootward_topology_edge`` (``rootward.edge.source`` / ``.target`` / ``.kind``). Seeing twice is
seeing once, so they need no state on either side beyond the time of the last export that got through.

Cumulative, not delta: a lost or retried export then costs nothing, because the next one carries the whole count
and the aggregator takes differences (topology/merge.py). A point's start time is its edge's ``first_seen``: an edge
that ages out and comes back counts from zero again under a new start, which the aggregator reads as a reset, while
an edge restored from the topology history keeps its start. The resource carries only ``rootward.replica`` (the
sender's name), no ``service.name``: a resource with one would add an entity for the sending replica to the
aggregator's graph.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import networkx as nx
import numpy as np
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2

from rootward.topology.entities import Entity
from rootward.topology.metrics import connection_type
from rootward.topology.red import LATENCY_BUCKETS_S

#: The resource attribute naming the replica that sent the aggregates; the aggregator recognises them by it.
REPLICA_ATTRIBUTE = "rootward.replica"
REQUESTS = "traces_service_graph_request_total"
FAILED = "traces_service_graph_request_failed_total"
SECONDS = "traces_service_graph_request_server_seconds"
NAMES = frozenset({REQUESTS, FAILED, SECONDS})
#: Entity attributes of each end, after the ``client_`` / ``server_`` prefix.
ENTITY_KEYS = ("rootward.entity.id", "rootward.entity.kind", "rootward.entity.namespace", "rootward.entity.virtual")
ENTITY = "rootward_topology_entity"
EDGE = "rootward_topology_edge"
STRUCTURE = frozenset({ENTITY, EDGE})
EDGE_KEYS = ("rootward.edge.source", "rootward.edge.target", "rootward.edge.kind")
SCOPE = "rootward.gateway"
_CUMULATIVE = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE


@dataclass(frozen=True, slots=True)
class EdgeAggregate:
    """One call edge of a replica's graph: its two entities and its RED counters since ``start`` (unix seconds)."""

    client: Entity
    server: Entity
    connection_type: str
    requests: int
    errors: int
    latency_sum: float
    buckets: np.ndarray
    start: float


def _entity(node_id: str, data: Mapping[str, object]) -> Entity:
    return Entity(
        node_id, str(data["kind"]), str(data["name"]), str(data.get("namespace") or ""), bool(data["virtual"])
    )


def edge_aggregates(g: nx.MultiDiGraph[str]) -> list[EdgeAggregate]:
    """The call edges of ``g`` (hold it still: :meth:`TopologyGraph.read`) with their counters, in graph order."""
    found = []
    width = len(LATENCY_BUCKETS_S) + 1
    for u, v, key, data in g.edges(keys=True, data=True):
        if key != "calls":
            continue
        buckets = data.get("latency_buckets")
        found.append(
            EdgeAggregate(
                client=_entity(u, g.nodes[u]),
                server=_entity(v, g.nodes[v]),
                connection_type=connection_type(g.nodes[v]),
                requests=int(data.get("requests", 0)),
                errors=int(data.get("errors", 0)),
                latency_sum=float(data.get("latency_sum_s", 0.0)),
                buckets=np.zeros(width, np.int64) if buckets is None else np.asarray(buckets, np.int64).copy(),
                start=float(data["first_seen"]),
            )
        )
    return found


@dataclass(frozen=True, slots=True)
class Sightings:
    """Entities and structural edges (source, target, kind) a replica saw in a span of time."""

    entities: list[Entity]
    edges: list[tuple[str, str, str]]


def sightings(g: nx.MultiDiGraph[str], since: float) -> Sightings:
    """The entities and structural edges of ``g`` (held still) last seen at or after ``since`` (unix seconds)."""
    entities = [_entity(n, data) for n, data in g.nodes(data=True) if data["last_seen"] >= since]
    edges = [
        (u, v, k) for u, v, k, data in g.edges(keys=True, data=True) if k != "calls" and data["last_seen"] >= since
    ]
    return Sightings(entities, edges)


def sightings_request(seen: Sightings, replica: str, now: float) -> ExportMetricsServiceRequest:
    """One OTLP metrics request with ``seen`` as gauges of value 1 at ``now``, sent as replica ``replica``; entities
    before edges (the aggregator creates an edge only between entities it has)."""
    now_ns = int(now * 1e9)
    request, sm = _request(replica)
    entities = sm.metrics.add(name=ENTITY, unit="1", description="Entities this replica saw since its last export.")
    edges = sm.metrics.add(name=EDGE, unit="1", description="Structural edges this replica saw since its last export.")
    for entity in seen.entities:
        point = entities.gauge.data_points.add(time_unix_nano=now_ns, as_int=1)
        values: tuple[str | bool, ...] = (entity.id, entity.kind, entity.namespace, entity.virtual)
        point.attributes.extend(_kv(key, value) for key, value in zip(ENTITY_KEYS, values, strict=True))
        point.attributes.append(_kv("rootward.entity.name", entity.name))
    for edge in seen.edges:
        point = edges.gauge.data_points.add(time_unix_nano=now_ns, as_int=1)
        point.attributes.extend(_kv(key, value) for key, value in zip(EDGE_KEYS, edge, strict=True))
    return request


def _request(replica: str) -> tuple[ExportMetricsServiceRequest, metrics_pb2.ScopeMetrics]:
    request = ExportMetricsServiceRequest()
    rm = request.resource_metrics.add()
    rm.resource.attributes.append(_kv(REPLICA_ATTRIBUTE, replica))
    sm = rm.scope_metrics.add()
    sm.scope.name = SCOPE
    return request, sm


def _kv(key: str, value: str | bool) -> KeyValue:
    any_value = AnyValue(bool_value=value) if isinstance(value, bool) else AnyValue(string_value=value)
    return KeyValue(key=key, value=any_value)


def _labels(edge: EdgeAggregate) -> list[KeyValue]:
    labels = [
        _kv("client", edge.client.name),
        _kv("server", edge.server.name),
        _kv("connection_type", edge.connection_type),
    ]
    for side, entity in (("client", edge.client), ("server", edge.server)):
        values: tuple[str | bool, ...] = (entity.id, entity.kind, entity.namespace, entity.virtual)
        labels += [_kv(f"{side}_{key}", value) for key, value in zip(ENTITY_KEYS, values, strict=True)]
    return labels


def to_request(edges: list[EdgeAggregate], replica: str, now: float) -> ExportMetricsServiceRequest:
    """One OTLP metrics request with the three servicegraph metrics of ``edges`` as of ``now`` (unix seconds),
    sent as replica ``replica``. Every edge is in it (cumulative: an idle edge repeats its counts)."""
    now_ns = int(now * 1e9)
    request, sm = _request(replica)
    total = sm.metrics.add(name=REQUESTS, unit="1", description="Requests between two nodes.")
    failed = sm.metrics.add(name=FAILED, unit="1", description="Failed requests between two nodes.")
    seconds = sm.metrics.add(
        name=SECONDS, unit="s", description="Time for a request between two nodes as seen from the server."
    )
    for metric in (total, failed):
        metric.sum.aggregation_temporality = _CUMULATIVE
        metric.sum.is_monotonic = True
    seconds.histogram.aggregation_temporality = _CUMULATIVE
    for edge in edges:
        labels = _labels(edge)
        start_ns = int(edge.start * 1e9)
        for metric, value in ((total, edge.requests), (failed, edge.errors)):
            point = metric.sum.data_points.add(start_time_unix_nano=start_ns, time_unix_nano=now_ns, as_int=value)
            point.attributes.extend(labels)
        h = seconds.histogram.data_points.add(
            start_time_unix_nano=start_ns,
            time_unix_nano=now_ns,
            count=int(edge.buckets.sum()),
            sum=edge.latency_sum,
            bucket_counts=edge.buckets.tolist(),
            explicit_bounds=LATENCY_BUCKETS_S,
        )
        h.attributes.extend(labels)
    return request
