"""One change at a time, and nothing else waits behind its verification: a collection and a second incident's
approval request are answered while a change is being verified; a second change waits for the first's verdict and
is decided on the history it left."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

from cluster import MakeExecutor, deploy, memory_limit

from rootward.actions import Diagnosis, Executor, Kube, PatchResources
from rootward.actions.executor import Outcome
from rootward.actions.requests import Collect
from rootward.policies import Approvals, AuditLog

CART = Diagnosis("cart needs more memory", 0.95, "inc-cart")
EMAIL = Diagnosis("email needs more memory", 0.95, "inc-email")


class Held:
    """Verification's "has the anomaly cleared?": no, until released (a change held under verification)."""

    def __init__(self) -> None:
        self.asked = threading.Event()
        self.release = threading.Event()

    def __call__(self, diagnosis: Diagnosis) -> bool:
        self.asked.set()
        return self.release.is_set()


def held_executor(kube: Kube, make_executor: MakeExecutor, mode: str = "autonomous") -> tuple[Executor, Held]:
    """An executor whose verifications wait until released, with Deployments cart and email to change."""
    deploy(kube, "cart")
    deploy(kube, "email")
    held = Held()
    return make_executor(mode, anomaly_cleared=held, verify_timeout_s=30), held


def verifying(pool: ThreadPoolExecutor, call: object, held: Held) -> Future[Outcome]:
    """``call`` submitted to ``pool``, once the change it makes has reached verification (held there)."""
    future: Future[Outcome] = pool.submit(call)  # type: ignore[arg-type]
    assert held.asked.wait(10), "the change never reached verification"
    return future


def test_a_collection_is_answered_while_a_change_is_verified(
    kube: Kube, make_executor: MakeExecutor, audit: AuditLog
) -> None:
    executor, held = held_executor(kube, make_executor)
    change = PatchResources("shop", "cart", container="cart", limits={"memory": "256Mi"})
    with ThreadPoolExecutor(1) as pool:
        first = verifying(pool, lambda: executor.submit(change, CART), held)
        pod = kube.pods("shop", {"app": "email"})[0]["metadata"]["name"]
        started = time.monotonic()
        collected = executor.submit(Collect("shop", pod, tail_lines=10), EMAIL)
        answered_in = time.monotonic() - started
        assert not first.done()  # still verifying when it was answered
        held.release.set()
        assert first.result(10).status == "succeeded"
    assert collected.status == "succeeded", collected.detail
    assert answered_in < 10
    assert memory_limit(kube, "cart") == "256Mi"
    assert audit.verify().ok


def test_a_second_change_waits_for_the_first_ones_verdict(
    kube: Kube, make_executor: MakeExecutor, audit: AuditLog
) -> None:
    executor, held = held_executor(kube, make_executor)
    with ThreadPoolExecutor(2) as pool:
        first = verifying(
            pool,
            lambda: executor.submit(PatchResources("shop", "cart", container="cart", limits={"memory": "256Mi"}), CART),
            held,
        )
        second = pool.submit(
            executor.submit, PatchResources("shop", "email", container="email", limits={"memory": "256Mi"}), EMAIL
        )
        time.sleep(0.5)
        assert not second.done()  # waits: one change at a time
        assert memory_limit(kube, "email") == "128Mi"
        held.release.set()
        assert first.result(10).status == "succeeded"
        assert second.result(10).status == "succeeded"
    kinds = [(r.request_id, r.kind) for r in audit.records() if r.kind in ("intent", "outcome")]
    first_id, second_id = first.result().request_id, second.result().request_id
    assert kinds.index((first_id, "outcome")) < kinds.index((second_id, "intent"))


def test_an_approval_request_is_made_while_an_approved_change_is_verified(
    kube: Kube, make_executor: MakeExecutor, approvals: Approvals
) -> None:
    executor, held = held_executor(kube, make_executor, "approve-all")
    asked = executor.submit(PatchResources("shop", "cart", container="cart", limits={"memory": "256Mi"}), CART)
    assert asked.status == "pending_approval"
    assert asked.approval_id
    with ThreadPoolExecutor(1) as pool:
        approved = verifying(pool, lambda: executor.approve(asked.approval_id or "", "alice"), held)
        other = executor.submit(PatchResources("shop", "email", container="email", limits={"memory": "256Mi"}), EMAIL)
        assert other.status == "pending_approval"
        assert not approved.done()
        held.release.set()
        assert approved.result(10).status == "succeeded"
    assert [a.request_id for a in approvals.listed()] == [other.request_id]


def test_stopping_waits_for_the_change_under_verification_to_be_recorded(
    kube: Kube, make_executor: MakeExecutor, audit: AuditLog
) -> None:
    executor, held = held_executor(kube, make_executor)
    change = PatchResources("shop", "cart", container="cart", limits={"memory": "256Mi"})
    with ThreadPoolExecutor(1) as pool:
        first = verifying(pool, lambda: executor.submit(change, CART), held)
        executor.stop(timeout_s=10)
        recorded = [r.kind for r in audit.records()]  # as stop returned: the interrupted verification is recorded
        outcome = first.result(10)
    assert recorded[-2:] == ["verification_interrupted", "outcome"]
    assert outcome.status == "failed"
    assert "stopped while verifying" in outcome.detail
