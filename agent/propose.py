"""From a diagnosis to the action the executor is asked for: the top hypothesis, its fault class, and where it sits
in the graph decide one typed request (actions/requests.py), or none.

| top hypothesis | fault class | request (tier) |
|---|---|---|
| a node, with NotReady or pressure among its evidence | any | drain the node (high: a human approves) |
| another node | any | cordon the node (medium) |
| a service or pod | bad_rollout | roll its Deployment back to the previous revision (medium) |
| a service or pod, out of memory (1) | resource_saturation | its fullest container's memory limit x 1.5 (medium) |
| a service or pod, CPU in its evidence | resource_saturation | scale its workload up by one replica (medium) |
| a service or pod | resource_saturation, code_error | rollout restart of its workload (medium) |
| a pod of a workload we cannot name | resource_saturation, code_error | restart the pod (low) |
| a service or pod | network_delay, dependency_failure | collect the pod's object, events and logs (read-only) |
| a peer (database, queue, host) | any | nothing: Rootward does not act on what it does not run |

(1) OOMKilled, or memory near its limit, among the hypothesis' evidence.

This only proposes: the policy decides what may happen, the executor's mode whether anything changes, and a
proposal below ``min_confidence`` is not made. Telemetry never widens this table: names come from the topology
graph (which the Collector's Kubernetes objects fill), and the request types validate them as Kubernetes names. The
sizes behind a new limit or replica count (the current limit, the desired replicas) are the Kubernetes API's as
the Collector's k8s_cluster receiver reports them; without them the restart is proposed. A new limit is at most
``MAX_MEMORY`` and never lower than the current one; the policy caps replicas (``policies.rules.max_replicas``).
"""

from __future__ import annotations

import math
from typing import Protocol, cast

from rootward.actions.errors import InvalidRequest
from rootward.actions.requests import (
    ActionRequest,
    Collect,
    Cordon,
    Drain,
    PatchResources,
    RestartPod,
    Rollback,
    RolloutRestart,
    Scale,
    WorkloadKind,
)
from rootward.agent.schema import Diagnosis, Hypothesis

#: A raised memory limit is the current one x MEMORY_GROWTH, at most MAX_MEMORY bytes (64 GiB).
MEMORY_GROWTH = 1.5
MAX_MEMORY = 64 * 2**30
_MIB = 2**20
#: Evidence that a node is unhealthy enough to empty (its pods are better elsewhere), not only busy.
_NODE_DOWN = ("k8s:NodeNotReady", "k8s:NodePressure")
_OUT_OF_MEMORY = ("k8s:OOMKilled", "k8s:MemoryNearLimit", "k8s.memory.limit_ratio")


class Sizes(Protocol):
    """The current sizes a resize starts from (detector/kube_metrics.py KubeMetrics)."""

    def memory_limits(self, pod: str) -> list[tuple[str, float, float | None]]:
        """(container, memory limit in bytes, working set / limit if known) of a pod's limited containers."""
        ...

    def desired_replicas(self, workload: str) -> float | None:
        """Desired replicas of ``workload:<ns>/<kind>/<name>``."""
        ...


class Workloads(Protocol):
    """What the proposal needs from the graph."""

    def workload_of(self, entity: str) -> tuple[str, str, str] | None:
        """(namespace, kind, name) of the Deployment or StatefulSet that runs a service's or a pod's pods."""
        ...

    def a_pod_of(self, entity: str) -> str | None:
        """A pod entity id of a service (or the pod itself)."""
        ...


def propose(
    diagnosis: Diagnosis, graph: Workloads, min_confidence: float = 0.3, sizes: Sizes | None = None
) -> ActionRequest | None:
    """The request for the diagnosis' top hypothesis, or None (nothing to do, not confident enough, or a name the
    request types refuse)."""
    if not diagnosis.hypotheses:
        return None
    top = diagnosis.hypotheses[0]
    if top.confidence < min_confidence:
        return None
    try:
        return _request(top, graph, sizes)
    except InvalidRequest:
        return None


def _request(top: Hypothesis, graph: Workloads, sizes: Sizes | None) -> ActionRequest | None:
    signals = [e.signal for e in top.evidence]
    if top.kind == "node":
        node = top.entity.removeprefix("node:")
        return Drain(node) if any(s in _NODE_DOWN for s in signals) else Cordon(node)
    if top.kind not in ("service", "pod"):
        return None
    workload = graph.workload_of(top.entity)
    if top.fault_class in ("bad_rollout", "resource_saturation", "code_error") and workload is not None:
        ns, kind, name = workload
        if top.fault_class == "bad_rollout" and kind == "Deployment":
            return Rollback(ns, name)
        if top.fault_class == "resource_saturation" and sizes is not None:
            resized = _resize(top.entity, workload, signals, graph, sizes)
            if resized is not None:
                return resized
        return RolloutRestart(ns, name, workload_kind=kind)  # type: ignore[arg-type]
    pod = graph.a_pod_of(top.entity)
    if pod is None:
        return None
    ns, name = pod.removeprefix("pod:").split("/", 1)
    if top.fault_class in ("resource_saturation", "code_error"):
        return RestartPod(ns, name)
    return Collect(ns, name)


def _resize(
    entity: str, workload: tuple[str, str, str], signals: list[str], graph: Workloads, sizes: Sizes
) -> ActionRequest | None:
    """More memory for the fullest limited container, or one more replica for CPU, when the evidence says which and
    the current size is known; else None."""
    ns, name = workload[0], workload[2]
    kind = cast(WorkloadKind, workload[1])  # Deployment or StatefulSet (the request refuses others)
    if any(s in _OUT_OF_MEMORY for s in signals):
        pod = graph.a_pod_of(entity)
        limits = sizes.memory_limits(pod) if pod is not None else []
        if limits:
            container, limit, _ = max(limits, key=lambda c: (c[2] if c[2] is not None else -1.0, c[1]))
            raised = min(MAX_MEMORY, math.ceil(limit * MEMORY_GROWTH / _MIB) * _MIB)
            if raised > limit:
                return PatchResources(
                    ns,
                    name,
                    workload_kind=kind,
                    container=container,
                    limits={"memory": f"{raised // _MIB}Mi"},
                )
        return None
    if any("cpu" in s.lower() for s in signals):
        desired = sizes.desired_replicas(f"workload:{ns}/{kind.lower()}/{name}")
        if desired is not None and desired >= 1:
            return Scale(ns, name, workload_kind=kind, replicas=int(desired) + 1)
    return None
