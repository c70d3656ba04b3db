"""Slack notifications through slack_sdk against a local HTTP server (pytest-httpserver) that records the posts."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from rootward.agent.redact import Redactor
from rootward.detector.detector import Anomaly
from rootward.detector.incidents import Incident
from rootward.slack import SlackNotifier, SlackSettings, render

TOKEN = "xoxb-not-a-real-token-123"


def incident(n: int = 1, status: str = "open") -> Incident:
    inc = Incident(f"inc-{n}", 1000.0, 1010.0)
    inc.add(Anomaly("service:shop/payment", "error_ratio", 0.4, 0.01, 12.0, 1000.0, 1010.0), 1010.0)
    inc.add(Anomaly("service:shop/checkout", "p95", 0.9, 0.1, 6.0, 1000.0, 1010.0), 1010.0)
    inc.candidates = ["service:shop/payment", "service:shop/checkout"]
    if status == "resolved":
        inc.status, inc.resolved = "resolved", 1200.0
    return inc


class Recorder:
    """Records the Web API calls and answers ok, with a ts per posted message."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, request: Request) -> Response:
        method = request.path.rsplit("/", 1)[-1]
        body = json.loads(request.get_data() or b"{}") if request.is_json else dict(request.form)
        self.calls.append((method, body))
        return Response(
            json.dumps({"ok": True, "ts": f"{len(self.calls)}.0", "channel": "C1"}),
            200,
            content_type="application/json",
        )


def web(httpserver: HTTPServer, **kw: Any) -> tuple[SlackNotifier, Recorder, list[str]]:
    recorder = Recorder()
    httpserver.expect_request("/api/chat.postMessage").respond_with_handler(recorder)
    httpserver.expect_request("/api/chat.update").respond_with_handler(recorder)
    outcomes: list[str] = []
    settings = SlackSettings(bot_token=TOKEN, channel="#incidents", base_url=httpserver.url_for("/api/"), **kw)
    return SlackNotifier(settings, outcomes.append), recorder, outcomes


def test_an_incident_is_posted_once_then_edited_in_place_as_it_changes(httpserver: HTTPServer) -> None:
    notifier, recorder, outcomes = web(httpserver, page_url="https://rootward.example")
    inc = incident()
    notifier.incident_changed(inc, "opened")
    inc.add(Anomaly("service:shop/frontend", "p99", 2.0, 0.2, 8.0, 1010.0, 1020.0), 1020.0)
    notifier.incident_changed(inc, "updated")
    notifier.incident_changed(inc, "updated")  # nothing changed since: not posted again
    inc.status, inc.resolved = "resolved", 1300.0
    notifier.incident_changed(inc, "resolved")
    notifier.close()
    assert [m for m, _ in recorder.calls] == ["chat.postMessage", "chat.update", "chat.update"]
    first = recorder.calls[0][1]
    assert first["channel"] == "#incidents"
    assert "service:shop/payment" in first["text"]
    assert "https://rootward.example/incidents/inc-1" in json.dumps(first["blocks"])
    assert all(body["ts"] == "1.0" for _, body in recorder.calls[1:])
    assert "resolved" in recorder.calls[-1][1]["text"]
    assert outcomes.count("sent") == 3
    assert "unchanged" in outcomes


def test_a_webhook_gets_open_and_resolve_but_not_every_update(httpserver: HTTPServer) -> None:
    posts: list[dict[str, Any]] = []

    def hook(request: Request) -> Response:
        posts.append(json.loads(request.get_data()))
        return Response("ok", 200)

    httpserver.expect_request("/hook").respond_with_handler(hook)
    notifier = SlackNotifier(SlackSettings(webhook_url=httpserver.url_for("/hook")))
    notifier.incident_changed(incident(), "opened")
    notifier.incident_changed(incident(), "updated")
    notifier.incident_changed(incident(status="resolved"), "resolved")
    notifier.close()
    assert len(posts) == 2
    assert ":white_check_mark:" in posts[1]["text"]


