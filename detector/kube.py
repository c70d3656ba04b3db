"""Kubernetes failure signals and changes, read directly from what the Collector sends as logs: no baseline needed.

- Events (the k8sobjects receiver, ``events`` in watch mode; core/v1 or events.k8s.io/v1) whose reason is a known
  failure (OOMKilling, BackOff, Unhealthy, FailedScheduling, Evicted, node pressure, image pulls, FailedMount) and
  Pod objects whose containers were OOMKilled or wait in CrashLoopBackOff / ImagePullBackOff, or whose init
  container has run ``pending_s`` without finishing (``k8s:InitContainerStuck``), become anomalies on the pod or
  node, with signal ``k8s:<reason>``, at once.
- Metrics of the Collector's k8s_cluster and kubeletstats receivers that state a failure (memory near its limit, a
  container restart, a Failed or long Pending pod, a node not Ready or under pressure; kube_metrics.py reads them)
  become anomalies the same way, ``k8s:MemoryNearLimit``, ``k8s:ContainerRestarted``, ``k8s:PodFailed``,
  ``k8s:PodPending``, ``k8s:NodeNotReady``, ``k8s:NodePressure``.
- Changes: a ReplicaSet with a new ``deployment.kubernetes.io/revision`` for its Deployment (a rollout), and
  Kubernetes API audit log entries (``audit.k8s.io`` Events read by the Collector's filelog receiver) that create,
  update, patch or delete an object: who changed what, when, with which verb. Incidents link the changes to their
  entities that came shortly before (detector/incidents.py).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rootward.clock import Clock, SystemClock
from rootward.detector.detector import Anomaly
from rootward.detector.kube_metrics import KubeMetrics
from rootward.model import LogBatch, MetricBatch, SpanBatch, k8s_object

#: Event reasons that are failures in themselves, and the signal each becomes.
FAILURE_REASONS = {
    "OOMKilling": "OOMKilled",
    "OOMKilled": "OOMKilled",
    "BackOff": "CrashLoopBackOff",
    "CrashLoopBackOff": "CrashLoopBackOff",
    "Unhealthy": "Unhealthy",
    "FailedScheduling": "FailedScheduling",
    "Evicted": "Evicted",
    "Evicting": "Evicted",
    "EvictionThresholdMet": "NodePressure",
    "NodeHasDiskPressure": "NodePressure",
    "NodeHasMemoryPressure": "NodePressure",
    "NodeHasPIDPressure": "NodePressure",
    "NodeNotReady": "NodeNotReady",
    "ErrImagePull": "ImagePullBackOff",
    "ImagePullBackOff": "ImagePullBackOff",
    "FailedMount": "FailedMount",
    "FailedCreatePodSandBox": "FailedCreatePodSandBox",
}
WAITING_REASONS = {"CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError"}
MUTATING_VERBS = {"create", "update", "patch", "delete", "deletecollection"}
#: Score of a known failure signal (a robust z-score of 10: past any threshold, strong in rankings).
SCORE = 10.0
#: Changes to workloads and the objects they read, as entity ids; others keep ``<resource>:<ns>/<name>``.
_WORKLOAD_RESOURCES = {"deployments", "statefulsets", "daemonsets", "replicasets", "jobs", "cronjobs"}


@dataclass(frozen=True, slots=True)
class Change:
    """Something changed: a rollout (``kind`` rollout, ``detail`` the revision) or an API write (``kind`` the
    verb, ``who`` the user)."""

    time: float
    entity: str
    kind: str
    detail: str = ""
    who: str = ""


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One Kubernetes Event about an object, Normal or Warning (what ``kubectl describe`` lists at its end)."""

    time: float
    entity: str
    type: str
    reason: str
    message: str
    count: int


#: Objects whose recent Events are kept, and how many Events each (the oldest object, and its oldest Event, go first).
MAX_EVENT_OBJECTS = 10_000
EVENTS_PER_OBJECT = 20
#: Characters of an Event's message kept (its text is the cluster's, and the agent's tools show it as data).
MAX_MESSAGE = 300


