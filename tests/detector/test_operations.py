"""RED per operation: rate, error ratio and p95 series per (service, span name) for the first
``operations_per_service`` names of a service, spans of further names counted; decoded from real OTLP trace
requests, and judged through the detector."""

from __future__ import annotations

import random

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from prometheus_client import CollectorRegistry

from rootward.clock import ManualClock
from rootward.detector.baseline import UP, rule_for
from rootward.detector.detector import Anomaly, Detector, DetectorSettings
from rootward.detector.telemetry import DetectorMetrics
from rootward.detector.windows import SeriesTable, Window
from rootward.model import SpanBatch
from rootward.receiver import TraceDecoder

SERVER, CLIENT = 2, 3
CART = "service:shop/cart"


def spans(by_name: dict[str, list[float]], kind: int = SERVER, failing: frozenset[str] = frozenset()) -> SpanBatch:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    for key, value in {"service.name": "cart", "service.namespace": "shop"}.items():
        rs.resource.attributes.add(key=key, value=AnyValue(string_value=value))
    out = rs.scope_spans.add().spans
    for name, latencies in by_name.items():
        for seconds in latencies:
            s = out.add(trace_id=random.randbytes(16), span_id=random.randbytes(8), kind=kind, name=name)  # type: ignore[arg-type]
            s.start_time_unix_nano = 1_000_000_000
            s.end_time_unix_nano = 1_000_000_000 + int(seconds * 1e9)
            if name in failing:
                s.status.code = 2  # STATUS_CODE_ERROR
    return TraceDecoder().decode(req.SerializeToString()).batch


def values(window: Window) -> dict[str, float]:
    ids, vals = window.values()
    window.clear()
    return {window.table.keys[i][1]: v for i, v in zip(ids.tolist(), vals.tolist(), strict=True)}


def test_each_operation_of_a_service_gets_its_own_p95_up_to_the_cap_and_the_rest_is_counted() -> None:
    window = Window(SeriesTable(), 10.0, operations_per_service=2)
    window.add_spans(spans({"GET /cart": [0.010] * 20, "POST /cart": [0.200] * 20, "GET /health": [0.001] * 7}))
    got = values(window)
    assert got["op:GET /cart.p95"] == pytest.approx(0.010, rel=0.1)
    assert got["op:POST /cart.p95"] == pytest.approx(0.200, rel=0.1)
    assert got["op:GET /cart.rate"] == pytest.approx(2.0)  # 20 spans in the 10 s window
    assert got["op:POST /cart.error_ratio"] == 0.0
    assert "op:GET /health.p95" not in got
    assert got["rate"] == pytest.approx(4.7)  # every span still counts for the service
    assert window.dropped["spans of operations past operations_per_service"] == 7
    window.add_spans(spans({"GET /health": [0.001] * 7, "GET /cart": [0.010] * 5}))  # the cap holds across windows
    assert set(values(window)) >= {"op:GET /cart.p95"}
    assert window.dropped["spans of operations past operations_per_service"] == 14


def test_client_spans_and_quiet_operations_give_no_operation_series_and_the_default_is_off() -> None:
    window = Window(SeriesTable(), 10.0, operations_per_service=5)
    window.add_spans(spans({"GET /cart": [0.010] * 3}))  # fewer than MIN_SPANS
    window.add_spans(spans({"SELECT": [0.010] * 20}, kind=CLIENT))
    assert not any(s.startswith("op:") for s in values(window))
    off = Window(SeriesTable(), 10.0)
    off.add_spans(spans({"GET /cart": [0.010] * 20}))
    assert not any(s.startswith("op:") for s in values(off))


def test_an_operation_series_is_judged_as_latency_whatever_its_span_name_says() -> None:
    assert rule_for("op:GET /success.p95") == rule_for("p95")  # not the DOWN rule of "success" metrics
    assert rule_for("op:GET /cart.p95").direction == UP
    assert rule_for("op:GET /latency.rate") == rule_for("rate")  # its measure's rule, not a word in its name
    assert rule_for("op:GET /cpu.error_ratio") == rule_for("error_ratio")


def test_one_operation_slowing_down_is_an_anomaly_of_that_operation_on_its_service() -> None:
    clock = ManualClock(1000.0)
    seen: list[Anomaly] = []
    settings = DetectorSettings(window_s=10, warmup=10, operations_per_service=5)
    detector = Detector(lambda _, a: seen.extend(a), settings, clock)
    rng = random.Random(3)
    for w in range(40):
        slow = w >= 30
        fast = [rng.uniform(0.008, 0.012) for _ in range(200)]
        checkout = [rng.uniform(0.008, 0.012) * (20 if slow else 1) for _ in range(10)]  # 5 % of the traffic
        detector.consume_traces(spans({"GET /cart": fast, "POST /checkout": checkout}))
        clock.advance(10)
    detector.tick()
    flagged = {(a.entity, a.signal) for a in seen}
    assert (CART, "op:POST /checkout.p95") in flagged
    assert (CART, "op:GET /cart.p95") not in flagged


def test_one_operation_failing_is_an_error_ratio_anomaly_of_that_operation() -> None:
    clock = ManualClock(1000.0)
    seen: list[Anomaly] = []
    settings = DetectorSettings(window_s=10, warmup=10, operations_per_service=5)
    detector = Detector(lambda _, a: seen.extend(a), settings, clock)
    for w in range(34):
        failing = frozenset({"POST /checkout"}) if w >= 30 else frozenset()
        detector.consume_traces(spans({"GET /cart": [0.01] * 200, "POST /checkout": [0.01] * 10}, failing=failing))
        clock.advance(10)
    detector.tick()
    flagged = {(a.entity, a.signal) for a in seen}
    assert (CART, "op:POST /checkout.error_ratio") in flagged
    assert (CART, "op:GET /cart.error_ratio") not in flagged


def test_spans_past_the_cap_and_series_past_max_series_are_counted_on_metrics() -> None:
    clock = ManualClock(1000.0)
    detector = Detector(lambda _, a: None, DetectorSettings(operations_per_service=1, max_series=6), clock)
    registry = CollectorRegistry()
    registry.register(DetectorMetrics(detector))
    # the service's 5 server series and its client series fill the table: no room for GET /cart's own series
    detector.consume_traces(spans({"GET /cart": [0.01] * 6, "POST /cart": [0.01] * 4}))

    def dropped(reason: str) -> float | None:
        return registry.get_sample_value("rootward_detector_dropped_total", {"reason": reason})

    assert dropped("spans of operations past operations_per_service") == 4
    assert dropped("series past max_series") == 3  # GET /cart's rate, error ratio and p95
