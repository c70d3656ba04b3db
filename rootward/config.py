"""Configuration: one YAML file, then ``ROOTWARD_*`` environment overrides, then command-line ``--set`` flags.

Every field has a documented default, so an empty file (or none) is a working configuration. Unknown keys and bad
values are errors that name the key and where it came from:

    rootward.yaml: receiver.grpc.port: Input should be less than or equal to 65535 (got 70000)

Environment variables address nested keys with double underscores and take YAML values:
``ROOTWARD_RECEIVER__GRPC__PORT=14317``, ``ROOTWARD_RECEIVER__AUTH__TOKENS='[a, b]'``. The environment is read in
:func:`load_config` only, never at import time.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from rootward.errors import ConfigError

ENV_PREFIX = "ROOTWARD_"
#: What Kubernetes' service links inject for a Service named ``rootward-...`` (``ROOTWARD_OTLP_SERVICE_HOST``,
#: ``ROOTWARD_OTLP_PORT_4317_TCP_ADDR``, ...): never configuration, so not read as such. Configuration variables
#: nest with double underscores; these never contain one.
_SERVICE_LINK = re.compile(
    r"ROOTWARD_(?:(?!__)[A-Z0-9_])*(?:_SERVICE_HOST|_SERVICE_PORT(?:_[A-Z0-9_]+)?|_PORT(?:_\d+_(?:TCP|UDP|SCTP)(?:_PROTO|_PORT|_ADDR)?)?)"
)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class Listen(_Section):
    """Where a server listens."""

    host: str = "0.0.0.0"
    """Interface to bind. 0.0.0.0 so the node's Collector can reach the sidecar; 127.0.0.1 for local use."""
    port: int = Field(default=0, ge=0, le=65535)
    """TCP port; 0 picks a free port (tests, the demo)."""


class TLS(_Section):
    """Optional TLS for both OTLP servers."""

    cert_file: Path | None = None
    """PEM certificate chain. TLS is on when this and ``key_file`` are set."""
    key_file: Path | None = None
    """PEM private key."""

    @model_validator(mode="after")
    def _both_or_neither(self) -> TLS:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("set both cert_file and key_file, or neither")
        return self

    @property
    def enabled(self) -> bool:
        return self.cert_file is not None


class Auth(_Section):
    """Optional bearer-token authentication of OTLP senders."""

    tokens: list[SecretStr] = Field(default_factory=list)
    """Accepted tokens (``authorization: Bearer <token>``). Empty: no authentication. Several allow rotation."""


class Limits(_Section):
    """Limits that keep hostile or broken senders from exhausting memory. Over a limit: INVALID_ARGUMENT / 400."""

    max_request_bytes: int = Field(default=8 * 2**20, gt=0)
    """Largest HTTP body as received (compressed) and largest gRPC message after decompression, in bytes. 8 MiB:
    a Collector batch of ~20k spans (the Collector's own gRPC receiver allows 4 MiB)."""
    max_decompressed_bytes: int = Field(default=32 * 2**20, gt=0)
    """Largest request after decompression, in bytes; refuses gzip bombs. On gRPC, grpc-core enforces it."""
    max_json_bytes: int = Field(default=8 * 2**20, gt=0)
    """Largest OTLP/JSON request after decompression, in bytes. JSON decodes ~50x slower than protobuf, so it gets
    a lower bound; Collectors send protobuf."""
    max_items_per_request: int = Field(default=50_000, gt=0)
    """Most spans, data points or log records (and resources) in one request; bounds the memory one request can
    take, whatever its encoding (an empty span is 2 bytes on the wire)."""
    max_attributes: int = Field(default=128, gt=0)
    """Most attributes on one span, event, link, data point, log record or resource (the OTel SDK's default)."""
    max_value_bytes: int = Field(default=64 * 2**10, gt=0)
    """Longest attribute key or string/bytes value, in bytes. 64 KiB leaves room for stack traces."""
    max_depth: int = Field(default=8, gt=0, le=64)
    """Deepest nesting of AnyValue arrays and key-value lists."""
    body_timeout_s: float = Field(default=30.0, gt=0)
    """How long an HTTP sender may take to send its body; slower senders get 408 (and cannot hold a slot)."""


class Queue(_Section):
    """The bounded queue between the receiver and the pipeline (backpressure)."""

    max_items: int = Field(default=200_000, gt=0)
    """Spans + data points + log records waiting for the pipeline. Past it, senders get RESOURCE_EXHAUSTED / 429."""
    retry_after_s: float = Field(default=1.0, gt=0)
    """Delay suggested to senders when the queue is full (RetryInfo / Retry-After)."""
    drain_timeout_s: float = Field(default=10.0, ge=0)
    """How long shutdown waits for queued batches to reach the pipeline before counting them as dropped."""


