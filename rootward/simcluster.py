"""A simulated Kubernetes API for ``rootward demo`` and the tests: kmock's emulator with the gaps the executor
depends on filled, and the controllers a real cluster runs, served on a free port from a thread of its own so that
the official (synchronous) client can use it. Needs the dev extras (kmock, aiohttp, jsonpatch): ``make demo``
installs them.

kmock (COMPONENTS.md) stores objects and merges patches, but ignores ``dryRun``, label and field selectors, answers
500 where a JSON Patch ``test`` fails, 404 when listing a kind it has no object of, and runs no controllers. Here:

- ``dryRun=All`` on PATCH / DELETE / POST: the result is computed on a copy and returned, nothing is stored;
- LIST honours ``labelSelector`` (``a=b,c=d``) and ``fieldSelector`` (``path.to.field=value``), and is an empty list
  for a kind with no objects;
- a JSON Patch that does not apply (a failed ``test``) is refused with 422 before anything is stored;
- after every change, a tiny Deployment controller and kubelet run (:meth:`Cluster._reconcile`): a new pod template
  gets a ReplicaSet with the next revision and pods; the old ReplicaSet's pods go once the new ones are healthy
  (else they stay, and the rollout never completes, as a real rolling update stalls); pods' health comes from
  ``Cluster.kubelet(template)`` (None: Running and Ready, else the reason they are not: ``CrashLoopBackOff``,
  ``OOMKilled``); Deployment status (generation, observedGeneration, replicas, updated, available) and
  PodDisruptionBudget ``disruptionsAllowed`` follow;
- the Eviction API (POST pods/NAME/eviction): 429 while a PodDisruptionBudget of the pod allows no disruption,
  else the pod is deleted (its controller makes a new one, on a schedulable node);
- ``Cluster.fail_after_apply`` / ``fail_before_apply``: predicates on a request that make the server answer 500
  after storing the change (the client cannot tell it landed) or without storing it.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import itertools
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp.web
import jsonpatch
import kmock
from kmock._internal import apps, dicts, enums, rendering

from rootward.actions import Kube

DEPLOYMENTS = kmock.resource(group="apps", version="v1", plural="deployments")
REPLICASETS = kmock.resource(group="apps", version="v1", plural="replicasets")
PODS = kmock.resource(group="", version="v1", plural="pods")
NODES = kmock.resource(group="", version="v1", plural="nodes")
PDBS = kmock.resource(group="policy", version="v1", plural="poddisruptionbudgets")
REVISION = "deployment.kubernetes.io/revision"

Kubelet = Callable[[dict[str, Any]], str | None]


def _hash(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:10]


def _status(code: int, reason: str, message: str) -> aiohttp.web.Response:
    body = {
        "apiVersion": "v1",
        "kind": "Status",
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
    }
    return aiohttp.web.json_response(body, status=code)


def _field(obj: dict[str, Any], path: str) -> Any:
    for part in path.split("."):
        obj = obj.get(part) if isinstance(obj, dict) else None  # type: ignore[assignment]
    return obj


class Cluster(kmock.KubernetesEmulator):  # type: ignore[misc]
    """The emulator; configure ``kubelet``, ``fail_after_apply``, ``fail_before_apply`` from the test."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.kubelet: Kubelet = lambda template: None
        self.fail_after_apply: Callable[[rendering.Request], bool] = lambda request: False
        self.fail_before_apply: Callable[[rendering.Request], bool] = lambda request: False
        self.specs: dict[tuple[str, str], str] = {}
        self.counter = itertools.count(1)
        self.evictions: list[str] = []

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        if request.resource is None:
            return await super()._handle(request)
        if request.action == enums.action.LIST:
            return await self._list(request)
        if request.subresource == "log":
            return aiohttp.web.Response(text=f"log of {request.name}\nline 2\n")
        if request.subresource == "eviction" and request.method == "POST":
            async with self._lock:
                return self._evict(request)
        changing = request.action in (enums.action.CREATE, enums.action.UPDATE, enums.action.DELETE)
        if changing and self.fail_before_apply(request):
            return _status(500, "InternalError", "etcdserver: request timed out")
        if request.action == enums.action.UPDATE and isinstance(request.data, list):
            key = (request.resource, request.namespace, request.name)
            if key in self._objects and not self._objects[key].deleted:
                try:
                    patched = dicts.patch_dict(copy.deepcopy(self._objects[key].raw), request.data)
                except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as e:
                    return _status(422, "Invalid", f"the JSON patch does not apply: {e}")
                if request.params.get("dryRun") == "All":
                    return aiohttp.web.json_response(patched)
        if request.params.get("dryRun") == "All" and changing:
            return await self._dry_run(request)
        response = await super()._handle(request)
        if changing:
            async with self._lock:
                self._reconcile()
        if changing and self.fail_after_apply(request):
            return _status(500, "InternalError", "etcdserver: leader changed")
        return response

    def _evict(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        """The Eviction API: 429 while a PodDisruptionBudget of the pod allows no disruption, else delete it."""
        key = (PODS, request.namespace, request.name)
        if key not in self._objects or self._objects[key].deleted:
            return _status(404, "NotFound", f"pods {request.name!r} not found")
        labels = self._objects[key].raw["metadata"].get("labels") or {}
        for _, pdb in self._all(PDBS, request.namespace):
            match = pdb.raw["spec"]["selector"]["matchLabels"]
            allowed = int((pdb.raw.get("status") or {}).get("disruptionsAllowed", 0))
            if all(labels.get(k) == v for k, v in match.items()) and allowed < 1:
                message = "Cannot evict pod as it would violate the pod's disruption budget."
                return _status(429, "TooManyRequests", message)
        if request.params.get("dryRun") != "All":
            self._objects[key].delete()
            self.evictions.append(f"{request.namespace}/{request.name}")
            self._reconcile()
        return aiohttp.web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Success"}, status=201)

    async def _dry_run(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        key = (request.resource, request.namespace, request.name)
        if request.action == enums.action.CREATE:
            return aiohttp.web.json_response(request.data)
        if key not in self._objects or self._objects[key].deleted:
            return _status(404, "NotFound", f"{request.name} not found")
        current = copy.deepcopy(self._objects[key].raw)
        if request.action == enums.action.DELETE:
            return aiohttp.web.json_response(current)
        return aiohttp.web.json_response(dicts.patch_dict(current, request.data or {}))

    async def _list(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        wanted = [tuple(p.split("=", 1)) for p in (request.params.get("labelSelector") or "").split(",") if p]
        fields = [tuple(p.split("=", 1)) for p in (request.params.get("fieldSelector") or "").split(",") if p]
        items = []
        async with self._lock:
            for (resource, namespace, _), obj in self._objects.items():
                if resource != request.resource or obj.deleted:
                    continue
                if request.namespace is not None and namespace != request.namespace:
                    continue
                raw = obj.raw
                labels = (raw.get("metadata") or {}).get("labels") or {}
                if all(labels.get(k) == v for k, v in wanted) and all(str(_field(raw, k)) == v for k, v in fields):
                    items.append(raw)
        return aiohttp.web.json_response({"kind": "List", "apiVersion": "v1", "metadata": {}, "items": items})

    # The controllers.

    def _all(self, resource: Any, namespace: str | None = None) -> list[tuple[tuple[Any, str, str], Any]]:
        return [
            (key, obj)
            for key, obj in list(self._objects.items())
            if key[0] == resource and not obj.deleted and (namespace is None or key[1] == namespace)
        ]

    def _reconcile(self) -> None:
        for (_, namespace, name), deployment in self._all(DEPLOYMENTS):
            self._deployment(namespace, name, deployment)
        self._pdbs()

    def _deployment(self, namespace: str, name: str, deployment: Any) -> None:
        raw = deployment.raw
        spec, meta = raw["spec"], raw["metadata"]
        replicas = int(spec.get("replicas", 1))
        generation = int(meta.get("generation") or 0)
        spec_hash = _hash(spec)
        if self.specs.get((namespace, name)) != spec_hash:
            self.specs[(namespace, name)] = spec_hash
            generation += 1
        template = spec["template"]
        h = _hash(template)
        owned = [
            (key, rs)
            for key, rs in self._all(REPLICASETS, namespace)
            if any(o.get("name") == name for o in rs.raw["metadata"].get("ownerReferences") or [])
        ]
        revisions = [int(rs.raw["metadata"]["annotations"][REVISION]) for _, rs in owned]
        current = next((rs for _, rs in owned if rs.raw["metadata"]["labels"].get("pod-template-hash") == h), None)
        newest = max(revisions, default=0)
        if current is None:
            rs_template = copy.deepcopy(template)
            rs_template.setdefault("metadata", {}).setdefault("labels", {})["pod-template-hash"] = h
            self._objects[REPLICASETS, namespace, f"{name}-{h}"] = {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "metadata": {
                    "name": f"{name}-{h}",
                    "namespace": namespace,
                    "labels": rs_template["metadata"]["labels"],
                    "annotations": {REVISION: str(newest + 1)},
                    "ownerReferences": [
                        {"apiVersion": "apps/v1", "kind": "Deployment", "name": name, "uid": f"uid-{name}"}
                    ],
                },
                "spec": {"replicas": replicas, "selector": spec["selector"], "template": rs_template},
            }
            revision = newest + 1
        else:
            revision = int(current.raw["metadata"]["annotations"][REVISION])
            if revision != newest:  # a rollback to an old template makes its ReplicaSet the newest revision
                revision = newest + 1
                current.patch({"metadata": {"annotations": {REVISION: str(revision)}}})
        rs_name = f"{name}-{h}"
        unhealthy = self.kubelet(template)
        pods = self._all(PODS, namespace)
        mine = [
            (k, p)
            for k, p in pods
            if (p.raw["metadata"].get("labels") or {}).get("pod-template-hash") == h and k[2].startswith(name + "-")
        ]
        for _ in range(replicas - len(mine)):
            self._pod(namespace, rs_name, template, h, unhealthy)
        for key, _ in mine[replicas:]:
            self._objects[key].delete()
        others = [
            (k, p)
            for k, p in pods
            if k[2].startswith(name + "-")
            and (p.raw["metadata"].get("labels") or {}).get("pod-template-hash") not in (None, h)
        ]
        if unhealthy is None:
            for key, _ in others:
                self._objects[key].delete()
            others = []
        updated = min(replicas, max(len(mine), replicas))
        available = 0 if unhealthy else updated
        old_available = len(others)
        deployment.patch(
            {
                "metadata": {"generation": generation, "annotations": {REVISION: str(revision)}},
                "status": {
                    "observedGeneration": generation,
                    "replicas": updated + len(others),
                    "updatedReplicas": updated,
                    "readyReplicas": available + old_available,
                    "availableReplicas": available + old_available,
                },
            }
        )

    def _pod(self, namespace: str, rs_name: str, template: dict[str, Any], h: str, unhealthy: str | None) -> None:
        name = f"{rs_name}-{next(self.counter)}"
        nodes = sorted(k[2] for k, n in self._all(NODES) if not n.raw.get("spec", {}).get("unschedulable"))
        containers = (template.get("spec") or {}).get("containers") or []
        if unhealthy is None:
            statuses = [
                {"name": c["name"], "ready": True, "restartCount": 0, "state": {"running": {}}} for c in containers
            ]
            status = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
        else:
            waiting = {"waiting": {"reason": "CrashLoopBackOff"}}
            last = {"terminated": {"reason": unhealthy, "exitCode": 137 if unhealthy == "OOMKilled" else 1}}
            statuses = [
                {"name": c["name"], "ready": False, "restartCount": 5, "state": waiting, "lastState": last}
                for c in containers
            ]
            status = {"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]}
        self._objects[PODS, namespace, name] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": f"uid-{name}",
                "labels": {**((template.get("metadata") or {}).get("labels") or {}), "pod-template-hash": h},
                "ownerReferences": [
                    {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs_name, "uid": f"uid-{rs_name}"}
                ],
            },
            "spec": {
                **copy.deepcopy(template.get("spec") or {}),
                "nodeName": nodes[int(_hash(name), 16) % len(nodes)] if nodes else "node-1",
            },
            "status": {**status, "containerStatuses": statuses},
        }

    def _pdbs(self) -> None:
        for (_, namespace, _), pdb in self._all(PDBS):
            match = pdb.raw["spec"]["selector"]["matchLabels"]
            ready = 0
            for _, pod in self._all(PODS, namespace):
                labels = pod.raw["metadata"].get("labels") or {}
                conditions = (pod.raw.get("status") or {}).get("conditions") or []
                if (
                    all(labels.get(k) == v for k, v in match.items())
                    and {"type": "Ready", "status": "True"} in conditions
                ):
                    ready += 1
            allowed = max(0, ready - int(pdb.raw["spec"].get("minAvailable", 0)))
            pdb.patch({"status": {"currentHealthy": ready, "disruptionsAllowed": allowed}})


class RunningCluster:
    """A :class:`Cluster` served on 127.0.0.1:<free port> by an event loop in a thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.cluster: Cluster | None = None
        self.url = ""
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="kmock", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def serve() -> None:
            self._stop = asyncio.Event()
            async with Cluster() as cluster, apps.Server(cluster) as server:
                self.cluster = cluster
                self.url = str(server.url).rstrip("/")
                self._ready.set()
                await self._stop.wait()

        self.loop.run_until_complete(serve())
        self.loop.close()

    def start(self) -> RunningCluster:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("kmock did not start")
        return self

    def stop(self) -> None:
        """Stop serving (safe to call twice)."""
        if self._stop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def call(self, fn: Callable[[Cluster], Any]) -> Any:
        """Run ``fn(cluster)`` on the emulator's loop, holding its lock (to read or change objects directly)."""
        assert self.cluster is not None
        cluster = self.cluster

        async def run() -> Any:
            async with cluster._lock:
                return fn(cluster)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)


@contextmanager
def running_cluster() -> Iterator[RunningCluster]:
    running = RunningCluster().start()
    try:
        yield running
    finally:
        running.stop()


def deploy(
    kube: Kube,
    name: str,
    namespace: str = "shop",
    replicas: int = 5,
    image: str = "shop/cart:1",
    memory: str = "128Mi",
) -> dict[str, Any]:
    """Create a Deployment through the API (the emulator's controller makes its ReplicaSet and pods)."""
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {
                            "name": name,
                            "image": image,
                            "resources": {"requests": {"memory": memory}, "limits": {"memory": memory}},
                        }
                    ]
                },
            },
        },
    }
    kube.apps.create_namespaced_deployment(namespace, body)
    return kube.workload("Deployment", namespace, name)
