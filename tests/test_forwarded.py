"""Gateway mode's anomalies (rootward/forwarded.py): a replica App forwards what its detectors find over real gRPC to
an aggregator App, whose incidents then hold them and which alone alerts Slack (a local HTTP server); records that
are not what a replica sends are refused one by one and counted; an aggregator that is down gets them later."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind
from pytest_httpserver import HTTPServer

from rootward import forwarded
from rootward.app import App
from rootward.clock import ManualClock
from rootward.config import LOCAL_PORTS, NOTHING_ON_DISK, load_config
from rootward.detector.detector import Anomaly
from rootward.detector.incidents import Incident
from rootward.forwarded import KIND, REPLICA, ReplicaAnomalies, anomalies_request, parse
from rootward.gateway import AggregateExporter
from rootward.model import LogBatch
from rootward.receiver import LogDecoder
from rootward.slack import WhileLeading
from rootward.telemetry import Telemetry
from rootward.testing import free_ports
from rootward.topology import Entity, TopologyGraph
from rootward.topology.red import EdgeDelta

from collectors import wait_until
from log_records import lines

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
        assert {a.source for a in incident.anomalies.values()} == {"rootward-1"}  # which replica found them
        shown = httpx.get(f"http://127.0.0.1:{aggregator.api.port}/api/v1/incidents/{incident.id}").json()
        assert {a["source"] for a in shown["anomalies"]} == {"rootward-1"}
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
    exporter.forward(found(time.time()))  # the aggregator's clock: a backlog older than its hold would be stale
    assert not exporter.send_anomalies()
    assert telemetry.value("rootward_gateway_anomalies_total", outcome="failed") == 2
    overrides = [*LOCAL_PORTS, *NOTHING_ON_DISK, "topology.export.enabled=true", "topology.export.replica=rootward-0"]
    overrides += [f"receiver.grpc.port={port}"]
    with running(App(load_config(environ={}, overrides=overrides))) as aggregator:
        assert wait_until(exporter.send_anomalies, 10, interval=0.5)  # the channel's reconnect backoff
        assert wait_until(lambda: holding(aggregator, CART), 10)
    assert telemetry.value("rootward_gateway_anomalies_total", outcome="sent") == 2


@pytest.fixture
def small_queue(monkeypatch: pytest.MonkeyPatch) -> tuple[AggregateExporter, Telemetry]:
    """An exporter whose queue holds 3 anomalies, to an aggregator that is not there; its telemetry."""
    from rootward import gateway

    monkeypatch.setattr(gateway, "MAX_QUEUED", 3)
    telemetry = Telemetry()
    config = load_config(environ={}, overrides=["topology.export.enabled=true", "topology.export.endpoint=127.0.0.1:9"])
    return AggregateExporter(config, TopologyGraph(), telemetry), telemetry


def test_a_full_queue_drops_the_oldest_and_counts_them(small_queue: tuple[AggregateExporter, Telemetry]) -> None:
    exporter, telemetry = small_queue
    exporter.forward(found(1.0))
    exporter.forward(found(2.0))
    assert [a.end for a, _, _ in exporter._queued] == [1.0, 2.0, 2.0]
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
    assert parsed == [(anomalies[0], CART, (), None), (anomalies[1], None, (), None)]
    assert batch.body[1] == f"{CART} error_ratio: 0.4 against 0.01 (z 14.5)"


def test_forwarded_records_are_neither_counted_nor_mined_as_logs() -> None:
    """They name no service, pod or node: the aggregator's log series and templates never see them."""
    app = make("topology.export.replica=rootward-0")
    batch = LogDecoder().decode(anomalies_request(found(100.0), "rootward-1").SerializeToString()).batch
    app.detector.consume_logs(batch)
    app.log_templates.consume_logs(batch)
    assert not app.detector.window.logs.series
    assert not app.log_templates.snapshot()[0]


def consumer(
    clock: ManualClock, **kw: object
) -> tuple[ReplicaAnomalies, list[Anomaly], dict[str, int], dict[str, str]]:
    seen: list[Anomaly] = []
    counts: dict[str, int] = {}
    learned: dict[str, str] = {}
    made = ReplicaAnomalies(
        lambda t, a: seen.extend(a), "rootward-0", clock, lambda pod, svc: learned.update({pod: svc}),
        lambda outcome, n: counts.update({outcome: counts.get(outcome, 0) + n}), **kw,  # type: ignore[arg-type]
    )  # fmt: skip
    return made, seen, counts, learned