class Receiver(_Section):
    """The OTLP receiver."""

    grpc: Listen = Listen(port=4317)
    """OTLP/gRPC listener (TraceService, MetricsService, LogsService)."""
    http: Listen = Listen(port=4318)
    """OTLP/HTTP listener (/v1/traces, /v1/metrics, /v1/logs)."""
    tls: TLS = TLS()
    auth: Auth = Auth()
    limits: Limits = Limits()
    queue: Queue = Queue()
    grpc_workers: int = Field(default=8, gt=0)
    """Threads serving gRPC calls. Decoding holds the GIL, so more threads add concurrency, not throughput."""
    max_concurrent_requests: int = Field(default=64, gt=0)
    """Requests in progress per transport; past it gRPC answers RESOURCE_EXHAUSTED and HTTP 503 (both retried)."""


class Api(_Section):
    """Rootward's own HTTP endpoint: /metrics (Prometheus), /healthz, /readyz, and the query API."""

    listen: Listen = Listen(port=8080)


class Storage(_Section):
    """Where Rootward keeps its own state."""

    data_dir: Path = Path("rootward-data")
    """Directory of Rootward's databases (the topology history today; incidents and the audit log later), created
    when missing. Relative to the working directory, as Prometheus' ``data/``; in Kubernetes, mount a volume and
    point this at it (e.g. /var/lib/rootward), or the history is lost with the container."""


class Thinning(_Section):
    """Past ``after_s`` of age, keep one checkpoint per ``every_s`` (the last of each window)."""

    after_s: float = Field(ge=0)
    """Age in seconds from which this thinning applies."""
    every_s: float = Field(gt=0)
    """One checkpoint kept per this many seconds."""


class TopologyHistory(_Section):
    """Checkpoints of the graph in SQLite: time travel (``at=``, ``/api/v1/diff``) and restart without counter
    resets. Measured disk and the design: topology/history.py and bench/README.md."""

    enabled: bool = True
    """Off: no time travel, the graph starts empty after a restart, and /metrics serves the live counters (which
    then reset at a restart)."""
    path: Path | None = None
    """The SQLite file; default ``<storage.data_dir>/topology.db``."""
    checkpoint_interval_s: float = Field(default=30.0, gt=0)
    """Seconds between checkpoints (and between ageing passes). The finest time travel, and how far the
    servicegraph counters on /metrics lag the live graph: they are served as of the last checkpoint, so that a
    restart never lowers them."""
    retention_s: float = Field(default=7 * 86400.0, gt=0)
    """How far back time travel goes, in seconds (7 days)."""
    thinning: list[Thinning] = Field(
        default_factory=lambda: [Thinning(after_s=3600, every_s=300), Thinning(after_s=86400, every_s=3600)]
    )
    """What keeps disk bounded: past 1 hour one checkpoint per 5 minutes is kept, past a day one per hour."""


class TopologyExport(_Section):
    """Gateway mode (otel-config/deploy/gateway): every replica but the aggregator sends its call edges with RED
    (cumulative servicegraph metrics) and the entities and structural edges it saw over OTLP/gRPC to the aggregator,
    which merges them into the cluster-wide graph (topology/export.py, topology/merge.py; README, "Deploy on
    Kubernetes"). The aggregator needs no setting: any Rootward merges what replicas send it."""

    enabled: bool = False
    """Send this replica's call edges to ``endpoint`` every ``interval_s``."""
    endpoint: str = "rootward-0.rootward-replicas.rootward.svc.cluster.local:4317"
    """The aggregator's OTLP/gRPC receiver, ``host:port``: the StatefulSet's first replica by its stable name behind
    the headless Service (not the gateway, which would route the metrics to any replica)."""
    aggregator: str | None = "rootward-0"
    """The aggregator's replica name: the replica of that name does not export (it merges). None: every replica
    exports."""
    replica: str | None = None
    """This replica's name in what it sends (the resource attribute ``rootward.replica``); default the host name,
    which in a StatefulSet is the pod's stable name (rootward-1, ...)."""
    interval_s: float = Field(default=10.0, gt=0)
    """Seconds between exports. Each carries whole counts (cumulative), so a failed one is made up by the next."""
    timeout_s: float = Field(default=5.0, gt=0)
    """Timeout of one export, in seconds."""
    ca_file: Path | None = None
    """PEM CA bundle: set, the export uses TLS (for an aggregator with ``receiver.tls``). The bearer token is the
    first of ``receiver.auth.tokens`` (the replicas share the Secret)."""


