"""From a diagnosis to a proposed action: the table in agent/propose.py, over a graph built from real resources."""

from __future__ import annotations

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from rootward.actions.requests import Collect, Cordon, RestartPod, Rollback, RolloutRestart
from rootward.agent.propose import propose
from rootward.agent.schema import Diagnosis, Hypothesis
from rootward.receiver import TraceDecoder
from rootward.topology import TopologyGraph


@pytest.fixture(scope="module")
def graph() -> TopologyGraph:
    """cart: pods of Deployment cart (resource attributes, as the Collector's k8sattributes sets them); ledger: a
    pod with no known owner."""
    g = TopologyGraph()
    req = ExportTraceServiceRequest()
    for service, pod, deployment in (("cart", "cart-7d9f-x1", "cart"), ("ledger", "ledger-0", "")):
        rs = req.resource_spans.add()
        attrs = {
            "service.name": service,
            "service.namespace": "shop",
            "k8s.namespace.name": "shop",
            "k8s.pod.name": pod,
        }
        if deployment:
            attrs["k8s.deployment.name"] = deployment
        for key, value in attrs.items():
            rs.resource.attributes.add(key=key, value=AnyValue(string_value=value))
        rs.scope_spans.add().spans.add(trace_id=b"\x01" * 16, span_id=bytes([len(pod)]) * 8, kind=2, name="op")  # type: ignore[arg-type]
    g.consume_traces(TraceDecoder().decode(req.SerializeToString()).batch)
    return g


def diagnosis(entity: str, kind: str, fault: str, confidence: float = 0.8) -> Diagnosis:
    h = Hypothesis(entity=entity, kind=kind, fault_class=fault, confidence=confidence)  # type: ignore[arg-type]
    return Diagnosis(incident="inc-1", reasoner="test", at=0.0, hypotheses=[h])


@pytest.mark.parametrize(
    ("entity", "kind", "fault", "expected"),
    [
        ("service:shop/cart", "service", "bad_rollout", Rollback("shop", "cart")),
        ("service:shop/cart", "service", "resource_saturation", RolloutRestart("shop", "cart")),
        ("pod:shop/cart-7d9f-x1", "pod", "code_error", RolloutRestart("shop", "cart")),
        ("service:shop/ledger", "service", "code_error", RestartPod("shop", "ledger-0")),
        ("service:shop/cart", "service", "network_delay", Collect("shop", "cart-7d9f-x1")),
        ("node:node-a", "node", "node_problem", Cordon("node-a")),
        ("database:postgresql/db", "peer", "dependency_failure", None),
        ("service:shop/unknown", "service", "code_error", None),
    ],
)
def test_the_top_hypothesis_gives_one_request(
    graph: TopologyGraph, entity: str, kind: str, fault: str, expected: object
) -> None:
    assert propose(diagnosis(entity, kind, fault), graph) == expected


def test_nothing_below_the_confidence_floor_or_for_names_kubernetes_refuses(graph: TopologyGraph) -> None:
    assert propose(diagnosis("service:shop/cart", "service", "code_error", 0.1), graph) is None
    assert propose(diagnosis("node:Not_A_Name", "node", "node_problem"), graph) is None
    assert propose(Diagnosis(incident="inc-1", reasoner="test", at=0.0), graph) is None
