"""The acting side's configuration: policies (rules, the audit log, approvals) and actions (Kubernetes access, the
Lease, feature flags, the executor's mode). Part of :class:`rootward.config.Config`, which re-exports these; kept
apart so each module stays about one part of Rootward."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator

from rootward.config_section import OtlpDestination, _Section, strong_tokens


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
    """Most of a workload's pods an action may take down at once: max(1, floor(pods x fraction)) (0.2: one in five,
    and one at a time whatever the size); 0: none. Every pod at once (one of one) waits for a human."""
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


class AuditShip(OtlpDestination):
    """The audit log's records, shipped as they are written to a log backend over OTLP (through the node's
    Collector, say) as log records, so the trail outlives the pod and its volume. The log file is the queue: records
    go in order from a cursor kept beside it (``<audit path>.shipped``); a backend that is down gets them when it is
    back, nothing is dropped. Each record's body is its JSON with hash, MAC and signature:
    ``rootward audit verify --from FILE`` checks the chain from what the backend kept. Off until ``endpoint`` is
    set."""

    interval_s: float = Field(default=2.0, gt=0)
    """How often the log is read for records not shipped yet (a failed export is tried again then)."""
    batch: int = Field(default=500, ge=1, le=10_000)
    """Records in one export at most."""


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
    ship: AuditShip = AuditShip()

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
        strong_tokens(self.tokens, "policies.approvals.tokens")
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
    pod: str | None = None
    """This replica's own pod (in ``namespace``; the manifests set it from the downward API): while it holds the
    Lease it labels the pod ``rootward.dev/leader=true``, which the Service ``rootward-leader`` selects, so that
    anomalies forwarded by the other sidecars and people's approvals reach the one that acts. Needs RBAC to patch
    pods in ``namespace``."""


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
    workers: int = Field(default=4, ge=1, le=64)
    """Incidents' proposed actions handled at once (read-only collections have a worker of their own). Changes
    still go one at a time (the next waits for the last one's verification); dry runs and approval requests do not
    wait behind one."""
    kubernetes: KubernetesAccess = KubernetesAccess()
    lease: Lease = Lease()
    flags: FeatureFlagSource = FeatureFlagSource()
