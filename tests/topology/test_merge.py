"""Gateway mode's wire path without processes: a replica's graph -> OTLP metrics (topology/export.py) -> the
receiver's decoder -> the aggregator's graph (topology/merge.py). Retries, resets, restarts from history, unknown and
foreign senders; entities and structural edges as sightings."""

from __future__ import annotations

import itertools

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from rootward.clock import ManualClock
from rootward.receiver import MetricDecoder, TraceDecoder
from rootward.topology import Entity, TopologyGraph
from rootward.topology.export import (
    REPLICA_ATTRIBUTE,
    SECONDS,
    Sightings,
    edge_aggregates,
    sightings,
    sightings_request,
    to_request,
)
from rootward.topology.merge import ReplicaMerge

CLIENT, SERVER = 3, 2
_ids = itertools.count(1)


def _span(trace: int, sid: int, kind: int, parent: int = 0, error: bool = False, ms: int = 30, **attrs: str) -> Span:
    s = Span(
        trace_id=trace.to_bytes(16, "big"),
        span_id=sid.to_bytes(8, "big"),
        parent_span_id=parent.to_bytes(8, "big") if parent else b"",
        kind=kind,  # type: ignore[arg-type]
        name="op",
        start_time_unix_nano=1_000_000_000,
        end_time_unix_nano=1_000_000_000 + ms * 1_000_000,
    )
    if error:
        s.status.code = 2  # type: ignore[assignment]
    for key, value in attrs.items():
        s.attributes.add(key=key.replace("_", "."), value=AnyValue(string_value=value))
    return s


def calls(graph: TopologyGraph, n: int, failing: int = 0, ms: int = 30) -> None:
    """``n`` requests frontend -> checkout (the first ``failing`` of them failed), each with a call to redis that
    nothing answers (a virtual peer), fed to ``graph`` and flushed."""
    request = ExportTraceServiceRequest()
    for i in range(n):
        trace, client, server, db = next(_ids), next(_ids), next(_ids), next(_ids)
        for service, span in (
            ("frontend", _span(trace, client, CLIENT, ms=ms)),
            ("checkout", _span(trace, server, SERVER, parent=client, error=i < failing, ms=ms)),
            ("checkout", _span(trace, db, CLIENT, parent=server, db_system="redis", server_address="redis")),
        ):
            rs = request.resource_spans.add()
            rs.resource.attributes.add(key="service.name", value=AnyValue(string_value=service))
            rs.scope_spans.add().spans.append(span)
    graph.consume_traces(TraceDecoder().decode(request.SerializeToString()).batch)
    graph.flush()


def export(graph: TopologyGraph, replica: str) -> bytes:
    """What the replica's exporter sends now."""
    with graph.read() as g:
        return to_request(edge_aggregates(g), replica, graph.clock.now()).SerializeToString()


class Aggregator:
    """An aggregating replica's graph and merge, fed through the receiver's metric decoder."""

    def __init__(self, clock: ManualClock) -> None:
        self.graph = TopologyGraph(clock=clock)
        self.merge = ReplicaMerge(self.graph, "rootward-0", clock=clock)
        self.decoder = MetricDecoder()

    def receive(self, payload: bytes) -> None:
        self.merge.consume_metrics(self.decoder.decode(payload).batch)

    def edge(self, src: str, dst: str) -> dict[str, object]:
        data: dict[str, object] = self.graph.graph.edges[src, dst, "calls"]
        return data


FRONTEND, CHECKOUT, REDIS = "service:/frontend", "service:/checkout", "database:redis/redis"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def test_the_merged_graph_has_the_replicas_edges_entities_and_red(clock: ManualClock) -> None:
    a, b = TopologyGraph(clock=clock), TopologyGraph(clock=clock)
    calls(a, 5, failing=2, ms=30)
    calls(b, 3, failing=1, ms=300)
    single = TopologyGraph(clock=clock)
    calls(single, 5, failing=2, ms=30)
    calls(single, 3, failing=1, ms=300)
    aggregator = Aggregator(clock)
    clock.advance(1)
    aggregator.receive(export(a, "rootward-1"))
    aggregator.receive(export(b, "rootward-2"))

    assert aggregator.graph.calls() == single.calls() == [(CHECKOUT, REDIS, 8, 0), (FRONTEND, CHECKOUT, 8, 3)]
    with single.read() as expected:
        for src, dst in ((FRONTEND, CHECKOUT), (CHECKOUT, REDIS)):
            merged, alone = aggregator.edge(src, dst), expected.edges[src, dst, "calls"]
            assert merged["latency_buckets"].tolist() == alone["latency_buckets"].tolist()  # type: ignore[attr-defined]
            assert merged["latency_sum_s"] == pytest.approx(alone["latency_sum_s"])
        keep = ("kind", "name", "namespace", "virtual")
        for node in (FRONTEND, CHECKOUT, REDIS):
            merged_node, alone_node = aggregator.graph.graph.nodes[node], expected.nodes[node]
            assert {k: merged_node[k] for k in keep} == {k: alone_node[k] for k in keep}
    assert aggregator.graph.graph.number_of_nodes() == 3  # no entity for the sending replicas


