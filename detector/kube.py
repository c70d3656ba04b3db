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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from rootward.clock import Clock, SystemClock
from rootward.detector.detector import Anomaly
from rootward.detector.kube_events import EventHistory
from rootward.detector.kube_metrics import Bounded, KubeMetrics
from rootward.detector.times import stamp
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
#: Resources whose writes are the cluster's housekeeping, not changes: leases, Events, token and access reviews.
_HOUSEKEEPING = {"leases", "events", "tokenreviews", "subjectaccessreviews", "selfsubjectaccessreviews"}
#: Pods whose OOM-killed container is remembered (the oldest forgotten first).
MAX_OOM_PODS = 10_000
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


def _unwrap(body: object) -> tuple[str, Mapping[str, Any]] | None:
    """(watch event type, the Kubernetes object) of a k8sobjects log body (rootward.model.k8s_object), or of a JSON
    line (the API server's audit log as the filelog receiver reads it)."""
    if isinstance(body, str) and body.startswith("{"):
        try:
            body = json.loads(body)
        except ValueError:
            return None
    return k8s_object(body)


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
        self.history = EventHistory()  # objects' recent Events, for the agent's kubernetes_events tool
        self.oom_killed: Bounded[str, str] = Bounded(MAX_OOM_PODS)  # pod -> its container last OOM-killed
        self._lock = threading.Lock()  # metrics and oom_killed: the responder reads sizes on another thread

    def consume_traces(self, batch: SpanBatch) -> None:
        pass

    def consume_metrics(self, batch: MetricBatch) -> None:
        with self._lock:
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
            found = _unwrap(body)
            if found is None:
                continue
            event, obj = found
            kind = obj.get("kind")
            if kind == "Event" and str(obj.get("apiVersion", "")).startswith("audit.k8s.io"):
                self._audit(obj, now)
            elif kind == "Event":
                anomalies += self._event(event, obj, now)
            elif kind == "Pod":
                anomalies += self._pod(obj, now)
            elif kind == "ReplicaSet":
                self._replicaset(obj, now)
        if anomalies:
            self.seen += len(anomalies)
            self.sink(now, anomalies)

    def memory_limit(self, pod: str) -> tuple[str, float] | None:
        """(container, its memory limit in bytes) of the pod's container that ran out of memory: the one last
        OOM-killed (the pod's status says which), else one at ``memory_near_limit`` of its limit or past it; None
        when neither is known (a sidecar's limit is not the one to raise)."""
        with self._lock:
            limits = self.metrics.memory_limits(pod)
            killed = self.oom_killed.get(pod)
        for container, limit, ratio in limits:
            if container == killed or (killed is None and ratio is not None and ratio >= self.metrics.near_limit):
                return container, limit
        return None

    def _event(self, event: str, obj: Mapping[str, Any], now: float) -> list[Anomaly]:
        reason = str(obj.get("reason", ""))
        signal = FAILURE_REASONS.get(reason)
        entity = _target(obj.get("involvedObject") or obj.get("regarding"))
        if entity is not None:
            self.history.note(event, obj, entity, now)
        if signal is None or entity is None or event == "DELETED":  # a deleted Event's TTL ran out: old news
            return []
        count = obj.get("count") or (obj.get("series") or {}).get("count") or 1
        return [Anomaly(entity, f"k8s:{signal}", float(count), 0.0, SCORE, now, now)]

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
                    with self._lock:
                        self.oom_killed.put(f"pod:{ns}/{name}", str(c.get("name", "")))
                waiting = (c.get("state") or {}).get("waiting") or {}
                if isinstance(waiting, Mapping) and waiting.get("reason") in WAITING_REASONS:
                    reason = str(waiting["reason"])
                    found.add("ImagePullBackOff" if reason == "ErrImagePull" else reason)
        if status.get("phase") == "Pending" and self._init_stuck(obj, now):
            found.add("InitContainerStuck")
        return [Anomaly(f"pod:{ns}/{name}", f"k8s:{s}", 1.0, 0.0, SCORE, now, now) for s in sorted(found)]

    def _init_stuck(self, obj: Mapping[str, Any], now: float) -> bool:
        """An init container of a Pending pod running for ``pending_s`` or longer (a migration that hangs, a
        dependency it waits for that never comes): the pod never starts, and no event says so. Native sidecars
        (init containers with ``restartPolicy: Always``) run for the pod's life and are not counted. Seen when the
        pod object comes again (the cluster Collector pulls every object every 10 minutes)."""
        spec = _mapping(obj.get("spec")).get("initContainers")
        sidecars = {
            _mapping(c).get("name") for c in (spec if isinstance(spec, (list, tuple)) else [])
            if _mapping(c).get("restartPolicy") == "Always"
        }  # fmt: skip
        statuses = _mapping(obj.get("status")).get("initContainerStatuses")
        for c in statuses if isinstance(statuses, (list, tuple)) else []:
            running = _mapping(_mapping(_mapping(c).get("state")).get("running"))
            if not running or _mapping(c).get("name") in sidecars:
                continue
            if now - stamp(running, ("startedAt",), now) >= self.metrics.pending_s:
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
        if not resource or not name or resource in _HOUSEKEEPING or ref.get("subresource") == "status":
            return  # leases renewed every few seconds, Events written, controllers' status: no one changed anything
        code = _mapping(obj.get("responseStatus")).get("code")
        if isinstance(code, int) and code >= 400:
            return  # refused or failed: nothing changed
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
    a log pipeline's delay, or a replayed file, must not move the change."""
    return stamp(obj, ("stageTimestamp", "requestReceivedTimestamp"), now)
