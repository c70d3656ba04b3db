"""Small builders of OTLP requests for receiver tests (real protobuf messages, no hand-written bytes)."""

from __future__ import annotations

import os

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span


def nested(depth: int) -> AnyValue:
    """An AnyValue of ``depth`` levels: arrays inside arrays around a string."""
    value = AnyValue(string_value="leaf")
    for _ in range(depth - 1):
        value = AnyValue(array_value={"values": [value]})
    return value


def span(name: str = "GET /", attributes: dict[str, AnyValue] | None = None) -> Span:
    return Span(
        trace_id=os.urandom(16),
        span_id=os.urandom(8),
        name=name,
        kind=Span.SPAN_KIND_SERVER,
        start_time_unix_nano=1_700_000_000_000_000_000,
        end_time_unix_nano=1_700_000_000_100_000_000,
        attributes=[KeyValue(key=k, value=v) for k, v in (attributes or {}).items()],
    )


def trace_request(*spans: Span, service: str = "cart") -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.add(key="service.name", value=AnyValue(string_value=service))
    rs.scope_spans.add().spans.extend(spans)
    return req