def test_a_retried_export_adds_nothing(clock: ManualClock) -> None:
    replica, aggregator = TopologyGraph(clock=clock), Aggregator(clock)
    calls(replica, 4, failing=1)
    payload = export(replica, "rootward-1")
    aggregator.receive(payload)
    aggregator.receive(payload)
    assert aggregator.graph.calls() == [(CHECKOUT, REDIS, 4, 0), (FRONTEND, CHECKOUT, 4, 1)]
    assert aggregator.merge.outcomes["stale"] == 6  # three metrics of two edges


def test_later_exports_add_only_what_is_new_and_a_late_old_one_is_ignored(clock: ManualClock) -> None:
    replica, aggregator = TopologyGraph(clock=clock), Aggregator(clock)
    calls(replica, 4)
    first = export(replica, "rootward-1")
    aggregator.receive(first)
    clock.advance(10)
    aggregator.receive(export(replica, "rootward-1"))  # nothing new: idle edges repeat their counts
    calls(replica, 2, failing=2)
    clock.advance(10)
    aggregator.receive(export(replica, "rootward-1"))
    aggregator.receive(first)  # a retry of the first export that arrives last
    assert aggregator.graph.calls() == [(CHECKOUT, REDIS, 6, 0), (FRONTEND, CHECKOUT, 6, 2)]
    assert aggregator.edge(FRONTEND, CHECKOUT)["latency_buckets"].tolist()[5] == 6  # type: ignore[attr-defined]


def test_a_replica_that_restarts_from_zero_is_a_reset_and_its_new_counts_are_added_in_full(
    clock: ManualClock,
) -> None:
    aggregator = Aggregator(clock)
    before = TopologyGraph(clock=clock)
    calls(before, 5)
    aggregator.receive(export(before, "rootward-1"))
    clock.advance(30)
    after = TopologyGraph(clock=clock)  # restarted without history: new edges, later first_seen
    calls(after, 2)
    clock.advance(1)
    aggregator.receive(export(after, "rootward-1"))
    assert aggregator.graph.calls() == [(CHECKOUT, REDIS, 7, 0), (FRONTEND, CHECKOUT, 7, 0)]
    assert aggregator.merge.outcomes["reset"] == 6


def test_a_replica_restored_from_an_older_checkpoint_is_rebased_without_counting_twice(clock: ManualClock) -> None:
    aggregator = Aggregator(clock)
    replica = TopologyGraph(clock=clock)
    calls(replica, 3)
    with replica.read() as g:
        checkpoint = g.copy()
    calls(replica, 2)
    clock.advance(5)
    aggregator.receive(export(replica, "rootward-1"))  # 5 counted
    restored = TopologyGraph(clock=clock)
    restored.restore(checkpoint)  # the kill lost the last 2; same first_seen
    clock.advance(5)
    aggregator.receive(export(restored, "rootward-1"))
    assert aggregator.graph.calls()[1] == (FRONTEND, CHECKOUT, 5, 0)
    calls(restored, 4)
    clock.advance(5)
    aggregator.receive(export(restored, "rootward-1"))
    assert aggregator.graph.calls() == [(CHECKOUT, REDIS, 9, 0), (FRONTEND, CHECKOUT, 9, 0)]
    assert aggregator.merge.outcomes["rebased"] == 4  # requests and latency of two edges (no failures to go back)


