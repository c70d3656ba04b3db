"""Approvals over the HTTP API: a real server on a free port, a real client, bearer tokens, who approved."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from click.testing import CliRunner
from cluster import MakeExecutor, deploy, memory_limit

from rootward.actions import Diagnosis, Executor, Kube, PatchResources
from rootward.api import build_api
from rootward.cli import main
from rootward.config import Approvals as ApprovalSettings
from rootward.policies import Approvals, AuditLog
from rootward.serving import ThreadedServer
from rootward.telemetry import Telemetry

UNSURE = Diagnosis("cart may need more memory", 0.5, "inc-api", "pod:shop/cart", ("OOMKilled x2",))
ALICE = {"authorization": "Bearer alice-token"}


def _serve(executor: Executor, tokens: dict[str, str], **settings: Any) -> ThreadedServer:
    approvals = ApprovalSettings.model_validate({"tokens": tokens, **settings})
    app = build_api(Telemetry(), lambda: {"alive": True, "ready": True}, executor=executor, approvals=approvals)
    server = ThreadedServer(app, "127.0.0.1", 0, "API")
    server.start()
    return server


@pytest.fixture
def api(make_executor: MakeExecutor) -> Iterator[tuple[httpx.Client, Executor]]:
    executor = make_executor()
    server = _serve(executor, {"alice": "alice-token", "bob": "bob-token"})
    with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=10) as client:
        yield client, executor
    server.shutdown()


def _held(kube: Kube, executor: Executor, memory: str = "256Mi") -> str:
    outcome = executor.submit(PatchResources("shop", "cart", container="cart", limits={"memory": memory}), UNSURE)
    assert outcome.status == "pending_approval"
    assert outcome.approval_id is not None
    return outcome.approval_id


def _outcome(client: httpx.Client, request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        body = client.get(f"/api/v1/actions/{request_id}", headers=ALICE).json()
        if body["outcome"] is not None and body["outcome"]["status"] != "pending_approval":
            return body
        time.sleep(0.05)
    raise AssertionError("no outcome")


def test_a_pending_approval_shows_the_reasoning_and_alices_approval_runs_it(
    kube: Kube, api: tuple[httpx.Client, Executor], audit: AuditLog
) -> None:
    client, executor = api
    deploy(kube, "cart")
    approval_id = _held(kube, executor)
    listed = client.get("/api/v1/approvals", headers=ALICE)
    assert listed.status_code == 200
    [shown] = listed.json()["approvals"]
    assert shown["id"] == approval_id
    assert shown["diagnosis"]["evidence"] == ["OOMKilled x2"]
    assert shown["decision"]["approval"] == ["medium-risk action and the diagnosis confidence 0.5 is under 0.8"]
    assert shown["blast_radius"]["pods_total"] == 5
    assert shown["dry_run"]["after"] == {"limits": {"memory": "256Mi"}, "requests": {"memory": "128Mi"}}
    answer = client.post(f"/api/v1/approvals/{approval_id}/approve", headers=ALICE, json={"comment": "ok"})
    assert answer.status_code == 202
    assert answer.json()["decided_by"] == "alice"
    followed = _outcome(client, answer.json()["request_id"])
    assert followed["outcome"]["status"] == "succeeded"
    assert memory_limit(kube, "cart") == "256Mi"
    approved = next(r for r in followed["records"] if r["kind"] == "approved")
    assert approved["actor"] == "alice"
    assert approved["data"]["comment"] == "ok"
    again = client.post(f"/api/v1/approvals/{approval_id}/approve", headers={"authorization": "Bearer bob-token"})
    assert again.status_code == 409
    assert audit.verify().ok


def test_a_rejection_is_recorded_with_who_and_nothing_changes(kube: Kube, api: tuple[httpx.Client, Executor]) -> None:
    client, executor = api
    deploy(kube, "cart")
    approval_id = _held(kube, executor)
    answer = client.post(
        f"/api/v1/approvals/{approval_id}/reject", headers={"authorization": "Bearer bob-token"}, json={"comment": "no"}
    )
    assert answer.status_code == 200
    assert answer.json()["outcome"]["status"] == "rejected"
    assert answer.json()["decided_by"] == "bob"
    assert memory_limit(kube, "cart") == "128Mi"
    assert client.get(f"/api/v1/approvals/{approval_id}", headers=ALICE).json()["decided_by"] == "bob"


def test_an_expired_approval_answers_410(kube: Kube, api: tuple[httpx.Client, Executor], approvals: Approvals) -> None:
    client, executor = api
    deploy(kube, "cart")
    approvals.ttl_s = 0.0
    approval_id = _held(kube, executor)
    answer = client.post(f"/api/v1/approvals/{approval_id}/approve", headers=ALICE)
    assert answer.status_code == 410
    assert client.get("/api/v1/approvals?status=expired", headers=ALICE).json()["approvals"][0]["id"] == approval_id
    assert memory_limit(kube, "cart") == "128Mi"


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-token"),
        pytest.param({"authorization": "Bearer wrong"}, id="wrong-token"),
        pytest.param({"authorization": "Basic YWxpY2U6eA=="}, id="not-bearer"),
    ],
)
def test_approvals_need_a_valid_bearer_token(api: tuple[httpx.Client, Executor], headers: dict[str, str]) -> None:
    client, _ = api
    assert client.get("/api/v1/approvals", headers=headers).status_code == 401
    assert client.post("/api/v1/approvals/apr-x/approve", headers=headers).status_code == 401


def test_without_tokens_approvals_over_http_are_off(make_executor: MakeExecutor) -> None:
    server = _serve(make_executor(), {})
    try:
        answer = httpx.get(f"http://127.0.0.1:{server.port}/api/v1/approvals", headers=ALICE, timeout=10)
    finally:
        server.shutdown()
    assert answer.status_code == 403


def test_an_unknown_approval_is_404(api: tuple[httpx.Client, Executor]) -> None:
    client, _ = api
    refused = client.post("/api/v1/approvals/apr-nope/approve", headers=ALICE)
    assert refused.status_code == 404
    assert "kept by the Rootward that asked for it" in refused.json()["message"]  # on the DaemonSet: another pod
    assert client.get("/api/v1/approvals/apr-nope", headers=ALICE).status_code == 404


SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


def _slack_post(port: int, payload: dict[str, Any], secret: str = SECRET, age_s: float = 0.0) -> httpx.Response:
    """What Slack sends for a button click: a form with a JSON payload, signed with the app's signing secret."""
    body = urlencode({"payload": json.dumps(payload)}).encode()
    timestamp = str(int(time.time() - age_s))
    signature = "v0=" + hmac.new(secret.encode(), b"v0:" + timestamp.encode() + b":" + body, hashlib.sha256).hexdigest()
    headers = {
        "content-type": "application/x-www-form-urlencoded",
        "x-slack-request-timestamp": timestamp,
        "x-slack-signature": signature,
    }
    return httpx.post(f"http://127.0.0.1:{port}/api/v1/slack/interactions", content=body, headers=headers, timeout=10)