def decoded(request: ExportLogsServiceRequest) -> LogBatch:
    return LogDecoder().decode(request.SerializeToString()).batch


def test_a_backlog_older_than_the_hold_is_counted_stale_not_filed_as_news() -> None:
    made, seen, counts, _ = consumer(ManualClock(1000.0), max_age_s=120.0)
    made.consume_logs(decoded(anomalies_request([*found(850.0), *found(990.0)], "rootward-1")))
    assert [a.end for a in seen] == [990.0, 990.0]
    assert counts == {"stale": 2, "accepted": 2}


def test_more_than_a_request_holds_is_refused_and_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(forwarded, "PER_REQUEST", 3)
    made, seen, counts, _ = consumer(ManualClock(100.0))
    many = [Anomaly(f"service:shop/s{i}", "error_ratio", 0.5, 0.0, 9.0, 90.0, 100.0) for i in range(5)]
    made.consume_logs(decoded(anomalies_request(many, "rootward-1")))
    assert len(seen) == 3
    assert counts == {"over_limit": 2, "accepted": 3}


def test_past_the_minutes_budget_forwarded_anomalies_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(forwarded, "MAX_PER_MINUTE", 3)
    clock = ManualClock(120.0)
    made, seen, counts, _ = consumer(clock)
    for _ in range(2):
        made.consume_logs(decoded(anomalies_request(found(120.0), "rootward-1")))
    assert (len(seen), counts["over_limit"]) == (3, 1)
    clock.advance(60)  # a new minute
    made.consume_logs(decoded(anomalies_request(found(180.0), "rootward-1")))
    assert len(seen) == 5


def test_a_replicas_template_ids_are_qualified_by_its_name() -> None:
    """Its log_template:17 is not the aggregator's template 17: the LLM would be shown another line."""
    made, seen, _, _ = consumer(ManualClock(100.0))
    sent = [Anomaly(CART, s, 5.0, 0.0, 8.0, 90.0, 100.0) for s in ("log_template:17", "log_missing:4", "p95")]
    made.consume_logs(decoded(anomalies_request(sent, "rootward-1")))
    assert [a.signal for a in seen] == ["log_template:rootward-1/17", "log_missing:rootward-1/4", "p95"]


@pytest.mark.parametrize(
    ("entity", "service", "learned"),
    [
        pytest.param(POD, CART, {POD: CART}, id="a-pod-and-its-service"),
        pytest.param(POD, "garbage", {}, id="not-a-service-id"),
        pytest.param(CART, "service:shop/other", {}, id="not-a-pod"),
    ],
)
def test_only_a_pods_service_id_is_learned(entity: str, service: str, learned: dict[str, str]) -> None:
    made, seen, _, got = consumer(ManualClock(100.0))
    sent = [Anomaly(entity, "k8s:OOMKilled", 1.0, 0.0, 10.0, 90.0, 100.0)]
    made.consume_logs(decoded(anomalies_request(sent, "rootward-1", {entity: service})))
    assert len(seen) == 1
    assert got == learned


def test_the_aggregator_keeps_what_it_knows_of_a_pod_and_groups_a_new_one_with_its_service() -> None:
    app = make("topology.export.replica=rootward-0")
    app.detector.service_of["pod:shop/known"] = "service:shop/cart"
    consume = app._replica_anomalies("rootward-0")
    now = app.clock.now()
    sent = [Anomaly(p, "k8s:OOMKilled", 1.0, 0.0, 10.0, now - 10, now) for p in ("pod:shop/known", POD)]
    consume.consume_logs(
        decoded(anomalies_request(sent, "rootward-1", {"pod:shop/known": "service:shop/x", POD: CART}))
    )
    assert app.detector.service_of["pod:shop/known"] == "service:shop/cart"  # not remapped by a sender
    assert app.detector.service_of[POD] == CART
    assert app.topology.related(POD, CART)  # so a pod's incident and its service's are one


def test_a_sidecar_that_does_not_hold_the_lease_refuses_forwarded_anomalies() -> None:
    made, seen, counts, _ = consumer(ManualClock(100.0), accepting=lambda: False)
    made.consume_logs(decoded(anomalies_request(found(100.0), "rootward-1")))
    assert seen == []
    assert counts == {"not_leader": 2}


def test_numbers_sent_as_integers_are_read_as_numbers() -> None:
    made, seen, _, _ = consumer(ManualClock(100.0))
    request = record({**GOOD, "start": 90.0, "end": 100.0})
    for kv in request.resource_logs[0].scope_logs[0].log_records[0].attributes:
        if kv.key.endswith(".value"):
            kv.value.Clear()
            kv.value.int_value = 3
    made.consume_logs(decoded(request))
    assert [a.value for a in seen] == [3.0]


