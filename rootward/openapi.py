"""The HTTP API described as OpenAPI 3.1, served at ``/api/v1/openapi.json`` (tests check that every route of the
app is described here and that the examples in it answer). The web page's routes (rootward/page.py) serve HTML,
not the API, and are left out."""

from __future__ import annotations

from typing import Any

from rootward._version import __version__

_ID = {"name": "id", "in": "query", "required": True, "schema": {"type": "string"}, "example": "service:shop/cart"}
_AT = {
    "name": "at",
    "in": "query",
    "schema": {"type": "string"},
    "description": "Time travel: RFC 3339 with an offset (2024-05-01T12:00:00Z) or unix seconds; the answer is the "
    "graph as of the last checkpoint at or before it (needs topology.history.enabled).",
}
_FORMAT = {"name": "format", "in": "query", "schema": {"enum": ["json", "dot", "cytoscape"], "default": "json"}}
_EDGES = {
    "name": "edges",
    "in": "query",
    "schema": {"type": "string"},
    "description": "Comma-separated edge kinds: calls, instance_of, owned_by, runs_on, in, backed_by.",
}
_DIRECTION = {"name": "direction", "in": "query", "schema": {"enum": ["in", "out", "both"], "default": "both"}}
_DEPTH = {"name": "depth", "in": "query", "schema": {"type": "integer", "minimum": 0, "default": 2}}
_FILTERS = [
    {"name": "namespace", "in": "query", "schema": {"type": "string"}},
    {"name": "kind", "in": "query", "schema": {"type": "string"}, "example": "service"},
]
_ERRORS = {
    "400": {"description": "A bad parameter; the message says which."},
    "404": {"description": "An unknown entity id, or a time with no history."},
}
_GRAPH = {"description": "Entities and edges (JSON), DOT text, or Cytoscape JSON.", "content": {"application/json": {}}}
_INCIDENT_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}


def _get(summary: str, parameters: list[dict[str, Any]], ok: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"get": {"summary": summary, "parameters": parameters, "responses": {"200": ok or _GRAPH, **_ERRORS}}}


SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "Rootward API",
        "version": __version__,
        "description": "The live dependency graph, its history, and incidents. JSON unless asked otherwise. Writes, "
        "approvals and the audit log take an operator's bearer token (policies.approvals.tokens); with api.reads: "
        "token every GET under /api/v1/ but this document takes a reader's or an operator's (401 without).",
    },
    "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    # none, or a bearer token: which routes want one depends on the configuration (info.description says)
    "security": [{}, {"bearer": []}],
    "paths": {
        "/metrics": _get("Prometheus metrics", [], {"description": "text/plain exposition"}),
        "/healthz": _get("Liveness (200 while the receiver runs)", [], {"description": "state"}),
        "/readyz": _get("Readiness (503 while the pipeline queue is full)", [], {"description": "state"}),
        "/api/v1/openapi.json": _get("This document", [], {"description": "OpenAPI 3.1"}),
        "/api/v1/topology": _get("The whole graph, or a filtered part", [*_FILTERS, _FORMAT, _AT]),
        "/api/v1/entity": _get("One entity with its incoming and outgoing edges", [_ID, _AT]),
        "/api/v1/subgraph": _get("The neighbourhood of an entity", [_ID, _DEPTH, _DIRECTION, _EDGES, _FORMAT, _AT]),
        "/api/v1/paths": _get(
            "Paths between two entities",
            [
                {**_ID, "name": "from", "example": "service:/user"},
                {**_ID, "name": "to", "example": "service:shop/payment"},
                _EDGES,
                _AT,
            ],
        ),
        "/api/v1/blast-radius": _get(
            "Who feels a failure of an entity (upstream) or what it needs (downstream)",
            [_ID, {"name": "direction", "in": "query", "schema": {"enum": ["upstream", "downstream"]}}, _AT],
        ),
        "/api/v1/diff": _get(
            "What changed between two times: entities and edges added and removed, RED over the interval",
            [
                {"name": "from", "in": "query", "required": True, "schema": {"type": "string"}},
                {"name": "to", "in": "query", "schema": {"type": "string"}, "description": "Default: now."},
                *_FILTERS,
                {**_ID, "required": False},
                _DEPTH,
                _DIRECTION,
                _EDGES,
            ],
        ),
        "/api/v1/incidents": _get(
            "Incidents, newest first",
            [
                {"name": "status", "in": "query", "schema": {"enum": ["open", "resolved"]}},
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
                {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}},
            ],
            {"description": "{total, incidents: [...]}"},
        ),
        "/api/v1/incidents/{id}": _get(
            "One incident: candidates, entities, anomalies, the subgraph around its entities (depth hops, at most 200 "
            "entities) and each anomalous series' last values (window of them, the strongest 100 series)",
            [
                _INCIDENT_ID,
                {"name": "depth", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 3}},
                {"name": "window", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 360}},
            ],
            {"description": "the incident with subgraph {entities, edges, unknown, truncated} and series"},
        ),
        "/api/v1/incidents/{id}/diagnosis": _get(
            "Its latest diagnosis: ranked hypotheses with confidence and evidence (404 before the first)",
            [_INCIDENT_ID],
            {"description": "the diagnosis"},
        ),
        "/api/v1/incidents/{id}/trace": _get(
            "The LLM reasoner's reasoning trace of that diagnosis: messages sent (redacted), tool calls, tokens, "
            "timings, outcome (404 when the graph reasoner made it)",
            [_INCIDENT_ID],
            {"description": "the reasoning trace"},
        ),
        "/api/v1/incidents/{id}/diagnose": {
            "post": {
                "summary": "Diagnose the incident again now and return the diagnosis (llm=true: with the LLM reasoner)",
                "parameters": [_INCIDENT_ID, {"name": "llm", "in": "query", "schema": {"type": "boolean"}}],
                "responses": {
                    "200": {"description": "the diagnosis"},
                    "404": {"description": "no such incident"},
                    "409": {"description": "no diagnoser, or llm=true without agent.llm.enabled"},
                },
            }
        },
        "/api/v1/approvals": _get(
            "Approvals of actions, newest first, with request, diagnosis, blast radius, policy reasons and dry run "
            "(Authorization: Bearer <one of policies.approvals.tokens>)",
            [
                {
                    "name": "status",
                    "in": "query",
                    "schema": {"enum": ["pending", "approved", "rejected", "expired", "all"]},
                }
            ],
            {"description": "approvals"},
        ),
        "/api/v1/approvals/{id}": _get("One approval (bearer token)", [_INCIDENT_ID], {"description": "the approval"}),
        "/api/v1/approvals/{id}/{verb}": {
            "post": {
                "summary": "approve (202: the action runs now) or reject an approval; who decided is the token's name",
                "parameters": [
                    _INCIDENT_ID,
                    {"name": "verb", "in": "path", "required": True, "schema": {"enum": ["approve", "reject"]}},
                ],
                "responses": {
                    "200": {"description": "rejected"},
                    "202": {"description": "approved"},
                    "401": {"description": "no or a wrong token"},
                    "409": {"description": "already decided"},
                    "410": {"description": "expired"},
                },
            }
        },
        "/api/v1/actions/pause": {
            "get": {
                "summary": "whether actions are paused, by whom and why; the configured and the effective mode",
                "parameters": [],
                "responses": {"200": {"description": "{paused, mode, effective_mode}"}},
            },
            "post": {
                "summary": 'pause every action (body {"reason": "..."}): requests run as dry runs, approvals wait; '
                "on the Lease, so every Rootward honours it",
                "parameters": [],
                "responses": {"200": {"description": "paused"}, "503": {"description": "the Lease cannot be written"}},
            },
        },
        "/api/v1/actions/resume": {
            "post": {
                "summary": "end the pause",
                "parameters": [],
                "responses": {"200": {"description": "resumed"}, "503": {"description": "the Lease cannot be written"}},
            }
        },
        "/api/v1/actions/{request_id}": _get(
            "An action request's audit records so far (bearer token)",
            [{"name": "request_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            {"description": "audit records"},
        ),
        "/api/v1/audit": _get(
            "The audit log in order, a page at a time (bearer token); next: the after of the next page",
            [
                {"name": "after", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
            ],
            {"description": "{records, next}"},
        ),
        "/api/v1/audit/verify": _get(
            "The audit log's hash chain and MACs checked now (bearer token); 409 names the first broken record",
            [],
            {"description": "{ok, records, head, broken_seq, problem}"},
        ),
        "/api/v1/slack/interactions": {
            "post": {
                "summary": "Slack approve/reject buttons (verified with the signing secret, 5-minute window)",
                "parameters": [],
                "responses": {"200": {"description": "recorded"}, "401": {"description": "bad signature or stale"}},
            }
        },
        "/api/v1/incidents/{id}/{action}": {
            "post": {
                "summary": "acknowledge, silence (for_s seconds, default 3600) or resolve an incident",
                "parameters": [
                    _INCIDENT_ID,
                    {
                        "name": "action",
                        "in": "path",
                        "required": True,
                        "schema": {"enum": ["acknowledge", "silence", "resolve"]},
                    },
                    {"name": "for_s", "in": "query", "schema": {"type": "integer", "minimum": 1}},
                ],
                "responses": {"200": {"description": "the incident"}, **_ERRORS},
            }
        },
    },
}
