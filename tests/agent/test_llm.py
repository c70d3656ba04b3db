"""The LLM reasoner's loop, with the real ``openai`` client against a scripted OpenAI-compatible endpoint on port 0:
tool calls and their envelopes, budgets, the repair turn, and the graph reasoner's answer whenever the endpoint or
the model fails."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest
from conftest import CART, CART_POD, FRONTEND, Build

from rootward.agent import GraphReasoner, IncidentContext
from rootward.agent.scripted import Reply, ScriptedLLM, answer, completion, tool_calls

GOOD = {
    "hypotheses": [
        {"entity": CART, "kind": "service", "fault_class": "resource_saturation", "confidence": 0.7},
        {"entity": FRONTEND, "kind": "service", "fault_class": "dependency_failure", "confidence": 0.1},
    ],
    "summary": "cart's pod is OOMKilled",
    "action": {"kind": "rollout_restart", "target": CART, "reason": "memory"},
}


def tool_messages(request: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in request["messages"] if m["role"] == "tool"]


def envelope(message: dict[str, Any]) -> dict[str, Any]:
    """The JSON envelope between a tool message's delimiters."""
    lines = message["content"].split("\n")
    assert lines[0].startswith("<<<DATA ")
    assert lines[-1].startswith("<<<END DATA ")
    return json.loads("\n".join(lines[1:-1]))  # type: ignore[no-any-return]


def test_a_tool_call_then_an_answer_gives_an_llm_diagnosis_with_its_trace(
    llm: ScriptedLLM, reasoner: Build, context: IncidentContext
) -> None:
    llm.add(tool_calls(("describe_pod", {"pod": CART_POD})), answer(GOOD))
    diagnosis, trace = reasoner().investigate(context)
    assert diagnosis.reasoner == "llm"
    assert diagnosis.fallback is None
    assert [h.entity for h in diagnosis.hypotheses] == [CART, FRONTEND]
    assert diagnosis.suggested_action is not None
    assert diagnosis.suggested_action.kind == "rollout_restart"
    first, second = llm.requests
    assert first["model"] == "scripted-model"
    assert {t["function"]["name"] for t in first["tools"]} >= {"metric_history", "describe_pod", "search_logs"}
    assert first["tools"][0]["function"]["parameters"]["type"] == "object"
    pod = envelope(tool_messages(second)[0])
    assert pod["status"] == "ok"
    assert pod["data"]["node"] == "node:node-a"
    assert pod["data"]["revision"] == "4"
    assert llm.headers[0]["authorization"] == "Bearer sk-test-key-0123456789abcdef"
    assert trace["outcome"] == "answered"
    assert [s["type"] for s in trace["steps"]] == ["model", "tool", "model"]
    assert trace["steps"][1]["name"] == "describe_pod"
    assert trace["steps"][1]["status"] == "ok"
    assert trace["input_tokens"] == 200
    assert trace["output_tokens"] == 40
    assert trace["messages"] == [*second["messages"], {"role": "assistant", "content": json.dumps(GOOD)}]


def test_tool_failures_come_back_as_error_envelopes_and_the_loop_goes_on(
    llm: ScriptedLLM, reasoner: Build, context: IncidentContext
) -> None:
    llm.add(
        tool_calls(
            ("no_such_tool", {}),
            ("metric_history", "{not json"),
            ("metric_history", {"entity": CART, "points": 5000}),
            ("entity_details", {"entity": "service:kube-system/coredns"}),
            ("kubernetes_events", {"entity": CART_POD}),
        ),
        answer(GOOD),
    )
    diagnosis, trace = reasoner().investigate(context)
    assert diagnosis.reasoner == "llm"
    results = [envelope(m) for m in tool_messages(llm.requests[1])]
    assert [r["status"] for r in results] == ["error", "error", "error", "error", "ok"]
    assert "no tool 'no_such_tool'" in results[0]["error"]
    assert results[1]["error"] == "arguments are not valid JSON"
    assert "points" in results[2]["error"]
    assert "outside this incident's scope" in results[3]["error"]
    assert results[4]["data"]["failures"][0]["reason"] == "OOMKilled"
    assert [s["status"] for s in trace["steps"] if s["type"] == "tool"] == ["error"] * 4 + ["ok"]


def test_on_the_last_step_no_tools_are_offered_and_the_model_must_answer(
    llm: ScriptedLLM, reasoner: Build, context: IncidentContext
) -> None:
    llm.add(*[tool_calls(("search_logs", {"text": "charge"})) for _ in range(3)], answer(GOOD))
    diagnosis, trace = reasoner(max_steps=4, max_calls_per_tool=2).investigate(context)
    assert diagnosis.reasoner == "llm"
    assert ["tools" in r for r in llm.requests] == [True, True, True, False]
    budget = envelope(tool_messages(llm.requests[3])[2])
    assert budget == {"status": "error", "error": "budget: search_logs was called 2 times already"}
    assert trace["outcome"] == "answered"


def test_a_spent_token_budget_makes_the_next_call_the_last(
    llm: ScriptedLLM, reasoner: Build, context: IncidentContext
) -> None:
    llm.add(tool_calls(("recent_changes", {}), usage=(5000, 100)), answer(GOOD))
    diagnosis, _ = reasoner(max_tokens=5000).investigate(context)
    assert diagnosis.reasoner == "llm"
    assert ["tools" in r for r in llm.requests] == [True, False]
    assert llm.requests[0]["max_completion_tokens"] == 2000


