"""Incident writes (acknowledge, silence, resolve, a new diagnosis) need an operator: a bearer token of
policies.approvals.tokens when any is configured, else a loopback client; a client on another host without tokens
configured is refused. Against a running App's API (real HTTP)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from rootward.app import App
from rootward.cli import main
from rootward.config import LOCAL_PORTS, NOTHING_ON_DISK, load_config
from rootward.detector.detector import Anomaly


def serving(*sets: str) -> App:
    app = App(load_config(environ={}, overrides=[*LOCAL_PORTS, *NOTHING_ON_DISK, *sets]))
    app.start()
    app.incidents.observe(100.0, [Anomaly("service:shop/payment", "error_ratio", 0.5, 0.0, 9.0, 90.0, 100.0)])
    return app


@pytest.fixture
def with_tokens() -> Iterator[App]:
    app = serving("policies.approvals.tokens.alice=s3cret-token")
    yield app
    app.shutdown()


def ack(app: App, host: str = "127.0.0.1", host_header: str | None = None, **headers: str) -> httpx.Response:
    (incident,) = app.incidents.listed()
    url = f"http://{host}:{app.api.port}/api/v1/incidents/{incident.id}/acknowledge"
    if host_header is not None:
        headers["host"] = host_header
    return httpx.post(url, headers=headers, timeout=10)


def test_with_tokens_configured_a_write_without_one_is_401_and_nothing_changes(with_tokens: App) -> None:
    response = ack(with_tokens)
    assert response.status_code == 401
    assert "bearer token" in response.json()["message"]
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert not with_tokens.incidents.listed()[0].acknowledged


def test_with_tokens_configured_a_wrong_token_is_401(with_tokens: App) -> None:
    assert ack(with_tokens, authorization="Bearer not-it").status_code == 401


def test_with_tokens_configured_the_right_token_writes(with_tokens: App) -> None:
    response = ack(with_tokens, authorization="bearer  s3cret-token")  # the scheme in any case (RFC 7235)
    assert response.status_code == 200
    assert response.json()["acknowledged"] is True
    assert ack(with_tokens, authorization="Basic s3cret-token").status_code == 401


def test_a_new_diagnosis_is_a_write_too(with_tokens: App) -> None:
    (incident,) = with_tokens.incidents.listed()
    url = f"http://127.0.0.1:{with_tokens.api.port}/api/v1/incidents/{incident.id}/diagnose"
    assert httpx.post(url, timeout=10).status_code == 401


def test_without_tokens_the_local_cli_may_write() -> None:
    app = serving()
    try:
        assert ack(app).status_code == 200
    finally:
        app.shutdown()


def other_address() -> str | None:
    """An address of this machine that is not loopback, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
        except OSError:
            return None
        address = str(s.getsockname()[0])
    return None if address.startswith("127.") else address


def test_without_tokens_a_client_on_another_address_is_refused() -> None:
    address = other_address()
    if address is None:
        pytest.skip("this machine has no address but loopback")
    app = serving("api.listen.host=0.0.0.0")
    try:
        response = ack(app, host=address)
        assert response.status_code == 403
        assert "policies.approvals.tokens" in response.json()["message"]
        assert not app.incidents.listed()[0].acknowledged
    finally:
        app.shutdown()


def test_a_browsers_cross_site_write_is_refused_even_with_a_token(with_tokens: App) -> None:
    response = ack(with_tokens, authorization="Bearer s3cret-token", origin="https://evil.example")
    assert response.status_code == 403
    assert "cross-origin" in response.json()["message"]
    assert not with_tokens.incidents.listed()[0].acknowledged


def test_without_tokens_a_loopback_write_to_a_foreign_host_name_is_refused() -> None:
    """DNS rebinding: a page on evil.example resolved to 127.0.0.1 reaches a port-forward with Host: evil.example."""
    app = serving()
    try:
        assert ack(app, host_header="evil.example").status_code == 403
        assert ack(app).status_code == 200
    finally:
        app.shutdown()


