"""The whole loop in a running App against a Kubernetes API (kmock): payment's error surge, sent through the OTel
SDK's OTLP exporter, opens an incident; the reasoner diagnoses it; the responder proposes an action for payment's
Deployment; the executor, in its default dry-run mode, decides by policy and dry-runs it on the server; the audit
log records every step and verifies."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from click.testing import CliRunner
from cluster import RunningCluster, deploy
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from rootward.actions import Kube
from rootward.app import App
from rootward.cli import main
from rootward.clock import ManualClock
from rootward.config import LOCAL_PORTS, load_config
from rootward.policies import AuditLog
from rootward.synthetic import Shop

from collectors import wait_until
from log_backend import running_log_backend
from shop_windows import shop_window


@contextmanager
def payment_failure(cluster: RunningCluster, data: Path, *settings: str) -> Iterator[App]:
    """A running App with actions on against ``cluster``, after eight healthy windows of shop traffic and four with
    payment failing; its responder and Slack notifier drained. Shut down on the way out."""
    overrides = [
        *LOCAL_PORTS,
        f"storage.data_dir={data}",
        "topology.history.enabled=false",
        "detection.window_s=10",
        "detection.warmup=5",
        "actions.enabled=true",
        f"actions.kubernetes.host={cluster.url}",
        "actions.lease.enabled=false",
        *settings,
    ]
    clock = ManualClock(1_000.0)
    app = App(load_config(environ={}, overrides=overrides), clock=clock)
    assert app.acting is not None
    app.start()
    shop = Shop(f"127.0.0.1:{app.receiver.grpc.port}")
    try:
        for window in range(12):
            shop_window(app, shop, clock, failing=window >= 8)
        app.acting.responder.flush()
        app.slack.flush()
        yield app
    finally:
        shop.close()
        app.shutdown()


def test_a_diagnosed_incident_gets_a_dry_run_action_with_an_audit_trail(
    cluster: RunningCluster, kube: Kube, tmp_path: Path
) -> None:
    deploy(kube, "payment", replicas=2)
    key = Ed25519PrivateKey.generate().private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    (tmp_path / "signing.pem").write_bytes(key)
    flags = tmp_path / "flags.json"
    flags.write_text(
        json.dumps({"flags": {"f": {"state": "ENABLED", "variants": {"on": True}, "defaultVariant": "on"}}})
    )
    signed = (f"policies.audit.signing_key_file={tmp_path / 'signing.pem'}", f"actions.flags.source={flags}")
    with payment_failure(cluster, tmp_path, *signed) as app:
        assert app.acting is not None
        assert app.acting.flags is not None
        assert app.acting.executor.anomaly_cleared == app.anomaly_cleared  # verification asks the app
        assert app.acting.flags.reader.resolve("f", True).variant == "on"  # the flag reader was started
        (incident,) = app.incidents.listed()
        assert incident.diagnosis is not None
        assert incident.action is not None, incident.diagnosis
        assert incident.action["request"]["namespace"] == "shop"
        assert incident.action["request"]["name"] == "payment"
        assert incident.action["request"]["kind"] == "rollout_restart"  # a code error on a Deployment's service
        assert incident.action["status"] == "dry_run", incident.action  # policy allowed; the default mode stops here
        assert incident.action["decision"]["result"] == "allow"
        assert app.telemetry.value("rootward_actions_total", kind="rollout_restart", status="dry_run") == 1
        assert kube.workload("Deployment", "shop", "payment")["metadata"].get("generation", 1) == 1  # unchanged
    with AuditLog(tmp_path / "audit.db") as log:
        kinds = [r.kind for r in log.records()]
    assert kinds[0] == "decision"
    env = {"ROOTWARD_POLICIES__AUDIT__SIGNING_KEY_FILE": str(tmp_path / "signing.pem")}
    verified = CliRunner().invoke(main, ["audit", "verify", str(tmp_path / "audit.db")], env=env)
    assert verified.exit_code == 0, verified.output
    assert "signatures checked" in verified.output


def test_the_audit_trail_is_shipped_to_the_log_backend_as_it_is_written(
    cluster: RunningCluster, kube: Kube, tmp_path: Path
) -> None:
    deploy(kube, "payment", replicas=2)
    with running_log_backend() as backend:
        ship = (f"policies.audit.ship.endpoint=127.0.0.1:{backend.port}", "policies.audit.ship.protocol=grpc",
                "policies.audit.ship.interval_s=0.05")  # fmt: skip
        with payment_failure(cluster, tmp_path, *ship) as app:
            assert wait_until(lambda: app.health()["audit_unshipped"] == 0 and backend.records(), 10)
            assert app.health()["audit_ship_error"] is None
            shipped = app.telemetry.value("rootward_audit_shipped_total", outcome="shipped")
            assert shipped == len(backend.records()) > 0
            assert app.telemetry.value("rootward_audit_unshipped") == 0
        with AuditLog(tmp_path / "audit.db") as log:
            written = len(list(log.records()))
        assert len(backend.records()) == written  # the last records went at shutdown
        verified = CliRunner().invoke(main, ["audit", "verify", "--from", str(backend.write_jsonl(tmp_path / "kept"))])
    assert verified.exit_code == 0, verified.output
    assert f"records 1-{written}" in verified.output


def test_an_action_waiting_for_a_human_is_asked_for_in_slack_with_buttons(
    cluster: RunningCluster, kube: Kube, tmp_path: Path, httpserver: HTTPServer
) -> None:
    posts: list[dict[str, Any]] = []

    def hook(request: Request) -> Response:
        posts.append(json.loads(request.get_data()))
        return Response("ok", 200)

    httpserver.expect_request("/hook").respond_with_handler(hook)
    deploy(kube, "payment", replicas=2)
    slack = f"notifications.slack.webhook_url={httpserver.url_for('/hook')}"
    with payment_failure(cluster, tmp_path, "actions.mode=approve-all", slack) as app:
        (incident,) = app.incidents.listed()
        assert incident.action is not None
        assert incident.action["status"] == "pending_approval"
        asks = [p for p in posts if "Approval needed" in p["text"]]
        assert len(asks) == 1
        buttons = next(b for b in asks[0]["blocks"] if b["type"] == "actions")["elements"]
        assert [(b["action_id"], b["value"]) for b in buttons] == [
            ("approve", incident.action["approval_id"]),
            ("reject", incident.action["approval_id"]),
        ]
        assert "rollout_restart shop/payment" in asks[0]["text"]
        said = json.dumps(asks[0]["blocks"])
        assert "*Diagnosis:* code_error at service:shop/payment" in said  # what the approver decides on
        assert "confident)" in said
        assert "service:shop/payment error_ratio" in said  # its evidence
        assert "*Dry run:* passed on the API server" in said


def test_verification_waits_for_the_incidents_root_cause_to_go_quiet() -> None:
    """What the executor's verification asks the app after a change: the incident is over when it resolved, or when
    its root cause has had no new anomaly for confirm + 2 detection windows."""
    from rootward.config import NOTHING_ON_DISK

    clock = ManualClock(1_000.0)
    app = App(load_config(environ={}, overrides=[*LOCAL_PORTS, *NOTHING_ON_DISK, "detection.window_s=10"]), clock=clock)
    try:
        _quiet(app, clock)
    finally:
        app.shutdown()


def _quiet(app: App, clock: ManualClock) -> None:
    from rootward.actions.executor import Diagnosis as Reason
    from rootward.detector.detector import Anomaly

    payment = "service:shop/payment"
    app.incidents.observe(1_000.0, [Anomaly(payment, "error_ratio", 0.5, 0.0, 9.0, 990.0, 1_000.0)])
    (incident,) = app.incidents.listed()
    assert app.anomaly_cleared(Reason("fix", 0.9, None, payment)) is None  # no incident to watch
    assert app.anomaly_cleared(Reason("fix", 0.9, incident.id, "service:shop/cart")) is None  # not its anomaly
    assert app.anomaly_cleared(Reason("fix", 0.9, incident.id, payment)) is False  # failing now
    clock.advance(39)
    assert app.anomaly_cleared(Reason("fix", 0.9, incident.id, payment)) is False
    clock.advance(1)  # confirm + 2 windows without a new anomaly: a fault that flickers would have shown by now
    assert app.anomaly_cleared(Reason("fix", 0.9, incident.id, payment)) is True
    app.incidents.observe(1_045.0, [Anomaly(payment, "error_ratio", 0.5, 0.0, 9.0, 1_035.0, 1_045.0)])
    assert app.anomaly_cleared(Reason("fix", 0.9, incident.id, payment)) is False  # it came back
    app.incidents.resolve(incident.id, 1_046.0)
    assert app.anomaly_cleared(Reason("fix", 0.9, incident.id, payment)) is True


def test_the_open_health_endpoints_say_actions_are_paused_but_not_who_or_why(tmp_path: Path) -> None:
    """/healthz and /readyz need no token: the reason and the operator stay behind GET /api/v1/actions/pause."""
    overrides = [*LOCAL_PORTS, f"storage.data_dir={tmp_path}", "topology.history.enabled=false",
                 "actions.enabled=true", "actions.kubernetes.host=http://127.0.0.1:9", "actions.lease.enabled=false"]  # fmt: skip
    app = App(load_config(environ={}, overrides=overrides))
    assert app.acting is not None
    app.start()
    try:
        app.acting.executor.pause_actions("alice", "the payments database migration")
        for probe in ("healthz", "readyz"):
            answer = httpx.get(f"http://127.0.0.1:{app.api.port}/{probe}", timeout=10)
            assert answer.json()["actions_paused"] is True
            assert "alice" not in answer.text
            assert "migration" not in answer.text
    finally:
        app.shutdown()
