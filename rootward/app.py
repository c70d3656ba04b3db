"""The composition root: builds the components from a :class:`~rootward.config.Config` and wires them together.

The receiver feeds a :class:`FanOut` of the stages: a :class:`ReceivedSummary`, the topology graph (and the
gateway's merge), and with detection on the detector (the topology hands it the calls it pairs), the Kubernetes
signals, the log-template miner and the span flow; their anomalies go to the incidents, whose sinks are the store,
Slack, the diagnoser and the acting loop. The detector and the incidents share one lock: a closing window's sink
takes the incidents under the detector's lock, and an incident's sinks read series windows under the incidents'.
With the topology history on, ``start`` restores the graph from its last checkpoint before the receiver takes data,
a background thread ages the graph out and checkpoints it, and ``shutdown`` writes a final checkpoint after the
receiver drained.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from rootward.agent import ContextBuilder, Diagnoser, Diagnosis, GraphReasoner, GraphReasonerSettings, Reasoner
from rootward.agent.redact import Redactor
from rootward.alertmanager import AlertmanagerNotifier, AlertmanagerSettings
from rootward.api import build_api
from rootward.clock import Clock, SystemClock, Ticker
from rootward.config import Config
from rootward.config_detection import Detection
from rootward.detector.baseline import BOTH, DOWN, UP
from rootward.detector.detector import Anomaly, Call, Detector, DetectorSettings
from rootward.detector.incidents import Incident, Incidents
from rootward.detector.kube import KubeSignals
from rootward.detector.kube_metrics import KubeMetrics
from rootward.detector.logflow import FlowSettings, sampling_key
from rootward.detector.multivariate import Multivariate, MultivariateSettings
from rootward.detector.spanflow import SpanFlow
from rootward.detector.store import IncidentStore
from rootward.detector.telemetry import DetectorMetrics
from rootward.detector.templates import LogTemplates
from rootward.detector.warm import WarmStart
from rootward.forwarded import MAX_CALLS, MAX_TEMPLATE, TEMPLATE_SIGNALS, ReplicaAnomalies
from rootward.gateway import AggregateExporter, replica_name
from rootward.model import Consumer, LogBatch, MetricBatch, SpanBatch
from rootward.receiver import Receiver
from rootward.serving import ThreadedServer
from rootward.slack import SlackNotifier, SlackSettings, WhileLeading
from rootward.telemetry import Telemetry
from rootward.topology import Entity, TopologyGraph, TopologyLimits
from rootward.topology.graph import USER
from rootward.topology.history import History
from rootward.topology.maintenance import Maintenance
from rootward.topology.merge import ReplicaMerge
from rootward.topology.metrics import GraphSizeMetrics, ServiceGraphMetrics
from rootward.topology.queries import format_time
from rootward.tracing import tracer_provider

if TYPE_CHECKING:
    from rootward.acting import Acting
    from rootward.actions.executor import Diagnosis as ActionReason
    from rootward.agent.llm import LLMReasoner

logger = logging.getLogger(__name__)


#: Distinct service and metric names a ReceivedSummary keeps; the rest count under OTHER (senders choose names).
MAX_NAMES = 1000
OTHER = "(other)"


def _add(counter: Counter[str], name: str, count: int) -> None:
    counter[name if name in counter or len(counter) < MAX_NAMES else OTHER] += count


@dataclass
class ReceivedSummary:
    """A consumer that keeps totals of what arrived: items per signal, spans per service and kind, metric names,
    log severities. What the demo prints; cheap enough to run always (vectorised per batch), and bounded: at most
    MAX_NAMES names each."""

    items: Counter[str] = field(default_factory=Counter)
    services: Counter[str] = field(default_factory=Counter)
    span_kinds: Counter[int] = field(default_factory=Counter)
    metric_names: Counter[str] = field(default_factory=Counter)
    severities: Counter[int] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def consume_traces(self, batch: SpanBatch) -> None:
        res, counts = np.unique(batch.resource, return_counts=True)
        kinds, kind_counts = np.unique(batch.kind, return_counts=True)
        with self._lock:
            self.items["traces"] += len(batch)
            for r, c in zip(res.tolist(), counts.tolist(), strict=True):
                _add(self.services, batch.resources[r].service_name, c)
            for k, c in zip(kinds.tolist(), kind_counts.tolist(), strict=True):
                self.span_kinds[k] += c

    def consume_metrics(self, batch: MetricBatch) -> None:
        names, counts = np.unique(batch.metric, return_counts=True)
        with self._lock:
            self.items["metrics"] += len(batch)
            for m, c in zip(names.tolist(), counts.tolist(), strict=True):
                _add(self.metric_names, batch.metrics[m].name, c)

    def consume_logs(self, batch: LogBatch) -> None:
        sev, counts = np.unique(batch.severity, return_counts=True)
        with self._lock:
            self.items["logs"] += len(batch)
            for s, c in zip(sev.tolist(), counts.tolist(), strict=True):
                self.severities[s] += c


class FanOut:
    """A Consumer that hands each batch to several stages in turn (on the pipeline thread)."""

    def __init__(self, *consumers: Consumer) -> None:
        self.consumers = consumers

    def consume_traces(self, batch: SpanBatch) -> None:
        for c in self.consumers:
            c.consume_traces(batch)

    def consume_metrics(self, batch: MetricBatch) -> None:
        for c in self.consumers:
            c.consume_metrics(batch)

    def consume_logs(self, batch: LogBatch) -> None:
        for c in self.consumers:
            c.consume_logs(batch)


class IncidentLog:
    """Logs each incident change (the first sink; storage, Slack and the agent plug in beside it)."""

    def incident_changed(self, incident: Incident, change: str) -> None:
        top = ", ".join(incident.candidates[:3])
        logger.info("incident %s %s (%s): %s", incident.id, change, incident.severity, top)


def _diagnoser(config: Config, topology: TopologyGraph, detector: Detector) -> Diagnoser:
    """The agent's sink: the graph reasoner over contexts of the detector's series and the topology's calls."""
    agent = config.agent
    contexts = ContextBuilder(
        topology.calls, detector, None, agent.max_anomalies, agent.window, agent.lookback_s, agent.max_calls
    )
    reasoner = GraphReasoner(GraphReasonerSettings(**agent.graph.model_dump()))
    return Diagnoser(reasoner, contexts, agent.min_interval_s)


