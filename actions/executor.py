"""The guarded executor: every action request goes policy -> audit -> server-side dry-run -> (approval) ->
audit of intent -> execute -> verify -> audit of the outcome -> automatic rollback when verification fails.

:meth:`Executor.submit` is the entry point (the agent calls it with a request and the diagnosis behind it);
:meth:`Executor.approve` / :meth:`Executor.reject` continue or end a request that waits for a human. Each returns
an :class:`Outcome`. Every step is an audit record under the request's id, and the record of an intent is
written before the change, so a crash leaves an intent without an outcome, never a change without a record.

A feature-flag toggle (``toggle_flag``, flags.py) takes the same steps without the Kubernetes API: its dry run
evaluates the flag through OpenFeature and shows the change, its verification reads the flag back the same way.

Modes (``actions.mode``): ``dry-run`` (the default) decides and dry-runs on the server, never changes anything;
``approve-all`` holds every allowed change for a human; ``autonomous`` lets policy decide what runs alone.

Idempotent and safe to retry: a request's id is derived from the request and its incident, so submitting the
same request for the same incident again returns the earlier outcome instead of acting twice; changes are JSON
Patches guarded by ``test`` operations, so one made against a state that moved fails instead of overwriting it.
A Kubernetes API error while changing leaves an ``execute_failed`` record, then the executor reads the object back:
changed (the server applied it before failing) -> it is rolled back to the captured state; unchanged -> recorded
as not applied; unreadable -> recorded as unknown with the captured state to restore by hand.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any, Literal, Protocol

from rootward.actions.errors import ActionError
from rootward.actions.flags import FeatureFlags, FlagOperation
from rootward.actions.kube import Kube
from rootward.actions.operations import BlastRadius, Health, Operation, operation
from rootward.actions.pause import LocalPause, Pause, Paused
from rootward.actions.requests import ActionRequest, Target, ToggleFlag, from_json
from rootward.clock import Clock, SystemClock
from rootward.policies.approvals import Approval, Approvals
from rootward.policies.audit import AuditLog, canonical
from rootward.policies.engine import INPUT_SCHEMA, Decision, PolicyEngine
from rootward.policies.errors import ApprovalError

logger = logging.getLogger(__name__)

Mode = Literal["dry-run", "approve-all", "autonomous"]
Status = Literal[
    "denied", "dry_run", "pending_approval", "succeeded", "rolled_back", "failed", "rejected", "expired", "not_leader"
]
#: Outcomes that a second submission of the same request returns instead of acting again.
SETTLED = ("succeeded", "rolled_back", "pending_approval")
#: Audit kinds that count as a change for cooldowns and the rate limit.
CHANGES = ("executed", "rolled_back")


class Listed(Protocol):
    @property
    def at(self) -> float: ...

    @property
    def target(self) -> str: ...

    @property
    def kind(self) -> str: ...  # executed or rolled_back


class Ledger(Protocol):
    """Changes made by whoever acted before, shared beyond this audit log (the Lease: actions/leader.py)."""

    def changes(self, since: float) -> Sequence[Listed]: ...

    def note_change(self, target: str, kind: str = "executed") -> None: ...


@dataclass(frozen=True)
class Diagnosis:
    """What the request is meant to fix: ``input.diagnosis`` for policy, and what an approver reads."""

    summary: str
    confidence: float
    incident_id: str | None = None
    root_cause: str | None = None
    evidence: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "summary": self.summary,
            "confidence": self.confidence,
            "incident_id": self.incident_id,
            "root_cause": self.root_cause,
            "evidence": list(self.evidence),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Diagnosis:
        return cls(
            str(data.get("summary", "")),
            float(data.get("confidence", 0.0)),
            data.get("incident_id"),
            data.get("root_cause"),
            tuple(data.get("evidence") or ()),
        )


@dataclass(frozen=True)
class Outcome:
    """How a request ended (or where it waits)."""

    request_id: str
    status: Status
    detail: str
    decision: Decision | None = None
    approval_id: str | None = None
    blast_radius: BlastRadius | None = None
    result: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "status": self.status,
            "detail": self.detail,
            "decision": self.decision.as_json() if self.decision else None,
            "approval_id": self.approval_id,
            "blast_radius": self.blast_radius.as_json() if self.blast_radius else None,
        }


class Executor:
    """Carries out action requests within policy; thread-safe.

    One change at a time: a request that may change the cluster (``autonomous`` mode, or an approved request)
    holds the change lock from its decision to the end of its verification and rollback, so its decision reads a
    current history (cooldowns, the hourly rate limit) and no second change muddles what its verification reads.
    Everything else (dry runs, collections, requests that can end no further than an approval request in
    ``approve-all`` mode) takes only the short decision lock and never waits behind a verification. In
    ``autonomous`` mode any request that may change something waits for the verdict before it is decided.
    """

    def __init__(
        self,
        kube: Kube,
        policy: PolicyEngine,
        audit: AuditLog,
        approvals: Approvals,
        mode: Mode = "dry-run",
        clock: Clock | None = None,
        verify_timeout_s: float = 300.0,
        poll_interval_s: float = 2.0,
        dependents: Callable[[Target], list[str]] | None = None,
        anomaly_cleared: Callable[[Diagnosis], bool | None] | None = None,
        is_leader: Callable[[], bool] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        flags: FeatureFlags | None = None,
        ledger: Ledger | None = None,
        pause: Pause | None = None,
    ) -> None:
        """``dependents`` names the callers of a target (from the topology graph) for the blast radius;
        ``anomaly_cleared`` says whether the incident behind a diagnosis is over (None: cannot tell), and
        verification waits for it; ``is_leader`` (the Lease) is asked before acting; ``flags`` is the flagd flag
        file that ``toggle_flag`` changes (None: those requests fail); ``ledger`` lists the changes made by whoever held
        the Lease before (the cooldowns and the rate limit count them as this audit log's own); ``pause`` is where a
        pause lives (actions/pause.py; default: this process): while paused, every request runs as in ``dry-run``
        mode and no approval is accepted."""
        self.kube = kube
        self.policy = policy
        self.audit = audit
        self.approvals = approvals
        self.mode: Mode = mode
        self.clock = clock or SystemClock()
        self.verify_timeout_s = verify_timeout_s
        self.poll_interval_s = poll_interval_s
        self.dependents = dependents
        self.anomaly_cleared = anomaly_cleared
        self.is_leader = is_leader
        self.sleep = sleep
        self.flags = flags
        self.ledger = ledger
        self.pause: Pause = pause or LocalPause(self.clock)
        self._stopping = threading.Event()
        self._changing = threading.Lock()  # one change in flight, decision to verification
        self._deciding = threading.Lock()  # dedupe, decision, dry run, the change itself: short

    # Entry points

    def submit(self, request: ActionRequest, diagnosis: Diagnosis) -> Outcome:
        """Decide on ``request`` and, as far as the mode and policy allow, carry it out; return how it ended.

        Never raises for what happens in the cluster or in policy (those are outcomes, audited); raises
        AuditError when the audit log cannot be written (nothing is done without a record).
        """
        request_id = request_id_of(request, diagnosis)
        with self._turn(not request.read_only and self.mode == "autonomous") as decided:  # a pause is read inside
            earlier = self._settled(request_id)
            if earlier is not None:
                return earlier
            mode, why = self.effective_mode()
            return self._run(request, diagnosis, request_id, None, decided, mode, why)

    def effective_mode(self) -> tuple[Mode, str | None]:
        """The mode requests run in now, and why it is not ``mode`` (actions paused), else None."""
        paused = self.pause.paused
        return ("dry-run", paused.describe()) if paused else (self.mode, None)

    def pause_actions(self, who: str, reason: str) -> Paused:
        """Pause every action (recorded in the audit log as ``who``'s).

        Raises:
            ActionError: the pause cannot be written (the Lease); nothing is paused.
        """
        paused = self.pause.set_paused(who, reason)
        self.audit.append("paused", paused.as_json(), actor=who)
        logger.warning("actions %s", paused.describe())
        return paused

    def resume_actions(self, who: str) -> None:
        """End a pause (recorded as ``who``'s).

        Raises:
            ActionError: the Lease cannot be written; the pause stays.
        """
        self.pause.clear_paused()
        self.audit.append("resumed", {"by": who}, actor=who)
        logger.warning("actions resumed by %s", who)

    def approve(self, approval_id: str, who: str, comment: str = "") -> Outcome:
        """Approve a pending request as ``who`` and carry it out (policy is asked again, with the approval).

        Raises:
            ApprovalExpired, ApprovalError: it is not pending (expired, already decided, unknown).
        """
        return self.carry_out(self.accept(approval_id, who, comment))

    def accept(self, approval_id: str, who: str, comment: str = "") -> Approval:
        """Record ``who``'s approval (the first half of :meth:`approve`; the API answers after it and runs
        :meth:`carry_out` in the background).

        Raises:
            ApprovalExpired, ApprovalError: it is not pending, or actions are paused (it stays pending).
        """
        _, why = self.effective_mode()
        if why:
            raise ApprovalError(f"actions are paused ({why}): approve {approval_id} once they resume")
        approval = self.approvals.decide(approval_id, True, who, comment)
        record = partial(self.audit.append, request_id=approval.request_id, target=approval.payload.get("target"))
        record("approved", {"approval_id": approval_id, "by": who, "comment": comment}, actor=who)
        return approval

    def carry_out(self, approval: Approval) -> Outcome:
        """Run an approved request: policy again (with the approval), dry run, execute, verify."""
        request = from_json(approval.payload["request"])
        diagnosis = Diagnosis.from_json(approval.payload["diagnosis"])
        with self._turn(not request.read_only and self.mode != "dry-run") as decided:
            mode, why = self.effective_mode()  # paused since the approval was accepted: it ends as a dry run
            return self._run(request, diagnosis, approval.request_id, approval.decided_by, decided, mode, why)

    @contextmanager
    def _turn(self, changes: bool) -> Iterator[Callable[[], None]]:
        """Hold the decision lock (and the change lock first when the request may change something); yields the
        call that lets the decision lock go once the change is made (verification runs without it)."""
        with self._changing if changes else nullcontext():
            self._deciding.acquire()
            held = [True]

            def decided() -> None:
                if held[0]:
                    held[0] = False
                    self._deciding.release()

            try:
                yield decided
            finally:
                decided()

    def reject(self, approval_id: str, who: str, comment: str = "") -> Outcome:
        """Reject a pending request as ``who``.

        Raises:
            ApprovalExpired, ApprovalError: it is not pending.
        """
        approval = self.approvals.decide(approval_id, False, who, comment)
        record = partial(self.audit.append, request_id=approval.request_id, target=approval.payload.get("target"))
        record("rejected", {"approval_id": approval_id, "by": who, "comment": comment}, actor=who)
        detail = f"rejected by {who}" + (f": {comment}" if comment else "")
        record("outcome", {"status": "rejected", "detail": detail})
        return Outcome(approval.request_id, "rejected", detail, approval_id=approval_id)

    def expire(self) -> list[Outcome]:
        """Record the approvals that expired since the last call (the API's listing calls it)."""
        return self._expired(self.approvals.expire_due(), "no one decided in time")

    def withdraw(self, reason: str) -> list[Outcome]:
        """End every pending approval as expired, with ``reason`` (this Rootward lost the Lease: it may not act on
        them, and the holder proposes again for its own incidents); each is recorded."""
        outcomes = self._expired(self.approvals.withdraw_pending("rootward", reason), reason, {"reason": reason})
        if outcomes:
            logger.info("%d pending approvals withdrawn: %s", len(outcomes), reason)
        return outcomes

    def _expired(self, ended: list[Approval], detail: str, why: dict[str, Any] | None = None) -> list[Outcome]:
        """Record each of ``ended`` (expired, ``why`` beside its expiry) and its outcome."""
        outcomes = []
        for approval in ended:
            record = partial(self.audit.append, request_id=approval.request_id, target=approval.payload.get("target"))
            record("expired", {"approval_id": approval.id, "expires": approval.expires, **(why or {})})
            record("outcome", {"status": "expired", "detail": detail})
            outcomes.append(Outcome(approval.request_id, "expired", detail, approval_id=approval.id))
        return outcomes

    # The pipeline

    def _settled(self, request_id: str) -> Outcome | None:
        outcomes = [r for r in self.audit.records(request_id=request_id) if r.kind == "outcome"]
        if outcomes and outcomes[-1].data.get("status") in SETTLED:
            data = outcomes[-1].data
            return Outcome(request_id, data["status"], f"already {data['status']}: {data.get('detail', '')}")
        return None

    def policy_input(
        self,
        request: ActionRequest,
        blast: BlastRadius,
        diagnosis: Diagnosis,
        approved_by: str | None,
        mode: Mode | None = None,
    ) -> dict[str, Any]:
        """The input document of policies/README.md (schema 1)."""
        target = request.target
        now = self.clock.now()
        last = self.audit.last_time(CHANGES, target.id)
        hour = self.audit.count_since(("executed",), now - 3600)
        if self.ledger is not None:  # the Lease's list has the changes before a handover; this log has its own
            shared = self.ledger.changes(float("-inf"))  # kept as long as the longest cooldown
            last = max([c.at for c in shared if c.target == target.id] + ([last] if last is not None else []),
                       default=None)  # fmt: skip
            hour = max(hour, sum(c.at >= now - 3600 and c.kind == "executed" for c in shared))
        return {
            "schema": INPUT_SCHEMA,
            "mode": mode or self.mode,
            "action": {
                "kind": request.kind,
                "tier": request.tier,
                "read_only": request.read_only,
                "target": target.as_json(),
                "target_id": target.id,
                "params": request.params(),
            },
            "blast_radius": blast.as_json(),
            "diagnosis": diagnosis.as_json(),
            "history": {
                "last_action_on_target_s_ago": None if last is None else max(0.0, now - last),
                "actions_last_hour": hour,
            },
            "now": {"unix": now, "rfc3339": datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z")},
            "approval": {"approved_by": approved_by} if approved_by else None,
        }

    def _run(
        self,
        request: ActionRequest,
        diagnosis: Diagnosis,
        request_id: str,
        approved_by: str | None,
        decided: Callable[[], None],
        mode: Mode,
        why: str | None = None,
    ) -> Outcome:
        target = request.target
        record = partial(self.audit.append, request_id=request_id, target=target.id)

        def end(status: Status, detail: str, **kw: Any) -> Outcome:
            record("outcome", {"status": status, "detail": detail})
            logger.info("action %s %s on %s: %s (%s)", request_id, request.kind, target.id, status, detail)
            return Outcome(request_id, status, detail, **kw)

        if self.is_leader is not None and not self.is_leader():
            return end("not_leader", "another replica holds the Lease and acts")
        op = self._operation(request)
        try:
            blast = op.blast_radius()
        except ActionError as e:
            record("decision", {"request": request.as_json(), "diagnosis": diagnosis.as_json(), "error": str(e)})
            return end("failed", f"cannot read the cluster to decide: {e}")
        if self.dependents is not None:
            blast = replace(blast, dependents=tuple(self.dependents(target)))
        decision = self.policy.decide(self.policy_input(request, blast, diagnosis, approved_by, mode))
        if decision.result == "allow" and mode == "approve-all" and approved_by is None and not request.read_only:
            decision = replace(decision, result="needs_approval", approval=("actions.mode is approve-all",))
        record(
            "decision",
            {
                "request": request.as_json(),
                "diagnosis": diagnosis.as_json(),
                "blast_radius": blast.as_json(),
                "decision": decision.as_json(),
                "mode": mode,
                **({"paused": why} if why else {}),
            },
        )
        if decision.result == "deny":
            return end("denied", "; ".join(decision.reasons), decision=decision, blast_radius=blast)

        if request.read_only:
            try:
                collected = op.apply(dry_run=self.mode == "dry-run")  # reading is no change: a pause lets it be
            except ActionError as e:
                return end("failed", f"cannot collect: {e}", decision=decision, blast_radius=blast)
            record("collected", {"keys": sorted(collected)})
            return end("succeeded", "collected", decision=decision, blast_radius=blast, result=collected)

        try:
            prior = op.capture()
            dry = op.apply(dry_run=True)
        except ActionError as e:
            record("dry_run", {"ok": False, "error": str(e)})
            return end("failed", f"the server-side dry run failed: {e}", decision=decision, blast_radius=blast)
        record("dry_run", {"ok": True, "prior": prior, "result": dry})
        if mode == "dry-run":
            detail = f"dry run only: actions are paused ({why})" if why else "dry run only (actions.mode)"
            return end("dry_run", detail, decision=decision, blast_radius=blast, result=dry)

        if decision.result == "needs_approval":
            payload = {
                "request": request.as_json(),
                "target": target.id,
                "diagnosis": diagnosis.as_json(),
                "blast_radius": blast.as_json(),
                "decision": decision.as_json(),
                "dry_run": dry,
            }
            approval = self.approvals.create(request_id, payload)
            record("approval_requested", {"approval_id": approval.id, "expires": approval.expires})
            detail = "waits for a human: " + "; ".join(decision.reasons)
            return end("pending_approval", detail, decision=decision, approval_id=approval.id, blast_radius=blast)

        return self._change(op, diagnosis, record, partial(end, decision=decision, blast_radius=blast), decided)

    def _operation(self, request: ActionRequest) -> Operation:
        if isinstance(request, ToggleFlag):  # not a Kubernetes action: the flag file and OpenFeature
            return FlagOperation(request, self.kube, flags=self.flags)
        return operation(request, self.kube)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop acting (Rootward is shutting down): no change is made from now on (a request ends ``failed``,
        audited as ``not_run``); one under verification ends ``failed``, audited as ``verification_interrupted``,
        and is left as it is (its prior state is in the audit log), not rolled back on the way out. Waits up to
        ``timeout_s`` for the requests under way to be recorded."""
        self._stopping.set()
        deadline = time.monotonic() + timeout_s
        for lock in (self._changing, self._deciding):  # the change under way holds the first to its end
            if not lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
                return
            lock.release()

    def _change(
        self,
        op: Operation,
        diagnosis: Diagnosis,
        record: Callable[..., Any],
        done: Callable[..., Outcome],
        decided: Callable[[], None],
    ) -> Outcome:
        if self._stopping.is_set():
            record("not_run", {"reason": "Rootward is stopping"})
            return done("failed", "Rootward is stopping: the change was not made")
        paused = self.pause.paused  # the last moment a pause can stop it
        if paused is not None:
            record("not_run", {"reason": paused.describe()})
            return done("dry_run", f"dry run only: actions were paused before the change ({paused.describe()})")
        record("intent", {"request": op.request.as_json(), "prior": op.prior})
        try:
            result = op.apply(dry_run=False)
        except ActionError as e:
            record("execute_failed", {"error": str(e), "type": type(e).__name__})
            return done("failed", f"the change failed: {e}; {self._reconcile(op, record)}")
        record("executed", {"result": result})
        self._share(op, "executed")
        decided()  # the change is made and counted: other requests may be decided while it is verified
        health = self._verify(op, diagnosis)
        if self._stopping.is_set() and not health.done:  # cut short, not a verdict
            record("verification_interrupted", {"detail": health.detail, "prior": op.prior})
            return done("failed", f"Rootward stopped while verifying ({health.detail}); the change stays as it is")
        if health.healthy:
            record("verified", {"detail": health.detail})
            return done("succeeded", health.detail, result=result)
        record("verification_failed", {"detail": health.detail})
        if not op.revertible:
            record("rollback_unavailable", {"reason": f"{op.request.kind} cannot be undone"})
            return done("failed", f"verification failed ({health.detail}); {op.request.kind} cannot be undone")
        try:
            reverted = op.revert()
        except ActionError as e:
            record("rollback_failed", {"error": str(e), "prior": op.prior})
            return done("failed", f"verification failed ({health.detail}) and the rollback failed: {e}")
        record("rolled_back", {"result": reverted})
        self._share(op, "rolled_back")
        after = self._verify(op, None)
        record("rollback_verified" if after.healthy else "rollback_unhealthy", {"detail": after.detail})
        return done("rolled_back", f"verification failed ({health.detail}); rolled back: {after.detail}")

    def _share(self, op: Operation, kind: str) -> None:
        """List a change on the ledger; one that cannot be listed is logged (the audit log has it), and never
        changes what the action does next."""
        if self.ledger is None:
            return
        try:
            self.ledger.note_change(op.request.target.id, kind)
        except ActionError as e:
            logger.warning("the change to %s is not listed on the Lease: %s", op.request.target.id, e)
        except Exception:  # the ledger's own failure must not cut verification or rollback short
            logger.exception("the change to %s is not listed on the Lease", op.request.target.id)

    def _reconcile(self, op: Operation, record: Callable[..., Any]) -> str:
        """After an error mid-change: find out whether the change landed, and undo it if it did."""
        if not op.revertible:
            record("reconciled", {"state": "not revertible", "detail": "nothing to undo"})
            return "nothing to undo"
        try:
            changed = op.changed()
        except ActionError as e:
            record("reconciled", {"state": "unknown", "error": str(e), "prior": op.prior})
            return f"the object cannot be read ({e}): its prior state is in the audit log"
        if not changed:
            record("reconciled", {"state": "not applied"})
            return "the change was not applied"
        try:
            reverted = op.revert()
        except ActionError as e:
            record("reconciled", {"state": "applied, rollback failed", "error": str(e), "prior": op.prior})
            return f"it was applied and the rollback failed ({e}): its prior state is in the audit log"
        record("rolled_back", {"result": reverted, "why": "the failed change had been applied"})
        self._share(op, "rolled_back")
        return "it had been applied and was rolled back"

    def _verify(self, op: Operation, diagnosis: Diagnosis | None) -> Health:
        """Poll the change's health (and the anomaly) until done or ``verify_timeout_s``."""
        deadline = self.clock.monotonic() + self.verify_timeout_s
        health = Health(False, False, "not read yet")
        while True:
            try:
                health = op.health()
            except ActionError as e:
                health = Health(False, False, f"cannot read the state: {e}")
            if health.done and not health.healthy:
                return health
            if health.done:
                cleared = self.anomaly_cleared(diagnosis) if diagnosis and self.anomaly_cleared else None
                if cleared is not False:
                    return health
                health = Health(False, False, f"{health.detail}, but the anomaly has not cleared")
            if self.clock.monotonic() >= deadline:
                return Health(True, False, f"timed out after {self.verify_timeout_s:g} s: {health.detail}")
            if self._stopping.is_set():
                return health
            if self.sleep is time.sleep:
                self._stopping.wait(self.poll_interval_s)  # a stop ends the wait
            else:
                self.sleep(self.poll_interval_s)


def request_id_of(request: ActionRequest, diagnosis: Diagnosis) -> str:
    """``act-`` and 16 hex digits: derived from the request and its incident (so a retry is recognised), random
    when there is no incident."""
    if diagnosis.incident_id is None:
        return "act-" + secrets.token_hex(8)
    key = canonical({"request": request.as_json(), "incident": diagnosis.incident_id})
    return "act-" + hashlib.sha256(key.encode()).hexdigest()[:16]
