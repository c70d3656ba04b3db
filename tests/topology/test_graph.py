"""The live graph from spans: the servicegraph connector's fixtures, pairing in either order and across batches,
spans without kinds, virtual peers, limits."""

from __future__ import annotations

from pathlib import Path

import httpx
import networkx as nx
import numpy as np
import pytest
import yaml
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from prometheus_client import CollectorRegistry

from rootward.app import App
from rootward.clock import ManualClock
from rootward.config import LOCAL_PORTS, NOTHING_ON_DISK, load_config
from rootward.model import SpanBatch
from rootward.receiver import TraceDecoder
from rootward.receiver.otlp_json import hex_ids_to_base64
from rootward.telemetry import Telemetry
from rootward.topology import TopologyGraph, TopologyLimits
from rootward.topology.history import History
from rootward.topology.maintenance import Maintenance
from rootward.topology.metrics import GraphSizeMetrics
from rootward.topology.red import Calls

from shared_data import SHARED_DATA

FIXTURES = SHARED_DATA / "servicegraph-fixtures"
TRACE = b"\x0a" * 16


def fixture(name: str) -> SpanBatch:
    doc = yaml.safe_load((FIXTURES / name).read_text())
    hex_ids_to_base64(doc)
    request = json_format.ParseDict(doc, ExportTraceServiceRequest())
    return TraceDecoder().decode(request.SerializeToString()).batch


def batch(*spans: tuple[str, Span]) -> SpanBatch:
    """One request with a resource per (service, span)."""
    request = ExportTraceServiceRequest()
    for service, span in spans:
        rs = request.resource_spans.add()
        rs.resource.attributes.add(key="service.name", value=AnyValue(string_value=service))
        rs.scope_spans.add().spans.append(span)
    return TraceDecoder().decode(request.SerializeToString()).batch


def span(sid: int, kind: int, parent: int = 0, error: bool = False, **attrs: str) -> Span:
    s = Span(
        trace_id=TRACE,
        span_id=sid.to_bytes(8, "big"),
        parent_span_id=parent.to_bytes(8, "big") if parent else b"",
        kind=kind,  # type: ignore[arg-type]
        name="op",
        start_time_unix_nano=1_000_000_000,
        end_time_unix_nano=1_030_000_000,
    )
    if error:
        s.status.code = 2  # type: ignore[assignment]
    for key, value in attrs.items():
        s.attributes.add(key=key.replace("_", "."), value=AnyValue(string_value=value))
    return s


CLIENT, SERVER, PRODUCER, CONSUMER = 3, 2, 4, 5


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("messaging-system-trace.yaml", id="client-server"),
        pytest.param("extra-dimensions-queue-db-trace.yaml", id="client-server-with-db-and-queue-dimensions"),
    ],
)
def test_connector_fixtures_give_the_connectors_edge(name: str) -> None:
    graph = TopologyGraph()
    graph.consume_traces(fixture(name))
    assert graph.calls() == [("service:/foo-server", "service:/bar-requester", 1, 0)]


def test_virtual_node_fixture_gives_the_uninstrumented_caller_and_no_guessed_peer() -> None:
    graph = TopologyGraph()
    graph.consume_traces(fixture("virtual-node-label-trace.yaml"))
    graph.flush()
    # bar-requester's root server span: its caller is not instrumented. foo-server's client span names no peer.
    assert graph.calls() == [("service:/user", "service:/bar-requester", 1, 0)]
    assert graph.graph.nodes["service:/user"]["virtual"] is True


@pytest.mark.parametrize("server_first", [False, True], ids=["client-first", "server-first"])
def test_client_and_server_pair_across_batches_in_either_order(server_first: bool) -> None:
    graph = TopologyGraph()
    client = batch(("frontend", span(1, CLIENT, error=True)))
    server = batch(("cart", span(2, SERVER, parent=1)))
    for b in (server, client) if server_first else (client, server):
        graph.consume_traces(b)
    assert graph.calls() == [("service:/frontend", "service:/cart", 1, 1)]
    edge = graph.graph.edges["service:/frontend", "service:/cart", "calls"]
    assert edge["latency_sum_s"] == pytest.approx(0.03)
    assert edge["latency_buckets"].tolist()[5] == 1  # 30 ms falls in (0.01, 0.05]
    assert graph.snapshot()["pending_spans"] == 0


def test_producer_and_consumer_pair_like_client_and_server() -> None:
    graph = TopologyGraph()
    graph.consume_traces(
        batch(
            ("checkout", span(1, PRODUCER, messaging_system="kafka")),
            ("email", span(2, CONSUMER, parent=1)),
        )
    )
    graph.flush()
    assert graph.calls() == [("service:/checkout", "service:/email", 1, 0)]


