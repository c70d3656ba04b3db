"""Rootward's own HTTP endpoint: Prometheus ``/metrics``, ``/healthz`` (alive), ``/readyz`` (taking data), and
``/api/v1/topology`` (the live graph as JSON). Later stages add their queries (incidents, approvals) here.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from rootward.telemetry import Telemetry
from rootward.topology import TopologyGraph


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

    async def graph(_: Request) -> Response:
        if topology is None:
            return JSONResponse({"message": "no topology in this process"}, status_code=404)
        return JSONResponse(topology.snapshot())

    return Starlette(
        routes=[
            Route("/metrics", metrics),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/api/v1/topology", graph),
        ]
    )
