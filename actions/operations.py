"""What each action request does to the cluster: its blast radius from live state, the prior state it captures,
the change (sent once as a server-side dry run, then for real), how its health is read, and how it is undone.

:func:`operation` gives the :class:`Operation` of a request. The executor drives them (executor.py); they never
decide anything.
"""

from __future__ import annotations

import copy
import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rootward.actions.errors import ActionError, NotFound
from rootward.actions.kube import EvictionRefused, Json, Kube
from rootward.actions.requests import (
    ActionRequest,
    Collect,
    Cordon,
    Drain,
    PatchResources,
    RestartPod,
    Rollback,
    RolloutRestart,
    Scale,
)

REVISION = "deployment.kubernetes.io/revision"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


@dataclass(frozen=True)
class BlastRadius:
    """What an action touches (policies/README.md, ``input.blast_radius``)."""

    pods_total: int = 0
    pods_affected: int = 0
    pods_at_once: int = 0
    replicas_before: int | None = None
    replicas_after: int | None = None
    namespaces: tuple[str, ...] = ()
    pdbs: tuple[dict[str, Any], ...] = ()
    dependents: tuple[str, ...] = ()
    flag: dict[str, Any] | None = None
    """A feature-flag toggle's reach instead of pods: the flag, its setting before and after, its variants, and
    whether targeting rules serve some evaluations regardless (flags.py)."""
    workloads: tuple[tuple[int, int], ...] = ()
    """A drain's every workload on the node as (pods down at once, its pods): the policy judges each (the one
    losing the largest share, in pods_at_once / pods_total, need not be the one over its limit)."""

    def as_json(self) -> dict[str, Any]:
        return {
            "pods_total": self.pods_total,
            "pods_affected": self.pods_affected,
            "pods_at_once": self.pods_at_once,
            "replicas_before": self.replicas_before,
            "replicas_after": self.replicas_after,
            "namespaces": list(self.namespaces),
            "pdbs": [dict(p) for p in self.pdbs],
            "dependents": list(self.dependents),
            "flag": self.flag,
            "workloads": [list(w) for w in self.workloads],
        }


@dataclass(frozen=True)
class Health:
    """One reading of a change's progress: ``done`` stops the polling; ``healthy`` says how it ended."""

    done: bool
    healthy: bool
    detail: str


