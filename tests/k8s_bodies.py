"""Kubernetes objects as the Collector's k8sobjects receiver sends them (log records whose body is the object),
through the real log decoder: shared by the topology and detector tests."""

from __future__ import annotations

from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList

from rootward.model import LogBatch
from rootward.receiver import LogDecoder


def any_value(value: Any) -> AnyValue:
    """A Python value (dicts, lists, bools, ints, strings) as an OTLP AnyValue."""
    if isinstance(value, dict):
        return AnyValue(
            kvlist_value=KeyValueList(values=[KeyValue(key=k, value=any_value(v)) for k, v in value.items()])
        )
    if isinstance(value, list):
        return AnyValue(array_value=ArrayValue(values=[any_value(v) for v in value]))
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    return AnyValue(string_value=str(value))


def log_bodies(*bodies: Any) -> LogBatch:
    """One request with a log record per body, decoded."""
    req = ExportLogsServiceRequest()
    records = req.resource_logs.add().scope_logs.add().log_records
    for body in bodies:
        records.add(body=any_value(body))
    return LogDecoder().decode(req.SerializeToString()).batch
