"""The Kubernetes API through the official client, as plain JSON dicts, with errors mapped to the package's.

Objects are read with the typed API calls but kept as the JSON the API server sent (the client's models are
skipped), so operations work on the same shapes as ``kubectl get -o json`` and JSON Patch paths. Changes are JSON
Patches (RFC 6902) with ``test`` operations guarding what they assume (the container at an index has the expected
name, the value being replaced is still the one read), so a change made by someone else between the read and the
write fails instead of being overwritten. Every changing call takes
``dry_run``: the server runs admission and validation and answers with the result without persisting it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, cast

import kubernetes
import urllib3
from kubernetes.client.exceptions import ApiException

from rootward.actions.errors import KubeError, KubeUnavailable, NotFound
from rootward.config import KubernetesAccess

logger = logging.getLogger(__name__)

T = TypeVar("T")
Json = dict[str, Any]


def selector(labels: dict[str, str]) -> str:
    """``a=b,c=d`` from matchLabels."""
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


@contextmanager
def _mapped(what: str) -> Iterator[None]:
    try:
        yield
    except ApiException as e:
        status = int(e.status or 0)
        message = f"{what}: {status} {e.reason}"
        if status == 404:
            raise NotFound(message, status, str(e.reason)) from e
        if status >= 500 or status in (0, 429):
            raise KubeUnavailable(message) from e
        raise KubeError(message, status, str(e.reason)) from e
    except (urllib3.exceptions.HTTPError, OSError) as e:
        raise KubeUnavailable(f"{what}: {type(e).__name__}: {e}") from e


class Kube:
    """A connection to one API server. Thread-safe (the client's connection pool is)."""

    def __init__(self, api_client: kubernetes.client.ApiClient, request_timeout_s: float = 10.0) -> None:
        self.api = api_client
        self.timeout = request_timeout_s
        self.core = kubernetes.client.CoreV1Api(api_client)
        self.apps = kubernetes.client.AppsV1Api(api_client)
        self.policy = kubernetes.client.PolicyV1Api(api_client)
        self.coordination = kubernetes.client.CoordinationV1Api(api_client)

    @classmethod
    def connect(cls, access: KubernetesAccess) -> Kube:
        """From the configuration: ``host`` as given, else the in-cluster service account, else a kubeconfig.

        Raises:
            KubeUnavailable: no way to reach a cluster is configured or found.
        """
        if access.host:
            configuration = kubernetes.client.Configuration(host=access.host)
        else:
            configuration = kubernetes.client.Configuration()
            try:
                kubernetes.config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            except kubernetes.config.ConfigException:
                try:
                    kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
                        config_file=str(access.kubeconfig) if access.kubeconfig else None,
                        context=access.context,
                        client_configuration=configuration,
                    )
                except (kubernetes.config.ConfigException, OSError) as e:
                    raise KubeUnavailable(f"no Kubernetes API: not in a cluster and no kubeconfig ({e})") from e
        return cls(kubernetes.client.ApiClient(configuration), access.request_timeout_s)

    def close(self) -> None:
        self.api.close()  # type: ignore[no-untyped-call]

    def _json(self, what: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Json:
        """The answer as the JSON the server sent: the typed models are skipped (``_preload_content=False``), so
        fields the client's models do not know, or require, never fail a read."""
        with _mapped(what):
            response = call(*args, _request_timeout=self.timeout, _preload_content=False, **kwargs)
            try:
                data = json.loads(response.data or b"{}")
            except ValueError as e:
                raise KubeError(f"{what}: the answer is not JSON") from e
        return data if isinstance(data, dict) else {}

    def _dry(self, dry_run: bool) -> dict[str, str]:
        return {"dry_run": "All"} if dry_run else {}

    # Workloads

    def workload(self, kind: str, namespace: str, name: str) -> Json:
        read = self.apps.read_namespaced_deployment if kind == "Deployment" else self.apps.read_namespaced_stateful_set
        return self._json(f"read {kind} {namespace}/{name}", read, name, namespace)

    def patch_workload(self, kind: str, namespace: str, name: str, patch: list[Json], dry_run: bool) -> Json:
        call = (
            self.apps.patch_namespaced_deployment if kind == "Deployment" else self.apps.patch_namespaced_stateful_set
        )
        what = f"patch {kind} {namespace}/{name}{' (dry run)' if dry_run else ''}"
        return self._json(what, call, name, namespace, patch, **self._dry(dry_run))

    def replica_sets(self, namespace: str, labels: dict[str, str]) -> list[Json]:
        data = self._json(
            f"list ReplicaSets in {namespace}",
            self.apps.list_namespaced_replica_set,
            namespace,
            label_selector=selector(labels),
        )
        return list(data.get("items") or [])

    # Pods

    def pod(self, namespace: str, name: str) -> Json:
        return self._json(f"read Pod {namespace}/{name}", self.core.read_namespaced_pod, name, namespace)

    def pods(self, namespace: str, labels: dict[str, str] | None = None, node: str | None = None) -> list[Json]:
        kwargs: dict[str, str] = {}
        if labels:
            kwargs["label_selector"] = selector(labels)
        if node:
            kwargs["field_selector"] = f"spec.nodeName={node}"
        if namespace:
            data = self._json(f"list Pods in {namespace}", self.core.list_namespaced_pod, namespace, **kwargs)
        else:
            data = self._json("list Pods", self.core.list_pod_for_all_namespaces, **kwargs)
        return list(data.get("items") or [])

    def delete_pod(self, namespace: str, name: str, dry_run: bool) -> Json:
        what = f"delete Pod {namespace}/{name}{' (dry run)' if dry_run else ''}"
        return self._json(what, self.core.delete_namespaced_pod, name, namespace, **self._dry(dry_run))

    def events(self, namespace: str, name: str) -> list[Json]:
        data = self._json(
            f"list Events of {namespace}/{name}",
            self.core.list_namespaced_event,
            namespace,
            field_selector=f"involvedObject.name={name}",
        )
        return list(data.get("items") or [])

    def log_tail(self, namespace: str, pod: str, container: str, lines: int) -> str:
        with _mapped(f"read the log of {namespace}/{pod}/{container}"):
            response = self.core.read_namespaced_pod_log(
                pod,
                namespace,
                container=container,
                tail_lines=lines,
                _request_timeout=self.timeout,
                _preload_content=False,
            )
            return bytes(cast(Any, response).data).decode("utf-8", "replace")

    def pdbs(self, namespace: str) -> list[Json]:
        data = self._json(
            f"list PodDisruptionBudgets in {namespace}",
            self.policy.list_namespaced_pod_disruption_budget,
            namespace,
        )
        return list(data.get("items") or [])

    # Nodes

    def node(self, name: str) -> Json:
        return self._json(f"read Node {name}", self.core.read_node, name)

    def patch_node(self, name: str, patch: list[Json], dry_run: bool) -> Json:
        what = f"patch Node {name}{' (dry run)' if dry_run else ''}"
        return self._json(what, self.core.patch_node, name, patch, **self._dry(dry_run))

    # Leases (leader election)

    def lease(self, namespace: str, name: str) -> Json:
        return self._json(f"read Lease {namespace}/{name}", self.coordination.read_namespaced_lease, name, namespace)

    def create_lease(self, namespace: str, body: Json) -> Json:
        return self._json(f"create Lease in {namespace}", self.coordination.create_namespaced_lease, namespace, body)

    def patch_lease(self, namespace: str, name: str, patch: list[Json]) -> Json:
        return self._json(
            f"patch Lease {namespace}/{name}", self.coordination.patch_namespaced_lease, name, namespace, patch
        )

    def patch_pod(self, namespace: str, name: str, patch: list[Json]) -> Json:
        """A JSON Patch of a pod's metadata (Rootward labelling its own pod: actions/leader.py)."""
        return self._json(f"patch Pod {namespace}/{name}", self.core.patch_namespaced_pod, name, namespace, patch)

    def evict(self, namespace: str, name: str, dry_run: bool) -> Json:
        """Evict a pod through the Eviction API, which refuses (429) when a PodDisruptionBudget would be broken."""
        body = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": namespace}}
        what = f"evict Pod {namespace}/{name}{' (dry run)' if dry_run else ''}"
        with _mapped_eviction(what):
            return self._json(
                what, self.core.create_namespaced_pod_eviction, name, namespace, body, **self._dry(dry_run)
            )


class EvictionRefused(KubeError):
    """The Eviction API said no: a PodDisruptionBudget allows no disruption now (429); try again later."""


@contextmanager
def _mapped_eviction(what: str) -> Iterator[None]:
    try:
        yield
    except KubeUnavailable as e:
        if "429" in str(e):
            raise EvictionRefused(f"{what}: refused by a PodDisruptionBudget (429)", 429, "TooManyRequests") from e
        raise
