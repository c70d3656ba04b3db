"""The graph's history: checkpoints of what changed, the graph as of a time, diffs, thinning and retention, restore,
and the counters /metrics serves. Real graphs fed real span batches, a real SQLite file, an injected clock."""

from __future__ import annotations

import itertools
import sqlite3
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from prometheus_client import CollectorRegistry, generate_latest

from rootward.clock import ManualClock
from rootward.receiver import TraceDecoder
from rootward.storage import StorageError
from rootward.topology import TopologyGraph, TopologyLimits, queries
from rootward.topology.history import History, NoHistory
from rootward.topology.metrics import ServiceGraphMetrics

CLIENT, SERVER = 3, 2
_ids = itertools.count(1)


#: The namespace labels of services that set no service.namespace.
NO_NAMESPACES = {"client_service_namespace": "", "server_service_namespace": ""}


def send(
    graph: TopologyGraph, caller: str, callee: str, requests: int = 1, errors: int = 0, namespace: str = ""
) -> None:
    """``requests`` client/server span pairs from ``caller`` to ``callee`` (30 ms each; the first ``errors`` fail),
    both of ``namespace`` (service.namespace) when given."""
    request = ExportTraceServiceRequest()
    for i in range(requests):
        client, server = next(_ids), next(_ids)
        for service, sid, parent, kind in ((caller, client, 0, CLIENT), (callee, server, client, SERVER)):
            rs = request.resource_spans.add()
            rs.resource.attributes.add(key="service.name", value=AnyValue(string_value=service))
            if namespace:
                rs.resource.attributes.add(key="service.namespace", value=AnyValue(string_value=namespace))
            span = Span(
                trace_id=b"\x0b" * 16,
                span_id=sid.to_bytes(8, "big"),
                parent_span_id=parent.to_bytes(8, "big") if parent else b"",
                kind=kind,  # type: ignore[arg-type]
                name="op",
                start_time_unix_nano=1_000_000_000,
                end_time_unix_nano=1_030_000_000,
            )
            if i < errors and kind == SERVER:
                span.status.code = 2  # type: ignore[assignment]
            rs.scope_spans.add().spans.append(span)
    graph.consume_traces(TraceDecoder().decode(request.SerializeToString()).batch)


def calls(g: queries.Graph) -> dict[tuple[str, str], tuple[int, int]]:
    return {(u, v): (d["requests"], d["errors"]) for u, v, k, d in g.edges(keys=True, data=True) if k == "calls"}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_700_000_000.0)


@pytest.fixture
def graph(clock: ManualClock) -> TopologyGraph:
    return TopologyGraph(TopologyLimits(ttl_s=600), clock)


@pytest.fixture
def history(tmp_path: Path, clock: ManualClock) -> History:
    h = History(tmp_path / "topology.db", clock, retention_s=3 * 3600, thinning=[(3600, 300)])
    h.open()
    yield h  # type: ignore[misc]
    h.close()


def test_the_graph_as_of_a_time_is_the_last_checkpoint_at_or_before_it(
    graph: TopologyGraph, history: History, clock: ManualClock
) -> None:
    send(graph, "frontend", "cart", 3, errors=1)
    first = history.checkpoint(graph).t
    clock.advance(30)
    send(graph, "frontend", "cart", 2)
    send(graph, "cart", "redis")
    second = history.checkpoint(graph).t
    then, as_of = history.graph_at(first + 29)
    assert as_of == first
    assert calls(then) == {("service:/frontend", "service:/cart"): (3, 1)}
    assert set(then.nodes) == {"service:/frontend", "service:/cart"}
    now, as_of = history.graph_at(second)
    assert as_of == second
    assert calls(now) == {("service:/frontend", "service:/cart"): (5, 1), ("service:/cart", "service:/redis"): (1, 0)}
    assert list(now.edges["service:/frontend", "service:/cart", "calls"]["latency_buckets"]) == list(
        graph.graph.edges["service:/frontend", "service:/cart", "calls"]["latency_buckets"]
    )