def test_spans_without_kinds_pair_with_their_parent_across_a_change_of_service() -> None:
    graph = TopologyGraph()
    graph.consume_traces(batch(("ts-order", span(1, 0)), ("ts-order", span(2, 0, parent=1))))
    graph.consume_traces(batch(("ts-station", span(3, 0, parent=2)), ("ts-price", span(4, 0, parent=2))))
    assert graph.calls() == [
        ("service:/ts-order", "service:/ts-price", 1, 0),
        ("service:/ts-order", "service:/ts-station", 1, 0),
    ]


def test_an_unpaired_client_span_becomes_an_edge_to_its_virtual_peer_when_it_expires() -> None:
    clock = ManualClock()
    graph = TopologyGraph(TopologyLimits(pending_ttl_s=5), clock)
    graph.consume_traces(
        batch(
            ("cart", span(1, CLIENT, db_system="redis", server_address="redis-master")),
            ("checkout", span(2, CLIENT, peer_service="payments-gateway")),
            ("frontend", span(3, CLIENT, server_address="api.example.com")),
        )
    )
    assert graph.calls() == []  # still waiting for their server spans
    clock.advance(6)
    graph.consume_traces(batch())
    assert graph.calls() == [
        ("service:/cart", "database:redis/redis-master", 1, 0),
        ("service:/checkout", "service:/payments-gateway", 1, 0),
        ("service:/frontend", "host:api.example.com", 1, 0),
    ]
    assert graph.graph.nodes["database:redis/redis-master"]["kind"] == "database"
    assert graph.expired_pending == 3


def test_with_detection_off_the_upkeep_round_expires_pending_spans() -> None:
    clock = ManualClock()
    graph = TopologyGraph(TopologyLimits(pending_ttl_s=5), clock)
    graph.consume_traces(batch(("checkout", span(1, CLIENT, server_address="payments.example"))))
    clock.advance(6)
    Maintenance(graph, None, 60.0, Telemetry()).run_once()
    assert graph.calls() == [("service:/checkout", "host:payments.example", 1, 0)]


def test_a_quiet_callers_unpaired_spans_expire_on_the_apps_tick_without_another_span() -> None:
    """Before, only the next trace batch expired them: on a quiet node no edge came, and no count moved."""
    app = App(load_config(environ={}, overrides=[*LOCAL_PORTS, *NOTHING_ON_DISK]), clock=ManualClock(1_000.0))
    app.start()
    try:
        request = ExportTraceServiceRequest()
        rs = request.resource_spans.add()
        rs.resource.attributes.add(key="service.name", value=AnyValue(string_value="checkout"))
        rs.scope_spans.add().spans.append(span(7, CLIENT, server_address="payments.shop.svc.cluster.local"))
        sent = httpx.post(
            f"http://127.0.0.1:{app.receiver.http.port}/v1/traces",
            content=request.SerializeToString(),
            headers={"content-type": "application/x-protobuf"},
            timeout=10,
        )
        assert sent.status_code == 200
        app.receiver.queue.wait_idle()
        assert app.topology.calls() == []
        assert isinstance(app.clock, ManualClock)
        app.clock.advance(app.config.topology.pending_ttl_s + 1)
        app.tick()  # the ticker's window close; no span came meanwhile
        assert app.topology.calls() == [("service:/checkout", "host:payments.shop.svc.cluster.local", 1, 0)]
    finally:
        app.shutdown()


def test_a_flood_of_unique_services_stops_at_the_entity_limit_and_is_counted() -> None:
    graph = TopologyGraph(TopologyLimits(max_entities=50))
    for i in range(200):
        graph.consume_traces(batch((f"svc-{i}", span(i + 1, SERVER, parent=1000 + i))))
    assert graph.graph.number_of_nodes() == 50
    assert graph.refused["entities"] == 150
    registry = CollectorRegistry()
    registry.register(GraphSizeMetrics(graph))  # what /metrics shows of it
    assert registry.get_sample_value("rootward_topology_refused_total", {"what": "entities"}) == 150
    assert registry.get_sample_value("rootward_topology_entities") == 50
    assert registry.get_sample_value("rootward_topology_unpaired_spans_total") == 0


