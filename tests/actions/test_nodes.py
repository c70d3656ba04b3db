"""Node and diagnostic scenarios: a pod whose disk filled (collect, then restart), and a node under pressure
(cordon and drain through the Eviction API, respecting a PodDisruptionBudget)."""

from __future__ import annotations

from typing import Any

from cluster import MakeExecutor, RunningCluster, deploy

from rootward.actions import Collect, Diagnosis, Drain, Kube, RestartPod
from rootward.policies import AuditLog

PRESSURE = Diagnosis("node-1 under memory pressure; evictions by the kubelet", 0.9, "inc-node", "node:node-1")


def _nodes(kube: Kube, *names: str) -> None:
    for name in names:
        kube.core.create_node({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "spec": {}})


def _pdb(kube: Kube, name: str, min_available: int) -> None:
    body: dict[str, Any] = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"minAvailable": min_available, "selector": {"matchLabels": {"app": name}}},
    }
    kube.policy.create_namespaced_pod_disruption_budget("shop", body)


def _on(kube: Kube, node: str) -> list[str]:
    return sorted(p["metadata"]["name"] for p in kube.pods("", node=node))


def test_a_disk_full_pod_has_its_diagnostics_collected_then_is_restarted(
    kube: Kube, make_executor: MakeExecutor, audit: AuditLog
) -> None:
    deploy(kube, "cart")
    pod = kube.pods("shop", {"app": "cart"})[0]["metadata"]["name"]
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{pod}.1", "namespace": "shop"},
        "involvedObject": {"kind": "Pod", "name": pod, "namespace": "shop"},
        "reason": "Evicted",
        "message": "The node was low on resource: ephemeral-storage.",
        "type": "Warning",
    }
    kube.core.create_namespaced_event("shop", event)
    executor = make_executor()
    diagnosis = Diagnosis(f"{pod}: no space left on device", 0.85, "inc-disk", f"pod:shop/{pod}")
    collected = executor.submit(Collect("shop", pod, tail_lines=50), diagnosis)
    assert collected.status == "succeeded"
    assert collected.result["events"] == [
        {"reason": "Evicted", "message": "The node was low on resource: ephemeral-storage.", "type": "Warning"}
    ]
    assert collected.result["logs"]["cart"].startswith(f"log of {pod}")
    restarted = executor.submit(RestartPod("shop", pod), diagnosis)
    assert restarted.status == "succeeded", restarted.detail
    assert pod not in {p["metadata"]["name"] for p in kube.pods("shop", {"app": "cart"})}


def test_a_node_under_pressure_is_cordoned_and_drained_within_the_pdb_after_approval(
    cluster: RunningCluster, kube: Kube, make_executor: MakeExecutor, audit: AuditLog
) -> None:
    _nodes(kube, "node-1", "node-2")
    deploy(kube, "cart", replicas=5)
    _pdb(kube, "cart", min_available=4)
    on_node_1 = _on(kube, "node-1")
    assert on_node_1
    executor = make_executor()
    held = executor.submit(Drain("node-1"), PRESSURE)
    assert held.status == "pending_approval", held.detail
    assert "high-risk action: a human approves" in held.detail
    assert held.approval_id is not None
    done = executor.approve(held.approval_id, "alice")
    assert done.status == "succeeded", done.detail
    assert kube.node("node-1")["spec"]["unschedulable"] is True
    assert _on(kube, "node-1") == []
    assert len(kube.pods("shop", {"app": "cart"})) == 5
    assert sorted(cluster.call(lambda c: list(c.evictions))) == [f"shop/{p}" for p in on_node_1]


def test_a_drain_a_pdb_blocks_is_undone_by_uncordoning(
    kube: Kube, make_executor: MakeExecutor, audit: AuditLog
) -> None:
    _nodes(kube, "node-1", "node-2")
    deploy(kube, "cart", replicas=5)
    _pdb(kube, "cart", min_available=5)  # no disruption allowed
    on_node_1 = _on(kube, "node-1")
    executor = make_executor(verify_timeout_s=0.5)
    held = executor.submit(Drain("node-1"), PRESSURE)
    assert held.decision is not None
    assert "PodDisruptionBudget cart allows no disruption now" in held.decision.approval
    assert held.approval_id is not None
    done = executor.approve(held.approval_id, "alice")
    assert done.status == "rolled_back", done.detail
    assert "refused by PodDisruptionBudgets" in done.detail
    assert not kube.node("node-1")["spec"].get("unschedulable")
    assert _on(kube, "node-1") == on_node_1


def test_a_drain_that_would_take_most_of_a_workload_at_once_is_denied(
    kube: Kube, make_executor: MakeExecutor, audit: AuditLog
) -> None:
    """Without a PodDisruptionBudget every pod on the node goes in one pass: the blast radius says so, and the
    policy's 20 % limit refuses it (with a budget the Eviction API paces it, as in the tests above)."""
    _nodes(kube, "node-1", "node-2")
    deploy(kube, "cart", replicas=5)
    on_node_1 = _on(kube, "node-1")
    assert len(on_node_1) >= 2
    denied = make_executor().submit(Drain("node-1"), PRESSURE)
    assert denied.status == "denied", denied.detail
    assert denied.blast_radius is not None
    assert (denied.blast_radius.pods_at_once, denied.blast_radius.pods_total) == (len(on_node_1), 5)
    assert f"takes down {len(on_node_1)} of 5 pods at once" in denied.detail
    assert _on(kube, "node-1") == on_node_1
