"""The OpenTelemetry Python SDK's OTLP exporters (gRPC and HTTP) against the receiver: what was sent is what the
consumer got."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from rootward.model import KIND_CLIENT, KIND_SERVER, STATUS_ERROR
from rootward.receiver import Receiver
from rootward.testing import RecordingConsumer

RESOURCE = Resource.create(
    {"service.name": "checkout", "k8s.pod.name": "checkout-7d9f-abcde", "k8s.namespace.name": "shop"}
)
TRANSPORTS = [pytest.param("grpc", id="grpc"), pytest.param("http", id="http")]


def _span_exporter(transport: str, receiver: Receiver, headers: dict[str, str] | None = None) -> object:
    if transport == "grpc":
        return GrpcSpanExporter(endpoint=f"127.0.0.1:{receiver.grpc.port}", insecure=True, headers=headers)
    return HttpSpanExporter(endpoint=f"http://127.0.0.1:{receiver.http.port}/v1/traces", headers=headers)


def _send_spans(exporter: object) -> list[object]:
    """Emit a server span with two client children (one failing) through ``exporter``; return the SDK's spans."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(exporter))  # type: ignore[arg-type]
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("POST /checkout", kind=SpanKind.SERVER, attributes={"http.route": "/checkout"}):
        with tracer.start_as_current_span(
            "GET /charge",
            kind=SpanKind.CLIENT,
            attributes={"server.address": "payment.shop.svc", "server.port": 8080, "http.response.status_code": 500},
        ) as span:
            span.set_status(Status(StatusCode.ERROR, "boom"))
        with tracer.start_as_current_span(
            "HGET", kind=SpanKind.CLIENT, attributes={"db.system": "redis", "peer.service": "redis"}
        ):
            pass
    provider.shutdown()
    return list(memory.get_finished_spans())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_sdk_spans_arrive_with_ids_times_kinds_and_resource(
    receiver: tuple[Receiver, RecordingConsumer], transport: str
) -> None:
    server, consumer = receiver
    sent = _send_spans(_span_exporter(transport, server))
    assert consumer.wait_for("traces", len(sent)) == len(sent)
    got = {}
    for batch in consumer.traces:
        for i in range(len(batch)):
            got[int(batch.span_id[i])] = (batch, i)
    assert len(got) == 3
    for span in sent:
        ctx = span.context  # type: ignore[attr-defined]
        batch, i = got[ctx.span_id]
        hi, lo = (int(x) for x in batch.trace_id[i])
        assert (hi << 64) | lo == ctx.trace_id
        parent = span.parent.span_id if span.parent else 0  # type: ignore[attr-defined]
        assert int(batch.parent_id[i]) == parent
        assert int(batch.start[i]) == span.start_time  # type: ignore[attr-defined]
        assert int(batch.end[i]) == span.end_time  # type: ignore[attr-defined]
        assert batch.strings[batch.name[i]] == span.name  # type: ignore[attr-defined]
        assert int(batch.kind[i]) == span.kind.value + 1  # type: ignore[attr-defined]  # SDK enum is 0-based
        attrs = batch.resources[batch.resource[i]].attributes
        assert attrs["service.name"] == "checkout"
        assert attrs["k8s.pod.name"] == "checkout-7d9f-abcde"
    batch, i = got[next(s.context.span_id for s in sent if s.name == "GET /charge")]  # type: ignore[attr-defined]
    assert int(batch.kind[i]) == KIND_CLIENT
    assert int(batch.status[i]) == STATUS_ERROR
    assert batch.string("server.address", i) == "payment.shop.svc"
    assert int(batch.int_attrs["server.port"][i]) == 8080
    assert int(batch.int_attrs["http.status_code"][i]) == 500
    batch, i = got[next(s.context.span_id for s in sent if s.name == "HGET")]  # type: ignore[attr-defined]
    assert batch.string("db.system", i) == "redis"
    assert batch.string("peer.service", i) == "redis"
    root = next(s for s in sent if s.name == "POST /checkout")
    batch, i = got[root.context.span_id]  # type: ignore[attr-defined]
    assert int(batch.kind[i]) == KIND_SERVER
    assert int(batch.parent_id[i]) == 0
    assert server.telemetry.value(
        "rootward_receiver_items_total", signal="traces", outcome="accepted", reason=""
    ) == len(sent)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_sdk_metrics_arrive_as_points_with_values_and_attributes(
    receiver: tuple[Receiver, RecordingConsumer], transport: str
) -> None:
    server, consumer = receiver
    if transport == "grpc":
        exporter: object = GrpcMetricExporter(endpoint=f"127.0.0.1:{server.grpc.port}", insecure=True)
    else:
        exporter = HttpMetricExporter(endpoint=f"http://127.0.0.1:{server.http.port}/v1/metrics")
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)  # type: ignore[arg-type]
    provider = MeterProvider(resource=RESOURCE, metric_readers=[reader])
    meter = provider.get_meter("test")
    meter.create_counter("requests").add(5, {"route": "/a"})
    meter.create_histogram("latency", unit="ms").record(12.5, {"route": "/a"})
    gauge = meter.create_gauge("queue.depth")
    gauge.set(42, {"queue": "orders"})
    provider.shutdown()  # collects and exports once
    assert consumer.wait_for("metrics", 3) == 3
    batch = consumer.metrics[0]
    by_name = {batch.metrics[m].name: i for i, m in enumerate(batch.metric.tolist())}
    assert set(by_name) == {"requests", "latency", "queue.depth"}
    i = by_name["requests"]
    assert batch.value[i] == 5.0
    assert batch.metrics[batch.metric[i]].type == "sum"
    assert batch.metrics[batch.metric[i]].monotonic
    assert batch.metrics[batch.metric[i]].temporality == 2  # cumulative
    assert batch.attributes[i] == {"route": "/a"}
    i = by_name["latency"]
    assert batch.metrics[batch.metric[i]].type == "histogram"
    assert batch.metrics[batch.metric[i]].unit == "ms"
    assert batch.value[i] == 12.5
    assert batch.count[i] == 1
    bounds, counts = batch.buckets[i]  # type: ignore[misc]
    assert sum(counts) == 1  # type: ignore[call-overload]
    assert len(counts) == len(bounds) + 1  # type: ignore[arg-type]
    i = by_name["queue.depth"]
    assert batch.metrics[batch.metric[i]].type == "gauge"
    assert batch.value[i] == 42.0
    assert batch.resources[batch.resource[i]].service_name == "checkout"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_sdk_logs_arrive_with_body_severity_and_trace_context(
    receiver: tuple[Receiver, RecordingConsumer], transport: str
) -> None:
    server, consumer = receiver
    if transport == "grpc":
        exporter: object = GrpcLogExporter(endpoint=f"127.0.0.1:{server.grpc.port}", insecure=True)
    else:
        exporter = HttpLogExporter(endpoint=f"http://127.0.0.1:{server.http.port}/v1/logs")
    provider = LoggerProvider(resource=RESOURCE)
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))  # type: ignore[arg-type]
    logger = provider.get_logger("test")
    tracer_provider = TracerProvider(resource=RESOURCE)
    with tracer_provider.get_tracer("t").start_as_current_span("work") as span:
        logger.emit(
            severity_number=SeverityNumber.ERROR,
            severity_text="ERROR",
            body="payment failed",
            attributes={"order.id": "42"},
        )
        ctx = span.get_span_context()
    logger.emit(severity_number=SeverityNumber.INFO, body={"kind": "Event", "reason": "OOMKilled"})
    provider.shutdown()
    tracer_provider.shutdown()
    assert consumer.wait_for("logs", 2) == 2
    records = [(b, i) for b in consumer.logs for i in range(len(b))]
    (b0, i0), (b1, i1) = records
    assert b0.body[i0] == "payment failed"
    assert int(b0.severity[i0]) == SeverityNumber.ERROR.value
    assert b0.strings[b0.severity_text[i0]] == "ERROR"
    assert b0.attributes[i0] == {"order.id": "42"}
    hi, lo = (int(x) for x in b0.trace_id[i0])
    assert (hi << 64) | lo == ctx.trace_id
    assert int(b0.span_id[i0]) == ctx.span_id
    assert b1.body[i1] == {"kind": "Event", "reason": "OOMKilled"}
    assert int(b1.trace_id[i1][0]) == 0
    assert b0.resources[b0.resource[i0]].service_name == "checkout"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_sdk_exporter_with_the_right_token_is_accepted_and_without_it_is_refused(
    secured: tuple[Receiver, RecordingConsumer], transport: str, caplog: pytest.LogCaptureFixture
) -> None:
    server, consumer = secured
    caplog.set_level(logging.CRITICAL)  # the SDK logs its failed export; that is expected here
    refused = _send_spans(_span_exporter(transport, server, {"authorization": "Bearer wrong"}))
    assert server.telemetry.value(
        "rootward_receiver_requests_total", transport=transport, signal="traces", result="unauthenticated"
    ) == len(refused)
    sent = _send_spans(_span_exporter(transport, server, {"authorization": "Bearer other"}))
    assert consumer.wait_for("traces", len(sent)) == len(sent)
    received = np.concatenate([b.span_id for b in consumer.traces])
    assert sorted(received.tolist()) == sorted(s.context.span_id for s in sent)  # type: ignore[attr-defined]
