"""Log records as one service's OTLP export, decoded: what the miner and the detectors take in."""

from __future__ import annotations

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from rootward.model import LogBatch
from rootward.receiver import LogDecoder


def lines(service: str, *texts: str, severity: int = 17, namespace: str | None = None) -> LogBatch:
    """One record per text from ``service`` (of ``namespace``, if given), at ``severity`` (ERROR by default), each
    in a trace of its own."""
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.add(key="service.name", value=AnyValue(string_value=service))
    if namespace is not None:
        rl.resource.attributes.add(key="service.namespace", value=AnyValue(string_value=namespace))
    for n, text in enumerate(texts):
        rl.scope_logs.add().log_records.add(
            body=AnyValue(string_value=text),
            severity_number=severity,
            trace_id=bytes([n + 1]) * 16,  # type: ignore[arg-type]
        )
    return LogDecoder().decode(req.SerializeToString()).batch
