"""The agent as an incident sink: each change of an incident (opened, updated, reopened) gets a fresh diagnosis from
the reasoner, stored on the incident (``incident.diagnosis``, served by ``GET /api/v1/incidents/{id}``).

Runs on the pipeline thread inside the incidents' lock, so it must be quick: the graph reasoner takes a few
milliseconds on a bounded context. Re-diagnoses of an open incident are spaced by ``min_interval_s`` of pipeline
time (a new episode, opened or reopened, is always diagnosed at once). A failing reasoner never stops the pipeline:
it is logged and counted, and the incident keeps its last diagnosis.
"""

from __future__ import annotations

import logging
from typing import Protocol

from rootward.agent.context import ContextBuilder, IncidentContext
from rootward.agent.schema import Diagnosis
from rootward.detector.incidents import Incident

logger = logging.getLogger(__name__)


class Reasoner(Protocol):
    name: str

    def diagnose(self, context: IncidentContext) -> Diagnosis: ...


class Diagnoser:
    """An incident sink that diagnoses incidents as they change."""

    def __init__(self, reasoner: Reasoner, contexts: ContextBuilder, min_interval_s: float = 10.0) -> None:
        self.reasoner, self.contexts, self.min_interval_s = reasoner, contexts, min_interval_s
        self.episodes: dict[str, float] = {}  # incident id -> when its current episode began
        self.last: dict[str, float] = {}
        self.failures = 0

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
            diagnosis = self.reasoner.diagnose(context)
        except Exception:  # a reasoner bug must not stop incidents; the last diagnosis stays
            self.failures += 1
            logger.exception("diagnosis of incident %s failed", incident.id)
            return
        self.last[incident.id] = now
        incident.diagnosis = diagnosis.model_dump(mode="json")
