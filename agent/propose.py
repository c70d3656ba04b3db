"""From a diagnosis to the action the executor is asked for: the top hypothesis, its fault class, and where it sits
in the graph decide one typed request (actions/requests.py), or none.

| top hypothesis | fault class | request (tier) |
|---|---|---|
| a node | any | cordon the node (medium) |
| a service or pod | bad_rollout | roll its Deployment back to the previous revision (medium) |
| a service or pod | resource_saturation, code_error | rollout restart of its workload (medium) |
| a pod of a workload we cannot name | resource_saturation, code_error | restart the pod (low) |
| a service or pod | network_delay, dependency_failure | collect the pod's object, events and logs (read-only) |
| a peer (database, queue, host) | any | nothing: Rootward does not act on what it does not run |

This only proposes: the policy decides what may happen, the executor's mode whether anything changes, and a
proposal below ``min_confidence`` is not made. Telemetry never widens this table: names come from the topology
graph (which the Collector's Kubernetes objects fill), and the request types validate them as Kubernetes names.
"""

from __future__ import annotations

from typing import Protocol

from rootward.actions.errors import InvalidRequest
from rootward.actions.requests import ActionRequest, Collect, Cordon, RestartPod, Rollback, RolloutRestart
from rootward.agent.schema import Diagnosis, Hypothesis


class Workloads(Protocol):
    """What the proposal needs from the graph."""

    def workload_of(self, entity: str) -> tuple[str, str, str] | None:
        """(namespace, kind, name) of the Deployment or StatefulSet that runs a service's or a pod's pods."""
        ...

    def a_pod_of(self, entity: str) -> str | None:
        """A pod entity id of a service (or the pod itself)."""
        ...


def propose(diagnosis: Diagnosis, graph: Workloads, min_confidence: float = 0.3) -> ActionRequest | None:
    """The request for the diagnosis' top hypothesis, or None (nothing to do, not confident enough, or a name the
    request types refuse)."""
    if not diagnosis.hypotheses:
        return None
    top = diagnosis.hypotheses[0]
    if top.confidence < min_confidence:
        return None
    try:
        return _request(top, graph)
    except InvalidRequest:
        return None


def _request(top: Hypothesis, graph: Workloads) -> ActionRequest | None:
    if top.kind == "node":
        return Cordon(top.entity.removeprefix("node:"))
    if top.kind not in ("service", "pod"):
        return None
    workload = graph.workload_of(top.entity)
    if top.fault_class in ("bad_rollout", "resource_saturation", "code_error") and workload is not None:
        ns, kind, name = workload
        if top.fault_class == "bad_rollout" and kind == "Deployment":
            return Rollback(ns, name)
        return RolloutRestart(ns, name, workload_kind=kind)  # type: ignore[arg-type]
    pod = graph.a_pod_of(top.entity)
    if pod is None:
        return None
    ns, name = pod.removeprefix("pod:").split("/", 1)
    if top.fault_class in ("resource_saturation", "code_error"):
        return RestartPod(ns, name)
    return Collect(ns, name)
