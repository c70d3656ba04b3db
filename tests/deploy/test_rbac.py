"""RBAC (otel-config/deploy/base/rbac.yaml) grants exactly what Rootward asks the Kubernetes API for, and no "*".

What Rootward asks for is measured, not copied: every call of ``rootward.actions.Kube`` (the one wrapper of the
Kubernetes API; DESIGN.md: only actions/ talks to it, the agent's tools included) is made against kmock through a
client that records each HTTP request, and the requests become RBAC permissions (GET of an object: get, of a
collection: list, POST: create, PATCH: patch, DELETE: delete; subresources as ``pods/log``). A new call of the
wrapper fails this test until it is listed in KUBE_CALLS, and a new permission until rbac.yaml grants it.

The default policy decides whether the changing permissions are needed at all: every registered action
(``rootward.actions.REGISTRY``), on each kind of object it can target, is put to the shipped bundle, and must be one
the policy can allow (allow or needs_approval). An action the default policy always denies would need no
permission: the test then says to drop its verbs. The registry does not say which wrapper calls each action makes
(operations.py does, in code), so this holds for the wrapper as a whole; when an action's calls become data, narrow
the check to the actions the policy allows.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from kubernetes.client import ApiClient, Configuration

from rootward.actions import REGISTRY, ActionRequest, Kube, from_json
from rootward.actions.errors import ActionError
from rootward.config import load_config
from rootward.policies.engine import PolicyEngine

from deploy_files import Doc, find, one, pod_spec, shipped_config
from kmock_server import KubeApi

#: (API group, resource[/subresource], verb)
Permission = tuple[str, str, str]

LEASE = load_config(environ={}).actions.lease

#: Every public call of the Kubernetes wrapper, with the arguments it is exercised with (each variant it has).
KUBE_CALLS: dict[str, list[tuple[Any, ...]]] = {
    "workload": [("Deployment", "shop", "cart"), ("StatefulSet", "shop", "db")],
    "patch_workload": [("Deployment", "shop", "cart", [], True), ("StatefulSet", "shop", "db", [], True)],
    "replica_sets": [("shop", {"app": "cart"})],
    "pod": [("shop", "cart-1")],
    "pods": [("shop", {"app": "cart"}), ("", None, "node-1")],
    "delete_pod": [("shop", "cart-1", True)],
    "events": [("shop", "cart-1")],
    "log_tail": [("shop", "cart-1", "cart", 10)],
    "pdbs": [("shop",)],
    "node": [("node-1",)],
    "patch_node": [("node-1", [], True)],
    "lease": [(LEASE.namespace, LEASE.name)],
    "create_lease": [(LEASE.namespace, {"metadata": {"name": LEASE.name}, "spec": {}})],
    "patch_lease": [(LEASE.namespace, LEASE.name, [])],
    "patch_pod": [(LEASE.namespace, "rootward-x7k2p", [])],
    "evict": [("shop", "cart-1", True)],
}
NOT_CALLS = {"connect", "close"}

#: One request of each registered action on each kind of object it can target.
EXAMPLES: dict[str, list[dict[str, Any]]] = {
    "restart_pod": [{"namespace": "shop", "pod": "cart-1"}],
    "rollout_restart": [
        {"namespace": "shop", "name": "cart", "workload_kind": k} for k in ("Deployment", "StatefulSet")
    ],
    "scale": [
        {"namespace": "shop", "name": "cart", "workload_kind": k, "replicas": 5} for k in ("Deployment", "StatefulSet")
    ],
    "patch_resources": [
        {"namespace": "shop", "name": "cart", "workload_kind": k, "container": "cart", "limits": {"memory": "512Mi"}}
        for k in ("Deployment", "StatefulSet")
    ],
    "rollback": [{"namespace": "shop", "name": "cart"}],
    "cordon": [{"node": "node-1"}],
    "drain": [{"node": "node-1"}],
    "collect": [{"namespace": "shop", "pod": "cart-1"}],
    # Not a Kubernetes action (the flagd flag file, read back through OpenFeature): it needs no RBAC at all, and
    # tests/actions/test_flags.py runs it against a Kubernetes client that reaches nothing.
    "toggle_flag": [{"flag": "new-checkout", "variant": "off"}],
}


class RecordingApiClient(ApiClient):
    """The official client, noting the method and URL of every request it sends."""

    def __init__(self, configuration: Configuration) -> None:
        super().__init__(configuration)
        self.sent: list[tuple[str, str]] = []

    def call_api(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        self.sent.append((method, url))
        return super().call_api(method, url, *args, **kwargs)


def permission(method: str, url: str) -> Permission:
    """The RBAC permission a request to the Kubernetes API needs."""
    split = urlsplit(url)
    parts = split.path.strip("/").split("/")
    if parts[0] == "api":
        group, rest = "", parts[2:]
    else:
        assert parts[0] == "apis", url
        group, rest = parts[1], parts[3:]
    if rest[:1] == ["namespaces"] and len(rest) > 2:
        rest = rest[2:]
    resource, name, sub = rest[0], rest[1] if len(rest) > 1 else None, rest[2:]
    if sub:
        resource = f"{resource}/{'/'.join(sub)}"
    watch = parse_qs(split.query).get("watch") == ["true"]
    verb = {
        "GET": ("get" if name else "watch" if watch else "list"),
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete" if name else "deletecollection",
    }[method.upper()]
    return group, resource, verb


@pytest.fixture(scope="module")
def requested() -> Iterator[set[Permission]]:
    """The permissions every call of the Kubernetes wrapper needs, measured against kmock."""
    api = KubeApi()
    try:
        api.start()
        client = RecordingApiClient(Configuration(host=api.url))
        kube = Kube(client, request_timeout_s=5)
        for name, variants in KUBE_CALLS.items():
            for args in variants:
                before = len(client.sent)
                # kmock holds no such object: the request was still made, and that is what counts
                with contextlib.suppress(ActionError):
                    getattr(kube, name)(*args)
                assert len(client.sent) > before, f"Kube.{name}{args} sent no request"
        kube.close()
        yield {permission(method, url) for method, url in client.sent}
    finally:
        api.stop()


@pytest.fixture(scope="module")
def engine(base: list[Doc]) -> Iterator[PolicyEngine]:
    """The default policy bundle with the shipped configuration's settings."""
    engine = PolicyEngine(rules=shipped_config(base).policies.rules)
    assert engine.ok, engine.error
    yield engine
    engine.close()


