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
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, SecretStr, ValidationError, model_validator

from rootward.config_acting import (
    Actions,
    Approvals,
    Audit,
    FeatureFlagSource,
    FreezeWindow,
    KubernetesAccess,
    Lease,
    Policies,
    PolicyRules,
)
from rootward.config_agent import LLM, Agent, GraphReasoner, Redaction
from rootward.config_detection import Detection, Incidents, LogFlow, Multivariate, SpanFlow
from rootward.config_receiver import TLS, Auth, Limits, Listen, Queue, Receiver, same_socket
from rootward.config_section import OtlpDestination, _Section, strong_tokens
from rootward.errors import ConfigError

ENV_PREFIX = "ROOTWARD_"
#: The command line's own variables (the operator token its API commands send): never configuration, or exporting
#: it for `rootward approvals` would stop every command that loads the configuration.
CLI_VARIABLES = frozenset({"ROOTWARD_TOKEN"})
#: What Kubernetes' service links inject for a Service named ``rootward-...`` (``ROOTWARD_OTLP_SERVICE_HOST``,
#: ``ROOTWARD_OTLP_PORT_4317_TCP_ADDR``, ...): never configuration, so not read as such. Configuration variables
#: nest with double underscores; these never contain one.
_SERVICE_LINK = re.compile(
    r"ROOTWARD_(?:(?!__)[A-Z0-9_])*(?:_SERVICE_HOST|_SERVICE_PORT(?:_[A-Z0-9_]+)?|_PORT(?:_\d+_(?:TCP|UDP|SCTP)(?:_PROTO|_PORT|_ADDR)?)?)"
)


class Api(_Section):
    """Rootward's own HTTP endpoint: /metrics (Prometheus), /healthz, /readyz, the query API and the web page."""

    listen: Listen = Listen(port=8080)
    reads: Literal["open", "token"] = "open"
    """Who may read the API's data (the topology, incidents with their anomalies, diagnoses and LLM reasoning
    traces, which quote your telemetry): ``open``, anyone who reaches the port; ``token``, a bearer token of
    ``api.readers`` or ``policies.approvals.tokens``, and without any token configured only a client on the pod's
    loopback (``kubectl port-forward``, ``kubectl exec ... rootward incidents``), as for writes. /metrics, /healthz,
    /readyz, the OpenAPI document and the page's own files stay open (Prometheus, the kubelet's probes)."""
    readers: dict[str, SecretStr] = Field(default_factory=dict)
    """Name -> read-only bearer token (at least 8 characters) for ``api.reads: token``: sees what the API and the
    web page show, decides nothing (approvals, the brake and the audit log want an operator's token)."""

    @model_validator(mode="after")
    def _strong_readers(self) -> Api:
        strong_tokens(self.readers, "api.readers")
        if self.readers and self.reads == "open":
            raise ValueError(
                "api.readers are set but api.reads is open: set api.reads: token, or the readers change nothing"
            )
        return self

    def read_tokens(self, operators: Mapping[str, SecretStr]) -> dict[str, str] | None:
        """The tokens that may read with ``reads: token`` (readers' names as ``reader:<name>``, operators' as they
        are), else None: reads are open."""
        if self.reads == "open":
            return None
        readers = {f"reader:{name}": t.get_secret_value() for name, t in self.readers.items()}
        return readers | {name: t.get_secret_value() for name, t in operators.items()}


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
    follow_lease: bool = False
    """The aggregator is whoever holds the actions Lease (the DaemonSet): each Rootward sends its anomalies to
    ``endpoint`` (the Service ``rootward-leader``, which selects the holder's pod by the label it puts on it,
    ``actions.lease.pod``) while another holds the Lease, and alerts Slack only while it holds it. Call edges stay
    on each node (a node's half-seen edges do not add up to the cluster's graph), and ``aggregator`` is not read."""
    anomalies: bool = True
    """Also send this replica's anomalies to the aggregator as soon as they are found (rootward/forwarded.py): its
    incidents then hold what every replica saw, and it alone alerts (Slack is off on a replica that forwards) and
    acts. False: each replica alerts on its own share, as separate incidents."""
    timeout_s: float = Field(default=5.0, gt=0)
    """Timeout of one export, in seconds."""
    ca_file: Path | None = None
    """PEM CA bundle: set, the export uses TLS (for an aggregator with ``receiver.tls``). The bearer token is the
    first of ``receiver.auth.tokens`` (the replicas share the Secret)."""

    @model_validator(mode="after")
    def _follow_needs_export(self) -> TopologyExport:
        if self.follow_lease and not self.enabled:
            raise ValueError("follow_lease sends anomalies to the Lease holder: set topology.export.enabled too")
        return self


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


