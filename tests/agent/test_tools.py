"""The investigation tools on their own: definitions from the argument models, envelopes, scope, size bounds."""

from __future__ import annotations

import json
from typing import Any

from conftest import CART, CART_POD, DEPLOYMENT, FRONTEND, INJECTED
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from rootward.agent import IncidentContext
from rootward.agent.tools import TOOLS, Sources, ToolResult, Workspace, toolbox
from rootward.clock import ManualClock
from rootward.detector.kube import KubeSignals
from rootward.detector.spanflow import SpanFlow
from rootward.model import SpanBatch
from rootward.receiver import TraceDecoder

from k8s_bodies import log_bodies


def test_every_tool_is_defined_by_its_argument_models_schema(sources: Sources, context: IncidentContext) -> None:
    tools = toolbox(Workspace.of(context, sources))
    assert list(tools) == [cls.name for cls in TOOLS]
    for tool in tools.values():
        definition = tool.definition()
        assert definition["type"] == "function"
        function = definition["function"]
        assert function["name"] == tool.name
        assert function["description"]
        assert function["parameters"]["type"] == "object"
        assert function["parameters"]["additionalProperties"] is False


def test_the_scope_is_the_incident_and_its_neighbourhood(sources: Sources, context: IncidentContext) -> None:
    scope = Workspace.of(context, sources).scope
    assert {CART, CART_POD, FRONTEND, DEPLOYMENT, "node:node-a", "workload:shop/replicaset/cart-7d9f"} <= scope
    assert not any("kube-system" in e for e in scope)


def test_tools_answer_from_what_rootward_holds(sources: Sources, context: IncidentContext) -> None:
    tools = toolbox(Workspace.of(context, sources))
    _, logs = tools["search_logs"].invoke(json.dumps({"text": "IGNORE previous"}))
    assert logs.status == "ok"
    assert logs.data["templates"][0]["text"] == INJECTED
    assert logs.data["templates"][0]["entity"] == CART
    _, exemplars = tools["trace_exemplars"].invoke(json.dumps({"entity": CART}))
    assert exemplars.data["exemplars"][0]["trace_id"] == "01" * 16
    _, changes = tools["recent_changes"].invoke(json.dumps({"entity": DEPLOYMENT}))
    assert changes.data["changes"][0]["kind"] == "rollout"
    _, details = tools["entity_details"].invoke(json.dumps({"entity": CART_POD}))
    assert {e["target"] for e in details.data["outgoing"]} == {"node:node-a", "workload:shop/replicaset/cart-7d9f"}
    _, series = tools["metric_history"].invoke(json.dumps({"entity": CART}))
    assert series.status == "no_data"  # no detector in these sources, no window in the context


def test_a_tool_result_is_bounded_and_says_so() -> None:
    rendered = json.loads(ToolResult(status="ok", data={"lines": ["x" * 100] * 100}).render(500))
    assert rendered["truncated"] is True
    assert len(rendered["data"]) == 500
    assert json.loads(ToolResult(status="no_data", error="nothing").render(500)) == {
        "status": "no_data",
        "error": "nothing",
    }


def test_span_names_show_what_the_span_flow_learned_and_what_stopped(context: IncidentContext) -> None:
    """frontend's traces call cart's GetCart and then, for a while, no longer: the tool shows the call under
    frontend (the caller that stopped calling), its usual share, and 0 over the trailing window."""
    clock = ManualClock(1000.0)
    flow = SpanFlow(lambda _, found: None, clock)
    trace = 1
    for window in range(40):
        rows: list[tuple[int, int, int, str, str]] = []
        for _ in range(5):
            rows.append((trace, 1, 0, "frontend", "GET /cart"))
            if window < 30:
                rows.append((trace, 2, 1, "cart", "GetCart"))
            trace += 1
        flow.consume_traces(span_batch(rows))
        clock.advance(10)
        flow.tick()
    sources = Sources(None, None, None, flow)
    _, found = toolbox(Workspace.of(context, sources))["span_names"].invoke(json.dumps({"entity": FRONTEND}))
    assert found.status == "ok"
    assert found.data["sampled"] == 1.0
    assert found.data["spans"][0]["span"] == f"{CART} GetCart"  # what stopped comes first
    spans = {row["span"]: row for row in found.data["spans"]}
    assert set(spans) == {f"{FRONTEND} GET /cart", f"{CART} GetCart"}
    assert spans[f"{CART} GetCart"]["trailing"] == 0  # stopped
    assert spans[f"{CART} GetCart"]["usual_share"] > 0.1
    assert spans[f"{FRONTEND} GET /cart"]["trailing"] > 0
    _, outside = toolbox(Workspace.of(context, sources))["span_names"].invoke(json.dumps({"entity": "service:x/y"}))
    assert outside.status == "error"  # outside the incident's scope
    _, off = toolbox(Workspace.of(context, Sources()))["span_names"].invoke(json.dumps({"entity": FRONTEND}))
    assert off.status == "no_data"