def test_a_replica_never_seen_before_adds_its_whole_count_beside_the_aggregators_own_pairs(
    clock: ManualClock,
) -> None:
    aggregator = Aggregator(clock)
    calls(aggregator.graph, 2)  # the aggregator is a replica too: what it pairs itself stays
    late = TopologyGraph(clock=clock)
    calls(late, 3, failing=3)
    clock.advance(60)
    aggregator.receive(export(late, "rootward-7"))
    assert aggregator.graph.calls() == [(CHECKOUT, REDIS, 5, 0), (FRONTEND, CHECKOUT, 5, 3)]


@pytest.mark.parametrize(
    ("replica", "outcome"),
    [
        pytest.param(None, None, id="without-the-replica-attribute"),
        pytest.param("rootward-0", "own", id="from-the-aggregators-own-name"),
    ],
)
def test_servicegraph_metrics_not_from_another_replica_are_left_alone(
    clock: ManualClock, replica: str | None, outcome: str | None
) -> None:
    source, aggregator = TopologyGraph(clock=clock), Aggregator(clock)
    calls(source, 3)
    request = ExportMetricsServiceRequest.FromString(export(source, "rootward-1"))
    resource = request.resource_metrics[0].resource
    del resource.attributes[:]
    if replica is not None:
        resource.attributes.add(key=REPLICA_ATTRIBUTE, value=AnyValue(string_value=replica))
    aggregator.receive(request.SerializeToString())
    assert aggregator.graph.calls() == []
    assert sum(aggregator.merge.outcomes.values()) == (0 if outcome is None else 6)


def test_a_histogram_with_other_bounds_is_refused_and_the_counters_still_merge(clock: ManualClock) -> None:
    source, aggregator = TopologyGraph(clock=clock), Aggregator(clock)
    calls(source, 3)
    request = ExportMetricsServiceRequest.FromString(export(source, "rootward-1"))
    (seconds,) = [m for m in request.resource_metrics[0].scope_metrics[0].metrics if m.name == SECONDS]
    for point in seconds.histogram.data_points:
        point.explicit_bounds[0] = 0.001
    aggregator.receive(request.SerializeToString())
    assert aggregator.graph.calls() == [(CHECKOUT, REDIS, 3, 0), (FRONTEND, CHECKOUT, 3, 0)]
    assert aggregator.merge.outcomes["refused"] == 2
    assert "latency_buckets" in aggregator.edge(FRONTEND, CHECKOUT)
    assert aggregator.edge(FRONTEND, CHECKOUT)["latency_buckets"].sum() == 0  # type: ignore[attr-defined]


def test_an_aggregator_restored_from_its_checkpoint_counts_nothing_twice_and_goes_on_counting(
    clock: ManualClock,
) -> None:
    replica, before = TopologyGraph(clock=clock), Aggregator(clock)
    calls(replica, 3)
    before.receive(export(replica, "rootward-1"))
    with before.graph.read() as g:
        checkpoint, checkpoint_time = g.copy(), clock.now()
    clock.advance(5)
    after = Aggregator(clock)  # the aggregator restarted: its graph from the checkpoint, no per-series state
    after.graph.restore(checkpoint)
    after.merge.counted_until = checkpoint_time
    calls(replica, 2)  # paired between the checkpoint and the first export after the restart: not counted
    clock.advance(1)
    after.receive(export(replica, "rootward-1"))
    assert after.graph.calls() == [(CHECKOUT, REDIS, 3, 0), (FRONTEND, CHECKOUT, 3, 0)]
    calls(replica, 4)
    clock.advance(1)
    after.receive(export(replica, "rootward-1"))
    assert after.graph.calls() == [(CHECKOUT, REDIS, 7, 0), (FRONTEND, CHECKOUT, 7, 0)]


def seen_pod(graph: TopologyGraph) -> None:
    """One span from a pod of checkout's Deployment on node-a: its resource names the pod, node, workload and
    namespace."""
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    for key, value in {
        "service.name": "checkout",
        "k8s.namespace.name": "shop",
        "k8s.pod.name": "checkout-7d9f-x2",
        "k8s.deployment.name": "checkout",
        "k8s.node.name": "node-a",
    }.items():
        rs.resource.attributes.add(key=key, value=AnyValue(string_value=value))
    rs.scope_spans.add().spans.append(_span(next(_ids), next(_ids), 1))
    graph.consume_traces(TraceDecoder().decode(request.SerializeToString()).batch)


def structure(graph: TopologyGraph) -> tuple[dict[str, tuple[object, ...]], set[tuple[str, str, str]]]:
    with graph.read() as g:
        entities = {n: (d["kind"], d["name"], d["namespace"], d["virtual"]) for n, d in g.nodes(data=True)}
        return entities, set(g.edges(keys=True))


