"""Rootward's own endpoint: Prometheus metrics, liveness and readiness, on a running App."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from rootward.app import App
from rootward.config import LOCAL_PORTS, NOTHING_ON_DISK, load_config
from rootward.testing import RecordingConsumer

from collectors import wait_until

LOCAL = [*LOCAL_PORTS, *NOTHING_ON_DISK]


TEN_SPANS = ExportTraceServiceRequest(
    resource_spans=[{"scope_spans": [{"spans": [{"trace_id": b"t" * 16, "span_id": b"s" * 8}] * 10}]}]
).SerializeToString()


@pytest.fixture
def app() -> Iterator[App]:
    app = App(load_config(environ={}, overrides=[*LOCAL, "receiver.queue.max_items=100"]))
    app.start()
    yield app
    app.shutdown()


def test_metrics_endpoint_serves_the_receiver_counters(app: App) -> None:
    body = b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"EEE19B7EC3C1B174"}]}]}]}'
    r = httpx.post(
        f"http://127.0.0.1:{app.receiver.http.port}/v1/traces",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 200
    app.receiver.queue.wait_idle()
    text = httpx.get(f"http://127.0.0.1:{app.api.port}/metrics").text
    assert 'rootward_receiver_items_total{outcome="accepted",reason="",signal="traces"} 1.0' in text
    assert 'rootward_receiver_requests_total{result="ok",signal="traces",transport="http"} 1.0' in text
    assert "rootward_receiver_decode_seconds_bucket" in text


def test_topology_endpoint_serves_the_live_graph(app: App) -> None:
    body = (
        b'{"resourceSpans":['
        b'{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"web"}}]},"scopeSpans":[{"spans":['
        b'{"traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"EEE19B7EC3C1B174","kind":3}]}]},'
        b'{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"db-api"}}]},"scopeSpans":[{"spans":['
        b'{"traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"EEE19B7EC3C1B175","parentSpanId":"EEE19B7EC3C1B174",'
        b'"kind":2,"status":{"code":2}}]}]}]}'
    )
    url = f"http://127.0.0.1:{app.receiver.http.port}/v1/traces"
    assert httpx.post(url, content=body, headers={"content-type": "application/json"}).status_code == 200
    app.receiver.queue.wait_idle()
    graph = httpx.get(f"http://127.0.0.1:{app.api.port}/api/v1/topology").json()
    assert {e["id"] for e in graph["entities"]} == {"service:/web", "service:/db-api"}
    (edge,) = graph["edges"]
    assert (edge["source"], edge["target"], edge["kind"], edge["requests"], edge["errors"]) == (
        "service:/web",
        "service:/db-api",
        "calls",
        1,
        1,
    )


#: What health says of a Rootward with no executor and nothing to forward to.
ALONE = {"detection": "ok", "acting": False, "lease_holder": None, "forwards_to": None, "forward_queue": 0}


def test_health_and_readiness_report_ok_while_running(app: App) -> None:
    base = f"http://127.0.0.1:{app.api.port}"
    assert httpx.get(f"{base}/healthz").status_code == 200
    ready = httpx.get(f"{base}/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"alive": True, "ready": True, "queue_items": 0, "queue_capacity": 100, **ALONE}


def test_ready_while_the_queue_is_full_and_not_alive_after_shutdown() -> None:
    slow = RecordingConsumer(delay=1.0)
    app = App(load_config(environ={}, overrides=[*LOCAL, "receiver.queue.max_items=10"]), consumer=slow)
    app.start()
    try:
        url = f"http://127.0.0.1:{app.receiver.http.port}/v1/traces"
        assert httpx.post(url, content=TEN_SPANS, headers={"content-type": "application/x-protobuf"}).is_success
        ready = httpx.get(f"http://127.0.0.1:{app.api.port}/readyz")
        assert ready.status_code == 200  # the receiver pushes back (429) instead; the Services keep the pod
        assert ready.json()["queue_items"] == 10
        refused = httpx.post(url, content=TEN_SPANS, headers={"content-type": "application/x-protobuf"})
        assert refused.status_code == 429
    finally:
        app.shutdown()
    stopped = {**ALONE, "detection": "off"}
    assert app.health() == {"alive": False, "ready": False, "queue_items": 0, "queue_capacity": 10, **stopped}


def test_detection_that_stops_closing_its_windows_fails_the_liveness_probe() -> None:
    fast = ["detection.window_s=0.05", "detection.learn_after_s=5"]
    app = App(load_config(environ={}, overrides=[*LOCAL, *fast]))
    app.start()
    try:
        base = f"http://127.0.0.1:{app.api.port}"
        assert httpx.get(f"{base}/healthz").json()["detection"] == "ok"
        assert app._ticker is not None

        def fails() -> None:
            raise RuntimeError("a detector bug")

        app._ticker.fn = fails
        assert wait_until(lambda: app.telemetry.value("rootward_detector_tick_failures_total") >= 3, 10)
        assert httpx.get(f"{base}/healthz").status_code == 200  # not yet a minute without a good close
        app._ticker.last_ok = time.monotonic() - 61
        health = httpx.get(f"{base}/healthz")
        assert health.status_code == 503
        assert health.json()["detection"] == "stalled"
        assert httpx.get(f"{base}/readyz").status_code == 503
    finally:
        app.shutdown()


def test_every_route_is_described_in_the_openapi_document() -> None:
    from rootward.api import build_api
    from rootward.api_actions import approval_routes
    from rootward.config import Approvals
    from rootward.detector.incidents import Incidents
    from rootward.openapi import SPEC
    from rootward.page import PAGE_PATHS
    from rootward.telemetry import Telemetry
    from rootward.topology import TopologyGraph

    graph = TopologyGraph()
    app = build_api(Telemetry(), lambda: {"alive": True, "ready": True}, graph, None, Incidents(graph))
    routes = {route.path for route in app.routes}  # type: ignore[attr-defined]
    # The web page's routes serve HTML, not the API: rootward/page.py lists them, and the document leaves them out.
    assert routes >= PAGE_PATHS
    routes -= PAGE_PATHS
    # With an executor (Kubernetes access), the approval routes too; built here without one to list their paths.
    settings = Approvals(slack_signing_secret="s")  # type: ignore[arg-type]
    routes |= {route.path for route in approval_routes(None, settings)}  # type: ignore[arg-type]
    assert routes == set(SPEC["paths"])
    for path, item in SPEC["paths"].items():
        for operation in item.values():
            assert operation["summary"], path
            assert "200" in operation["responses"], path
            names = [p["name"] for p in operation["parameters"]]
            assert len(names) == len(set(names)), path


def test_a_404_says_why_and_the_brake_on_a_rootward_without_actions_says_they_are_off() -> None:
    from click.testing import CliRunner

    from rootward.app import App
    from rootward.cli import main
    from rootward.config import LOCAL_PORTS, NOTHING_ON_DISK, load_config

    app = App(load_config(environ={}, overrides=[*LOCAL_PORTS, *NOTHING_ON_DISK]))
    app.start()
    try:
        base = f"http://127.0.0.1:{app.api.port}"
        unknown = httpx.get(f"{base}/api/v1/nope", timeout=10)
        assert unknown.status_code == 404
        assert unknown.json() == {"message": "no such route: /api/v1/nope"}
        for path in ("/api/v1/approvals", "/api/v1/actions/pause", "/api/v1/audit"):
            off = httpx.get(base + path, timeout=10)
            assert off.status_code == 404
            assert "actions are off on this Rootward (actions.enabled is false)" in off.json()["message"]
        status = CliRunner().invoke(main, ["actions", "status", "--api", base], env={"ROOTWARD_TOKEN": ""})
        assert status.exit_code == 1
        assert "404: actions are off on this Rootward" in status.output
    finally:
        app.shutdown()
