"""Real collectors in front of the receiver: rotel (OTLP/gRPC and OTLP/HTTP, always gzip) and the OpenTelemetry
Collector's otlphttp exporter. Applications send with the OpenTelemetry Python SDK; what the consumer gets must be
exactly what was sent, with the bearer token, under backpressure, and refused with a wrong token.

Every process runs on free ports and is stopped in fixture teardown (see collectors.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from rootward.model import KIND_CLIENT, KIND_CONSUMER, KIND_INTERNAL, KIND_PRODUCER, KIND_SERVER
from rootward.receiver import Receiver
from rootward.testing import RecordingConsumer, running_receiver

from collectors import Rotel, running_otelcol, running_rotel, wait_until

TOKEN = "s3cret"
PROTOCOLS = [pytest.param("grpc", id="grpc"), pytest.param("http", id="http")]
OTLP_KIND = {
    SpanKind.INTERNAL: KIND_INTERNAL,
    SpanKind.SERVER: KIND_SERVER,
    SpanKind.CLIENT: KIND_CLIENT,
    SpanKind.PRODUCER: KIND_PRODUCER,
    SpanKind.CONSUMER: KIND_CONSUMER,
}
WAIT_S = 20.0

StartRotel = Callable[..., Rotel]


# --- fixtures -------------------------------------------------------------------------------------------------------


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    """Everything a test starts, stopped in reverse order at teardown (collectors before the receiver)."""
    with ExitStack() as s:
        yield s


@pytest.fixture
def start_receiver(stack: ExitStack) -> Callable[..., tuple[Receiver, RecordingConsumer]]:
    """Start a receiver on free ports: ``start_receiver(consumer=None, **dotted_overrides)``."""

    def start(consumer: RecordingConsumer | None = None, **overrides: object) -> tuple[Receiver, RecordingConsumer]:
        return stack.enter_context(running_receiver(consumer, **overrides))

    return start


@pytest.fixture
def start_rotel(stack: ExitStack, tmp_path: Path) -> StartRotel:
    """Start rotel in front of a receiver: ``start_rotel(receiver, protocol, headers=None, extra_args=())``."""

    def start(receiver: Receiver, protocol: str, headers: str | None = None, extra_args: tuple[str, ...] = ()) -> Rotel:
        port = receiver.grpc.port if protocol == "grpc" else receiver.http.port
        return stack.enter_context(
            running_rotel(tmp_path, f"http://127.0.0.1:{port}", protocol, headers=headers, extra_args=extra_args)
        )

    return start


# --- helpers --------------------------------------------------------------------------------------------------------


def _emit_spans(
    resources: list[Resource], exporter: Callable[[], SpanExporter] | None = None, traces: int = 1
) -> list[ReadableSpan]:
    """Per resource, ``traces`` times: a trace with a server span and children of every other kind, and a
    one-span consumer trace (5 spans). With ``exporter`` (a factory: a provider's shutdown shuts its exporter
    down), the SDK exports each span as it ends. Returns the spans the SDK finished."""
    finished: list[ReadableSpan] = []
    for resource in resources:
        memory = InMemorySpanExporter()
        provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        provider.add_span_processor(SimpleSpanProcessor(memory))
        if exporter is not None:
            provider.add_span_processor(SimpleSpanProcessor(exporter()))
        tracer = provider.get_tracer("test_collectors")
        service = resource.attributes["service.name"]
        for _ in range(traces):
            with tracer.start_as_current_span(f"{service} POST /orders", kind=SpanKind.SERVER):
                with tracer.start_as_current_span("validate", kind=SpanKind.INTERNAL):
                    pass
                with tracer.start_as_current_span("GET /stock", kind=SpanKind.CLIENT):
                    pass
                with tracer.start_as_current_span("orders publish", kind=SpanKind.PRODUCER):
                    pass
            with tracer.start_as_current_span("orders process", kind=SpanKind.CONSUMER):
                pass
        finished.extend(memory.get_finished_spans())
        provider.shutdown()
    return finished


def _received_spans(consumer: RecordingConsumer) -> list[dict[str, Any]]:
    """Every span the consumer got, as plain values."""
    spans = []
    for batch in consumer.traces:
        for i in range(len(batch)):
            hi, lo = (int(x) for x in batch.trace_id[i])
            spans.append(
                {
                    "span_id": int(batch.span_id[i]),
                    "trace_id": (hi << 64) | lo,
                    "parent_id": int(batch.parent_id[i]),
                    "name": batch.strings[batch.name[i]],
                    "kind": int(batch.kind[i]),
                    "start": int(batch.start[i]),
                    "end": int(batch.end[i]),
                    "service.name": batch.resources[batch.resource[i]].attributes.get("service.name"),
                }
            )
    return spans


def _expected_spans(sent: list[ReadableSpan]) -> list[dict[str, Any]]:
    return [
        {
            "span_id": s.context.span_id,
            "trace_id": s.context.trace_id,
            "parent_id": s.parent.span_id if s.parent else 0,
            "name": s.name,
            "kind": OTLP_KIND[s.kind],
            "start": s.start_time,
            "end": s.end_time,
            "service.name": s.resource.attributes["service.name"],
        }
        for s in sent
    ]


def _by_span_id(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(spans, key=lambda s: s["span_id"])


def _items(receiver: Receiver, signal: str, outcome: str, reason: str = "") -> float:
    """rootward_receiver_items_total{signal, outcome, reason}."""
    return receiver.telemetry.value("rootward_receiver_items_total", signal=signal, outcome=outcome, reason=reason)


def _requests(receiver: Receiver, transport: str, signal: str, result: str) -> float:
    """rootward_receiver_requests_total{transport, signal, result}."""
    return receiver.telemetry.value(
        "rootward_receiver_requests_total", transport=transport, signal=signal, result=result
    )


def _counters(receiver: Receiver) -> str:
    """The receiver's item and request counters, for assertion messages."""
    lines = receiver.telemetry.exposition().decode().splitlines()
    wanted = ("rootward_receiver_items_total", "rootward_receiver_requests_total", "rootward_queue_items")
    return "\n".join(line for line in lines if line.startswith(wanted))


