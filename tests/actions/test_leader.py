"""Leader election on a Lease through the API: one holder among replicas, take-over after expiry, hand-over."""

from __future__ import annotations

from cluster import MakeExecutor, deploy

from rootward.actions import Diagnosis, Kube, PatchResources
from rootward.actions.leader import LeaderElector
from rootward.clock import ManualClock


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
