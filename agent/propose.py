"""From a diagnosis to the action the executor is asked for: the top hypothesis, its fault class, and where it sits
in the graph decide one typed request (actions/requests.py), or none.

| top hypothesis | fault class | request (tier) |
|---|---|---|
| a node, with NotReady or pressure among its evidence | any | drain the node (high: a human approves) |
| another node | any | cordon the node (medium) |
| a service or pod | bad_rollout | roll its Deployment back to the previous revision (medium) |
| a service or pod, out of memory (1) | resource_saturation | that container's memory limit x 1.5 (medium) |
| a service or pod | resource_saturation, code_error | rollout restart of its workload (medium) |
| a pod of a workload we cannot name | resource_saturation, code_error | restart the pod (low) |
| a service or pod | network_delay, dependency_failure | collect the pod's object, events and logs (read-only) |
| a peer (database, queue, host) | any | nothing: Rootward does not act on what it does not run |

(1) ``k8s:OOMKilled`` or ``k8s:MemoryNearLimit`` on one of its pods among the hypothesis' evidence, and which
container ran out known (the one the pod's status says was OOM-killed, else the one at its limit).

This only proposes: the policy decides what may happen, the executor's mode whether anything changes, and a
proposal below ``min_confidence`` is not made. Telemetry never widens this table, but it does name the target: the
entity and its workload come from the topology graph, which the Collector's Kubernetes objects and the senders'
own resource attributes fill (README, "What a sender can steer"); the request types validate them as Kubernetes
names, and the policy's scope and tiers judge them.
Evidence is read by exact signal names of Kubernetes' own (never words in a span or caller name, which the sender
chooses), and the LLM's evidence is kept only where the incident holds it (agent/llm.py). The limit a raise starts
from is the killed pod's as k8s_cluster reported it; a new limit is at most ``MAX_MEMORY``; without a known
container and limit the restart is proposed. No replica count is proposed: it would be an absolute number from a
report that may be stale, and would fight a HorizontalPodAutoscaler.
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
    WorkloadKind,
)
from rootward.agent.schema import Diagnosis, Hypothesis

#: A raised memory limit is the current one x MEMORY_GROWTH, at most MAX_MEMORY bytes (64 GiB).
MEMORY_GROWTH = 1.5
MAX_MEMORY = 64 * 2**30
_MIB = 2**20
#: Evidence that a node is unhealthy enough to empty (its pods are better elsewhere), not only busy.
_NODE_DOWN = ("k8s:NodeNotReady", "k8s:NodePressure")
_OUT_OF_MEMORY = ("k8s:OOMKilled", "k8s:MemoryNearLimit")


class Sizes(Protocol):
    """The current size a resize starts from (detector/kube.py KubeSignals)."""

    def memory_limit(self, pod: str) -> tuple[str, float] | None:
        """(container, its memory limit in bytes) of the pod's container that ran out of memory, if known."""
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
            raised = _more_memory(top, workload, graph, sizes)
            if raised is not None:
                return raised
        return RolloutRestart(ns, name, workload_kind=kind)  # type: ignore[arg-type]
    pod = graph.a_pod_of(top.entity)
    if pod is None:
        return None
    ns, slash, name = pod.removeprefix("pod:").partition("/")
    if not (slash and ns and name):  # a pod named without its namespace: nothing to address
        return None
    if top.fault_class in ("resource_saturation", "code_error"):
        return RestartPod(ns, name)
    return Collect(ns, name)


def _more_memory(
    top: Hypothesis, workload: tuple[str, str, str], graph: Workloads, sizes: Sizes
) -> ActionRequest | None:
    """The memory limit of the container that ran out x MEMORY_GROWTH (rounded up to a MiB, at most MAX_MEMORY),
    when an out-of-memory signal of one of the workload's pods is in the evidence and the container and its limit
    are known; else None."""
    pods = [
        e.entity
        for e in top.evidence
        if e.signal in _OUT_OF_MEMORY and e.entity.startswith("pod:") and graph.workload_of(e.entity) == workload
    ]
    found = sizes.memory_limit(pods[0]) if pods else None
    if found is None:
        return None
    container, limit = found
    raised = min(MAX_MEMORY, math.ceil(limit * MEMORY_GROWTH / _MIB) * _MIB)
    if raised <= limit:
        return None
    ns, kind, name = workload[0], cast(WorkloadKind, workload[1]), workload[2]
    return PatchResources(ns, name, workload_kind=kind, container=container, limits={"memory": f"{raised // _MIB}Mi"})