def _permissions(role: Doc) -> set[Permission]:
    return {
        (group, resource, verb)
        for rule in role.get("rules", [])
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def _bound_cluster_roles(docs: list[Doc]) -> list[Doc]:
    """The ClusterRoles bound to Rootward's ServiceAccount cluster-wide."""
    sa = one(docs, "ServiceAccount")["metadata"]
    names = set()
    for binding in find(docs, "ClusterRoleBinding"):
        subjects = binding["subjects"]
        assert subjects == [{"kind": "ServiceAccount", "name": sa["name"], "namespace": sa["namespace"]}], subjects
        assert binding["roleRef"]["kind"] == "ClusterRole"
        names.add(binding["roleRef"]["name"])
    roles = [one(docs, "ClusterRole", name) for name in sorted(names)]
    assert len(roles) == len(find(docs, "ClusterRole")), "a ClusterRole nobody is bound to"
    return roles


def _is_lease(p: Permission) -> bool:
    """The Lease, and the label its holder puts on its own pod (actions/leader.py): granted in Rootward's namespace."""
    return p[:2] == ("coordination.k8s.io", "leases") or p == ("", "pods", "patch")


def test_every_call_of_the_kubernetes_wrapper_is_exercised() -> None:
    calls = {n for n, _ in inspect.getmembers(Kube, inspect.isfunction) if not n.startswith("_")} - NOT_CALLS
    assert set(KUBE_CALLS) == calls, (
        f"Kube gained {sorted(calls - set(KUBE_CALLS))} (add to KUBE_CALLS; rbac.yaml must then grant what they "
        f"ask) or lost {sorted(set(KUBE_CALLS) - calls)}"
    )


def test_the_permission_of_a_request_is_read_from_its_url() -> None:
    assert permission("GET", "http://k/api/v1/namespaces/shop/pods/cart-1/log?tailLines=10") == ("", "pods/log", "get")
    assert permission("GET", "http://k/apis/apps/v1/namespaces/shop/replicasets?labelSelector=a") == (
        "apps",
        "replicasets",
        "list",
    )
    assert permission("GET", "http://k/api/v1/pods?watch=true") == ("", "pods", "watch")
    assert permission("POST", "http://k/api/v1/namespaces/shop/pods/p/eviction?dryRun=All") == (
        "",
        "pods/eviction",
        "create",
    )
    assert permission("PATCH", "http://k/api/v1/nodes/n1") == ("", "nodes", "patch")


def test_no_role_grants_a_wildcard(rendered: list[Doc]) -> None:
    for role in find(rendered, "ClusterRole") + find(rendered, "Role"):
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert "*" not in rule.get(field, []), f"{role['metadata']['name']}: {field} has *: {rule}"
            assert "nonResourceURLs" not in rule, rule


def test_no_role_reads_secrets_or_can_grant_itself_more(rendered: list[Doc]) -> None:
    for role in find(rendered, "ClusterRole") + find(rendered, "Role"):
        for group, resource, verb in _permissions(role):
            assert resource not in ("secrets", "configmaps", "serviceaccounts/token"), (group, resource, verb)
            assert verb not in ("escalate", "bind", "impersonate"), (group, resource, verb)
            assert group != "rbac.authorization.k8s.io", (group, resource, verb)


def test_the_cluster_roles_grant_exactly_what_rootward_asks_outside_its_lease(
    base: list[Doc], requested: set[Permission]
) -> None:
    needed = {p for p in requested if not _is_lease(p)}
    granted: set[Permission] = set()
    for role in _bound_cluster_roles(base):
        assert all("resourceNames" not in r for r in role["rules"]), role["metadata"]["name"]
        granted |= _permissions(role)
    assert not needed - granted, f"rbac.yaml lacks what Rootward asks for: {sorted(needed - granted)}"
    assert not granted - needed, f"rbac.yaml grants what nothing asks for: {sorted(granted - needed)}"


def test_the_lease_role_grants_exactly_the_lease_calls_on_the_configured_lease(
    rendered: list[Doc], requested: set[Permission]
) -> None:
    assert shipped_config(rendered).actions.lease == LEASE
    role = one(rendered, "Role")
    assert role["metadata"]["namespace"] == LEASE.namespace == one(rendered, "Namespace")["metadata"]["name"]
    verbs = sorted(p[2] for p in requested if _is_lease(p) and p[1] == "leases")
    # Creating cannot be limited to a name in RBAC; everything else is limited to the configured Lease. The own pod's
    # label cannot be limited to a name either: a DaemonSet's pods have generated names.
    assert "create" in verbs
    create, named, own_pod = role["rules"]
    assert own_pod == {"apiGroups": [""], "resources": ["pods"], "verbs": ["patch"]}
    assert ("", "pods", "patch") in requested
    assert create == {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]}
    assert {k: v for k, v in named.items() if k != "verbs"} == {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "resourceNames": [LEASE.name],
    }
    assert sorted(named["verbs"]) == [v for v in verbs if v != "create"]
    binding = one(rendered, "RoleBinding")
    assert binding["metadata"]["namespace"] == LEASE.namespace
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "rootward-lease"}
    sa = one(rendered, "ServiceAccount")["metadata"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["name"], "namespace": sa["namespace"]}]