def test_429_is_retried_after_its_retry_after(httpserver: HTTPServer) -> None:
    recorder = Recorder()
    httpserver.expect_ordered_request("/api/chat.postMessage").respond_with_response(
        Response("{}", 429, headers={"Retry-After": "0"})
    )
    httpserver.expect_ordered_request("/api/chat.postMessage").respond_with_handler(recorder)
    outcomes: list[str] = []
    settings = SlackSettings(bot_token=TOKEN, channel="#c", base_url=httpserver.url_for("/api/"))
    notifier = SlackNotifier(settings, outcomes.append)
    notifier.incident_changed(incident(), "opened")
    notifier.close()
    assert outcomes == ["sent"]
    assert len(recorder.calls) == 1


def test_a_server_error_is_retried_and_the_retry_is_sent(httpserver: HTTPServer) -> None:
    recorder = Recorder()
    httpserver.expect_ordered_request("/api/chat.postMessage").respond_with_response(Response("busy", 503))
    httpserver.expect_ordered_request("/api/chat.postMessage").respond_with_handler(recorder)
    outcomes: list[str] = []
    settings = SlackSettings(bot_token=TOKEN, channel="#c", base_url=httpserver.url_for("/api/"), retries=1)
    notifier = SlackNotifier(settings, outcomes.append)
    notifier.incident_changed(incident(), "opened")
    notifier.close()
    assert outcomes == ["sent"]
    assert len(recorder.calls) == 1
    assert len(httpserver.log) == 2  # the 503, then the retry


