"""The brake (actions/pause.py): a pause on the Lease, written by any Rootward or by kubectl, read by every one on
its next election round; while it holds, requests run as dry runs and approvals wait; resumed, actions run again."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from cluster import MakeExecutor, deploy, kinds, memory_limit
from test_concurrency import held_executor, verifying

from rootward.actions import Diagnosis, Kube, PatchResources
from rootward.actions.leader import CHANGES_ANNOTATION, PAUSED_ANNOTATION, LeaderElector
from rootward.actions.pause import LocalPause, parse
from rootward.clock import ManualClock
from rootward.policies import Approvals, AuditLog
from rootward.policies.errors import ApprovalError

OOM = Diagnosis("cart is OOMKilled", 0.95, "inc-pause")


def _elector(kube: Kube, clock: ManualClock, name: str) -> LeaderElector:
    return LeaderElector(kube, "rootward", "rootward-executor", name, duration_s=15, renew_s=5, clock=clock)


def _raise(memory: str) -> PatchResources:
    return PatchResources("shop", "cart", container="cart", limits={"memory": memory})


def test_a_pause_written_by_one_rootward_holds_the_holders_actions_until_resumed(
    kube: Kube, make_executor: MakeExecutor, audit: AuditLog
) -> None:
    clock = ManualClock(1_700_000_000.0)
    holder, other = _elector(kube, clock, "replica-a"), _elector(kube, clock, "replica-b")
    assert holder.step()
    other.step()
    deploy(kube, "cart")
    executor = make_executor(is_leader=holder.is_leader, pause=holder)
    brake = make_executor(pause=other)  # the pod whose API took the request
    brake.pause_actions("alice", "incident review")
    assert holder.paused is None  # the holder reads it on its next round
    clock.advance(5)
    assert holder.step()
    assert holder.paused is not None
    assert holder.paused.by == "alice"
    outcome = executor.submit(_raise("256Mi"), OOM)
    assert outcome.status == "dry_run"
    assert "actions are paused (paused by alice at 2023-11-14 22:13:20 UTC: incident review)" in outcome.detail
    assert memory_limit(kube, "cart") == "128Mi"
    decision = next(r for r in audit.records(request_id=outcome.request_id) if r.kind == "decision")
    assert decision.data["mode"] == "dry-run"
    assert decision.data["paused"].startswith("paused by alice")
    assert [r.kind for r in audit.records() if r.kind in ("paused", "resumed")] == ["paused"]
    brake.resume_actions("bob")
    clock.advance(5)
    holder.step()
    assert holder.paused is None
    again = executor.submit(_raise("256Mi"), Diagnosis("cart is OOMKilled", 0.95, "inc-after"))
    assert again.status == "succeeded", again.detail
    assert memory_limit(kube, "cart") == "256Mi"
    assert [(r.kind, r.actor) for r in audit.records() if r.kind in ("paused", "resumed")] == [
        ("paused", "alice"),
        ("resumed", "bob"),
    ]


def test_while_paused_no_approval_is_accepted_and_it_stays_pending(
    kube: Kube, make_executor: MakeExecutor, approvals: Approvals
) -> None:
    deploy(kube, "cart")
    executor = make_executor("approve-all")
    asked = executor.submit(_raise("256Mi"), OOM)
    assert asked.status == "pending_approval"
    executor.pause_actions("alice", "freeze")
    with pytest.raises(ApprovalError, match=r"actions are paused \(paused by alice .*: freeze\)"):
        executor.approve(asked.approval_id or "", "bob")
    assert [a.id for a in approvals.listed("pending")] == [asked.approval_id]
    executor.resume_actions("alice")
    assert executor.approve(asked.approval_id or "", "bob").status == "succeeded"
    assert kinds(executor.audit, asked.request_id)[-1] == "outcome"


@pytest.mark.parametrize(
    ("value", "by", "reason"),
    [
        ("incident review", "the Lease's annotation", "incident review"),  # kubectl annotate ... =TEXT
        ('{"by": "carol", "reason": "game day"', "the Lease's annotation", '{"by": "carol", "reason": "game day"'),
        ("true", "the Lease's annotation", "true"),
    ],
    ids=["text", "malformed-json", "true"],
)
def test_any_value_kubectl_writes_pauses(kube: Kube, value: str, by: str, reason: str) -> None:
    clock = ManualClock()
    holder = _elector(kube, clock, "replica-a")
    assert holder.step()
    kube.patch_lease("rootward", "rootward-executor", [{"op": "add", "path": "/metadata/annotations", "value": {}}])
    path = "/metadata/annotations/" + PAUSED_ANNOTATION.replace("/", "~1")
    kube.patch_lease("rootward", "rootward-executor", [{"op": "add", "path": path, "value": value}])
    clock.advance(5)
    holder.step()
    assert holder.paused is not None
    assert (holder.paused.by, holder.paused.reason) == (by, reason)
    holder.clear_paused()
    holder.clear_paused()  # none there: done
    clock.advance(5)
    holder.step()
    assert holder.paused is None


def test_a_blank_or_absent_value_does_not_pause() -> None:
    assert parse(None) is None
    assert parse("  ") is None
    assert parse(7) is None
    found = parse('{"by": "dave", "at": 1700000000, "reason": "x"}')
    assert found is not None
    assert found.describe() == "paused by dave at 2023-11-14 22:13:20 UTC: x"


def test_without_a_lease_the_pause_is_this_rootwards_own(kube: Kube, make_executor: MakeExecutor) -> None:
    deploy(kube, "cart")
    executor = make_executor()
    assert isinstance(executor.pause, LocalPause)
    executor.pause_actions("alice", "")
    assert executor.submit(_raise("256Mi"), OOM).status == "dry_run"
    executor.resume_actions("alice")
    assert executor.submit(_raise("256Mi"), Diagnosis("oom", 0.95, "inc-2")).status == "succeeded"


def test_a_change_queued_behind_a_verification_does_not_run_once_paused(
    kube: Kube, make_executor: MakeExecutor, audit: AuditLog
) -> None:
    executor, held = held_executor(kube, make_executor)
    email = PatchResources("shop", "email", container="email", limits={"memory": "256Mi"})
    with ThreadPoolExecutor(2) as pool:
        first = verifying(pool, lambda: executor.submit(_raise("256Mi"), OOM), held)
        second = pool.submit(executor.submit, email, Diagnosis("email is OOMKilled", 0.95, "inc-email"))
        time.sleep(0.3)  # it waits for the first one's verdict
        executor.pause_actions("alice", "stop")
        held.release.set()
        assert first.result(10).status == "succeeded"
        queued = second.result(10)
    assert queued.status == "dry_run"
    assert "actions are paused (paused by alice" in queued.detail
    assert memory_limit(kube, "email") == "128Mi"


def test_a_deleted_lease_comes_back_with_its_pause(kube: Kube) -> None:
    clock = ManualClock()
    holder = _elector(kube, clock, "replica-a")
    assert holder.step()
    holder.set_paused("alice", "stop")
    holder.note_change("Deployment/shop/cart")
    kube.coordination.delete_namespaced_lease("rootward-executor", "rootward")  # a forced handover, say
    clock.advance(5)
    assert holder.step()  # made again
    annotations = kube.lease("rootward", "rootward-executor")["metadata"]["annotations"]
    assert parse(annotations[PAUSED_ANNOTATION]) is not None
    assert "Deployment/shop/cart" in annotations[CHANGES_ANNOTATION]
    other = _elector(kube, clock, "replica-b")
    other.step()
    assert other.paused is not None
    assert other.paused.reason == "stop"


def test_a_pause_written_while_the_holder_lists_a_change_is_kept(kube: Kube) -> None:
    clock = ManualClock()
    holder, other = _elector(kube, clock, "replica-a"), _elector(kube, clock, "replica-b")
    assert holder.step()
    read = kube.lease

    def pause_in_between(namespace: str, name: str) -> dict[str, object]:
        found = read(namespace, name)
        kube.lease = read  # once: between the holder's read and its write
        other.set_paused("alice", "stop")
        return found

    kube.lease = pause_in_between  # type: ignore[method-assign]
    holder.note_change("Deployment/shop/cart")
    annotations = read("rootward", "rootward-executor")["metadata"]["annotations"]
    assert PAUSED_ANNOTATION in annotations
    assert CHANGES_ANNOTATION in annotations
