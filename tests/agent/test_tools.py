"""The investigation tools on their own: definitions from the argument models, envelopes, scope, size bounds."""

from __future__ import annotations

import json

from conftest import CART, CART_POD, DEPLOYMENT, FRONTEND, INJECTED

from rootward.agent import IncidentContext
from rootward.agent.tools import TOOLS, Sources, ToolResult, Workspace, toolbox


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