def _settle(consumer: RecordingConsumer, signal: str, expected: int, timeout: float = WAIT_S) -> int:
    """Wait up to ``timeout`` for ``expected`` items, then a little longer (rotel batches for 200 ms) so that extra
    items (duplicates) would show; return the final count."""
    consumer.wait_for(signal, expected, timeout)
    wait_until(lambda: consumer.count(signal) > expected, timeout=0.5)
    return consumer.count(signal)


# --- rotel ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_spans_sent_through_rotel_with_the_token_arrive_exactly_as_the_sdk_sent_them(
    start_receiver: Callable[..., tuple[Receiver, RecordingConsumer]], start_rotel: StartRotel, protocol: str
) -> None:
    receiver, consumer = start_receiver(**{"auth.tokens": [TOKEN]})
    rotel = start_rotel(receiver, protocol, headers=f"authorization=Bearer {TOKEN}")
    resources = [Resource.create({"service.name": "checkout"}), Resource.create({"service.name": "inventory"})]
    sent = _emit_spans(resources, lambda: OTLPSpanExporter(endpoint=rotel.grpc_endpoint, insecure=True))
    assert len(sent) == 10

    count = _settle(consumer, "traces", len(sent))

    context = f"\n{_counters(receiver)}\n{rotel.describe()}"
    assert count == len(sent), f"sent {len(sent)} spans through rotel, the consumer got {count}{context}"
    assert _by_span_id(_received_spans(consumer)) == _by_span_id(_expected_spans(sent)), context
    assert _items(receiver, "traces", "accepted") == len(sent), context
    assert _requests(receiver, protocol, "traces", "ok") >= 1, f"rotel did not export over {protocol}{context}"
    assert _requests(receiver, protocol, "traces", "unauthenticated") == 0, context


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_logs_and_metrics_sent_through_rotel_arrive_with_their_values_and_resource(
    start_receiver: Callable[..., tuple[Receiver, RecordingConsumer]], start_rotel: StartRotel, protocol: str
) -> None:
    receiver, consumer = start_receiver(**{"auth.tokens": [TOKEN]})
    rotel = start_rotel(receiver, protocol, headers=f"authorization=Bearer {TOKEN}")
    resource = Resource.create({"service.name": "payment", "k8s.namespace.name": "shop"})

    logger_provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
    logger_provider.add_log_record_processor(
        SimpleLogRecordProcessor(OTLPLogExporter(endpoint=rotel.grpc_endpoint, insecure=True))
    )
    logger = logger_provider.get_logger("test_collectors")
    tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    with tracer_provider.get_tracer("test_collectors").start_as_current_span("charge") as span:
        logger.emit(
            severity_number=SeverityNumber.ERROR,
            severity_text="ERROR",
            body="card declined",
            attributes={"order.id": "42"},
        )
        ctx = span.get_span_context()
    logger.emit(severity_number=SeverityNumber.INFO, body={"kind": "Event", "reason": "BackOff"})
    logger_provider.shutdown()
    tracer_provider.shutdown()

    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=rotel.grpc_endpoint, insecure=True), export_interval_millis=3_600_000
    )
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader], shutdown_on_exit=False)
    meter = meter_provider.get_meter("test_collectors")
    meter.create_counter("payments").add(7, {"method": "card"})
    meter.create_histogram("payment.latency", unit="ms").record(31.5, {"method": "card"})
    meter_provider.shutdown()  # collects and exports once

    context = f"\n{_counters(receiver)}\n{rotel.describe()}"
    assert _settle(consumer, "logs", 2) == 2, context
    assert _settle(consumer, "metrics", 2) == 2, context
    assert _requests(receiver, protocol, "logs", "ok") >= 1, f"rotel did not export logs over {protocol}{context}"
    assert _requests(receiver, protocol, "metrics", "ok") >= 1, f"no metrics export over {protocol}{context}"

    records = [(b, i) for b in consumer.logs for i in range(len(b))]
    by_body = {json.dumps(b.body[i], sort_keys=True): (b, i) for b, i in records}
    b, i = by_body[json.dumps("card declined")]
    assert int(b.severity[i]) == SeverityNumber.ERROR.value
    assert b.strings[b.severity_text[i]] == "ERROR"
    assert b.attributes[i] == {"order.id": "42"}
    hi, lo = (int(x) for x in b.trace_id[i])
    assert (hi << 64) | lo == ctx.trace_id
    assert int(b.span_id[i]) == ctx.span_id
    assert b.resources[b.resource[i]].service_name == "payment"
    b, i = by_body[json.dumps({"kind": "Event", "reason": "BackOff"}, sort_keys=True)]
    assert int(b.severity[i]) == SeverityNumber.INFO.value
    assert b.resources[b.resource[i]].get("k8s.namespace.name") == "shop"

    points = {}
    for batch in consumer.metrics:
        for i, m in enumerate(batch.metric.tolist()):
            points[batch.metrics[m].name] = (batch, i)
    assert set(points) == {"payments", "payment.latency"}, context
    b, i = points["payments"]
    assert (b.metrics[b.metric[i]].type, b.value[i], b.attributes[i]) == ("sum", 7.0, {"method": "card"})
    assert b.resources[b.resource[i]].service_name == "payment"
    b, i = points["payment.latency"]
    assert (b.metrics[b.metric[i]].type, b.metrics[b.metric[i]].unit) == ("histogram", "ms")
    assert (b.value[i], int(b.count[i])) == (31.5, 1)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_rotel_with_a_wrong_token_is_refused_and_nothing_reaches_the_consumer(
    start_receiver: Callable[..., tuple[Receiver, RecordingConsumer]], start_rotel: StartRotel, protocol: str
) -> None:
    receiver, consumer = start_receiver(**{"auth.tokens": [TOKEN]})
    rotel = start_rotel(receiver, protocol, headers="authorization=Bearer wrong")
    sent = _emit_spans([Resource.create({"service.name": "checkout"})])
    exporter = OTLPSpanExporter(endpoint=rotel.grpc_endpoint, insecure=True)
    try:
        assert exporter.export(sent) == SpanExportResult.SUCCESS  # rotel takes them; its export is what fails
    finally:
        exporter.shutdown()

    refused = wait_until(lambda: _requests(receiver, protocol, "traces", "unauthenticated") >= 1, WAIT_S)
    context = f"\n{_counters(receiver)}\n{rotel.describe()}"
    assert refused, f"rotel sent with a wrong token but the receiver counted no unauthenticated request{context}"
    assert not wait_until(lambda: consumer.count("traces") > 0, timeout=0.5), context
    assert _requests(receiver, protocol, "traces", "ok") == 0, context
    assert _items(receiver, "traces", "accepted") == 0, context


