"""Kubernetes objects as the Collector's k8sobjects receiver delivers them: OTLP log records whose body is the
object (pull mode) or ``{"type": ADDED|MODIFIED|DELETED, "object": ...}`` (watch mode).

From them the graph learns what spans cannot tell: ownership (Pod -> ReplicaSet -> Deployment, with the rollout
revision), placement (Pod -> Node), which pods back a Service (its selector, or EndpointSlices), and two indexes
that let a client span's ``server.address`` / peer IP resolve to a real entity instead of a virtual node: Service
DNS names (``svc``, ``svc.ns``, ``svc.ns.svc``, ``svc.ns.svc.cluster.local``) and pod IPs.
No Kubernetes client here: the Collector is the ingest path (DESIGN.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from rootward import model

WORKLOAD_KINDS = {"ReplicaSet", "Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}


def k8s_object(body: object) -> tuple[str, dict[str, Any]] | None:
    """(event type, object) of a k8sobjects log body with metadata (what the graph can place), or None."""
    found = model.k8s_object(body)
    if found is None or not isinstance(found[1], dict) or not isinstance(found[1].get("metadata"), dict):
        return None
    return found[0], found[1]


def _meta(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def workload_id(namespace: str, kind: str, name: str) -> str:
    return f"workload:{namespace}/{kind.lower()}/{name}"


@dataclass
class ClusterIndex:
    """What the cluster's objects say, kept up to date from ADDED/MODIFIED/DELETED records."""

    pods: dict[str, dict[str, Any]] = field(default_factory=dict)  # pod id -> {labels, node, ips, owner}
    services: dict[str, dict[str, Any]] = field(default_factory=dict)  # "ns/name" -> {selector, ips}
    slices: dict[str, tuple[str, set[str]]] = field(default_factory=dict)  # slice "ns/name" -> (service, pod ids)
    owners: dict[str, str] = field(default_factory=dict)  # workload id -> owning workload id
    revisions: dict[str, str] = field(default_factory=dict)  # replicaset workload id -> rollout revision
    nodes: set[str] = field(default_factory=set)
    pod_ips: dict[str, str] = field(default_factory=dict)  # ip -> pod id
    dns: dict[str, str] = field(default_factory=dict)  # dns name or cluster ip -> "ns/name" of a Service

    def apply(self, event: str, obj: Mapping[str, Any]) -> None:
        """Fold one object record into the index."""
        kind = obj.get("kind")
        ns, name = _meta(obj)
        if not name:
            return
        deleted = event == "DELETED"
        if kind == "Pod":
            self._pod(f"pod:{ns}/{name}", obj, deleted)
        elif kind == "Service":
            self._service(ns, name, obj, deleted)
        elif kind == "EndpointSlice":
            self._slice(ns, name, obj, deleted)
        elif kind == "Node":
            (self.nodes.discard if deleted else self.nodes.add)(f"node:{name}")
        elif kind in WORKLOAD_KINDS:
            wid = workload_id(ns, str(kind), name)
            owner = _owner(ns, obj)
            if deleted:
                self.owners.pop(wid, None)
                self.revisions.pop(wid, None)
                return
            if owner:
                self.owners[wid] = owner
            revision = ((obj.get("metadata") or {}).get("annotations") or {}).get("deployment.kubernetes.io/revision")
            if revision:
                self.revisions[wid] = str(revision)

    def _pod(self, pid: str, obj: Mapping[str, Any], deleted: bool) -> None:
        old = self.pods.pop(pid, None)
        for ip in (old or {}).get("ips", ()):
            if self.pod_ips.get(ip) == pid:
                del self.pod_ips[ip]
        if deleted:
            return
        ns, _ = _meta(obj)
        status = obj.get("status") or {}
        ips = {str(p.get("ip")) for p in status.get("podIPs") or [] if isinstance(p, dict) and p.get("ip")}
        if status.get("podIP"):
            ips.add(str(status["podIP"]))
        spec = obj.get("spec") or {}
        self.pods[pid] = {
            "labels": dict((obj.get("metadata") or {}).get("labels") or {}),
            "node": f"node:{spec['nodeName']}" if spec.get("nodeName") else None,
            "ips": ips,
            "owner": _owner(ns, obj),
            "namespace": ns,
        }
        for ip in ips:
            self.pod_ips[ip] = pid

    def _service(self, ns: str, name: str, obj: Mapping[str, Any], deleted: bool) -> None:
        key = f"{ns}/{name}"
        for dns_name in [n for n, k in self.dns.items() if k == key]:
            del self.dns[dns_name]
        self.services.pop(key, None)
        if deleted:
            return
        spec = obj.get("spec") or {}
        selector = spec.get("selector") or {}
        self.services[key] = {"selector": dict(selector) if isinstance(selector, dict) else {}}
        for dns_name in (name, f"{name}.{ns}", f"{name}.{ns}.svc", f"{name}.{ns}.svc.cluster.local"):
            self.dns[dns_name] = key
        for ip in [spec.get("clusterIP"), *(spec.get("clusterIPs") or [])]:
            if ip and ip != "None":
                self.dns[str(ip)] = key

    def _slice(self, ns: str, name: str, obj: Mapping[str, Any], deleted: bool) -> None:
        key = f"{ns}/{name}"
        if deleted:
            self.slices.pop(key, None)
            return
        labels = (obj.get("metadata") or {}).get("labels") or {}
        service = labels.get("kubernetes.io/service-name")
        if not service:
            return
        pods = set()
        for endpoint in obj.get("endpoints") or []:
            ref = endpoint.get("targetRef") or {} if isinstance(endpoint, dict) else {}
            if ref.get("kind") == "Pod" and ref.get("name"):
                pods.add(f"pod:{ref.get('namespace') or ns}/{ref['name']}")
        self.slices[key] = (f"{ns}/{service}", pods)

    def backing_pods(self, service_key: str) -> set[str]:
        """Pods behind a Service (``ns/name``): its EndpointSlices, else its selector over known pods."""
        pods = {p for svc, members in self.slices.values() if svc == service_key for p in members}
        if pods:
            return pods
        service = self.services.get(service_key)
        if not service or not service["selector"]:
            return set()
        ns = service_key.split("/", 1)[0]
        selector = service["selector"].items()
        return {
            pid
            for pid, pod in self.pods.items()
            if pod["namespace"] == ns and all(pod["labels"].get(k) == v for k, v in selector)
        }

    def resolve(self, g: nx.MultiDiGraph[str], address: str | None, ip: str | None) -> str | None:
        """A real entity that ``server.address`` or the peer IP names, through the cluster index: a pod IP gives
        the pod's service; a Service DNS name or cluster IP gives the service its pods are instances of, in ``g``
        (the live graph, held still by its owner)."""
        for candidate in (ip, address):
            pod = self.pod_ips.get(candidate) if candidate else None
            if pod is not None and pod in g:
                of = [v for _, v, k in g.out_edges(pod, keys=True) if k == "instance_of"]
                return of[0] if of else pod
        key = self.dns.get(address.rstrip(".")) if address else None
        if key is None:
            return None
        services = {
            v
            for pod in self.backing_pods(key)
            if pod in g
            for _, v, k in g.out_edges(pod, keys=True)
            if k == "instance_of"
        }
        if len(services) == 1:
            return services.pop()
        ns, name = key.split("/", 1)
        for guess in (f"service:{ns}/{name}", f"service:/{name}"):
            if guess in g and not g.nodes[guess]["virtual"]:
                return guess
        return None


def _owner(ns: str, obj: Mapping[str, Any]) -> str | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller", True) and ref.get("kind") in WORKLOAD_KINDS:
            return workload_id(ns, str(ref["kind"]), str(ref.get("name", "")))
    return None
