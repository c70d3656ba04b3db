"""Who is calling the API's write endpoints: the operator bearer tokens of ``policies.approvals.tokens`` (name ->
token, compared in constant time), shared by approvals and by the incident writes (acknowledge, silence, resolve,
a new diagnosis, which may cost an LLM call)."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

#: Clients that may write without a token when no tokens are configured: the local CLI, a port-forward.
LOOPBACK = frozenset({"127.0.0.1", "::1"})


def approver(tokens: Mapping[str, str], header: str | None) -> str | None:
    """The name whose token is in the ``Authorization: Bearer`` header, or None (compared in constant time)."""
    if not header or not header.startswith("Bearer "):
        return None
    given = header[len("Bearer ") :].strip(" \t").encode()
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
    if tokens:
        who = approver(tokens, request.headers.get("authorization"))
        if who is None:
            return JSONResponse(
                {"message": "a valid bearer token (policies.approvals.tokens) is required"},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="rootward"'},
            )
        return who
    if request.client is not None and request.client.host in LOOPBACK and _loopback_name(host):
        return "local"
    return JSONResponse(
        {"message": "writes from other hosts need policies.approvals.tokens (none are configured)"}, status_code=403
    )


def _loopback_name(host: str) -> bool:
    """Whether a Host header names this machine's loopback (with or without a port)."""
    name = urlsplit("//" + host).hostname or ""
    return name in ("localhost", "127.0.0.1", "::1")