def test_a_sender_that_cannot_build_its_channel_logs_counts_and_lives_on(tmp_path: Path) -> None:
    """A CA file that is not there: the thread keeps running (edges too) and shutdown does not raise."""
    sets = [
        "topology.export.enabled=true",
        "topology.export.endpoint=127.0.0.1:9",
        f"topology.export.ca_file={tmp_path}/no.pem",
    ]
    telemetry = Telemetry()
    exporter = AggregateExporter(load_config(environ={}, overrides=sets), TopologyGraph(), telemetry)
    exporter.start()
    exporter.forward(found(1.0))
    assert wait_until(lambda: telemetry.value("rootward_gateway_anomalies_total", outcome="failed") >= 2, 10)
    assert exporter._thread is not None
    assert exporter._thread.is_alive()
    exporter.shutdown()


def test_follow_lease_without_actions_alerts_on_its_own(caplog: pytest.LogCaptureFixture) -> None:
    """No Kubernetes API, so no Lease and no holder: silencing Slack everywhere would lose every alert."""
    with caplog.at_level("WARNING", logger="rootward.app"):
        app = make("topology.export.follow_lease=true", "notifications.slack.webhook_url=http://127.0.0.1:9/hook")
    assert app.slack in app.incidents.sinks
    assert app.exporter is None
    assert app.merge is None  # no edges travel when following the Lease: nothing merges them
    assert any("alerts on its own" in r.getMessage() for r in caplog.records)


def test_slack_hears_to_the_end_of_what_it_was_told_after_the_lease_moves_on() -> None:
    told: list[tuple[str, str]] = []

    class Sink:
        def incident_changed(self, incident: Incident, change: str) -> None:
            told.append((incident.id, change))

    leading = [True]
    sink = WhileLeading(Sink(), lambda: leading[0])  # type: ignore[arg-type]
    first, second = Incident("inc-1", 1.0, 1.0), Incident("inc-2", 2.0, 2.0)
    sink.incident_changed(first, "opened")
    leading[0] = False  # the Lease moved on
    sink.incident_changed(first, "updated")
    sink.incident_changed(second, "opened")  # the new holder alerts on this one
    sink.incident_changed(first, "resolved")
    sink.incident_changed(first, "reopened")
    assert told == [("inc-1", "opened"), ("inc-1", "updated"), ("inc-1", "resolved")]


def test_a_series_window_travels_with_its_anomaly_and_the_aggregator_answers_with_it() -> None:
    """The aggregator's API sparklines and the agent's metric history read detector.recent: for a series another
    replica judged, it is the window that came with the anomaly."""
    app = make("topology.export.replica=rootward-0")
    now = app.clock.now()
    anomaly = Anomaly(CART, "p95", 2.0, 0.1, 9.0, now - 10, now)
    window = (*(0.1 + i / 100 for i in range(29)), 2.0)
    batch = decoded(anomalies_request([anomaly], "rootward-1", windows={(CART, "p95"): window}))
    app._replica_anomalies("rootward-0").consume_logs(batch)
    assert app.detector.recent(CART, "p95", 30) == window
    assert app.detector.recent(CART, "p95", 3) == window[-3:]
    assert app.detector.recent(CART, "p99", 3) == ()


@pytest.mark.parametrize(
    "recent",
    [
        pytest.param((1.0, float("nan")), id="not-finite"),
        pytest.param(tuple(float(i) for i in range(500)), id="too-long"),
        pytest.param(("a", "b"), id="not-numbers"),
    ],
)
def test_a_bad_window_is_dropped_and_its_anomaly_kept(recent: tuple[object, ...]) -> None:
    request = record(GOOD)
    values = request.resource_logs[0].scope_logs[0].log_records[0].attributes.add(key="rootward.anomaly.recent")
    for v in recent:
        item = values.value.array_value.values.add()
        if isinstance(v, str):
            item.string_value = v
        else:
            item.double_value = v  # type: ignore[assignment]
    (parsed,) = [parse(attrs) for attrs in decoded(request).attributes]
    assert parsed is not None
    assert parsed.recent == ()


def test_the_foreign_windows_kept_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from rootward.detector import detector as module

    monkeypatch.setattr(module, "MAX_FOREIGN", 2)
    app = make("topology.export.replica=rootward-0")
    for name in ("a", "b", "c"):
        app.detector.remember(f"service:shop/{name}", "p95", (1.0,))
    assert list(app.detector.foreign) == [("service:shop/b", "p95"), ("service:shop/c", "p95")]


