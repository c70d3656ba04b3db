"""api.reads: token closes the API's data to everyone without a reader's (api.readers) or an operator's
(policies.approvals.tokens) bearer token, and without any token configured to everyone but the pod's own loopback;
Prometheus, the probes, the OpenAPI document and the page's files stay open. Against a running App (real HTTP) and
the CLI that reads it."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from click.testing import CliRunner

from rootward.app import App
from rootward.cli import main
from rootward.config import load_config
from rootward.errors import ConfigError

from test_api_writes import ack, other_address, serving

READER, OPERATOR = "bob-reads-only", "alice-decides"
DATA = ("incidents", "topology", "entity?id=service:shop/payment", "subgraph?id=service:shop/payment")


@pytest.fixture
def closed() -> Iterator[App]:
    app = serving("api.reads=token", f"api.readers.bob={READER}", f"policies.approvals.tokens.alice={OPERATOR}")
    yield app
    app.shutdown()


def get(app: App, path: str, token: str | None = None, address: str = "127.0.0.1", **headers: str) -> httpx.Response:
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    return httpx.get(f"http://{address}:{app.api.port}/{path}", headers=headers, timeout=10)


def test_reads_are_open_by_default() -> None:
    app = serving()
    try:
        assert get(app, "api/v1/incidents").status_code == 200
    finally:
        app.shutdown()


def test_without_a_token_every_read_of_data_is_401_and_names_the_settings(closed: App) -> None:
    (incident,) = closed.incidents.listed()
    more = ("paths?from=service:shop/a&to=service:shop/b", "blast-radius?id=service:shop/payment", "diff?from=0",
            f"incidents/{incident.id}/trace", "incidents/", "incidents?status=open")  # fmt: skip
    for path in (*DATA, *more, f"incidents/{incident.id}", f"incidents/{incident.id}/diagnosis"):
        response = get(closed, f"api/v1/{path}")
        assert response.status_code == 401, path
        assert "api.readers or policies.approvals.tokens" in response.json()["message"]
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert "payment" not in response.text
    assert get(closed, "api/v1/incidents", "not-a-token").status_code == 401
    url = f"http://127.0.0.1:{closed.api.port}"
    assert httpx.head(f"{url}/api/v1/incidents", timeout=10).status_code == 401
    for odd in ("/api/v1%2Fincidents", "//api/v1/incidents", "/api/v1/./incidents", "/API/v1/incidents"):
        answer = httpx.get(url + odd, timeout=10)
        assert answer.status_code in (401, 404), odd  # refused, or no such route: never the data
        assert "payment" not in answer.text, odd


def test_a_readers_or_an_operators_token_reads(closed: App) -> None:
    for token in (READER, OPERATOR):
        listed = get(closed, "api/v1/incidents", token)
        assert listed.status_code == 200
        assert listed.json()["incidents"][0]["candidates"] == ["service:shop/payment"]
        for path in DATA:
            assert get(closed, f"api/v1/{path}", token).status_code in (200, 404), path  # 404: not in the graph


def test_probes_metrics_the_openapi_document_and_the_page_stay_open(closed: App) -> None:
    for path in ("healthz", "readyz", "metrics", "api/v1/openapi.json", "", "incidents", "web/app.js"):
        assert get(closed, path).status_code == 200, path


def test_a_readers_token_decides_nothing(closed: App) -> None:
    assert ack(closed, authorization=f"Bearer {READER}").status_code == 401
    assert not closed.incidents.listed()[0].acknowledged
    assert ack(closed, authorization=f"Bearer {OPERATOR}").status_code == 200


def test_without_any_token_configured_only_the_pods_loopback_reads() -> None:
    address = other_address()
    app = serving("api.reads=token", *(["api.listen.host=0.0.0.0"] if address else []))
    try:
        assert get(app, "api/v1/incidents").status_code == 200
        assert get(app, "api/v1/incidents", host="evil.example").status_code == 403  # DNS rebinding
        if address is not None:
            refused = get(app, "api/v1/incidents", address=address)
            assert refused.status_code == 403
            assert "api.readers" in refused.json()["message"]
    finally:
        app.shutdown()


def test_the_cli_reads_with_the_token_it_is_given(closed: App) -> None:
    api = ["--api", f"http://127.0.0.1:{closed.api.port}"]
    (incident,) = closed.incidents.listed()
    for args in (["incidents"], ["incidents", "--id", incident.id], ["topology"]):
        refused = CliRunner().invoke(main, [*args, *api], env={"ROOTWARD_TOKEN": ""})
        assert refused.exit_code == 1, args
        assert "401: a valid bearer token (api.readers or policies.approvals.tokens) is required" in refused.output
        done = CliRunner().invoke(main, [*args, *api], env={"ROOTWARD_TOKEN": READER})
        assert done.exit_code == 0, done.output
    listed = CliRunner().invoke(main, ["incidents", *api, "--token", READER])
    assert incident.id in listed.output


def test_a_weak_readers_token_is_a_config_error_that_does_not_echo_it() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(environ={"ROOTWARD_API__READERS": "{bob: short}"})
    assert "api.readers.bob: at least 8 characters" in str(caught.value)
    assert "short" not in str(caught.value).replace("at least", "")
    with pytest.raises(ConfigError, match="reads"):
        load_config(environ={}, overrides=["api.reads=tokens"])