class Topology(_Section):
    """The live dependency graph: limits on what senders can make it hold, and its history."""

    max_entities: int = Field(default=50_000, gt=0)
    """Entities the graph holds; past it new ones are refused and counted (~650 bytes each)."""
    max_edges: int = Field(default=200_000, gt=0)
    """Edges the graph holds; past it new ones are refused and counted (~460 bytes each with RED counters)."""
    max_pending: int = Field(default=200_000, gt=0)
    """Spans waiting for their other half (client for server and back); past it the oldest is evicted."""
    pending_ttl_s: float = Field(default=10.0, gt=0)
    """How long a span waits for its other half, in seconds; then an unpaired client span may give a virtual
    edge. The Collector's servicegraph connector waits 2 s by default; Collectors batch, so 10 s."""
    ttl_s: float = Field(default=900.0, gt=0)
    """Entities and edges not seen for this many seconds (15 min) age out."""
    history: TopologyHistory = TopologyHistory()
    export: TopologyExport = TopologyExport()


class Incidents(_Section):
    """How anomalies become incidents."""

    hold_s: float = Field(default=120.0, gt=0)
    """An incident with no anomaly for this long resolves."""
    reopen_s: float = Field(default=120.0, ge=0)
    """A related anomaly within this long of the resolution reopens the incident (flap damping). 120 s: a fault that
    flaps stays one incident, but a new fault minutes later on a related service is a new one (600 s merged faults
    8 minutes apart on the shared Nezha days)."""
    min_families: int = Field(default=2, ge=1)
    """A new incident opens once its anomalies span this many signal families (``client.latency.p90`` and
    ``.p99`` are one family, CPU and latency two); until then it is pending and told to no one. Known failure
    signals (OOMKilled, CrashLoopBackOff, ...) open at once. 2: one series' spike (or its quantile siblings) is
    not an incident; on the shared Nezha days 1 gave 3-9x the false incidents."""
    store: bool = True
    """Keep incidents in ``<storage.data_dir>/incidents.db`` (SQLite): open ones survive a restart."""


class Multivariate(_Section):
    """The per-entity IsolationForest (detector/multivariate.py): several sub-threshold deviations of one entity that
    together are unlike anything it did before."""

    enabled: bool = False
    """Off by default: scikit-learn adds ~110 MB of resident memory to the sidecar once the first model is fitted
    (bench/README.md), more than the rest of Rootward at 10k spans/s."""
    refit_windows: int = Field(default=30, ge=1)
    """Windows between two background refits (30: every 5 minutes at 10 s windows)."""
    history_rows: int = Field(default=20_000, ge=100)
    """Entity vectors (one per entity per window) the model is fitted on, the newest."""
    min_rows: int = Field(default=500, ge=10)
    """Rows kept before the first fit."""
    n_estimators: int = Field(default=50, ge=1, le=1000)
    """Trees per forest: 50 score a window's 1,000 entities in ~5 ms (bench/README.md)."""
    quantile: float = Field(default=0.001, gt=0, lt=0.5)
    """Rows scoring below this quantile of the training rows' scores are unusual."""
    min_z: float = Field(default=3.0, ge=0)
    """An unusual row is reported only when one of its families is at least this far out (robust z): a new mix of
    quiet signals is not an anomaly."""


