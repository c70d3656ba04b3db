"""The web page's fixtures: one Rootward with an open incident, its diagnosis and an action waiting for approval,
and one real chromium (Debian's, driven by playwright) for the whole module; a fresh browser context per test."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import kubernetes
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Error, Page, expect, sync_playwright

from rootward.actions import Kube
from rootward.app import App
from rootward.clock import ManualClock
from rootward.config import LOCAL_PORTS, load_config
from rootward.simcluster import deploy, running_cluster
from rootward.synthetic import Shop

from shop_windows import shop_window

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage"]
TOKEN = "alice-s3cret"
#: A service whose name is markup: the page must show it as these characters and create no element from it.
HOSTILE = "<img src=x onerror=document.title='pwned'>"


@dataclass
class Running:
    app: App
    url: str  # the page, ending in /
    incident_id: str
    approval_id: str


@pytest.fixture(scope="module")
def rootward(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """After eight healthy windows of the synthetic shop and four with payment failing: an open incident with
    payment first, its diagnosis, and a rollout restart waiting for a human (actions.mode=approve-all); plus one
    span from a service named :data:`HOSTILE`."""
    data = tmp_path_factory.mktemp("rootward")
    with running_cluster() as cluster:
        kube = Kube(kubernetes.client.ApiClient(kubernetes.client.Configuration(host=cluster.url)))
        deploy(kube, "payment", replicas=2)
        kube.close()
        app = _app(cluster.url, data)
        try:
            yield _failing_payment(app)
        finally:
            app.shutdown()


def _app(cluster_url: str, data: Path) -> App:
    overrides = [
        *LOCAL_PORTS,
        f"storage.data_dir={data}",
        "topology.history.enabled=false",
        "detection.window_s=10",
        "detection.warmup=5",
        "actions.enabled=true",
        "actions.mode=approve-all",
        "actions.verify_timeout_s=2",
        "actions.poll_interval_s=0.1",
        f"actions.kubernetes.host={cluster_url}",
        "actions.lease.enabled=false",
        f"policies.approvals.tokens.alice={TOKEN}",
    ]
    app = App(load_config(environ={}, overrides=overrides), clock=ManualClock(1_000.0))
    app.start()
    return app


def _failing_payment(app: App) -> Running:
    assert isinstance(app.clock, ManualClock)
    assert app.acting is not None
    shop = Shop(f"127.0.0.1:{app.receiver.grpc.port}")
    try:
        for window in range(12):
            shop_window(app, shop, app.clock, failing=window >= 8)
    finally:
        shop.close()
    hostile = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": HOSTILE}}]},
                "scopeSpans": [
                    {
                        "spans": [
                            {"traceId": "5B8EFFF798038103D269B633813FC60C", "spanId": "EEE19B7EC3C1B174", "kind": 2}
                        ]
                    }
                ],
            }
        ]
    }
    sent = httpx.post(f"http://127.0.0.1:{app.receiver.http.port}/v1/traces", json=hostile)
    assert sent.status_code == 200, sent.text
    app.receiver.queue.wait_idle()
    app.topology.flush()
    app.acting.responder.flush()
    (incident,) = app.incidents.listed()
    assert incident.action is not None
    assert incident.action["status"] == "pending_approval", incident.action
    return Running(app, f"http://127.0.0.1:{app.api.port}/", incident.id, incident.action["approval_id"])


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's chromium under playwright (CI installs it: .ci/run). Never `playwright install`: it downloads."""
    if shutil.which(CHROMIUM) is None:
        if os.environ.get("CI"):  # a green CI must not hide a missing browser: .ci/run installs it
            pytest.fail(f"no {CHROMIUM} in CI: .ci/run should have installed Debian's chromium")
        pytest.skip(f"no {CHROMIUM}: `apt-get install chromium` (.ci/run does) to run the web page's tests")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A page in a fresh context (its own sessionStorage); the test fails if the page threw or logged an error,
    which is also how a Content-Security-Policy violation shows ("Refused to ..."). Failed loads are left out: the
    browser logs every 401 and 404 the tests ask for, and every request of the test that cuts the API off."""
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(10_000)
    expect.set_options(timeout=10_000)
    problems: list[str] = []

    def logged(message: ConsoleMessage) -> None:
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            problems.append(message.text)

    def thrown(error: Error) -> None:
        problems.append(str(error))

    page.on("console", logged)
    page.on("pageerror", thrown)
    try:
        yield page
    finally:
        context.close()
    assert problems == []