class Logging(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Log level of the ``rootward`` loggers."""
    format: Literal["text", "json"] = "text"
    """``json`` writes one JSON object a line, for log collectors."""


class Traces(OtlpDestination):
    """Rootward's own traces: the LLM reasoner's GenAI spans (one per model call and per tool call, ``gen_ai.*``
    attributes), sent over OTLP so teams see the agent in the tracing tools they already use. Off until
    ``endpoint`` is set. Sent to the node's Collector, they come back to Rootward like any service's spans."""


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
    resend: int = Field(default=5, ge=0, le=20)
    """Times a message Slack did not take (after slack_sdk's own retries of 429 and 5xx) is sent again, the
    waits doubling from ``resend_after_s`` up to 5 minutes; a newer rendering of the same incident replaces it."""
    resend_after_s: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _channel_with_token(self) -> Slack:
        if self.bot_token is not None and not self.channel:
            raise ValueError("notifications.slack.bot_token needs notifications.slack.channel")
        return self


class Alertmanager(_Section):
    """Incidents as alerts to Prometheus Alertmanager (rootward/alertmanager.py): routed, silenced and paged by
    the team's own Alertmanager configuration. Off until ``urls`` is set."""

    urls: list[str] = Field(default_factory=list)
    """Alertmanagers to post to (every one of an HA cluster), e.g. ``http://alertmanager.monitoring:9093``."""
    interval_s: float = Field(default=60.0, gt=0)
    """How often open incidents are posted again (an alert not posted again ends four intervals later)."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Labels on every alert, e.g. ``{cluster: prod-eu}`` (names as Prometheus' label names)."""
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    """Headers on each post (an Authorization for a proxy in front of Alertmanager: a secret)."""
    page_url: str | None = None
    """Rootward's web page as users reach it: each alert links to its incident there."""
    timeout_s: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _label_names(self) -> Alertmanager:
        for name in self.labels:
            if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", name) or name.startswith("__"):
                raise ValueError(f"notifications.alertmanager.labels: {name!r} is not a label name")
            if name in ("alertname", "incident", "severity", "root_cause", "service", "namespace"):
                raise ValueError(f"notifications.alertmanager.labels: {name!r} is Rootward's own label")
        return self


class Notifications(_Section):
    slack: Slack = Slack()
    alertmanager: Alertmanager = Alertmanager()


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
    traces: Traces = Traces()

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        operators = {t.get_secret_value(): name for name, t in self.policies.approvals.tokens.items()}
        for name, token in self.api.readers.items():
            if token.get_secret_value() in operators:  # the operator's name would win: the "reader" could decide
                raise ValueError(
                    f"api.readers.{name} is policies.approvals.tokens.{operators[token.get_secret_value()]}"
                )
        listeners = [("receiver.grpc", self.receiver.grpc), ("receiver.http", self.receiver.http),
                     ("api.listen", self.api.listen)]  # fmt: skip
        for i, (where, listen) in enumerate(listeners):
            for other, earlier in listeners[:i]:
                if listen.port and listen.port == earlier.port and same_socket(listen.host, earlier.host):
                    raise ValueError(f"{where}.port {listen.port} is {other}'s too: each listener needs its own port")
        return self

    @property
    def audit_path(self) -> Path:
        """The audit log's file: ``policies.audit.path``, else ``<storage.data_dir>/audit.db``."""
        return self.policies.audit.path or self.storage.data_dir / "audit.db"

    @property
    def history_path(self) -> Path:
        """The topology history's file: ``topology.history.path``, else ``<storage.data_dir>/topology.db``."""
        return self.topology.history.path or self.storage.data_dir / "topology.db"

    @property
    def detector_path(self) -> Path:
        """The detector's saved baselines (``detection.warm_start``): ``<storage.data_dir>/detector.npz``."""
        return self.storage.data_dir / "detector.npz"

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
NOTHING_ON_DISK = ("topology.history.enabled=false", "detection.incidents.store=false", "detection.warm_start=false")
#: A fixed sampling key: the same replay samples the same traces (the default key is random per process).
REPRODUCIBLE = ("detection.sampling_key=11400714819323198485",)


class _TwiceGiven(ValueError):
    """A key given twice in one mapping (only the key and where: never a value)."""


class _UniqueKeys(yaml.SafeLoader):
    """``safe_load`` that refuses a key given twice in one mapping: YAML says keys are unique, PyYAML keeps the
    last, so a second ``actions:`` pasted lower in the file silently replaced the first."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:  # the keys written here (a merge key's may be overridden: that is its use)
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str | int | float | bool):
                continue  # an unhashable key: the SafeLoader's own error follows
            if key in seen:
                mark = key_node.start_mark
                raise _TwiceGiven(f"key {str(key)[:80]!r} given twice (line {mark.line + 1}): YAML keeps only one")
            seen.add(key)
        return super().construct_mapping(node, deep)


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
            loaded = yaml.load(text, _UniqueKeys)
        except _TwiceGiven as e:
            raise ConfigError(f"{path}: {e}") from e
        except yaml.YAMLError as e:  # the position only: the problem text may quote a secret
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ConfigError(f"{path}: not valid YAML{where}") from e
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping, not {type(loaded).__name__}")
        data = loaded or {}
    env = os.environ if environ is None else environ
    for name, raw in sorted(env.items()):
        if name.startswith(ENV_PREFIX) and name not in CLI_VARIABLES and not _SERVICE_LINK.fullmatch(name):
            keys = name[len(ENV_PREFIX) :].lower().split("__")
            _set(data, keys, _yaml_value(raw, name))
            source[".".join(keys)] = f"environment {name}"
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            shown = item.split(":", 1)[0].split(" ", 1)[0][:80]  # the key as far as it goes: the rest may be a secret
            raise ConfigError(f"--set {shown}...: expected KEY=VALUE, e.g. receiver.grpc.port=4317")
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


#: Keys whose bad values an error must not echo (a malformed secret is still a secret).
_SECRET_WORDS = (
    "auth", "token", "secret", "password", "key_file", "hmac_key", "api_key", "signing_key", "webhook", "headers",
)  # fmt: skip


def _describe(err: ValidationError, origin: str, source: Mapping[str, str]) -> str:
    lines = []
    for item in err.errors():
        key = ".".join(str(p) for p in item["loc"])
        related = [s for k, s in source.items() if key == k or key.startswith(k + ".") or k.startswith(key + ".")]
        related = related if key else list(source.values())  # a check across sections: whatever set anything
        where = ", ".join(dict.fromkeys(related)) or origin  # a section's check names whatever set keys inside it
        secret = any(word in key for word in _SECRET_WORDS)
        value = item["input"]
        echo = not secret and item["type"] != "extra_forbidden" and _plain(_annotation(item["loc"]))
        shown = value if isinstance(value, str | int | float | bool) or value is None else None
        got = f" (got {shown!r})" if echo and (shown is not None or value is None) else ""
        message = "unknown key" if item["type"] == "extra_forbidden" else item["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {key}: {message}{got}" if key else f"{where}: {message}")
    return "\n".join(lines)


def _annotation(loc: tuple[int | str, ...]) -> Any:
    """The type of the setting at ``loc`` in Config, or None when ``loc`` is not a setting's path."""
    model: Any = Config
    annotation: Any = None
    for part in loc:
        fields = getattr(model, "model_fields", None)
        if not isinstance(fields, dict) or part not in fields:
            return None
        annotation = fields[part].annotation
        model = next((a for a in (annotation, *typing.get_args(annotation)) if isinstance(a, type)), None)
    return annotation


def _plain(annotation: Any) -> bool:
    """Whether a setting's value may be echoed: a number, a flag, a word, a path or a choice (not a section, a map,
    a list or a secret, whose value holds others or is one)."""
    if annotation is None:
        return False
    if typing.get_origin(annotation) is typing.Annotated:
        return _plain(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) is Literal:
        return True
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if args and typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return all(_plain(a) for a in args)
    return annotation in (int, float, bool, str, Path)


# every section, with those of the config_*.py parts, is looked up here
__all__ = [
    "ENV_PREFIX",
    "LLM",
    "LOCAL_PORTS",
    "NOTHING_ON_DISK",
    "TLS",
    "Actions",
    "Agent",
    "Alertmanager",
    "Api",
    "Approvals",
    "Audit",
    "Auth",
    "Config",
    "Detection",
    "FeatureFlagSource",
    "FreezeWindow",
    "GraphReasoner",
    "Incidents",
    "KubernetesAccess",
    "Lease",
    "Limits",
    "Listen",
    "LogFlow",
    "Logging",
    "Multivariate",
    "Notifications",
    "Policies",
    "PolicyRules",
    "Queue",
    "Receiver",
    "Redaction",
    "Slack",
    "SpanFlow",
    "Storage",
    "Thinning",
    "Topology",
    "TopologyExport",
    "TopologyHistory",
    "load_config",
]