class Detection(_Section):
    """Streaming anomaly detection (see detector/)."""

    enabled: bool = True
    window_s: float = Field(default=10.0, gt=0)
    """Telemetry folds into windows of this length; each closed window is judged."""
    history: int = Field(default=240, ge=4)
    """Past values per series the baseline (median/MAD and tail quantiles) is computed from, in the series' own
    cadence: 40 minutes of 10 s span windows, 4 hours of per-minute metrics. 240: a rare but recurring spike (a pod's
    occasional slow call) is then part of the baseline's tail, not news (60 gave 3-4x the false incidents on the
    shared Nezha days)."""
    warmup: int = Field(default=12, ge=2)
    """Values a series needs before it is judged."""
    z: float = Field(default=5.0, gt=0)
    """Robust z-score past which a value is anomalous: |value - median| / scale, where scale is the largest of
    1.4826 MAD, the series' own tail (see ``tail_q``) and the signal's minimum change."""
    tail_q: float = Field(default=0.95, ge=0, lt=1)
    """Quantile of the series' history whose distance from the median, read as that of a normal distribution,
    also bounds the scale in the bad direction (0.95: 1.645 sigma). Heavy-tailed series (p99 latency of a pod with
    little traffic) then need a jump beyond their own usual excursions; for well-behaved series it equals MAD.
    0 turns it off."""
    confirm: int = Field(default=2, ge=1)
    """Consecutive anomalous values of a series before it is reported."""
    max_series: int = Field(default=100_000, gt=0)
    """Series kept; past it new series are refused and counted."""
    seasonality: bool = True
    """An anomalous value within ``z`` of the same hour's mean yesterday (in the baseline's scale) is explained by
    the daily cycle and not reported (detector/seasonal.py): nightly batches and morning ramps stop paging after
    their first day. Only yesterday counts, so nothing new today is hidden; 2.4 MB per 10,000 series."""
    log_trail_s: float = Field(default=60.0, ge=0)
    """A service's WARN-and-above log lines are judged as their sum over this many trailing seconds (at least one
    window): an error every few seconds is plain in a minute and lost in a 10 s window. It also keeps an error
    incident open this long after the errors stop."""
    operations_per_service: int = Field(default=0, ge=0, le=1000)
    """Span names per service that get a latency series of their own (``op:<span name>.p95``), the first ones seen;
    spans of further names still count for their service and are counted as dropped. 0 (the default) turns
    per-operation series off: on the shared Nezha days 20 found one more TrainTicket fault, opened one more false
    incident and ranked nothing better (bench/README.md), for ~20x the latency series. An operation's series counts
    as its service's latency when incidents count signal families. 20 suits a service with a few routes."""
    memory_near_limit: float = Field(default=0.9, gt=0, le=1)
    """A container's memory working set at this fraction of its limit or more (kubeletstats with k8s_cluster's
    ``k8s.container.memory_limit``, or ``*.memory_limit_utilization``) is a known failure signal,
    ``k8s:MemoryNearLimit``, with no baseline: the OOM killer acts at 1.0."""
    pod_pending_s: float = Field(default=300.0, gt=0)
    """Seconds a pod may stay Pending (k8s_cluster's ``k8s.pod.phase``) before it is a failure signal
    (``k8s:PodPending``): scheduling and image pulls take a while, a stuck pod is news (a Failed pod is at once)."""
    incidents: Incidents = Incidents()
    multivariate: Multivariate = Multivariate()


class GraphReasoner(_Section):
    """The default reasoner's weights (agent/graph_reasoner.py explains each step)."""

    z0: float = Field(default=5.0, gt=0)
    """An anomaly weighs log1p(|z| / z0): the detector's threshold, so a just-anomalous series weighs ~0.7."""
    client_weight: float = Field(default=0.5, ge=0, le=1)
    """What a caller's own client-side latency counts for the caller itself (the rest goes to its callees)."""
    alpha: float = Field(default=0.85, gt=0, lt=1)
    """Personalised PageRank: the chance to follow a call rather than restart at the evidence."""
    first_bonus: float = Field(default=0.2, ge=0)
    """Extra score (fraction) for the candidate whose first anomaly came first."""
    change_bonus: float = Field(default=2.0, ge=1)
    """Score factor for a candidate with a rollout linked to the incident."""
    sharpness: float = Field(default=2.0, gt=0)
    """Confidence = score^sharpness over the sum of all candidates'."""
    max_hypotheses: int = Field(default=10, ge=1, le=50)


class Redaction(_Section):
    """What is removed from everything sent to the LLM endpoint (agent/redact.py): each match becomes
    ``[REDACTED:<name>]``."""

    defaults: bool = True
    """The shipped patterns: bearer tokens, authorization headers, AWS keys, API keys and passwords in key=value
    form, OpenAI and GitHub tokens, JWTs, passwords in URLs, e-mail addresses."""
    optional: list[Literal["ipv4", "ipv6"]] = Field(default_factory=list)
    """Also IP addresses (off by default: a peer's address is often the evidence)."""
    patterns: dict[str, str] = Field(default_factory=dict)
    """Your own, name -> regular expression (a group named ``keep`` is kept, e.g. a key name before its value)."""

    @model_validator(mode="after")
    def _compiles(self) -> Redaction:
        for name, pattern in self.patterns.items():
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(f"redaction pattern {name!r} does not compile: {e}") from e
        return self