@dataclass
class Operation:
    """Base: read-only, nothing to undo."""

    request: ActionRequest
    kube: Kube
    prior: Json = field(default_factory=dict)

    def blast_radius(self) -> BlastRadius:
        return BlastRadius()

    def capture(self) -> Json:
        """Read and keep the state the change will alter (for :meth:`revert`); returned for the audit log."""
        return {}

    def apply(self, dry_run: bool) -> Json:
        """Make the change (or dry-run it on the server); return a summary for the audit log."""
        raise NotImplementedError

    def health(self) -> Health:
        return Health(True, True, "nothing to wait for")

    @property
    def revertible(self) -> bool:
        return False

    def revert(self) -> Json:
        """Put back the state :meth:`capture` read (idempotent)."""
        raise ActionError(f"{self.request.kind} cannot be undone")

    def changed(self) -> bool:
        """Whether the live object differs from the captured state (after an error mid-change)."""
        return False


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _pdbs(kube: Kube, namespace: str, labels: dict[str, str]) -> tuple[dict[str, Any], ...]:
    found = []
    for pdb in kube.pdbs(namespace):
        match = ((pdb.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        if match and _matches(match, labels):
            allowed = (pdb.get("status") or {}).get("disruptionsAllowed", 0)
            found.append({"name": pdb["metadata"]["name"], "disruptions_allowed": int(allowed)})
    return tuple(found)


def _max_unavailable(workload: Json, replicas: int) -> int:
    """Pods a rollout takes down at once: the Deployment's ``maxUnavailable`` (default 25 %, rounded down, at
    least 1 when ``maxSurge`` is 0), all of them for ``Recreate``; one for a StatefulSet."""
    if workload.get("kind") == "StatefulSet":
        return min(1, replicas)
    strategy = (workload.get("spec") or {}).get("strategy") or {}
    if strategy.get("type") == "Recreate":
        return replicas
    rolling = strategy.get("rollingUpdate") or {}
    value = rolling.get("maxUnavailable", "25%")
    if isinstance(value, str) and value.endswith("%"):
        at_once = math.floor(replicas * float(value[:-1]) / 100)
    else:
        at_once = int(value)
    surge = rolling.get("maxSurge", "25%")
    if at_once == 0 and surge in (0, "0", "0%"):
        at_once = 1
    return min(at_once, replicas)


@dataclass
class WorkloadOperation(Operation):
    """A change to a Deployment's or StatefulSet's spec, verified by its rollout and undone by restoring the
    captured pod template and replica count."""

    def _request(self) -> Any:
        return self.request

    def _read(self) -> Json:
        r = self._request()
        return self.kube.workload(r.workload_kind, r.namespace, r.name)

    def _selector(self, workload: Json) -> dict[str, str]:
        return dict(((workload.get("spec") or {}).get("selector") or {}).get("matchLabels") or {})

    def blast_radius(self) -> BlastRadius:
        r = self._request()
        workload = self._read()
        replicas = int(workload["spec"].get("replicas", 1))
        labels = self._selector(workload)
        pods = self.kube.pods(r.namespace, labels)
        return BlastRadius(
            pods_total=max(len(pods), replicas),
            pods_affected=replicas,
            pods_at_once=_max_unavailable(workload, replicas),
            replicas_before=replicas,
            replicas_after=replicas,
            namespaces=(r.namespace,),
            pdbs=_pdbs(self.kube, r.namespace, labels),
        )

    def capture(self) -> Json:
        workload = self._read()
        spec = workload["spec"]
        self.prior = {
            "template": copy.deepcopy(spec["template"]),
            "replicas": spec.get("replicas", 1),
            "generation": workload["metadata"].get("generation"),
            "revision": (workload["metadata"].get("annotations") or {}).get(REVISION),
        }
        return {"replicas": self.prior["replicas"], "revision": self.prior["revision"]}

    def _patch(self, patch: list[Json], dry_run: bool) -> Json:
        r = self._request()
        result = self.kube.patch_workload(r.workload_kind, r.namespace, r.name, patch, dry_run)
        return {"patch": patch, "dry_run": dry_run, "generation": (result.get("metadata") or {}).get("generation")}

    def health(self) -> Health:
        workload = self._read()
        meta, spec, status = workload["metadata"], workload["spec"], workload.get("status") or {}
        want = int(spec.get("replicas", 1))
        for condition in status.get("conditions") or []:
            if condition.get("type") == "Progressing" and condition.get("reason") == "ProgressDeadlineExceeded":
                return Health(True, False, f"rollout stuck: {condition.get('message', 'progress deadline exceeded')}")
        observed = status.get("observedGeneration", 0)
        updated = status.get("updatedReplicas", 0)
        available = status.get("availableReplicas", 0)
        total = status.get("replicas", 0)
        detail = f"{updated}/{want} updated, {available}/{want} available, {total} pods"
        if observed < meta.get("generation", 0):
            return Health(False, False, "the controller has not seen the change yet")
        if updated == want and available == want and total == want:
            return Health(True, True, f"rollout complete: {detail}")
        return Health(False, False, detail)

    @property
    def revertible(self) -> bool:
        return bool(self.prior)

    def revert(self) -> Json:
        patch = [
            {"op": "replace", "path": "/spec/template", "value": self.prior["template"]},
            {"op": "replace", "path": "/spec/replicas", "value": self.prior["replicas"]},
        ]
        return self._patch(patch, dry_run=False)

    def changed(self) -> bool:
        spec = self._read()["spec"]
        return bool(spec["template"] != self.prior["template"] or spec.get("replicas", 1) != self.prior["replicas"])


@dataclass
class RolloutRestartOperation(WorkloadOperation):
    def apply(self, dry_run: bool) -> Json:
        template_meta = self._read()["spec"]["template"].get("metadata") or {}
        stamp = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        patch: list[Json]
        if template_meta.get("annotations"):
            patch = [
                {"op": "add", "path": "/spec/template/metadata/annotations/" + _escape(RESTARTED_AT), "value": stamp}
            ]
        else:
            patch = [{"op": "add", "path": "/spec/template/metadata/annotations", "value": {RESTARTED_AT: stamp}}]
        return self._patch(patch, dry_run)


@dataclass
class ScaleOperation(WorkloadOperation):
    def blast_radius(self) -> BlastRadius:
        base = super().blast_radius()
        want = self._request().replicas
        before = base.replicas_before or 0
        down = max(0, before - want)
        return BlastRadius(
            pods_total=base.pods_total,
            pods_affected=down,
            pods_at_once=down,
            replicas_before=before,
            replicas_after=want,
            namespaces=base.namespaces,
            pdbs=base.pdbs,
        )

    def apply(self, dry_run: bool) -> Json:
        current = self._read()["spec"].get("replicas", 1)
        patch = [
            {"op": "test", "path": "/spec/replicas", "value": current},
            {"op": "replace", "path": "/spec/replicas", "value": self._request().replicas},
        ]
        return self._patch(patch, dry_run)


@dataclass
class PatchResourcesOperation(WorkloadOperation):
    def apply(self, dry_run: bool) -> Json:
        r: PatchResources = self._request()
        containers = self._read()["spec"]["template"]["spec"]["containers"]
        index = next((i for i, c in enumerate(containers) if c["name"] == r.container), None)
        if index is None:
            names = ", ".join(c["name"] for c in containers)
            raise ActionError(f"{r.workload_kind} {r.namespace}/{r.name} has no container {r.container!r} ({names})")
        current = containers[index].get("resources") or {}
        merged = copy.deepcopy(current)
        for key, values in (("requests", r.requests), ("limits", r.limits)):
            if values:
                merged[key] = {**(merged.get(key) or {}), **values}
        base = f"/spec/template/spec/containers/{index}"
        patch: list[Json] = [
            {"op": "test", "path": f"{base}/name", "value": r.container},
            {"op": "add", "path": f"{base}/resources", "value": merged},
        ]
        summary = self._patch(patch, dry_run)
        return {**summary, "container": r.container, "before": current, "after": merged}


@dataclass
class RollbackOperation(WorkloadOperation):
    def _previous(self) -> tuple[Json, str, str]:
        """(the previous revision's pod template, its revision, the current revision)."""
        r = self._request()
        workload = self._read()
        current = (workload["metadata"].get("annotations") or {}).get(REVISION)
        owned = [
            rs
            for rs in self.kube.replica_sets(r.namespace, self._selector(workload))
            if any(
                o.get("kind") == "Deployment" and o.get("name") == r.name
                for o in rs["metadata"].get("ownerReferences") or []
            )
        ]
        revisions = sorted(
            ((int((rs["metadata"].get("annotations") or {}).get(REVISION, 0)), rs) for rs in owned), key=lambda x: x[0]
        )
        if current is None and revisions:
            current = str(revisions[-1][0])
        earlier = [(rev, rs) for rev, rs in revisions if current is not None and rev < int(current)]
        if not earlier:
            raise ActionError(f"Deployment {r.namespace}/{r.name} has no revision before {current}")
        rev, rs = earlier[-1]
        template = copy.deepcopy(rs["spec"]["template"])
        labels = (template.get("metadata") or {}).get("labels") or {}
        labels.pop("pod-template-hash", None)
        return template, str(rev), str(current)

    def apply(self, dry_run: bool) -> Json:
        template, revision, current = self._previous()
        summary = self._patch([{"op": "replace", "path": "/spec/template", "value": template}], dry_run)
        return {
            **summary,
            "patch": "spec.template of revision " + revision,
            "from_revision": current,
            "to_revision": revision,
        }


@dataclass
class RestartPodOperation(Operation):
    """Delete a pod; its controller replaces it. Verified when the owner's pods are all available again and the
    deleted pod is gone. Nothing to undo."""

    def _owner(self, pod: Json) -> tuple[str, str] | None:
        for ref in pod["metadata"].get("ownerReferences") or []:
            if ref.get("kind") == "ReplicaSet":
                return "Deployment", ref["name"].rsplit("-", 1)[0]
            if ref.get("kind") == "StatefulSet":
                return "StatefulSet", ref["name"]
        return None

    def capture(self) -> Json:
        r: RestartPod = self.request  # type: ignore[assignment]
        pod = self.kube.pod(r.namespace, r.pod)
        owner = self._owner(pod)
        self.prior = {"uid": pod["metadata"].get("uid"), "owner": list(owner) if owner else None}
        return dict(self.prior)

    def blast_radius(self) -> BlastRadius:
        r: RestartPod = self.request  # type: ignore[assignment]
        pod = self.kube.pod(r.namespace, r.pod)
        owner = self._owner(pod)
        total = 1
        if owner is not None:
            try:
                workload = self.kube.workload(owner[0], r.namespace, owner[1])
                labels = dict(workload["spec"]["selector"].get("matchLabels") or {})
                total = max(1, len(self.kube.pods(r.namespace, labels)))
                pdbs = _pdbs(self.kube, r.namespace, labels)
            except NotFound:
                pdbs = ()
        else:
            pdbs = ()
        return BlastRadius(pods_total=total, pods_affected=1, pods_at_once=1, namespaces=(r.namespace,), pdbs=pdbs)

    def apply(self, dry_run: bool) -> Json:
        r: RestartPod = self.request  # type: ignore[assignment]
        self.kube.delete_pod(r.namespace, r.pod, dry_run)
        return {"deleted": f"{r.namespace}/{r.pod}", "dry_run": dry_run}

    def health(self) -> Health:
        r: RestartPod = self.request  # type: ignore[assignment]
        try:
            pod = self.kube.pod(r.namespace, r.pod)
            if pod["metadata"].get("uid") == self.prior.get("uid"):
                return Health(False, False, "the pod is still there")
        except NotFound:
            pass
        owner = self.prior.get("owner")
        if not owner:
            return Health(True, True, "the pod is gone (it has no controller to replace it)")
        return WorkloadOperation(_Ref(owner[0], r.namespace, owner[1]), self.kube).health()  # type: ignore[arg-type]


@dataclass(frozen=True)
class _Ref:
    workload_kind: str
    namespace: str
    name: str


@dataclass
class CordonOperation(Operation):
    def _node(self) -> Json:
        return self.kube.node(self.request.target.name)

    def blast_radius(self) -> BlastRadius:
        pods = self.kube.pods("", node=self.request.target.name)
        return BlastRadius(pods_total=len(pods))

    def capture(self) -> Json:
        self.prior = {"unschedulable": bool(self._node()["spec"].get("unschedulable", False))}
        return dict(self.prior)

    def apply(self, dry_run: bool) -> Json:
        patch = [{"op": "add", "path": "/spec/unschedulable", "value": True}]
        self.kube.patch_node(self.request.target.name, patch, dry_run)
        return {"patch": patch, "dry_run": dry_run}

    def health(self) -> Health:
        cordoned = bool(self._node()["spec"].get("unschedulable", False))
        return Health(cordoned, cordoned, "cordoned" if cordoned else "not cordoned yet")

    @property
    def revertible(self) -> bool:
        return bool(self.prior)

    def revert(self) -> Json:
        patch = [{"op": "add", "path": "/spec/unschedulable", "value": self.prior["unschedulable"]}]
        self.kube.patch_node(self.request.target.name, patch, False)
        return {"patch": patch}

    def changed(self) -> bool:
        return bool(self._node()["spec"].get("unschedulable", False)) != bool(self.prior["unschedulable"])


def _owner(pod: Json) -> str:
    """The pod's controller (``Kind/name`` of its controlling owner reference), else the pod itself."""
    meta = pod["metadata"]
    refs = [o for o in meta.get("ownerReferences") or [] if isinstance(o, dict)]
    ref = next((o for o in refs if o.get("controller")), refs[0] if refs else None)
    return f"{ref.get('kind')}/{ref.get('name')}" if ref else f"Pod/{meta.get('name')}"


def _evictable(pod: Json) -> bool:
    """kubectl drain's choice: not DaemonSet pods, not mirror (static) pods, not pods that already finished."""
    meta = pod["metadata"]
    if "kubernetes.io/config.mirror" in (meta.get("annotations") or {}):
        return False
    if any(o.get("kind") == "DaemonSet" for o in meta.get("ownerReferences") or []):
        return False
    return (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


@dataclass
class DrainOperation(CordonOperation):
    """Cordon, then evict; verified when no evictable pod is left on the node. Undone as far as it can be: the
    node is uncordoned (evicted pods are not brought back; their controllers made new ones elsewhere)."""

    refused: dict[str, str] = field(default_factory=dict)

    def _pods(self) -> list[Json]:
        return [p for p in self.kube.pods("", node=self.request.target.name) if _evictable(p)]

    def blast_radius(self) -> BlastRadius:
        pods = self._pods()
        namespaces = sorted({p["metadata"]["namespace"] for p in pods})
        pdbs: dict[str, dict[str, Any]] = {}
        groups: dict[tuple[str, str], list[Json]] = {}  # (namespace, owner) -> its pods on the node
        budgets: dict[tuple[str, str], int] = {}  # the least disruptions its PDBs allow
        for pod in pods:
            ns, labels = pod["metadata"]["namespace"], pod["metadata"].get("labels") or {}
            key = (ns, _owner(pod))
            groups.setdefault(key, []).append(pod)
            for pdb in _pdbs(self.kube, ns, labels):
                pdbs[f"{ns}/{pdb['name']}"] = pdb
                budgets[key] = min(budgets.get(key, pdb["disruptions_allowed"]), pdb["disruptions_allowed"])
        # Every pod on the node is evicted in one pass, as far as the PodDisruptionBudgets let the Eviction API go:
        # the workload losing the largest share of its live pods at once is what the policy's max_pods_fraction
        # judges (pods of one owner, counted across the namespace; finished and terminating pods do not count).
        live: dict[str, Counter[str]] = {}  # namespace -> live pods per owner
        at_once, total = 0, 0
        workloads = []
        for (ns, owner), on_node in groups.items():
            if ns not in live:
                alive = (p for p in self.kube.pods(ns) if _evictable(p) and not p["metadata"].get("deletionTimestamp"))
                live[ns] = Counter(_owner(p) for p in alive)
            size = max(live[ns][owner], len(on_node))
            key = (ns, owner)
            down = min(len(on_node), max(budgets[key], 0)) if key in budgets else len(on_node)
            workloads.append((down, size))
            if not total or down / size > at_once / total:
                at_once, total = down, size
        return BlastRadius(
            pods_total=total,
            pods_affected=len(pods),
            pods_at_once=at_once,
            namespaces=tuple(namespaces),
            pdbs=tuple(pdbs.values()),
            workloads=tuple(sorted(workloads)),
        )

    def apply(self, dry_run: bool) -> Json:
        cordoned = super().apply(dry_run)
        evicted, refused = self._evict(dry_run)
        return {**cordoned, "evicted": evicted, "refused": refused}

    def _evict(self, dry_run: bool) -> tuple[list[str], dict[str, str]]:
        evicted: list[str] = []
        self.refused = {}
        for pod in self._pods():
            ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
            try:
                self.kube.evict(ns, name, dry_run)
                evicted.append(f"{ns}/{name}")
            except EvictionRefused as e:
                self.refused[f"{ns}/{name}"] = str(e)
            except NotFound:
                pass
        return evicted, dict(self.refused)

    def health(self) -> Health:
        cordon = super().health()
        if not cordon.healthy:
            return cordon
        left = self._pods()
        if not left:
            return Health(True, True, "drained: no evictable pod left on the node")
        self._evict(dry_run=False)  # retry: a PodDisruptionBudget may allow it now
        blocked = f" ({len(self.refused)} refused by PodDisruptionBudgets)" if self.refused else ""
        return Health(False, False, f"{len(left)} pods left on the node{blocked}")


@dataclass
class CollectOperation(Operation):
    def apply(self, dry_run: bool) -> Json:
        r: Collect = self.request  # type: ignore[assignment]
        pod = self.kube.pod(r.namespace, r.pod)
        if dry_run:
            return {"would_read": f"{r.namespace}/{r.pod}"}
        logs = {}
        for container in pod["spec"].get("containers") or []:
            try:
                logs[container["name"]] = self.kube.log_tail(r.namespace, r.pod, container["name"], r.tail_lines)
            except ActionError as e:
                logs[container["name"]] = f"(no log: {e})"
        events = [
            {"reason": e.get("reason"), "message": e.get("message"), "type": e.get("type")}
            for e in self.kube.events(r.namespace, r.pod)
        ]
        return {"status": pod.get("status") or {}, "events": events, "logs": logs}


def _escape(key: str) -> str:
    """A JSON Pointer token (RFC 6901)."""
    return key.replace("~", "~0").replace("/", "~1")


_OPERATIONS: dict[type[ActionRequest], type[Operation]] = {
    RestartPod: RestartPodOperation,
    RolloutRestart: RolloutRestartOperation,
    Scale: ScaleOperation,
    PatchResources: PatchResourcesOperation,
    Rollback: RollbackOperation,
    Cordon: CordonOperation,
    Drain: DrainOperation,
    Collect: CollectOperation,
}


def operation(request: ActionRequest, kube: Kube) -> Operation:
    """The operation that carries out ``request``."""
    return _OPERATIONS[type(request)](request, kube)
