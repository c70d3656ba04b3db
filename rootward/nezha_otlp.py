"""The Nezha data set's rows as OTLP export requests, with the resource attributes the Collector's k8sattributes
processor would set (service, pod, namespace, node, workload): one ResourceSpans / ResourceLogs / ResourceMetrics
per pod. The rows come from rootward/nezha.py, the order and chunking from rootward/nezha_stream.py."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, TypeVar

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from rootward.nezha import Log, Span, service_name, workload

#: The instrumentation scope of every converted item.
SCOPE = "rootward.nezha"

T = TypeVar("T")


def _kv(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


class Resources:
    """The Resource of each pod (and pod + container, for logs), built once: what the k8sattributes processor
    would set."""

    def __init__(self, namespace: str, nodes: dict[str, str] | None = None) -> None:
        self.namespace = namespace
        self.nodes = nodes or {}
        self._cache: dict[tuple[str, str], Resource] = {}

    def get(self, pod: str, container: str = "") -> Resource:
        key = (pod, container)
        found = self._cache.get(key)
        if found is None:
            attrs = [
                _kv("service.name", service_name(pod)),
                _kv("k8s.pod.name", pod),
                _kv("k8s.namespace.name", self.namespace),
            ]
            if owner := workload(pod):
                attrs.append(_kv(*owner))
            if node := self.nodes.get(pod):
                attrs.append(_kv("k8s.node.name", node))
            if container:
                attrs.append(_kv("k8s.container.name", container))
            found = self._cache[key] = Resource(attributes=attrs)
        return found


def _by_pod(items: Iterable[T], pod: Callable[[T], str]) -> dict[str, list[T]]:
    groups: dict[str, list[T]] = {}
    for item in items:
        groups.setdefault(pod(item), []).append(item)
    return groups


def trace_request(spans: Iterable[Span], resources: Resources, kinds: bool = True) -> ExportTraceServiceRequest:
    """One request: a ResourceSpans per pod, the spans with their inferred kinds (all UNSPECIFIED without
    ``kinds``), no status (the data has none)."""
    req = ExportTraceServiceRequest()
    for pod, group in _by_pod(spans, attrgetter("pod")).items():
        rs = req.resource_spans.add()
        rs.resource.CopyFrom(resources.get(pod))
        ss = rs.scope_spans.add()
        ss.scope.name = SCOPE
        add = ss.spans.add
        for s in group:
            add(
                trace_id=s.trace_id,
                span_id=s.span_id,
                parent_span_id=s.parent_id,
                name=s.name,
                kind=s.kind if kinds else 0,
                start_time_unix_nano=s.start,
                end_time_unix_nano=s.end,
            )
    return req


def log_request(logs: Iterable[Log], resources: Resources) -> ExportLogsServiceRequest:
    """One request: a ResourceLogs per pod and container."""
    req = ExportLogsServiceRequest()
    groups: dict[tuple[str, str], list[Log]] = {}
    for log in logs:
        groups.setdefault((log.pod, log.container), []).append(log)
    for (pod, container), group in groups.items():
        rl = req.resource_logs.add()
        rl.resource.CopyFrom(resources.get(pod, container))
        sl = rl.scope_logs.add()
        sl.scope.name = SCOPE
        for g in group:
            record = sl.log_records.add(
                time_unix_nano=g.time,
                observed_time_unix_nano=g.time,
                trace_id=g.trace_id,
                span_id=g.span_id,
                severity_number=g.severity,
                severity_text=g.severity_text,
            )
            record.body.string_value = g.body
            if g.stream:
                record.attributes.append(_kv("log.iostream", g.stream))
    return req


@dataclass(slots=True)
class MetricRow:
    time: int
    pod: str
    points: list[tuple[int, float]]  # (position in columns, value)
    columns: list[tuple[int, str, str]]


def metric_request(rows: Iterable[MetricRow], resources: Resources) -> ExportMetricsServiceRequest:
    """One request: a ResourceMetrics per pod, a gauge per column, a data point per row."""
    req = ExportMetricsServiceRequest()
    for pod, group in _by_pod(rows, attrgetter("pod")).items():
        rm = req.resource_metrics.add()
        rm.resource.CopyFrom(resources.get(pod))
        sm = rm.scope_metrics.add()
        sm.scope.name = SCOPE
        gauges: dict[int, Any] = {}
        for row in group:
            for column, value in row.points:
                gauge = gauges.get(column)
                if gauge is None:
                    _, name, unit = row.columns[column]
                    metric = sm.metrics.add(name=name, unit=unit)
                    gauge = gauges[column] = metric.gauge.data_points
                gauge.add(time_unix_nano=row.time, as_double=value)
    return req