def span_batch(rows: list[tuple[int, int, int, str, str]]) -> SpanBatch:
    """Spans (trace, span, parent, service, name) of namespace shop, through the real decoder; parent 0: the root."""
    req = ExportTraceServiceRequest()
    for trace_no, span, parent, service, name in rows:
        rs = req.resource_spans.add()
        for key, value in (("service.name", service), ("service.namespace", "shop")):
            rs.resource.attributes.add(key=key, value=AnyValue(string_value=value))
        rs.scope_spans.add().spans.add(
            trace_id=trace_no.to_bytes(16, "big"),
            span_id=(trace_no * 10 + span).to_bytes(8, "big"),
            parent_span_id=(trace_no * 10 + parent).to_bytes(8, "big") if parent else b"",
            name=name,
        )
    return TraceDecoder().decode(req.SerializeToString()).batch


def test_kubernetes_events_lists_a_pods_recent_events_as_kubectl_describe_does(context: IncidentContext) -> None:
    """Events about cart's pod (Normal and Warning, core/v1 and events.k8s.io/v1) come back oldest first with their
    messages, for the pod and for its service; an Event sent again as its count grows is one record, its latest; a
    deleted one is gone; another pod's, and one past the per-object bound, are not there."""
    kube = KubeSignals(lambda _, a: None, lambda c: None, ManualClock(1_000_000_000.0))
    pod = {"kind": "Pod", "name": "cart-7d9f-x1", "namespace": "shop"}

    def event(name: str, reason: str, at: str, kind: str = "Normal", **more: Any) -> dict[str, Any]:
        meta = {"name": name, "namespace": "shop"}
        return {"kind": "Event", "metadata": meta, "type": kind, "reason": reason, "involvedObject": pod,
                "lastTimestamp": at, **more}  # fmt: skip

    backoff = event("cart.1", "BackOff", "2001-09-09T01:44:00Z", "Warning", count=2)
    kube.consume_logs(
        log_bodies(
            event("cart.0", "Pulled", "2001-09-09T01:45:00Z", message="Successfully pulled image cart:1.4"),
            {"type": "ADDED", "object": backoff},
            {"type": "MODIFIED", "object": {**backoff, "count": 7, "lastTimestamp": "2001-09-09T01:46:00Z"}},
            {  # events.k8s.io/v1: regarding, note, series
                "kind": "Event", "metadata": {"name": "cart.2", "namespace": "shop"}, "type": "Warning",
                "reason": "Unhealthy", "regarding": pod, "note": "Readiness probe failed: connection refused",
                "series": {"count": 3, "lastObservedTime": "2001-09-09T01:45:30.000000Z"},
            },
            {"type": "ADDED", "object": event("cart.3", "Killing", "2001-09-09T01:40:00Z")},
            {"type": "DELETED", "object": event("cart.3", "Killing", "2001-09-09T01:40:00Z")},
            event("other.0", "Scheduled", "2001-09-09T01:40:00Z", involvedObject={**pod, "name": "other-1"}),
        )
    )  # fmt: skip
    _, found = toolbox(Workspace.of(context, Sources(kube=kube)))["kubernetes_events"].invoke(
        json.dumps({"entity": CART})
    )
    assert found.status == "ok"
    assert [(e["reason"], e["type"], e["count"]) for e in found.data["events"]] == [
        ("Pulled", "Normal", 1),
        ("Unhealthy", "Warning", 3),
        ("BackOff", "Warning", 7),
    ]
    assert found.data["events"][0]["message"] == "Successfully pulled image cart:1.4"
    assert found.data["events"][1]["time"] == 999_999_930.0  # 01:45:30Z, the series' last observation
    bound = kube.history.per_object
    for n in range(bound + 5):
        kube.consume_logs(log_bodies(event(f"cart.p{n}", "Pulled", f"2001-09-09T01:{n:02d}:59Z")))
    assert len(kube.history.of([CART_POD])) == bound
