"""Incidents figure: one window of an anomaly storm folded into incidents.

- ``incidents_storm_ms``: ``Incidents.observe`` of one window holding 1,200 anomalies on 1,200 services of a real
  ``TopologyGraph``: a hub already in an open incident, 300 services it calls with chains of two behind each (all
  three join the hub's incident, pass after pass), and 300 services unrelated to anything (each opens its own). The
  placement asks the graph one neighbourhood per entity and each incident's cover is kept for the window, and the
  ranking tests only related pairs (detector/incidents.py); testing every pair took 1.5 s in one pass (the code
  before 2026-11-26) and 4.4 s with the join passes. Median of ``rounds``.
"""

from __future__ import annotations

import statistics
import time

import networkx as nx

from rootward.detector.detector import Anomaly
from rootward.detector.incidents import Incidents
from rootward.topology import TopologyGraph

CHAINS = 300


def _service(name: str) -> str:
    return f"service:bench/{name}"


def _graph() -> TopologyGraph:
    g: nx.MultiDiGraph[str] = nx.MultiDiGraph()
    for name in ["hub", *(f"{p}{i}" for p in "stuz" for i in range(CHAINS))]:
        g.add_node(_service(name), kind="service", last_seen=0.0)
    for i in range(CHAINS):
        for a, b in (("hub", f"s{i}"), (f"s{i}", f"t{i}"), (f"t{i}", f"u{i}")):
            g.add_edge(_service(a), _service(b), key="calls", kind="calls", last_seen=0.0)
    graph = TopologyGraph()
    graph.restore(g)
    return graph


def _anomaly(name: str, t: float) -> Anomaly:
    return Anomaly(_service(name), "p95", 1.0, 0.1, 6.0, t - 10, t)


def run(rounds: int = 5) -> float:
    graph = _graph()
    storm = [_anomaly(f"{p}{i}", 110) for p in "utsz" for i in range(CHAINS)]  # the far end of each chain first
    times = []
    for _ in range(rounds):
        incidents = Incidents(graph, [], hold_s=60)
        incidents.observe(100, [_anomaly("hub", 100)])
        started = time.perf_counter()
        incidents.observe(110, storm)
        times.append((time.perf_counter() - started) * 1000)
        assert max(len(i.first_seen) for i in incidents.open) == 3 * CHAINS + 1
    return statistics.median(times)


if __name__ == "__main__":
    print(f"incidents_storm_ms {run():.1f}")
