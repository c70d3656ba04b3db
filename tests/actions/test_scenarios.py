"""The executor end to end on the Kubernetes API (kmock with the gaps filled, the official client): from a diagnosis
to a verified outcome and its audit records."""

from __future__ import annotations

from typing import Any

from cluster import MakeExecutor, RunningCluster, deploy, kinds, memory_limit

from rootward.actions import Diagnosis, Kube, PatchResources, RestartPod, Rollback
from rootward.policies import AuditLog

OOM = Diagnosis("cart is OOMKilled 4 times in 10 minutes", 0.9, "inc-oom", "pod:shop/cart", ("OOMKilled x4",))


def _oom_below_256mi(template: dict[str, Any]) -> str | None:
    limit = template["spec"]["containers"][0]["resources"]["limits"]["memory"]
    return "OOMKilled" if limit in ("64Mi", "128Mi") else None


def test_an_oomkilled_workload_gets_more_memory_and_the_rollout_is_verified(
    cluster: RunningCluster, kube: Kube, make_executor: MakeExecutor, audit: AuditLog
) -> None:
    cluster.call(lambda c: setattr(c, "kubelet", _oom_below_256mi))
    deploy(kube, "cart")
    request = PatchResources("shop", "cart", container="cart", limits={"memory": "256Mi"}, requests={"memory": "256Mi"})
    outcome = make_executor().submit(request, OOM)
    assert outcome.status == "succeeded", outcome.detail
    assert outcome.decision is not None
    assert outcome.decision.result == "allow"
    assert memory_limit(kube, "cart") == "256Mi"
    assert kinds(audit, outcome.request_id) == ["decision", "dry_run", "intent", "executed", "verified", "outcome"]
    assert audit.verify().ok


def _crash_on_image_2(template: dict[str, Any]) -> str | None:
    return "CrashLoopBackOff" if template["spec"]["containers"][0]["image"].endswith(":2") else None


def test_crashloopbackoff_after_a_rollout_is_rolled_back_to_the_previous_revision(
    cluster: RunningCluster, kube: Kube, make_executor: MakeExecutor, audit: AuditLog
) -> None:
    cluster.call(lambda c: setattr(c, "kubelet", _crash_on_image_2))
    deploy(kube, "checkout", image="shop/checkout:1")
    bad = [{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "shop/checkout:2"}]
    kube.patch_workload("Deployment", "shop", "checkout", bad, dry_run=False)
    stuck = kube.workload("Deployment", "shop", "checkout")
    assert stuck["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    assert stuck["status"]["availableReplicas"] == 5  # the old pods stay while the new ones crash
    diagnosis = Diagnosis(
        "checkout crash-loops since revision 2", 0.92, "inc-crash", "workload:shop/deployment/checkout"
    )
    outcome = make_executor().submit(Rollback("shop", "checkout"), diagnosis)
    assert outcome.status == "succeeded", outcome.detail
    after = kube.workload("Deployment", "shop", "checkout")
    assert after["spec"]["template"]["spec"]["containers"][0]["image"] == "shop/checkout:1"
    assert after["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
    assert after["status"]["replicas"] == after["status"]["availableReplicas"] == 5
    executed = next(r for r in audit.records(request_id=outcome.request_id) if r.kind == "executed")
    assert executed.data["result"]["from_revision"] == "2"
    assert executed.data["result"]["to_revision"] == "1"


def test_a_fix_whose_verification_fails_is_rolled_back_automatically(
    cluster: RunningCluster, kube: Kube, make_executor: MakeExecutor, audit: AuditLog
) -> None:
    cluster.call(lambda c: setattr(c, "kubelet", _oom_below_256mi))
    deploy(kube, "cart", memory="512Mi")
    request = PatchResources("shop", "cart", container="cart", limits={"memory": "64Mi"})  # a wrong "fix"
    outcome = make_executor(verify_timeout_s=0.5).submit(request, OOM)
    assert outcome.status == "rolled_back", outcome.detail
    assert "timed out" in outcome.detail
    assert memory_limit(kube, "cart") == "512Mi"
    status = kube.workload("Deployment", "shop", "cart")["status"]
    assert status["replicas"] == status["availableReplicas"] == 5
    assert kinds(audit, outcome.request_id) == [
        "decision",
        "dry_run",
        "intent",
        "executed",
        "verification_failed",
        "rolled_back",
        "rollback_verified",
        "outcome",
    ]


def test_a_hung_pod_is_restarted_and_its_replacement_verified(
    cluster: RunningCluster, kube: Kube, make_executor: MakeExecutor
) -> None:
    deploy(kube, "email")
    pods = kube.pods("shop", {"app": "email"})
    victim = pods[0]["metadata"]["name"]
    diagnosis = Diagnosis("email pod stuck in Init: init container hung", 0.7, "inc-init", f"pod:shop/{victim}")
    outcome = make_executor().submit(RestartPod("shop", victim), diagnosis)
    assert outcome.status == "succeeded", outcome.detail
    names = {p["metadata"]["name"] for p in kube.pods("shop", {"app": "email"})}
    assert victim not in names
    assert len(names) == 5
    assert outcome.blast_radius is not None
    assert outcome.blast_radius.pods_at_once == 1


def test_dry_run_mode_decides_and_dry_runs_on_the_server_and_changes_nothing(
    cluster: RunningCluster, kube: Kube, make_executor: MakeExecutor, audit: AuditLog
) -> None:
    deploy(kube, "cart")
    request = PatchResources("shop", "cart", container="cart", limits={"memory": "256Mi"})
    outcome = make_executor("dry-run").submit(request, OOM)
    assert outcome.status == "dry_run"
    assert memory_limit(kube, "cart") == "128Mi"
    dry = next(r for r in audit.records(request_id=outcome.request_id) if r.kind == "dry_run")
    assert dry.data["ok"] is True
    assert dry.data["result"]["after"]["limits"]["memory"] == "256Mi"
    patches = [r for r in cluster.call(lambda c: list(c)) if r.method == "PATCH"]
    assert [r.params.get("dryRun") for r in patches] == ["All"]


def test_a_dry_run_the_server_refuses_stops_the_request(kube: Kube, make_executor: MakeExecutor) -> None:
    deploy(kube, "cart")
    request = PatchResources("shop", "cart", container="sidecar", limits={"memory": "256Mi"})
    outcome = make_executor().submit(request, OOM)
    assert outcome.status == "failed"
    assert "no container 'sidecar'" in outcome.detail


def test_submitting_the_same_request_for_the_same_incident_again_does_not_act_twice(
    cluster: RunningCluster, kube: Kube, make_executor: MakeExecutor
) -> None:
    deploy(kube, "cart")
    executor = make_executor()
    request = PatchResources("shop", "cart", container="cart", limits={"memory": "256Mi"})
    first = executor.submit(request, OOM)
    second = executor.submit(request, OOM)
    assert first.status == "succeeded"
    assert second.request_id == first.request_id
    assert second.detail.startswith("already succeeded")
    real_patches = [r for r in cluster.call(lambda c: list(c)) if r.method == "PATCH" and "dryRun" not in r.params]
    assert len(real_patches) == 1