def test_a_time_before_the_first_checkpoint_has_no_history(
    graph: TopologyGraph, history: History, clock: ManualClock
) -> None:
    with pytest.raises(NoHistory, match="none yet"):
        history.graph_at(clock.now())
    send(graph, "frontend", "cart")
    history.checkpoint(graph)
    with pytest.raises(
        NoHistory,
        match=r"no topology history at or before 2023-11-14T22:13:19\.000Z: the oldest checkpoint is 2023-11-14T22:13:20\.000Z",
    ):
        history.graph_at(clock.now() - 1)


def test_a_checkpoint_writes_only_what_changed(graph: TopologyGraph, history: History, clock: ManualClock) -> None:
    send(graph, "frontend", "cart")
    assert history.checkpoint(graph).rows == 3  # two entities and the call edge
    clock.advance(30)
    assert history.checkpoint(graph).rows == 0  # nothing moved
    clock.advance(30)
    send(graph, "frontend", "cart")
    assert history.checkpoint(graph).rows == 1  # the call edge's counters; last_seen alone makes no version
    send(graph, "frontend", "search")
    assert history.checkpoint(graph).rows == 2  # a new entity and its edge


def test_last_seen_is_exact_at_the_last_checkpoint_and_bounded_by_the_time_before(
    graph: TopologyGraph, history: History, clock: ManualClock
) -> None:
    send(graph, "frontend", "cart")
    send(graph, "frontend", "legacy")
    first = history.checkpoint(graph).t
    clock.advance(200)
    send(graph, "frontend", "cart")
    last = history.checkpoint(graph).t
    then, _ = history.graph_at(first)
    assert then.nodes["service:/legacy"]["last_seen"] == first  # quiet since: exact
    assert then.nodes["service:/cart"]["last_seen"] == first  # seen again later: not past the time asked for
    now, _ = history.graph_at(last)
    assert now.nodes["service:/cart"]["last_seen"] == graph.graph.nodes["service:/cart"]["last_seen"] == last
    assert now.nodes["service:/legacy"]["last_seen"] == first


def test_the_diff_names_what_came_and_went_and_the_red_of_the_interval(
    graph: TopologyGraph, history: History, clock: ManualClock
) -> None:
    send(graph, "frontend", "cart", 10, errors=1)
    send(graph, "frontend", "legacy")
    before = history.checkpoint(graph).t
    clock.advance(400)
    send(graph, "frontend", "cart", 20, errors=4)
    send(graph, "frontend", "search", 5)
    clock.advance(300)  # legacy was last seen 700 s ago: past the 600 s TTL
    graph.age_out()
    send(graph, "frontend", "cart")  # keeps frontend and cart alive
    after = history.checkpoint(graph).t
    d = queries.diff(history.graph_at(before)[0], history.graph_at(after)[0], seconds=after - before)
    assert [e["id"] for e in d["entities"]["added"]] == ["service:/search"]
    assert [e["id"] for e in d["entities"]["removed"]] == ["service:/legacy"]
    assert [(e["source"], e["target"]) for e in d["edges"]["added"]] == [("service:/frontend", "service:/search")]
    assert [(e["source"], e["target"]) for e in d["edges"]["removed"]] == [("service:/frontend", "service:/legacy")]
    red = {(r["source"], r["target"]): r for r in d["red"]}
    cart = red["service:/frontend", "service:/cart"]
    assert (cart["requests"], cart["errors"], cart["new"]) == (21, 4, False)
    assert cart["error_ratio"] == pytest.approx(4 / 21)
    assert cart["mean_latency_s"] == pytest.approx(0.030)
    assert cart["requests_per_s"] == pytest.approx(21 / 700)
    search = red["service:/frontend", "service:/search"]
    assert (search["requests"], search["new"]) == (5, True)


