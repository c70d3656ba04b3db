"""The Kubernetes manifests (otel-config/deploy): they render, validate against the Kubernetes schemas, apply to an
API server with the official client, and agree with Rootward itself: its configuration check, its default ports,
its health endpoints, its policy bundle, its version; secrets only by reference; pods locked down."""

from __future__ import annotations

import copy
import typing
from pathlib import Path
from typing import Any

import kubernetes_validate
import pydantic
import pytest
from click.testing import CliRunner
from kubernetes import client, utils
from kubernetes.client import ApiClient

from rootward._version import __version__
from rootward.actions.leader import LEADER_LABEL
from rootward.cli import main
from rootward.config import Config, load_config
from rootward.errors import ConfigError
from rootward.policies.engine import PolicyEngine, default_bundle

from deploy_files import (
    BASE,
    GATEWAY,
    Doc,
    config_map_data,
    container,
    container_port,
    find,
    mount_path,
    one,
    pod_spec,
    shipped_config,
    workload,
)
from kmock_server import KubeApi
from kustomize_reader import kubectl, read, render

#: The oldest Kubernetes the manifests are meant for, and the newest the schemas know.
KUBERNETES_VERSIONS = ["1.29.0", kubernetes_validate.latest_version()]
DEFAULTS = Config()


def _key(doc: Doc) -> tuple[str, str, str]:
    return doc["kind"], doc["metadata"].get("namespace", ""), doc["metadata"]["name"]


# --- rendering and schemas ----------------------------------------------------------------------------------------


@pytest.mark.skipif(kubectl() is None, reason="no kubectl to compare the kustomization reader with")
@pytest.mark.parametrize("directory", [pytest.param(BASE, id="base"), pytest.param(GATEWAY, id="gateway")])
def test_the_kustomization_reader_renders_what_kubectl_kustomize_renders(directory: Path) -> None:
    by_kubectl = {_key(d): d for d in render(directory)}
    by_reader = {_key(d): d for d in read(directory)}
    assert sorted(by_reader) == sorted(by_kubectl)
    assert by_reader == by_kubectl


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_validates_strictly_against_the_kubernetes_schemas(rendered: list[Doc], version: str) -> None:
    for doc in rendered:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{'/'.join(_key(doc))} is not a valid {doc['kind']} of Kubernetes {version}: {e.message}")


def test_the_base_holds_what_the_issue_lists(base: list[Doc]) -> None:
    kinds = {d["kind"] for d in base}
    assert kinds == {
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "DaemonSet",
        "Service",
    }
    assert not find(base, "Secret"), "secrets are referenced, never shipped"


# --- applied to a Kubernetes API ----------------------------------------------------------------------------------

READERS: dict[str, Any] = {
    "ServiceAccount": lambda c, ns, n: client.CoreV1Api(c).read_namespaced_service_account(n, ns),
    "ConfigMap": lambda c, ns, n: client.CoreV1Api(c).read_namespaced_config_map(n, ns),
    "Service": lambda c, ns, n: client.CoreV1Api(c).read_namespaced_service(n, ns),
    "ClusterRole": lambda c, ns, n: client.RbacAuthorizationV1Api(c).read_cluster_role(n),
    "ClusterRoleBinding": lambda c, ns, n: client.RbacAuthorizationV1Api(c).read_cluster_role_binding(n),
    "Role": lambda c, ns, n: client.RbacAuthorizationV1Api(c).read_namespaced_role(n, ns),
    "RoleBinding": lambda c, ns, n: client.RbacAuthorizationV1Api(c).read_namespaced_role_binding(n, ns),
    "DaemonSet": lambda c, ns, n: client.AppsV1Api(c).read_namespaced_daemon_set(n, ns),
    "StatefulSet": lambda c, ns, n: client.AppsV1Api(c).read_namespaced_stateful_set(n, ns),
    "PodDisruptionBudget": lambda c, ns, n: client.PolicyV1Api(c).read_namespaced_pod_disruption_budget(n, ns),
}