def _redactor(config: Config) -> Redactor:
    """The redaction of agent.llm.redaction: what the LLM is never sent, Slack never hears either."""
    r = config.agent.llm.redaction
    return Redactor.build(r.defaults, r.patterns, list(r.optional))


def _rules(detection: Detection) -> dict[str, dict[str, float]]:
    """``detection.rules`` as the detector reads them (baseline.rule_for): the fields set, direction as +1/-1/0."""
    directions = {"up": UP, "down": DOWN, "both": BOTH}
    out: dict[str, dict[str, float]] = {}
    for name, rule in detection.rules.items():
        changes: dict[str, float] = rule.model_dump(exclude_none=True, exclude={"direction"})
        if rule.direction is not None:
            changes["direction"] = directions[rule.direction]
        out[name] = changes
    return out


def _llm_reasoner(app: App, fallback: Reasoner) -> LLMReasoner:
    """The LLM reasoner of ``agent.llm`` (imported only then: the openai client), the graph reasoner as its
    fallback."""
    from rootward.agent.llm import LLMReasoner, LLMSettings
    from rootward.agent.tools import Sources

    llm = app.config.agent.llm
    key = llm.api_key.get_secret_value() if llm.api_key else ""
    settings = LLMSettings(
        api_key=key, **llm.model_dump(exclude={"enabled", "api_key", "api_key_env", "redaction", "min_interval_s"})
    )
    redactor = _redactor(app.config)
    sources = Sources(app.topology, app.detector, app.log_templates, app.span_flow, app.kube)
    failed = app.telemetry.llm_fallbacks.labels
    return LLMReasoner(
        settings, fallback, sources, redactor, app.tracer_provider, failed=lambda reason: failed(reason).inc()
    )


