"""Gateway mode's anomalies: each replica hands what its detectors find to the aggregator, which opens the
incidents, alerts, diagnoses and acts on them (../shared/DESIGN.md, "Scaling out": the Lease holder "keeps the
cluster-wide graph, detects, diagnoses and acts").

Why anomalies and not series: a replica judges its own share of the traces (the gateway sends each trace to one
replica) and the resource series of the pods routed to it; what the aggregator lacked was the findings, not the
numbers. Sending the anomalies (a few a window, against thousands of series) makes the aggregator's incidents hold
what every replica saw, so one fault is one incident and one Slack message however many replicas saw it, and the
replica that acts sees the evidence from all of them. The series windows stay where they were judged (the API's
and the agent's series are the aggregator's own).

On the wire: OTLP logs to the aggregator's receiver, one record per anomaly, its fields as attributes, under a
resource with ``rootward.replica`` (the sender) and ``rootward.forwarded=anomalies``. The body is a line for people
reading a Collector's debug output. The records name no service, pod or node, so no other stage of the aggregator
counts or mines them.

What arrives is telemetry, untrusted like the rest: fields are checked (text length, finite numbers, times in
order), a bad record is refused alone and counted, and a record claiming to come from the aggregator's own name is
refused (a replica misconfigured to export to itself). Only an App in gateway mode listens for them.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from rootward.clock import Clock
from rootward.detector.detector import Anomaly
from rootward.model import AttrValue, LogBatch, MetricBatch, SpanBatch

KIND = "rootward.forwarded"
REPLICA = "rootward.replica"
_PREFIX = "rootward.anomaly."
_NUMBERS = ("value", "expected", "score", "start", "end")
#: Longest entity id, signal or service name taken (an entity id of the graph is far shorter).
MAX_TEXT = 1024
#: Anomalies per request: ~0.3 KiB each.
PER_REQUEST = 1000


def anomalies_request(
    anomalies: Sequence[Anomaly], replica: str, service_of: Mapping[str, str] | None = None
) -> ExportLogsServiceRequest:
    """The OTLP logs request that carries ``anomalies`` from ``replica``; a pod's service goes along (the
    aggregator's reasoner reads a pod's evidence as its service's)."""
    request = ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add()
    for key, text in ((REPLICA, replica), (KIND, "anomalies")):
        resource_logs.resource.attributes.add(key=key, value=AnyValue(string_value=text))
    scope_logs = resource_logs.scope_logs.add()
    scope_logs.scope.name = "rootward.forwarded"
    for a in anomalies:
        record = scope_logs.log_records.add(time_unix_nano=max(0, int(a.end * 1e9)))
        record.body.string_value = f"{a.entity} {a.signal}: {a.value:g} against {a.expected:g} (z {a.score:.1f})"
        record.attributes.add(key=_PREFIX + "entity", value=AnyValue(string_value=a.entity))
        record.attributes.add(key=_PREFIX + "signal", value=AnyValue(string_value=a.signal))
        for name in _NUMBERS:
            record.attributes.add(key=_PREFIX + name, value=AnyValue(double_value=float(getattr(a, name))))
        service = (service_of or {}).get(a.entity)
        if service:
            record.attributes.add(key=_PREFIX + "service", value=AnyValue(string_value=service))
    return request


def _text(attrs: Mapping[str, AttrValue], name: str) -> str | None:
    value = attrs.get(_PREFIX + name)
    return value if isinstance(value, str) and 0 < len(value) <= MAX_TEXT else None


def parse(attrs: Mapping[str, AttrValue]) -> tuple[Anomaly, str | None] | None:
    """A record's anomaly and its pod's service, or None when a field is missing or out of bounds."""
    entity, signal = _text(attrs, "entity"), _text(attrs, "signal")
    numbers = [attrs.get(_PREFIX + n) for n in _NUMBERS]
    if entity is None or signal is None:
        return None
    if not all(isinstance(x, float | int) and not isinstance(x, bool) and math.isfinite(x) for x in numbers):
        return None
    value, expected, score, start, end = (float(x) for x in numbers)  # type: ignore[arg-type]
    if start > end:
        return None
    return Anomaly(entity, signal, value, expected, score, start, end), _text(attrs, "service")


class ReplicaAnomalies:
    """The aggregator's consumer of forwarded anomalies: each batch's valid ones go to ``sink`` (the incidents) at
    the clock's time, their pods' services to ``learn``; ``counted`` hears (outcome, n) for accepted and refused."""

    def __init__(
        self,
        sink: Callable[[float, list[Anomaly]], None],
        own: str,
        clock: Clock,
        learn: Callable[[str, str], None] = lambda pod, service: None,
        counted: Callable[[str, int], None] = lambda outcome, n: None,
    ) -> None:
        self.sink, self.own, self.clock, self.learn, self.counted = sink, own, clock, learn, counted
        self.received = Counter[str]()

    def consume_traces(self, batch: SpanBatch) -> None:
        pass

    def consume_metrics(self, batch: MetricBatch) -> None:
        pass

    def consume_logs(self, batch: LogBatch) -> None:
        marked = [i for i, r in enumerate(batch.resources) if r.get(KIND) == "anomalies"]
        if not marked:
            return
        found: list[Anomaly] = []
        refused = 0
        for row in np.flatnonzero(np.isin(batch.resource, marked)).tolist():
            replica = batch.resources[int(batch.resource[row])].get(REPLICA)
            parsed = parse(batch.attributes[row]) if replica and replica != self.own else None
            if parsed is None:
                refused += 1
                continue
            anomaly, service = parsed
            found.append(anomaly)
            if service is not None and anomaly.entity.startswith("pod:"):
                self.learn(anomaly.entity, service)
        self._count("refused", refused)
        self._count("accepted", len(found))
        if found:
            self.sink(self.clock.now(), found)

    def _count(self, outcome: str, n: int) -> None:
        if n:
            self.received[outcome] += n
            self.counted(outcome, n)