class LLM(_Section):
    """The LLM reasoner (agent/llm.py): a ReAct loop with read-only tools against any OpenAI-compatible endpoint.
    Its answer is checked against the diagnosis schema; whatever fails, the graph reasoner answers instead."""

    enabled: bool = False
    """Off: the graph reasoner alone (no network). On: the LLM diagnoses on a worker thread, the pipeline never
    waits for it."""
    base_url: str = "http://127.0.0.1:11434/v1"
    """The endpoint's base URL, e.g. https://api.openai.com/v1, or a local server (Ollama, vLLM, llama.cpp)."""
    model: str = "gpt-4o-mini"
    """The model name the endpoint knows."""
    api_key: SecretStr | None = None
    """The API key (a secret: set it from a Secret, ROOTWARD_AGENT__LLM__API_KEY). Never logged."""
    api_key_env: str | None = "OPENAI_API_KEY"
    """Else the environment variable that holds the key (read by load_config with the rest of the environment).
    Neither: no key (a local server)."""
    min_interval_s: float = Field(default=600.0, ge=0)
    """Least pipeline time between two LLM investigations of an open incident (each costs tokens); a new episode,
    opened or reopened, is investigated at once."""
    max_steps: int = Field(default=6, ge=1, le=30)
    """Model calls in one investigation; on the last no tools are offered, so the model must answer."""
    max_tokens: int = Field(default=60_000, ge=1000)
    """Input plus output tokens over one investigation; once spent, the next call is the last."""
    max_output_tokens: int = Field(default=2000, ge=100)
    """Output tokens of one model call."""
    deadline_s: float = Field(default=120.0, gt=0)
    """Wall-clock seconds for one investigation; past it, the graph reasoner's answer is used."""
    request_timeout_s: float = Field(default=30.0, gt=0)
    """Seconds one model call may take."""
    max_retries: int = Field(default=1, ge=0, le=5)
    """Retries of a failed call (connection errors, 429, 5xx; the client honours Retry-After) before falling back."""
    max_calls_per_tool: int = Field(default=3, ge=1)
    """Calls of any one tool in one investigation; past it the tool answers with an error envelope."""
    max_result_chars: int = Field(default=4000, ge=200)
    """A tool result's size in the conversation (longer results are cut and marked truncated)."""
    max_confidence: float = Field(default=0.79, ge=0, le=1)
    """Cap on the confidence the model may claim. 0.79: under the default policies.rules.medium_confidence (0.8), so
    every medium-risk action that follows an LLM diagnosis waits for a human: the model reads untrusted telemetry,
    and a log line that steers it must not be able to unlock an action by claiming certainty. Raise it (and lower
    the policy's gate) only deliberately."""
    price_per_1m_input: float = Field(default=0.0, ge=0)
    """Price of a million input tokens, for the trace's cost (0: not reported)."""
    price_per_1m_output: float = Field(default=0.0, ge=0)
    """Price of a million output tokens."""
    redaction: Redaction = Redaction()
    """What is removed from everything sent to the endpoint."""


class Agent(_Section):
    """Diagnosis of incidents (agent/): the incident context and the reasoner."""

    enabled: bool = True
    """Off: incidents carry the detector's candidates only."""
    min_action_confidence: float = Field(default=0.3, ge=0, le=1)
    """Below this confidence in the top hypothesis no action is proposed (policy gates by confidence too)."""
    max_anomalies: int = Field(default=50, gt=0)
    """Anomalies of an incident a context holds (the strongest)."""
    window: int = Field(default=30, gt=0)
    """Past values of each anomalous series in the context."""
    lookback_s: float = Field(default=60.0, ge=0)
    """Anomalies this long before the incident's current episode (opened or reopened) still count."""
    min_interval_s: float = Field(default=10.0, ge=0)
    """Least pipeline time between two diagnoses of an open incident (a new episode is diagnosed at once)."""
    graph: GraphReasoner = GraphReasoner()
    llm: LLM = LLM()
    """The optional LLM reasoner (off by default; the graph reasoner is its fallback)."""


