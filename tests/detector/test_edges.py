"""Per-edge series: what one caller sees of a callee (``in:<caller>.rate``, ``.error_ratio``, ``.latency``,
``.p95`` on the callee), from the calls the topology pairs. Spans go through the OTel SDK's OTLP span exporter into a running
Rootward; the windows close on a manual clock."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import CollectorRegistry

from rootward.app import App
from rootward.clock import ManualClock
from rootward.config import LOCAL_PORTS, NOTHING_ON_DISK, load_config
from rootward.detector.baseline import edge_of
from rootward.detector.detector import Call, Detector, DetectorSettings
from rootward.detector.incidents import corroborates, family
from rootward.detector.telemetry import DetectorMetrics

FRONTEND, ADMIN, CART = "service:shop/frontend", "service:shop/admin", "service:shop/cart"
ORDERS_DB = "database:postgresql/orders-db"
WINDOW_NS = 10 * 10**9
NETWORK_S = 0.01


class Shop:
    """Services sending spans through their own SDK provider and OTLP exporter, as separate processes would."""

    def __init__(self, port: int, *names: str) -> None:
        self.providers: dict[str, TracerProvider] = {}
        for name in names:
            provider = TracerProvider(resource=Resource.create({"service.name": name, "service.namespace": "shop"}))
            exporter = OTLPSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True)
            provider.add_span_processor(BatchSpanProcessor(exporter, max_export_batch_size=512))
            self.providers[name] = provider

    def tracer(self, name: str) -> trace.Tracer:
        return self.providers[name].get_tracer("shop")

    def flush(self) -> None:
        for provider in self.providers.values():
            provider.force_flush()

    def shutdown(self) -> None:
        for provider in self.providers.values():
            provider.shutdown()


@contextmanager
def running(*names: str, sets: tuple[str, ...] = ()) -> Iterator[tuple[App, ManualClock, Shop]]:
    clock = ManualClock(1_000.0)
    app = App(load_config(environ={}, overrides=[*LOCAL_PORTS, *NOTHING_ON_DISK, *sets]), clock=clock)
    app.start()
    shop = Shop(app.receiver.grpc.port, *names)
    try:
        yield app, clock, shop
    finally:
        shop.shutdown()
        app.shutdown()


def window(app: App, clock: ManualClock, shop: Shop) -> None:
    """Send what the window's requests made, let the receiver take it, and move on to the next window."""
    shop.flush()
    app.receiver.queue.wait_idle()
    clock.advance(10)
    app.tick()


def call(shop: Shop, caller: str, callee: str, t: int, seconds: float, failed: bool = False) -> None:
    """One request to ``caller`` that calls ``callee``; a failed call fails at the caller (refused, timed out), so
    the callee's own spans stay fine."""
    outer = shop.tracer(caller).start_span("GET /", kind=SpanKind.SERVER, start_time=t)
    client = shop.tracer(caller).start_span(
        "cart.Get", context=trace.set_span_in_context(outer), kind=SpanKind.CLIENT, start_time=t + 1000
    )
    server = shop.tracer(callee).start_span(
        "cart.Get", context=trace.set_span_in_context(client), kind=SpanKind.SERVER, start_time=t + 2000
    )
    server.end(end_time=t + 2000 + int(seconds * 1e9))
    if failed:
        client.set_status(Status(StatusCode.ERROR, "deadline exceeded"))
    client.end(end_time=t + 2000 + int((seconds + NETWORK_S) * 1e9))  # the caller waits for the network too
    outer.end(end_time=t + 4000 + int((seconds + NETWORK_S) * 1e9))


def query(shop: Shop, caller: str, t: int, seconds: float) -> None:
    """One request to ``caller`` that queries a PostgreSQL database (no spans of its own: a peer)."""
    outer = shop.tracer(caller).start_span("POST /order", kind=SpanKind.SERVER, start_time=t)
    db = shop.tracer(caller).start_span(
        "INSERT orders",
        context=trace.set_span_in_context(outer),
        kind=SpanKind.CLIENT,
        start_time=t + 1000,
        attributes={"db.system": "postgresql", "server.address": "orders-db"},
    )
    db.end(end_time=t + 1000 + int(seconds * 1e9))
    outer.end(end_time=t + 2000 + int(seconds * 1e9))


def flagged(app: App) -> set[tuple[str, str]]:
    return {key for incident in app.incidents.listed() for key in incident.anomalies}


def test_errors_on_one_edge_open_an_incident_on_the_callee_though_its_own_spans_are_fine() -> None:
    rng = np.random.default_rng(7)
    with running("frontend", "admin", "cart") as (app, clock, shop):
        for w in range(24):
            t = w * WINDOW_NS
            for i in range(8):
                failing = w >= 20 and i < 4  # half of the frontend's calls to the cart fail at the frontend
                call(shop, "frontend", "cart", t + i * 10**6, float(rng.uniform(0.004, 0.006)), failed=failing)
                call(shop, "admin", "cart", t + i * 10**6, float(rng.uniform(0.004, 0.006)))
            window(app, clock, shop)
        found = flagged(app)
        incidents = app.incidents.listed()
        seen = app.detector.recent(CART, f"in:{FRONTEND}.latency", 20)
        signals = {signal for _, signal in app.detector.table.keys}
    assert 0.013 < float(np.median(seen)) < 0.017  # what the caller waited: the cart's ~5 ms and the network's 10
    assert not any(s.startswith("in:service:/user") for s in signals)  # requests from outside: the server rate
    assert (CART, f"in:{FRONTEND}.error_ratio") in found
    assert (CART, f"in:{ADMIN}.error_ratio") not in found  # the other caller's calls are fine
    assert (CART, "error_ratio") not in found  # and so are the cart's own spans
    (incident,) = incidents
    assert incident.status == "open"  # errors are self-evident: no second family needed
    assert CART in incident.first_seen


