"""The Collector's kubeletstats and k8s_cluster receiver metrics, read by name into signals of the pod, node and
workload entities that topology/entities.py builds from the same resource attributes (``k8s.pod.name`` +
``k8s.namespace.name``, ``k8s.node.name``, ``k8s.<kind>.name``), so incidents and the graph reasoner see them.

Why by name: these metrics mean something only together or against a threshold (a working set is harmless far
from its limit and fatal at it; a restart count is a gauge whose increase matters), which a per-metric baseline
cannot see. Names follow the receivers' documentation.md (kubeletstats: ``*.cpu.usage``, the older
``*.cpu.utilization`` in cores, ``*.memory.working_set``, ``*.memory_limit_utilization``, ``*.filesystem.usage`` /
``.capacity``; k8s_cluster: ``k8s.container.memory_limit``, ``k8s.container.restarts``, ``k8s.pod.phase``,
``k8s.node.condition_<condition>`` and the newer ``k8s.node.condition`` with a ``condition`` attribute,
``k8s.<workload>.available`` / ``.desired``).

Two outputs per batch (:class:`Readings`):

- ``series``: values for the detector's baselines (:data:`SERIES`; their direction rules are in baseline.py):
  CPU in cores, memory working set vs limit (the limit joined from k8s_cluster by pod and container, or the
  kubelet's own ratio), filesystem usage vs capacity, container restarts as increases, workload availability. Of
  several containers of a pod the largest ratio counts.
- ``failures``: known failure states, judged at once with no baseline (detector/kube.py makes them anomalies named
  ``k8s:<signal>`` like the Kubernetes events it reads): memory at ``near_limit`` of its limit or more
  (MemoryNearLimit), a restart (ContainerRestarted), pod phase Failed (PodFailed) or Pending for ``pending_s``
  (PodPending), node Ready false or unknown (NodeNotReady), memory / disk / PID pressure (NodePressure).

State (limits and capacities seen, restart counts, pending since) is kept per pod and container, bounded by
``max_keys``: past it the oldest entries are dropped. The detector's window and KubeSignals each read with an
instance of their own (a shared one would see each restart once between them); a batch's named rows are few (one
per pod, container or node and metric each collection interval), so reading them twice costs little
(bench/README.md: ``detector_window_ms_10k_series``).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from rootward.model import MetricBatch, Resource

# How a reading folds into its window's value: the largest (ratios, usage) or the sum (increases).
MAX, TOTAL = "max", "total"

#: Series this module gives, and how each folds over a window and across a pod's containers.
SERIES = {
    "k8s.pod.cpu.usage": MAX,
    "container.cpu.usage": MAX,
    "k8s.node.cpu.usage": MAX,
    "k8s.cpu.limit_ratio": MAX,
    "k8s.memory.limit_ratio": MAX,
    "k8s.filesystem.usage_ratio": MAX,
    "k8s.container.restarts.increase": TOTAL,
    "k8s.workload.available_ratio": MAX,
}

#: Metrics read as a value of a series, by name: (entity kind, series).
_DIRECT = {
    "k8s.pod.cpu.usage": ("pod", "k8s.pod.cpu.usage"),
    "k8s.pod.cpu.utilization": ("pod", "k8s.pod.cpu.usage"),  # before kubeletstats 0.112: cores, misnamed
    "container.cpu.usage": ("pod", "container.cpu.usage"),
    "container.cpu.utilization": ("pod", "container.cpu.usage"),
    "k8s.node.cpu.usage": ("node", "k8s.node.cpu.usage"),
    "k8s.node.cpu.utilization": ("node", "k8s.node.cpu.usage"),
    "k8s.pod.cpu_limit_utilization": ("pod", "k8s.cpu.limit_ratio"),
    "k8s.container.cpu_limit_utilization": ("pod", "k8s.cpu.limit_ratio"),
    "k8s.pod.memory_limit_utilization": ("pod", "k8s.memory.limit_ratio"),
    "k8s.container.memory_limit_utilization": ("pod", "k8s.memory.limit_ratio"),
}
#: Metrics that are the numerator or denominator of a ratio series: name -> (entity kind, ratio series, part).
_PARTS = {
    "container.memory.working_set": ("pod", "k8s.memory.limit_ratio", 0),
    "k8s.container.memory_limit": ("pod", "k8s.memory.limit_ratio", 1),
    "k8s.pod.filesystem.usage": ("pod", "k8s.filesystem.usage_ratio", 0),
    "k8s.pod.filesystem.capacity": ("pod", "k8s.filesystem.usage_ratio", 1),
    "container.filesystem.usage": ("pod", "k8s.filesystem.usage_ratio", 0),
    "container.filesystem.capacity": ("pod", "k8s.filesystem.usage_ratio", 1),
    "k8s.node.filesystem.usage": ("node", "k8s.filesystem.usage_ratio", 0),
    "k8s.node.filesystem.capacity": ("node", "k8s.filesystem.usage_ratio", 1),
}
for _kind, _ready, _desired in (
    ("deployment", "available", "desired"),
    ("replicaset", "available", "desired"),
    ("statefulset", "ready_pods", "desired_pods"),
    ("daemonset", "ready_nodes", "desired_scheduled_nodes"),
):
    _PARTS[f"k8s.{_kind}.{_ready}"] = (_kind, "k8s.workload.available_ratio", 0)
    _PARTS[f"k8s.{_kind}.{_desired}"] = (_kind, "k8s.workload.available_ratio", 1)

#: Node conditions (k8s_cluster: 1 true, 0 false, -1 unknown) and the failure each state is.
_CONDITIONS = {"Ready": "NodeNotReady", "MemoryPressure": "NodePressure", "DiskPressure": "NodePressure"}
_CONDITIONS["PIDPressure"] = "NodePressure"
_CONDITION_METRICS = {
    "k8s.node.condition_ready": "Ready",
    "k8s.node.condition_memory_pressure": "MemoryPressure",
    "k8s.node.condition_disk_pressure": "DiskPressure",
    "k8s.node.condition_pid_pressure": "PIDPressure",
}
PHASE_PENDING, PHASE_FAILED = 1, 4

#: Every metric name read here: detector/windows.py leaves them out of its generic gauge and sum series.
NAMES = frozenset(_DIRECT) | frozenset(_PARTS) | frozenset(_CONDITION_METRICS)
NAMES |= {"k8s.container.restarts", "k8s.pod.phase", "k8s.node.condition"}


@dataclass
class Readings:
    """One batch's series values (entity, series, value) and failure states (entity, signal, value)."""

    series: list[tuple[str, str, float]] = field(default_factory=list)
    failures: list[tuple[str, str, float]] = field(default_factory=list)