def test_a_full_pending_store_evicts_its_oldest_spans_and_counts_them() -> None:
    graph = TopologyGraph(TopologyLimits(max_pending=10))
    graph.consume_traces(batch(*[("frontend", span(i + 1, CLIENT)) for i in range(25)]))
    assert graph.snapshot()["pending_spans"] == 10
    assert graph.refused["pending_evicted"] == 15
    # The newest spans are the ones kept: a server child of span 25 still pairs, one of span 1 does not.
    graph.consume_traces(batch(("cart", span(100, SERVER, parent=25)), ("cart", span(101, SERVER, parent=1))))
    assert graph.calls() == [("service:/frontend", "service:/cart", 1, 0)]


def test_entities_and_edges_not_seen_for_the_ttl_age_out() -> None:
    clock = ManualClock()
    graph = TopologyGraph(TopologyLimits(ttl_s=60), clock)
    graph.consume_traces(batch(("frontend", span(1, CLIENT)), ("cart", span(2, SERVER, parent=1))))
    clock.advance(30)
    graph.consume_traces(batch(("cart", span(3, SERVER, parent=9))))
    clock.advance(40)
    assert graph.age_out() == 1  # frontend went quiet 70 s ago; cart was seen 40 s ago
    assert "service:/frontend" not in graph.graph
    assert graph.calls() == []


def test_a_retried_server_child_pairs_with_its_client_too() -> None:
    graph = TopologyGraph()
    graph.consume_traces(batch(("frontend", span(1, CLIENT))))
    graph.consume_traces(batch(("cart", span(2, SERVER, parent=1))))
    graph.consume_traces(batch(("cart", span(3, SERVER, parent=1, error=True))))  # the retry, a batch later
    assert graph.calls() == [("service:/frontend", "service:/cart", 2, 1)]


def test_several_children_that_come_before_their_parent_all_pair() -> None:
    graph = TopologyGraph()
    graph.consume_traces(batch(("ts-station", span(3, 0, parent=1)), ("ts-price", span(4, 0, parent=1))))
    graph.consume_traces(batch(("ts-price", span(5, 0, parent=1))))
    graph.consume_traces(batch(("ts-order", span(1, 0))))
    assert graph.calls() == [
        ("service:/ts-order", "service:/ts-price", 2, 0),
        ("service:/ts-order", "service:/ts-station", 1, 0),
    ]
    assert graph.snapshot()["pending_spans"] == 0


def test_a_paired_client_span_gives_no_virtual_edge_when_it_expires() -> None:
    clock = ManualClock()
    graph = TopologyGraph(TopologyLimits(pending_ttl_s=5), clock)
    graph.consume_traces(batch(("cart", span(2, SERVER, parent=1))))
    graph.consume_traces(batch(("frontend", span(1, CLIENT, server_address="cart.shop"))))
    clock.advance(6)
    graph.flush()
    assert graph.calls() == [("service:/frontend", "service:/cart", 1, 0)]
    assert graph.expired_pending == 0


def test_the_name_table_forgets_aged_out_services_and_pairing_goes_on() -> None:
    clock = ManualClock()
    graph = TopologyGraph(TopologyLimits(ttl_s=60, pending_ttl_s=5), clock)
    for i in range(1500):  # short-lived services (a deploy per minute, say)
        graph.consume_traces(
            batch((f"job-{i}", span(10_000 + i, CLIENT)), ("sink", span(20_000 + i, SERVER, parent=10_000 + i)))
        )
    clock.advance(61)
    graph.consume_traces(batch(("frontend", span(1, CLIENT))))
    assert graph.age_out() == 1501  # the jobs and the sink
    assert len(graph._names) < 100
    graph.consume_traces(batch(("cart", span(2, SERVER, parent=1))))
    assert graph.calls() == [("service:/frontend", "service:/cart", 1, 0)]


def test_related_and_depends_on_answer_for_incidents() -> None:
    graph = TopologyGraph()
    request = ExportTraceServiceRequest()
    for service, pod, s in (("frontend", "frontend-1", span(1, CLIENT)), ("cart", "cart-1", span(2, SERVER, parent=1))):
        rs = request.resource_spans.add()
        for key, value in (("service.name", service), ("k8s.pod.name", pod), ("k8s.namespace.name", "shop")):
            rs.resource.attributes.add(key=key, value=AnyValue(string_value=value))
        rs.scope_spans.add().spans.append(s)
    graph.consume_traces(TraceDecoder().decode(request.SerializeToString()).batch)
    assert graph.related("service:/frontend", "service:/cart")
    assert graph.related("pod:shop/cart-1", "service:/frontend")  # the pod's service is called by frontend
    assert graph.related("pod:shop/cart-1", "service:/cart")
    assert not graph.related("pod:shop/cart-1", "pod:shop/unknown")
    assert graph.depends_on("service:/frontend", "service:/cart")
    assert graph.depends_on("service:/frontend", "pod:shop/cart-1")  # through its service
    assert graph.depends_on("service:/cart", "pod:shop/cart-1")  # a service needs its pods
    assert not graph.depends_on("service:/cart", "service:/frontend")
    assert graph.calls_among(["pod:shop/cart-1", "service:/frontend"]) == [("service:/frontend", "service:/cart")]
    assert graph.calls_among(["service:/cart", "pod:shop/unknown"]) == []


