"""Rootward's own HTTP endpoint: Prometheus ``/metrics``, ``/healthz`` (alive), ``/readyz`` (taking data), and
the topology queries. Later stages add theirs (incidents, approvals) here.

    GET /api/v1/topology?namespace=&kind=&format=json|dot|cytoscape   the whole graph, or a filtered part
    GET /api/v1/entity?id=service:shop/cart                           one entity with its edges
    GET /api/v1/subgraph?id=&depth=2&direction=both&edges=calls&format=   the neighbourhood of an entity
    GET /api/v1/paths?from=&to=&edges=calls                           call paths between two entities
    GET /api/v1/blast-radius?id=&direction=upstream|downstream        who feels a failure / what it needs

Bad parameters get 400 with a message; unknown entity ids 404.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import networkx as nx
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from rootward.telemetry import Telemetry
from rootward.topology import TopologyGraph, queries
from rootward.topology.queries import QueryError, UnknownEntity


def build_api(
    telemetry: Telemetry, health: Callable[[], dict[str, object]], topology: TopologyGraph | None = None
) -> Starlette:
    """The API app. ``health()`` returns ``{"alive": bool, "ready": bool, ...details}``."""

    async def metrics(_: Request) -> Response:
        return Response(telemetry.exposition(), media_type=CONTENT_TYPE_LATEST)

    async def healthz(_: Request) -> Response:
        state = health()
        return JSONResponse(state, status_code=200 if state["alive"] else 503)

    async def readyz(_: Request) -> Response:
        state = health()
        return JSONResponse(state, status_code=200 if state["ready"] else 503)

    def query(run: Callable[[nx.MultiDiGraph[str], QueryParams], Any]) -> Callable[[Request], Awaitable[Response]]:
        """A topology endpoint: runs ``run`` on the graph held still; QueryError -> 400, UnknownEntity -> 404."""

        async def endpoint(request: Request) -> Response:
            if topology is None:
                return JSONResponse({"message": "no topology in this process"}, status_code=404)
            try:
                with topology.read() as g:
                    result = run(g, request.query_params)
            except UnknownEntity as e:
                return JSONResponse({"message": str(e)}, status_code=404)
            except QueryError as e:
                return JSONResponse({"message": str(e)}, status_code=400)
            if isinstance(result, str):
                return PlainTextResponse(result, media_type="text/vnd.graphviz")
            return JSONResponse(result)

        return endpoint

    return Starlette(
        routes=[
            Route("/metrics", metrics),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/api/v1/topology", query(_whole)),
            Route("/api/v1/entity", query(lambda g, p: queries.entity(g, _required(p, "id")))),
            Route("/api/v1/subgraph", query(_subgraph)),
            Route(
                "/api/v1/paths",
                query(lambda g, p: queries.paths(g, _required(p, "from"), _required(p, "to"), _kinds(p, "calls"))),
            ),
            Route(
                "/api/v1/blast-radius",
                query(lambda g, p: queries.blast_radius(g, _required(p, "id"), p.get("direction", "upstream"))),  # type: ignore[arg-type]
            ),
        ]
    )


def _required(params: QueryParams, name: str) -> str:
    value = params.get(name)
    if not value:
        raise QueryError(f"the query parameter {name!r} is required")
    return value


def _kinds(params: QueryParams, default: str | None = None) -> frozenset[str]:
    return queries.edge_kinds(params.get("edges", default))


def _int(params: QueryParams, name: str, default: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError as e:
        raise QueryError(f"{name} must be an integer, not {raw!r}") from e


def _formatted(data: dict[str, Any], params: QueryParams) -> Any:
    fmt = params.get("format", "json")
    if fmt == "json":
        return data
    if fmt == "dot":
        return queries.to_dot(data)
    if fmt == "cytoscape":
        return queries.to_cytoscape(data)
    raise QueryError(f"format must be json, dot or cytoscape, not {fmt!r}")


def _whole(g: nx.MultiDiGraph[str], p: QueryParams) -> Any:
    return _formatted(queries.whole(g, p.get("namespace"), p.get("kind")), p)


def _subgraph(g: nx.MultiDiGraph[str], p: QueryParams) -> Any:
    data = queries.subgraph(g, _required(p, "id"), _int(p, "depth", 2), p.get("direction", "both"), _kinds(p))  # type: ignore[arg-type]
    return _formatted(data, p)
