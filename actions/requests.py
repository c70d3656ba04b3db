"""Typed action requests: frozen dataclasses checked when made, never shell strings.

Each request class names its ``kind`` (the registry key), its risk ``tier`` and whether it is ``read_only``, and
says what it acts on (:attr:`ActionRequest.target`). :func:`from_json` rebuilds a request from its JSON form (an
approval stores it), looking the kind up in :data:`REGISTRY`. What each request does to the cluster is in
operations.py.

| kind | tier | what |
|---|---|---|
| restart_pod | low | delete one pod; its controller makes a new one |
| rollout_restart | medium | new pods for a Deployment/StatefulSet (pod template annotation, as kubectl) |
| scale | medium | set a workload's replicas |
| patch_resources | medium | set a container's requests/limits (a new rollout) |
| rollback | medium | a Deployment back to its previous ReplicaSet's pod template (kubectl rollout undo) |
| cordon | medium | mark a node unschedulable |
| drain | high | cordon a node and evict its pods through the Eviction API (PodDisruptionBudgets respected) |
| collect | low, read-only | a pod's description, events and log tail, for the agent's tools |
| toggle_flag | medium | set a flag's default variant and/or state in the flagd flag file (flags.py), not Kubernetes |
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from rootward.actions.errors import InvalidRequest

Tier = Literal["low", "medium", "high"]
FlagState = Literal["ENABLED", "DISABLED"]
WorkloadKind = Literal["Deployment", "StatefulSet"]

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")
_RESOURCES = {"cpu", "memory", "ephemeral-storage"}
#: A flag key or variant name: what flagd files use in practice, and nothing that needs escaping in a message.
_FLAG_WORD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
MAX_REPLICAS = 10_000


def _name(value: str, what: str) -> None:
    if not isinstance(value, str) or not _NAME.match(value) or len(value) > 253:
        raise InvalidRequest(f"{what} {value!r} is not a Kubernetes name (lower-case DNS-1123)")


def _resources(values: dict[str, str], what: str) -> None:
    if not isinstance(values, dict):
        raise InvalidRequest(f"{what} must be a mapping of resource to quantity")
    for key, quantity in values.items():
        if key not in _RESOURCES:
            raise InvalidRequest(f"{what}: {key!r} is not one of {sorted(_RESOURCES)}")
        if not isinstance(quantity, str) or not _QUANTITY.match(quantity):
            raise InvalidRequest(f"{what}.{key}: {quantity!r} is not a quantity (e.g. 256Mi, 500m)")


@dataclass(frozen=True)
class Target:
    """The object an action acts on; ``namespace`` is None for a Node."""

    kind: str
    namespace: str | None
    name: str

    @property
    def id(self) -> str:
        """``Kind/namespace/name`` (``Node/name``): the key of cooldowns and of the audit log's ``target``."""
        return f"{self.kind}/{self.namespace}/{self.name}" if self.namespace else f"{self.kind}/{self.name}"

    def as_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "namespace": self.namespace, "name": self.name}


@dataclass(frozen=True)
class ActionRequest:
    """Base of the requests: subclasses are frozen dataclasses whose fields are the parameters."""

    kind: ClassVar[str]
    tier: ClassVar[Tier]
    read_only: ClassVar[bool] = False

    @property
    def target(self) -> Target:
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        """The fields as JSON values."""
        return dataclasses.asdict(self)

    def as_json(self) -> dict[str, Any]:
        """``{"kind": ..., **params}``: what :func:`from_json` reads back."""
        return {"kind": self.kind, **self.params()}

    def describe(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.params().items())
        return f"{self.kind}({args})"


@dataclass(frozen=True)
class RestartPod(ActionRequest):
    kind: ClassVar[str] = "restart_pod"
    tier: ClassVar[Tier] = "low"
    namespace: str
    pod: str

    def __post_init__(self) -> None:
        _name(self.namespace, "namespace")
        _name(self.pod, "pod")

    @property
    def target(self) -> Target:
        return Target("Pod", self.namespace, self.pod)


@dataclass(frozen=True)
class _WorkloadAction(ActionRequest):
    namespace: str
    name: str
    workload_kind: WorkloadKind = field(default="Deployment", kw_only=True)

    def __post_init__(self) -> None:
        _name(self.namespace, "namespace")
        _name(self.name, "name")
        if self.workload_kind not in ("Deployment", "StatefulSet"):
            raise InvalidRequest(f"workload_kind must be Deployment or StatefulSet, not {self.workload_kind!r}")

    @property
    def target(self) -> Target:
        return Target(self.workload_kind, self.namespace, self.name)


@dataclass(frozen=True)
class RolloutRestart(_WorkloadAction):
    kind: ClassVar[str] = "rollout_restart"
    tier: ClassVar[Tier] = "medium"


