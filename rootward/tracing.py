"""Rootward's own traces (config ``traces``): a TracerProvider that batches spans to an OTLP endpoint, or None when
none is configured (the spans' API then records nothing). The LLM reasoner's GenAI spans go through it
(agent/trace.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rootward._version import __version__
from rootward.config import Traces

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider


def tracer_provider(settings: Traces) -> TracerProvider | None:
    """A provider exporting to ``settings.endpoint`` in batches (off the caller's thread), or None."""
    if not settings.endpoint:
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

    headers = {name: value.get_secret_value() for name, value in settings.headers.items()}
    exporter: SpanExporter
    if settings.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        exporter = GrpcExporter(
            settings.endpoint, insecure=settings.insecure, headers=headers, timeout=settings.timeout_s
        )
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        url = settings.endpoint.rstrip("/")
        exporter = HttpExporter(
            url if url.endswith("/v1/traces") else f"{url}/v1/traces", headers=headers, timeout=settings.timeout_s
        )
    resource = Resource.create({"service.name": settings.service_name, "service.version": __version__})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider
