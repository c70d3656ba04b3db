"""Incidents: anomalies on entities that are connected in the topology, close in time, form one incident, not one
alert per series.

Lifecycle: an anomaly whose entity is related to an open incident's (the same entity, a neighbour in the graph, a pod
of its service) updates it; otherwise it reopens a related incident resolved less than ``reopen_s`` ago (flap
damping: a flapping fault stays one incident), or opens a new one. Both need the same corroboration (what came since
the end must be enough to open an incident: a lone blip within ``reopen_s`` reopened 4 of the 18 false incidents on the
shared TrainTicket day). An open incident with no anomaly for ``hold_s`` resolves. Users acknowledge and silence;
silencing keeps the incident updating but mutes its notifications. A window's anomalies come in no causal order, so
each entity's are placed together, those that join an open incident first, then those that join a pending incident
or a resolved one's new episode, each pass after pass (an entity that joined makes its neighbours related), and only
then do the rest open incidents of their own.

Each incident ranks its entities as root-cause candidates, "root-most" first: an entity that needs none of the
incident's other entities (what it calls, its pods, the pods behind a peer) comes first, then the entities more of
the incident depends on (transitively), then the earlier first anomaly, then the larger score. This is the
detector's ordering only; the agent's reasoners rank hypotheses of their own.
"""

from __future__ import annotations

import itertools
import logging
import math
import re
import threading
from collections import deque
from collections.abc import Callable, Iterable
from collections.abc import Set as AbstractSet
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

import networkx as nx

from rootward.detector.baseline import edge_of
from rootward.detector.detector import Anomaly
from rootward.detector.kube import Change
from rootward.detector.silence import is_rate

logger = logging.getLogger(__name__)

#: Anomalies an incident keeps (the strongest per entity and signal, then the latest).
MAX_ANOMALIES = 200


class Topology(Protocol):
    """What incidents need from the graph (the app answers from topology/; tests from a small graph)."""

    def related(self, a: str, b: str) -> bool:
        """Whether two entities are the same, neighbours, or a pod and its service."""
        ...

    def depends_on(self, a: str, b: str) -> bool:
        """Whether ``a`` needs ``b`` directly: calls it, or is its service (b a pod), or is backed by it."""
        ...

    def neighbourhood(self, entity: str) -> tuple[AbstractSet[str], AbstractSet[str]]:
        """(what ``entity`` is: itself and, for a pod, its services; what it touches: those and their neighbours).
        ``related(a, b)`` holds exactly when b's first set meets a's second: incidents test many entities against
        many this way, one lookup each, not one per pair. ``depends_on(a, b)`` implies ``related(a, b)`` (the
        ranking tests only related pairs)."""
        ...


@dataclass
class Incident:
    id: str
    opened: float
    updated: float
    status: Literal["open", "resolved"] = "open"
    resolved: float | None = None
    first_seen: dict[str, float] = field(default_factory=dict)  # entity -> its first anomaly's window start
    last_seen: dict[str, float] = field(default_factory=dict)  # entity -> when its latest anomaly came (not stored)
    peak: dict[str, float] = field(default_factory=dict)  # entity -> its largest |score|
    anomalies: dict[tuple[str, str], Anomaly] = field(default_factory=dict)  # (entity, signal) -> strongest
    candidates: list[str] = field(default_factory=list)
    reopened: int = 0
    acknowledged: bool = False
    silenced_until: float | None = None
    changes: list[Change] = field(default_factory=list)  # rollouts and API writes on its entities shortly before
    diagnosis: dict[str, Any] | None = None  # the agent's latest (rootward.agent.Diagnosis as JSON data)
    action: dict[str, Any] | None = None  # the action proposed for it and how it ended (agent/respond.py)
    trace: dict[str, Any] | None = None  # the LLM reasoner's reasoning trace of the diagnosis (agent/trace.py)
    # where it was told, by notifier (slack: the message's ts), so that a restart edits the same message; replaced
    # whole, never changed in place (the notifier's thread sets it while the store reads it)
    notified: dict[str, str] = field(default_factory=dict)

    @property
    def severity(self) -> Literal["critical", "warning"]:
        signals = {signal for _, signal in self.anomalies}
        strong = max(self.peak.values(), default=0.0) >= 10
        return "critical" if strong or signals & {"error_ratio", "rate", "log_errors"} else "warning"

    def add(self, anomaly: Anomaly, now: float) -> None:
        self.updated = now
        self.first_seen.setdefault(anomaly.entity, anomaly.start)
        self.last_seen[anomaly.entity] = now
        self.peak[anomaly.entity] = max(self.peak.get(anomaly.entity, 0.0), abs(anomaly.score))
        key = (anomaly.entity, anomaly.signal)
        old = self.anomalies.get(key)
        if old is None or abs(anomaly.score) >= abs(old.score):
            self.anomalies[key] = anomaly
        if len(self.anomalies) > MAX_ANOMALIES:
            weakest = min(self.anomalies, key=lambda k: abs(self.anomalies[k].score))
            del self.anomalies[weakest]

    def active(self, since: float) -> list[str]:
        """Its entities with an anomaly at ``since`` or later (an incident restored from the store counts its
        entities as last seen when it was last updated)."""
        return [e for e in self.first_seen if self.last_seen.get(e, self.updated) >= since]

    def as_json(self, with_trace: bool = False) -> dict[str, object]:
        """The incident as JSON-ready data (the API's and the store's form); the reasoning trace, which can be
        long, only ``with_trace`` (the store; the API serves it on its own)."""
        return {
            "id": self.id,
            "status": self.status,
            "severity": self.severity,
            "opened": self.opened,
            "updated": self.updated,
            "resolved": self.resolved,
            "reopened": self.reopened,
            "acknowledged": self.acknowledged,
            "silenced_until": self.silenced_until,
            "candidates": self.candidates,
            "entities": [{"id": e, "first_seen": t, "peak_score": self.peak[e]} for e, t in self.first_seen.items()],
            "anomalies": [asdict(a) for a in sorted(self.anomalies.values(), key=lambda a: -abs(a.score))],
            "changes": [asdict(c) for c in self.changes],
            "diagnosis": self.diagnosis,
            "action": self.action,
            **({"notified": self.notified} if self.notified else {}),
            **({"trace": self.trace} if with_trace else {}),
        }


#: Signal families that open an incident on their own: failures the telemetry states, not deviations from a baseline.
SELF_EVIDENT = ("k8s:", "error")

_QUALIFIERS = re.compile(r"(?:[._](?:p\d{1,3}|rate|ratio|total|count|seconds|bytes))+$")


#: Words of throughput metrics (how busy a pod is, not how well it does): a burst of work on an idle pod moves them
#: together with its latency, so they never corroborate (on the shared TrainTicket day, idle pods' syscall + latency
#: bursts were most of the metric-only false incidents). They stay evidence for the reasoner.
ACTIVITY = re.compile(r"syscall|network|\.workload$|bytes")


def family(signal: str) -> str:
    """The quantity a signal measures, without the quantile, unit or aggregation that distinguish its variants:
    ``client.latency.p90`` and ``client.latency.p99`` are one family, ``cpu.usage`` and ``cpu.usage_rate`` another;
    the span quantiles p50/p95/p99 and each operation's (``op:<name>.p95``) are ``latency``, an operation's rate
    and error ratio its service's; every log template
    (``log_template:<id>``) is ``log_template``, every missing one (``log_missing:<id>``) ``log_missing``, and
    ``log_warnings`` is ``log_errors``.
    Corroboration counts families, not series."""
    if signal.startswith("log_template:"):
        return "log_template"
    if signal == "log_warnings":  # WARN and ERROR lines of a service: one quantity, its lines that complain
        return "log_errors"
    if signal.startswith(("log_missing:", "span_missing:")):  # a line or a span that stopped coming
        return "log_missing"
    if signal.startswith("op:"):  # one operation's measure (op:<span name>.p95) is the service's
        return family(signal.rsplit(".", 1)[-1])
    if edge := edge_of(signal):  # what one caller saw of it (in:<caller>.latency) is the callee's too
        return family(edge[1])
    if signal in ("net_in", "client_net"):  # one measurement (a paired call's gap) seen from either end
        return "network_gap"
    if _QUALIFIERS.fullmatch("." + signal):
        return "latency" if signal.startswith("p") else signal
    return _QUALIFIERS.sub("", signal)


