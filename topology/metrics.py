"""The service graph as Prometheus metrics with the Collector servicegraph connector's names and labels, so the
Grafana service-graph panels that users already have work against Rootward's /metrics:

    traces_service_graph_request_total{client, server, connection_type}
    traces_service_graph_request_failed_total{client, server, connection_type}
    traces_service_graph_request_server_seconds_bucket / _sum / _count{client, server, connection_type, le}

``client`` and ``server`` are service names (a peer's name for virtual nodes); ``connection_type`` is empty for
service-to-service calls and ``database`` / ``messaging_system`` / ``virtual_node`` for peers, as the connector
labels them. Collected at scrape time from a graph: the live one, or with the history on, the call edges of the
last committed checkpoint (:meth:`History.read`), so that no value served is ever lost to a restart and the
counters never go backwards (see topology/history.py).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from typing import Protocol

import networkx as nx
import numpy as np
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric

from rootward.topology.red import LATENCY_BUCKETS_S

_CONNECTION = {"database": "database", "queue": "messaging_system", "host": "virtual_node"}


def connection_type(target: Mapping[str, object]) -> str:
    """The connector's ``connection_type`` of a call to the node with attributes ``target``: empty between
    services, ``database`` / ``messaging_system`` / ``virtual_node`` for peers."""
    return _CONNECTION.get(str(target["kind"]), "virtual_node" if target["virtual"] else "")


class GraphSource(Protocol):
    """What the metrics read: a :class:`TopologyGraph` or a :class:`History`."""

    def read(self) -> AbstractContextManager[nx.MultiDiGraph[str]]: ...


class ServiceGraphMetrics:
    """A prometheus_client collector over a :class:`GraphSource` (register it on a registry)."""

    def __init__(self, graph: GraphSource) -> None:
        self.graph = graph

    def collect(self) -> Iterator[Metric]:
        labels = ["client", "server", "connection_type"]
        total = CounterMetricFamily("traces_service_graph_request", "Requests between two nodes.", labels=labels)
        failed = CounterMetricFamily(
            "traces_service_graph_request_failed", "Failed requests between two nodes.", labels=labels
        )
        seconds = HistogramMetricFamily(
            "traces_service_graph_request_server_seconds",
            "Time for a request between two nodes as seen from the server.",
            labels=labels,
        )
        with self.graph.read() as g:
            for u, v, key, data in g.edges(keys=True, data=True):
                if key != "calls":
                    continue
                target = g.nodes[v]
                connection = connection_type(target)
                values = [g.nodes[u]["name"], target["name"], connection]
                total.add_metric(values, float(data.get("requests", 0)))
                failed.add_metric(values, float(data.get("errors", 0)))
                counts = np.cumsum(np.asarray(data.get("latency_buckets", np.zeros(len(LATENCY_BUCKETS_S) + 1))))
                buckets = [(str(b), float(c)) for b, c in zip(LATENCY_BUCKETS_S, counts[:-1], strict=True)]
                buckets.append(("+Inf", float(counts[-1])))
                seconds.add_metric(values, buckets, float(data.get("latency_sum_s", 0.0)))
        yield total
        yield failed
        yield seconds