def test_every_manifest_applies_with_the_official_client_and_reads_back_unchanged(
    rendered: list[Doc], kube: KubeApi, kube_client: ApiClient
) -> None:
    kube.put_namespace(one(rendered, "Namespace"))  # kmock's gap (kmock_server.py); the rest goes through the API
    for doc in rendered:
        if doc["kind"] == "Namespace":
            continue
        utils.create_from_dict(kube_client, copy.deepcopy(doc))
    for doc in rendered:
        if doc["kind"] == "Namespace":
            continue
        kind, ns, name = _key(doc)
        stored = kube_client.sanitize_for_serialization(READERS[kind](kube_client, ns, name))
        # The client's typed models drop fields they do not know: what reads back equal was understood.
        for field in set(doc) - {"metadata"}:
            assert stored[field] == doc[field], f"{kind}/{name}: {field} changed on the way through the client"
        assert stored["metadata"].get("labels") == doc["metadata"].get("labels"), f"{kind}/{name}"


# --- agreement with Rootward ----------------------------------------------------------------------------------------


def _secret_env(docs: list[Doc]) -> dict[str, Doc]:
    """The container's environment variables that come from Secrets, by name."""
    return {e["name"]: e for e in container(docs).get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}


def _field(model: type[pydantic.BaseModel], env_name: str) -> Any:
    """The configuration field a ROOTWARD_A__B variable sets (its annotation)."""
    keys = env_name.removeprefix("ROOTWARD_").lower().split("__")
    annotation: Any = model
    for key in keys:
        assert isinstance(annotation, type), env_name
        assert issubclass(annotation, pydantic.BaseModel), env_name
        assert key in annotation.model_fields, f"{env_name}: no configuration key {key}"
        annotation = annotation.model_fields[key].annotation
    return annotation


def _placeholder(annotation: Any, name: str = "") -> str:
    """A YAML value of the setting's shape (Secrets hold YAML, as every ROOTWARD_* variable does); a mapping's
    token is the variable's own (a reader's token may not be an operator's)."""
    if typing.get_origin(annotation) is list:
        return "[placeholder-a, placeholder-b]"
    if typing.get_origin(annotation) is dict:
        return f"{{alice: placeholder-{name.lower()}}}"
    return "placeholder"


def test_every_secret_reference_sets_a_masked_setting(rendered: list[Doc]) -> None:
    secrets = _secret_env(rendered)
    assert secrets, "no Secret references"
    for name, entry in secrets.items():
        ref = entry["valueFrom"]["secretKeyRef"]
        assert ref["name"] == "rootward-credentials", name
        assert ref.get("optional") is True, f"{name}: optional, so that a missing key does not stop the pod"
        annotation = _field(Config, name)
        assert "SecretStr" in str(annotation), f"{name} sets {annotation}: a secret belongs in a SecretStr setting"


def test_the_shipped_config_passes_rootward_config_check_with_every_secret_set(
    rendered: list[Doc], tmp_path: Path
) -> None:
    path = tmp_path / "rootward.yaml"
    path.write_text(config_map_data(rendered, "rootward-config")["rootward.yaml"])
    env = {name: _placeholder(_field(Config, name), name) for name in _secret_env(rendered)}

    shipped = ["--set", f"policies.bundle_dirs=[{BASE / 'policies'}]"]  # where the pod mounts rootward-policies
    for environ in ({}, env):
        result = CliRunner().invoke(main, ["config", "check", str(path), *shipped], env=environ)
        assert result.exit_code == 0, result.output
        home = shipped_config(rendered).actions.lease.namespace
        digest = PolicyEngine(home_namespace=home).digest  # the ConfigMap's copy is the shipped bundle: the same digest
        assert result.output.strip() == f"{path}: ok (6 policy files compile: bundle {digest}, as /readyz says)"
    result = CliRunner().invoke(main, ["config", "check", str(path)], env=env)
    assert result.exit_code == 1  # the pod's path is not here: nothing compiled is no "ok"
    assert "policies: /etc/rootward/policies: no such directory" in result.output
    cfg = load_config(path, environ=env)
    assert [t.get_secret_value() for t in cfg.receiver.auth.tokens] == ["placeholder-a", "placeholder-b"]


def test_the_container_reads_the_config_policies_and_data_where_the_config_says(rendered: list[Doc]) -> None:
    args = container(rendered)["args"]
    assert args[:2] == ["serve", "--config"]
    config_path = Path(args[2])
    assert str(config_path.parent) == mount_path(rendered, "config")
    data = config_map_data(rendered, "rootward-config")
    assert config_path.name in data
    kustomization = GATEWAY if find(rendered, "StatefulSet") else BASE
    assert data[config_path.name] == (kustomization / "rootward.yaml").read_text()
    cfg = shipped_config(rendered)
    assert [str(d) for d in cfg.policies.bundle_dirs] == [mount_path(rendered, "policies")]
    assert cfg.policies.default_bundle is False, "the bundle comes from the ConfigMap, not twice"
    assert str(cfg.storage.data_dir) == mount_path(rendered, "data")
    assert cfg.actions.mode == "dry-run", "actions start in dry-run"
    assert cfg.actions.lease.namespace == one(rendered, "Namespace")["metadata"]["name"]


