"""Gateway mode's anomalies (rootward/forwarded.py): a replica App forwards what its detectors find over real gRPC to
an aggregator App, whose incidents then hold them and which alone alerts Slack (a local HTTP server); records that
are not what a replica sends are refused one by one and counted; an aggregator that is down gets them later."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind
from pytest_httpserver import HTTPServer

from rootward.app import App
from rootward.clock import ManualClock
from rootward.config import LOCAL_PORTS, NOTHING_ON_DISK, load_config
from rootward.detector.detector import Anomaly
from rootward.forwarded import KIND, REPLICA, ReplicaAnomalies, anomalies_request, parse
from rootward.gateway import AggregateExporter
from rootward.receiver import LogDecoder
from rootward.telemetry import Telemetry
from rootward.testing import free_ports
from rootward.topology import TopologyGraph

from collectors import wait_until

CART = "service:shop/cart"
POD = "pod:shop/cart-7d9f-x2"


def serve_one_request(port: int) -> None:
    """The cart pod's SDK sends one server span to the Rootward on ``port``."""
    resource = Resource.create({"service.name": "cart", "service.namespace": "shop", "k8s.namespace.name": "shop",
                                "k8s.pod.name": "cart-7d9f-x2"})  # fmt: skip
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True)))
    with provider.get_tracer("cart").start_as_current_span("GET /cart", kind=SpanKind.SERVER):
        pass
    provider.shutdown()


def make(*sets: str) -> App:
    return App(
        load_config(environ={}, overrides=[*LOCAL_PORTS, *NOTHING_ON_DISK, "topology.export.enabled=true", *sets])
    )


@contextmanager
def running(app: App) -> Iterator[App]:
    app.start()
    try:
        yield app
    finally:
        app.shutdown()


def found(now: float) -> list[Anomaly]:
    """What a replica's detectors found in a window: the pod killed for memory, its service failing."""
    return [
        Anomaly(POD, "k8s:OOMKilled", 1.0, 0.0, 10.0, now - 10, now),
        Anomaly(CART, "error_ratio", 0.4, 0.01, 14.5, now - 10, now),
    ]


def holding(app: App, entity: str) -> bool:
    return any(entity in i.first_seen for i in app.incidents.open)