def test_an_invalid_answer_gets_one_repair_turn(llm: ScriptedLLM, reasoner: Build, context: IncidentContext) -> None:
    llm.add(answer("The root cause is probably cart."), answer(f"```json\n{json.dumps(GOOD)}\n```"))
    diagnosis, trace = reasoner().investigate(context)
    assert diagnosis.reasoner == "llm"
    assert diagnosis.hypotheses[0].entity == CART
    repair = llm.requests[1]["messages"][-1]
    assert repair["role"] == "user"
    assert "not valid" in repair["content"]
    assert "not JSON" in repair["content"]
    assert "tools" not in llm.requests[1]
    assert trace["outcome"] == "repaired"
    assert trace["failure"].startswith("invalid answer, repaired")


def test_no_repair_turn_once_the_token_budget_is_spent(
    llm: ScriptedLLM, reasoner: Build, context: IncidentContext
) -> None:
    llm.add(answer("The root cause is probably cart.", usage=(5000, 100)), answer(GOOD))
    diagnosis, trace = reasoner(max_tokens=5000).investigate(context)
    assert diagnosis.reasoner == "graph"
    assert diagnosis.fallback is not None
    assert "no tokens left for a repair turn" in diagnosis.fallback
    assert trace["outcome"] == "fallback"
    assert len(llm.requests) == 1


@pytest.mark.parametrize(
    "second",
    [
        pytest.param(answer("still prose"), id="prose-twice"),
        pytest.param(
            answer(
                {"hypotheses": [{"entity": CART, "kind": "service", "fault_class": "cosmic_rays", "confidence": 2}]}
            ),
            id="schema-twice",
        ),
    ],
)
def test_an_answer_still_invalid_after_the_repair_falls_back_to_the_graph_reasoner(
    llm: ScriptedLLM, reasoner: Build, context: IncidentContext, second: Reply
) -> None:
    llm.add(answer({"hypotheses": []}), second)
    failed: list[str] = []
    r = reasoner()
    r.failed = failed.append
    diagnosis, trace = r.investigate(context)
    expected = GraphReasoner().diagnose(context)
    assert diagnosis.reasoner == "graph"
    assert diagnosis.hypotheses == expected.hypotheses
    assert diagnosis.fallback is not None
    assert diagnosis.fallback.startswith("BadAnswer")
    assert trace["outcome"] == "fallback"
    assert trace["failure"] == diagnosis.fallback
    assert failed == ["BadAnswer"]
    assert r.failures["BadAnswer"] == 1
    assert len(llm.requests) == 2


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


@pytest.mark.parametrize(
    ("reply", "settings", "reason"),
    [
        pytest.param(None, {"base_url": closed_port_url()}, "unreachable", id="endpoint-down"),
        pytest.param(
            Reply({"error": {"message": "slow down", "type": "rate_limit"}}, 429, headers={"retry-after": "0"}),
            {},
            "status 429",
            id="rate-limited",
        ),
        pytest.param(Reply({"error": {"message": "boom"}}, 503), {}, "status 503", id="server-error"),
        pytest.param(Reply(answer(GOOD).body, delay_s=1.5), {"request_timeout_s": 0.3}, "timeout", id="timeout"),
        pytest.param(Reply({"surprise": True}), {}, "malformed response", id="not-a-completion"),
        pytest.param(Reply({"choices": []}), {}, "malformed response", id="no-choices"),
    ],
)
def test_an_endpoint_that_fails_leaves_the_graph_reasoners_answer_recorded_and_counted(
    llm: ScriptedLLM,
    reasoner: Build,
    context: IncidentContext,
    reply: Reply | None,
    settings: dict[str, Any],
    reason: str,
) -> None:
    if reply is not None:
        llm.add(reply)
    r = reasoner(**settings)
    diagnosis, trace = r.investigate(context)
    assert diagnosis.reasoner == "graph"
    assert diagnosis.hypotheses == GraphReasoner().diagnose(context).hypotheses
    assert diagnosis.fallback is not None
    assert diagnosis.fallback.startswith(f"Unavailable: {reason} (")
    assert trace["outcome"] == "fallback"
    assert trace["steps"][-1]["error"] == reason
    assert r.failures == {"Unavailable": 1}


def test_a_tool_call_without_a_function_is_an_error_envelope_not_a_crash(
    llm: ScriptedLLM, reasoner: Build, context: IncidentContext
) -> None:
    broken = {"role": "assistant", "content": None, "tool_calls": [{"id": "call_9", "type": "function"}]}
    llm.add(Reply(completion(broken, "tool_calls")), answer(GOOD))
    diagnosis, _ = reasoner().investigate(context)
    assert diagnosis.reasoner == "llm"
    assert envelope(tool_messages(llm.requests[1])[0])["error"].startswith("no tool ''")


def test_a_passed_deadline_ends_in_the_graph_reasoners_answer(
    llm: ScriptedLLM, reasoner: Build, context: IncidentContext
) -> None:
    llm.add(Reply(tool_calls(("recent_changes", {})).body, delay_s=0.3), answer(GOOD))
    diagnosis, trace = reasoner(deadline_s=0.2).investigate(context)
    assert diagnosis.reasoner == "graph"
    assert trace["failure"].startswith("OverBudget: deadline of 0.2 s passed")
    assert len(llm.requests) == 1
