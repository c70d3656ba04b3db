"""Rootward's own metrics (Prometheus), one registry per running instance so that tests can run several.

Every item the receiver sees ends in exactly one outcome, per signal:
``accepted`` (queued for the pipeline), ``refused`` (the sender was told: malformed, over a limit, unauthenticated,
queue full) or ``dropped`` (accepted and then lost: a consumer error, or still queued when shutdown's drain deadline
passed). ``rootward_receiver_items_total`` counts them with the reason, so nothing is lost silently.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from rootward._version import __version__


class Telemetry:
    """The metric families of one Rootward instance."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.build_info = Gauge("rootward_build_info", "Rootward version.", ["version"], registry=r)
        self.build_info.labels(__version__).set(1)
        self.items = Counter(
            "rootward_receiver_items",
            "Spans, data points and log records by signal, outcome (accepted, refused, dropped) and reason.",
            ["signal", "outcome", "reason"],
            registry=r,
        )
        self.requests = Counter(
            "rootward_receiver_requests",
            "Export requests by transport (grpc, http), signal and result (ok, partial, or the error reason: "
            "malformed, limit, unauthenticated, queue_full, body_timeout, unsupported_media_type, shutting_down, "
            "internal).",
            ["transport", "signal", "result"],
            registry=r,
        )
        self.decode_seconds = Histogram(
            "rootward_receiver_decode_seconds",
            "Time to decode one export request into a columnar batch.",
            ["signal"],
            buckets=(0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0),
            registry=r,
        )
        self.queue_items = Gauge("rootward_queue_items", "Items waiting for the pipeline.", registry=r)
        self.queue_capacity = Gauge("rootward_queue_capacity_items", "Capacity of the pipeline queue.", registry=r)
        self.consumer_errors = Counter(
            "rootward_pipeline_consumer_errors", "Batches a pipeline stage failed on.", ["signal"], registry=r
        )
        self.checkpoint_seconds = Histogram(
            "rootward_topology_checkpoint_seconds",
            "Time to write one checkpoint of the topology graph to its history.",
            buckets=(0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0),
            registry=r,
        )
        self.checkpoint_rows = Counter(
            "rootward_topology_checkpoint_rows", "Entity and edge versions written to the topology history.", registry=r
        )
        self.checkpoint_failures = Counter(
            "rootward_topology_checkpoint_failures",
            "Checkpoints or history prunings that failed (the error is logged; the next checkpoint retries).",
            registry=r,
        )
        self.last_checkpoint = Gauge(
            "rootward_topology_last_checkpoint_timestamp_seconds",
            "When the last checkpoint committed (unix seconds); the servicegraph counters are as of then.",
            registry=r,
        )
        self.history_bytes = Gauge(
            "rootward_topology_history_bytes", "Disk taken by the topology history (with its WAL).", registry=r
        )
        self.aged_out = Counter(
            "rootward_topology_aged_out_entities",
            "Entities removed after not being seen for topology.ttl_s.",
            registry=r,
        )
        self.incident_store_failures = Counter(
            "rootward_incident_store_failures", "Incident changes that could not be stored (logged).", registry=r
        )
        self.actions = Counter(
            "rootward_actions",
            "Proposed actions by kind and how they ended: denied, dry_run, pending_approval, succeeded, rolled_back, "
            "failed, not_leader, dropped (the responder's queue full).",
            ["kind", "status"],
            registry=r,
        )
        self.llm_fallbacks = Counter(
            "rootward_agent_llm_fallbacks",
            "LLM diagnoses that ended in the graph reasoner's answer, by reason (Unavailable, BadAnswer, OverBudget).",
            ["reason"],
            registry=r,
        )
        self.slack_messages = Counter(
            "rootward_slack_messages",
            "Incident notifications by outcome: sent, failed (an attempt Slack did not take; sent again later), "
            "given_up (after notifications.slack.resend more), dropped, silenced, unchanged, digested.",
            ["outcome"],
            registry=r,
        )

        self.tick_failures = Counter(
            "rootward_detector_tick_failures",
            "Detection windows whose close failed (logged with the traceback); three periods without a good one "
            "and /healthz answers 503.",
            registry=r,
        )
        self.actions_paused = Gauge(
            "rootward_actions_paused",
            "1 while actions are paused (the Lease's rootward.dev/paused, or this Rootward's own pause): every "
            "request runs as a dry run and approvals wait.",
            registry=r,
        )
        self.incidents_open = Gauge("rootward_incidents_open", "Incidents open now.", registry=r)
        self.approvals_pending = Gauge(
            "rootward_approvals_pending", "Actions waiting for a human's approval on this Rootward.", registry=r
        )
        self.since_window = Gauge(
            "rootward_detector_seconds_since_window",
            "Seconds since detection last closed its windows (0 when detection is off or a replay drives it).",
            registry=r,
        )
        self.policy_bundle = Gauge(
            "rootward_policy_bundle_info",
            "1, labelled with the digest of the policy bundle this Rootward compiled (its files and settings): "
            "pods running different policies show different digests.",
            ["digest"],
            registry=r,
        )
        self.alertmanager_posts = Counter(
            "rootward_alertmanager_posts",
            "Posts of the current alerts to an Alertmanager (notifications.alertmanager) by outcome: sent, failed "
            "(everything is posted again next round).",
            ["outcome"],
            registry=r,
        )
        self.acting = Gauge(
            "rootward_acting",
            "1 while this Rootward acts: it has an executor and holds the Lease (when there is one); else 0.",
            registry=r,
        )
        self.gateway_anomalies = Counter(
            "rootward_gateway_anomalies",
            "Forwarded anomalies by outcome: sent, failed (queued again), dropped (queue full) and refused (by the "
            "aggregator) on a replica; accepted, refused, stale, over_limit, not_leader, and for the call edges "
            "sent with them calls_accepted and calls_refused, on the receiving end.",
            ["outcome"],
            registry=r,
        )
        self.audit_shipped = Counter(
            "rootward_audit_shipped",
            "Audit records shipped to the log backend (policies.audit.ship) by outcome: shipped and rejected (by the "
            "backend) records, failed exports (tried again).",
            ["outcome"],
            registry=r,
        )
        self.audit_unshipped = Gauge(
            "rootward_audit_unshipped", "Audit records not shipped to the log backend yet.", registry=r
        )
        self.gateway_exports = Counter(
            "rootward_gateway_exports",
            "Exports of this replica's call edges to the aggregator (gateway mode) by outcome: sent, partial, failed.",
            ["outcome"],
            registry=r,
        )

    def exposition(self) -> bytes:
        """The metrics in the Prometheus text format."""
        return generate_latest(self.registry)

    def value(self, name: str, **labels: str) -> float:
        """The current value of a sample (0 when absent), e.g. ``value("rootward_receiver_items_total", ...)``."""
        found = self.registry.get_sample_value(name, labels)
        return 0.0 if found is None else found
