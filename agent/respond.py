"""The last incident sink: an incident with a diagnosis gets one proposed action (agent/propose.py), submitted to the
guarded executor on a worker thread (a submission blocks while the executor dry-runs or verifies), once per incident
episode. The executor makes one change at a time; ``workers`` threads take the requests that may change something
(the others meanwhile take dry runs and approval requests), and read-only collections have a queue and a thread of
their own, so that they never wait behind changes queued for a verdict. How it ended is kept on the incident
(``action``), for the API, the store and approvers.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from rootward.actions.executor import Diagnosis as Reason
from rootward.actions.executor import Outcome
from rootward.actions.requests import ActionRequest
from rootward.agent.propose import Sizes, Workloads, propose
from rootward.agent.redact import Redactor
from rootward.agent.schema import Diagnosis
from rootward.detector.incidents import Incident

logger = logging.getLogger(__name__)

#: Evidence lines an action carries to its approver (the strongest first, as the diagnosis ranks them).
MAX_EVIDENCE = 10


class Responder:
    def __init__(
        self,
        submit: Callable[[ActionRequest, Reason], Outcome],
        graph: Workloads,
        min_confidence: float = 0.3,
        queue_size: int = 100,
        pending: Callable[[str, str, dict[str, object]], None] | None = None,
        counted: Callable[[str, str], None] | None = None,
        sizes: Sizes | None = None,
        redactor: Redactor | None = None,
        workers: int = 4,
    ) -> None:
        """``pending(incident id, approval id, action)`` is told of actions that wait for a human (Slack);
        ``counted(kind, status)`` of every outcome (the metrics); ``sizes`` are what a resize starts from;
        ``redactor`` cleans what a read-only collection keeps on the incident (default: the shipped patterns)."""
        self.submit, self.graph, self.min_confidence = submit, graph, min_confidence
        self.sizes = sizes
        self.redactor = redactor or Redactor()
        self.pending = pending
        self.counted = counted or (lambda kind, status: None)
        self.proposed: dict[str, str] = {}  # incident id -> the request it got this episode (its description)
        self._queue: queue.Queue[tuple[Incident, ActionRequest, Reason] | None] = queue.Queue(queue_size)
        self._reads: queue.Queue[tuple[Incident, ActionRequest, Reason] | None] = queue.Queue(queue_size)
        queues = [*([self._queue] * workers), self._reads]
        self._workers = [
            (threading.Thread(target=self._run, args=(q,), name=f"rootward-responder-{n}", daemon=True), q)
            for n, q in enumerate(queues)
        ]
        for thread, _ in self._workers:
            thread.start()

    def incident_changed(self, incident: Incident, change: str) -> None:
        if change == "resolved":
            self.proposed.pop(incident.id, None)
            return
        raw = incident.diagnosis
        if not raw or incident.id in self.proposed:
            return
        diagnosis = Diagnosis.model_validate(raw)
        request = propose(diagnosis, self.graph, self.min_confidence, self.sizes)
        if request is None:
            return
        top = diagnosis.hypotheses[0]
        summary = f"{top.fault_class} at {top.entity}: {diagnosis.summary}".strip(": ")[:500]
        evidence = tuple(
            f"{e.entity} {e.signal}: {e.value:.4g} (expected {e.expected:.4g}, z {e.score:+.1f})"
            for e in top.evidence[:MAX_EVIDENCE]
        )
        reason = Reason(summary, top.confidence, incident.id, top.entity, evidence)
        self.proposed[incident.id] = request.describe()
        incident.action = {**_proposed(request, reason), "status": "submitted"}
        try:
            (self._reads if request.read_only else self._queue).put_nowait((incident, request, reason))
        except queue.Full:  # the executor is stuck or slow: say so on the incident and in the counts
            incident.action = {**_proposed(request, reason), "status": "dropped", "detail": "responder queue full"}
            self.counted(request.kind, "dropped")

    def close(self, timeout_s: float = 5.0) -> None:
        deadline = time.monotonic() + timeout_s
        for _, work in self._workers:  # one end mark a worker, on its queue
            try:
                work.put(None, timeout=max(0.0, deadline - time.monotonic()))
            except queue.Full:
                return
        for thread, _ in self._workers:
            thread.join(max(0.0, deadline - time.monotonic()))

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until every submission so far has an outcome (tests, the demo)."""
        deadline = time.monotonic() + timeout_s
        while (self._queue.unfinished_tasks or self._reads.unfinished_tasks) and time.monotonic() < deadline:
            time.sleep(0.01)

    def _run(self, work: queue.Queue[tuple[Incident, ActionRequest, Reason] | None]) -> None:
        while True:
            item = work.get()
            try:
                if item is None:
                    return
                incident, request, reason = item
                try:
                    outcome = self.submit(request, reason)
                    action = {**_proposed(request, reason), **outcome.as_json()}
                    if request.read_only and ("logs" in outcome.result or "events" in outcome.result):
                        action["collected"] = _collected(outcome.result, self.redactor)  # read, not a dry run's plan
                    incident.action = action  # whole, in one assignment: the API and the store read it meanwhile
                    self.counted(request.kind, outcome.status)
                    if outcome.status == "pending_approval" and outcome.approval_id and self.pending is not None:
                        self.pending(incident.id, outcome.approval_id, incident.action)
                except Exception as e:  # an executor bug must not stop responding; kept on the incident
                    logger.exception("action for incident %s failed", incident.id)
                    incident.action = {**_proposed(request, reason), "status": "failed", "detail": type(e).__name__}
                    self.counted(request.kind, "failed")
            finally:
                work.task_done()


def _proposed(request: ActionRequest, reason: Reason) -> dict[str, object]:
    """What an incident's ``action`` says of the proposal: the request, and the hypothesis, its evidence and the
    confidence behind it (what an approver reads)."""
    return {
        "request": request.as_json(),
        "confidence": reason.confidence,
        "because": reason.summary,
        "evidence": list(reason.evidence),
    }


#: What a read-only collection keeps on the incident: the newest log lines of each container, at most this many
#: characters, and its events (redacted: the incident is served by the API and stored).
MAX_LOG_CHARS = 4000


def _collected(result: dict[str, Any], redactor: Redactor) -> dict[str, Any]:
    """A collection's result as the incident keeps it: the pod's phase and conditions, its events, and the tail of
    each container's log, bounded and redacted."""
    status = result.get("status") or {}
    logs = {name: redactor.text(str(text))[-MAX_LOG_CHARS:] for name, text in (result.get("logs") or {}).items()}
    return {
        "phase": status.get("phase"),
        "conditions": [
            {"type": c.get("type"), "status": c.get("status"), "reason": c.get("reason")}
            for c in status.get("conditions") or []
            if isinstance(c, dict)
        ],
        "events": redactor.data(list(result.get("events") or [])[-20:]),
        "logs": logs,
    }