def _click(verb: str, approval_id: str, user: str = "U0ALICE") -> dict[str, Any]:
    return {
        "type": "block_actions",
        "user": {"id": user, "username": "alice"},
        "actions": [{"action_id": verb, "value": approval_id, "type": "button"}],
    }


@pytest.fixture
def slack_api(make_executor: MakeExecutor) -> Iterator[tuple[int, Executor]]:
    executor = make_executor()
    server = _serve(executor, {}, slack_signing_secret=SECRET, slack_approvers=["U0ALICE"])
    yield server.port, executor
    server.shutdown()


def test_a_signed_slack_click_approves_and_the_action_runs(
    kube: Kube, slack_api: tuple[int, Executor], audit: AuditLog
) -> None:
    port, executor = slack_api
    deploy(kube, "cart")
    approval_id = _held(kube, executor)
    answer = _slack_post(port, _click("approve", approval_id))
    assert answer.status_code == 200
    assert "Approved by <@U0ALICE>" in answer.json()["text"]
    request_id = answer.json()["text"].rsplit(" ", 1)[1]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and memory_limit(kube, "cart") != "256Mi":
        time.sleep(0.05)
    assert memory_limit(kube, "cart") == "256Mi"
    approved = next(r for r in audit.records(request_id=request_id) if r.kind == "approved")
    assert approved.actor == "slack:U0ALICE"