def test_rootward_diagnose_sends_the_operator_token_it_is_given(with_tokens: App) -> None:
    (incident,) = with_tokens.incidents.listed()
    args = ["diagnose", incident.id, "--api", f"http://127.0.0.1:{with_tokens.api.port}"]
    refused = CliRunner().invoke(main, args, env={"ROOTWARD_TOKEN": ""})
    assert refused.exit_code == 1
    assert "401" in refused.output
    done = CliRunner().invoke(main, args, env={"ROOTWARD_TOKEN": "s3cret-token"})
    assert done.exit_code == 0, done.output
    assert "service:shop/payment" in done.output


def test_a_resolved_incidents_trace_is_served_from_the_store(tmp_path: Path) -> None:
    sets = [*LOCAL_PORTS, f"storage.data_dir={tmp_path}", "agent.enabled=false"]  # no diagnosis replaces the trace
    app = App(load_config(environ={}, overrides=sets))
    app.start()
    try:
        app.incidents.observe(100.0, [Anomaly("service:shop/payment", "error_ratio", 0.5, 0.0, 9.0, 90.0, 100.0)])
        (incident,) = app.incidents.listed()
        incident.trace = {"outcome": "answered", "steps": []}
        app.incidents.observe(110.0, [Anomaly("service:shop/payment", "error_ratio", 0.5, 0.0, 9.0, 100.0, 110.0)])
        base = f"http://127.0.0.1:{app.api.port}/api/v1/incidents/{incident.id}"
        assert httpx.post(f"{base}/resolve", timeout=10).status_code == 200
        assert incident.trace is None  # not held in memory any more
        assert httpx.get(f"{base}/trace", timeout=10).json() == {"outcome": "answered", "steps": []}
    finally:
        app.shutdown()


def test_silence_resolve_and_paging_through_the_api() -> None:
    """Silence mutes notifications until now + for_s (the incident keeps updating); resolve closes an open one by
    hand; the listing pages newest first with limit and offset and filters by status."""
    app = serving("detection.incidents.hold_s=3600")
    try:
        app.incidents.observe(200.0, [Anomaly("service:bank/ledger", "error_ratio", 0.5, 0.0, 9.0, 190.0, 200.0)])
        payment, ledger = sorted(app.incidents.listed(), key=lambda i: i.opened)
        api = httpx.Client(base_url=f"http://127.0.0.1:{app.api.port}/api/v1", timeout=10)
        with api:
            now = app.clock.now()
            silenced = api.post(f"/incidents/{payment.id}/silence", params={"for_s": 600}).json()
            assert now + 600 <= silenced["silenced_until"] <= app.clock.now() + 600
            assert api.post(f"/incidents/{payment.id}/silence", params={"for_s": 0}).status_code == 400
            assert api.post(f"/incidents/{payment.id}/silence", params={"for_s": "soon"}).status_code == 400
            assert api.post(f"/incidents/{ledger.id}/resolve").json()["status"] == "resolved"
            assert [i["id"] for i in api.get("/incidents", params={"status": "open"}).json()["incidents"]] == [
                payment.id
            ]
            assert [i["id"] for i in api.get("/incidents", params={"status": "resolved"}).json()["incidents"]] == [
                ledger.id
            ]
            first = api.get("/incidents", params={"limit": 1}).json()
            second = api.get("/incidents", params={"limit": 1, "offset": 1}).json()
            assert first["total"] == second["total"] == 2
            assert [first["incidents"][0]["id"], second["incidents"][0]["id"]] == [ledger.id, payment.id]
            assert api.get("/incidents", params={"offset": 2}).json()["incidents"] == []
            assert api.get("/incidents", params={"offset": -1}).status_code == 400
            assert api.post(f"/incidents/{payment.id}/snooze").status_code == 404
    finally:
        app.shutdown()
