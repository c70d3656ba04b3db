"""otel-config/deploy/networkpolicy: a valid NetworkPolicy that selects Rootward's pods in both layouts, names only
their ports, and lets in what Rootward needs (OTLP from the Collectors and from the other Rootwards, the API from
the other Rootwards and Prometheus) and nothing else: judged here as a NetworkPolicy is, rule by rule."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from deploy_files import DEPLOY, Doc, container, load_yaml, pod_spec, workload
from kustomize_reader import render

NETWORKPOLICY = DEPLOY / "networkpolicy"
COLLECTOR = {"app.kubernetes.io/name": "opentelemetry-collector"}
PROMETHEUS = {"app.kubernetes.io/name": "prometheus"}


@pytest.fixture(scope="module")
def policy() -> Doc:
    (doc,) = render(NETWORKPOLICY)
    assert doc["kind"] == "NetworkPolicy"
    return doc


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items()) and not selector.get(
        "matchExpressions"
    )


def admits(policy: Doc, namespace: str, labels: dict[str, str], port: str) -> bool:
    """Whether a pod with ``labels`` in ``namespace`` may reach ``port`` of the selected pods (peers without a
    namespaceSelector are in the policy's own namespace)."""
    ns_labels = {"kubernetes.io/metadata.name": namespace}
    own = policy["metadata"]["namespace"]
    for rule in policy["spec"]["ingress"]:
        if port not in {p["port"] for p in rule["ports"]}:
            continue
        for peer in rule["from"]:
            in_namespace = (
                _matches(peer["namespaceSelector"], ns_labels) if "namespaceSelector" in peer else namespace == own
            )
            if in_namespace and _matches(peer.get("podSelector", {}), labels):
                return True
    return False


def test_it_validates_strictly_against_the_kubernetes_schemas(policy: Doc) -> None:
    for version in ("1.29.0", kubernetes_validate.latest_version()):
        kubernetes_validate.validate(policy, version, strict=True)


@pytest.mark.parametrize("layout", ["base", "gateway"])
def test_it_selects_rootwards_pods_and_names_only_their_ports(policy: Doc, layout: str) -> None:
    docs = render(DEPLOY / layout)
    pods = workload(docs)
    assert policy["metadata"]["namespace"] == pods["metadata"]["namespace"]
    assert _matches(policy["spec"]["podSelector"], pods["spec"]["template"]["metadata"]["labels"])
    ports = {p["name"] for p in container(docs)["ports"]}
    named = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    assert named == ports  # every port has its rule, and no rule names a port the pods do not have
    assert not pod_spec(docs).get("hostNetwork")  # a host-network pod would be outside any NetworkPolicy


@pytest.mark.parametrize("layout", ["base", "gateway"])
def test_the_other_rootwards_forward_and_read_and_the_collectors_send(policy: Doc, layout: str) -> None:
    pods = workload(render(DEPLOY / layout))
    rootward = pods["spec"]["template"]["metadata"]["labels"]
    namespace = pods["metadata"]["namespace"]
    assert admits(policy, namespace, rootward, "grpc-otlp")  # anomalies to the Lease holder / first replica
    assert admits(policy, namespace, rootward, "http-api")
    for port in ("grpc-otlp", "http-otlp"):
        assert admits(policy, "observability", COLLECTOR, port)
    assert admits(policy, "monitoring", PROMETHEUS, "http-api")


def test_everyone_else_is_refused(policy: Doc) -> None:
    stranger = {"app": "shop-frontend"}
    for port in ("grpc-otlp", "http-otlp", "http-api"):
        assert not admits(policy, "shop", stranger, port)
    assert not admits(policy, "observability", COLLECTOR, "http-api")  # a Collector reads no incident
    assert not admits(policy, "monitoring", PROMETHEUS, "grpc-otlp")
    # a label is something any pod creator sets: outside the Collectors' and Prometheus' namespaces it opens nothing
    assert not admits(policy, "shop", COLLECTOR, "grpc-otlp")
    assert not admits(policy, "shop", PROMETHEUS, "http-api")
    assert not admits(policy, "monitoring", {"app": "grafana"}, "http-api")
    assert policy["spec"]["policyTypes"] == ["Ingress"]  # egress stays open: the Kubernetes API, Slack, the LLM


def test_the_kustomization_lists_its_files() -> None:
    kustomization = load_yaml(NETWORKPOLICY / "kustomization.yaml")
    assert kustomization["resources"] == ["networkpolicy.yaml"]