@pytest.mark.parametrize(
    ("secret", "age_s"),
    [
        pytest.param("forged-secret", 0.0, id="forged-signature"),
        pytest.param(SECRET, 600.0, id="replayed-after-10-minutes"),
    ],
)
def test_a_forged_or_replayed_slack_callback_is_refused(
    kube: Kube, slack_api: tuple[int, Executor], secret: str, age_s: float, approvals: Approvals
) -> None:
    port, executor = slack_api
    deploy(kube, "cart")
    approval_id = _held(kube, executor)
    answer = _slack_post(port, _click("approve", approval_id), secret=secret, age_s=age_s)
    assert answer.status_code == 401
    approval = approvals.get(approval_id)
    assert approval is not None
    assert approval.status == "pending"


def test_a_slack_user_not_allowed_to_decide_changes_nothing(
    kube: Kube, slack_api: tuple[int, Executor], approvals: Approvals
) -> None:
    port, executor = slack_api
    deploy(kube, "cart")
    approval_id = _held(kube, executor)
    answer = _slack_post(port, _click("reject", approval_id, user="U0MALLORY"))
    assert "may not decide" in answer.json()["text"]
    approval = approvals.get(approval_id)
    assert approval is not None
    assert approval.status == "pending"
    assert _slack_post(port, _click("reject", approval_id)).json()["text"] == "Rejected by <@U0ALICE>"
    rejected = approvals.get(approval_id)
    assert rejected is not None
    assert rejected.decided_by == "slack:U0ALICE"


def test_the_audit_log_pages_in_order_and_verifies_over_http(
    kube: Kube, api: tuple[httpx.Client, Executor], audit: AuditLog
) -> None:
    client, executor = api
    deploy(kube, "cart")
    _held(kube, executor)
    first = client.get("/api/v1/audit", params={"limit": 1}, headers=ALICE).json()
    (record,) = first["records"]
    assert record["seq"] == 1
    assert record["kind"] == "decision"
    rest = client.get("/api/v1/audit", params={"after": first["next"]}, headers=ALICE).json()
    assert [r["seq"] for r in rest["records"]] == list(range(2, 2 + len(rest["records"])))
    assert rest["records"]
    checked = client.get("/api/v1/audit/verify", headers=ALICE).json()
    assert checked["ok"] is True
    assert checked["records"] == 1 + len(rest["records"])
    assert client.get("/api/v1/audit", params={"limit": 0}, headers=ALICE).status_code == 400
    before = client.get("/api/v1/audit", params={"after": -1}, headers=ALICE)
    assert before.status_code == 400
    assert "after must be an integer" in before.json()["message"]
    assert client.get("/api/v1/audit").status_code == 401  # a bearer token, as for approvals


def _cli(client: httpx.Client, *args: str, token: str = "alice-token") -> tuple[int, str]:
    result = CliRunner().invoke(
        main, ["approvals", *args, "--api", str(client.base_url)], env={"ROOTWARD_TOKEN": token}
    )
    return result.exit_code, result.output


def test_the_approvals_cli_lists_shows_and_approves_through_the_api(
    kube: Kube, api: tuple[httpx.Client, Executor]
) -> None:
    client, executor = api
    deploy(kube, "cart")
    approval_id = _held(kube, executor)
    code, output = _cli(client, "list")
    assert code == 0, output
    assert approval_id in output
    assert "pending" in output
    assert "patch_resources shop/cart" in output
    assert "50%" in output
    code, output = _cli(client, "show", approval_id)
    assert code == 0, output
    assert "diagnosis: cart may need more memory (50% confident)" in output
    assert "evidence: OOMKilled x2" in output
    assert "blast radius: " in output
    assert "of 5 pods at once" in output
    assert "held back: medium-risk action and the diagnosis confidence 0.5 is under 0.8" in output
    assert "dry run: passed on the API server" in output
    code, output = _cli(client, "approve", approval_id, "--comment", "checked", "--wait", "10", token="bob-token")
    assert code == 0, output
    assert "approved by bob" in output
    assert "succeeded" in output
    assert memory_limit(kube, "cart") == "256Mi"
    code, output = _cli(client, "list", "--status", "approved")
    assert "by bob" in output
    code, output = _cli(client, "approve", approval_id)
    assert code == 1
    assert "409" in output