def test_the_configmap_bundle_is_the_shipped_policy_bundle_and_compiles(rendered: list[Doc], tmp_path: Path) -> None:
    data = config_map_data(rendered, "rootward-policies")
    shipped = {m.name.removeprefix("bundle/"): m.source for m in default_bundle() if not m.is_test}
    assert data == shipped, "otel-config/deploy/base/policies/ differs from policies/bundle/: copy the bundle again"
    for name, source in data.items():
        (tmp_path / name).write_text(source)
    cfg = shipped_config(rendered)
    engine = PolicyEngine([tmp_path], cfg.policies.rules, default=cfg.policies.default_bundle)
    try:
        assert engine.ok, engine.error
        assert sorted(Path(m).name for m in engine.modules) == sorted(shipped)
    finally:
        engine.close()


def test_ports_are_rootwards_defaults_in_the_config_the_container_and_the_services(rendered: list[Doc]) -> None:
    expected = {
        "grpc-otlp": DEFAULTS.receiver.grpc.port,
        "http-otlp": DEFAULTS.receiver.http.port,
        "http-api": DEFAULTS.api.listen.port,
    }
    assert {name: container_port(rendered, name) for name in expected} == expected
    cfg = shipped_config(rendered)
    assert cfg.receiver.grpc.port == expected["grpc-otlp"]
    assert cfg.receiver.http.port == expected["http-otlp"]
    assert cfg.api.listen.port == expected["http-api"]
    assert {cfg.receiver.grpc.host, cfg.receiver.http.host, cfg.api.listen.host} == {"0.0.0.0"}
    pod_labels = workload(rendered)["spec"]["template"]["metadata"]["labels"]
    leading = {**pod_labels, LEADER_LABEL: "true"}  # what the Lease holder adds to its own pod (actions/leader.py)
    for service in find(rendered, "Service"):
        assert service["spec"]["selector"].items() <= leading.items(), service["metadata"]["name"]
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in expected, f"{service['metadata']['name']}: {port}"
            assert port["port"] == expected[port["targetPort"]], f"{service['metadata']['name']}: {port}"
    assert one(rendered, "Service", "rootward")["spec"]["ports"][0]["targetPort"] == "http-api"
    assert one(rendered, "Service", "rootward-leader")["spec"]["selector"][LEADER_LABEL] == "true"


POD_NAME = {"fieldRef": {"fieldPath": "metadata.name"}}


def test_each_pod_knows_its_own_name_to_label_itself_and_the_sidecars_forward_to_the_leader(
    rendered: list[Doc],
) -> None:
    """actions.lease.pod from the downward API; in the DaemonSet the anomalies go to the Service rootward-leader."""
    env = {e["name"]: e for e in pod_spec(rendered)["containers"][0]["env"]}
    assert env["ROOTWARD_ACTIONS__LEASE__POD"]["valueFrom"] == POD_NAME
    export = shipped_config(rendered).topology.export
    if workload(rendered)["kind"] == "DaemonSet":
        assert export.follow_lease
        assert export.endpoint.startswith("rootward-leader.rootward.svc")
        assert one(rendered, "Service", "rootward-leader")


def test_probes_ask_healthz_and_readyz_on_the_api_port(rendered: list[Doc]) -> None:
    c = container(rendered)
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http-api"}
    assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http-api"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http-api"}


def test_resources_have_requests_and_limits(rendered: list[Doc]) -> None:
    resources = container(rendered)["resources"]
    assert set(resources["requests"]) == {"cpu", "memory"}
    assert set(resources["limits"]) == {"cpu", "memory"}


def test_the_image_is_tagged_with_the_package_version(rendered: list[Doc]) -> None:
    assert container(rendered)["image"] == f"rootward:{__version__}"