def test_the_diff_filters_by_kind_and_around_an_entity(
    graph: TopologyGraph, history: History, clock: ManualClock
) -> None:
    send(graph, "frontend", "cart")
    before = history.checkpoint(graph).t
    clock.advance(30)
    send(graph, "cart", "redis", 2)
    send(graph, "admin", "billing")
    after_graph, _ = history.graph_at(history.checkpoint(graph).t)
    before_graph, _ = history.graph_at(before)
    around = queries.diff(before_graph, after_graph, around="service:/cart", depth=1)
    assert [e["id"] for e in around["entities"]["added"]] == ["service:/redis"]
    assert [(r["source"], r["requests"]) for r in around["red"]] == [("service:/cart", 2), ("service:/frontend", 0)]
    with pytest.raises(queries.UnknownEntity):
        queries.diff(before_graph, after_graph, around="service:/nowhere")
    assert queries.diff(before_graph, after_graph, kind="pod")["entities"]["added"] == []


def test_restore_loads_the_last_checkpoint_and_counting_goes_on_from_there(
    tmp_path: Path, graph: TopologyGraph, history: History, clock: ManualClock
) -> None:
    send(graph, "frontend", "cart", 3, errors=1)
    send(graph, "cart", "redis")
    history.checkpoint(graph)
    history.close()
    reopened = History(history.path, clock)
    reopened.open()
    fresh = TopologyGraph(TopologyLimits(max_edges=2), clock)
    assert reopened.restore(fresh) is not None
    assert fresh.calls() == [("service:/cart", "service:/redis", 1, 0), ("service:/frontend", "service:/cart", 3, 1)]
    assert fresh.graph.nodes["service:/cart"] == graph.graph.nodes["service:/cart"]
    send(fresh, "frontend", "cart", 2)
    assert ("service:/frontend", "service:/cart", 5, 1) in fresh.calls()
    send(fresh, "frontend", "search")  # the restored edges count against the limit
    assert fresh.refused["edges"] == 1
    assert reopened.checkpoint(fresh).rows == 2  # only what moved since the restore: the edge and its new entity
    reopened.close()


def test_same_named_services_of_two_namespaces_are_two_series_told_apart_by_their_namespaces(
    graph: TopologyGraph,
) -> None:
    """Before, both were client="frontend",server="cart": invalid exposition, and Prometheus kept one of them."""
    registry = CollectorRegistry()
    registry.register(ServiceGraphMetrics(graph))
    send(graph, "frontend", "cart", 3, errors=1, namespace="shop")
    send(graph, "frontend", "cart", 2, namespace="staging")
    for namespace, requests, errors in (("shop", 3, 1), ("staging", 2, 0)):
        labels = {"client": "frontend", "server": "cart", "connection_type": "",
                  "client_service_namespace": namespace, "server_service_namespace": namespace}  # fmt: skip
        assert registry.get_sample_value("traces_service_graph_request_total", labels) == requests
        assert registry.get_sample_value("traces_service_graph_request_failed_total", labels) == errors
        assert registry.get_sample_value("traces_service_graph_request_server_seconds_count", labels) == requests
    lines = [line for line in generate_latest(registry).decode().splitlines() if line.startswith("traces_")]
    assert len(lines) == len(set(line.rsplit(" ", 1)[0] for line in lines))  # no two samples share their labels


def test_metrics_serve_the_counters_of_the_last_checkpoint(graph: TopologyGraph, history: History) -> None:
    registry = CollectorRegistry()
    registry.register(ServiceGraphMetrics(history))
    labels = {"client": "frontend", "server": "cart", "connection_type": "", **NO_NAMESPACES}
    send(graph, "frontend", "cart", 3)
    assert registry.get_sample_value("traces_service_graph_request_total", labels) is None
    history.checkpoint(graph)
    send(graph, "frontend", "cart", 2)  # live, not yet on disk: not served
    assert registry.get_sample_value("traces_service_graph_request_total", labels) == 3
    assert registry.get_sample_value("traces_service_graph_request_server_seconds_count", labels) == 3
    history.checkpoint(graph)
    assert registry.get_sample_value("traces_service_graph_request_total", labels) == 5