def _unwrap(body: object) -> Mapping[str, Any] | None:
    """The Kubernetes object of a k8sobjects log body (rootward.model.k8s_object), or of a JSON line (the API
    server's audit log as the filelog receiver reads it)."""
    if isinstance(body, str) and body.startswith("{"):
        try:
            body = json.loads(body)
        except ValueError:
            return None
    found = k8s_object(body)
    return found[1] if found is not None else None


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _meta(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def _target(ref: object) -> str | None:
    if not isinstance(ref, Mapping):
        return None
    kind, name, ns = ref.get("kind"), ref.get("name"), ref.get("namespace") or ""
    if kind == "Pod" and name:
        return f"pod:{ns}/{name}"
    if kind == "Node" and name:
        return f"node:{name}"
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet") and name:
        return f"workload:{ns}/{str(kind).lower()}/{name}"
    return None


class KubeSignals:
    """A Consumer of logs and metrics (traces pass): anomalies go to ``sink(now, anomalies)`` (the incidents),
    changes to ``changed(change)``."""

    def __init__(
        self,
        sink: Callable[[float, list[Anomaly]], None],
        changed: Callable[[Change], None],
        clock: Clock | None = None,
        metrics: KubeMetrics | None = None,
    ) -> None:
        self.sink, self.changed = sink, changed
        self.clock = clock or SystemClock()
        self.metrics = metrics or KubeMetrics()
        self.revisions: dict[str, int] = {}  # deployment -> its highest revision seen
        self.seen = 0  # failure signals read
        self.events: OrderedDict[str, deque[EventRecord]] = OrderedDict()  # object -> its recent Events
        self._events_lock = threading.Lock()  # the agent's tools read the Events on another thread

    def consume_traces(self, batch: SpanBatch) -> None:
        pass

    def consume_metrics(self, batch: MetricBatch) -> None:
        failures = self.metrics.read(batch).failures
        if not failures:
            return
        now = self.clock.now()
        near = self.metrics.near_limit
        anomalies = [
            Anomaly(entity, f"k8s:{signal}", value, near if signal == "MemoryNearLimit" else 0.0, SCORE, now, now)
            for entity, signal, value in failures
        ]
        self.seen += len(anomalies)
        self.sink(now, anomalies)

    def consume_logs(self, batch: LogBatch) -> None:
        now = self.clock.now()
        anomalies: list[Anomaly] = []
        for body in batch.body:
            if not isinstance(body, (Mapping, str)):
                continue
            obj = _unwrap(body)
            if obj is None:
                continue
            kind = obj.get("kind")
            if kind == "Event" and str(obj.get("apiVersion", "")).startswith("audit.k8s.io"):
                self._audit(obj, now)
            elif kind == "Event":
                anomalies += self._event(obj, now)
            elif kind == "Pod":
                anomalies += self._pod(obj, now)
            elif kind == "ReplicaSet":
                self._replicaset(obj, now)
        if anomalies:
            self.seen += len(anomalies)
            self.sink(now, anomalies)

    def events_of(self, entities: Iterable[str]) -> list[EventRecord]:
        """The recent Events of these objects (pods, nodes, workloads), oldest first."""
        with self._events_lock:
            found = [r for e in set(entities) for r in self.events.get(e, ())]
        return sorted(found, key=lambda r: (r.time, r.entity))

    def _event(self, obj: Mapping[str, Any], now: float) -> list[Anomaly]:
        reason = str(obj.get("reason", ""))
        signal = FAILURE_REASONS.get(reason)
        entity = _target(obj.get("involvedObject") or obj.get("regarding"))
        if entity is not None:
            self._remember(obj, entity, reason, now)
        if signal is None or entity is None:
            return []
        count = obj.get("count") or (obj.get("series") or {}).get("count") or 1
        return [Anomaly(entity, f"k8s:{signal}", float(count), 0.0, SCORE, now, now)]

    def _remember(self, obj: Mapping[str, Any], entity: str, reason: str, now: float) -> None:
        count = obj.get("count") or _mapping(obj.get("series")).get("count") or 1
        record = EventRecord(
            _event_time(obj, now),
            entity,
            str(obj.get("type", ""))[:20],
            reason[:100],
            str(obj.get("message") or obj.get("note") or "")[:MAX_MESSAGE],
            int(count) if isinstance(count, int) else 1,
        )
        with self._events_lock:
            kept = self.events.pop(entity, None) or deque(maxlen=EVENTS_PER_OBJECT)
            kept.append(record)
            self.events[entity] = kept  # newest object last
            while len(self.events) > MAX_EVENT_OBJECTS:
                self.events.popitem(last=False)

    def _pod(self, obj: Mapping[str, Any], now: float) -> list[Anomaly]:
        ns, name = _meta(obj)
        status = obj.get("status")
        if not name or not isinstance(status, Mapping):
            return []
        found: set[str] = set()
        for statuses in (status.get("containerStatuses"), status.get("initContainerStatuses")):
            for c in statuses if isinstance(statuses, (list, tuple)) else []:
                if not isinstance(c, Mapping):
                    continue
                last = (c.get("lastState") or {}).get("terminated") or {}
                if isinstance(last, Mapping) and last.get("reason") == "OOMKilled":
                    found.add("OOMKilled")
                waiting = (c.get("state") or {}).get("waiting") or {}
                if isinstance(waiting, Mapping) and waiting.get("reason") in WAITING_REASONS:
                    reason = str(waiting["reason"])
                    found.add("ImagePullBackOff" if reason == "ErrImagePull" else reason)
        if status.get("phase") == "Pending" and self._init_stuck(status.get("initContainerStatuses"), now):
            found.add("InitContainerStuck")
        return [Anomaly(f"pod:{ns}/{name}", f"k8s:{s}", 1.0, 0.0, SCORE, now, now) for s in sorted(found)]

    def _init_stuck(self, statuses: object, now: float) -> bool:
        """An init container of a Pending pod running for ``pending_s`` or longer (a migration that hangs, a
        dependency it waits for that never comes): the pod never starts, and no event says so. Seen when the pod
        object comes again (the cluster Collector pulls every object every 10 minutes)."""
        for c in statuses if isinstance(statuses, (list, tuple)) else []:
            running = _mapping(_mapping(_mapping(c).get("state")).get("running"))
            started = running.get("startedAt")
            if isinstance(started, str):
                try:
                    at = datetime.fromisoformat(started)
                except ValueError:
                    continue
                if at.tzinfo is not None and now - at.timestamp() >= self.metrics.pending_s:
                    return True
        return False

    def _replicaset(self, obj: Mapping[str, Any], now: float) -> None:
        ns, _ = _meta(obj)
        meta = _mapping(obj.get("metadata"))
        annotations = _mapping(meta.get("annotations"))
        owners = meta.get("ownerReferences")
        owners = owners if isinstance(owners, (list, tuple)) else []
        deployment = next(
            (o.get("name") for o in owners if isinstance(o, Mapping) and o.get("kind") == "Deployment"), None
        )
        try:
            revision = int(annotations.get("deployment.kubernetes.io/revision", ""))
        except ValueError:
            return
        if not deployment:
            return
        key = f"workload:{ns}/deployment/{deployment}"
        previous = self.revisions.get(key)
        self.revisions[key] = max(revision, previous or 0)
        if previous is not None and revision > previous:
            self.changed(Change(now, key, "rollout", f"revision {revision}"))

    def _audit(self, obj: Mapping[str, Any], now: float) -> None:
        verb = str(obj.get("verb", ""))
        ref = obj.get("objectRef")
        if (
            verb not in MUTATING_VERBS
            or not isinstance(ref, Mapping)
            or obj.get("stage") not in (None, "ResponseComplete")
        ):
            return
        resource, ns, name = str(ref.get("resource", "")), str(ref.get("namespace") or ""), str(ref.get("name") or "")
        if not resource or not name:
            return
        if resource in _WORKLOAD_RESOURCES:
            entity = f"workload:{ns}/{resource.removesuffix('s')}/{name}"
        elif resource == "pods":
            entity = f"pod:{ns}/{name}"
        elif resource == "nodes":
            entity = f"node:{name}"
        else:
            entity = f"{resource.removesuffix('s')}:{ns}/{name}"
        user = obj.get("user")
        who = str(user.get("username", "")) if isinstance(user, Mapping) else ""
        self.changed(Change(_entry_time(obj, now), entity, verb, str(ref.get("subresource") or ""), who))


def _entry_time(obj: Mapping[str, Any], now: float) -> float:
    """When the API server completed an audited request (``stageTimestamp``, else ``requestReceivedTimestamp``):
    a log pipeline's delay, or a replayed file, must not move the change. ``now`` when neither parses, or for a time
    ahead of ``now`` (a skewed clock must not put a change after the incident it would explain)."""
    return _stamp(obj, ("stageTimestamp", "requestReceivedTimestamp"), now)


def _event_time(obj: Mapping[str, Any], now: float) -> float:
    """When an Event last happened (``lastTimestamp``, ``eventTime``, ``series.lastObservedTime``, its creation)."""
    series = _mapping(obj.get("series"))
    meta = _mapping(obj.get("metadata"))
    merged = {**obj, "lastObservedTime": series.get("lastObservedTime"), "created": meta.get("creationTimestamp")}
    return _stamp(merged, ("lastTimestamp", "lastObservedTime", "eventTime", "created"), now)


def _stamp(obj: Mapping[str, Any], keys: tuple[str, ...], now: float) -> float:
    """The first of ``keys`` that is an RFC 3339 time with a zone, at most ``now``; else ``now``."""
    for key in keys:
        raw = obj.get(key)
        if isinstance(raw, str):
            try:
                at = datetime.fromisoformat(raw)
            except ValueError:
                continue
            if at.tzinfo is not None:
                return min(at.timestamp(), now)
    return now