def test_a_replicas_anomalies_open_the_incident_on_the_aggregator_which_alone_alerts(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/hook").respond_with_data("ok")
    slack = f"notifications.slack.webhook_url={httpserver.url_for('/hook')}"
    with running(make("topology.export.replica=rootward-0", slack)) as aggregator:
        port = aggregator.receiver.grpc.port
        replica = make("topology.export.replica=rootward-1", f"topology.export.endpoint=127.0.0.1:{port}", slack,
                       "topology.export.interval_s=0.2")  # fmt: skip
        with running(replica):
            assert replica.slack not in replica.incidents.sinks  # the aggregator alerts
            serve_one_request(replica.receiver.grpc.port)  # the pod is seen on the replica, and its sighting sent
            assert wait_until(lambda: aggregator.topology.related(POD, CART), 10)
            replica.detector.service_of[POD] = CART  # as its metrics' resources told it
            replica.detector.sink(replica.clock.now(), found(replica.clock.now()))
            assert wait_until(lambda: holding(aggregator, POD) and holding(aggregator, CART), 10)
            assert holding(replica, CART)  # its own incidents stay, on its own API
            assert wait_until(lambda: len(httpserver.log) == 1, 10)
        assert aggregator.detector.service_of[POD] == CART  # the pod's evidence is read as its service's
        incident = next(i for i in aggregator.incidents.open if CART in i.first_seen)
        assert {s for _, s in incident.anomalies} == {"k8s:OOMKilled", "error_ratio"}
    assert replica.telemetry.value("rootward_gateway_anomalies_total", outcome="sent") == 2
    assert aggregator.telemetry.value("rootward_gateway_anomalies_total", outcome="accepted") == 2
    assert len(httpserver.log) == 1


def test_a_replica_that_does_not_forward_alerts_on_its_own_share() -> None:
    app = make("topology.export.replica=rootward-1", "topology.export.anomalies=false",
               "notifications.slack.webhook_url=http://127.0.0.1:9/hook")  # fmt: skip
    assert app.slack in app.incidents.sinks


def test_an_aggregator_that_is_down_gets_the_queued_anomalies_when_it_is_back() -> None:
    (port,) = free_ports(1)
    sets = [f"topology.export.endpoint=127.0.0.1:{port}", "topology.export.replica=rootward-1",
            "topology.export.timeout_s=1", "topology.export.enabled=true"]  # fmt: skip
    telemetry = Telemetry()
    clock = ManualClock(1000.0)
    exporter = AggregateExporter(load_config(environ={}, overrides=sets), TopologyGraph(clock=clock), telemetry, clock)
    exporter.forward(found(1000.0))
    assert not exporter.send_anomalies()
    assert telemetry.value("rootward_gateway_anomalies_total", outcome="failed") == 2
    overrides = [*LOCAL_PORTS, *NOTHING_ON_DISK, "topology.export.enabled=true", "topology.export.replica=rootward-0"]
    overrides += [f"receiver.grpc.port={port}"]
    with running(App(load_config(environ={}, overrides=overrides))) as aggregator:
        assert wait_until(exporter.send_anomalies, 10, interval=0.5)  # the channel's reconnect backoff
        assert wait_until(lambda: holding(aggregator, CART), 10)
    assert telemetry.value("rootward_gateway_anomalies_total", outcome="sent") == 2


def test_a_full_queue_drops_the_oldest_and_counts_them(monkeypatch: pytest.MonkeyPatch) -> None:
    from rootward import gateway

    monkeypatch.setattr(gateway, "MAX_QUEUED", 3)
    telemetry = Telemetry()
    config = load_config(environ={}, overrides=["topology.export.enabled=true", "topology.export.endpoint=127.0.0.1:9"])
    exporter = AggregateExporter(config, TopologyGraph(), telemetry)
    exporter.forward(found(1.0))
    exporter.forward(found(2.0))
    assert [a.end for a in exporter._queued] == [1.0, 2.0, 2.0]
    assert telemetry.value("rootward_gateway_anomalies_total", outcome="dropped") == 1


def record(attrs: dict[str, object], replica: str = "rootward-1") -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    rl = request.resource_logs.add()
    for key, text in ((REPLICA, replica), (KIND, "anomalies")):
        rl.resource.attributes.add(key=key, value=AnyValue(string_value=text))
    rec = rl.scope_logs.add().log_records.add()
    for key, value in attrs.items():
        v = (
            AnyValue(string_value=value)
            if isinstance(value, str)
            else AnyValue(bool_value=value)
            if isinstance(value, bool)
            else AnyValue(double_value=float(value))  # type: ignore[arg-type]
        )
        rec.attributes.add(key=f"rootward.anomaly.{key}", value=v)
    return request


GOOD = {"entity": CART, "signal": "p95", "value": 2.0, "expected": 0.1, "score": 9.0, "start": 10.0, "end": 20.0}


@pytest.mark.parametrize(
    ("attrs", "replica"),
    [
        pytest.param({k: v for k, v in GOOD.items() if k != "entity"}, "rootward-1", id="no-entity"),
        pytest.param({**GOOD, "entity": "x" * 5000}, "rootward-1", id="entity-too-long"),
        pytest.param({**GOOD, "score": float("nan")}, "rootward-1", id="nan-score"),
        pytest.param({**GOOD, "value": float("inf")}, "rootward-1", id="infinite-value"),
        pytest.param({**GOOD, "value": True}, "rootward-1", id="bool-value"),
        pytest.param({**GOOD, "start": 30.0}, "rootward-1", id="starts-after-it-ends"),
        pytest.param(GOOD, "rootward-0", id="claims-to-be-the-aggregator"),
        pytest.param(GOOD, "", id="no-replica"),
    ],
)
def test_a_record_that_is_not_a_replicas_anomaly_is_refused_alone(attrs: dict[str, object], replica: str) -> None:
    seen: list[Anomaly] = []
    counts: dict[str, int] = {}
    consumer = ReplicaAnomalies(lambda t, a: seen.extend(a), "rootward-0", ManualClock(50.0),
                                counted=lambda outcome, n: counts.update({outcome: counts.get(outcome, 0) + n}))  # fmt: skip
    bad = record(attrs, replica)
    good = record(GOOD)
    bad.resource_logs.extend(good.resource_logs)
    consumer.consume_logs(LogDecoder().decode(bad.SerializeToString()).batch)
    assert [a.entity for a in seen] == [CART]
    assert counts == {"refused": 1, "accepted": 1}


def test_what_a_replica_sends_reads_back_as_the_same_anomalies() -> None:
    anomalies = found(100.0)
    request = anomalies_request(anomalies, "rootward-1", {POD: CART})
    batch = LogDecoder().decode(request.SerializeToString()).batch
    parsed = [parse(attrs) for attrs in batch.attributes]
    assert parsed == [(anomalies[0], CART), (anomalies[1], None)]
    assert batch.body[1] == f"{CART} error_ratio: 0.4 against 0.01 (z 14.5)"


def test_forwarded_records_are_neither_counted_nor_mined_as_logs() -> None:
    """They name no service, pod or node: the aggregator's log series and templates never see them."""
    app = make("topology.export.replica=rootward-0")
    batch = LogDecoder().decode(anomalies_request(found(100.0), "rootward-1").SerializeToString()).batch
    app.detector.consume_logs(batch)
    app.log_templates.consume_logs(batch)
    assert not app.detector.window.logs.series
    assert not app.log_templates.snapshot()[0]
