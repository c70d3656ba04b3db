"""Incidents as Alertmanager alerts (rootward/alertmanager.py), posted to a local HTTP server that answers as
Alertmanager's /api/v2/alerts does and records what it was sent."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from rootward.alertmanager import ALERTNAME, AlertmanagerNotifier, AlertmanagerSettings
from rootward.config import LOCAL_PORTS, NOTHING_ON_DISK, load_config
from rootward.detector.detector import Anomaly
from rootward.detector.incidents import Incident
from rootward.errors import ConfigError


def incident(n: int = 1) -> Incident:
    inc = Incident(f"inc-{n}", 1_000.0, 1_010.0)
    inc.add(Anomaly("service:shop/payment", "error_ratio", 0.4, 0.01, 12.0, 1_000.0, 1_010.0), 1_010.0)
    inc.add(
        Anomaly("service:shop/payment", "log_template:7 token=sk-live-abcdef1234567890", 9, 0, 8.0, 1_000.0, 1_010.0),
        1_010.0,
    )
    inc.candidates = ["service:shop/payment", "service:shop/checkout"]
    return inc


class Alertmanager:
    """What the server was posted: each request's alerts, and its headers."""

    def __init__(self) -> None:
        self.posts: list[list[dict[str, Any]]] = []
        self.headers: list[dict[str, str]] = []

    def __call__(self, request: Request) -> Response:
        self.posts.append(json.loads(request.get_data()))
        self.headers.append(dict(request.headers))
        return Response("", 200)


@pytest.fixture
def alertmanager(httpserver: HTTPServer) -> Alertmanager:
    recorder = Alertmanager()
    httpserver.expect_request("/api/v2/alerts", method="POST").respond_with_handler(recorder)
    return recorder


def notifier(httpserver: HTTPServer, outcomes: list[str], now: list[float], **kw: Any) -> AlertmanagerNotifier:
    settings = AlertmanagerSettings(urls=(httpserver.url_for("/"),), interval_s=3600, **kw)
    return AlertmanagerNotifier(settings, outcomes.append, clock=lambda: now[0], background=False)


def test_an_incident_fires_as_an_alert_and_ends_when_it_resolves(
    httpserver: HTTPServer, alertmanager: Alertmanager
) -> None:
    outcomes: list[str] = []
    now = [1_020.0]
    am = notifier(
        httpserver, outcomes, now, labels={"cluster": "prod-eu"}, headers={"Authorization": "Bearer am-token"},
        page_url="https://rootward.example",
    )  # fmt: skip
    inc = incident()
    am.incident_changed(inc, "opened")
    am.post_once()
    (alert,) = alertmanager.posts[-1]
    assert alert["labels"] == {
        "alertname": ALERTNAME, "incident": "inc-1", "severity": inc.severity, "cluster": "prod-eu",
        "root_cause": "service:shop/payment", "service": "payment", "namespace": "shop",
    }  # fmt: skip
    assert alert["startsAt"] == "1970-01-01T00:16:40.000Z"
    assert alert["endsAt"] == "1970-01-01T04:17:00.000Z"  # 4 intervals ahead: it ends by itself if Rootward stops
    assert alert["generatorURL"] == "https://rootward.example/incidents/inc-1"
    assert "service:shop/payment error_ratio: 0.4" in alert["annotations"]["description"]
    assert "sk-live-abcdef1234567890" not in json.dumps(alert)  # telemetry's words are redacted
    assert alertmanager.headers[-1]["Authorization"] == "Bearer am-token"
    inc.candidates = ["service:shop/checkout"]  # the diagnosis changes its mind: the same alert, told anew
    am.incident_changed(inc, "updated")
    am.post_once()
    (again,) = alertmanager.posts[-1]
    assert again["labels"] == alert["labels"]
    assert "likely root cause service:shop/checkout" in again["annotations"]["summary"]
    inc.status, inc.resolved = "resolved", 1_100.0
    am.incident_changed(inc, "resolved")
    now[0] = 1_200.0
    for _ in range(3):  # the end is posted three times, then the incident is forgotten
        am.post_once()
        assert alertmanager.posts[-1][0]["endsAt"] == "1970-01-01T00:18:20.000Z"
    posted = len(alertmanager.posts)
    am.post_once()
    assert len(alertmanager.posts) == posted  # nothing left to post
    am.close()
    assert outcomes == ["sent"] * 5


def test_a_silence_in_rootward_is_a_silence_in_alertmanager_and_the_alert_keeps_firing(
    httpserver: HTTPServer, alertmanager: Alertmanager
) -> None:
    silences: list[dict[str, Any]] = []
    httpserver.expect_request("/api/v2/silences", method="POST").respond_with_handler(
        lambda request: silences.append(json.loads(request.get_data())) or Response("{}", 200)
    )
    now = [1_020.0]
    am = notifier(httpserver, [], now)
    quiet = incident(1)
    quiet.silenced_until = 2_000.0
    am.incident_changed(quiet, "updated")
    am.post_once()
    am.post_once()
    assert [a["labels"]["incident"] for a in alertmanager.posts[-1]] == ["inc-1"]  # not ended by the silence
    (silence,) = silences  # once
    assert silence["matchers"] == [{"name": "incident", "value": "inc-1", "isRegex": False, "isEqual": True}]
    assert silence["endsAt"] == "1970-01-01T00:33:20.000Z"
    am.close()