class FreezeWindow(_Section):
    """A change freeze: no action that changes the cluster between ``start`` and ``end``."""

    start: datetime
    """RFC 3339 with an offset, e.g. 2024-12-24T00:00:00Z."""
    end: datetime
    """RFC 3339 with an offset; after ``start``."""
    reason: str = "change freeze"
    """Shown in the policy decision."""

    @model_validator(mode="after")
    def _ordered(self) -> FreezeWindow:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("start and end need an offset (e.g. 2024-12-24T00:00:00Z)")
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class PolicyRules(_Section):
    """The default Rego bundle's settings, given to every policy as ``data.rootward.settings`` (policies/bundle)."""

    protected_namespaces: list[str] = Field(default_factory=lambda: ["kube-system", "kube-public", "kube-node-lease"])
    """Namespaces never acted in (kube-system is refused whatever this says)."""
    allowed_namespaces: list[str] = Field(default_factory=list)
    """If not empty, the only namespaces acted in."""
    allowed_kinds: list[str] = Field(
        default_factory=lambda: ["Pod", "Deployment", "StatefulSet", "Node", "FeatureFlag"]
    )
    """Kinds of object acted on (``FeatureFlag``: the ``toggle_flag`` action on ``actions.flags.source``)."""
    allowed_flags: list[str] = Field(default_factory=list)
    """If not empty, the only feature flags (keys) ``toggle_flag`` may change."""
    max_pods_fraction: float = Field(default=0.2, ge=0, le=1)
    """Most of a workload's pods an action may take down at once (0.2: one pod in five)."""
    min_replicas: int = Field(default=1, ge=0)
    """Scale floor: fewer replicas than this is refused (1: never scale to zero)."""
    max_replicas: int = Field(default=50, ge=1)
    """Scale ceiling."""
    medium_confidence: float = Field(default=0.8, ge=0, le=1)
    """Medium-risk actions run without a human at or above this diagnosis confidence; below it they wait for one.
    Low-risk actions always run, high-risk ones always wait."""
    cooldown_s: float = Field(default=900.0, ge=0)
    """Seconds after an action on an object before another on the same object (lets the last one show effect)."""
    max_actions_per_hour: int = Field(default=10, ge=0)
    """Changing actions across the cluster per rolling hour."""
    freeze_windows: list[FreezeWindow] = Field(default_factory=list)
    """Change freezes (releases, holidays)."""


class Audit(_Section):
    """The hash-chained audit log of every decision, approval, dry-run, execution, verification and rollback."""

    path: Path | None = None
    """The SQLite file; default ``<storage.data_dir>/audit.db``."""
    hmac_key: SecretStr | None = None
    """Optional key: each record then also carries an HMAC-SHA256 of its hash, so that someone who can write the
    file cannot rebuild a consistent chain without the key. Set it from a Secret
    (ROOTWARD_POLICIES__AUDIT__HMAC_KEY)."""
    signing_key_file: Path | None = None
    """Optional Ed25519 private key (PEM, PKCS#8, unencrypted): each record then also carries a signature of its
    hash, which anyone holding only the public key (``rootward audit public-key``) can check."""
    signing_key: SecretStr | None = None
    """The same key as PEM text, from a Secret (ROOTWARD_POLICIES__AUDIT__SIGNING_KEY); not with the file."""
    synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    """``NORMAL``: every record survives the process being killed (``kill -9``, OOM); an fsync only for each intent
    (the record before a change) and the records before it, so after a power loss or OS crash every change has its
    decision and intent on disk, while later outcome records may be lost. ``FULL``: every record fsynced before the
    executor moves on (about 10x slower an append on a busy disk: bench/README.md)."""

    @model_validator(mode="after")
    def _one_signing_key(self) -> Audit:
        if self.signing_key is not None and self.signing_key_file is not None:
            raise ValueError("set signing_key_file or signing_key, not both")
        return self


class Approvals(_Section):
    """Human approval of actions that policy (or ``actions.mode: approve-all``) holds back."""

    ttl_s: float = Field(default=3600.0, gt=0)
    """An approval not given within this many seconds expires (the cluster will have moved on)."""
    tokens: dict[str, SecretStr] = Field(default_factory=dict)
    """Operator name -> bearer token for ``POST /api/v1/approvals/{id}/approve|reject`` and the incident writes; the
    name is recorded as who decided. Empty: approvals cannot be given over HTTP. A token must have at least 8
    characters and no surrounding whitespace (an empty value from a missing Secret key must not let anyone in)."""
    slack_signing_secret: SecretStr | None = None
    """The Slack app's signing secret: set, ``POST /api/v1/slack/interactions`` takes approve/reject button clicks
    (signature and a 5-minute replay window checked)."""
    slack_approvers: list[str] = Field(default_factory=list)
    """Slack user ids allowed to decide by button; empty: any user of the workspace the signed click comes from."""

    @model_validator(mode="after")
    def _strong_tokens(self) -> Approvals:
        for name, token in self.tokens.items():
            value = token.get_secret_value()
            if len(value) < 8 or value != value.strip():
                raise ValueError(f"policies.approvals.tokens.{name}: at least 8 characters, no surrounding whitespace")
        return self


