"""The reasoning trace of one LLM investigation, and its OpenTelemetry spans.

The trace is what a human (an approver, a reviewer after the fact) needs to judge the diagnosis: every message sent
(already redacted: the trace never holds what was not allowed to leave), each model turn with its tool calls,
tokens and time, each tool call with its arguments, status and a bounded summary of its result, how it ended
(answered, repaired, or the graph reasoner's answer after a failure, and why). It is stored with the incident
(``Incident.trace``, served by ``GET /api/v1/incidents/{id}/trace``) and replays offline (agent/scripted.py).

The same steps are emitted as spans following the OpenTelemetry GenAI semantic conventions, so the agent shows in
the tracing backends teams already use: ``invoke_agent`` around the investigation, one ``chat <model>`` span per
model call (``gen_ai.usage.input_tokens`` / ``output_tokens``) and one ``execute_tool <name>`` span per tool call.
Message contents are not put on spans (they can be large; the stored trace has them).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace as otel

#: Characters of a tool result kept in the trace's step summary (the full, bounded result is in ``messages``).
SUMMARY_CHARS = 500


@dataclass
class ReasoningTrace:
    incident: str
    model: str
    started: float
    """Wall-clock start (Unix seconds)."""
    steps: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    outcome: str = "running"
    """answered, repaired, or fallback."""
    failure: str | None = None
    """Why the graph reasoner's answer was used (``fallback``), or what was wrong before a repair."""
    dropped: list[str] = field(default_factory=list)
    """What the model said that was not taken (hypotheses or an action outside the incident's scope)."""
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    duration_s: float = 0.0
    redactions: dict[str, int] = field(default_factory=dict)

    def model_step(
        self, step: int, message: dict[str, Any], finish: str | None, tokens: tuple[int, int], seconds: float
    ) -> None:
        self.input_tokens += tokens[0]
        self.output_tokens += tokens[1]
        calls = [
            {
                "id": c.get("id", ""),
                "name": (c.get("function") or {}).get("name", ""),
                "arguments": (c.get("function") or {}).get("arguments", ""),
            }
            for c in message.get("tool_calls") or []
        ]
        self.steps.append({
            "type": "model", "step": step, "content": message.get("content"), "tool_calls": calls,
            "finish_reason": finish, "input_tokens": tokens[0], "output_tokens": tokens[1],
            "duration_s": round(seconds, 4),
        })  # fmt: skip

    def tool_step(
        self, step: int, call_id: str, name: str, arguments: Any, status: str, result: str, seconds: float
    ) -> None:
        self.steps.append({
            "type": "tool", "step": step, "id": call_id, "name": name, "arguments": arguments, "status": status,
            "result": result[:SUMMARY_CHARS], "duration_s": round(seconds, 4),
        })  # fmt: skip

    def error_step(self, step: int, kind: str, detail: str) -> None:
        self.steps.append({"type": "error", "step": step, "error": kind, "detail": detail[:SUMMARY_CHARS]})

    def as_json(self) -> dict[str, Any]:
        return {
            "incident": self.incident,
            "model": self.model,
            "started": self.started,
            "outcome": self.outcome,
            "failure": self.failure,
            "dropped": self.dropped,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost": round(self.cost, 6),
            "duration_s": round(self.duration_s, 4),
            "redactions": self.redactions,
            "steps": self.steps,
            "messages": self.messages,
        }


class Spans:
    """GenAI spans through an OpenTelemetry tracer (the global provider's unless one is given)."""

    def __init__(self, model: str, server: str, tracer_provider: Any = None) -> None:
        self.model, self.server = model, server
        self.tracer = otel.get_tracer("rootward.agent", tracer_provider=tracer_provider)

    @contextmanager
    def agent(self, incident: str) -> Iterator[Any]:
        attributes = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "rootward",
                      "gen_ai.request.model": self.model, "gen_ai.provider.name": "openai",
                      "rootward.incident.id": incident}  # fmt: skip
        with self.tracer.start_as_current_span("invoke_agent rootward", attributes=attributes) as span:
            yield span

    @contextmanager
    def chat(self) -> Iterator[Any]:
        attributes = {"gen_ai.operation.name": "chat", "gen_ai.request.model": self.model,
                      "gen_ai.provider.name": "openai", "server.address": self.server}  # fmt: skip
        with self.tracer.start_as_current_span(f"chat {self.model}", kind=otel.SpanKind.CLIENT,
                                               attributes=attributes) as span:  # fmt: skip
            yield span

    @contextmanager
    def tool(self, name: str, call_id: str) -> Iterator[Any]:
        attributes = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name,
                      "gen_ai.tool.call.id": call_id, "gen_ai.tool.type": "function"}  # fmt: skip
        with self.tracer.start_as_current_span(f"execute_tool {name}", attributes=attributes) as span:
            yield span


def usage_attributes(span: Any, response_id: str, model: str, finish: str | None, tokens: tuple[int, int]) -> None:
    """The response's GenAI attributes on a ``chat`` span."""
    span.set_attribute("gen_ai.response.id", response_id)
    span.set_attribute("gen_ai.response.model", model)
    span.set_attribute("gen_ai.response.finish_reasons", [finish or "unknown"])
    span.set_attribute("gen_ai.usage.input_tokens", tokens[0])
    span.set_attribute("gen_ai.usage.output_tokens", tokens[1])


def now() -> float:
    """Wall-clock seconds (a trace's start is a real time, whatever clock the pipeline runs on)."""
    return time.time()
