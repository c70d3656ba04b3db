"""Who is calling the API: the operator bearer tokens of ``policies.approvals.tokens`` (name -> token, compared in
constant time) for the writes (approvals, the brake, acknowledge, silence, resolve, a new diagnosis, which may cost
an LLM call), and with ``api.reads: token`` those and the read-only ``api.readers`` for every read of the API's data
(:class:`ReadGuard`). Without tokens configured, a loopback client that addressed the API by a loopback name (the CLI
in the pod, a port-forward) is "local" and may do both."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

#: Clients that may write without a token when no tokens are configured: the local CLI, a port-forward.
LOOPBACK = frozenset({"127.0.0.1", "::1"})


def approver(tokens: Mapping[str, str], header: str | None) -> str | None:
    """The name whose token is in the ``Authorization: Bearer`` header (the scheme in any case, RFC 7235, as the
    receiver takes it), or None (compared in constant time)."""
    scheme, _, credentials = (header or "").strip(" \t").partition(" ")
    if scheme.lower() != "bearer":
        return None
    given = credentials.strip(" \t").encode()
    found = None
    for name, token in tokens.items():
        if token and given and hmac.compare_digest(given, token.encode()):
            found = name
    return found


def writer(tokens: Mapping[str, str], request: Request) -> str | Response:
    """Who may write: with tokens configured, the name of the one presented (else 401); without, any loopback client
    ("local") that addressed the API by a loopback name, and nobody else (403: an API reachable in the cluster must
    not let anyone silence incidents). A browser's cross-site write (its Origin is not the API's own host) is refused
    either way, and so is a loopback write to a foreign Host name (DNS rebinding of a port-forward)."""
    origin = request.headers.get("origin")
    host = request.headers.get("host", "")
    if origin is not None and urlsplit(origin).netloc != host:
        return JSONResponse({"message": f"cross-origin write from {origin!r} refused"}, status_code=403)
    return _caller(tokens, request, "writes")


def reader(tokens: Mapping[str, str], request: Request) -> str | Response:
    """Who may read (``api.reads: token``): as :func:`writer`, with the readers' tokens beside the operators', and
    no Origin check (a read changes nothing, and without CORS headers no other site's script sees the answer)."""
    return _caller(tokens, request, "reads")


def _caller(tokens: Mapping[str, str], request: Request, what: str) -> str | Response:
    """The name of the token presented (else 401) when tokens are configured; without, "local" for a loopback
    client that addressed a loopback name, else 403."""
    if tokens:
        who = approver(tokens, request.headers.get("authorization"))
        if who is None:
            setting = "policies.approvals.tokens" if what == "writes" else "api.readers or policies.approvals.tokens"
            return JSONResponse(
                {"message": f"a valid bearer token ({setting}) is required"},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="rootward"'},
            )
        return who
    client = request.client.host if request.client is not None else None
    if client in LOOPBACK and _loopback_name(request.headers.get("host", "")):
        return "local"
    setting = "policies.approvals.tokens" if what == "writes" else "api.readers"
    return JSONResponse({"message": f"{what} from other hosts need {setting} (none are configured)"}, status_code=403)


#: Routes that check :func:`writer` on reads too (an operator's token, or the pod itself for the brake): the read
#: guard leaves them to it, so that a reader's token gets their answer and the brake's status reads from the pod.
OPERATORS_ONLY = ("/api/v1/approvals", "/api/v1/actions/", "/api/v1/audit")


class ReadGuard:
    """ASGI middleware for ``api.reads: token``: a GET or HEAD of ``/api/v1/...`` (but the OpenAPI document, which
    holds no data, and :data:`OPERATORS_ONLY`, stricter themselves) needs :func:`reader`'s consent; everything else
    passes to the routes, whose writes check :func:`writer` themselves. /metrics, /healthz, /readyz and the page's
    files stay open (Prometheus, the kubelet, a browser that has not pasted its token yet)."""

    def __init__(self, app: ASGIApp, tokens: Mapping[str, str]) -> None:
        self.app, self.tokens = app, tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] in ("GET", "HEAD")
            and scope["path"].startswith("/api/v1/")
            and scope["path"] != "/api/v1/openapi.json"
            and not scope["path"].startswith(OPERATORS_ONLY)
        ):
            who = reader(self.tokens, Request(scope))
            if isinstance(who, Response):
                await who(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _loopback_name(host: str) -> bool:
    """Whether a Host header names this machine's loopback (with or without a port)."""
    name = urlsplit("//" + host).hostname or ""
    return name in ("localhost", "127.0.0.1", "::1")
