"""The blast radius names who depends on a target, from the topology graph built from real spans."""

from __future__ import annotations

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from rootward.actions.dependents import topology_dependents
from rootward.actions.requests import Target
from rootward.receiver import TraceDecoder
from rootward.topology import TopologyGraph

TRACE = b"\x0b" * 16
CLIENT, SERVER = 3, 2


def _span(sid: int, kind: int, parent: int = 0) -> Span:
    return Span(
        trace_id=TRACE,
        span_id=sid.to_bytes(8, "big"),
        parent_span_id=parent.to_bytes(8, "big") if parent else b"",
        kind=kind,  # type: ignore[arg-type]
        name="op",
        start_time_unix_nano=1_000_000_000,
        end_time_unix_nano=1_030_000_000,
    )


def _graph() -> TopologyGraph:
    """frontend -> checkout -> cart, each a Deployment with one pod on node-1 (resource attributes as the
    Collector's k8sattributes processor sets them)."""
    request = ExportTraceServiceRequest()
    spans = {
        "frontend": [_span(1, CLIENT)],
        "checkout": [_span(2, SERVER, 1), _span(3, CLIENT, 2)],
        "cart": [_span(4, SERVER, 3)],
    }
    for service, items in spans.items():
        rs = request.resource_spans.add()
        for key, value in {
            "service.name": service,
            "service.namespace": "shop",
            "k8s.namespace.name": "shop",
            "k8s.pod.name": f"{service}-abc12-x1",
            "k8s.deployment.name": service,
            "k8s.node.name": "node-1",
        }.items():
            rs.resource.attributes.add(key=key, value=AnyValue(string_value=value))
        rs.scope_spans.add().spans.extend(items)
    graph = TopologyGraph()
    graph.consume_traces(TraceDecoder().decode(request.SerializeToString()).batch)
    return graph


def test_a_workloads_dependents_are_its_services_callers_transitively() -> None:
    dependents = topology_dependents(_graph())
    assert dependents(Target("Deployment", "shop", "cart")) == ["service:shop/checkout", "service:shop/frontend"]
    assert dependents(Target("Pod", "shop", "checkout-abc12-x1")) == ["service:shop/frontend"]
    assert dependents(Target("Deployment", "shop", "frontend")) == []


def test_a_node_names_the_dependents_of_every_pod_on_it_and_unknown_targets_none() -> None:
    dependents = topology_dependents(_graph())
    assert dependents(Target("Node", None, "node-1")) == [
        "service:shop/cart",
        "service:shop/checkout",
        "service:shop/frontend",
    ]
    assert dependents(Target("Deployment", "shop", "unknown")) == []


def test_a_feature_flag_has_no_dependents_the_graph_could_name() -> None:
    assert topology_dependents(_graph())(Target("FeatureFlag", None, "new-checkout")) == []