def test_containers_are_an_attribute_of_their_pod() -> None:
    graph = TopologyGraph()
    request = ExportTraceServiceRequest()
    for container in ("server", "istio-proxy", "server"):
        rs = request.resource_spans.add()
        attrs = {
            "service.name": "cart",
            "k8s.pod.name": "cart-1",
            "k8s.namespace.name": "shop",
            "k8s.container.name": container,
        }
        for key, value in attrs.items():
            rs.resource.attributes.add(key=key, value=AnyValue(string_value=value))
        rs.scope_spans.add().spans.append(span(1, SERVER))
    graph.consume_traces(TraceDecoder().decode(request.SerializeToString()).batch)
    assert graph.graph.nodes["pod:shop/cart-1"]["containers"] == ["server", "istio-proxy"]


@pytest.mark.parametrize("server_first", [False, True], ids=["client-first", "server-first"])
def test_paired_calls_tell_their_network_gap_to_the_calls_sink(server_first: bool) -> None:
    """The caller's client span lasts 30 ms, the callee's server span 12 ms: 18 ms were spent between them."""
    graph = TopologyGraph()
    told: list[dict[tuple[str, str], tuple[int, float, int]]] = []
    graph.on_calls = lambda deltas: told.append({k: (d.requests, d.gap_sum, d.gap_count) for k, d in deltas.items()})
    server_span = span(2, SERVER, parent=1)
    server_span.end_time_unix_nano = server_span.start_time_unix_nano + 12_000_000
    client, server = batch(("frontend", span(1, CLIENT))), batch(("cart", server_span))
    for b in (server, client) if server_first else (client, server):
        graph.consume_traces(b)
    ((requests, gap, paired),) = [d[("service:/frontend", "service:/cart")] for d in told if d]
    assert (requests, paired) == (1, 1)
    assert gap == pytest.approx(0.018)


def test_each_paired_calls_gap_goes_with_its_edge() -> None:
    """Calls of two edges interleaved in a batch: each edge gets its own calls' gaps (the detector's window
    leaves out the slowest), and only those of calls whose client span was seen."""
    calls = Calls()
    src, dst = np.array([0, 1, 0, 1, 0]), np.array([2, 2, 2, 2, 2])
    seconds = np.array([0.01, 0.02, 0.01, 0.02, 0.01])
    client = np.array([0.011, 0.05, np.nan, 0.07, 0.013])
    calls.add(src, dst, seconds, np.zeros(5), client)
    deltas = calls.reduce(["a", "b", "c"])
    assert deltas[("a", "c")].gaps == pytest.approx([0.001, 0.003])
    assert deltas[("b", "c")].gaps == pytest.approx([0.03, 0.05])
    assert (deltas[("a", "c")].gap_count, deltas[("a", "c")].requests) == (2, 3)


def test_root_spans_and_virtual_peers_have_no_network_gap() -> None:
    graph = TopologyGraph(clock=(clock := ManualClock(1000.0)))
    told: list[tuple[str, str, int]] = []
    graph.on_calls = lambda deltas: told.extend((s, d, delta.gap_count) for (s, d), delta in deltas.items())
    graph.consume_traces(
        batch(("frontend", span(1, SERVER)), ("frontend", span(2, CLIENT, parent=1, db_system="redis")))
    )
    clock.advance(3600)
    graph.flush()
    assert told
    assert all(count == 0 for _, _, count in told)