class App:
    """A running Rootward: receiver -> pipeline, plus its own API endpoint. ``start``/``shutdown`` are idempotent."""

    def __init__(self, config: Config, clock: Clock | None = None, consumer: Consumer | None = None) -> None:
        """``consumer`` replaces the pipeline (for embedding Rootward's receiver, and for tests)."""
        self.config = config
        self.clock = clock or SystemClock()
        self.telemetry = Telemetry()
        self.tracer_provider = tracer_provider(config.traces)  # Rootward's own spans (the LLM reasoner's), or None
        self.summary = ReceivedSummary()
        topo = config.topology
        limits = TopologyLimits(**topo.model_dump(exclude={"history", "export"}))
        self.topology = TopologyGraph(limits, self.clock)
        kept = topo.history
        self.history = (
            History(config.history_path, self.clock, kept.retention_s, [(t.after_s, t.every_s) for t in kept.thinning])
            if kept.enabled
            else None
        )
        self.maintenance = Maintenance(self.topology, self.history, kept.checkpoint_interval_s, self.telemetry)
        # With a history, /metrics serves the servicegraph counters as of the last checkpoint: see history.py.
        self.telemetry.registry.register(ServiceGraphMetrics(self.history or self.topology))
        self.telemetry.registry.register(GraphSizeMetrics(self.topology))
        # Gateway mode: replicas other than the aggregator send it their call edges (rootward/gateway.py) and their
        # anomalies (rootward/forwarded.py); the aggregator alerts on them and acts, the replicas do neither. With
        # follow_lease (the DaemonSet) the aggregator is whoever holds the Lease, and only anomalies travel.
        replica, export = replica_name(config), topo.export
        lease = config.actions.lease
        follow = export.enabled and export.follow_lease
        if follow and not (config.actions.enabled and lease.enabled and lease.pod):
            logger.warning(
                "topology.export.follow_lease needs actions with a Lease and actions.lease.pod (no pod would be "
                "labelled for the Service the anomalies go to): this Rootward alerts on its own"
            )
            follow = False
        exporting = export.enabled and not export.follow_lease and replica != export.aggregator  # sends call edges
        self.exporter: AggregateExporter | None = None
        self.acting: Acting | None = None
        self._forwarding, self._follow = export.anomalies and (exporting or follow), follow
        # What Slack, the acting part and forwarded template texts redact with (the LLM keeps its own: it reports
        # its redactions per investigation)
        self.redactor = _redactor(config)
        detection = config.detection
        shared = threading.RLock()  # the detector's and the incidents' (detector/detector.py says why)
        self.incidents = Incidents(
            self.topology,
            [IncidentLog()],
            detection.incidents.hold_s,
            detection.incidents.reopen_s,
            min_families=detection.incidents.min_families,
            missing_alone=detection.incidents.missing_alone,
            gap_alone=detection.incidents.gap_alone,
            lock=shared,
            grow_s=detection.incidents.grow_s,
        )
        self.incident_store = (
            IncidentStore(config.incidents_path, failed=self.telemetry.incident_store_failures.inc)
            if detection.incidents.store
            else None
        )
        if self.incident_store is not None:
            self.incidents.sinks.append(self.incident_store)
        am = config.notifications.alertmanager
        headers = {k: v.get_secret_value() for k, v in am.headers.items()}
        self.alertmanager = AlertmanagerNotifier(
            AlertmanagerSettings(tuple(am.urls), am.interval_s, dict(am.labels), headers, am.page_url, am.timeout_s),
            lambda outcome: self.telemetry.alertmanager_posts.labels(outcome).inc(), self.clock.now, self.redactor,
            stored=self.incident_store.note_message if self.incident_store is not None else None,
        )  # fmt: skip
        slack = config.notifications.slack
        self.slack = SlackNotifier(
            SlackSettings(
                webhook_url=slack.webhook_url.get_secret_value() if slack.webhook_url else None,
                bot_token=slack.bot_token.get_secret_value() if slack.bot_token else None,
                channel=slack.channel,
                base_url=slack.api_url,
                page_url=slack.page_url,
                max_per_minute=slack.max_per_minute,
                resend=slack.resend,
                resend_after_s=slack.resend_after_s,
            ),
            lambda outcome: self.telemetry.slack_messages.labels(outcome).inc(),
            links=self.topology.calls_among,
            redactor=self.redactor,
            stored=self.incident_store.note_message if self.incident_store is not None else None,
        )
        kube_keys = {"memory_near_limit", "pod_pending_s", "warm_start"}  # read by KubeSignals and WarmStart
        flows = {"log_flow", "span_flow", "sampling_key"}  # read by LogTemplates and SpanFlow
        settings = DetectorSettings(
            **detection.model_dump(exclude={"enabled", "incidents", "multivariate", "rules", *flows, *kube_keys}),
            rules=_rules(detection),
        )
        mv = detection.multivariate
        multivariate = Multivariate(MultivariateSettings(**mv.model_dump(exclude={"enabled"}))) if mv.enabled else None
        self.detector = Detector(self._found, settings, self.clock, multivariate, lock=shared)
        self.detector.holding = self.incidents.open_series
        self.warm = WarmStart(self.detector, config.detector_path) if detection.warm_start else None
        flow = detection.log_flow
        flow_settings = FlowSettings(**flow.model_dump(exclude={"enabled"})) if flow.enabled else None
        key = sampling_key(detection.sampling_key)  # one for both flows: they sample the same traces
        self.log_templates = LogTemplates(self._found, self.clock, detection.window_s, flow=flow_settings, key=key)
        spans = detection.span_flow
        self.span_flow = (
            SpanFlow(
                self._found,
                self.clock,
                detection.window_s,
                max_spans_per_window=spans.max_spans_per_window,
                key=key,
            )
            if spans.enabled
            else None
        )
        metrics = KubeMetrics(detection.memory_near_limit, detection.pod_pending_s, detection.max_series)
        self.kube = KubeSignals(self._found, self.incidents.note_change, self.clock, metrics)
        self.telemetry.registry.register(DetectorMetrics(self.detector, self.log_templates, self.span_flow))
        self.diagnoser: Diagnoser | None = None
        self.llm: LLMReasoner | None = None
        if config.agent.enabled:  # first of the sinks: the store and Slack then carry its diagnosis
            self.diagnoser = _diagnoser(config, self.topology, self.detector)
            if config.agent.llm.enabled:  # on a worker thread; the sinks after it hear of its diagnoses as updates
                self.llm = _llm_reasoner(self, self.diagnoser.reasoner)
                self.diagnoser = Diagnoser(self.llm, self.diagnoser.contexts, config.agent.llm.min_interval_s, True)
            self.diagnoser.published = self._published
            self.incidents.sinks.insert(0, self.diagnoser)
        # Only the aggregator acts: it holds the whole graph that blast radius and diagnosis need.
        if config.actions.enabled and exporting:
            logger.info("gateway mode: %s sends its edges to %s, which acts; actions are off here", replica,
                        export.aggregator)  # fmt: skip
        elif config.actions.enabled:  # imported only then: the kubernetes client is heavy
            from rootward.acting import Acting

            pending = self.slack.approval_requested if self.slack.configured else None
            self.acting = Acting.build(
                config, self.clock, self.topology, pending, self._count_action, self.kube, self.anomaly_cleared,
                self.redactor,
            )  # fmt: skip
        if self.acting is not None:  # after the diagnoser: it proposes from the diagnosis
            self.incidents.sinks.insert(1 if self.diagnoser is not None else 0, self.acting.responder)
        if follow and self.acting is None:  # no Kubernetes API: nobody can hold the Lease
            logger.warning(
                "topology.export.follow_lease: actions are off, so no Lease: this Rootward alerts on its own"
            )
            self._follow = follow = False
            self._forwarding = False
        self.telemetry.acting.set_function(lambda: float(self.leading()))
        self.telemetry.incidents_open.set_function(lambda: float(self.incidents.open_count()))
        self.telemetry.since_window.set_function(lambda: self._ticker.since_ok() if self._ticker is not None else 0.0)
        if self.acting is not None:
            self.acting.measured(self.telemetry)
        for notifier in (self.slack, self.alertmanager):
            if notifier.configured and self._forwarding and not follow:
                logger.info("gateway mode: %s forwards its anomalies to %s, which alerts; %s is off here", replica,
                            export.aggregator, type(notifier).__name__)  # fmt: skip
            elif notifier.configured:
                self.incidents.sinks.append(WhileLeading(notifier, self.leading) if follow else notifier)
        # Only in gateway mode (or following the Lease): what replicas send becomes graph and incidents, so no other
        # OTLP sender may speak as one. Following the Lease, no edges travel: nothing merges them.
        merging = export.enabled and not export.follow_lease
        self.merge = ReplicaMerge(self.topology, replica, topo.ttl_s, self.clock) if merging else None
        stages: list[Consumer] = [self.summary, self.topology]
        if self.merge is not None:
            self.telemetry.registry.register(self.merge)
            stages.append(self.merge)
        if export.enabled and (self.merge is not None or follow):
            stages.append(self._replica_anomalies(replica))
        if exporting or (follow and self._forwarding):
            elector = self.acting.elector if follow and self.acting is not None else None
            self.exporter = AggregateExporter(
                config, self.topology, self.telemetry, self.clock, self.detector.service_of, exporting,
                (lambda: elector.holder) if elector is not None else None,
            )  # fmt: skip
        if detection.enabled:
            stages.append(self.detector)
            self.topology.on_calls = lambda deltas: self.detector.consume_calls(
                [
                    Call(src, dst, d.requests, d.errors, d.latency_sum + d.gap_sum, d.gaps, d.buckets)
                    for (src, dst), d in deltas.items()
                    if src != USER.id  # a user's call into a service: its server rate and latency say it
                ]
            )
            stages.append(self.kube)
            stages.append(self.log_templates)
            if self.span_flow is not None:
                stages.append(self.span_flow)
        pipeline = consumer or FanOut(*stages)
        self.receiver = Receiver(config.receiver, pipeline, self.telemetry, self.clock)
        failed = self.telemetry.tick_failures.inc
        self._ticker = Ticker(self.tick, detection.window_s, failed) if detection.enabled else None
        api = config.api.listen
        app = build_api(
            self.telemetry, self.health, self.topology, self.history, self.incidents, self.clock,
            self.acting.executor if self.acting is not None else None, config.policies.approvals,
            self.diagnose if self.diagnoser is not None else None,
            self.incident_store.trace if self.incident_store is not None else None,
            self.detector.recent if detection.enabled else None,
            config.api.read_tokens(config.policies.approvals.tokens),
        )  # fmt: skip
        self.api = ThreadedServer(app, api.host, api.port, "API")

    def _found(self, now: float, anomalies: list[Anomaly]) -> None:
        """The detectors' sink: the incidents, and in gateway mode on a replica, the aggregator too (with
        follow_lease: while another holds the Lease)."""
        self.incidents.observe(now, anomalies)
        if self.exporter is not None and self._forwarding and not (self._follow and self.leading()):
            n = self.config.agent.window
            windows = {(a.entity, a.signal): self.detector.recent(a.entity, a.signal, n) for a in anomalies}
            calls: list[tuple[Entity, Entity]] = []
            if self._follow:  # the holder's graph has its own node's calls only: these go along, as structure
                pods = self.detector.service_of
                around = dict.fromkeys(e for a in anomalies for e in (a.entity, pods.get(a.entity, a.entity)))
                calls = self.topology.calls_around(around, MAX_CALLS)
            named = {a.signal: a.signal.partition(":")[2] for a in anomalies if a.signal.startswith(TEMPLATE_SIGNALS)}
            mined = self.log_templates.texts(named.values()) if named else {}
            cut = {signal: mined[key][:MAX_TEMPLATE] for signal, key in named.items() if key in mined}
            texts = {signal: self.redactor.text(text) for signal, text in cut.items()}
            self.exporter.forward(anomalies, windows, calls, texts)

    def leading(self) -> bool:
        """Whether this Rootward acts now: it has an executor, and holds the Lease when there is one."""
        if self.acting is None:
            return False
        return not self.config.actions.lease.enabled or self.acting.elector.is_leader()

    def _replica_anomalies(self, replica: str) -> ReplicaAnomalies:
        """The consumer of what replicas forward: their anomalies join this Rootward's incidents."""

        def learn(pod: str, service: str) -> None:
            """A pod another replica saw: its service, for the grouping of incidents (the graph's instance_of) and
            the reasoner (detector.service_of), unless this Rootward knows the pod's service already."""
            (pod_ns, pod_name), (svc_ns, svc_name) = (e.split(":", 1)[1].split("/", 1) for e in (pod, service))
            # the graph's word first (its own telemetry, the Kubernetes objects), the sender's only for a new pod
            held = self.topology.learn_instance(
                Entity(pod, "pod", pod_name, pod_ns), Entity(service, "service", svc_name, svc_ns)
            )
            with self.detector.held():
                known = self.detector.service_of
                if held is not None and pod not in known and len(known) < self.config.detection.max_series:
                    known[pod] = held

        return ReplicaAnomalies(
            self.incidents.observe, replica, self.clock, learn,
            lambda outcome, n: self.telemetry.gateway_anomalies.labels(outcome).inc(n),
            self.leading if self._follow else lambda: True, self.config.detection.incidents.hold_s,
            remember=self.detector.remember, remember_text=self.log_templates.remember,
            learn_calls=self.topology.learn_calls,
        )  # fmt: skip

    def diagnose(self, incident_id: str, llm: bool) -> Diagnosis | None:
        """Diagnose an incident again now (``POST /api/v1/incidents/{id}/diagnose``): with the LLM reasoner when
        ``llm`` and one is configured, else the graph reasoner. None for an unknown incident. Raises
        ``LookupError`` when the LLM is asked for and not configured."""
        incident = self.incidents.get(incident_id)
        if incident is None or self.diagnoser is None:
            return None
        if llm and self.llm is None:
            raise LookupError("no LLM reasoner is configured (agent.llm.enabled)")
        reasoner = None if self.llm is None else self.llm if llm else self.llm.fallback
        # the context is built holding the incidents' lock, which is the detector's too (one lock: a closing
        # window's sink takes the incidents under the detector's, a context reads series windows under the
        # incidents'); the reasoning runs outside it
        return self.diagnoser.rediagnose(incident, reasoner, self.incidents.held())

    def _published(self, incident: Incident) -> None:
        """A diagnosis made outside the pipeline's change (the LLM's worker, ``rootward diagnose``): the sinks after
        the diagnoser hear of an open incident's; a resolved incident's is only stored (no Slack update, no action
        for what is over)."""
        with self.incidents.held():  # the pipeline may reopen or resolve it meanwhile: decide and write as one
            if incident.status == "open":
                self.incidents.retell(incident, skip=self.diagnoser)
            elif self.incident_store is not None:
                self.incident_store.incident_changed(incident, "updated")

    def anomaly_cleared(self, reason: ActionReason) -> bool | None:
        """Whether the incident an action answered is over, for the executor's verification: resolved, or its root
        cause (or a pod of it) without a new anomaly for ``confirm + 2`` detection windows (40 s by default). None
        when there is nothing to watch (no incident, no root cause, none of its anomalies held)."""
        incident = self.incidents.get(reason.incident_id) if reason.incident_id else None
        root = reason.root_cause
        if incident is None or root is None:
            return None
        with self.incidents.held():
            if incident.status == "resolved":
                return True
            pods = self.detector.service_of
            seen = [t for e, t in incident.last_seen.items() if e == root or pods.get(e) == root]
        if not seen:
            return None
        # an anomaly is reported after `confirm` anomalous windows in a row and one normal window resets the run: a
        # fault that flickers is silent for up to confirm + 1 windows, and a window closes a window late
        detection = self.config.detection
        return self.clock.now() - max(seen) >= (detection.confirm + 2) * detection.window_s

    def _count_action(self, kind: str, status: str) -> None:
        self.telemetry.actions.labels(kind, status).inc()

    def tick(self) -> None:
        """Close the windows whose time has passed (the ticker calls it; a replay calls it as its clock moves)."""
        self.detector.tick()
        self.log_templates.tick()
        if self.span_flow is not None:
            self.span_flow.tick()
        if self.warm is not None:
            self.warm.maybe_save(self.clock.now())
        self.topology.expire_pending()  # a quiet caller's unpaired calls become edges without waiting for a span

    def health(self) -> dict[str, object]:
        """Liveness and readiness with their reasons."""
        queued = self.receiver.queue.size
        capacity = self.config.receiver.queue.max_items
        running = self.receiver.running
        exporter = self.exporter if self._forwarding else None
        stalled = self._ticker is not None and self._ticker.stalled()
        return {
            "alive": running and not stalled,
            # a full queue is not unready: the receiver answers 429 / RESOURCE_EXHAUSTED, which Collectors retry,
            # and readiness also puts the Lease holder behind svc/rootward-leader (approvals, forwarded anomalies)
            "ready": running and not stalled,
            # the detector closes its windows (off: detection off, or a replay drives them)
            "detection": "stalled" if stalled else "ok" if self._ticker and self._ticker.last_ok else "off",
            "queue_items": queued,
            "queue_capacity": capacity,
            # who acts: this Rootward (holding the Lease, if there is one), and where its anomalies go if not
            "acting": self.leading(),
            "lease_holder": self.acting.elector.holder if self.acting is not None else None,
            "forwards_to": exporter.endpoint
            if exporter is not None and not (self._follow and self.leading())
            else None,
            "forward_queue": exporter.queued if exporter is not None else 0,
            **(self.acting.health() if self.acting is not None else {}),
        }

    def start(self, timers: bool = True) -> None:
        """Restore the graph (with the history on), then start the receiver, the API, and the threads that run the
        graph's upkeep and close the detection windows on wall time (without ``timers``, the caller does both on the
        App's clock: an in-process replay, see :class:`~rootward.replay_sinks.InProcess`).

        Raises:
            StorageError: the topology history cannot be opened (the message names the file and what to do).
            StartupError: a port cannot be bound.
        """
        if self.history is not None and self.history.open():
            restored = self.history.restore(self.topology)
            if self.merge is not None:
                self.merge.counted_until = restored  # replicas' counts up to then are in the restored graph
            if restored is not None:
                with self.topology.read() as g:
                    logger.info(
                        "topology restored from %s as of %s: %d entities, %d edges",
                        self.history.path,
                        format_time(restored),
                        g.number_of_nodes(),
                        g.number_of_edges(),
                    )
        if self.incident_store is not None:
            self.incident_store.open()
            restored = self.incident_store.load(self.incidents)
            if restored:
                logger.info("%d incidents restored from %s", restored, self.incident_store.path)
        if self.warm is not None:
            self.warm.restore(self.clock.now())
        if self.acting is not None:
            self.acting.start()
        self.receiver.start()
        try:
            self.api.start()
        except Exception:
            self.receiver.shutdown()
            if self.history is not None:
                self.history.close()
            raise
        if timers:
            self.maintenance.start()
        if self.exporter is not None:
            self.exporter.start()
        if self._ticker is not None and timers:
            self._ticker.start()
        logger.info(
            "rootward ready: OTLP gRPC :%d, OTLP HTTP :%d, API :%d",
            self.receiver.grpc.port,
            self.receiver.http.port,
            self.api.port,
        )

    def shutdown(self) -> None:
        if self._ticker is not None:
            self._ticker.stop()
        self.receiver.shutdown()
        if self.warm is not None:
            self.warm.save(self.clock.now())  # after the drain (the window still open is not saved)
        self.slack.close()
        self.alertmanager.close()
        if self.acting is not None:
            self.acting.shutdown()
        if self.diagnoser is not None:
            self.diagnoser.close()
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()  # sends what the batch holds
        if self.incident_store is not None:
            self.incident_store.close()
        self.topology.flush()
        if self.exporter is not None:
            self.exporter.shutdown()  # a last export of what the flush paired
        self.maintenance.shutdown()  # the final checkpoint
        if self.history is not None:
            self.history.close()
        self.api.shutdown()
