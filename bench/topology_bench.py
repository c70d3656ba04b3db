"""Topology figures: the graph update against the decode of the same batches, subgraph query latency on a large
graph, and memory per entity and per edge.

- ``r_graph``: ``TopologyGraph.consume_traces`` time / ``TraceDecoder.decode`` time over the same 500-span
  requests (best of several passes each). The graph runs on a manual clock at 10,000 spans/s and is warm: past the
  pairing TTL, so the pending stores are at their steady-state size and expiry runs in the measured passes. Each
  pass sends the spans under new trace ids (as new traffic would), so no pass repeats the ids of another. The
  workload's ids are random: client spans do not pair, and expire into virtual edges (the costlier path).
- ``subgraph_p99_ms``: p99 of ``queries.subgraph(depth=2)`` around random services of a 5,000-service graph where
  each service calls 3 others.
- ``bytes_per_entity`` / ``bytes_per_edge``: traced Python allocations (tracemalloc) of 50,000 entities, then of
  100,000 call edges with RED counters among them, divided by their counts.
"""

from __future__ import annotations

import random
import time
import tracemalloc
from dataclasses import dataclass, replace

import numpy as np

from rootward.clock import ManualClock
from rootward.model import SpanBatch
from rootward.receiver import TraceDecoder
from rootward.topology import TopologyGraph, TopologyLimits, queries
from rootward.topology.entities import service
from rootward.topology.red import EdgeDelta

#: The time between two 500-span batches at 10,000 spans/s (the soak's rate).
BATCH_INTERVAL_S = 0.05


@dataclass(frozen=True)
class TopologyFigures:
    r_graph: float
    graph_us_per_span: float
    subgraph_p99_ms: float
    bytes_per_entity: float
    bytes_per_edge: float


def _best(fn: object, passes: int) -> float:
    best = float("inf")
    for _ in range(passes):
        started = time.perf_counter()
        fn()  # type: ignore[operator]
        best = min(best, time.perf_counter() - started)
    return best


def _big_graph(services: int, calls_each: int, seed: int = 3) -> TopologyGraph:
    rng = random.Random(seed)
    graph = TopologyGraph(TopologyLimits(max_entities=10**7, max_edges=10**8))
    now = time.time()
    ids = [service(f"svc-{i}", "bench").id for i in range(services)]
    for i in range(services):
        graph._touch_entity(service(f"svc-{i}", "bench"), now)
    deltas: dict[tuple[str, str], EdgeDelta] = {}
    for i, src in enumerate(ids):
        for j in rng.sample(range(services), calls_each):
            if j != i:
                delta = deltas.setdefault((src, ids[j]), EdgeDelta())
                delta.add(rng.random() / 10, rng.random() < 0.01)
    graph._merge(deltas, now)
    return graph


def _salted(batches: list[SpanBatch], rng: random.Random) -> list[SpanBatch]:
    """The batches with their trace ids changed: the same spans in new traces, so a pass never repeats ids."""
    salt = np.uint64(rng.getrandbits(64))
    return [replace(b, trace_id=b.trace_id ^ salt) for b in batches]


def _graph_pass(graph: TopologyGraph, clock: ManualClock, batches: list[SpanBatch]) -> None:
    for batch in batches:
        clock.advance(BATCH_INTERVAL_S)
        graph.consume_traces(batch)


def run(requests: list[bytes], spans_per_request: int, rounds: int = 5) -> TopologyFigures:
    decoder = TraceDecoder()
    batches = [decoder.decode(r).batch for r in requests]
    clock = ManualClock()
    graph = TopologyGraph(clock=clock)
    rng = random.Random(11)
    # Warm: past the pairing TTL at 10,000 spans/s, so the pending stores are at their steady-state size and
    # expiry (with the virtual edges of unpaired client spans) runs inside the measured passes.
    warm_passes = int(graph.limits.pending_ttl_s * 1.5 / (BATCH_INTERVAL_S * len(batches))) + 1
    for _ in range(warm_passes):
        _graph_pass(graph, clock, _salted(batches, rng))
    spans = len(requests) * spans_per_request
    passes = [_salted(batches, rng) for _ in range(rounds)]
    decode_s = min(_best(lambda: [decoder.decode(r) for r in requests], 1) for _ in range(rounds))
    graph_s = float("inf")
    for salted in passes:
        started = time.perf_counter()
        _graph_pass(graph, clock, salted)
        graph_s = min(graph_s, time.perf_counter() - started)

    big = _big_graph(5000, 3)
    rng = random.Random(5)
    ids = list(big.graph.nodes)
    latencies = []
    for _ in range(400):
        start = time.perf_counter()
        with big.read() as g:
            queries.subgraph(g, rng.choice(ids), depth=2)
        latencies.append((time.perf_counter() - start) * 1000)

    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    many = _big_graph(50_000, 0)
    with_entities = tracemalloc.get_traced_memory()[0]
    deltas: dict[tuple[str, str], EdgeDelta] = {}
    nodes = list(many.graph.nodes)
    edge_rng = random.Random(9)
    while len(deltas) < 100_000:
        src, dst = edge_rng.sample(nodes, 2)
        deltas.setdefault((src, dst), EdgeDelta()).add(0.01, False)
    pairs = list(deltas)
    measured_from = tracemalloc.get_traced_memory()[0]
    many._merge(deltas, time.time())
    del deltas
    with_edges = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    _ = pairs
    return TopologyFigures(
        r_graph=graph_s / decode_s,
        graph_us_per_span=graph_s / spans * 1e6,
        subgraph_p99_ms=float(np.percentile(latencies, 99)),
        bytes_per_entity=(with_entities - before) / many.graph.number_of_nodes(),
        bytes_per_edge=(with_edges - measured_from) / many.graph.number_of_edges(),
    )