@dataclass(frozen=True)
class Scale(_WorkloadAction):
    kind: ClassVar[str] = "scale"
    tier: ClassVar[Tier] = "medium"
    replicas: int = field(default=1, kw_only=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.replicas, int) or not 0 <= self.replicas <= MAX_REPLICAS:
            raise InvalidRequest(f"replicas must be an integer in 0..{MAX_REPLICAS}, not {self.replicas!r}")


@dataclass(frozen=True)
class PatchResources(_WorkloadAction):
    kind: ClassVar[str] = "patch_resources"
    tier: ClassVar[Tier] = "medium"
    container: str = field(default="", kw_only=True)
    requests: dict[str, str] = field(default_factory=dict, kw_only=True)
    limits: dict[str, str] = field(default_factory=dict, kw_only=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        _name(self.container, "container")
        _resources(self.requests, "requests")
        _resources(self.limits, "limits")
        if not self.requests and not self.limits:
            raise InvalidRequest("patch_resources needs requests or limits")


@dataclass(frozen=True)
class Rollback(_WorkloadAction):
    """A Deployment back to the pod template of its previous revision (the ReplicaSet before the current one)."""

    kind: ClassVar[str] = "rollback"
    tier: ClassVar[Tier] = "medium"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.workload_kind != "Deployment":
            raise InvalidRequest("rollback works on Deployments (their ReplicaSets keep the revisions)")


@dataclass(frozen=True)
class _NodeAction(ActionRequest):
    node: str

    def __post_init__(self) -> None:
        _name(self.node, "node")

    @property
    def target(self) -> Target:
        return Target("Node", None, self.node)


@dataclass(frozen=True)
class Cordon(_NodeAction):
    kind: ClassVar[str] = "cordon"
    tier: ClassVar[Tier] = "medium"


@dataclass(frozen=True)
class Drain(_NodeAction):
    """Cordon a node, then evict its pods (not DaemonSet or mirror pods) one by one through the Eviction API, which
    refuses while a PodDisruptionBudget allows no disruption; refused evictions are retried until verification
    times out."""

    kind: ClassVar[str] = "drain"
    tier: ClassVar[Tier] = "high"


@dataclass(frozen=True)
class Collect(ActionRequest):
    """Read-only: a pod's object, its events and the tail of its containers' logs."""

    kind: ClassVar[str] = "collect"
    tier: ClassVar[Tier] = "low"
    read_only: ClassVar[bool] = True
    namespace: str
    pod: str
    tail_lines: int = 100

    def __post_init__(self) -> None:
        _name(self.namespace, "namespace")
        _name(self.pod, "pod")
        if not 1 <= self.tail_lines <= 10_000:
            raise InvalidRequest("tail_lines must be in 1..10000")

    @property
    def target(self) -> Target:
        return Target("Pod", self.namespace, self.pod)


@dataclass(frozen=True)
class ToggleFlag(ActionRequest):
    """Set a feature flag's ``defaultVariant`` (``variant``) and/or its ``state`` in the flagd flag file, e.g. turn
    off the flag behind a bad release. The variant served before is captured when the action runs (the audit
    log's ``dry_run`` and ``intent`` records) and put back if verification fails. Medium risk: it changes what
    every evaluation that no targeting rule matches gets, everywhere the flag is read, at once."""

    kind: ClassVar[str] = "toggle_flag"
    tier: ClassVar[Tier] = "medium"
    flag: str
    variant: str | None = None
    state: FlagState | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.flag, str) or not _FLAG_WORD.match(self.flag):
            raise InvalidRequest(f"flag {self.flag!r} is not a flag key (letters, digits, _ . : -; up to 128)")
        if self.variant is not None and (not isinstance(self.variant, str) or not _FLAG_WORD.match(self.variant)):
            raise InvalidRequest(f"variant {self.variant!r} is not a variant name (letters, digits, _ . : -)")
        if self.state not in (None, "ENABLED", "DISABLED"):
            raise InvalidRequest(f"state must be ENABLED or DISABLED, not {self.state!r}")
        if self.variant is None and self.state is None:
            raise InvalidRequest("toggle_flag needs a variant or a state")

    @property
    def target(self) -> Target:
        return Target("FeatureFlag", None, self.flag)


#: kind -> request class: the actions there are.
REGISTRY: dict[str, type[ActionRequest]] = {
    cls.kind: cls
    for cls in (RestartPod, RolloutRestart, Scale, PatchResources, Rollback, Cordon, Drain, Collect, ToggleFlag)
}


def from_json(data: dict[str, Any]) -> ActionRequest:
    """The request ``{"kind": ..., **params}`` describes.

    Raises:
        InvalidRequest: an unknown kind, unknown or missing parameters, or bad values.
    """
    if not isinstance(data, dict) or data.get("kind") not in REGISTRY:
        raise InvalidRequest(f"unknown action kind {data.get('kind') if isinstance(data, dict) else data!r}")
    cls = REGISTRY[data["kind"]]
    params = {k: v for k, v in data.items() if k != "kind"}
    try:
        return cls(**params)
    except TypeError as e:
        raise InvalidRequest(f"{cls.kind}: {e}") from e
