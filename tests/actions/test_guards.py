"""What keeps the executor from doing harm: policy denials, failures midway through a change, approvals."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from cluster import MakeExecutor, RunningCluster, deploy, kinds, memory_limit

from rootward.actions import Diagnosis, Executor, Kube, PatchResources, RestartPod, Scale
from rootward.cli import main
from rootward.config import load_config
from rootward.policies import Approvals, AuditLog, PolicyEngine
from rootward.policies.errors import ApprovalError, ApprovalExpired

SURE = Diagnosis("cart needs more memory", 0.95, "inc-1")
UNSURE = Diagnosis("cart may need more memory", 0.5, "inc-2")


def test_kube_system_is_never_touched(kube: Kube, make_executor: MakeExecutor, audit: AuditLog) -> None:
    deploy(kube, "coredns", namespace="kube-system")
    pod = kube.pods("kube-system", {"app": "coredns"})[0]["metadata"]["name"]
    outcome = make_executor().submit(RestartPod("kube-system", pod), SURE)
    assert outcome.status == "denied"
    assert "kube-system is never acted on" in outcome.detail
    assert pod in {p["metadata"]["name"] for p in kube.pods("kube-system")}
    assert kinds(audit, outcome.request_id) == ["decision", "outcome"]


def test_taking_down_more_than_a_fifth_of_a_workloads_pods_is_denied(kube: Kube, make_executor: MakeExecutor) -> None:
    deploy(kube, "cart", replicas=5)
    outcome = make_executor().submit(Scale("shop", "cart", replicas=3), SURE)
    assert outcome.status == "denied"
    assert "takes down 2 of 5 pods at once (40%), over the 20% limit (1 at a time)" in outcome.detail
    assert kube.workload("Deployment", "shop", "cart")["spec"]["replicas"] == 5


def test_a_second_action_on_the_same_object_waits_for_the_cooldown(kube: Kube, make_executor: MakeExecutor) -> None:
    deploy(kube, "cart")
    executor = make_executor()
    first = executor.submit(PatchResources("shop", "cart", container="cart", limits={"memory": "256Mi"}), SURE)
    assert first.status == "succeeded"
    again = executor.submit(PatchResources("shop", "cart", container="cart", limits={"memory": "384Mi"}), SURE)
    assert again.status == "denied"
    assert "cooldown: Deployment/shop/cart was acted on" in again.detail
    assert memory_limit(kube, "cart") == "256Mi"


def test_an_api_error_after_the_server_applied_the_change_is_rolled_back(
    cluster: RunningCluster, kube: Kube, make_executor: MakeExecutor, audit: AuditLog
) -> None:
    deploy(kube, "cart")
    flaky = {"armed": True}

    def once(request: object) -> bool:
        hit = getattr(request, "method", "") == "PATCH" and "dryRun" not in request.params and flaky["armed"]  # type: ignore[attr-defined]
        if hit:
            flaky["armed"] = False
        return hit

    cluster.call(lambda c: setattr(c, "fail_after_apply", once))
    outcome = make_executor().submit(PatchResources("shop", "cart", container="cart", limits={"memory": "256Mi"}), SURE)
    assert outcome.status == "failed"
    assert "it had been applied and was rolled back" in outcome.detail
    assert memory_limit(kube, "cart") == "128Mi"
    records = list(audit.records(request_id=outcome.request_id))
    assert [r.kind for r in records] == ["decision", "dry_run", "intent", "execute_failed", "rolled_back", "outcome"]
    assert "500" in records[3].data["error"]
    assert audit.verify().ok


def test_an_api_error_before_the_server_applied_the_change_is_recorded_as_not_applied(
    cluster: RunningCluster, kube: Kube, make_executor: MakeExecutor, audit: AuditLog
) -> None:
    deploy(kube, "cart")
    cluster.call(lambda c: setattr(c, "fail_before_apply", lambda r: r.method == "PATCH" and "dryRun" not in r.params))
    outcome = make_executor().submit(PatchResources("shop", "cart", container="cart", limits={"memory": "256Mi"}), SURE)
    assert outcome.status == "failed"
    assert "the change was not applied" in outcome.detail
    reconciled = [r for r in audit.records(request_id=outcome.request_id) if r.kind == "reconciled"]
    assert reconciled[0].data == {"state": "not applied"}


def test_the_api_down_while_deciding_fails_without_acting(
    cluster: RunningCluster, kube: Kube, make_executor: MakeExecutor
) -> None:
    deploy(kube, "cart")
    executor = make_executor()
    cluster.stop()
    outcome = executor.submit(PatchResources("shop", "cart", container="cart", limits={"memory": "256Mi"}), SURE)
    assert outcome.status == "failed"
    assert "cannot read the cluster to decide" in outcome.detail


def test_an_unsure_diagnosis_waits_for_a_human_who_approves(
    kube: Kube, make_executor: MakeExecutor, audit: AuditLog, approvals: Approvals
) -> None:
    deploy(kube, "cart")
    executor = make_executor()
    held = executor.submit(PatchResources("shop", "cart", container="cart", limits={"memory": "256Mi"}), UNSURE)
    assert held.status == "pending_approval"
    assert held.approval_id is not None
    assert memory_limit(kube, "cart") == "128Mi"
    pending = approvals.listed()
    assert [a.id for a in pending] == [held.approval_id]
    shown = pending[0].as_json()
    assert shown["diagnosis"]["summary"] == UNSURE.summary
    assert shown["decision"]["approval"] == ["medium-risk action and the diagnosis confidence 0.5 is under 0.8"]
    assert shown["blast_radius"]["pods_at_once"] == 1
    assert shown["dry_run"]["after"]["limits"]["memory"] == "256Mi"
    done = executor.approve(held.approval_id, "alice", "looked at the graphs")
    assert done.status == "succeeded", done.detail
    assert memory_limit(kube, "cart") == "256Mi"
    approved = next(r for r in audit.records(request_id=held.request_id) if r.kind == "approved")
    assert approved.actor == "alice"
    with pytest.raises(ApprovalError, match="already approved by alice"):
        executor.approve(held.approval_id, "bob")


def test_a_rejected_or_expired_approval_never_acts(
    kube: Kube, make_executor: MakeExecutor, audit: AuditLog, approvals: Approvals
) -> None:
    deploy(kube, "cart")
    executor = make_executor("approve-all")
    held = executor.submit(PatchResources("shop", "cart", container="cart", limits={"memory": "256Mi"}), SURE)
    assert held.status == "pending_approval"
    assert "actions.mode is approve-all" in held.detail
    assert held.approval_id is not None
    rejected = executor.reject(held.approval_id, "bob", "not during the sale")
    assert rejected.status == "rejected"
    assert memory_limit(kube, "cart") == "128Mi"

    other = executor.submit(PatchResources("shop", "cart", container="cart", limits={"memory": "300Mi"}), SURE)
    assert other.approval_id is not None
    approvals.ttl_s = 0.0
    expiring = executor.submit(PatchResources("shop", "cart", container="cart", limits={"memory": "320Mi"}), SURE)
    assert expiring.approval_id is not None
    with pytest.raises(ApprovalExpired):
        executor.approve(expiring.approval_id, "alice")
    assert [o.approval_id for o in executor.expire()] == []  # already marked expired by the refused approval
    assert memory_limit(kube, "cart") == "128Mi"
    assert "rejected" in kinds(audit, held.request_id)


def test_rootwards_own_namespace_is_never_touched(kube: Kube, audit: AuditLog, approvals: Approvals) -> None:
    """Its kubeletstats reach it too: a Rootward near its memory limit must not restart or resize itself (the
    restart would end the verification under way, and on an emptyDir the audit log with it)."""
    deploy(kube, "rootward", namespace="rootward", replicas=3)
    pod = kube.pods("rootward", {"app": "rootward"})[0]["metadata"]["name"]
    policy = PolicyEngine(home_namespace="rootward")
    try:
        executor = Executor(kube, policy, audit, approvals, mode="autonomous")
        for request in (
            RestartPod("rootward", pod),
            PatchResources("rootward", "rootward", container="rootward", limits={"memory": "1Gi"}),
        ):
            outcome = executor.submit(request, SURE)
            assert outcome.status == "denied", request
            assert "namespace rootward is Rootward's own: it never acts on itself" in outcome.detail
        assert pod in {p["metadata"]["name"] for p in kube.pods("rootward")}
        elsewhere = executor.submit(RestartPod("shop", _a_pod(kube)), SURE)
        assert elsewhere.status == "succeeded", elsewhere.detail
    finally:
        policy.close()


def _a_pod(kube: Kube) -> str:
    deploy(kube, "cart", replicas=5)
    return str(kube.pods("shop", {"app": "cart"})[0]["metadata"]["name"])


def test_the_running_policy_knows_rootwards_namespace_and_config_check_prints_its_digest(tmp_path: Path) -> None:
    config = load_config(environ={}, overrides=["actions.lease.namespace=ops-rootward"])
    engine = PolicyEngine.from_config(config)
    try:
        assert engine.settings["home_namespace"] == "ops-rootward"
        path = tmp_path / "rootward.yaml"
        path.write_text("actions:\n  lease: {namespace: ops-rootward}\n")
        checked = CliRunner().invoke(main, ["config", "check", str(path)], env={})
        assert f"bundle {engine.digest}" in checked.output, checked.output
        assert engine.digest != PolicyEngine().digest
    finally:
        engine.close()
