"""Decode an OTLP ExportLogsServiceRequest into a columnar :class:`LogBatch`.

Logs carry application lines and, from the Collector's k8sobjects receiver, Kubernetes objects and events as
structured bodies; bodies are converted to Python values (a dict for a kvlist) once here so later stages read them
without touching protobuf. A record whose attributes or body break a limit is refused alone (partial success).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from rootward.model import AttrValue, LogBatch, Resource
from rootward.receiver._common import Decoded, UpbDecoder, any_value, as_int64, attributes, intern, summarize, too_many
from rootward.receiver.errors import LimitExceeded


def _id(raw: bytes, size: int) -> tuple[int, int]:
    """(high, low) halves of a trace id, or (0, span id) for a span id; zeros when absent or malformed."""
    if len(raw) != size:
        return 0, 0
    if size == 16:
        return int.from_bytes(raw[:8], "big"), int.from_bytes(raw[8:], "big")
    return 0, int.from_bytes(raw, "big")


class LogDecoder(UpbDecoder[ExportLogsServiceRequest, LogBatch]):
    """Decodes log requests; one per receiver (it holds the resource cache)."""

    request_type = ExportLogsServiceRequest
    what = "logs request"

    def decode_message(self, req: ExportLogsServiceRequest) -> Decoded[LogBatch]:
        """Decode an already parsed request (the OTLP/JSON path)."""
        resources: list[Resource] = []
        strings: list[str] = []
        table: dict[str, int] = {}
        times: list[int] = []
        severity: list[int] = []
        severity_text: list[str] = []
        trace_ids: list[tuple[int, int]] = []
        span_ids: list[int] = []
        resource_rows: list[int] = []
        bodies: list[AttrValue] = []
        attrs: list[dict[str, AttrValue]] = []
        rejected: Counter[str] = Counter()
        records = sum(len(sl.log_records) for rl in req.resource_logs for sl in rl.scope_logs)
        if max(records, len(req.resource_logs)) > self.limits.max_items:
            raise too_many(records, "log records", self.limits)
        for rl in req.resource_logs:
            r = len(resources)
            resources.append(self.resources.get(rl.resource.SerializeToString()))
            for sl in rl.scope_logs:
                for rec in sl.log_records:
                    try:
                        record_attrs = attributes(rec.attributes, self.limits)
                        body = any_value(rec.body, self.limits)
                    except LimitExceeded as e:
                        rejected[str(e)] += 1
                        continue
                    attrs.append(record_attrs)
                    bodies.append(body)
                    times.append(rec.time_unix_nano or rec.observed_time_unix_nano)
                    severity.append(rec.severity_number if 0 <= rec.severity_number < 128 else -1)
                    severity_text.append(rec.severity_text)
                    trace_ids.append(_id(rec.trace_id, 16))
                    span_ids.append(_id(rec.span_id, 8)[1])
                    resource_rows.append(r)
        batch = LogBatch(
            time=as_int64(times),
            severity=np.array(severity, np.int8),
            severity_text=intern(severity_text, strings, table),
            trace_id=np.array(trace_ids, np.uint64).reshape(-1, 2),
            span_id=np.array(span_ids, np.uint64),
            resource=np.array(resource_rows, np.int32),
            resources=resources,
            strings=strings,
            body=bodies,
            attributes=attrs,
        )
        return Decoded(batch, sum(rejected.values()), summarize(rejected, "log records"))