def test_entities_and_structural_edges_a_replica_saw_are_seen_on_the_aggregator(clock: ManualClock) -> None:
    replica, aggregator = TopologyGraph(clock=clock), Aggregator(clock)
    seen_pod(replica)
    with replica.read() as g:
        seen = sightings(g, float("-inf"))
    aggregator.receive(sightings_request(seen, "rootward-1", clock.now()).SerializeToString())
    assert structure(aggregator.graph) == structure(replica)
    assert {kind for _, _, kind in structure(replica)[1]} == {"instance_of", "runs_on", "owned_by", "in"}
    clock.advance(600)
    aggregator.receive(sightings_request(seen, "rootward-1", clock.now()).SerializeToString())  # seen again
    assert aggregator.graph.age_out() == 0  # within the TTL of the last sighting, not of the first


def test_sightings_are_what_was_seen_since_the_last_export(clock: ManualClock) -> None:
    replica = TopologyGraph(clock=clock)
    seen_pod(replica)
    last_export = clock.now()
    clock.advance(30)
    calls(replica, 1)  # frontend and checkout (and redis) seen again; the pod, node and workload not
    with replica.read() as g:
        seen = sightings(g, last_export + 1)
    assert sorted(e.id for e in seen.entities) == [REDIS, CHECKOUT, FRONTEND]
    assert seen.edges == []


def test_a_sighting_of_a_call_edge_or_without_an_id_is_refused(clock: ManualClock) -> None:
    aggregator = Aggregator(clock)
    checkout = Entity(CHECKOUT, "service", "checkout")
    nameless = Entity("", "service", "nobody")
    seen = Sightings([checkout, nameless], [(CHECKOUT, CHECKOUT, "calls")])
    aggregator.receive(sightings_request(seen, "rootward-1", clock.now()).SerializeToString())
    assert aggregator.merge.outcomes == {"sighted": 1, "refused": 2}
    assert structure(aggregator.graph) == ({CHECKOUT: ("service", "checkout", "", False)}, set())


def test_an_idle_edge_repeating_its_counts_does_not_keep_it_alive_on_the_aggregator(clock: ManualClock) -> None:
    replica, aggregator = TopologyGraph(clock=clock), Aggregator(clock)
    calls(replica, 3)
    aggregator.receive(export(replica, "rootward-1"))
    clock.advance(600)
    aggregator.receive(export(replica, "rootward-1"))  # no new traffic
    clock.advance(400)
    assert aggregator.graph.age_out() == 3  # 1000 s after the last call, past the 900 s TTL
    assert aggregator.graph.calls() == []


@pytest.mark.parametrize(
    "edge",
    [
        pytest.param(
            ("pod:shop/cart-1", "workload:kube-system/deployment/coredns", "owned_by"), id="across-namespaces"
        ),
        pytest.param(("pod:shop/cart-1", "evil", "owned_by"), id="not-an-entity-id"),
    ],
)
def test_a_forged_structural_edge_is_refused(clock: ManualClock, edge: tuple[str, str, str]) -> None:
    """A pod owned by kube-system's coredns would make a restart of the pod's workload restart coredns."""
    aggregator = Aggregator(clock)
    seen = Sightings([Entity("pod:shop/cart-1", "pod", "cart-1", "shop")], [edge])
    aggregator.receive(sightings_request(seen, "rootward-1", clock.now()).SerializeToString())
    assert aggregator.merge.outcomes == {"sighted": 1, "refused": 1}
    assert structure(aggregator.graph)[1] == set()


def test_a_latency_sum_that_is_not_a_number_is_refused_and_the_api_keeps_answering(clock: ManualClock) -> None:
    replica = TopologyGraph(clock=clock)
    calls(replica, 3)
    request = ExportMetricsServiceRequest.FromString(export(replica, "rootward-1"))
    for rm in request.resource_metrics:
        for metric in rm.scope_metrics[0].metrics:
            for point in metric.histogram.data_points:
                point.sum = float("nan")
    aggregator = Aggregator(clock)
    aggregator.receive(request.SerializeToString())
    assert aggregator.merge.outcomes["refused"] >= 1
    for _, _, data in aggregator.graph.graph.edges(data=True):
        assert data.get("latency_sum_s", 0.0) == data.get("latency_sum_s", 0.0)  # not NaN