def test_an_outage_is_counted_and_never_blocks_or_leaks_the_token(
    httpserver: HTTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    httpserver.expect_request("/api/chat.postMessage").respond_with_response(Response("down", 503))
    outcomes: list[str] = []
    settings = SlackSettings(bot_token=TOKEN, channel="#c", base_url=httpserver.url_for("/api/"), retries=1)
    notifier = SlackNotifier(settings, outcomes.append)
    with caplog.at_level(logging.DEBUG):
        notifier.incident_changed(incident(), "opened")
        notifier.close()
    assert outcomes == ["failed"]
    assert TOKEN not in caplog.text


def test_a_message_slack_did_not_take_is_sent_again_later(httpserver: HTTPServer) -> None:
    recorder = Recorder()
    for _ in range(2):  # an outage longer than slack_sdk's own retry: the first attempt and its retry
        httpserver.expect_ordered_request("/api/chat.postMessage").respond_with_response(Response("down", 503))
    httpserver.expect_ordered_request("/api/chat.postMessage").respond_with_handler(recorder)
    outcomes: list[str] = []
    settings = SlackSettings(
        bot_token=TOKEN, channel="#c", base_url=httpserver.url_for("/api/"), retries=1, resend_after_s=0.05
    )
    notifier = SlackNotifier(settings, outcomes.append)
    inc = incident()
    notifier.incident_changed(inc, "opened")
    deadline = time.monotonic() + 10
    while "sent" not in outcomes and time.monotonic() < deadline:
        time.sleep(0.02)
    notifier.close()
    assert outcomes == ["failed", "sent"]
    assert len(recorder.calls) == 1
    assert inc.notified == {"slack": "1.0"}


def test_a_message_is_given_up_after_its_resends_and_a_newer_one_replaces_it(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/api/chat.postMessage").respond_with_response(Response("down", 503))
    outcomes: list[str] = []
    settings = SlackSettings(
        bot_token=TOKEN, channel="#c", base_url=httpserver.url_for("/api/"), retries=0, resend=2, resend_after_s=0.02
    )
    notifier = SlackNotifier(settings, outcomes.append)
    notifier.incident_changed(incident(1), "opened")
    deadline = time.monotonic() + 10
    while "given_up" not in outcomes and time.monotonic() < deadline:
        time.sleep(0.02)
    assert outcomes == ["failed", "failed", "failed", "given_up"]  # the first attempt, then two more
    outcomes.clear()
    settings_slow = SlackSettings(
        bot_token=TOKEN, channel="#c", base_url=httpserver.url_for("/api/"), retries=0, resend=1, resend_after_s=60
    )
    slow = SlackNotifier(settings_slow, outcomes.append)
    two = incident(2)
    slow.incident_changed(two, "opened")
    two.add(Anomaly("service:shop/cart", "p99", 2.0, 0.2, 8.0, 1010.0, 1020.0), 1020.0)
    slow.incident_changed(two, "updated")  # the newer rendering replaces the one waiting to be sent again
    slow.flush()
    assert len(slow._resend) == 1
    assert slow._resend["inc-2"][1].change == "updated"
    slow.close()
    notifier.close()


def test_past_the_rate_limit_new_incidents_go_out_as_one_digest(httpserver: HTTPServer) -> None:
    notifier, recorder, outcomes = web(httpserver, max_per_minute=2)
    for n in range(5):
        notifier.incident_changed(incident(n), "opened")
    notifier.close()
    posted = [body["text"] for _, body in recorder.calls]
    assert len(posted) == 3
    assert posted[-1] == "3 more incidents opened"
    assert outcomes.count("digested") == 3


def test_silenced_incidents_are_not_posted_and_a_full_queue_drops(httpserver: HTTPServer) -> None:
    notifier, _, outcomes = web(httpserver, queue_size=1)
    silent = incident()
    silent.silenced_until = 4_000_000_000.0
    notifier.incident_changed(silent, "opened")
    for n in range(50):  # the worker cannot keep up with a queue of one
        notifier.incident_changed(incident(n + 10), "opened")
    notifier.close()
    assert "silenced" in outcomes
    assert "dropped" in outcomes


def test_nothing_configured_sends_nothing() -> None:
    notifier = SlackNotifier(SlackSettings())
    notifier.incident_changed(incident(), "opened")
    notifier.close()
    assert not notifier.configured


def test_the_message_names_the_suspects_and_anomalies_without_raw_text() -> None:
    text, blocks = render(incident())
    assert text.startswith(":red_circle: Incident inc-1: open")
    rendered = json.dumps(blocks)
    assert "error_ratio: 0.4 (expected 0.01, z +12.0)" in rendered
    assert "2 entities affected" in rendered


def test_the_message_says_how_the_affected_services_connect() -> None:
    _, blocks = render(incident(), links=[("service:shop/checkout", "service:shop/payment")])
    assert "2 entities affected: `service:shop/checkout` calls `service:shop/payment`" in json.dumps(blocks)
    many = [(f"service:shop/c{i}", "service:shop/payment") for i in range(9)]
    _, blocks = render(incident(), links=many)
    assert "`service:shop/c5` calls `service:shop/payment`, and 3 more calls" in json.dumps(blocks)


def test_telemetrys_words_cannot_mention_a_channel_or_link_anywhere() -> None:
    """Service and span names are the sender's: a service named <!channel> or a span name with a link is text."""
    inc = Incident("inc-9", 1000.0, 1010.0)
    hostile = "service:shop/<!channel>"
    inc.add(
        Anomaly(hostile, "span_missing:service:shop/x <https://evil.example|click> `x`", 1.0, 0.0, 9.0, 1000.0, 1010.0),
        1010.0,
    )
    inc.candidates = [hostile]
    text, blocks = render(inc)
    rendered = json.dumps(blocks) + text
    assert "<!channel>" not in rendered
    assert "<https://evil.example" not in rendered
    assert "&lt;!channel&gt;" in rendered


def test_secrets_in_telemetrys_words_are_redacted_before_slack_sees_them() -> None:
    inc = Incident("inc-8", 1000.0, 1010.0)
    signal = "span_missing:service:shop/x POST /cust-123456/login?password=hunter2secret&user=bob@example.com"
    inc.add(Anomaly("service:shop/x", signal, 1.0, 0.0, 9.0, 1000.0, 1010.0), 1010.0)
    inc.candidates = ["service:shop/x"]
    text, blocks = render(inc)
    rendered = json.dumps(blocks) + text
    assert "hunter2secret" not in rendered
    assert "bob@example.com" not in rendered
    assert "password=[REDACTED:api_key]" in rendered
    assert "cust-123456" in rendered  # not a secret unless you say so (agent.llm.redaction.patterns)
    _, custom = render(inc, redact=Redactor.build(True, {"customer": r"cust-\d{6}"}, []).text)
    assert "cust-123456" not in json.dumps(custom)


def test_linked_changes_are_in_the_message() -> None:
    from rootward.detector.kube import Change

    inc = incident()
    inc.changes = [Change(990.0, "workload:shop/deployment/payment", "rollout", "revision 7")]
    _, blocks = render(inc)
    assert "rollout `workload:shop/deployment/payment` revision 7" in json.dumps(blocks)


def test_after_a_restart_the_incidents_message_is_edited_not_posted_again(
    httpserver: HTTPServer, tmp_path: Path
) -> None:
    from rootward.detector.incidents import Incidents
    from rootward.detector.store import IncidentStore
    from rootward.topology import TopologyGraph

    notifier, recorder, _ = web(httpserver)
    inc = incident()
    notifier.incident_changed(inc, "opened")
    notifier.flush()
    assert inc.notified == {"slack": "1.0"}  # kept on the incident
    store = IncidentStore(tmp_path / "incidents.db")
    store.open()
    inc.add(Anomaly("service:shop/frontend", "p99", 2.0, 0.2, 8.0, 1010.0, 1020.0), 1020.0)
    store.incident_changed(inc, "updated")  # the next change stores it with the incident
    store.close()
    notifier.close()
    restarted = Incidents(TopologyGraph())
    again = IncidentStore(tmp_path / "incidents.db")
    again.open()
    assert again.load(restarted) == 1
    (restored,) = restarted.listed()
    assert restored.notified == {"slack": "1.0"}
    notifier = SlackNotifier(notifier.settings)  # the restarted process's, on the same server
    restored.status, restored.resolved = "resolved", 1300.0
    notifier.incident_changed(restored, "resolved")
    notifier.close()
    again.close()
    assert [(m, body.get("ts")) for m, body in recorder.calls] == [("chat.postMessage", None), ("chat.update", "1.0")]


def slack_error(code: str) -> Response:
    return Response(json.dumps({"ok": False, "error": code}), 200, content_type="application/json")


def test_a_refused_token_is_given_up_at_once_and_a_deleted_message_is_posted_anew(httpserver: HTTPServer) -> None:
    httpserver.expect_ordered_request("/api/chat.postMessage").respond_with_response(slack_error("invalid_auth"))
    outcomes: list[str] = []
    settings = SlackSettings(bot_token=TOKEN, channel="#c", base_url=httpserver.url_for("/api/"), resend_after_s=0.01)
    notifier = SlackNotifier(settings, outcomes.append)
    notifier.incident_changed(incident(1), "opened")
    notifier.flush()
    time.sleep(0.1)
    notifier.close()
    assert outcomes == ["failed", "given_up"]  # no resend would be taken
    recorder = Recorder()
    httpserver.clear()
    httpserver.expect_request("/api/chat.update").respond_with_response(slack_error("message_not_found"))
    httpserver.expect_request("/api/chat.postMessage").respond_with_handler(recorder)
    outcomes.clear()
    stored: list[tuple[str, str, str]] = []
    notifier = SlackNotifier(settings, outcomes.append, stored=lambda *told: stored.append(told))
    inc = incident(2)
    inc.notified = {"slack": "99.0"}  # posted before a restart, deleted in Slack since
    inc.status, inc.resolved = "resolved", 1300.0
    notifier.incident_changed(inc, "resolved")
    notifier.close()
    assert outcomes == ["sent"]
    assert [m for m, _ in recorder.calls] == ["chat.postMessage"]
    assert inc.notified == {"slack": "1.0"}
    assert stored == [("inc-2", "slack", "1.0")]  # kept at once, not with the incident's next change


def test_where_an_incident_was_told_is_stored_before_its_next_change(tmp_path: Path) -> None:
    from rootward.detector.incidents import Incidents
    from rootward.detector.store import IncidentStore
    from rootward.topology import TopologyGraph

    store = IncidentStore(tmp_path / "incidents.db")
    store.open()
    inc = incident()
    store.incident_changed(inc, "opened")  # stored before Slack answered
    store.note_message(inc.id, "slack", "5.0")
    store.note_message(inc.id, "webhook", "x")  # another notifier's beside it
    store.close()
    restored = Incidents(TopologyGraph())
    again = IncidentStore(tmp_path / "incidents.db")
    again.open()
    again.load(restored)
    again.close()
    assert restored.listed()[0].notified == {"slack": "5.0", "webhook": "x"}