def test_every_alertmanager_gets_the_alerts_when_one_is_down(
    httpserver: HTTPServer, alertmanager: Alertmanager
) -> None:
    outcomes: list[str] = []
    settings = AlertmanagerSettings(urls=("http://127.0.0.1:9", httpserver.url_for("/")), interval_s=3600, timeout_s=1)
    am = AlertmanagerNotifier(settings, outcomes.append, background=False)
    inc = incident()
    am.incident_changed(inc, "opened")
    assert am.post_once() is True  # one of the cluster took them
    assert len(alertmanager.posts) == 1
    assert outcomes == ["failed", "sent"]
    inc.status, inc.resolved = "resolved", 1_015.0
    am.incident_changed(inc, "resolved")
    for _ in range(3):
        am.post_once()
    assert am.post_once() is True
    assert len(alertmanager.posts) == 4  # the end three times, then nothing held
    am.close()


def test_an_escalation_ends_the_warning_and_a_restart_posts_the_same_alert(
    httpserver: HTTPServer, alertmanager: Alertmanager
) -> None:
    stored: list[tuple[str, str, str]] = []
    now = [1_020.0]
    settings = AlertmanagerSettings(urls=(httpserver.url_for("/"),), interval_s=3600)
    am = AlertmanagerNotifier(settings, clock=lambda: now[0], background=False, stored=lambda *s: stored.append(s))
    inc = Incident("inc-9", 1_000.0, 1_010.0)
    inc.add(Anomaly("service:shop/cart", "p95", 0.9, 0.1, 6.0, 1_000.0, 1_010.0), 1_010.0)
    inc.candidates = ["service:shop/cart"]
    am.incident_changed(inc, "opened")
    am.post_once()
    (first,) = alertmanager.posts[-1]
    inc.add(Anomaly("service:shop/cart", "error_ratio", 0.5, 0.0, 12.0, 1_010.0, 1_020.0), 1_020.0)
    assert inc.severity != first["labels"]["severity"]
    am.incident_changed(inc, "updated")
    am.post_once()
    ended, current = alertmanager.posts[-1]
    assert ended["labels"] == first["labels"]
    assert ended["endsAt"] == "1970-01-01T00:17:00.000Z"  # now: the warning is over
    assert current["labels"] == {**first["labels"], "severity": inc.severity}
    assert json.loads(stored[-1][2]) == current["labels"]
    restarted = AlertmanagerNotifier(settings, clock=lambda: now[0], background=False)
    inc.candidates = ["service:shop/checkout"]  # a restart reads the incident back with what it was told
    restarted.incident_changed(inc, "updated")
    restarted.post_once()
    assert alertmanager.posts[-1][0]["labels"] == current["labels"]


def test_shutdown_does_not_wait_past_its_deadline_for_a_hanging_alertmanager(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/api/v2/alerts").respond_with_handler(lambda r: time.sleep(3) or Response("", 200))
    settings = AlertmanagerSettings(urls=(httpserver.url_for("/"),) * 3, interval_s=3600, timeout_s=10)
    am = AlertmanagerNotifier(settings, background=False)
    am.incident_changed(incident(), "opened")
    started = time.monotonic()
    am.close(timeout_s=1.0)
    assert time.monotonic() - started < 2.5


def test_an_unreachable_alertmanager_never_blocks_or_leaks_the_header(caplog: pytest.LogCaptureFixture) -> None:
    outcomes: list[str] = []
    settings = AlertmanagerSettings(
        urls=("http://127.0.0.1:9",), interval_s=3600, headers={"Authorization": "Bearer am-secret"}, timeout_s=1
    )
    am = AlertmanagerNotifier(settings, outcomes.append, background=False)
    caplog.set_level(logging.DEBUG)
    am.incident_changed(incident(), "opened")
    assert am.post_once() is False
    am.close()
    assert "failed" in outcomes
    assert "am-secret" not in caplog.text


def test_the_app_sends_incidents_to_a_configured_alertmanager_only() -> None:
    from rootward.app import App

    base = [*LOCAL_PORTS, *NOTHING_ON_DISK]
    off = App(load_config(environ={}, overrides=base))
    on = App(load_config(environ={}, overrides=[*base, "notifications.alertmanager.urls=[http://127.0.0.1:9]"]))
    try:
        assert off.alertmanager not in off.incidents.sinks
        assert on.alertmanager in on.incidents.sinks
    finally:
        off.shutdown()
        on.shutdown()
    with pytest.raises(ConfigError, match=r"notifications.alertmanager.labels: 'bad-name' is not a label name"):
        load_config(environ={}, overrides=["notifications.alertmanager.labels={bad-name: x}"])


def test_a_change_is_posted_at_once_from_the_notifiers_thread(
    httpserver: HTTPServer, alertmanager: Alertmanager
) -> None:
    settings = AlertmanagerSettings(urls=(httpserver.url_for("/"),), interval_s=3600)
    am = AlertmanagerNotifier(settings)
    am.incident_changed(incident(), "opened")
    deadline = time.monotonic() + 5
    while not alertmanager.posts and time.monotonic() < deadline:
        time.sleep(0.01)
    am.close()
    assert alertmanager.posts
    assert alertmanager.posts[0][0]["labels"]["incident"] == "inc-1"