def entity(kind: str, resource: Resource) -> str | None:
    """The entity id of a metric of ``kind`` (pod, node or a workload kind) about ``resource``, or None."""
    if kind == "pod":
        return resource.pod_id
    if kind == "node":
        name = resource.name("k8s.node.name")
        return f"node:{name}" if name else None
    name = resource.name(f"k8s.{kind}.name")
    return f"workload:{resource.name('k8s.namespace.name')}/{kind}/{name}" if name else None


K = TypeVar("K")
V = TypeVar("V")


class Bounded(OrderedDict[K, V]):
    """The last value per key, dropping the least recently put past ``limit`` keys."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def put(self, key: K, value: V) -> None:
        self[key] = value
        self.move_to_end(key)
        if len(self) > self.limit:
            self.popitem(last=False)


class KubeMetrics:
    """Reads kubeletstats and k8s_cluster metrics of each batch (see the module docstring)."""

    def __init__(self, near_limit: float = 0.9, pending_s: float = 300.0, max_keys: int = 100_000) -> None:
        self.near_limit, self.pending_s = near_limit, pending_s
        # (part, series, entity, container) -> the last numerator or denominator
        self.parts: Bounded[tuple[str, ...], float] = Bounded(max_keys)
        self.restarts: Bounded[tuple[str, ...], float] = Bounded(max_keys)  # (entity, container) -> last count
        self.pending_since: Bounded[tuple[str, ...], float] = Bounded(max_keys)  # (entity,) -> first seen Pending
        self.limited: Bounded[str, frozenset[str]] = Bounded(max_keys)  # pod -> its containers with a memory limit

    def read(self, batch: MetricBatch) -> Readings:
        """The readings of ``batch``'s metrics that are named here (others are left alone)."""
        out = Readings()
        if not len(batch):
            return out
        known = np.array([m.name in NAMES for m in batch.metrics], bool)
        rows = np.flatnonzero(known[batch.metric] & np.isfinite(batch.value))
        ratios: dict[tuple[str, str, str], None] = {}  # (series, entity, container) with a new numerator
        for r in rows.tolist():
            name = batch.metrics[int(batch.metric[r])].name
            resource = batch.resources[int(batch.resource[r])]
            value = float(batch.value[r])
            if name in _DIRECT:
                kind, series = _DIRECT[name]
                if (e := entity(kind, resource)) is not None:
                    self._series(out, e, series, value)
            elif name in _PARTS:
                self._part(ratios, resource, name, value)
            elif name == "k8s.container.restarts":
                self._restarts(out, resource, value)
            elif name == "k8s.pod.phase":
                self._phase(out, resource, value, int(batch.time[r]) / 1e9)
            elif (e := entity("node", resource)) is not None:
                condition = _CONDITION_METRICS.get(name) or str(batch.attributes[r].get("condition", ""))
                failure = _CONDITIONS.get(condition)
                bad = value != 1 if condition == "Ready" else value == 1
                if failure is not None and bad:
                    out.failures.append((e, failure, value))
        for series, e, container in ratios:
            numerator = self.parts.get(("0", series, e, container))
            denominator = self.parts.get(("1", series, e, container))
            if numerator is not None and denominator is not None and denominator > 0:
                self._series(out, e, series, numerator / denominator)
        return out

    def memory_limits(self, pod: str) -> list[tuple[str, float, float | None]]:
        """(container, its memory limit in bytes, its working set / limit if known) of each container of ``pod``
        with a limit, as k8s_cluster and kubeletstats last reported them (what a raise of the limit starts from)."""
        out = []
        for container in sorted(self.limited.get(pod, ())):
            limit = self.parts.get(("1", "k8s.memory.limit_ratio", pod, container))
            used = self.parts.get(("0", "k8s.memory.limit_ratio", pod, container))
            if limit is not None and limit > 0:
                out.append((container, limit, used / limit if used is not None else None))
        return out

    def _series(self, out: Readings, e: str, series: str, value: float) -> None:
        out.series.append((e, series, value))
        if series == "k8s.memory.limit_ratio" and value >= self.near_limit:
            out.failures.append((e, "MemoryNearLimit", value))

    def _part(self, ratios: dict[tuple[str, str, str], None], resource: Resource, name: str, value: float) -> None:
        """Remember a numerator or denominator; the ratio is given once per batch for a new usage (a limit alone
        does not repeat an old usage), or for either count of a workload (both come from k8s_cluster at once)."""
        kind, series, part = _PARTS[name]
        e = entity(kind, resource)
        if e is None:
            return
        container = resource.get("k8s.container.name") if name.startswith(("container.", "k8s.container.")) else ""
        self.parts.put((str(part), series, e, container), value)
        if series == "k8s.memory.limit_ratio" and part == 1 and container:
            self.limited.put(e, self.limited.get(e, frozenset()) | {container})
        if part == 0 or series == "k8s.workload.available_ratio":
            ratios[series, e, container] = None

    def _restarts(self, out: Readings, resource: Resource, value: float) -> None:
        e = entity("pod", resource)
        if e is None:
            return
        key = (e, resource.get("k8s.container.name"))
        previous = self.restarts.get(key)
        self.restarts.put(key, value)
        if previous is None:
            return  # a first count: how many restarts happened since is unknown
        increase = value - previous if value >= previous else 0.0  # the kubelet prunes dead containers: a drop
        out.series.append((e, "k8s.container.restarts.increase", increase))
        if increase > 0:
            out.failures.append((e, "ContainerRestarted", increase))

    def _phase(self, out: Readings, resource: Resource, value: float, at: float) -> None:
        e = entity("pod", resource)
        if e is None:
            return
        if value == PHASE_FAILED:
            out.failures.append((e, "PodFailed", value))
        if value != PHASE_PENDING:
            self.pending_since.pop((e,), None)
            return
        since = self.pending_since.get((e,))
        if since is None:
            self.pending_since.put((e,), at)
        elif at - since >= self.pending_s:
            out.failures.append((e, "PodPending", at - since))