def test_neighbourhoods_answer_related_for_every_pair() -> None:
    """Incidents test many entities against many through neighbourhoods (one lookup each); on a random graph of
    services, pods, ReplicaSets, workloads, nodes and peers, b's own set meets a's near set exactly when
    ``related(a, b)``, and ``depends_on`` holds only for related pairs."""
    rng = np.random.default_rng(11)
    g: nx.MultiDiGraph[str] = nx.MultiDiGraph()
    services = [f"service:shop/s{i}" for i in range(8)]
    kinds = {s: "service" for s in services}
    kinds |= {f"pod:shop/p{i}": "pod" for i in range(12)}
    kinds |= {f"replicaset:shop/r{i}": "replicaset" for i in range(4)}
    kinds |= {f"workload:shop/w{i}": "workload" for i in range(3)}
    kinds |= {"node:n1": "node", "peer:redis:6379": "peer"}
    for node, kind in kinds.items():
        g.add_node(node, kind=kind, last_seen=0.0)
    pods = [n for n, k in kinds.items() if k == "pod"]
    for pod in pods:
        g.add_edge(pod, str(rng.choice(services)), key="instance_of", kind="instance_of", last_seen=0.0)
        g.add_edge(pod, f"replicaset:shop/r{rng.integers(4)}", key="owned_by", kind="owned_by", last_seen=0.0)
        g.add_edge(pod, "node:n1", key="runs_on", kind="runs_on", last_seen=0.0)
    for r in range(4):
        g.add_edge(f"replicaset:shop/r{r}", f"workload:shop/w{r % 3}", key="owned_by", kind="owned_by", last_seen=0.0)
    for _ in range(10):
        a, b = rng.choice(services, 2, replace=False)
        g.add_edge(str(a), str(b), key="calls", kind="calls", last_seen=0.0)
    g.add_edge("peer:redis:6379", pods[0], key="backed_by", kind="backed_by", last_seen=0.0)
    g.add_edge(services[1], "peer:redis:6379", key="calls", kind="calls", last_seen=0.0)
    graph = TopologyGraph()
    graph.restore(g)
    entities = [*kinds, "service:shop/unknown"]
    hoods = {e: graph.neighbourhood(e) for e in entities}
    for a in entities:
        for b in entities:
            assert graph.related(a, b) == (not hoods[b][0].isdisjoint(hoods[a][1])), (a, b)
            assert graph.related(a, b) or not graph.depends_on(a, b), (a, b)  # incidents rank related pairs only


def test_upkeep_on_the_apps_clock_runs_when_its_interval_of_that_clock_has_passed() -> None:
    """An in-process replay runs the graph's upkeep on replayed time (the same rounds however fast it runs): a round
    once ``interval_s`` of the App's clock has passed since the last, whatever the wall time."""
    clock = ManualClock(1000.0)
    graph = TopologyGraph(TopologyLimits(ttl_s=100.0), clock=clock)
    g: nx.MultiDiGraph[str] = nx.MultiDiGraph()
    g.add_node("service:shop/old", kind="service", last_seen=900.0)  # past the TTL from the start
    graph.restore(g)
    upkeep = Maintenance(graph, None, 30.0, Telemetry())
    upkeep.upkeep_at(clock.now())  # the first sight starts the count
    clock.advance(29)
    upkeep.upkeep_at(clock.now())
    assert "service:shop/old" in graph.graph  # no round yet: 29 s of replayed time, however long they took
    clock.advance(1)
    upkeep.upkeep_at(clock.now())
    assert "service:shop/old" not in graph.graph  # a round at 30 s: aged out


def test_upkeep_on_the_apps_clock_writes_the_final_checkpoint_at_shutdown(tmp_path: Path) -> None:
    """A replay with the history on (``rootward replay --set topology.history.enabled=true``) runs no upkeep thread;
    its shutdown still writes the last checkpoint, so what came after the last round is kept."""
    clock = ManualClock(1000.0)
    graph = TopologyGraph(clock=clock)
    history = History(tmp_path / "history.db", clock)
    history.open()
    upkeep = Maintenance(graph, history, 30.0, Telemetry())
    upkeep.upkeep_at(clock.now())
    clock.advance(31)
    upkeep.upkeep_at(clock.now())  # a round: one checkpoint
    clock.advance(5)
    upkeep.shutdown()
    upkeep.shutdown()  # once
    assert [t for t, *_ in history.checkpoints()] == [1031.0, 1036.0]
    history.close()


def test_names_a_sender_makes_too_long_are_cut_and_an_id_past_any_real_name_is_refused() -> None:
    """A 60 KB service.name became a 60 KB entity id: tens of thousands of them were gigabytes of graph, series and
    API answers. Names are cut at 253 characters (Kubernetes' own limit), and the graph refuses longer ids."""
    from rootward.topology.entities import Entity

    graph = TopologyGraph(TopologyLimits(pending_ttl_s=5), ManualClock())
    graph.consume_traces(batch(("s" * 60_000, span(1, CLIENT, server_address="h" * 60_000))))
    graph.flush()
    assert sorted(graph.graph.nodes) == [f"host:{'h' * 253}", f"service:/{'s' * 253}"]
    assert not graph._touch_entity(Entity("pod:shop/" + "p" * 2_000, "pod", "p" * 2_000, "shop"), 0.0)
    assert graph.refused["entities"] == 1
