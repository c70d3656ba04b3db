"""Detection end to end: the synthetic shop sent through the OTel SDK's OTLP exporter into a running App on a
manual clock; payment starts failing, an incident opens with payment first, the API lists and acknowledges it, and
it resolves once payment recovers; a Slack webhook (a local HTTP server) hears of both."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
from click.testing import CliRunner
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from rootward.app import App
from rootward.cli import main
from rootward.clock import ManualClock
from rootward.config import LOCAL_PORTS, NOTHING_ON_DISK, load_config
from rootward.synthetic import Shop

from shop_windows import shop_window

LOCAL = [*LOCAL_PORTS, *NOTHING_ON_DISK]
SETTINGS = [
    "detection.window_s=10",
    "detection.warmup=5",
    "detection.incidents.hold_s=30",
]


def test_an_error_surge_opens_an_incident_ranked_payment_first_and_it_resolves(httpserver: HTTPServer) -> None:
    posts: list[str] = []

    def hook(request: Request) -> Response:
        posts.append(json.loads(request.get_data())["text"])
        return Response("ok", 200)

    httpserver.expect_request("/hook").respond_with_handler(hook)
    clock = ManualClock(1_000.0)
    slack = [f"notifications.slack.webhook_url={httpserver.url_for('/hook')}"]
    app = App(load_config(environ={}, overrides=LOCAL + SETTINGS + slack), clock=clock)
    app.start()
    shop = Shop(f"127.0.0.1:{app.receiver.grpc.port}")

    def window(failing: bool) -> None:
        shop_window(app, shop, clock, failing)

    try:
        for _ in range(8):
            window(False)
        assert app.incidents.listed() == []
        for _ in range(3):
            window(True)
        api = httpx.Client(base_url=f"http://127.0.0.1:{app.api.port}/api/v1", timeout=10)
        check(api, window)
        cli = CliRunner().invoke(main, ["incidents", "--api", f"http://127.0.0.1:{app.api.port}"])
        assert cli.exit_code == 0, cli.output
        assert "resolved" in cli.output
        assert "service:shop/payment" in cli.output
        (incident_id,) = [line.split()[0] for line in cli.output.splitlines()]
        one = CliRunner().invoke(main, ["incidents", "--api", f"http://127.0.0.1:{app.api.port}", "--id", incident_id])
        assert "1. service:shop/payment" in one.output
        assert "service:shop/checkout -> service:shop/payment" in one.output  # the calls around it
        assert "error_ratio" in one.output
        gone = CliRunner().invoke(main, ["incidents", "--api", f"http://127.0.0.1:{app.api.port}", "--id", "nope"])
        assert gone.exit_code == 1
        assert "404" in gone.output
        app.slack.flush()
        assert [p.split(":")[1] for p in posts] == ["red_circle", "white_check_mark"]  # opened, resolved
        assert "service:shop/payment" in posts[0]
        assert app.telemetry.value("rootward_slack_messages_total", outcome="sent") == 2
    finally:
        shop.close()
        app.shutdown()


def check(api: httpx.Client, window: Callable[[bool], None]) -> None:
    with api:
        listed = api.get("/incidents", params={"status": "open"}).json()
        assert listed["total"] == 1
        incident = listed["incidents"][0]
        assert incident["candidates"][0] == "service:shop/payment"
        assert incident["severity"] == "critical"
        assert {a["signal"] for a in incident["anomalies"]} >= {"error_ratio"}
        one = api.get(f"/incidents/{incident['id']}").json()
        near = {e["id"] for e in one["subgraph"]["entities"]}
        assert {"service:shop/payment", "service:shop/checkout"} <= near  # payment and its caller, one hop
        assert {"source": "service:shop/checkout", "target": "service:shop/payment"}.items() <= next(
            e for e in one["subgraph"]["edges"] if e["target"] == "service:shop/payment" and e["kind"] == "calls"
        ).items()
        (errors,) = [s for s in one["series"] if (s["entity"], s["signal"]) == ("service:shop/payment", "error_ratio")]
        assert len(errors["values"]) >= 10
        assert errors["values"][-1] > 0.5 > errors["values"][0]
        assert api.get(f"/incidents/{incident['id']}", params={"depth": 9}).status_code == 400
        too_long = api.get(f"/incidents/{incident['id']}", params={"window": 0})
        assert too_long.status_code == 400
        assert "window must be an integer in 1..360" in too_long.json()["message"]
        acked = api.post(f"/incidents/{incident['id']}/acknowledge").json()
        assert acked["acknowledged"] is True
        for _ in range(10):  # payment recovers; its error logs leave the trailing minute, then past the 30 s hold
            window(False)
        assert api.get(f"/incidents/{incident['id']}").json()["status"] == "resolved"
        assert api.get("/incidents", params={"status": "bogus"}).status_code == 400
        assert api.get("/incidents/nope").status_code == 404
        assert api.post("/incidents/nope/resolve").status_code == 404
        assert api.get("/incidents", params={"limit": "0"}).status_code == 400


def test_a_slow_database_opens_an_incident_on_the_services_that_call_it() -> None:
    """Cart's redis calls slow down (real time: the spans measure it); the slowdown shows on cart and on frontend,
    which calls cart: one signal family on two related services is corroborated by the call graph."""
    clock = ManualClock(1_000.0)
    app = App(load_config(environ={}, overrides=[*LOCAL, "detection.window_s=10", "detection.warmup=5"]), clock=clock)
    app.start()
    shop = Shop(f"127.0.0.1:{app.receiver.grpc.port}")
    try:
        for window in range(14):
            for _ in range(12):
                shop.request(redis_delay_s=0.03 if window >= 9 else 0.0)
            shop.flush()
            app.receiver.queue.wait_idle()
            clock.advance(10)
            app.tick()
        (incident,) = app.incidents.listed()
        assert incident.status == "open"
        assert incident.candidates[0] == "service:shop/cart"  # the nearest instrumented entity to redis
        assert {e for e, _ in incident.anomalies} >= {"service:shop/cart", "service:shop/frontend"}
    finally:
        shop.close()
        app.shutdown()


def test_the_cli_acknowledges_silences_and_resolves_an_incident_with_a_token() -> None:
    from rootward.detector.detector import Anomaly

    clock = ManualClock(1_000.0)
    tokens = ["policies.approvals.tokens={alice: alice-token-123}"]
    app = App(load_config(environ={}, overrides=LOCAL + SETTINGS + tokens), clock=clock)
    app.start()
    try:
        app.incidents.observe(1_000.0, [Anomaly("service:shop/payment", "error_ratio", 0.5, 0.0, 9.0, 990.0, 1_000.0)])
        (incident,) = app.incidents.listed()
        base = ["incidents", "--api", f"http://127.0.0.1:{app.api.port}", "--id", incident.id]
        with_token = {"ROOTWARD_TOKEN": "alice-token-123"}
        refused = CliRunner().invoke(main, [*base, "--ack"], env={"ROOTWARD_TOKEN": ""})
        assert refused.exit_code == 1
        assert "401" in refused.output
        acked = CliRunner().invoke(main, [*base, "--ack"], env=with_token)
        assert acked.exit_code == 0, acked.output
        assert f"{incident.id}: acknowledged (open)" in acked.output
        assert incident.acknowledged
        quiet = CliRunner().invoke(main, [*base, "--silence", "2h"], env=with_token)
        assert quiet.exit_code == 0, quiet.output
        assert "silenced until" in quiet.output
        assert incident.silenced_until == 1_000.0 + 7200
        done = CliRunner().invoke(main, [*base, "--resolve"], env=with_token)
        assert done.exit_code == 0, done.output
        assert f"{incident.id}: resolved (resolved)" in done.output
        bad = CliRunner().invoke(main, [*base, "--silence", "soon"], env=with_token)
        assert bad.exit_code == 2
        assert "a duration such as 90, 30m, 2h or 1d" in bad.output
        alone = CliRunner().invoke(main, ["incidents", "--ack"], env=with_token)
        assert alone.exit_code == 2
        assert "take --id" in alone.output
    finally:
        app.shutdown()