def corroborates(signal: str) -> bool:
    """Whether a signal's family counts towards ``min_families``: not a throughput metric (see :data:`ACTIVITY`), not
    a missing log line (it opens an incident on its own when its chance is small enough, see ``missing_alone``;
    weaker, it is the request mix moving, and joined with any other family's blip it opened 3x the false incidents
    on the shared TrainTicket day), not an edge's rate (a caller that calls less: the request mix moves it)."""
    if edge := edge_of(signal):
        return edge[1] != "rate"
    return not ACTIVITY.search(signal) and not signal.startswith(("log_missing:", "span_missing:"))


class Sink(Protocol):
    """The next stage: told of every change (the agent plugs in here; so do storage and Slack)."""

    def incident_changed(
        self, incident: Incident, change: Literal["opened", "updated", "resolved", "reopened"]
    ) -> None: ...


class Incidents:
    """The open and recently resolved incidents, fed one closed window's anomalies at a time."""

    join_passes = 4  # a window's anomalies join incidents through at most this many hops of each other

    def __init__(
        self,
        topology: Topology,
        sinks: list[Sink] | None = None,
        hold_s: float = 120.0,
        reopen_s: float = 600.0,
        ids: Callable[[float], str] | None = None,
        change_lookback_s: float = 1800.0,
        min_families: int = 1,
        missing_alone: float = math.inf,
        gap_alone: float = math.inf,
        lock: threading.RLock | None = None,
        grow_s: float = math.inf,
    ) -> None:
        self.topology = topology
        self.min_families = min_families
        self.missing_alone = missing_alone
        self.gap_alone = gap_alone
        self.grow_s = grow_s
        self.sink_failures = 0
        self.pending: list[Incident] = []  # not corroborated yet: told of no one, dropped after hold_s
        self.reopening: dict[str, Incident] = {}  # resolved id -> what came since, until it is corroborated too
        self.sinks = sinks or []
        self.hold_s, self.reopen_s = hold_s, reopen_s
        self.open: list[Incident] = []
        self.resolved: list[Incident] = []  # within reopen_s, newest last
        self.history: deque[Incident] = deque(maxlen=1000)  # every incident, newest last (for the API)
        self.recent_changes: deque[Change] = deque(maxlen=1000)
        self.change_lookback_s = change_lookback_s
        counter = itertools.count(1)
        self._id = ids or (lambda t: f"inc-{int(t)}-{next(counter)}")
        self._lock = lock or threading.RLock()  # the App shares one with the detector (see Detector's lock)
        self._hoods: dict[str, tuple[AbstractSet[str], AbstractSet[str]]] = {}  # for one window (_hood)
        self._covers: dict[int, tuple[Incident, set[str]]] = {}  # id(incident) -> it, its cover, a window (_cover)

    def observe(self, now: float, anomalies: list[Anomaly]) -> None:
        """Fold a window's anomalies in (the detector's sink), then resolve what went quiet."""
        with self._lock:
            self._observe(now, anomalies)

    def _observe(self, now: float, anomalies: list[Anomaly]) -> None:
        self._hoods.clear()  # the graph may have changed since the last window
        self._covers.clear()
        changed: dict[str, tuple[Incident, str]] = {}
        self.resolved = [i for i in self.resolved if i.resolved is not None and i.resolved > now - self.reopen_s]
        live = {i.id for i in self.resolved}  # a new episode not corroborated within the hold is dropped, as pending
        self.reopening = {k: v for k, v in self.reopening.items() if k in live and v.updated > now - self.hold_s}
        # Entities that join an incident go first, open incidents before the others, pass after pass (one that
        # joined makes its neighbours related): a window's anomalies come in no causal order, and a callee's gap seen
        # before its caller's slowness would otherwise open an incident of its own beside the caller's (TrainTicket's
        # verification-code CPU fault). An entity's anomalies of a window go together.
        groups: dict[str, list[Anomaly]] = {}
        for anomaly in anomalies:
            groups.setdefault(anomaly.entity, []).append(anomaly)
        remaining = list(groups)
        for opened in (True, False):
            for _ in range(self.join_passes):
                left = [e for e in remaining if not self._join(groups[e], opened, now, changed)]
                if len(left) == len(remaining):
                    break
                remaining = left
        for entity in remaining:
            if self._join(groups[entity], False, now, changed):  # next to one opened just before it
                continue
            incident = Incident(self._id(groups[entity][0].start), now, now)
            self.pending.append(incident)
            for anomaly in groups[entity]:
                incident.add(anomaly, now)
            changed[incident.id] = (incident, "pending")
        for incident, change in list(changed.values()):
            if change != "pending" or not self._corroborated(incident):
                continue
            episode = self.reopening.pop(incident.id, None)
            if episode is incident:  # corroborated: the resolved incident reopens with it
                reopened = next(i for i in self.resolved if i.id == incident.id)
                self.resolved.remove(reopened)
                for a in episode.anomalies.values():
                    reopened.add(a, now)
                reopened.status, reopened.resolved = "open", None
                reopened.reopened += 1
                self.open.append(reopened)
                changed[incident.id] = (reopened, "reopened")
                continue
            self.pending.remove(incident)  # corroborated: it opens now
            incident.opened = now
            self.open.append(incident)
            self.history.append(incident)
            changed[incident.id] = (incident, "opened")
        self.pending = [i for i in self.pending if i.updated > now - self.hold_s]
        changed = {k: v for k, v in changed.items() if v[1] != "pending"}
        for incident, _ in changed.values():
            incident.candidates = self._rank(incident)
            self._link(incident, self.recent_changes)
        for incident in list(self.open):
            if incident.updated <= now - self.hold_s:
                self.open.remove(incident)
                incident.status, incident.resolved = "resolved", now
                self.resolved.append(incident)
                changed[incident.id] = (incident, "resolved")
        for incident, change in changed.values():
            self._tell(incident, change)

    def _join(
        self, anomalies: list[Anomaly], opened: bool, now: float, changed: dict[str, tuple[Incident, str]]
    ) -> bool:
        """Add one entity's ``anomalies`` to the incident they belong to, if any: with ``opened``, an open one; else a
        pending one or a resolved one's new episode (it reopens once corroborated, as a new incident opens)."""
        entity = anomalies[0].entity
        change = "updated" if opened else "pending"
        if opened:
            incident = self._related(entity, self.open, now, grow=True)
        elif (incident := self._related(entity, [*self.pending, *self.reopening.values()], now)) is None:
            resolved = self._related(entity, self.resolved, now)
            if resolved is None:
                return False
            incident = self.reopening.setdefault(resolved.id, Incident(resolved.id, now, now))
        if incident is None:
            return False
        for anomaly in anomalies:
            incident.add(anomaly, now)
        if any(e not in incident.last_seen for e in incident.first_seen):
            self._covers.pop(id(incident), None)  # restored: its entities count as seen when it was updated, now
        elif (kept := self._covers.get(id(incident))) is not None:
            kept[1].update(self._hood(entity)[0])
        previous = changed.get(incident.id)
        changed[incident.id] = (incident, previous[1] if previous else change)
        return True

    def _corroborated(self, incident: Incident) -> bool:
        """Whether a new incident has enough to open: ``min_families`` signal families, or a failure the telemetry
        states itself (a Kubernetes failure signal, ``k8s:*``, spans with error status, a steady request rate that
        fell to nothing): those need no corroboration."""
        families = {family(s) for _, s in incident.anomalies if corroborates(s)}
        if len(families) >= self.min_families or any(f.startswith(SELF_EVIDENT) for f in families):
            return True
        if any(a.score >= self._alone(s) for (_, s), a in incident.anomalies.items()):
            return True
        if any(is_rate(s) and a.value == 0.0 for (_, s), a in incident.anomalies.items()):
            return True  # steady traffic that stopped (detector/silence.py): nothing else of it can show
        # A missing log line beside error lines of the same service (a normal line gone, an error in its place: the
        # mark of a failing code path) needs no more either.
        missing = {e for e, s in incident.anomalies if family(s) == "log_missing"}
        if any(e in missing and family(s) in ("log_errors", "log_template") for e, s in incident.anomalies):
            return True
        # A slowdown the spans show on two services (the grouping made them related: one calls the other) is
        # corroborated by the call graph itself: a slow database shows in its callers, and their callers.
        slowed = {e for e, s in incident.anomalies if e.startswith("service:") and family(s) == "latency"}
        return len(slowed) >= 2

    def _alone(self, signal: str) -> float:
        """The score past which one anomaly of ``signal`` opens an incident by itself: a missing log line, judged by
        its chance (detector/logflow.py; ``missing_alone`` is -log10 of it), and a callee's network gap (``net_in``:
        a network delay into a service shows in nothing else, its own spans do not move; ``gap_alone``)."""
        if family(signal) == "log_missing":
            return self.missing_alone
        return self.gap_alone if signal == "net_in" else math.inf

    def _tell(self, incident: Incident, change: str, skip: object = None) -> None:
        """Each sink in turn; one that raises is logged and counted, and the sinks after it are still told (a bug in
        the responder must not keep an incident from the store and Slack, nor stop the detector)."""
        for sink in self.sinks:
            if sink is skip:
                continue
            try:
                sink.incident_changed(incident, change)  # type: ignore[arg-type]
            except Exception:
                self.sink_failures += 1
                logger.exception("incident sink %s failed on %s (%s)", type(sink).__name__, incident.id, change)

    def held(self) -> threading.RLock:
        """The incidents' lock, to read an incident while the pipeline may change it (``with incidents.held():``)."""
        return self._lock

    def open_series(self) -> set[tuple[str, str]]:
        """The (entity, signal) series of the open incidents' anomalies: what the detector keeps out of their
        baselines while they last (see ``learn_after_s``)."""
        with self._lock:
            return {key for incident in self.open for key in incident.anomalies}

    def retell(self, incident: Incident, skip: object = None) -> None:
        """Tell the sinks (but ``skip``) that an incident was updated outside the pipeline: a diagnosis that came
        later than the change it answers (the LLM reasoner runs on a worker thread)."""
        with self._lock:
            self._tell(incident, "updated", skip)

    def restore(self, incidents: list[Incident]) -> None:
        """Take back stored incidents (oldest first) at start: open ones stay open, resolved ones are listed and
        may reopen within ``reopen_s`` of their resolution."""
        with self._lock:
            for incident in incidents:
                self.history.append(incident)
                (self.open if incident.status == "open" else self.resolved).append(incident)

    # --- what users do ---------------------------------------------------------------------------------------------

    def listed(self, status: str | None = None) -> list[Incident]:
        """Incidents, newest first, optionally only ``open`` or ``resolved`` ones."""
        with self._lock:
            return [i for i in reversed(self.history) if status is None or i.status == status]

    def open_count(self) -> int:
        """Open incidents now, without the pipeline's lock (a metrics scrape must not wait for a window)."""
        return sum(i.status == "open" for i in tuple(self.history))

    def get(self, incident_id: str) -> Incident | None:
        with self._lock:
            return next((i for i in self.history if i.id == incident_id), None)

    def acknowledge(self, incident_id: str) -> Incident | None:
        with self._lock:
            incident = self.get(incident_id)
            if incident is not None and not incident.acknowledged:
                incident.acknowledged = True
                self._tell(incident, "updated")
            return incident

    def silence(self, incident_id: str, until: float) -> Incident | None:
        """Mute notifications about the incident until ``until`` (it keeps updating)."""
        with self._lock:
            incident = self.get(incident_id)
            if incident is not None:
                incident.silenced_until = until
                self._tell(incident, "updated")
            return incident

    def resolve(self, incident_id: str, now: float) -> Incident | None:
        """Resolve by hand; a recurrence within ``reopen_s`` reopens it."""
        with self._lock:
            incident = self.get(incident_id)
            if incident is not None and incident.status == "open":
                self.open.remove(incident)
                incident.status, incident.resolved = "resolved", now
                self.resolved.append(incident)
                self._tell(incident, "resolved")
            return incident

    def note_change(self, change: Change) -> None:
        """A rollout or an API write: kept for incidents opening later, linked now to open incidents it touches."""
        with self._lock:
            self.recent_changes.append(change)
            for incident in self.open:
                if self._link(incident, [change]):
                    incident.updated = max(incident.updated, change.time)
                    self._tell(incident, "updated")

    def _link(self, incident: Incident, changes: Iterable[Change]) -> bool:
        linked = False
        for change in changes:
            if change in incident.changes or change.time < incident.opened - self.change_lookback_s:
                continue
            if any(self.topology.related(change.entity, e) for e in incident.first_seen):
                incident.changes.append(change)
                linked = True
        return linked

    def _related(self, entity: str, incidents: list[Incident], now: float, grow: bool = False) -> Incident | None:
        """The incident ``entity`` belongs to: the most recent holding it, else the most recent with an entity related
        to it. For an open or pending incident only what is wrong now counts: ``entity`` itself if it was seen within
        ``hold_s + reopen_s`` (as if it were alone: resolved, then reopened), its neighbours among the entities
        anomalous within ``hold_s``. An incident that grew by everything it ever held gathered 77 entities over 25
        minutes on the shared TrainTicket day, was a neighbour of every service and swallowed the next faults. With
        ``grow`` (open incidents), one opened more than ``grow_s`` ago takes no new entities: its own (seen within
        ``hold_s + reopen_s``) go on updating it, and a neighbour whose anomalies start now makes an incident of its
        own (a cascade shows within minutes; on the shared Nezha days, incidents kept open by a lasting anomaly, a
        pod's memory near its limit or a service's errors that never stopped, swallowed 4 later faults next to them).
        A resolved incident reopens through any of its entities (within ``reopen_s``; by its entities at the end
        only, one OnlineBoutique fault was missed), once what came since is corroborated as a new incident would be
        (``reopening``)."""
        since = now - self.hold_s
        for incident in reversed(incidents):  # its own first: a lasting anomaly stays with the incident it is in
            own = incident.resolved is None and entity in incident.first_seen
            if own and incident.last_seen.get(entity, incident.updated) >= since - self.reopen_s:
                return incident
        near = self._hood(entity)[1]
        for incident in reversed(incidents):  # then the most recent it is related to
            if incident.resolved is None and grow and incident.opened < now - self.grow_s:
                continue  # an old incident takes no new entities: a neighbour that fails now is news of its own
            if not self._cover(incident, since).isdisjoint(near):
                return incident
        return None

    def _hood(self, entity: str) -> tuple[AbstractSet[str], AbstractSet[str]]:
        """The topology's neighbourhood of ``entity``, asked once a window (``_hoods`` is cleared as each begins)."""
        hood = self._hoods.get(entity)
        if hood is None:
            hood = self._hoods[entity] = self.topology.neighbourhood(entity)
        return hood

    def _cover(self, incident: Incident, since: float) -> set[str]:
        """What an entity must touch to be related to ``incident``: the union of what its entities are (a resolved
        incident's every entity, an open or pending one's anomalous within the hold). Built once a window and grown as
        entities join it (``_join``), so a lookup costs one entity's neighbourhood, not one test per entity held."""
        kept = self._covers.get(id(incident))
        if kept is None or kept[0] is not incident:
            held = incident.first_seen if incident.resolved is not None else incident.active(since)
            kept = self._covers[id(incident)] = (incident, set().union(*(self._hood(e)[0] for e in held)))
        return kept[1]

    def _rank(self, incident: Incident) -> list[str]:
        entities = list(incident.first_seen)
        holders: dict[str, list[str]] = {}  # what an entity is (its neighbourhood's first set) -> the entities it is
        for e in entities:
            for x in self._hood(e)[0]:
                holders.setdefault(x, []).append(e)
        needs: nx.DiGraph[str] = nx.DiGraph()
        needs.add_nodes_from(entities)
        for a in entities:  # a needs only entities related to it: those are tested, not every pair
            near = {b for x in self._hood(a)[1] for b in holders.get(x, ())}
            needs.add_edges_from((a, b) for b in near if b != a and self.topology.depends_on(a, b))
        leaf = {e: needs.out_degree(e) == 0 for e in entities}
        dependents = {e: len(nx.ancestors(needs, e)) for e in entities}
        return sorted(
            entities,
            key=lambda e: (not leaf[e], -dependents[e], incident.first_seen[e], -incident.peak[e], e),
        )
