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


class _Pods:
    """The two reads a drain's blast radius makes (pure logic: the live cluster is in the tests above)."""

    def __init__(self, pods: list[dict[str, Any]]) -> None:
        self.all = pods

    def pods(self, namespace: str, labels: dict[str, str] | None = None, node: str | None = None) -> list[Any]:
        return [p for p in self.all if node is None or p["spec"]["nodeName"] == node]

    def pdbs(self, namespace: str) -> list[Any]:
        return []


def _pod(name: str, node: str, owner: str, phase: str = "Running", **meta: Any) -> dict[str, Any]:
    ref = {"kind": "ReplicaSet", "name": owner, "controller": True}
    return {
        "metadata": {"name": name, "namespace": "shop", "ownerReferences": [ref], "labels": {"app": owner}, **meta},
        "spec": {"nodeName": node},
        "status": {"phase": phase},
    }


def test_a_drains_share_counts_each_owners_live_pods_only() -> None:
    """Two of cart's three live replicas on node-1: 2 of 3, however many evicted (Failed) or terminating pods of
    the same ReplicaSet linger; a StatefulSet's pods, each with its own labels, are still one workload."""
    from rootward.actions.operations import operation

    pods = [_pod("cart-a", "node-1", "cart-1"), _pod("cart-b", "node-1", "cart-1"), _pod("cart-c", "node-2", "cart-1")]
    pods += [_pod(f"cart-x{i}", "node-2", "cart-1", phase="Failed") for i in range(12)]
    pods += [_pod("cart-t", "node-2", "cart-1", deletionTimestamp="2026-01-01T00:00:00Z")]
    for i in range(10):
        db = _pod(f"db-{i}", "node-1" if i == 0 else "node-2", "db")
        db["metadata"]["labels"] = {"app": "db", "statefulset.kubernetes.io/pod-name": f"db-{i}"}
        pods.append(db)
    radius = operation(Drain("node-1"), _Pods(pods)).blast_radius()  # type: ignore[arg-type]
    assert (radius.pods_at_once, radius.pods_total) == (2, 3)  # cart's share, not db's 1 of 10
    assert radius.pods_affected == 3
    assert radius.workloads == ((1, 10), (2, 3))  # each judged by the policy
