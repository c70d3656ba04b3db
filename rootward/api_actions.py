"""The approvals and actions part of the HTTP API (mounted by :func:`rootward.api.build_api` when the app has an
executor):

    GET  /api/v1/approvals?status=pending|approved|rejected|expired|all    approvals, newest first, each with its
                                                                          request, diagnosis, blast radius, policy
                                                                          reasons and dry-run result
    GET  /api/v1/approvals/{id}
    POST /api/v1/approvals/{id}/approve   {"comment": "..."} (optional)   202: recorded; the action runs now
    POST /api/v1/approvals/{id}/reject    {"comment": "..."} (optional)   200
    GET  /api/v1/actions/pause                                            whether actions are paused (by whom, why)
    POST /api/v1/actions/pause            {"reason": "..."}               pause every action (actions/pause.py)
    POST /api/v1/actions/resume                                           end the pause
    GET  /api/v1/actions/{request_id}                                     the request's audit records so far
    GET  /api/v1/audit?after=0&limit=100                                  the audit log in order, a page at a time
                                                                          (``next``: the ``after`` of the next page)
    GET  /api/v1/audit/verify                                             the hash chain, MACs and signatures
                                                                          checked now (a scan of the whole log)
    POST /api/v1/slack/interactions       Slack interactive buttons (action_id approve|reject, value: approval id)

Every route needs ``Authorization: Bearer <token>`` with one of ``policies.approvals.tokens`` (name -> token); the
name behind the token is recorded as who decided, never a name the client sends. No tokens configured: 403
(approvals over HTTP are off), except for the brake (``/api/v1/actions/pause`` and ``/resume``), which then takes a
call from the pod itself, as the incidents' writes do. Wrong or missing token: 401. An approval already decided:
409; expired: 410.

Slack callbacks carry no token: they are verified with the app's signing secret (``X-Slack-Signature`` =
``v0=`` HMAC-SHA256 of ``v0:<timestamp>:<body>``, compared in constant time) and refused (401) when the timestamp
is more than 5 minutes from now (a replayed request); the decider is recorded as ``slack:<user id>`` (and must be
in ``slack_approvers`` when that list is set).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import logging
import socket
import threading
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from rootward.actions import Executor
from rootward.actions.errors import ActionError
from rootward.api import bounded_int
from rootward.auth import writer
from rootward.config import Approvals as ApprovalSettings
from rootward.policies.errors import ApprovalError, ApprovalExpired, UnknownApproval

logger = logging.getLogger(__name__)

_STATUSES = ("pending", "approved", "rejected", "expired", "all")


#: Slack's replay window: a callback signed further than this from now is refused.
SLACK_MAX_SKEW_S = 300.0


def slack_signature_ok(secret: str, timestamp: str | None, body: bytes, signature: str | None, now: float) -> bool:
    """Whether a Slack request is signed with ``secret`` and fresh (within :data:`SLACK_MAX_SKEW_S` of ``now``)."""
    if not timestamp or not signature:
        return False
    try:
        if abs(now - float(timestamp)) > SLACK_MAX_SKEW_S:
            return False
    except ValueError:
        return False
    base = b"v0:" + timestamp.encode() + b":" + body
    expected = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)


def approval_routes(executor: Executor, settings: ApprovalSettings) -> list[Route]:
    """The routes above over ``executor``: bearer tokens from ``settings.tokens``; with
    ``settings.slack_signing_secret``, the Slack callback too."""
    tokens = {name: secret.get_secret_value() for name, secret in settings.tokens.items()}
    slack_signing_secret = (
        settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret is not None else None
    )
    slack_approvers = settings.slack_approvers

    def authenticated(
        handler: Callable[[Request, str], Awaitable[Response]], local: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        """``handler`` behind a valid token; without tokens configured, refused, but with ``local`` (the brake),
        taken from the pod itself as Rootward's other writes are (rootward/auth.py ``writer``): an emergency must
        not wait for tokens to be configured."""

        async def endpoint(request: Request) -> Response:
            if not tokens and not local:
                return JSONResponse(
                    {"message": "approvals over HTTP are off: set policies.approvals.tokens"}, status_code=403
                )
            who = writer(tokens, request)  # with tokens: a name, or 401; without: "local", or 403
            if isinstance(who, Response):
                return who
            return await handler(request, who)

        return endpoint

    async def listing(request: Request, _: str) -> Response:
        status = request.query_params.get("status", "pending")
        if status not in _STATUSES:
            return JSONResponse({"message": f"status must be one of {', '.join(_STATUSES)}"}, status_code=400)
        await run_in_threadpool(executor.expire)
        found = await run_in_threadpool(executor.approvals.listed, None if status == "all" else status)  # type: ignore[arg-type]
        return JSONResponse({"approvals": [a.as_json() for a in found]})

    async def one(request: Request, _: str) -> Response:
        await run_in_threadpool(executor.expire)
        approval = await run_in_threadpool(executor.approvals.get, request.path_params["id"])
        if approval is None:
            return JSONResponse({"message": _elsewhere(request.path_params["id"])}, status_code=404)
        return JSONResponse(approval.as_json())

    async def decide(request: Request, who: str) -> Response:
        approval_id, verb = request.path_params["id"], request.path_params["verb"]
        if verb not in ("approve", "reject"):
            return JSONResponse({"message": f"unknown decision {verb!r}: approve or reject"}, status_code=404)
        comment = await _comment(request)
        if isinstance(comment, Response):
            return comment
        try:
            if verb == "reject":
                outcome = await run_in_threadpool(executor.reject, approval_id, who, comment)
                return JSONResponse({"decided_by": who, "outcome": outcome.as_json()})
            approval = await run_in_threadpool(executor.accept, approval_id, who, comment)
        except ApprovalExpired as e:
            await run_in_threadpool(executor.expire)
            return JSONResponse({"message": str(e)}, status_code=410)
        except UnknownApproval:
            return JSONResponse({"message": _elsewhere(approval_id)}, status_code=404)
        except ApprovalError as e:
            return JSONResponse({"message": str(e)}, status_code=409)
        threading.Thread(target=_carry_out, args=(executor, approval), name="rootward-action", daemon=True).start()
        body = {
            "decided_by": who,
            "request_id": approval.request_id,
            "follow": f"/api/v1/actions/{approval.request_id}",
        }
        return JSONResponse(body, status_code=202)

    def pause_state() -> dict[str, object]:
        paused = executor.pause.paused
        mode, _ = executor.effective_mode()
        return {"paused": paused.as_json() if paused else None, "mode": executor.mode, "effective_mode": mode}

    async def pause(request: Request, who: str) -> Response:
        if request.method == "GET":
            return JSONResponse(pause_state())
        reason = await _text(request, "reason")
        if isinstance(reason, Response):
            return reason
        try:
            await run_in_threadpool(executor.pause_actions, who, reason)
        except ActionError as e:
            return JSONResponse({"message": f"cannot pause: {e}"}, status_code=503)
        return JSONResponse(pause_state())

    async def resume(request: Request, who: str) -> Response:
        try:
            await run_in_threadpool(executor.resume_actions, who)
        except ActionError as e:
            return JSONResponse({"message": f"cannot resume: {e}"}, status_code=503)
        return JSONResponse(pause_state())

    async def action(request: Request, _: str) -> Response:
        request_id = request.path_params["request_id"]
        records = await run_in_threadpool(lambda: list(executor.audit.records(request_id=request_id)))
        if not records:
            return JSONResponse({"message": f"no action {request_id!r}"}, status_code=404)
        outcome = next((r.data for r in reversed(records) if r.kind == "outcome"), None)
        return JSONResponse({"request_id": request_id, "outcome": outcome, "records": [r.as_json() for r in records]})

    async def audit(request: Request, _: str) -> Response:
        p = request.query_params
        after, limit = bounded_int(p, "after", 0, 0, 2**62), bounded_int(p, "limit", 100, 1, 1000)
        if isinstance(after, Response) or isinstance(limit, Response):
            return after if isinstance(after, Response) else limit  # type: ignore[return-value]
        records = await run_in_threadpool(lambda: list(executor.audit.records(after, limit=limit)))
        return JSONResponse({"records": [r.as_json() for r in records], "next": records[-1].seq if records else after})

    async def verify(request: Request, _: str) -> Response:
        signer = executor.audit.signer
        verifier = signer.verifier() if signer is not None else None
        found = await run_in_threadpool(executor.audit.verify, executor.audit.hmac_key, verifier)
        return JSONResponse(dataclasses.asdict(found), status_code=200 if found.ok else 409)

    async def slack(request: Request) -> Response:
        body = await request.body()
        assert slack_signing_secret is not None
        signed = slack_signature_ok(
            slack_signing_secret,
            request.headers.get("x-slack-request-timestamp"),
            body,
            request.headers.get("x-slack-signature"),
            executor.clock.now(),
        )
        if not signed:
            return JSONResponse({"message": "bad or stale Slack signature"}, status_code=401)
        try:
            payload = json.loads(parse_qs(body.decode()).get("payload", ["{}"])[0])
            user = str(payload["user"]["id"])
            action = payload["actions"][0]
            verb, approval_id = str(action["action_id"]), str(action["value"])
        except (ValueError, KeyError, IndexError, TypeError):
            return JSONResponse({"message": "not a Slack block action"}, status_code=400)
        if slack_approvers and user not in slack_approvers:
            return JSONResponse({"text": f"<@{user}> may not decide on actions"}, status_code=200)
        who = f"slack:{user}"
        try:
            if verb == "reject":
                await run_in_threadpool(executor.reject, approval_id, who, "via Slack")
                return JSONResponse({"text": f"Rejected by <@{user}>"})
            if verb != "approve":
                return JSONResponse({"message": f"unknown action_id {verb!r}"}, status_code=400)
            approval = await run_in_threadpool(executor.accept, approval_id, who, "via Slack")
        except ApprovalExpired:
            await run_in_threadpool(executor.expire)
            return JSONResponse({"text": "This approval expired; Rootward will propose again if still needed."})
        except UnknownApproval:
            return JSONResponse({"text": _elsewhere(approval_id)})
        except ApprovalError as e:
            return JSONResponse({"text": str(e)})
        threading.Thread(target=_carry_out, args=(executor, approval), name="rootward-action", daemon=True).start()
        return JSONResponse({"text": f"Approved by <@{user}>; running {approval.request_id}"})

    return [
        *([Route("/api/v1/slack/interactions", slack, methods=["POST"])] if slack_signing_secret else []),
        Route("/api/v1/approvals", authenticated(listing)),
        Route("/api/v1/approvals/{id}", authenticated(one)),
        Route("/api/v1/approvals/{id}/{verb}", authenticated(decide), methods=["POST"]),
        Route("/api/v1/actions/pause", authenticated(pause, local=True), methods=["GET", "POST"]),
        Route("/api/v1/actions/resume", authenticated(resume, local=True), methods=["POST"]),
        Route("/api/v1/actions/{request_id}", authenticated(action)),
        Route("/api/v1/audit", authenticated(audit)),
        Route("/api/v1/audit/verify", authenticated(verify)),
    ]


def _elsewhere(approval_id: str) -> str:
    """Why an approval is not found here: an approval lives in the audit database of the Rootward that asked for it,
    and on the DaemonSet the Service rootward (or a Slack callback through it) may reach another pod."""
    return (
        f"no approval {approval_id!r} on this Rootward ({socket.gethostname()}): an approval is kept by the Rootward "
        "that asked for it, the Lease holder; on the DaemonSet, decide through svc/rootward-leader (README, 'The "
        "DaemonSet: one incident per fault, and who acts')"
    )


async def _comment(request: Request) -> str | Response:
    return await _text(request, "comment")


async def _text(request: Request, key: str, limit: int = 4000) -> str | Response:
    """The body's ``{key: "..."}`` (empty body: ""), or a 400 saying what is wrong."""
    body = await request.body()
    if not body:
        return ""
    try:
        data = json.loads(body)
    except ValueError:
        return JSONResponse({"message": f'the body must be JSON: {{"{key}": "..."}}'}, status_code=400)
    value = data.get(key, "") if isinstance(data, dict) else None
    if not isinstance(value, str) or len(value) > limit:
        return JSONResponse({"message": f"{key} must be a string of at most {limit} characters"}, status_code=400)
    return value


def _carry_out(executor: Executor, approval: object) -> None:
    """The approved action, on its own thread: the boundary where an unexpected error is logged, not lost."""
    try:
        executor.carry_out(approval)  # type: ignore[arg-type]
    except Exception:
        logger.exception("an approved action failed unexpectedly")
