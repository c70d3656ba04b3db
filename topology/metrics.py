"""The service graph as Prometheus metrics with the Collector servicegraph connector's names and labels, so the
Grafana service-graph panels that users already have work against Rootward's /metrics:

    traces_service_graph_request_total{client, server, connection_type, client_service_namespace, ...}
    traces_service_graph_request_failed_total{the same}
    traces_service_graph_request_server_seconds_bucket / _sum / _count{the same, le}

``client`` and ``server`` are service names (a peer's name for virtual nodes); ``connection_type`` is empty for
service-to-service calls and ``database`` / ``messaging_system`` / ``virtual_node`` for peers, as the connector
labels them. Each end's namespace goes beside, as the connector's ``dimensions: [service.namespace]`` names it
(``client_service_namespace``, ``server_service_namespace``; empty for peers): services of the same name in two
namespaces were two series with the same labels, invalid exposition of which Prometheus keeps one (summed, the
sum went down whenever one of them aged out, a counter reset to ``rate()``). Dashboards that sum by client and
server see what they saw. Collected at scrape time from a graph: the live one, or with the history on,
the call edges of the last committed checkpoint (:meth:`History.read`), so that no value served is ever lost to a
restart and the counters never go backwards (see topology/history.py).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Protocol

import networkx as nx
import numpy as np
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from rootward.topology.red import LATENCY_BUCKETS_S

_CONNECTION = {"database": "database", "queue": "messaging_system", "host": "virtual_node"}


def connection_type(target: Mapping[str, object]) -> str:
    """The connector's ``connection_type`` of a call to the node with attributes ``target``: empty between
    services, ``database`` / ``messaging_system`` / ``virtual_node`` for peers."""
    return _CONNECTION.get(str(target["kind"]), "virtual_node" if target["virtual"] else "")


@dataclass
class _Calls:
    """The calls of the edges that share one series' labels, summed."""

    requests: float = 0.0
    errors: float = 0.0
    seconds: float = 0.0
    buckets: np.ndarray = field(default_factory=lambda: np.zeros(len(LATENCY_BUCKETS_S) + 1))

    def add(self, edge: Mapping[str, object]) -> None:
        self.requests += float(edge.get("requests", 0))  # type: ignore[arg-type]
        self.errors += float(edge.get("errors", 0))  # type: ignore[arg-type]
        self.seconds += float(edge.get("latency_sum_s", 0.0))  # type: ignore[arg-type]
        if edge.get("latency_buckets") is not None:
            self.buckets = self.buckets + np.asarray(edge["latency_buckets"], np.float64)


class GraphSource(Protocol):
    """What the metrics read: a :class:`TopologyGraph` or a :class:`History`."""

    def read(self) -> AbstractContextManager[nx.MultiDiGraph[str]]: ...


class ServiceGraphMetrics:
    """A prometheus_client collector over a :class:`GraphSource` (register it on a registry)."""

    def __init__(self, graph: GraphSource) -> None:
        self.graph = graph

    def collect(self) -> Iterator[Metric]:
        labels = ["client", "server", "connection_type", "client_service_namespace", "server_service_namespace"]
        total = CounterMetricFamily("traces_service_graph_request", "Requests between two nodes.", labels=labels)
        failed = CounterMetricFamily(
            "traces_service_graph_request_failed", "Failed requests between two nodes.", labels=labels
        )
        seconds = HistogramMetricFamily(
            "traces_service_graph_request_server_seconds",
            "Time for a request between two nodes as seen from the server.",
            labels=labels,
        )
        summed: dict[tuple[str, ...], _Calls] = {}  # one edge a series, unless two entities share every label
        with self.graph.read() as g:
            for u, v, key, data in g.edges(keys=True, data=True):
                if key != "calls":
                    continue
                target = g.nodes[v]
                source = g.nodes[u]
                values = (str(source["name"]), str(target["name"]), connection_type(target),
                          str(source.get("namespace") or ""), str(target.get("namespace") or ""))  # fmt: skip
                summed.setdefault(values, _Calls()).add(data)
        for series, calls in summed.items():
            total.add_metric(list(series), calls.requests)
            failed.add_metric(list(series), calls.errors)
            counts = np.cumsum(calls.buckets)
            buckets = [(str(b), float(c)) for b, c in zip(LATENCY_BUCKETS_S, counts[:-1], strict=True)]
            buckets.append(("+Inf", float(counts[-1])))
            seconds.add_metric(list(series), buckets, calls.seconds)
        yield total
        yield failed
        yield seconds


class GraphLimits(Protocol):
    """What :class:`GraphSizeMetrics` reads: a :class:`TopologyGraph`."""

    @property
    def refused(self) -> Mapping[str, int]: ...

    @property
    def expired_pending(self) -> int: ...

    def read(self) -> AbstractContextManager[nx.MultiDiGraph[str]]: ...


class GraphSizeMetrics:
    """The live graph's size and what its limits set aside, as Prometheus metrics (a collector):

    rootward_topology_entities / rootward_topology_edges                 held now
    rootward_topology_refused_total{what=entities|edges|pending_evicted} refused past topology.max_* (counted)
    rootward_topology_unpaired_spans_total                               spans whose other half never came within
                                                                         topology.pending_ttl_s
    """

    def __init__(self, graph: GraphLimits) -> None:
        self.graph = graph

    def collect(self) -> Iterator[Metric]:
        with self.graph.read() as g:
            entities, edges = g.number_of_nodes(), g.number_of_edges()
            refused, unpaired = dict(self.graph.refused), self.graph.expired_pending
        yield GaugeMetricFamily("rootward_topology_entities", "Entities the live graph holds.", value=entities)
        yield GaugeMetricFamily("rootward_topology_edges", "Edges the live graph holds.", value=edges)
        counted = CounterMetricFamily(
            "rootward_topology_refused",
            "Entities and edges refused past topology.max_entities / max_edges (entities also with an id longer than "
            "any real name makes), and spans evicted from the pairing store past topology.max_pending.",
            labels=["what"],
        )
        for what in ("entities", "edges", "pending_evicted"):
            counted.add_metric([what], float(refused.get(what, 0)))
        yield counted
        yield CounterMetricFamily(
            "rootward_topology_unpaired_spans",
            "Spans that waited topology.pending_ttl_s for their other half (client for server and back) in vain.",
            value=float(unpaired),
        )