def test_thinning_keeps_one_checkpoint_per_window_and_the_graph_as_of_those(
    graph: TopologyGraph, history: History, clock: ManualClock
) -> None:
    start = clock.now()
    for i in range(240):  # two hours, a checkpoint every 30 s, traffic on one edge, a new service every 10 min
        send(graph, "frontend", "cart", 1 + i % 3)
        if i % 20 == 0:
            send(graph, "frontend", f"svc-{i // 20}")
        history.checkpoint(graph)
        clock.advance(30)
    cutoff = clock.now() - 3600
    before = [t for t, *_ in history.checkpoints()]
    windows = {int(t // 300) for t in before if (int(t // 300) + 1) * 300 <= cutoff}  # wholly older than 1 h
    survivors = sorted(max(t for t in before if int(t // 300) == w) for w in windows)
    expected = {t: calls(history.graph_at(t)[0]) for t in survivors}
    assert history.prune() > 0
    kept = [t for t, *_ in history.checkpoints()]
    assert [t for t in kept if int(t // 300) in windows] == survivors  # the last of each 5-minute window
    for t in survivors:
        assert calls(history.graph_at(t)[0]) == expected[t]
    assert [t for t in kept if int(t // 300) not in windows] == [t for t in before if int(t // 300) not in windows]
    assert history.graph_at(survivors[1] - 1)[1] == survivors[0]  # between kept checkpoints: the kept one before
    assert min(kept) == survivors[0] > start  # the first window keeps its last checkpoint, as every other
    assert history.prune() == 0  # nothing more to do


def test_retention_drops_old_checkpoints_but_keeps_what_is_still_alive(
    tmp_path: Path, graph: TopologyGraph, clock: ManualClock
) -> None:
    history = History(tmp_path / "topology.db", clock, retention_s=3600, thinning=[])
    history.open()
    send(graph, "frontend", "cart")  # the entities never change again (last_seen moving makes no version)
    send(graph, "frontend", "legacy")
    history.checkpoint(graph)
    for _ in range(12 * 3):  # three hours in 5-minute steps
        clock.advance(300)
        send(graph, "frontend", "cart")
        graph.age_out()  # legacy goes after 600 s unseen
        history.checkpoint(graph)
    history.prune()
    kept = [t for t, *_ in history.checkpoints()]
    assert min(kept) >= clock.now() - 3600
    assert len(kept) == 13
    oldest, _ = history.graph_at(min(kept))
    assert "service:/frontend" in oldest  # written three hours ago, alive since
    assert "service:/legacy" not in oldest
    with pytest.raises(NoHistory):
        history.graph_at(min(kept) - 1)
    with sqlite3.connect(history.path) as db:
        (legacy,) = db.execute("SELECT count(*) FROM items WHERE source = 'service:/legacy'").fetchone()
    assert legacy == 0  # nothing left of it
    history.close()


def test_a_file_that_is_not_a_database_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "topology.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StorageError, match=r"topology.db: cannot open: file is not a database\. Move the file away"):
        History(path).open()


def test_a_damaged_database_is_refused(tmp_path: Path, graph: TopologyGraph, clock: ManualClock) -> None:
    path = tmp_path / "topology.db"
    history = History(path, clock)
    history.open()
    for i in range(200):
        send(graph, f"caller-{i}", "cart")
    history.checkpoint(graph)
    history.close()
    data = bytearray(path.read_bytes())
    page = 4096
    data[2 * page : 4 * page] = b"\xa5" * (2 * page)  # scribble over two pages after the first
    path.write_bytes(bytes(data))
    with pytest.raises(StorageError, match=r"topology\.db: cannot open: database disk image is malformed"):
        History(path).open()


def test_checkpoints_never_reuse_a_time_even_when_the_clock_stands_still(
    graph: TopologyGraph, history: History
) -> None:
    send(graph, "frontend", "cart")
    first = history.checkpoint(graph).t
    send(graph, "frontend", "cart")
    second = history.checkpoint(graph).t
    assert second > first
    assert calls(history.graph_at(second)[0])["service:/frontend", "service:/cart"] == (2, 0)
