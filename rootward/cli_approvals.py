"""`rootward approvals list|show|approve|reject` (the actions waiting for a human) and `rootward actions
pause|resume|status` (the brake), from the terminal, through a running Rootward's API (rootward/api_actions.py)
with an operator token (policies.approvals.tokens). The server records the token's name as who decided.
Registered on the main group by rootward/cli.py."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import click

from rootward.cli_common import api_call, when

F = TypeVar("F", bound=Callable[..., Any])

#: How often ``approve --wait`` asks for the action's outcome.
POLL_S = 1.0


def _api_options(command: F) -> F:
    command = click.option(
        "--token",
        envvar="ROOTWARD_TOKEN",
        default=None,
        help="An operator token (policies.approvals.tokens); env ROOTWARD_TOKEN.",
    )(command)
    return click.option(
        "--api",
        default="http://127.0.0.1:8080",
        show_default=True,
        help="The acting Rootward's API (on the DaemonSet: svc/rootward-leader, port-forwarded).",
    )(command)


def _action(approval: dict[str, Any]) -> str:
    request = approval.get("request") or {}
    where = "/".join(str(request[k]) for k in ("namespace", "name", "pod", "node") if request.get(k))
    return f"{request.get('kind', '?')} {where}".strip()


@click.group("approvals")
def approvals_group() -> None:
    """Actions waiting for a human: list them, read one, approve or reject it.

    \b
    Examples:
      export ROOTWARD_TOKEN=...            # one of policies.approvals.tokens
      rootward approvals list
      rootward approvals show apr-3f2a9c0d1e2b4a57
      rootward approvals approve apr-3f2a9c0d1e2b4a57 --comment "checked the rollout" --wait 300
      rootward approvals reject apr-3f2a9c0d1e2b4a57 --comment "not during the sale"
    """


@approvals_group.command("list")
@click.option(
    "--status",
    type=click.Choice(["pending", "approved", "rejected", "expired", "all"]),
    default="pending",
    show_default=True,
)
@_api_options
def approvals_list(status: str, api: str, token: str | None) -> None:
    """List approvals, newest first: id, status, the action, the confidence behind it, when it expires or who
    decided."""
    found = api_call(api, token, "GET", f"/api/v1/approvals?status={status}")["approvals"]
    if not found:
        click.echo(f"no {status} approvals" if status != "all" else "no approvals")
        return
    for a in found:
        confidence = (a.get("diagnosis") or {}).get("confidence")
        sure = f"{confidence:.0%}" if isinstance(confidence, int | float) else "-"
        if a["status"] == "pending":
            left = max(0, int(a["expires"] - time.time()))
            state = f"expires in {left // 60} min" if left >= 60 else f"expires in {left} s"
        else:
            state = f"by {a.get('decided_by') or '-'} {when(a.get('decided_at'))}"
        click.echo(f"{a['id']:<20} {a['status']:<9} {_action(a):<40} {sure:>5}  {state}")


@approvals_group.command("show")
@click.argument("approval_id")
@_api_options
def approvals_show(approval_id: str, api: str, token: str | None) -> None:
    """What an approver decides on: the action, the diagnosis and its evidence, the blast radius, why policy held
    it back, and the server-side dry run."""
    a = api_call(api, token, "GET", f"/api/v1/approvals/{approval_id}")
    diagnosis = a.get("diagnosis") or {}
    blast = a.get("blast_radius") or {}
    decision = a.get("decision") or {}
    click.echo(f"{a['id']}  {a['status']}  {_action(a)}  (request {a['request_id']})")
    click.echo(f"asked {when(a.get('created'))}, expires {when(a.get('expires'))}")
    if a.get("decided_by"):
        comment = f": {a['comment']}" if a.get("comment") else ""
        click.echo(f"decided by {a['decided_by']} {when(a.get('decided_at'))}{comment}")
    confidence = diagnosis.get("confidence")
    sure = f" ({confidence:.0%} confident)" if isinstance(confidence, int | float) else ""
    click.echo(f"diagnosis: {diagnosis.get('summary', '-')}{sure}")
    if diagnosis.get("incident_id"):
        click.echo(f"incident: {diagnosis['incident_id']}")
    for line in diagnosis.get("evidence") or []:
        click.echo(f"  evidence: {line}")
    if blast:
        at_once, total = blast.get("pods_at_once"), blast.get("pods_total")
        callers = ", ".join(blast.get("dependents") or []) or "-"
        click.echo(f"blast radius: {at_once} of {total} pods at once; callers: {callers}")
    for reason in decision.get("approval") or []:
        click.echo(f"held back: {reason}")
    click.echo("dry run: passed on the API server" if a.get("dry_run") is not None else "dry run: -")


@approvals_group.command("approve")
@click.argument("approval_id")
@click.option("--comment", default="", help="Why (kept in the audit log).")
@click.option("--wait", "wait_s", type=float, default=0.0, help="Seconds to wait for the action's outcome.")
@_api_options
def approvals_approve(approval_id: str, comment: str, wait_s: float, api: str, token: str | None) -> None:
    """Approve: the acting Rootward asks policy again (with the approval), dry-runs, changes, verifies, and rolls
    back if verification fails. With --wait, print how it ended; exit 1 unless it succeeded."""
    answer = api_call(api, token, "POST", f"/api/v1/approvals/{approval_id}/approve", {"comment": comment})
    request_id = answer["request_id"]
    click.echo(f"approved by {answer['decided_by']}: {request_id} runs now")
    if wait_s <= 0:
        click.echo(f"follow it: rootward approvals show {approval_id}, or GET {answer['follow']}")
        return
    deadline = time.monotonic() + wait_s
    while True:
        outcome = api_call(api, token, "GET", answer["follow"]).get("outcome")
        if outcome is not None and outcome.get("status") != "pending_approval":
            click.echo(f"{outcome['status']}: {outcome.get('detail', '')}")
            if outcome["status"] != "succeeded":
                raise SystemExit(1)
            return
        if time.monotonic() >= deadline:
            raise click.ClickException(f"no outcome after {wait_s:g} s: {request_id} is still running")
        time.sleep(POLL_S)


@approvals_group.command("reject")
@click.argument("approval_id")
@click.option("--comment", default="", help="Why (kept in the audit log).")
@_api_options
def approvals_reject(approval_id: str, comment: str, api: str, token: str | None) -> None:
    """Reject: nothing is done; the rejection and its comment go to the audit log."""
    answer = api_call(api, token, "POST", f"/api/v1/approvals/{approval_id}/reject", {"comment": comment})
    click.echo(f"rejected by {answer['decided_by']}: {answer['outcome']['detail']}")


@click.group("actions")
def actions_group() -> None:
    """Pause and resume every action: the brake. While paused, requests run as dry runs (decided and dry-run on the
    API server, never changing the cluster) and approvals wait; detection, incidents and alerts go on. With the
    Lease (the shipped manifests) the pause is its annotation rootward.dev/paused, honoured by every Rootward and
    kept across handovers and restarts. With policies.approvals.tokens set it takes one (ROOTWARD_TOKEN); without,
    it works from the pod itself (kubectl exec).

    \b
    Examples:
      rootward actions pause --reason "incident review: no automated changes"
      rootward actions status
      rootward actions resume
      # without Rootward's API, the same brake:
      kubectl -n rootward annotate lease rootward-executor rootward.dev/paused="incident review"
      kubectl -n rootward annotate lease rootward-executor rootward.dev/paused-
    """


def _show_pause(state: dict[str, Any]) -> None:
    paused = state.get("paused")
    if paused:
        reason = f": {paused['reason']}" if paused.get("reason") else ""
        click.echo(f"actions are PAUSED by {paused['by']} since {when(paused.get('at'))}{reason}")
        click.echo(f"requests run as {state['effective_mode']} (configured: {state['mode']}); approvals wait")
    else:
        click.echo(f"actions run (mode {state['mode']})")


@actions_group.command("pause")
@click.option("--reason", required=True, help="Why (shown to everyone, kept in the audit log).")
@_api_options
def actions_pause(reason: str, api: str, token: str | None) -> None:
    """Pause every action until `rootward actions resume`."""
    _show_pause(api_call(api, token, "POST", "/api/v1/actions/pause", {"reason": reason}, local=True))


@actions_group.command("resume")
@_api_options
def actions_resume(api: str, token: str | None) -> None:
    """End the pause: actions run in actions.mode again."""
    _show_pause(api_call(api, token, "POST", "/api/v1/actions/resume", local=True))


@actions_group.command("status")
@_api_options
def actions_status(api: str, token: str | None) -> None:
    """Whether actions are paused, by whom and why, and the mode requests run in."""
    _show_pause(api_call(api, token, "GET", "/api/v1/actions/pause", local=True))