def test_the_gateways_pdb_covers_its_replicas_and_the_daemonset_has_none(base: list[Doc], gateway: list[Doc]) -> None:
    """maxUnavailable needs a workload with a scale subresource: over a DaemonSet's pods the disruption controller
    allows no eviction at all (and only a whole-number minAvailable would be valid there)."""
    pdb = one(gateway, "PodDisruptionBudget")
    assert workload(gateway)["kind"] == "StatefulSet"
    pod_labels = workload(gateway)["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1
    assert workload(base)["kind"] == "DaemonSet"
    assert not find(base, "PodDisruptionBudget")


# --- security -------------------------------------------------------------------------------------------------------


def test_pods_run_non_root_read_only_without_privileges_or_capabilities(rendered: list[Doc]) -> None:
    spec = pod_spec(rendered)
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] > 0
    assert pod["runAsGroup"] > 0
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        assert not spec.get(key), key
    for volume in spec["volumes"]:
        assert "hostPath" not in volume, volume
    for c in spec["containers"]:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["runAsNonRoot"] is True
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
        assert not sc.get("privileged")
        assert all("hostPort" not in p for p in c["ports"]), "no hostPort: the restricted standard forbids it"
    # What a read-only root needs writable: the data directory and /tmp, as volumes.
    assert {m["mountPath"] for m in spec["containers"][0]["volumeMounts"] if not m.get("readOnly")} == {
        "/var/lib/rootward",
        "/tmp",
    }
    labels = one(rendered, "Namespace")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_secrets_are_only_referenced_and_land_in_masked_settings(rendered: list[Doc]) -> None:
    assert not find(rendered, "Secret")
    env = container(rendered).get("env", [])
    assert env
    for e in env:
        assert "value" not in e, f"{e['name']}: a literal value in the environment"
        assert e["name"].startswith("ROOTWARD_"), e
        assert "secretKeyRef" in e["valueFrom"] or e["valueFrom"] == POD_NAME, e
    cfg = shipped_config(rendered)
    assert cfg.receiver.auth.tokens == []
    assert cfg.policies.approvals.tokens == {}
    assert cfg.policies.audit.hmac_key is None


def test_service_links_are_off_because_rootward_reads_every_rootward_variable(rendered: list[Doc]) -> None:
    # With service links on, a Service named rootward gives every pod ROOTWARD_SERVICE_HOST=..., which Rootward
    # would read as the configuration key service_host and refuse to start on.
    with pytest.raises(ConfigError, match="service_host: unknown key"):
        load_config(environ={"ROOTWARD_SERVICE_HOST": "10.0.0.1"})
    assert pod_spec(rendered)["enableServiceLinks"] is False


# --- gateway mode ---------------------------------------------------------------------------------------------------


def test_the_gateway_overlay_replaces_the_daemonset_by_a_statefulset_with_the_same_container(
    base: list[Doc], gateway: list[Doc]
) -> None:
    assert not find(gateway, "DaemonSet")
    assert not find(gateway, "Service", "rootward-otlp"), "in gateway mode telemetry comes through the gateway only"
    statefulset = one(gateway, "StatefulSet")
    assert statefulset["spec"]["replicas"] >= 2
    headless = one(gateway, "Service", statefulset["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert container(gateway) == container(base), "the StatefulSet's container drifted from the DaemonSet's"
    base_spec, gateway_spec = pod_spec(base), pod_spec(gateway)
    for key in set(base_spec) | set(gateway_spec):
        if key not in ("volumes", "affinity"):
            assert gateway_spec.get(key) == base_spec.get(key), key
    claims = [t["metadata"]["name"] for t in statefulset["spec"]["volumeClaimTemplates"]]
    volumes = {v["name"] for v in gateway_spec["volumes"]}
    assert claims == ["data"]
    assert "data" not in volumes
    assert {v["name"] for v in base_spec["volumes"]} == volumes | {"data"}


def test_the_gateway_config_is_the_bases_with_the_export_to_the_first_replica_turned_on(
    base: list[Doc], gateway: list[Doc]
) -> None:
    base_config, gateway_config = shipped_config(base), shipped_config(gateway)
    without_export = {"topology": {"export"}}
    assert gateway_config.model_dump(exclude=without_export) == base_config.model_dump(exclude=without_export)
    base_export = base_config.topology.export  # per node: anomalies only, to whoever holds the Lease
    assert base_export.follow_lease
    assert base_export.anomalies
    export = gateway_config.topology.export
    assert not export.follow_lease
    statefulset = one(gateway, "StatefulSet")
    first = f"{statefulset['metadata']['name']}-0"
    headless, namespace = statefulset["spec"]["serviceName"], statefulset["metadata"]["namespace"]
    assert export.enabled
    assert export.aggregator == first
    port = container_port(gateway, "grpc-otlp")
    assert export.endpoint == f"{first}.{headless}.{namespace}.svc.cluster.local:{port}"
