"""Gateway mode's anomalies: each replica hands what its detectors find to the aggregator, which opens the
incidents, alerts, diagnoses and acts on them (../shared/DESIGN.md, "Scaling out": the Lease holder "keeps the
cluster-wide graph, detects, diagnoses and acts").

Why anomalies and not series: a replica judges its own share of the traces (the gateway sends each trace to one
replica) and the resource series of the pods routed to it; what the aggregator lacked was the findings, not the
numbers. Sending the anomalies (a few a window, against thousands of series) makes the aggregator's incidents hold
what every replica saw, so one fault is one incident and one Slack message however many replicas saw it, and the
replica that acts sees the evidence from all of them. Each anomaly carries its series' recent values (at most
``MAX_WINDOW``), so the aggregator's API and agent show the series of what another replica found.

On the wire: OTLP logs to the aggregator's receiver, one record per anomaly, its fields as attributes, under a
resource with ``rootward.replica`` (the sender) and ``rootward.forwarded=anomalies``. The body is a line for people
reading a Collector's debug output. The records name no service, pod or node, so no other stage of the aggregator
counts or mines them.

What arrives is telemetry, untrusted like the rest: fields are checked (an entity id's form, text length, finite
numbers, times in order), a bad record is refused alone and counted, and so is a record claiming to come from the
aggregator's own name (a replica misconfigured to export to itself), one that is older than ``max_age_s`` (a
backlog after an outage is no news), one past ``PER_REQUEST`` in a request or past ``MAX_PER_MINUTE`` taken in a
minute, and every record while ``accepting`` says no (a sidecar that lost the Lease: the others reconnect to the new
holder). A replica's log template ids are its own: ``log_template:17`` arrives as ``log_template:<replica>/17``, so
the aggregator never reads them as its own templates. A pod's service is learned only for a pod not known yet.
Only an App in gateway mode, or following the Lease, listens for them.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import NamedTuple

import numpy as np
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from rootward.clock import Clock
from rootward.detector.detector import Anomaly
from rootward.model import AttrValue, LogBatch, MetricBatch, SpanBatch
from rootward.topology import Entity

KIND = "rootward.forwarded"
REPLICA = "rootward.replica"
_PREFIX = "rootward.anomaly."
_NUMBERS = ("value", "expected", "score", "start", "end")
#: Longest entity id, signal or service name taken (an entity id of the graph is far shorter).
MAX_TEXT = 1024
#: Anomalies per request: ~0.3 KiB each. More in one request are refused.
PER_REQUEST = 1000
#: Call edges sent with a batch of anomalies, at most (those into and out of the anomalous entities).
MAX_CALLS = 500
#: The longest template text sent with a log_template / log_missing anomaly.
MAX_TEMPLATE = 500
#: Recent values sent with an anomaly, at most (the agent's window is 30 by default).
MAX_WINDOW = 120
#: Forwarded anomalies taken in a minute, from all replicas together (a busy outage's few hundred a window fit).
MAX_PER_MINUTE = 20_000
_ENTITY = re.compile(r"[a-z][a-z_]*:\S[^\n]*")
_KIND = re.compile(r"[a-z][a-z_]{0,31}")
_POD = re.compile(r"pod:[^/\s]+/\S+")
_SERVICE = re.compile(r"service:[^/\s]*/\S+")
#: Signals that name a log template by its id, a replica's own (qualified by its name when forwarded).
TEMPLATE_SIGNALS = ("log_template:", "log_missing:")


def anomalies_request(
    anomalies: Sequence[Anomaly],
    replica: str,
    service_of: Mapping[str, str] | None = None,
    windows: Mapping[tuple[str, str], Sequence[float]] | None = None,
    calls: Sequence[tuple[Entity, Entity]] = (),
    texts: Mapping[str, str] | None = None,
) -> ExportLogsServiceRequest:
    """The OTLP logs request that carries ``anomalies`` from ``replica``; a pod's service goes along (the
    aggregator's reasoner reads a pod's evidence as its service's), and each series' recent values from
    ``windows``, and the text of the log template a signal names from ``texts`` (signal -> text); ``calls``
    (caller, callee) around them go as records of their own (``rootward.forwarded=calls``)."""
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
        named = (texts or {}).get(a.signal)
        if named:
            record.attributes.add(key=_PREFIX + "template", value=AnyValue(string_value=named[:MAX_TEMPLATE]))
        recent = (windows or {}).get((a.entity, a.signal))
        if recent:
            values = record.attributes.add(key=_PREFIX + "recent").value.array_value.values
            values.extend(AnyValue(double_value=float(v)) for v in recent[-MAX_WINDOW:])
    if calls:
        edges = request.resource_logs.add()
        for key, text in ((REPLICA, replica), (KIND, "calls")):
            edges.resource.attributes.add(key=key, value=AnyValue(string_value=text))
        records = edges.scope_logs.add()
        records.scope.name = "rootward.forwarded"
        for caller, callee in calls[:MAX_CALLS]:
            record = records.log_records.add()
            record.body.string_value = f"{caller.id} calls {callee.id}"
            for end, entity in (("caller", caller), ("callee", callee)):
                for field in ("id", "kind", "name", "namespace"):
                    value = AnyValue(string_value=getattr(entity, field))
                    record.attributes.add(key=f"rootward.call.{end}.{field}", value=value)
                record.attributes.add(key=f"rootward.call.{end}.virtual", value=AnyValue(bool_value=entity.virtual))
    return request


def _end(attrs: Mapping[str, AttrValue], end: str) -> Entity | None:
    """One end of a forwarded call edge, or None when a field is missing or out of bounds."""
    fields: list[str] = []
    for f in ("id", "kind", "name", "namespace"):
        value = attrs.get(f"rootward.call.{end}.{f}")
        if not isinstance(value, str) or len(value) > MAX_TEXT:
            return None
        fields.append(value)
    virtual = attrs.get(f"rootward.call.{end}.virtual")
    if not isinstance(virtual, bool):
        return None
    entity, kind, name, namespace = fields
    well_formed = _ENTITY.fullmatch(entity) and _KIND.fullmatch(kind)
    if not (well_formed and entity.startswith(kind + ":") and name and entity.endswith(name)):
        return None
    return Entity(entity, kind, name, namespace, virtual)


def _text(attrs: Mapping[str, AttrValue], name: str) -> str | None:
    value = attrs.get(_PREFIX + name)
    return value if isinstance(value, str) and 0 < len(value) <= MAX_TEXT else None


class Forwarded(NamedTuple):
    anomaly: Anomaly
    service: str | None  # the pod's service, when the anomaly is a pod's
    recent: tuple[float, ...]  # the series' recent values, oldest first
    template: str | None = None  # the text of the log template its signal names


def _finite(value: AttrValue) -> bool:
    """A number (not a bool) that is finite."""
    return isinstance(value, float | int) and not isinstance(value, bool) and math.isfinite(value)


def _window(value: AttrValue) -> tuple[float, ...]:
    """Recent values: finite numbers, at most MAX_WINDOW; anything else gives none (the anomaly still counts)."""
    if not isinstance(value, tuple) or len(value) > MAX_WINDOW or not all(map(_finite, value)):
        return ()
    return tuple(float(v) for v in value)  # type: ignore[arg-type]


def parse(attrs: Mapping[str, AttrValue]) -> Forwarded | None:
    """A record's anomaly, its pod's service and its series' recent values, or None when a field of the anomaly is
    missing or out of bounds."""
    entity, signal = _text(attrs, "entity"), _text(attrs, "signal")
    numbers = [attrs.get(_PREFIX + n) for n in _NUMBERS]
    if entity is None or signal is None or not _ENTITY.fullmatch(entity):
        return None
    if not all(map(_finite, numbers)):
        return None
    value, expected, score, start, end = (float(x) for x in numbers)  # type: ignore[arg-type]
    if start > end:
        return None
    service = _text(attrs, "service")
    if service is not None and not (_POD.fullmatch(entity) and _SERVICE.fullmatch(service)):
        service = None
    anomaly = Anomaly(entity, signal, value, expected, score, start, end)
    text = attrs.get(_PREFIX + "template")
    template = (
        text
        if isinstance(text, str) and 0 < len(text) <= MAX_TEMPLATE and signal.startswith(TEMPLATE_SIGNALS)
        else None
    )
    return Forwarded(anomaly, service, _window(attrs.get(_PREFIX + "recent")), template)


def _foreign(anomaly: Anomaly, replica: str) -> Anomaly:
    """The anomaly as found by ``replica``: its source, and a template id of the replica's own qualified by its
    name."""
    signal = anomaly.signal
    for prefix in TEMPLATE_SIGNALS:
        if signal.startswith(prefix):
            signal = f"{prefix}{replica}/{signal[len(prefix) :]}"
    return replace(anomaly, signal=signal, source=replica)


class ReplicaAnomalies:
    """The aggregator's consumer of forwarded anomalies: each batch's valid ones go to ``sink`` (the incidents) at
    the clock's time, a pod's service to ``learn`` (which keeps what this Rootward knows); ``counted`` hears
    (outcome, n): accepted, refused (malformed, or from the aggregator's own name), stale, over_limit,
    not_leader."""

    def __init__(
        self,
        sink: Callable[[float, list[Anomaly]], None],
        own: str,
        clock: Clock,
        learn: Callable[[str, str], None] = lambda pod, service: None,
        counted: Callable[[str, int], None] = lambda outcome, n: None,
        accepting: Callable[[], bool] = lambda: True,
        max_age_s: float = 120.0,
        remember: Callable[[str, str, tuple[float, ...]], None] = lambda entity, signal, values: None,
        remember_text: Callable[[str, str], None] = lambda key, text: None,
        learn_calls: Callable[[list[tuple[Entity, Entity]]], object] = lambda edges: None,
    ) -> None:
        self.sink, self.own, self.clock, self.learn, self.counted = sink, own, clock, learn, counted
        self.accepting, self.max_age_s, self.remember, self.learn_calls = accepting, max_age_s, remember, learn_calls
        self.remember_text = remember_text
        self.received = Counter[str]()
        self._minute, self._taken = -1, 0

    def consume_traces(self, batch: SpanBatch) -> None:
        pass

    def consume_metrics(self, batch: MetricBatch) -> None:
        pass

    def _rows(self, batch: LogBatch, kind: str) -> list[int]:
        """The batch's records of ``kind`` (anomalies, calls); none while not ``accepting`` (counted not_leader)."""
        marked = [i for i, r in enumerate(batch.resources) if r.get(KIND) == kind]
        rows: list[int] = np.flatnonzero(np.isin(batch.resource, marked)).tolist() if marked else []
        if rows and not self.accepting():
            self._count("not_leader", len(rows))
            return []
        return rows

    def _replica(self, batch: LogBatch, row: int) -> str | None:
        """The name the record's sender gives, when it is one a replica may have (not this Rootward's own)."""
        replica = batch.resources[int(batch.resource[row])].get(REPLICA)
        return replica if 0 < len(replica) <= MAX_TEXT and replica != self.own else None

    def consume_logs(self, batch: LogBatch) -> None:
        self._calls(batch)
        rows = self._rows(batch, "anomalies")
        if not rows:
            return
        now = self.clock.now()
        minute = int(now // 60)
        if minute != self._minute:
            self._minute, self._taken = minute, 0
        room = min(PER_REQUEST, MAX_PER_MINUTE - self._taken)
        self._count("over_limit", max(0, len(rows) - room))
        found: list[Anomaly] = []
        refused = stale = 0
        for row in rows[: max(0, room)]:
            replica = self._replica(batch, row)
            parsed = parse(batch.attributes[row]) if replica is not None else None
            if replica is None or parsed is None:
                refused += 1
                continue
            anomaly, service, recent, template = parsed
            if anomaly.end < now - self.max_age_s:
                stale += 1
                continue
            anomaly = _foreign(anomaly, replica)
            found.append(anomaly)
            if service is not None:
                self.learn(anomaly.entity, service)
            if recent:
                self.remember(anomaly.entity, anomaly.signal, recent)
            if template is not None:  # under the qualified id: log_template:<replica>/<id> -> "<replica>/<id>"
                self.remember_text(anomaly.signal.partition(":")[2], template)
        self._taken += len(found)  # what reaches the incidents: garbage is cheap, and must not crowd out the rest
        self._count("refused", refused)
        self._count("stale", stale)
        self._count("accepted", len(found))
        if found:
            self.sink(now, found)

    def _calls(self, batch: LogBatch) -> None:
        """Call edges a replica saw around what it found: learned as structure (``learn_calls``), at most
        MAX_CALLS a request, both ends well-formed entity ids; counted as calls_accepted / calls_refused."""
        rows = self._rows(batch, "calls")
        if not rows:
            return
        edges: list[tuple[Entity, Entity]] = []
        for row in rows[:MAX_CALLS]:
            caller, callee = _end(batch.attributes[row], "caller"), _end(batch.attributes[row], "callee")
            if caller is not None and callee is not None and self._replica(batch, row) is not None:
                edges.append((caller, callee))
        self._count("calls_refused", len(rows) - len(edges))
        self._count("calls_accepted", len(edges))
        if edges:
            self.learn_calls(edges)

    def _count(self, outcome: str, n: int) -> None:
        if n:
            self.received[outcome] += n
            self.counted(outcome, n)