def test_a_slower_database_opens_an_incident_on_the_database_entity() -> None:
    rng = np.random.default_rng(11)
    with running("orders") as (app, clock, shop):
        for w in range(26):
            t = w * WINDOW_NS
            slow = w >= 20
            for i in range(8):
                query(
                    shop, "orders", t + i * 10**6, float(rng.uniform(0.25, 0.3) if slow else rng.uniform(0.004, 0.006))
                )
            window(app, clock, shop)
        found = flagged(app)
        recent = app.detector.recent(ORDERS_DB, "in:service:shop/orders.latency", 30)
    assert (ORDERS_DB, "in:service:shop/orders.latency") in found
    assert max(recent) > 0.2 > 0.01 > min(recent)  # the series window the agent and the API read


def test_an_edge_needs_enough_calls_in_a_window_and_its_signals_read_as_their_families() -> None:
    clock = ManualClock(0.0)
    seen: list[set[tuple[str, str]]] = []
    detector = Detector(lambda _, found: seen.append({(a.entity, a.signal) for a in found}), clock=clock)
    for w in range(40):
        calls = 2 if w >= 30 else 20  # a quiet spell: too few calls for a mean, however slow they are
        seconds = 5.0 if w >= 30 else 0.005
        detector.consume_calls([Call(FRONTEND, CART, calls, 0, calls * seconds)])
        clock.advance(10)
    detector.tick()
    assert not any((CART, f"in:{FRONTEND}.latency") in s for s in seen)
    rates = detector.recent(CART, f"in:{FRONTEND}.rate", 40)  # calls a second: every window has one
    assert len(rates) == 40
    assert rates[0] == 2.0
    assert rates[-1] == 0.2
    assert edge_of("in:database:postgresql/db.example.com.latency") == ("database:postgresql/db.example.com", "latency")
    assert edge_of("in:service:shop/web.v2.rate") == ("service:shop/web.v2", "rate")
    assert edge_of("p95") is None
    assert family(f"in:{FRONTEND}.latency") == family("p95") == "latency"
    assert family(f"in:{FRONTEND}.error_ratio") == family("error_ratio") == "error"
    assert corroborates(f"in:{FRONTEND}.latency")
    assert not corroborates(f"in:{FRONTEND}.rate")


def test_a_callees_edge_series_stop_at_callers_per_callee_and_the_rest_is_counted() -> None:
    clock = ManualClock(0.0)
    detector = Detector(lambda _, found: None, DetectorSettings(callers_per_callee=2), clock)
    registry = CollectorRegistry()
    registry.register(DetectorMetrics(detector))
    detector.consume_calls([Call(f"service:shop/c{i}", CART, 7, 0, 0.07) for i in range(4)])
    clock.advance(10)
    detector.tick()
    edges = {signal for entity, signal in detector.table.keys if entity == CART and signal.endswith(".rate")}
    assert edges == {"in:service:shop/c0.rate", "in:service:shop/c1.rate"}
    dropped = registry.get_sample_value(
        "rootward_detector_dropped_total", {"reason": "calls of callers past callers_per_callee"}
    )
    assert dropped == 14


def test_a_slow_tail_on_one_callers_calls_shows_as_that_edges_p95() -> None:
    """One call in eight from the frontend to the cart takes ~1.2 s: the edge's p95 leaves its ~5 ms baseline
    (the calls' buckets are the servicegraph connector's); the admin's calls to the same cart are unchanged. Opt-in:
    detection.edge_quantiles."""
    rng = np.random.default_rng(5)
    with running("frontend", "admin", "cart", sets=("detection.edge_quantiles=true",)) as (app, clock, shop):
        for w in range(26):
            t = w * WINDOW_NS
            for i in range(8):
                slow = w >= 22 and i == 0
                seconds = 1.2 if slow else float(rng.uniform(0.004, 0.006))
                call(shop, "frontend", "cart", t + i * 10**6, seconds)
                call(shop, "admin", "cart", t + i * 10**6, float(rng.uniform(0.004, 0.006)))
            window(app, clock, shop)
        tail = app.detector.recent(CART, f"in:{FRONTEND}.p95", 26)
        other = app.detector.recent(CART, f"in:{ADMIN}.p95", 26)
        found = flagged(app)
    assert 0.004 < float(np.median(tail[:20])) <= 0.006  # the cart's ~5 ms calls, in the (4 ms, 6 ms] bucket
    assert tail[-1] > 1.0  # the slow eighth puts the p95 in the (1.0, 1.4] bucket
    assert float(np.max(other)) <= 0.006
    assert (CART, f"in:{FRONTEND}.p95") in found
    assert (CART, f"in:{ADMIN}.p95") not in found
