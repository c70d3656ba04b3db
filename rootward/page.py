"""The web page: one HTML page and its scripts and styles, served by the API app (rootward/api.py mounts these).

Why it lives in the API process: users run Rootward in air-gapped clusters, so the page must need nothing but the
port they already reach (no CDN, no build step, no second server), and Slack messages already link to
``<notifications.slack.page_url>/incidents/<id>``. The files are package data under ``rootward/web/`` (plain
HTML, ES modules and CSS); the page reads the JSON API like any other client, so it adds no endpoint of its own.

    GET /                    the page, showing the topology graph
    GET /incidents           the page, showing the incidents
    GET /incidents/{id}      the page, showing one incident (the form Slack links to)
    GET /approvals           the page, showing the actions that wait for a human
    GET /web/{name}          the page's scripts, styles and icon (a fixed list; anything else is 404)

These are not API: :data:`PAGE_PATHS` lets the OpenAPI check leave them out. Telemetry is untrusted text, so the
page only ever writes it with ``textContent``; the Content-Security-Policy below backs that up (scripts only from
this origin, no inline script or style), and nothing secret is in the page: the approver pastes a bearer token,
which the browser keeps in sessionStorage.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

#: The routes of the page (not described in the OpenAPI document: they serve HTML, not the API).
PAGE_PATHS = frozenset({"/", "/incidents", "/incidents/{id}", "/approvals", "/web/{name}"})

#: Only this origin's scripts, styles and API; no inline script or style, no plugins, no framing, no forms posting
#: elsewhere. ``connect-src 'self'`` is what the page's fetch() of the API needs.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",  # revalidate: after an upgrade the page and its scripts must match
}

_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}

WEB_DIR = Path(__file__).with_name("web")


def page_routes(web_dir: Path = WEB_DIR) -> list[Route]:
    """The routes of :data:`PAGE_PATHS` over the files in ``web_dir``, read once, now.

    Raises:
        OSError: ``web_dir`` has no ``index.html`` (a broken install: the package data is missing).
    """
    html = (web_dir / "index.html").read_text(encoding="utf-8")
    assets = {p.name: (p.read_bytes(), _TYPES[p.suffix]) for p in sorted(web_dir.iterdir()) if p.suffix in _TYPES}
    # Asset links are relative, so the page also works behind a proxy that serves it under a path prefix.
    shallow, deep = html.replace("{root}", "./").encode(), html.replace("{root}", "../").encode()

    async def top(_: Request) -> Response:
        return Response(shallow, media_type="text/html; charset=utf-8", headers=_HEADERS)

    async def incident(_: Request) -> Response:
        return Response(deep, media_type="text/html; charset=utf-8", headers=_HEADERS)

    async def asset(request: Request) -> Response:
        found = assets.get(request.path_params["name"])
        if found is None:
            return Response(b"not found", status_code=404, media_type="text/plain", headers=_HEADERS)
        body, media_type = found
        return Response(body, media_type=media_type, headers=_HEADERS)

    return [
        Route("/", top),
        Route("/incidents", top),
        Route("/incidents/{id}", incident),
        Route("/approvals", top),
        Route("/web/{name}", asset),
    ]