@pytest.mark.slow
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_rotel_retries_queue_full_refusals_until_every_span_arrives_once(
    start_receiver: Callable[..., tuple[Receiver, RecordingConsumer]], start_rotel: StartRotel, protocol: str
) -> None:
    n, chunk = 20_000, 500
    receiver, consumer = start_receiver(
        RecordingConsumer(delay=0.05), **{"queue.max_items": 2000, "queue.retry_after_s": 0.2}
    )
    # rotel batches of 1000 spans: the queue holds two, so most of the 20 batches are first refused. rotel drops
    # (not splits) an incoming request much larger than its batch size, hence SDK exports of 500 spans.
    rotel = start_rotel(receiver, protocol, extra_args=("--traces-batch-max-size", "1000"))
    sent = _emit_spans([Resource.create({"service.name": "checkout"})], traces=n // 5)
    assert len(sent) == n
    exporter = OTLPSpanExporter(endpoint=rotel.grpc_endpoint, insecure=True)
    try:
        for k in range(0, n, chunk):
            assert exporter.export(sent[k : k + chunk]) == SpanExportResult.SUCCESS, rotel.describe()
    finally:
        exporter.shutdown()

    count = _settle(consumer, "traces", n, timeout=45)

    context = f"\n{_counters(receiver)}\n{rotel.describe()}"
    received = np.concatenate([b.span_id for b in consumer.traces]).tolist() if consumer.traces else []
    unique = set(received)
    missing = {s.context.span_id for s in sent} - unique
    assert count == n, f"sent {n}, got {count} ({count - len(unique)} duplicates, {len(missing)} missing){context}"
    assert len(unique) == n, f"{n - len(unique)} duplicate span ids{context}"
    assert not missing, f"{len(missing)} spans missing{context}"
    assert _items(receiver, "traces", "refused", "queue_full") > 0, f"no backpressure was exercised{context}"
    assert _requests(receiver, protocol, "traces", "queue_full") > 0, context
    assert _items(receiver, "traces", "accepted") == n, context


# --- the OpenTelemetry Collector ------------------------------------------------------------------------------------

LOG_LINES = [
    "2025-01-01T00:00:00Z INFO starting checkout",
    'level=error msg="payment failed" order=42',
    '{"level":"warn","msg":"slow query","ms":812}',
    "unicode: grüße, 東京, emoji 🚀",
    "x" * 4000,
]


@pytest.mark.parametrize("token", [pytest.param(None, id="no-auth"), pytest.param(TOKEN, id="bearer-token")])
def test_every_line_the_collector_tails_arrives_as_a_log_record_with_the_line_as_body(
    start_receiver: Callable[..., tuple[Receiver, RecordingConsumer]],
    stack: ExitStack,
    tmp_path: Path,
    token: str | None,
) -> None:
    receiver, consumer = start_receiver(**({"auth.tokens": [token]} if token else {}))
    log_file = tmp_path / "app.log"
    log_file.write_text("".join(line + "\n" for line in LOG_LINES), encoding="utf-8")
    headers = f'\n    headers: {{authorization: "Bearer {token}"}}' if token else ""
    config = f"""
receivers:
  filelog:
    include: [{json.dumps(str(log_file))}]
    start_at: beginning
exporters:
  otlphttp:
    endpoint: http://127.0.0.1:{receiver.http.port}{headers}
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    logs:
      receivers: [filelog]
      exporters: [otlphttp]
"""
    otelcol = stack.enter_context(running_otelcol(tmp_path, config))

    count = _settle(consumer, "logs", len(LOG_LINES))

    context = f"\n{_counters(receiver)}\n{otelcol.describe()}"
    assert count == len(LOG_LINES), f"the file has {len(LOG_LINES)} lines, the consumer got {count}{context}"
    bodies = [b.body[i] for b in consumer.logs for i in range(len(b))]
    assert sorted(bodies) == sorted(LOG_LINES), context  # type: ignore[type-var]
    attributes = [b.attributes[i] for b in consumer.logs for i in range(len(b))]
    assert all(a.get("log.file.name") == "app.log" for a in attributes), attributes
    assert _requests(receiver, "http", "logs", "unauthenticated") == 0, context
    assert _items(receiver, "logs", "accepted") == len(LOG_LINES), context