def _document(request: ActionRequest) -> dict[str, Any]:
    """The policy input (policies/README.md) of ``request`` in a context where only its kind and target can
    matter: one pod of ten at a time, a confident diagnosis, a human's approval given, no earlier action."""
    scale = request.kind == "scale"
    return {
        "schema": 1,
        "mode": "autonomous",
        "action": {
            "kind": request.kind,
            "tier": request.tier,
            "read_only": request.read_only,
            "target": request.target.as_json(),
            "target_id": request.target.id,
            "params": request.params(),
        },
        "blast_radius": {
            "pods_total": 10,
            "pods_affected": 1,
            "pods_at_once": 1,
            "replicas_before": 5 if scale else None,
            "replicas_after": 5 if scale else None,
            "namespaces": ["shop"],
            "pdbs": [],
            "dependents": [],
        },
        "diagnosis": {"incident_id": "inc-1", "summary": "test", "confidence": 0.99},
        "history": {"last_action_on_target_s_ago": None, "actions_last_hour": 0},
        "now": {"unix": 1_700_000_000.0, "rfc3339": "2023-11-14T22:13:20Z"},
        "approval": {"approved_by": "alice"},
    }


def test_the_default_policy_can_allow_every_registered_action_so_their_verbs_are_needed(engine: PolicyEngine) -> None:
    assert set(EXAMPLES) == set(REGISTRY), "add an example of each registered action"
    for kind, examples in EXAMPLES.items():
        for params in examples:
            request = from_json({"kind": kind, **params})
            decision = engine.decide(_document(request))
            assert decision.result != "deny", (
                f"the default policy always denies {request.describe()} ({decision.reasons}): rbac.yaml need not "
                "grant what only it asks for"
            )


def test_the_pods_run_as_the_bound_service_account(rendered: list[Doc]) -> None:
    assert pod_spec(rendered)["serviceAccountName"] == one(rendered, "ServiceAccount")["metadata"]["name"]