class Policies(_Section):
    """The policy engine (Rego, evaluated with regopy), the audit log and approvals."""

    bundle_dirs: list[Path] = Field(default_factory=list)
    """Directories of your own ``.rego`` files, added to the default bundle (package ``rootward.policy``: add to
    ``deny`` or ``approval``). Files ending ``_test.rego`` are tests (``rootward policy test DIR``)."""
    default_bundle: bool = True
    """Load the shipped bundle (scope, blast radius, confidence gating, cooldown, rate limit, freeze windows)."""
    eval_timeout_s: float = Field(default=1.0, gt=0)
    """A decision that takes longer is a deny (fail closed)."""
    rules: PolicyRules = PolicyRules()
    audit: Audit = Audit()
    approvals: Approvals = Approvals()


class KubernetesAccess(_Section):
    """How the executor reaches the Kubernetes API."""

    host: str | None = None
    """API server URL. Unset: the in-cluster service account, else ``kubeconfig``."""
    kubeconfig: Path | None = None
    """A kubeconfig file when not in a cluster (default ~/.kube/config)."""
    context: str | None = None
    """The kubeconfig context; default its current one."""
    request_timeout_s: float = Field(default=10.0, gt=0)
    """Timeout of one API request."""


class Lease(_Section):
    """Leader election: with several replicas only the holder of a coordination.k8s.io Lease acts."""

    enabled: bool = True
    name: str = "rootward-executor"
    namespace: str = "rootward"
    duration_s: float = Field(default=15.0, gt=0)
    """A holder that has not renewed for this long loses the Lease."""
    renew_s: float = Field(default=5.0, gt=0)
    """How often the holder renews (and others try to take it)."""
    identity: str | None = None
    """This replica's name in the Lease; default the pod's host name."""


