"""The incident context: what a reasoner may look at, gathered in the process and bounded in size.

- the anomalies of the incident's current episode (since it opened or last reopened, plus ``lookback_s``), the
  strongest first, at most ``max_anomalies``;
- each anomalous series' recent values (its window: the last ``window`` values of its own cadence, oldest first);
- which service each pod belongs to, and the call subgraph around the incident's services (their callers and
  callees, with requests and errors), at most ``max_calls`` edges: the incident's own services' first, the busiest
  first;
- the changes (rollouts, API writes) the detector linked to the incident.

Log text stays out: log-template anomalies name templates by id (detector/templates.py), as Slack sees them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from rootward.detector.detector import Anomaly, Detector
from rootward.detector.incidents import Incident
from rootward.detector.kube import Change

#: (caller, callee, requests, errors) of one call edge, as TopologyGraph.calls() gives them.
Call = tuple[str, str, int, int]


@dataclass(frozen=True)
class SeriesWindow:
    entity: str
    signal: str
    values: tuple[float, ...]  # oldest first; the anomalous value is among the last


@dataclass(frozen=True)
class IncidentContext:
    incident: str
    at: float
    episode_start: float
    anomalies: tuple[Anomaly, ...]
    service_of: Mapping[str, str]
    calls: tuple[Call, ...]
    windows: tuple[SeriesWindow, ...] = ()
    changes: tuple[Change, ...] = ()
    first_seen: Mapping[str, float] = field(default_factory=dict)

    def service(self, entity: str) -> str:
        """The service an entity belongs to (a pod's service), else the entity itself."""
        return self.service_of.get(entity, entity)


class ContextBuilder:
    """Builds :class:`IncidentContext` from an incident, the detector's series and the topology's call edges."""

    def __init__(
        self,
        calls: Callable[[], Iterable[Call]],
        detector: Detector | None = None,
        service_of: Callable[[], Mapping[str, str]] | None = None,
        max_anomalies: int = 50,
        window: int = 30,
        lookback_s: float = 60.0,
        max_calls: int = 500,
    ) -> None:
        self.calls = calls
        self.detector = detector
        self.service_of = service_of or (lambda: detector.service_of if detector is not None else {})
        self.max_anomalies, self.window, self.lookback_s = max_anomalies, window, lookback_s
        self.max_calls = max_calls

    def build(self, incident: Incident, now: float, episode_start: float | None = None) -> IncidentContext:
        start = incident.opened if episode_start is None else episode_start
        current = [a for a in incident.anomalies.values() if a.end >= start - self.lookback_s]
        current = current or list(incident.anomalies.values())
        current.sort(key=lambda a: (-abs(a.score), a.start, a.entity, a.signal))
        anomalies = tuple(current[: self.max_anomalies])
        pods = self.service_of()
        service_of = {a.entity: pods[a.entity] for a in anomalies if a.entity in pods}
        services = {service_of.get(a.entity, a.entity) for a in anomalies}
        every = list(self.calls())
        callers = {c[0] for c in every if c[1] in services}  # and all their calls: how many of them slowed matters
        near = [c for c in every if c[0] in services or c[1] in services or c[0] in callers]
        near.sort(key=lambda c: (c[0] not in services and c[1] not in services, -c[2], c))  # own first, busiest first
        calls = tuple(sorted(near[: self.max_calls]))
        first_seen: dict[str, float] = {}
        for a in anomalies:
            first_seen[a.entity] = min(first_seen.get(a.entity, a.start), a.start)
        return IncidentContext(
            incident.id,
            now,
            start,
            anomalies,
            service_of,
            calls,
            self._windows(anomalies),
            tuple(incident.changes),
            first_seen,
        )

    def _windows(self, anomalies: tuple[Anomaly, ...]) -> tuple[SeriesWindow, ...]:
        if self.detector is None:
            return ()
        out = []
        for a in anomalies:
            values = self.detector.recent(a.entity, a.signal, self.window)
            if values:
                out.append(SeriesWindow(a.entity, a.signal, values))
        return tuple(out)