def test_the_approvals_cli_rejects_and_says_what_is_wrong(kube: Kube, api: tuple[httpx.Client, Executor]) -> None:
    client, executor = api
    deploy(kube, "cart")
    approval_id = _held(kube, executor)
    code, output = _cli(client, "reject", approval_id, "--comment", "not now")
    assert code == 0, output
    assert "rejected by alice: rejected by alice: not now" in output
    assert memory_limit(kube, "cart") == "128Mi"
    code, output = _cli(client, "list")
    assert "no pending approvals" in output
    code, output = _cli(client, "list", token="wrong")
    assert code == 1
    assert "401" in output
    code, output = _cli(client, "show", "apr-nope")
    assert code == 1
    assert "404" in output
    assert "svc/rootward-leader" in output
    result = CliRunner().invoke(main, ["approvals", "list", "--api", "http://127.0.0.1:9"], env={"ROOTWARD_TOKEN": "x"})
    assert result.exit_code == 1
    assert "cannot reach http://127.0.0.1:9" in result.output
    result = CliRunner().invoke(main, ["approvals", "list"], env={"ROOTWARD_TOKEN": ""})
    assert result.exit_code == 2
    assert "an operator token is needed" in result.output


def test_actions_are_paused_and_resumed_through_the_api_and_the_cli(
    kube: Kube, api: tuple[httpx.Client, Executor], audit: AuditLog
) -> None:
    client, executor = api
    deploy(kube, "cart")
    code, output = _cli_actions(client, "status")
    assert code == 0, output
    assert "actions run (mode autonomous)" in output
    code, output = _cli_actions(client, "pause", "--reason", "incident review")
    assert code == 0, output
    assert "actions are PAUSED by alice since " in output
    assert ": incident review" in output
    assert "requests run as dry-run (configured: autonomous); approvals wait" in output
    held = executor.submit(PatchResources("shop", "cart", container="cart", limits={"memory": "256Mi"}), UNSURE)
    assert held.status == "dry_run"
    assert memory_limit(kube, "cart") == "128Mi"
    state = client.get("/api/v1/actions/pause", headers=ALICE).json()
    assert state["paused"]["by"] == "alice"
    assert state["effective_mode"] == "dry-run"
    assert client.post("/api/v1/actions/pause", headers=ALICE, json={"reason": 7}).status_code == 400
    assert client.post("/api/v1/actions/resume").status_code == 401
    code, output = _cli_actions(client, "resume", token="bob-token")
    assert code == 0, output
    assert "actions run (mode autonomous)" in output
    assert [(r.kind, r.actor) for r in audit.records() if r.kind in ("paused", "resumed")] == [
        ("paused", "alice"),
        ("resumed", "bob"),
    ]


def _cli_actions(client: httpx.Client, *args: str, token: str = "alice-token") -> tuple[int, str]:
    result = CliRunner().invoke(main, ["actions", *args, "--api", str(client.base_url)], env={"ROOTWARD_TOKEN": token})
    return result.exit_code, result.output


def test_without_tokens_the_brake_is_pulled_from_the_pod_itself(make_executor: MakeExecutor) -> None:
    executor = make_executor()
    server = _serve(executor, {})
    api = f"http://127.0.0.1:{server.port}"
    try:
        assert httpx.get(f"{api}/api/v1/approvals", timeout=10).status_code == 403  # approvals need tokens
        result = CliRunner().invoke(
            main, ["actions", "pause", "--reason", "fire", "--api", api], env={"ROOTWARD_TOKEN": ""}
        )
        assert result.exit_code == 0, result.output
        assert "actions are PAUSED by local" in result.output
        assert executor.pause.paused is not None
        result = CliRunner().invoke(main, ["actions", "resume", "--api", api], env={"ROOTWARD_TOKEN": ""})
        assert result.exit_code == 0, result.output
        assert executor.pause.paused is None
        foreign = httpx.post(f"{api}/api/v1/actions/pause", headers={"host": "rootward.example"}, timeout=10)
        assert foreign.status_code == 403  # not the pod's own name: refused
    finally:
        server.shutdown()
