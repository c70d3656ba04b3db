"""Synthetic telemetry of a small shop, sent through the real OpenTelemetry SDK and its OTLP exporters.

Five services on two nodes: ``frontend`` calls ``cart`` (which uses redis) and ``checkout``; ``checkout`` calls
``payment`` and publishes to kafka, which ``email`` consumes. Each service has its own SDK providers and resource
(``service.name``, ``k8s.pod.name``, ``k8s.namespace.name``, ``k8s.node.name``, ``k8s.deployment.name``), as the
Collector's k8sattributes processor would set them. Used by ``rootward demo`` and by tests that need realistic
traffic from a real sender.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Literal

from opentelemetry import trace
from opentelemetry._logs import Logger, SeverityNumber
from opentelemetry.metrics import Counter, Histogram
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

Protocol = Literal["grpc", "http"]

SERVICES = {
    "frontend": "node-a",
    "cart": "node-a",
    "checkout": "node-b",
    "payment": "node-b",
    "email": "node-a",
}


def _exporters(protocol: Protocol, endpoint: str, headers: dict[str, str] | None) -> tuple[object, object, object]:
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return (
            OTLPSpanExporter(endpoint=endpoint, insecure=True, headers=headers),
            OTLPMetricExporter(endpoint=endpoint, insecure=True, headers=headers),
            OTLPLogExporter(endpoint=endpoint, insecure=True, headers=headers),
        )
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter

    base = endpoint.rstrip("/")
    return (
        HttpSpanExporter(endpoint=f"{base}/v1/traces", headers=headers),
        HttpMetricExporter(endpoint=f"{base}/v1/metrics", headers=headers),
        HttpLogExporter(endpoint=f"{base}/v1/logs", headers=headers),
    )


@dataclass
class _Service:
    name: str
    tracer: trace.Tracer
    providers: tuple[TracerProvider, MeterProvider, LoggerProvider]
    requests: Counter
    latency: Histogram
    logger: Logger


@dataclass
class Shop:
    """Senders for the five services. ``request()`` produces one user request's telemetry; ``close()`` flushes.

    ``endpoint`` is ``host:port`` for gRPC, ``http://host:port`` for HTTP.
    """

    endpoint: str
    protocol: Protocol = "grpc"
    headers: dict[str, str] | None = None
    seed: int = 7
    sent: dict[str, int] = field(default_factory=lambda: {"spans": 0, "logs": 0})
    span_exporter: Callable[[], SpanExporter] | None = None
    """Makes each service's span exporter instead of the OTLP one to ``endpoint`` (a test's own routing of spans)."""

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._services: dict[str, _Service] = {}
        for i, (name, node) in enumerate(SERVICES.items()):
            resource = Resource.create(
                {
                    "service.name": name,
                    "service.namespace": "shop",
                    "k8s.namespace.name": "shop",
                    "k8s.pod.name": f"{name}-5f7c9d{i}b8-x{i}q2z",
                    "k8s.deployment.name": name,
                    "k8s.node.name": node,
                }
            )
            spans, metrics, logs = _exporters(self.protocol, self.endpoint, self.headers)
            if self.span_exporter is not None:
                spans = self.span_exporter()
            tp = TracerProvider(resource=resource)
            tp.add_span_processor(BatchSpanProcessor(spans))
            reader = PeriodicExportingMetricReader(metrics, export_interval_millis=3_600_000)
            mp = MeterProvider(resource=resource, metric_readers=[reader])
            lp = LoggerProvider(resource=resource)
            lp.add_log_record_processor(BatchLogRecordProcessor(logs))
            meter = mp.get_meter("rootward.demo")
            self._services[name] = _Service(
                name=name,
                tracer=tp.get_tracer("rootward.demo"),
                providers=(tp, mp, lp),
                requests=meter.create_counter("app.requests", unit="1", description="Requests served"),
                latency=meter.create_histogram("app.request.duration", unit="ms", description="Request latency"),
                logger=lp.get_logger("rootward.demo"),
            )

    @contextmanager
    def _span(
        self, service: str, name: str, kind: SpanKind, attributes: dict[str, str | int] | None = None
    ) -> Iterator[trace.Span]:
        svc = self._services[service]
        with svc.tracer.start_as_current_span(name, kind=kind, attributes=attributes) as span:
            self.sent["spans"] += 1
            yield span

    @contextmanager
    def _server(self, service: str, route: str, failing: bool, latency_ms: float) -> Iterator[trace.Span]:
        svc = self._services[service]
        svc.requests.add(1, {"http.route": route, "error": failing})
        svc.latency.record(latency_ms, {"http.route": route})
        with self._span(service, f"GET {route}", SpanKind.SERVER, {"http.route": route}) as span:
            yield span

    def _log(self, service: str, severity: SeverityNumber, body: str) -> None:
        svc = self._services[service]
        svc.logger.emit(severity_number=severity, severity_text=severity.name, body=body)
        self.sent["logs"] += 1

    def _call(self, caller: str, callee: str, route: str) -> AbstractContextManager[trace.Span]:
        return self._span(
            caller,
            f"GET {route}",
            SpanKind.CLIENT,
            {"server.address": f"{callee}.shop.svc.cluster.local", "server.port": 8080, "peer.service": callee},
        )

    def request(self, payment_failing: bool = False, redis_delay_s: float = 0.0) -> None:
        """One user request through the shop; when ``payment_failing``, payment errors and logs it; with
        ``redis_delay_s``, cart's redis call takes that long (really: the spans measure it)."""
        rng = self._rng
        with self._server("frontend", "/checkout", payment_failing, rng.uniform(20, 40)):
            with self._call("frontend", "cart", "/cart"), self._server("cart", "/cart", False, rng.uniform(2, 6)):
                with self._span("cart", "HGET", SpanKind.CLIENT, {"db.system": "redis", "server.address": "redis"}):
                    if redis_delay_s:
                        time.sleep(redis_delay_s)
            with self._call("frontend", "checkout", "/checkout"):
                with self._server("checkout", "/checkout", payment_failing, rng.uniform(10, 20)):
                    with self._call("checkout", "payment", "/charge"):
                        with self._server("payment", "/charge", payment_failing, rng.uniform(5, 15)) as span:
                            if payment_failing:
                                span.set_status(Status(StatusCode.ERROR, "card processor timeout"))
                                self._log("payment", SeverityNumber.ERROR, "charge failed: card processor timeout")
                            else:
                                self._log("payment", SeverityNumber.INFO, "charge ok")
                    with self._span(
                        "checkout",
                        "orders publish",
                        SpanKind.PRODUCER,
                        {"messaging.system": "kafka", "messaging.destination.name": "orders"},
                    ):
                        with self._span("email", "orders process", SpanKind.CONSUMER, {"messaging.system": "kafka"}):
                            self._log("email", SeverityNumber.INFO, "order confirmation sent")

    def flush(self) -> None:
        """Send everything recorded so far (spans, metrics, logs) now."""
        for svc in self._services.values():
            for provider in svc.providers:
                provider.force_flush()

    def close(self) -> None:
        """Flush everything to the receiver and shut the providers down."""
        self.flush()
        for svc in self._services.values():
            for provider in svc.providers:
                provider.shutdown()
