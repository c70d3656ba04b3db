"""Leader election on a Lease through the API: one holder among replicas, take-over after expiry, hand-over."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from cluster import MakeExecutor, RunningCluster, deploy, memory_limit

from rootward.acting import Acting
from rootward.actions import Diagnosis, Executor, Kube, PatchResources
from rootward.actions.errors import ActionError
from rootward.actions.executor import Outcome
from rootward.actions.leader import CHANGES_ANNOTATION, LEADER_LABEL, Change, LeaderElector
from rootward.clock import ManualClock
from rootward.config import load_config
from rootward.policies import Approvals, AuditLog
from rootward.policies.engine import PolicyEngine
from rootward.policies.errors import ApprovalExpired
from rootward.topology import TopologyGraph


def _pair(kube: Kube, clock: ManualClock) -> tuple[LeaderElector, LeaderElector]:
    a = LeaderElector(kube, "rootward", "rootward-executor", "replica-a", duration_s=15, renew_s=5, clock=clock)
    b = LeaderElector(kube, "rootward", "rootward-executor", "replica-b", duration_s=15, renew_s=5, clock=clock)
    return a, b


def test_two_replicas_one_lease_holder(kube: Kube) -> None:
    clock = ManualClock()
    a, b = _pair(kube, clock)
    assert a.step() is True
    assert b.step() is False
    clock.advance(5)
    assert a.step() is True  # renewed
    assert b.step() is False
    lease = kube.lease("rootward", "rootward-executor")["spec"]
    assert lease["holderIdentity"] == "replica-a"


def test_a_holder_that_stops_renewing_loses_the_lease_to_the_other(kube: Kube) -> None:
    clock = ManualClock()
    a, b = _pair(kube, clock)
    assert a.step()
    clock.advance(10)
    assert b.step() is False  # not expired yet
    assert a.is_leader()
    clock.advance(6)  # 16 s since a renewed: a stops counting itself leader, b takes over
    assert not a.is_leader()
    assert b.step() is True
    assert a.step() is False
    spec = kube.lease("rootward", "rootward-executor")["spec"]
    assert spec["holderIdentity"] == "replica-b"
    assert spec["leaseTransitions"] == 1


def test_a_holder_that_shuts_down_hands_over_at_once(kube: Kube) -> None:
    clock = ManualClock()
    a, b = _pair(kube, clock)
    assert a.step()
    a.shutdown()
    assert b.step() is True


def test_only_the_leader_acts(kube: Kube, make_executor: MakeExecutor) -> None:
    clock = ManualClock()
    a, b = _pair(kube, clock)
    a.step()
    b.step()
    deploy(kube, "cart")
    request = PatchResources("shop", "cart", container="cart", limits={"memory": "256Mi"})
    follower = make_executor(is_leader=b.is_leader).submit(request, Diagnosis("oom", 0.9, "inc-b"))
    assert follower.status == "not_leader"
    leader = make_executor(is_leader=a.is_leader).submit(request, Diagnosis("oom", 0.9, "inc-a"))
    assert leader.status == "succeeded"


def _own_pods(kube: Kube) -> None:
    for name in ("rootward-a", "rootward-b"):
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "rootward",
               "labels": {"app.kubernetes.io/name": "rootward"}}, "spec": {"containers": [{"name": "rootward"}]}}  # fmt: skip
        kube.core.create_namespaced_pod("rootward", pod)


def _labels(kube: Kube, pod: str) -> dict[str, str]:
    return dict(kube.pod("rootward", pod)["metadata"].get("labels") or {})


def test_the_holder_labels_its_own_pod_and_the_label_moves_with_the_lease(kube: Kube) -> None:
    """The Service rootward-leader selects rootward.dev/leader=true: it must follow the Lease, on one pod at a time."""
    _own_pods(kube)
    clock = ManualClock()
    a = LeaderElector(kube, "rootward", "rootward-executor", "a", 15, 5, clock, pod="rootward-a")
    b = LeaderElector(kube, "rootward", "rootward-executor", "b", 15, 5, clock, pod="rootward-b")
    assert a.step()
    assert not b.step()
    assert _labels(kube, "rootward-a")[LEADER_LABEL] == "true"
    assert LEADER_LABEL not in _labels(kube, "rootward-b")
    clock.advance(16)  # a did not renew (it could not reach the API): b takes over, and labels its pod
    assert b.step()
    assert _labels(kube, "rootward-a")[LEADER_LABEL] == "true"  # both, until a's next round
    assert not a.step()
    assert LEADER_LABEL not in _labels(kube, "rootward-a")
    assert _labels(kube, "rootward-b")[LEADER_LABEL] == "true"
    assert _labels(kube, "rootward-b")["app.kubernetes.io/name"] == "rootward"  # the others stay
    b.shutdown()  # gives the Lease up and its label with it
    assert LEADER_LABEL not in _labels(kube, "rootward-b")


def test_a_label_that_cannot_be_written_is_tried_again_next_round(kube: Kube) -> None:
    """The pod is not there yet (or RBAC refuses): the holder still leads, and labels it once it can."""
    clock = ManualClock()
    a = LeaderElector(kube, "rootward", "rootward-executor", "a", 15, 5, clock, pod="rootward-a")
    assert a.step()
    _own_pods(kube)
    clock.advance(5)
    assert a.step()
    assert _labels(kube, "rootward-a")[LEADER_LABEL] == "true"


def test_the_holder_read_in_the_lease_is_known_to_every_replica(kube: Kube) -> None:
    """Senders following the Lease connect anew when it changes (rootward/gateway.py)."""
    clock = ManualClock()
    a, b = _pair(kube, clock)
    assert a.step()
    assert not b.step()
    assert (a.holder, b.holder) == ("replica-a", "replica-a")


def test_an_elector_that_never_ran_does_not_touch_its_pod_at_shutdown(kube: Kube) -> None:
    _own_pods(kube)
    a = LeaderElector(kube, "rootward", "rootward-executor", "a", 15, 5, ManualClock(), pod="rootward-a")
    calls: list[object] = []
    kube.patch_pod = lambda *args: calls.append(args)  # type: ignore[method-assign]
    a.shutdown()
    assert calls == []


def test_a_label_whose_pod_is_gone_is_taken_as_off(kube: Kube) -> None:
    """Removing the label of a pod that is not there (404) is done: no warning every round."""
    clock = ManualClock()
    a = LeaderElector(kube, "rootward", "rootward-executor", "a", 15, 5, clock, pod="rootward-gone")
    b = LeaderElector(kube, "rootward", "rootward-executor", "b", 15, 5, clock)
    assert b.step()
    assert not a.step()
    assert a._labelled is False
    assert not a._label_failed


def test_the_cooldown_holds_across_a_handover(kube: Kube, policy: PolicyEngine, tmp_path: Path) -> None:
    """Each holder has its own audit log (on the DaemonSet, its pod's emptyDir): the change a's executor made is
    listed on the Lease, and b, holding it next, waits out the cooldown on cart as a would have."""
    deploy(kube, "cart")
    clock = ManualClock()
    a, b = _pair(kube, clock)
    assert a.step()
    with ExitStack() as stack:

        def executor(elector: LeaderElector, name: str) -> Executor:
            audit = stack.enter_context(AuditLog(tmp_path / f"{name}.db"))
            approvals = Approvals(tmp_path / f"{name}.db", ttl_s=60)
            stack.callback(approvals.close)
            return Executor(kube, policy, audit, approvals, mode="autonomous", verify_timeout_s=2.0, clock=clock,
                            poll_interval_s=0.05, is_leader=elector.is_leader, ledger=elector)  # fmt: skip

        first = executor(a, "a").submit(PatchResources("shop", "cart", container="cart", limits={"memory": "256Mi"}),
                                        Diagnosis("oom", 0.95, "inc-1"))  # fmt: skip
        assert first.status == "succeeded"
        a.shutdown()  # hands the Lease over
        assert b.step()
        assert [c.target for c in b.changes(0.0)] == ["Deployment/shop/cart"]
        again = executor(b, "b").submit(PatchResources("shop", "cart", container="cart", limits={"memory": "384Mi"}),
                                        Diagnosis("oom", 0.95, "inc-2"))  # fmt: skip
    assert again.status == "denied"
    assert "cooldown: Deployment/shop/cart was acted on" in again.detail
    assert memory_limit(kube, "cart") == "256Mi"


def test_changes_older_than_kept_leave_the_lease_and_a_follower_cannot_list_one(kube: Kube) -> None:
    clock = ManualClock(10_000.0)
    a = LeaderElector(kube, "rootward", "rootward-executor", "a", 15, 5, clock, keep_s=100)
    b = LeaderElector(kube, "rootward", "rootward-executor", "b", 15, 5, clock)
    assert a.step()
    a.note_change("Deployment/shop/cart")
    clock.advance(150)
    a.note_change("Deployment/shop/pay")
    assert [c.target for c in a.changes(0.0)] == ["Deployment/shop/pay"]
    with pytest.raises(ActionError):  # the Lease's holder is a, not b: the guarded patch is refused
        b.note_change("Deployment/shop/cart")


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("[[1, 2], oops", id="not-json"),
        pytest.param("[" * 100_000 + "]" * 100_000, id="nested-past-the-recursion-limit"),
        pytest.param("[[" + "9" * 400 + ', "Deployment/shop/cart", "executed"]]', id="a-time-past-float"),
        pytest.param('[[Infinity, "Deployment/shop/cart", "executed"]]', id="infinite"),
        pytest.param('[[1e12, "Deployment/shop/cart", "executed"]]', id="far-in-the-future"),
        pytest.param('[[1, "Deployment/shop/cart", "deleted"]]', id="unknown-kind"),
        pytest.param('{"a": 1}', id="not-a-list"),
    ],
)
def test_a_malformed_changes_annotation_lists_nothing_and_the_election_goes_on(kube: Kube, raw: str) -> None:
    clock = ManualClock()
    a, b = _pair(kube, clock)
    assert a.step()
    annotations = {CHANGES_ANNOTATION: raw, "keep.me/please": "yes"}
    kube.patch_lease(
        "rootward", "rootward-executor", [{"op": "add", "path": "/metadata/annotations", "value": annotations}]
    )
    clock.advance(5)
    assert a.step()
    assert not b.step()
    assert a.changes(0.0) == []
    a.note_change("Deployment/shop/cart")  # and is written anew, the other annotations kept
    assert [c.target for c in a.changes(0.0)] == ["Deployment/shop/cart"]
    assert kube.lease("rootward", "rootward-executor")["metadata"]["annotations"]["keep.me/please"] == "yes"


class Listed:
    """A ledger of a predecessor's changes (the Lease's list), and what this holder lists on it."""

    def __init__(self, changes: list[Change], fail: Exception | None = None) -> None:
        self.listed, self.fail, self.noted = changes, fail, list[tuple[str, str]]()

    def changes(self, since: float) -> list[Change]:
        return [c for c in self.listed if c.at >= since]

    def note_change(self, target: str, kind: str = "executed") -> None:
        if self.fail is not None:
            raise self.fail
        self.noted.append((target, kind))


def test_the_rate_limit_counts_the_predecessors_executed_changes_and_not_its_rollbacks(
    kube: Kube, make_executor: MakeExecutor
) -> None:
    deploy(kube, "cart")
    deploy(kube, "pay")
    now = time.time()
    nine = [Change(now - 60 * i, f"Deployment/shop/s{i}", "executed") for i in range(9)]
    rolled = [Change(now - 30, "Deployment/shop/s0", "rolled_back")]
    first = make_executor(ledger=Listed(nine + rolled)).submit(
        PatchResources("shop", "cart", container="cart", limits={"memory": "256Mi"}), Diagnosis("oom", 0.95, "i-1")
    )
    assert first.status == "succeeded"  # 9 executed in the hour: the tenth may go (a rollback is no new change)
    ten = Listed([*nine, Change(now - 5, "Deployment/shop/s9", "executed")])
    again = make_executor(ledger=ten).submit(
        PatchResources("shop", "pay", container="pay", limits={"memory": "256Mi"}), Diagnosis("oom", 0.95, "i-2")
    )
    assert again.status == "denied"
    assert "rate limit" in again.detail


def test_a_ledger_that_fails_never_changes_what_the_action_does(kube: Kube, make_executor: MakeExecutor) -> None:
    deploy(kube, "cart")
    ledger = Listed([], fail=RuntimeError("the annotation could not be parsed"))
    outcome = make_executor(ledger=ledger).submit(
        PatchResources("shop", "cart", container="cart", limits={"memory": "256Mi"}), Diagnosis("oom", 0.95, "i-1")
    )
    assert outcome.status == "succeeded"  # verified and recorded all the same
    assert memory_limit(kube, "cart") == "256Mi"


def test_a_change_is_listed_with_its_kind(kube: Kube, make_executor: MakeExecutor) -> None:
    deploy(kube, "cart")
    ledger = Listed([])
    make_executor(ledger=ledger).submit(
        PatchResources("shop", "cart", container="cart", limits={"memory": "256Mi"}), Diagnosis("oom", 0.95, "i-1")
    )
    assert ledger.noted == [("Deployment/shop/cart", "executed")]


def test_a_holder_that_loses_the_lease_withdraws_its_pending_approvals(
    cluster: RunningCluster, kube: Kube, tmp_path: Path
) -> None:
    clock = ManualClock()
    with _holding_an_approval(cluster, kube, tmp_path, clock) as (acting, asked):
        assert asked.status == "pending_approval"
        b = LeaderElector(kube, "rootward", "rootward-executor", "replica-b", duration_s=15, renew_s=5, clock=clock)
        clock.advance(16)  # a did not renew: b takes the Lease, a learns it on its next round
        assert b.step()
        assert acting.elector.step() is False
        (withdrawn,) = acting.approvals.listed("expired")
        assert withdrawn.id == asked.approval_id
        assert (
            withdrawn.comment
            == "this Rootward lost the Lease (replica-b holds it now and proposes again for its own incidents)"
        )
        assert [r.kind for r in acting.audit.records(request_id=asked.request_id)][-2:] == ["expired", "outcome"]
        assert acting.approvals.listed("pending") == []
        with pytest.raises(ApprovalExpired, match="expired: this Rootward lost the Lease"):
            acting.executor.approve(asked.approval_id or "", "alice")
        assert memory_limit(kube, "cart") == "128Mi"


def test_an_api_blip_that_ends_with_the_same_holder_withdraws_nothing(
    cluster: RunningCluster, kube: Kube, tmp_path: Path
) -> None:
    clock = ManualClock()
    with _holding_an_approval(cluster, kube, tmp_path, clock) as (acting, asked):
        read = kube.lease

        def down(namespace: str, name: str) -> dict[str, object]:
            raise ActionError("the API server is being upgraded")

        kube.lease = down  # type: ignore[method-assign]
        for _ in range(4):  # 20 s without a renewal: it stops counting itself the holder
            clock.advance(5)
            acting.elector.step()
        assert not acting.elector.is_leader()
        kube.lease = read  # type: ignore[method-assign]
        clock.advance(5)
        assert acting.elector.step()  # no one else took it: the same holder again
        assert [a.id for a in acting.approvals.listed("pending")] == [asked.approval_id]


@contextmanager
def _holding_an_approval(
    cluster: RunningCluster, kube: Kube, tmp_path: Path, clock: ManualClock
) -> Iterator[tuple[Acting, Outcome]]:
    """replica-a's acting part (approve-all) holding the Lease, with an approval pending for cart; shut down after."""
    settings = [
        f"storage.data_dir={tmp_path}", "actions.enabled=true", "actions.mode=approve-all",
        f"actions.kubernetes.host={cluster.url}", "actions.lease.identity=replica-a",
    ]  # fmt: skip
    acting = Acting(load_config(environ={}, overrides=settings), clock, TopologyGraph(), kube)
    acting.audit.open()
    try:
        deploy(kube, "cart")
        assert acting.elector.step()
        asked = acting.executor.submit(
            PatchResources("shop", "cart", container="cart", limits={"memory": "256Mi"}), Diagnosis("oom", 0.9, "inc-a")
        )
        yield acting, asked
    finally:
        acting.shutdown()
