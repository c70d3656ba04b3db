"""Rootward's own HTTP endpoint: Prometheus ``/metrics``, ``/healthz`` (alive), ``/readyz`` (taking data), and
the topology queries. Later stages add theirs (incidents, approvals) here.

    GET /api/v1/topology?namespace=&kind=&format=json|dot|cytoscape   the whole graph, or a filtered part
    GET /api/v1/entity?id=service:shop/cart                           one entity with its edges
    GET /api/v1/subgraph?id=&depth=2&direction=both&edges=calls&format=   the neighbourhood of an entity
    GET /api/v1/paths?from=&to=&edges=calls                           call paths between two entities
    GET /api/v1/blast-radius?id=&direction=upstream|downstream        who feels a failure / what it needs
    GET /api/v1/diff?from=T1&to=T2&namespace=&kind=&id=&depth=&direction=&edges=   what changed from T1 to T2
    GET /api/v1/incidents?status=open|resolved&limit=50&offset=0       incidents, newest first
    GET /api/v1/incidents/{id}                                        one, with its anomalies and candidates
    POST /api/v1/incidents/{id}/acknowledge | /silence?for_s=3600 | /resolve
    GET /api/v1/incidents/{id}/diagnosis | /trace                      its diagnosis; the LLM's reasoning trace
    POST /api/v1/incidents/{id}/diagnose?llm=true                     diagnose it again now (waits for the answer)
    GET|POST /api/v1/approvals..., GET /api/v1/actions/{request_id}   approvals of actions (rootward/api_actions.py)
    GET /api/v1/openapi.json                                          all of the above as OpenAPI 3.1
    GET /, /incidents/{id}, ...                                       the web page over this API (rootward/page.py)

Reads are open unless ``api.reads: token`` (rootward/auth.py ReadGuard: a reader's or an operator's bearer token);
writes always want an operator's token, or the pod's own loopback when none are configured (rootward/auth.py).

Time travel: each of the first five takes ``at=T`` (RFC 3339 with an offset, ``2024-05-01T12:00:00Z``, or unix
seconds) and answers from the graph as of the last checkpoint at or before T, adding ``"as_of"`` (that checkpoint's
unix time) to JSON answers. ``/api/v1/diff`` compares the graphs as of ``from`` and ``to`` (default: now): entities
and edges added and removed, entities whose attributes changed, and each call edge's RED over the interval; its
filters are those of ``/topology`` (namespace, kind) or of ``/subgraph`` (id, depth, direction, edges).

Bad parameters (a time that is neither, ``from`` after ``to``) get 400 with a message; unknown entity ids 404; a
time before the oldest checkpoint, or time travel with ``topology.history.enabled=false``, 404 with a message
naming the oldest time there is (not an empty graph, which would read as "nothing existed then"); a history that
cannot be read, 503.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, cast

import networkx as nx
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import QueryParams
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from rootward.agent.schema import Diagnosis
from rootward.auth import OPERATORS_ONLY, ReadGuard, writer
from rootward.clock import Clock, SystemClock
from rootward.config import Approvals as ApprovalSettings
from rootward.detector.incidents import Incidents
from rootward.openapi import SPEC
from rootward.page import page_routes
from rootward.storage import StorageError
from rootward.telemetry import Telemetry
from rootward.topology import TopologyGraph, queries
from rootward.topology.history import History, NoHistory
from rootward.topology.queries import QueryError, UnknownEntity

if TYPE_CHECKING:  # the executor (and the kubernetes client) are loaded only when the app has one
    from rootward.actions import Executor


def build_api(
    telemetry: Telemetry,
    health: Callable[[], dict[str, object]],
    topology: TopologyGraph | None = None,
    history: History | None = None,
    incidents: Incidents | None = None,
    clock: Clock | None = None,
    executor: Executor | None = None,
    approvals: ApprovalSettings | None = None,
    diagnose: Callable[[str, bool], Diagnosis | None] | None = None,
    stored_trace: Callable[[str], Any] | None = None,
    series: Callable[[str, str, int], tuple[float, ...]] | None = None,
    readers: Mapping[str, str] | None = None,
) -> Starlette:
    """The API app. ``health()`` returns ``{"alive": bool, "ready": bool, ...details}``; ``history`` (when the
    topology history is on) answers ``at=`` and ``/api/v1/diff``; ``incidents`` serves ``/api/v1/incidents``;
    ``diagnose(incident id, llm)`` re-diagnoses one (it raises LookupError when the LLM is asked for and missing);
    ``series(entity, signal, n)`` gives a series' last ``n`` values for an incident's page; ``readers`` (the tokens
    of ``api.reads: token``, rootward/auth.py ReadGuard) close the reads to everyone else."""

    async def openapi(_: Request) -> Response:
        return JSONResponse(SPEC)

    async def metrics(_: Request) -> Response:
        return Response(telemetry.exposition(), media_type=CONTENT_TYPE_LATEST)

    async def healthz(_: Request) -> Response:
        state = health()
        return JSONResponse(state, status_code=200 if state["alive"] else 503)

    async def readyz(_: Request) -> Response:
        state = health()
        return JSONResponse(state, status_code=200 if state["ready"] else 503)

    def past() -> History:
        if history is None:
            raise NoHistory("time travel needs the topology history (topology.history.enabled=true)")
        return history

    def query(run: Callable[[nx.MultiDiGraph[str], QueryParams], Any]) -> Callable[[Request], Awaitable[Response]]:
        """A topology endpoint: runs ``run`` on the live graph held still, or with ``at=`` on the graph as of then
        (read from disk in a worker thread)."""

        def live(params: QueryParams) -> Any:
            assert topology is not None
            with topology.read() as g:
                return run(g, params)

        def as_of(params: QueryParams) -> Any:
            graph, t = past().graph_at(queries.parse_time(params["at"]))
            result = run(graph, params)
            return {**result, "as_of": t} if isinstance(result, dict) else result

        async def endpoint(request: Request) -> Response:
            params = request.query_params
            if topology is None:
                return JSONResponse({"message": "no topology in this process"}, status_code=404)
            if "at" in params:
                return await _answer(run_in_threadpool, as_of, params)
            return await _answer(_inline, live, params)

        return endpoint

    async def diff(request: Request) -> Response:
        return await _answer(run_in_threadpool, _diff, past, request.query_params)

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
            Route("/api/v1/diff", diff),
            Route("/api/v1/openapi.json", openapi),
            *(
                _incident_routes(
                    incidents, clock or SystemClock(), diagnose, _tokens(approvals), stored_trace, topology, series
                )
                if incidents is not None
                else []
            ),
            *(_approval_routes(executor, approvals or ApprovalSettings()) if executor is not None else []),
            *page_routes(),  # the web page (rootward/page.py): not API, so not in the OpenAPI document
        ],
        middleware=[Middleware(ReadGuard, tokens=readers)] if readers is not None else [],
        exception_handlers={404: partial(_not_found, acting=executor is not None)},
    )


async def _not_found(request: Request, exc: Exception, acting: bool) -> Response:
    """A 404 that says why: the routes of the acting part on a Rootward without it, else the path."""
    path = request.url.path
    detail = getattr(exc, "detail", None)
    if not acting and path.startswith(OPERATORS_ONLY):
        message = ("actions are off on this Rootward (actions.enabled is false): approvals, the brake and the audit "
                   "log are on the Rootward that acts")  # fmt: skip
    elif isinstance(detail, str) and detail != "Not Found":
        message = detail
    else:
        message = f"no such route: {path[:200]}"
    return JSONResponse({"message": message}, status_code=404)


def _approval_routes(executor: Executor, settings: ApprovalSettings) -> list[Route]:
    """``/api/v1/approvals``, ``/api/v1/actions`` and the Slack callback (rootward/api_actions.py)."""
    from rootward.api_actions import approval_routes

    return approval_routes(executor, settings)


def _tokens(approvals: ApprovalSettings | None) -> dict[str, str]:
    return {name: t.get_secret_value() for name, t in approvals.tokens.items()} if approvals is not None else {}


def _incident_routes(
    incidents: Incidents,
    clock: Clock,
    diagnose: Callable[[str, bool], Diagnosis | None] | None = None,
    tokens: Mapping[str, str] | None = None,
    stored_trace: Callable[[str], Any] | None = None,
    topology: TopologyGraph | None = None,
    series: Callable[[str, str, int], tuple[float, ...]] | None = None,
) -> list[Route]:
    """``GET /api/v1/incidents?status=open|resolved&limit=50&offset=0``,
    ``GET /api/v1/incidents/{id}?depth=1&window=30`` (with the subgraph around its entities and each anomalous
    series' last ``window`` values), and
    ``POST /api/v1/incidents/{id}/acknowledge``, ``/silence?for_s=3600``, ``/resolve``; the diagnosis, the
    reasoning trace, and a new diagnosis on request. The POSTs are writes (rootward/auth.py: an operator token, or a
    loopback client when none is configured)."""
    tokens = tokens or {}

    def field(
        name: str, missing: str, stored: Callable[[str], Any] | None = None
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            incident = incidents.get(request.path_params["id"])
            if incident is None:
                return JSONResponse({"message": f"no incident {request.path_params['id']!r}"}, status_code=404)
            value = getattr(incident, name)
            if value is None and stored is not None:
                value = await run_in_threadpool(stored, incident.id)
            if value is None:
                return JSONResponse({"message": f"incident {incident.id!r} has {missing}"}, status_code=404)
            return JSONResponse(value)

        return endpoint

    async def again(request: Request) -> Response:
        if isinstance(who := writer(tokens, request), Response):
            return who
        incident_id, llm = request.path_params["id"], request.query_params.get("llm", "false").lower() == "true"
        if diagnose is None:
            return JSONResponse({"message": "no diagnoser in this process (agent.enabled)"}, status_code=409)
        try:
            diagnosis = await run_in_threadpool(diagnose, incident_id, llm)
        except LookupError as e:
            return JSONResponse({"message": str(e)}, status_code=409)
        if diagnosis is None:
            return JSONResponse({"message": f"no incident {incident_id!r}"}, status_code=404)
        return JSONResponse(diagnosis.model_dump(mode="json", exclude_none=True))

    async def listing(request: Request) -> Response:
        p = request.query_params
        status = p.get("status")
        if status not in (None, "open", "resolved"):
            return JSONResponse({"message": f"status must be open or resolved, not {status!r}"}, status_code=400)
        limit, offset = bounded_int(p, "limit", 50, 1, 1000), bounded_int(p, "offset", 0, 0, 10**6)
        if isinstance(limit, Response) or isinstance(offset, Response):
            return limit if isinstance(limit, Response) else offset  # type: ignore[return-value]
        found = incidents.listed(status)
        with incidents.held():  # the pipeline thread updates them
            page = [i.as_json() for i in found[offset : offset + limit]]
        return JSONResponse({"total": len(found), "incidents": page})

    async def one(request: Request) -> Response:
        incident = incidents.get(request.path_params["id"])
        if incident is None:
            return JSONResponse({"message": f"no incident {request.path_params['id']!r}"}, status_code=404)
        p = request.query_params
        depth, window = bounded_int(p, "depth", 1, 0, 3), bounded_int(p, "window", 30, 1, 360)
        if isinstance(depth, Response) or isinstance(window, Response):
            return depth if isinstance(depth, Response) else window  # type: ignore[return-value]
        with incidents.held():  # the pipeline thread updates it
            body = incident.as_json()
            entities = list(incident.first_seen)
            strongest = sorted(incident.anomalies.values(), key=lambda a: -abs(a.score))[:MAX_SERIES]
        if topology is not None:
            with topology.read() as g:
                body["subgraph"] = queries.incident_subgraph(g, entities, depth)
        if series is not None:
            found = [(a.entity, a.signal, series(a.entity, a.signal, window)) for a in strongest]
            body["series"] = [{"entity": e, "signal": s, "values": list(v)} for e, s, v in found if v]
        return JSONResponse(body)

    async def act(request: Request) -> Response:
        if isinstance(who := writer(tokens, request), Response):
            return who
        incident_id, action = request.path_params["id"], request.path_params["action"]
        if action == "acknowledge":
            incident = incidents.acknowledge(incident_id)
        elif action == "resolve":
            incident = incidents.resolve(incident_id, clock.now())
        elif action == "silence":
            seconds = bounded_int(request.query_params, "for_s", 3600, 1, 30 * 86400)
            if isinstance(seconds, Response):
                return seconds
            incident = incidents.silence(incident_id, clock.now() + seconds)
        else:
            return JSONResponse({"message": f"unknown action {action!r}"}, status_code=404)
        if incident is None:
            return JSONResponse({"message": f"no incident {incident_id!r}"}, status_code=404)
        return JSONResponse(incident.as_json())

    return [
        Route("/api/v1/incidents", listing),
        Route("/api/v1/incidents/{id}", one),
        Route("/api/v1/incidents/{id}/diagnosis", field("diagnosis", "no diagnosis yet")),
        Route(
            "/api/v1/incidents/{id}/trace",
            field("trace", "no reasoning trace (the graph reasoner's diagnosis)", stored_trace),
        ),
        Route("/api/v1/incidents/{id}/diagnose", again, methods=["POST"]),
        Route("/api/v1/incidents/{id}/{action}", act, methods=["POST"]),
    ]


#: The most series an incident's page returns.
MAX_SERIES = 100


def bounded_int(params: QueryParams, name: str, default: int, low: int, high: int) -> int | Response:
    """Query parameter ``name`` as an integer in ``low..high`` (``default`` when absent), else a 400 saying so."""
    raw = params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        return JSONResponse({"message": f"{name} must be an integer in {low}..{high}, not {raw!r}"}, status_code=400)
    return value


async def _inline(fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn`` on the event loop: the live graph's queries, which hold the graph (and the pipeline) only
    for as long as they compute, and do no I/O."""
    return fn(*args)


async def _answer(call: Callable[..., Awaitable[Any]], fn: Callable[..., Any], *args: Any) -> Response:
    """``await call(fn, *args)`` as a response: JSON, or DOT text; the query errors as 400 / 404 / 503."""
    try:
        result = await call(fn, *args)
    except (UnknownEntity, NoHistory) as e:
        return JSONResponse({"message": str(e)}, status_code=404)
    except QueryError as e:
        return JSONResponse({"message": str(e)}, status_code=400)
    except StorageError as e:
        return JSONResponse({"message": str(e)}, status_code=503)
    if isinstance(result, str):
        return PlainTextResponse(result, media_type="text/vnd.graphviz")
    return JSONResponse(result)


def _diff(past: Callable[[], History], p: QueryParams) -> dict[str, Any]:
    history = past()
    start = queries.parse_time(_required(p, "from"), "from")
    end = queries.parse_time(p["to"], "to") if p.get("to") else history.clock.now()
    if start > end:
        raise QueryError(f"from ({queries.format_time(start)}) is after to ({queries.format_time(end)})")
    before, t1 = history.graph_at(start)
    after, t2 = history.graph_at(end)
    direction = cast(queries.Direction, p.get("direction", "both"))  # checked by queries.diff
    data = queries.diff(
        before,
        after,
        namespace=p.get("namespace"),
        kind=p.get("kind"),
        around=p.get("id"),
        depth=_int(p, "depth", 2),
        direction=direction,
        kinds=_kinds(p),
        seconds=t2 - t1,
    )
    return {"from": start, "to": end, "as_of": {"from": t1, "to": t2}, **data}


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
