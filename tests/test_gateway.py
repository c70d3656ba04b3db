"""The replica's exporter (rootward/gateway.py) against a real receiver on a free port whose pipeline is the
aggregator's merge: what it sends arrives and merges, with auth, in chunks, at shutdown; an aggregator that is down or
refuses is counted, never raised. And the App exports only where it is not the aggregator."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from rootward import gateway
from rootward.app import App
from rootward.clock import ManualClock
from rootward.config import LOCAL_PORTS, NOTHING_ON_DISK, Config, load_config
from rootward.gateway import AggregateExporter
from rootward.receiver import Receiver
from rootward.telemetry import Telemetry
from rootward.testing import free_ports, local_receiver_config
from rootward.topology import Entity, TopologyGraph
from rootward.topology.merge import ReplicaMerge
from rootward.topology.red import EdgeDelta

from collectors import wait_until

FRONTEND = Entity("service:shop/frontend", "service", "frontend", "shop")
CART = Entity("service:shop/cart", "service", "cart", "shop")
REDIS = Entity("database:redis/redis", "database", "redis", "", virtual=True)


def red(*seconds: float, failed: int = 0) -> EdgeDelta:
    delta = EdgeDelta()
    for i, s in enumerate(seconds):
        delta.add(s, error=i < failed)
    return delta


def replica_graph(clock: ManualClock) -> TopologyGraph:
    """A replica's graph: frontend -> cart (3 calls, 1 failed) -> redis (2 calls)."""
    graph = TopologyGraph(clock=clock)
    graph.merge_calls(
        {(FRONTEND.id, CART.id): red(0.003, 0.03, 0.3, failed=1), (CART.id, REDIS.id): red(0.001, 0.002)},
        [FRONTEND, CART, REDIS],
    )
    return graph


@contextmanager
def aggregator(clock: ManualClock, **receiver: object) -> Iterator[tuple[Receiver, TopologyGraph]]:
    """A receiver on free ports feeding an aggregator's merge; its graph."""
    graph = TopologyGraph(clock=clock)
    server = Receiver(local_receiver_config(**receiver), ReplicaMerge(graph, "rootward-0", clock=clock), Telemetry())
    server.start()
    try:
        yield server, graph
    finally:
        server.shutdown()


def exporter_config(port: int, *sets: str) -> Config:
    return load_config(
        environ={},
        overrides=[
            "topology.export.enabled=true",
            f"topology.export.endpoint=127.0.0.1:{port}",
            "topology.export.replica=rootward-1",
            "topology.export.timeout_s=2",
            *sets,
        ],
    )


EXPECTED = [(CART.id, REDIS.id, 2, 0), (FRONTEND.id, CART.id, 3, 1)]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def test_an_export_reaches_the_aggregator_and_merges_into_its_graph(clock: ManualClock) -> None:
    with aggregator(clock) as (server, graph):
        telemetry = Telemetry()
        exporter = AggregateExporter(exporter_config(server.grpc.port), replica_graph(clock), telemetry, clock)
        assert exporter.export_once()
        exporter.shutdown()
        assert wait_until(lambda: graph.calls() == EXPECTED, 10), graph.calls()
    assert telemetry.value("rootward_gateway_exports_total", outcome="sent") == 1
    assert graph.graph.nodes[REDIS.id]["virtual"] is True


def test_a_large_graph_goes_in_several_requests(clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gateway, "EDGES_PER_REQUEST", 1)
    monkeypatch.setattr(gateway, "SIGHTINGS_PER_REQUEST", 1)
    with aggregator(clock) as (server, graph):
        exporter = AggregateExporter(exporter_config(server.grpc.port), replica_graph(clock), Telemetry(), clock)
        assert exporter.export_once()
        assert wait_until(lambda: graph.calls() == EXPECTED, 10), graph.calls()
        requests = server.telemetry.value(
            "rootward_receiver_requests_total", transport="grpc", signal="metrics", result="ok"
        )
        assert requests == 5  # three entities seen, then two call edges


def test_the_exporter_authenticates_with_the_first_receiver_token_the_replicas_share(clock: ManualClock) -> None:
    with aggregator(clock, **{"auth.tokens": ["s3cret"]}) as (server, graph):
        config = exporter_config(server.grpc.port, "receiver.auth.tokens=[s3cret, next]")
        assert AggregateExporter(config, replica_graph(clock), Telemetry(), clock).export_once()
        assert wait_until(lambda: graph.calls() == EXPECTED, 10), graph.calls()
        telemetry = Telemetry()
        assert not AggregateExporter(exporter_config(server.grpc.port), replica_graph(clock), telemetry).export_once()
    assert telemetry.value("rootward_gateway_exports_total", outcome="failed") == 1


def test_an_aggregator_that_is_down_is_counted_and_the_next_export_makes_up_for_it(clock: ManualClock) -> None:
    (port,) = free_ports(1)
    telemetry = Telemetry()
    replica = replica_graph(clock)
    down = AggregateExporter(exporter_config(port), replica, telemetry, clock)
    assert not down.export_once()
    down.shutdown()
    assert telemetry.value("rootward_gateway_exports_total", outcome="failed") == 1
    with aggregator(clock) as (server, graph):
        exporter = AggregateExporter(exporter_config(server.grpc.port), replica, telemetry, clock)
        exporter.start()
        exporter.shutdown()  # the last export at shutdown carries everything
        assert wait_until(lambda: graph.calls() == EXPECTED, 10), graph.calls()


@pytest.mark.parametrize(
    ("replica", "exports"),
    [
        pytest.param("rootward-1", True, id="a-replica-exports"),
        pytest.param("rootward-0", False, id="the-aggregator-does-not"),
    ],
)
def test_the_app_exports_unless_it_is_the_aggregator(replica: str, exports: bool) -> None:
    sets = [*LOCAL_PORTS, *NOTHING_ON_DISK, "topology.export.enabled=true", f"topology.export.replica={replica}"]
    app = App(load_config(environ={}, overrides=sets))
    assert (app.exporter is not None) is exports
    assert app.merge.replica == replica


@pytest.mark.parametrize(
    ("replica", "acts"),
    [
        pytest.param("rootward-1", False, id="a-replica-does-not-act"),
        pytest.param("rootward-0", True, id="the-aggregator-may"),
    ],
)
def test_in_gateway_mode_only_the_aggregator_acts(replica: str, acts: bool, caplog: pytest.LogCaptureFixture) -> None:
    """A replica sees a share of the traces: blast radius and diagnosis need the aggregator's whole graph."""
    sets = [*LOCAL_PORTS, *NOTHING_ON_DISK, "topology.export.enabled=true", f"topology.export.replica={replica}",
            "actions.enabled=true", "actions.kubernetes.host=http://127.0.0.1:9"]  # fmt: skip
    with caplog.at_level("INFO", logger="rootward.app"):
        app = App(load_config(environ={}, overrides=sets))
    assert (app.acting is not None) is acts
    app.shutdown()
    said = [r.getMessage() for r in caplog.records if "actions are off here" in r.getMessage()]
    assert bool(said) is not acts


def test_outside_gateway_mode_nothing_merges_what_claims_to_be_a_replica() -> None:
    """Any OTLP sender could otherwise add entities and ownership edges to the graph actions act on."""
    app = App(load_config(environ={}, overrides=[*LOCAL_PORTS, *NOTHING_ON_DISK]))
    assert app.merge is None
