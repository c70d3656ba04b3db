"""The shared domain model: the columnar batches the receiver hands to later stages, and the Consumer protocol.

Stages meet here and nowhere else: the receiver builds these batches, topology and detector read them, and the
app wires a receiver to its consumers through :class:`Consumer`. Batches are columnar (numpy arrays, one row per
span, data point or log record) so that later stages reduce them with vectorised numpy instead of per-item Python.

Strings that repeat (span names, attribute values) are interned once per batch in ``strings``; a column of string
ids uses -1 for "absent". Resources are interned once per request and referenced by ``resource`` row indices.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

#: Latency histogram bounds of call edges in seconds: the servicegraph connector's defaults, so its Grafana panels
#: apply (the topology counts calls into them; the detector reads each edge's p95 from them).
CALL_LATENCY_BUCKETS_S = (0.002, 0.004, 0.006, 0.008, 0.01, 0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.4, 2.0, 5.0, 10.0, 15.0)

#: A scalar attribute value as decoded from OTLP; arrays and maps become tuples and dicts.
AttrValue = str | bool | int | float | bytes | tuple["AttrValue", ...] | dict[str, "AttrValue"] | None

# Span kinds (opentelemetry.proto.trace.v1.Span.SpanKind).
KIND_UNSPECIFIED, KIND_INTERNAL, KIND_SERVER, KIND_CLIENT, KIND_PRODUCER, KIND_CONSUMER = range(6)
# Status codes (opentelemetry.proto.trace.v1.Status.StatusCode).
STATUS_UNSET, STATUS_OK, STATUS_ERROR = range(3)

#: The span attributes the pipeline reads, by column name, with the attribute keys that fill each column in order of
#: preference (current semantic conventions first, then the older names some instrumentations still send).
SPAN_STRING_ATTRIBUTES: Mapping[str, tuple[str, ...]] = {
    "peer.service": ("peer.service",),
    "server.address": ("server.address", "net.peer.name", "http.host"),
    "peer.ip": ("network.peer.address", "net.peer.ip", "net.sock.peer.addr"),
    "db.system": ("db.system", "db.system.name"),
    "messaging.system": ("messaging.system",),
    "messaging.destination": ("messaging.destination.name", "messaging.destination"),
}
SPAN_INT_ATTRIBUTES: Mapping[str, tuple[str, ...]] = {
    "server.port": ("server.port", "net.peer.port"),
    "http.status_code": ("http.response.status_code", "http.status_code"),
    "rpc.grpc.status_code": ("rpc.grpc.status_code",),
}
#: Longest name in an entity id (Kubernetes' own names stop at 253, a DNS name too); longer ones are cut.
MAX_NAME = 253
#: Value of an integer attribute column where the attribute is absent.
INT_ABSENT = np.iinfo(np.int64).min


@dataclass(frozen=True, slots=True)
class Resource:
    """A telemetry source: the attributes of one OTLP Resource (service, pod, node, ...)."""

    attributes: Mapping[str, AttrValue]

    def get(self, key: str, default: str = "") -> str:
        """The attribute as a string, or ``default`` when it is absent."""
        value = self.attributes.get(key)
        return default if value is None else str(value)

    def name(self, key: str, default: str = "") -> str:
        """An attribute that names an entity (a service, pod, node, workload), at most :data:`MAX_NAME` characters:
        an id is kept in the graph, the detector's series and the API's answers, so a sender's 64 KiB
        ``service.name`` must not become a 64 KiB id (tens of thousands of them, gigabytes)."""
        return self.get(key, default)[:MAX_NAME]

    @property
    def service_name(self) -> str:
        return self.get("service.name", "unknown_service")

    @property
    def service_id(self) -> str | None:
        """The service's entity id (``service:<service.namespace>/<service.name>``, as topology/entities.py has
        it), or None without service.name."""
        if self.attributes.get("service.name") is None:
            return None
        return f"service:{self.name('service.namespace')}/{self.name('service.name')}"

    @property
    def pod_id(self) -> str | None:
        """The pod's entity id (``pod:<k8s.namespace.name>/<k8s.pod.name>``), or None without k8s.pod.name."""
        name = self.name("k8s.pod.name")
        return f"pod:{self.name('k8s.namespace.name')}/{name}" if name else None


def k8s_object(body: object) -> tuple[str, Mapping[str, Any]] | None:
    """(event type, object) of a log body that is a Kubernetes object as the Collector's k8sobjects receiver sends it:
    wrapped in ``{type, object}`` (watch mode) or the object itself (pull mode: ``ADDED``); None when it is not a
    mapping with a string ``kind``. The topology and the detector both read these."""
    if not isinstance(body, Mapping):
        return None
    obj, event = body, "ADDED"
    if isinstance(body.get("object"), Mapping) and isinstance(body.get("type"), str):
        obj, event = body["object"], body["type"]
    return (event.upper(), obj) if isinstance(obj.get("kind"), str) else None