def test_following_the_lease_a_sender_connects_anew_when_the_holder_changes() -> None:
    """An open connection stays with the pod the Service sent it to: a new holder needs a new connection."""
    holder = ["rootward-a"]
    with running(make("topology.export.replica=rootward-0")) as aggregator:
        config = load_config(environ={}, overrides=["topology.export.enabled=true", "topology.export.replica=x",
                             f"topology.export.endpoint=127.0.0.1:{aggregator.receiver.grpc.port}"])  # fmt: skip
        exporter = AggregateExporter(config, TopologyGraph(), Telemetry(), edges=False, holder=lambda: holder[0])
        exporter.forward(found(time.time()))
        assert exporter.send_anomalies()
        first = exporter._channel
        exporter.forward(found(time.time()))
        assert exporter.send_anomalies()
        assert exporter._channel is first  # the same holder: the same connection
        holder[0] = "rootward-b"
        exporter.forward(found(time.time()))
        assert exporter.send_anomalies()
        assert exporter._channel is not first
        exporter.shutdown()
        assert wait_until(
            lambda: aggregator.telemetry.value("rootward_gateway_anomalies_total", outcome="accepted") == 6, 10
        )


def test_a_failed_send_requeued_past_the_limit_drops_the_oldest(
    small_queue: tuple[AggregateExporter, Telemetry],
) -> None:
    exporter, telemetry = small_queue
    exporter.forward(found(1.0))
    exporter._requeue([(a, (), "") for a in found(0.5)])  # a failed chunk goes back first: the queue is 4 long
    assert [a.end for a, _, _ in exporter._queued] == [0.5, 1.0, 1.0]
    assert telemetry.value("rootward_gateway_anomalies_total", outcome="dropped") == 1


def test_the_graphs_word_on_a_pods_service_beats_a_senders() -> None:
    app = make("topology.export.replica=rootward-0")
    pod, service = Entity(POD, "pod", "cart-7d9f-x2", "shop"), Entity(CART, "service", "cart", "shop")
    app.topology.merge_calls({}, [pod, service], [(POD, CART, "instance_of")])  # as its own telemetry told it
    now = app.clock.now()
    sent = [Anomaly(POD, "k8s:OOMKilled", 1.0, 0.0, 10.0, now - 10, now)]
    batch = decoded(anomalies_request(sent, "rootward-1", {POD: "service:shop/other"}))
    app._replica_anomalies("rootward-0").consume_logs(batch)
    assert app.detector.service_of[POD] == CART
    assert not app.topology.related(POD, "service:shop/other")


def test_a_gateway_replica_says_where_its_anomalies_go() -> None:
    app = make("topology.export.replica=rootward-1", "topology.export.endpoint=127.0.0.1:9")
    app.exporter.forward(found(1.0))  # type: ignore[union-attr]
    health = app.health()
    assert (health["acting"], health["forwards_to"], health["forward_queue"]) == (False, "127.0.0.1:9", 2)
    assert app.telemetry.value("rootward_acting") == 0


def test_the_calls_around_what_a_replica_found_are_learned_as_structure_only() -> None:
    """No count is added; an end the graph knows keeps its attributes (the user stays virtual); an unknown end is
    made as the sender had it; malformed ends are refused."""
    app = make("topology.export.replica=rootward-0")
    front, cart = (
        Entity("service:shop/frontend", "service", "frontend", "shop"),
        Entity(CART, "service", "cart", "shop"),
    )
    user = Entity("service:/user", "service", "user", "", virtual=True)
    delta = EdgeDelta()
    delta.add(0.02, error=False)
    app.topology.merge_calls({(front.id, CART): delta, (user.id, front.id): delta}, [front, cart, user])
    redis = Entity("database:redis/redis:6379", "database", "redis:6379", "", virtual=True)
    calls = [
        (front, cart),
        (cart, redis),
        (Entity(user.id, "service", "user", ""), front),  # a sender that says the user is a real service
        (Entity("service:shop/x", "service", "x", "shop"), Entity("not an id", "service", "y", "shop")),
        (cart, Entity("pod:x", "service", "x", "")),  # the kind does not match the id
        (cart, Entity("service:shop/" + "x" * 5000, "service", "x", "shop")),
    ]
    request = anomalies_request(found(app.clock.now()), "rootward-1", calls=calls)
    consume = app._replica_anomalies("rootward-0")
    consume.consume_logs(decoded(request))
    assert (front.id, CART, 1, 0) in app.topology.calls()  # its own count, not added to
    assert (CART, redis.id, 0, 0) in app.topology.calls()
    with app.topology.read() as g:
        assert (g.nodes[redis.id]["kind"], g.nodes[redis.id]["name"], g.nodes[redis.id]["virtual"]) == (
            "database", "redis:6379", True,
        )  # fmt: skip
        assert g.nodes[user.id]["virtual"] is True
    assert consume.received["calls_accepted"] == 3
    assert consume.received["calls_refused"] == 3


