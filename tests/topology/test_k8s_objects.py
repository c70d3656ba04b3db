"""Kubernetes objects from k8sobjects-style log records: ownership, placement, and resolution of a client span's
server.address / peer IP to the real service behind a Service DNS name, cluster IP or pod IP."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from rootward.app import App
from rootward.clock import ManualClock
from rootward.config import LOCAL_PORTS, NOTHING_ON_DISK, load_config
from rootward.model import LogBatch, SpanBatch
from rootward.receiver import LogDecoder, TraceDecoder
from rootward.topology import TopologyGraph, TopologyLimits, queries

from k8s_bodies import any_value, log_bodies


def objects(*bodies: dict[str, Any], watch: bool = True) -> LogBatch:
    """k8sobjects log records (watch mode wraps each object in {type, object}), through the real log decoder."""
    return log_bodies(*({"type": "ADDED", "object": body} if watch else body for body in bodies))


def pod(name: str, ip: str, labels: dict[str, str], owner: str = "") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "shop", "labels": labels}
    if owner:
        meta["ownerReferences"] = [{"kind": "ReplicaSet", "name": owner, "controller": True}]
    return {"kind": "Pod", "metadata": meta, "spec": {"nodeName": "node-a"}, "status": {"podIP": ip}}


CLUSTER = [
    pod("cart-7d9f-x1", "10.0.0.7", {"app": "cart"}, owner="cart-7d9f"),
    {
        "kind": "ReplicaSet",
        "metadata": {
            "name": "cart-7d9f",
            "namespace": "shop",
            "annotations": {"deployment.kubernetes.io/revision": "4"},
            "ownerReferences": [{"kind": "Deployment", "name": "cart", "controller": True}],
        },
    },
    {"kind": "Service", "metadata": {"name": "cart", "namespace": "shop"}, "spec": {"selector": {"app": "cart"}, "clusterIP": "10.96.0.12"}},
    {"kind": "Node", "metadata": {"name": "node-a"}},
]  # fmt: skip


def spans(*items: tuple[str, str, Span]) -> SpanBatch:
    req = ExportTraceServiceRequest()
    for service, pod_name, span in items:
        rs = req.resource_spans.add()
        for key, value in (("service.name", service), ("service.namespace", "shop"), ("k8s.pod.name", pod_name), ("k8s.namespace.name", "shop")):  # fmt: skip
            rs.resource.attributes.add(key=key, value=AnyValue(string_value=value))
        rs.scope_spans.add().spans.append(span)
    return TraceDecoder().decode(req.SerializeToString()).batch


def span(sid: int, kind: int, parent: int = 0, **attrs: str) -> Span:
    s = Span(trace_id=b"\x01" * 16, span_id=sid.to_bytes(8, "big"), parent_span_id=parent.to_bytes(8, "big") if parent else b"", kind=kind)  # type: ignore[arg-type]  # fmt: skip
    for key, value in attrs.items():
        s.attributes.add(key=key.replace("_", "."), value=AnyValue(string_value=value))
    return s


@pytest.fixture
def graph() -> TopologyGraph:
    g = TopologyGraph(TopologyLimits(pending_ttl_s=5), ManualClock())
    g.consume_logs(objects(*CLUSTER))
    # cart reports itself (a root server span), which makes its pod an instance of service:shop/cart.
    g.consume_traces(spans(("cart", "cart-7d9f-x1", span(100, 2))))
    return g


def test_pod_ownership_placement_and_rollout_revision_come_from_the_objects(graph: TopologyGraph) -> None:
    edges = {(u, v, k) for u, v, k in graph.graph.edges(keys=True)}
    assert ("pod:shop/cart-7d9f-x1", "workload:shop/replicaset/cart-7d9f", "owned_by") in edges
    assert ("workload:shop/replicaset/cart-7d9f", "workload:shop/deployment/cart", "owned_by") in edges
    assert ("pod:shop/cart-7d9f-x1", "node:node-a", "runs_on") in edges
    assert ("pod:shop/cart-7d9f-x1", "service:shop/cart", "instance_of") in edges
    assert graph.graph.nodes["workload:shop/replicaset/cart-7d9f"]["revision"] == "4"


@pytest.mark.parametrize(
    "attrs",
    [
        pytest.param({"server_address": "cart"}, id="service-name"),
        pytest.param({"server_address": "cart.shop"}, id="service-dot-namespace"),
        pytest.param({"server_address": "cart.shop.svc.cluster.local"}, id="cluster-fqdn"),
        pytest.param({"server_address": "10.96.0.12"}, id="cluster-ip"),
        pytest.param({"server_address": "10.0.0.7"}, id="pod-ip-as-address"),
        pytest.param({"server_address": "unknown-host", "network_peer_address": "10.0.0.7"}, id="pod-ip-as-peer"),
    ],
)
def test_an_unpaired_client_span_resolves_to_the_service_behind_its_address(
    graph: TopologyGraph, attrs: dict[str, str]
) -> None:
    graph.consume_traces(spans(("frontend", "frontend-1", span(1, 3, **attrs))))
    graph.flush()
    assert ("service:shop/frontend", "service:shop/cart", 1, 0) in graph.calls()
    assert not any(n.startswith("host:") for n in graph.graph)


def test_endpoint_slices_name_the_backing_pods_when_the_service_has_no_selector() -> None:
    g = TopologyGraph()
    g.consume_logs(
        objects(
            pod("ledger-0", "10.0.0.9", {}),
            {"kind": "Service", "metadata": {"name": "ledger", "namespace": "shop"}, "spec": {}},
            {
                "kind": "EndpointSlice",
                "metadata": {
                    "name": "ledger-abc",
                    "namespace": "shop",
                    "labels": {"kubernetes.io/service-name": "ledger"},
                },
                "endpoints": [{"addresses": ["10.0.0.9"], "targetRef": {"kind": "Pod", "name": "ledger-0"}}],
            },
            watch=False,  # pull mode: the body is the object itself
        )
    )
    g.consume_traces(spans(("ledger-svc", "ledger-0", span(100, 2))))
    g.consume_traces(spans(("frontend", "frontend-1", span(1, 3, server_address="ledger.shop.svc"))))
    g.flush()
    assert ("service:shop/frontend", "service:shop/ledger-svc", 1, 0) in g.calls()


def test_a_deleted_pod_no_longer_resolves_its_ip(graph: TopologyGraph) -> None:
    req = ExportLogsServiceRequest()
    req.resource_logs.add().scope_logs.add().log_records.add(body=any_value({"type": "DELETED", "object": CLUSTER[0]}))
    graph.consume_logs(LogDecoder().decode(req.SerializeToString()).batch)
    graph.consume_traces(spans(("frontend", "frontend-1", span(1, 3, server_address="10.0.0.7"))))
    graph.flush()
    assert ("service:shop/frontend", "host:10.0.0.7", 1, 0) in graph.calls()


def test_log_bodies_that_are_not_kubernetes_objects_are_ignored() -> None:
    g = TopologyGraph()
    g.consume_logs(objects({"kind": "Pod"}, {"metadata": {"name": "x"}}, watch=False))
    req = ExportLogsServiceRequest()
    req.resource_logs.add().scope_logs.add().log_records.add(body=AnyValue(string_value="plain line"))
    g.consume_logs(LogDecoder().decode(req.SerializeToString()).batch)
    assert g.graph.number_of_nodes() == 0


def test_an_uninstrumented_database_behind_a_service_stays_virtual_and_is_backed_by_its_pods() -> None:
    g = TopologyGraph(TopologyLimits(pending_ttl_s=5), ManualClock())
    g.consume_logs(
        objects(
            pod("postgres-0", "10.0.0.20", {"app": "postgres"}),
            pod("postgres-1", "10.0.0.21", {"app": "postgres"}),
            {
                "kind": "Service",
                "metadata": {"name": "postgres", "namespace": "shop"},
                "spec": {"selector": {"app": "postgres"}},
            },
        )
    )
    g.consume_traces(
        spans(
            ("orders", "orders-1", span(1, 3, db_system="postgresql", server_address="postgres.shop.svc.cluster.local"))
        )
    )
    g.flush()
    db = "database:postgresql/postgres.shop.svc.cluster.local"
    assert ("service:shop/orders", db, 1, 0) in g.calls()
    assert g.graph.nodes[db]["virtual"]
    backed = sorted(v for _, v, k in g.graph.out_edges(db, keys=True) if k == "backed_by")
    assert backed == ["pod:shop/postgres-0", "pod:shop/postgres-1"]
    assert ("pod:shop/postgres-0", "node:node-a", "runs_on") in set(g.graph.edges(keys=True))


def test_the_blast_radius_of_a_database_pod_reaches_the_services_that_query_the_database() -> None:
    g = TopologyGraph(TopologyLimits(pending_ttl_s=5), ManualClock())
    g.consume_logs(
        objects(
            pod("postgres-0", "10.0.0.20", {"app": "postgres"}),
            {
                "kind": "Service",
                "metadata": {"name": "postgres", "namespace": "shop"},
                "spec": {"selector": {"app": "postgres"}},
            },
        )
    )
    g.consume_traces(spans(("frontend", "frontend-1", span(1, 3)), ("orders", "orders-1", span(2, 2, parent=1))))
    g.consume_traces(
        spans(("orders", "orders-1", span(3, 3, parent=2, db_system="postgresql", server_address="postgres")))
    )
    g.flush()
    with g.read() as graph:
        up = queries.blast_radius(graph, "pod:shop/postgres-0", "upstream")
        down = queries.blast_radius(graph, "service:shop/frontend", "downstream")
    assert up["services"] == ["database:postgresql/postgres", "service:shop/frontend", "service:shop/orders"]
    assert up["pods"] == ["pod:shop/frontend-1", "pod:shop/orders-1"]
    assert "pod:shop/postgres-0" in down["pods"]
    assert "database:postgresql/postgres" in down["services"]


def real_pod(name: str) -> dict[str, Any]:
    """A Pod as the API server serves it: the auto-mounted service-account token (a projected volume) and the
    managedFields of a Deployment's pod, the deepest parts of an everyday object."""
    container_fields = {"f:image": {}, "f:name": {}, "f:resources": {".": {}, "f:limits": {".": {}, "f:memory": {}}}}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "shop",
            "labels": {"app": "cart"},
            "ownerReferences": [{"kind": "ReplicaSet", "name": "cart-7d9f", "controller": True}],
            "managedFields": [
                {
                    "manager": "kube-controller-manager",
                    "operation": "Update",
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:spec": {"f:containers": {'k:{"name":"cart"}': container_fields}}},
                }
            ],
        },
        "spec": {
            "nodeName": "node-a",
            "containers": [{"name": "cart", "image": "shop/cart:4", "resources": {"limits": {"memory": "256Mi"}}}],
            "volumes": [
                {
                    "name": "kube-api-access-x7k2p",
                    "projected": {
                        "defaultMode": 420,
                        "sources": [
                            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
                        ],
                    },
                }
            ],
        },
        "status": {"podIP": "10.0.0.9", "phase": "Running"},
    }  # fmt: skip


def test_an_everyday_pod_in_watch_mode_is_taken_whole_by_the_default_limits() -> None:
    """The depth limit was 8: every real Pod (and Deployment) was refused with a 400, which the Collector drops."""
    app = App(load_config(environ={}, overrides=[*LOCAL_PORTS, *NOTHING_ON_DISK]))
    app.start()
    try:
        req = ExportLogsServiceRequest()
        records = req.resource_logs.add().scope_logs.add().log_records
        records.add(body=any_value({"type": "ADDED", "object": real_pod("cart-7d9f-x9")}))
        sent = httpx.post(
            f"http://127.0.0.1:{app.receiver.http.port}/v1/logs",
            content=req.SerializeToString(),
            headers={"content-type": "application/x-protobuf"},
            timeout=10,
        )
        assert sent.status_code == 200, sent.text
        app.receiver.queue.wait_idle()
        with app.topology.read() as g:
            assert g.has_edge("pod:shop/cart-7d9f-x9", "node:node-a", "runs_on")
            assert g.has_edge("pod:shop/cart-7d9f-x9", "workload:shop/replicaset/cart-7d9f", "owned_by")
    finally:
        app.shutdown()