def entity_of(resource: Resource, prefer_pod: bool = False) -> str | None:
    """The entity a resource's telemetry is about: its service (or, with ``prefer_pod``, its pod: resource metrics
    belong to one instance), else its pod, else its node or host; None when it names none of them."""
    first, second = (resource.pod_id, resource.service_id) if prefer_pod else (resource.service_id, resource.pod_id)
    if first or second:
        return first or second
    node = resource.name("k8s.node.name") or resource.name("host.name")
    return f"node:{node}" if node else None


@dataclass(frozen=True, slots=True)
class SpanBatch:
    """Spans of one request, one row each.

    Columns: ``trace_id`` (uint64[n, 2], high and low halves), ``span_id`` and ``parent_id`` (uint64[n]; 0 = no
    parent), ``kind`` and ``status`` (int8[n], OTLP enum values; -1 for a value outside 0..127, never an alias),
    ``start``/``end`` (int64[n], Unix ns), ``name`` (int32[n], into ``strings``), ``resource`` (int32[n], into
    ``resources``), and the attribute columns of :data:`SPAN_STRING_ATTRIBUTES` (int32 string ids, -1 absent) and
    :data:`SPAN_INT_ATTRIBUTES` (int64, :data:`INT_ABSENT` absent).
    """

    trace_id: np.ndarray
    span_id: np.ndarray
    parent_id: np.ndarray
    kind: np.ndarray
    status: np.ndarray
    start: np.ndarray
    end: np.ndarray
    name: np.ndarray
    resource: np.ndarray
    resources: Sequence[Resource]
    strings: Sequence[str]
    str_attrs: Mapping[str, np.ndarray]
    int_attrs: Mapping[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.span_id)

    def string(self, column: str, row: int) -> str | None:
        """The string attribute ``column`` of span ``row``, or None."""
        i = int(self.str_attrs[column][row])
        return None if i < 0 else self.strings[i]


@dataclass(frozen=True, slots=True)
class MetricBatch:
    """Metric data points of one request, one row each.

    ``metric`` indexes ``metrics`` (name, unit, type, temporality, monotonic); ``value`` is the gauge/sum value or
    a histogram's sum; ``count`` the histogram/summary count (0 otherwise); ``attributes`` the data point's
    attributes; ``buckets`` holds, per histogram row, (explicit bounds, bucket counts) and, per exponential
    histogram row, (scale, zero count, positive offset and counts, negative offset and counts); per summary row
    its quantiles.
    """

    metric: np.ndarray
    resource: np.ndarray
    start: np.ndarray
    time: np.ndarray
    value: np.ndarray
    count: np.ndarray
    metrics: Sequence[MetricInfo]
    resources: Sequence[Resource]
    attributes: Sequence[Mapping[str, AttrValue]]
    buckets: Mapping[int, tuple[object, ...]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.metric)


@dataclass(frozen=True, slots=True)
class MetricInfo:
    """One metric stream's description: name, unit, type (gauge, sum, histogram, exponential_histogram,
    summary), aggregation temporality (0 unspecified, 1 delta, 2 cumulative) and monotonicity."""

    name: str
    unit: str
    type: str
    temporality: int = 0
    monotonic: bool = False


@dataclass(frozen=True, slots=True)
class LogBatch:
    """Log records of one request, one row each.

    ``severity`` is the OTLP severity number (0 unspecified, -1 outside 0..127); ``trace_id`` (uint64[n, 2]) and
    ``span_id`` are 0 when absent; ``body`` is the decoded body (a string, or a dict for structured bodies such as
    the Kubernetes objects and events the Collector's k8sobjects receiver sends); ``severity_text`` interns into
    ``strings``.
    """

    time: np.ndarray
    severity: np.ndarray
    severity_text: np.ndarray
    trace_id: np.ndarray
    span_id: np.ndarray
    resource: np.ndarray
    resources: Sequence[Resource]
    strings: Sequence[str]
    body: Sequence[AttrValue]
    attributes: Sequence[Mapping[str, AttrValue]]

    def __len__(self) -> int:
        return len(self.time)


class Consumer(Protocol):
    """What a stage offers to the one before it. Called from the pipeline thread, one batch at a time."""

    def consume_traces(self, batch: SpanBatch) -> None: ...

    def consume_metrics(self, batch: MetricBatch) -> None: ...

    def consume_logs(self, batch: LogBatch) -> None: ...