def test_a_template_text_travels_with_its_anomaly_and_the_llm_context_reads_it() -> None:
    """log_template:17 of rootward-1 arrives as log_template:rootward-1/17 with its text: the aggregator's miner
    answers for it (agent/llm.py puts the texts of the incident's templates in the first message)."""
    app = make("topology.export.replica=rootward-0")
    now = app.clock.now()
    sent = [
        Anomaly(CART, "log_template:17", 9.0, 0.0, 8.0, now - 10, now),
        Anomaly(CART, "p95", 2.0, 0.1, 9.0, now - 10, now),
    ]
    texts = {"log_template:17": "payment <*> declined: card <*>", "p95": "not a template"}
    app._replica_anomalies("rootward-0").consume_logs(decoded(anomalies_request(sent, "rootward-1", texts=texts)))
    assert app.log_templates.texts(["rootward-1/17", "17"]) == {"rootward-1/17": "payment <*> declined: card <*>"}
    assert app.log_templates.foreign == {"rootward-1/17": "payment <*> declined: card <*>"}  # p95 names no template


def test_a_replica_sends_the_text_of_the_template_its_anomaly_names() -> None:
    app = make("topology.export.replica=rootward-1", "topology.export.endpoint=127.0.0.1:9")
    app.log_templates.templates[17] = "payment <*> declined"
    now = app.clock.now()
    app._found(now, [Anomaly(CART, "log_missing:17", 0.0, 40.0, -8.0, now - 10, now), *found(now)])
    assert app.exporter is not None
    assert [text for _, _, text in app.exporter._queued] == ["payment <*> declined", "", ""]


def test_a_new_template_found_by_the_miner_itself_is_forwarded_with_its_text() -> None:
    """The miner calls its sink (the App's, which asks it for the text) while it holds its own lock: that ask must
    not wait for the lock (it did: the replica's pipeline hung on the first new WARN template)."""
    clock = ManualClock(1000.0)
    overrides = [*LOCAL_PORTS, *NOTHING_ON_DISK, "topology.export.enabled=true", "topology.export.replica=rootward-1",
                 "topology.export.endpoint=127.0.0.1:9", "detection.log_flow.enabled=false"]  # fmt: skip
    app = App(load_config(environ={}, overrides=overrides), clock=clock)
    app.log_templates.warmup_windows = 3
    for w in range(8):
        app.log_templates.consume_logs(lines("cart", f"redis slow: {w} ms", severity=13))
        clock.advance(10)
    app.log_templates.tick()
    done = threading.Event()

    def new_template() -> None:
        app.log_templates.consume_logs(
            lines("payment", *[f"charge failed: token {n} sk_live_abcdefghijklmnop" for n in range(3)])
        )
        clock.advance(10)
        app.log_templates.tick()
        done.set()

    threading.Thread(target=new_template, daemon=True).start()
    assert done.wait(10), "the miner's window close hung"
    assert app.exporter is not None
    texts = [text for a, _, text in app.exporter._queued if a.signal.startswith("log_template:")]
    assert texts
    assert texts[0].startswith("charge failed: token <NUM>")


@pytest.mark.parametrize("key", ["²", "9" * 5000, "", "-1", "17abc", "rootward-1/17"])
def test_an_odd_template_key_finds_no_text_and_raises_nothing(key: str) -> None:
    app = make("topology.export.replica=rootward-0")
    app.log_templates.templates[17] = "x"
    assert app.log_templates.texts([key]) == {}


def test_an_unknown_call_end_is_made_virtual_unless_a_service_or_pod_and_the_user_always() -> None:
    app = make("topology.export.replica=rootward-0")
    user = Entity("service:/user", "service", "user", "")
    db = Entity("database:redis/redis:6379", "database", "redis:6379", "")
    cart = Entity(CART, "service", "cart", "shop")
    app.topology.learn_calls([(user, cart), (cart, db)])
    with app.topology.read() as g:
        assert [g.nodes[e.id]["virtual"] for e in (user, cart, db)] == [True, False, True]
