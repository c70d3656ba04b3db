"""The agent as an incident sink: each change of an incident (opened, updated, reopened) gets a fresh diagnosis from
the reasoner, stored on the incident (``incident.diagnosis``, served by ``GET /api/v1/incidents/{id}``).

Runs on the pipeline thread inside the incidents' lock, so it must be quick: the graph reasoner takes a few
milliseconds on a bounded context. Re-diagnoses of an open incident are spaced by ``min_interval_s`` of pipeline
time (a new episode, opened or reopened, is always diagnosed at once). A failing reasoner never stops the pipeline:
it is logged and counted, and the incident keeps its last diagnosis.

A slow reasoner (the LLM's, seconds to minutes) runs ``background``: the pipeline thread only builds the context
and queues it; a worker thread diagnoses, stores the diagnosis and its reasoning trace (``incident.trace``) on the
incident and calls ``published(incident)``, as ``rootward diagnose`` does; the app wires it to tell the sinks after
this one (the store, Slack, the responder) of an open incident's, and to store a resolved one's. A full queue is
counted in ``dropped``; the incident keeps its last diagnosis.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Protocol, runtime_checkable

from rootward.agent.context import ContextBuilder, IncidentContext
from rootward.agent.schema import Diagnosis
from rootward.detector.incidents import Incident

logger = logging.getLogger(__name__)


class Reasoner(Protocol):
    name: str

    def diagnose(self, context: IncidentContext) -> Diagnosis: ...


@runtime_checkable
class Investigator(Protocol):
    """A reasoner that also tells how it got there (the LLM reasoner's reasoning trace)."""

    def investigate(self, context: IncidentContext) -> tuple[Diagnosis, dict[str, Any]]: ...


class Diagnoser:
    """An incident sink that diagnoses incidents as they change."""

    def __init__(
        self,
        reasoner: Reasoner,
        contexts: ContextBuilder,
        min_interval_s: float = 10.0,
        background: bool = False,
        published: Callable[[Incident], None] | None = None,
        queue_size: int = 100,
    ) -> None:
        self.reasoner, self.contexts, self.min_interval_s = reasoner, contexts, min_interval_s
        self.published = published or (lambda incident: None)
        self.episodes: dict[str, float] = {}  # incident id -> when its current episode began
        self.last: dict[str, float] = {}
        self.failures = 0
        self.dropped = 0
        self._queue: queue.Queue[tuple[Incident, IncidentContext] | None] | None = None
        self._thread: threading.Thread | None = None
        if background:
            self._queue = queue.Queue(queue_size)
            self._thread = threading.Thread(target=self._run, name="rootward-diagnoser", daemon=True)
            self._thread.start()

    def incident_changed(self, incident: Incident, change: str) -> None:
        now = incident.updated
        if change in ("opened", "reopened") or incident.id not in self.episodes:
            self.episodes[incident.id] = now
            self.last.pop(incident.id, None)
        if change == "resolved":
            self.episodes.pop(incident.id, None)
            self.last.pop(incident.id, None)
            return
        last = self.last.get(incident.id)
        if last is not None and now - last < self.min_interval_s:
            return
        try:
            context = self.contexts.build(incident, now, self.episodes[incident.id])
            self.last[incident.id] = now
            if self._queue is not None:
                self._queue.put_nowait((incident, context))
                return
            self._store(incident, *self._reason(self.reasoner, context))
        except queue.Full:
            self.dropped += 1
            self.last.pop(incident.id, None)  # the next change tries again, not min_interval_s later
            logger.warning("diagnosis of incident %s dropped: the diagnoser's queue is full", incident.id)
        except Exception:  # a reasoner bug must not stop incidents; the last diagnosis stays
            self.failures += 1
            self.last.pop(incident.id, None)
            logger.exception("diagnosis of incident %s failed", incident.id)

    def rediagnose(
        self, incident: Incident, reasoner: Reasoner | None = None, held: AbstractContextManager[object] | None = None
    ) -> Diagnosis:
        """Diagnose ``incident`` again now, on the caller's thread, with ``reasoner`` (default this one's); store it
        and publish it (``rootward diagnose``). The context is built inside ``held`` (the incidents' lock: the
        pipeline changes the incident meanwhile), the reasoning outside it. Raises whatever the reasoner raises."""
        with held or nullcontext():
            episode = self.episodes.get(incident.id, incident.opened)
            context = self.contexts.build(incident, incident.updated, episode)
        diagnosis, trace = self._reason(reasoner or self.reasoner, context)
        self._store(incident, diagnosis, trace)
        self.published(incident)
        return diagnosis

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the worker (safe to call twice; diagnoses still queued are dropped)."""
        if self._queue is None or self._thread is None:
            return
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        try:
            self._queue.put(None, timeout=timeout_s)
        except queue.Full:
            return
        self._thread.join(timeout_s)

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until every queued diagnosis is done (tests, the demo)."""
        deadline = time.monotonic() + timeout_s
        while self._queue is not None and self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)

    @staticmethod
    def _reason(reasoner: Reasoner, context: IncidentContext) -> tuple[Diagnosis, dict[str, Any] | None]:
        if isinstance(reasoner, Investigator):
            return reasoner.investigate(context)
        return reasoner.diagnose(context), None

    @staticmethod
    def _store(incident: Incident, diagnosis: Diagnosis, trace: dict[str, Any] | None) -> None:
        incident.diagnosis = diagnosis.model_dump(mode="json", exclude_none=True)
        incident.trace = trace

    def _run(self) -> None:
        assert self._queue is not None
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                incident, context = item
                try:
                    self._store(incident, *self._reason(self.reasoner, context))
                    self.published(incident)
                except Exception:  # the loop boundary: a bug is logged and counted, the worker goes on
                    self.failures += 1
                    self.last.pop(incident.id, None)  # the next change tries again
                    logger.exception("diagnosis of incident %s failed", incident.id)
            finally:
                self._queue.task_done()