class FeatureFlagSource(_Section):
    """The flagd flag file that ``toggle_flag`` actions change (actions/flags.py): flagd serves flags read-only, so
    Rootward rewrites the file that flagd (file mode) and your applications' flagd file providers watch."""

    source: Path | None = None
    """The flag-definition file (JSON, flagd's schema), on a volume Rootward can write. Unset or empty: feature-flag
    actions are off (they fail, audited, saying so)."""
    poll_interval_ms: int = Field(default=200, ge=10, le=60_000)
    """How often Rootward's own flagd file resolver, which verifies a toggle through OpenFeature, re-reads the file."""

    @model_validator(mode="before")
    @classmethod
    def _empty_is_off(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("source") in ("", None):
            return {**data, "source": None}
        return data


class Actions(_Section):
    """The guarded executor: policy -> audit -> server-side dry-run -> execute -> verify -> audit (-> roll back)."""

    enabled: bool = False
    """Reach the Kubernetes API and hand diagnosed incidents' proposed actions to the executor. Off by default so
    that a local ``rootward serve`` never touches whatever cluster a kubeconfig points at; the shipped manifests
    turn it on (with ``mode: dry-run``)."""
    mode: Literal["dry-run", "approve-all", "autonomous"] = "dry-run"
    """``dry-run``: decide and dry-run only, never change the cluster; ``approve-all``: every allowed action waits
    for a human; ``autonomous``: policy decides what runs without one."""
    verify_timeout_s: float = Field(default=300.0, gt=0)
    """How long a change has to become healthy (rollout available, pods Ready, the anomaly gone) before it is
    rolled back."""
    poll_interval_s: float = Field(default=2.0, gt=0)
    """How often verification reads the cluster."""
    kubernetes: KubernetesAccess = KubernetesAccess()
    lease: Lease = Lease()
    flags: FeatureFlagSource = FeatureFlagSource()


class Logging(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Log level of the ``rootward`` loggers."""
    format: Literal["text", "json"] = "text"
    """``json`` writes one JSON object a line, for log collectors."""


class Slack(_Section):
    """Incident messages in Slack: a bot token (one message per incident, edited as it changes) or an incoming
    webhook (a message on open, reopen and resolve). Neither set: no messages."""

    webhook_url: SecretStr | None = None
    """An incoming webhook's URL (a secret: set it from a Secret, ROOTWARD_NOTIFICATIONS__SLACK__WEBHOOK_URL)."""
    bot_token: SecretStr | None = None
    """A bot token with chat:write (ROOTWARD_NOTIFICATIONS__SLACK__BOT_TOKEN); needs ``channel``."""
    channel: str | None = None
    api_url: str | None = None
    """The Web API's base URL, for a proxy (default https://slack.com/api/)."""
    page_url: str | None = None
    """Rootward's web page as users reach it; messages link to the incident there."""
    max_per_minute: int = Field(default=10, ge=1)
    """Messages a minute to the channel; past it new incidents go out together as one digest."""

    @model_validator(mode="after")
    def _channel_with_token(self) -> Slack:
        if self.bot_token is not None and not self.channel:
            raise ValueError("notifications.slack.bot_token needs notifications.slack.channel")
        return self


class Notifications(_Section):
    slack: Slack = Slack()


class Config(_Section):
    """The whole configuration. ``Config()`` is the documented default."""

    receiver: Receiver = Receiver()
    topology: Topology = Topology()
    detection: Detection = Detection()
    agent: Agent = Agent()
    notifications: Notifications = Notifications()
    api: Api = Api()
    storage: Storage = Storage()
    policies: Policies = Policies()
    actions: Actions = Actions()
    logging: Logging = Logging()

    @property
    def audit_path(self) -> Path:
        """The audit log's file: ``policies.audit.path``, else ``<storage.data_dir>/audit.db``."""
        return self.policies.audit.path or self.storage.data_dir / "audit.db"

    @property
    def history_path(self) -> Path:
        """The topology history's file: ``topology.history.path``, else ``<storage.data_dir>/topology.db``."""
        return self.topology.history.path or self.storage.data_dir / "topology.db"

    @property
    def incidents_path(self) -> Path:
        """The incident store's file: ``<storage.data_dir>/incidents.db``."""
        return self.storage.data_dir / "incidents.db"


#: ``--set`` strings for a Rootward on free ports of 127.0.0.1 (in-process replays, the demo, tests).
LOCAL_PORTS = tuple(
    f"{part}.{setting}"
    for part in ("receiver.grpc", "receiver.http", "api.listen")
    for setting in ("host=127.0.0.1", "port=0")
)
#: ``--set`` strings for a Rootward that writes nothing to disk: no topology history, no incident store.
NOTHING_ON_DISK = ("topology.history.enabled=false", "detection.incidents.store=false")


def load_config(
    path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Iterable[str] = (),
) -> Config:
    """Read the YAML file at ``path`` (if any), apply ``ROOTWARD_*`` variables from ``environ`` (default:
    ``os.environ``) and then ``overrides`` (``key.path=value`` strings), and validate.

    Raises:
        ConfigError: the file is unreadable or not YAML, or a key is unknown or a value invalid; the message names
            the key and its source.
    """
    data: dict[str, Any] = {}
    source: dict[str, str] = {}
    origin = str(path) if path else "defaults"
    if path is not None:
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise ConfigError(f"{path}: cannot read: {e.strerror}") from e
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as e:  # the position only: the problem text may quote a secret
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ConfigError(f"{path}: not valid YAML{where}") from e
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping, not {type(loaded).__name__}")
        data = loaded or {}
    env = os.environ if environ is None else environ
    for name, raw in sorted(env.items()):
        if name.startswith(ENV_PREFIX) and not _SERVICE_LINK.fullmatch(name):
            keys = name[len(ENV_PREFIX) :].lower().split("__")
            _set(data, keys, _yaml_value(raw, name))
            source[".".join(keys)] = f"environment {name}"
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. receiver.grpc.port=4317")
        keys = key.strip().split(".")
        _set(data, keys, _yaml_value(raw, f"--set {key}"))
        source[".".join(keys)] = f"--set {key}"
    try:
        config = Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_describe(e, origin, source)) from e
    llm = config.agent.llm
    if llm.api_key is None and llm.api_key_env and env.get(llm.api_key_env):  # the LLM key's own variable
        llm = llm.model_copy(update={"api_key": SecretStr(env[llm.api_key_env])})
        config = config.model_copy(update={"agent": config.agent.model_copy(update={"llm": llm})})
    return config


def _yaml_value(raw: str, where: str) -> Any:
    try:
        return yaml.safe_load(raw) if raw.strip() else raw
    except yaml.YAMLError as e:  # the value is not echoed: it may be a secret
        raise ConfigError(f"{where}: not a valid YAML value") from e


def _set(data: dict[str, Any], keys: list[str], value: Any) -> None:
    for k in keys[:-1]:
        node = data.setdefault(k, {})
        if not isinstance(node, dict):
            node = data[k] = {}
        data = node
    data[keys[-1]] = value


def _describe(err: ValidationError, origin: str, source: Mapping[str, str]) -> str:
    lines = []
    for item in err.errors():
        key = ".".join(str(p) for p in item["loc"])
        where = next((s for k, s in source.items() if key == k or key.startswith(k + ".")), origin)
        secret = any(word in key for word in ("auth", "token", "secret", "password", "key_file", "hmac_key", "api_key"))
        got = "" if item["type"] == "extra_forbidden" or secret else f" (got {item['input']!r})"
        message = "unknown key" if item["type"] == "extra_forbidden" else item["msg"]
        lines.append(f"{where}: {key}: {message}{got}")
    return "\n".join(lines)
