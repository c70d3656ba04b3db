"""The web page in a real browser against a running Rootward: the graph of the shop, the incident list and the
incident Slack links to (payment first, with its diagnosis), an approval decided in the page, telemetry shown as
text and never run, and the headers that keep it so."""

from __future__ import annotations

import json
import re

import httpx
from conftest import HOSTILE, TOKEN, Running
from playwright.sync_api import Page, expect

from rootward.app import App
from rootward.config import LOCAL_PORTS, NOTHING_ON_DISK, load_config
from rootward.detector.detector import Anomaly

SHOP = {
    "service:shop/frontend",
    "service:shop/cart",
    "service:shop/checkout",
    "service:shop/payment",
    "service:shop/email",
    "database:redis/redis",
}
SHOP_CALLS = [
    ("service:shop/frontend", "service:shop/cart"),
    ("service:shop/frontend", "service:shop/checkout"),
    ("service:shop/cart", "database:redis/redis"),
    ("service:shop/checkout", "service:shop/payment"),
    ("service:shop/checkout", "service:shop/email"),
]


def test_the_graph_shows_the_shop_and_highlights_payment_whose_details_open_on_a_click(
    rootward: Running, page: Page
) -> None:
    page.goto(rootward.url)
    entities = page.locator("svg.graph g.entity")
    expect(entities.first).to_be_visible()
    shown = set(entities.evaluate_all("gs => gs.map(g => g.dataset.id)"))
    assert shown >= SHOP
    assert not any(i.startswith("pod:") for i in shown)  # the default view: services and what they call
    failing = page.locator("g.edge.failing")
    expect(failing).to_have_count(1)  # checkout -> payment
    expect(failing.locator("text")).to_have_text(re.compile(r"^\d+ req · [\d.]+/s · \d+ err$"))
    calls = set(page.locator("g.edge-calls title").all_text_contents())
    assert {f"{a} → {b} (calls)" for a, b in SHOP_CALLS} <= calls
    payment = page.locator("g.entity[data-id='service:shop/payment']")
    expect(payment).to_have_class(re.compile(r"\banomalous\b"))
    payment.click()
    panel = page.locator("aside.panel")
    expect(panel.locator("h2")).to_have_text("payment")
    expect(panel).to_contain_text(f"Anomalous in {rootward.incident_id}")
    expect(panel).to_contain_text("service:shop/checkout")


def test_entity_names_are_shown_as_text_and_never_run(rootward: Running, page: Page) -> None:
    page.goto(rootward.url)
    hostile = page.locator(f"g.entity[data-id={json.dumps('service:/' + HOSTILE)}]")
    expect(hostile).to_be_visible()
    hostile.click()
    expect(page.locator("aside.panel h2")).to_have_text(HOSTILE)
    assert page.locator("img").count() == 0  # no element was made from the name
    assert page.title() == "Rootward"


def test_the_incident_list_shows_the_open_incident_and_an_empty_state_for_resolved_ones(
    rootward: Running, page: Page
) -> None:
    page.goto(rootward.url + "incidents")
    row = page.locator("table.incidents tbody tr")
    expect(row).to_have_count(1)
    expect(row.locator("td").nth(0)).to_have_text(rootward.incident_id)
    expect(row.locator("td").nth(2)).to_have_text("critical")
    expect(row.locator("td").nth(4)).to_have_text(re.compile(r"^service:shop/payment"))
    page.select_option("#status-filter", "resolved")
    expect(page.locator("main")).to_contain_text("No resolved incidents.")


def test_the_slack_deep_link_shows_the_incident_with_payment_first_and_its_diagnosis(
    rootward: Running, page: Page
) -> None:
    page.goto(f"{rootward.url}incidents/{rootward.incident_id}")
    expect(page.locator("h1")).to_contain_text(rootward.incident_id)
    expect(page.locator("ol.candidates li").first).to_have_text("service:shop/payment")
    expect(page.locator("table.anomalies")).to_contain_text("error_ratio")
    errors = page.locator("table.anomalies tr", has_text="error_ratio").first
    expect(errors.locator("svg.spark")).to_have_attribute("aria-label", re.compile(r"^last \d+ values, 0 to .*, now "))
    expect(page.locator("ul.calls")).to_contain_text("service:shop/checkout → service:shop/payment")
    first = page.locator("ol.hypotheses > li").first
    expect(first).to_contain_text("service:shop/payment code_error")
    expect(first.locator("meter")).to_have_attribute("value", re.compile(r"^\d+$"))
    expect(page.locator("main")).to_contain_text("rollout_restart shop/payment")
    expect(page.locator("main")).to_contain_text("for code_error at service:shop/payment")  # what it answers
    expect(page.locator("main")).to_contain_text(rootward.approval_id)


def test_an_unknown_incident_and_an_unreachable_api_say_so(rootward: Running, page: Page) -> None:
    page.goto(f"{rootward.url}incidents/inc-nope")
    expect(page.locator("main")).to_contain_text("No incident inc-nope")
    page.route("**/api/v1/**", lambda route: route.abort())
    page.goto(rootward.url)
    expect(page.locator("main .error")).to_contain_text("unreachable")
    expect(page.locator("#status")).to_have_text("API unreachable")


def test_an_approver_with_a_wrong_token_sees_401_and_with_the_right_one_approves(rootward: Running, page: Page) -> None:
    page.goto(rootward.url + "approvals")
    expect(page.locator("main")).to_contain_text("Paste an approver's token")
    expect(page.locator("#not-acting")).to_have_count(0)  # this one acts: its approvals are here
    page.fill("#token", "wrong")
    page.click("#use-token")
    expect(page.locator("main .error")).to_contain_text("401: the token was refused")
    page.get_by_role("button", name="Forget token").click()
    page.fill("#token", TOKEN)
    page.click("#use-token")
    card = page.locator(f"section.approval[data-id='{rootward.approval_id}']")
    expect(card).to_contain_text("rollout_restart Deployment/shop/payment")
    expect(card).to_contain_text("pods affected: 2 of 2")
    expect(card).to_contain_text("actions.mode is approve-all")
    assert TOKEN not in page.url
    assert page.evaluate("Object.values(sessionStorage)") == [TOKEN]
    card.get_by_role("button", name="Approve").click()
    expect(page.locator(".notice")).to_contain_text("Approved by alice")
    approval = httpx.get(
        f"{rootward.url}api/v1/approvals/{rootward.approval_id}", headers={"authorization": f"Bearer {TOKEN}"}
    ).json()
    assert approval["status"] == "approved"
    assert approval["decided_by"] == "alice"
    expect(page.locator("main")).to_contain_text("Nothing waits for a decision.")


def test_the_page_is_served_with_a_content_security_policy_and_nosniff(rootward: Running) -> None:
    for path in ("", "incidents", f"incidents/{rootward.incident_id}", "approvals", "web/app.js", "web/style.css"):
        r = httpx.get(rootward.url + path)
        assert r.status_code == 200, path
        assert "script-src 'self'" in r.headers["content-security-policy"], path
        assert "'unsafe-inline'" not in r.headers["content-security-policy"], path
        assert r.headers["x-content-type-options"] == "nosniff", path
    assert httpx.get(rootward.url + "web/..%2Fpage.py").status_code == 404
    assert httpx.get(rootward.url + "web/index.html").status_code == 404  # only scripts, styles and the icon
    deep = httpx.get(f"{rootward.url}incidents/{rootward.incident_id}").text
    assert 'src="../web/app.js"' in deep  # relative: the page also works under a proxy's path prefix
    assert TOKEN not in deep


def test_acknowledging_an_incident_needs_the_operator_token_and_then_writes(rootward: Running, page: Page) -> None:
    """Tokens are configured, so even a page opened on the Rootward host must present one (rootward/auth.py)."""
    page.goto(f"{rootward.url}incidents/{rootward.incident_id}")
    expect(page.locator("p.respond")).to_contain_text("operator token")
    page.click("#acknowledge")
    expect(page.locator("main .notice")).to_contain_text("401: this needs an operator's token")
    assert httpx.get(f"{rootward.url}api/v1/incidents/{rootward.incident_id}").json()["acknowledged"] is False
    page.goto(rootward.url + "approvals")
    page.fill("#token", TOKEN)
    page.click("#use-token")
    page.goto(f"{rootward.url}incidents/{rootward.incident_id}")
    page.click("#acknowledge")
    expect(page.locator("main .notice")).to_contain_text("Acknowledged.")
    expect(page.locator("main")).to_contain_text(", acknowledged")
    assert httpx.get(f"{rootward.url}api/v1/incidents/{rootward.incident_id}").json()["acknowledged"] is True


def test_a_rootward_that_does_not_act_says_where_the_approvals_are(page: Page) -> None:
    """A sidecar reached through svc/rootward that does not hold the Lease: no approval is kept here."""
    app = App(load_config(environ={}, overrides=[*LOCAL_PORTS, *NOTHING_ON_DISK]))
    app.start()
    try:
        page.goto(f"http://127.0.0.1:{app.api.port}/approvals")
        expect(page.locator("#not-acting")).to_contain_text("This Rootward does not act.")
        expect(page.locator("#not-acting")).to_contain_text("kept by the Rootward that acts")
    finally:
        app.shutdown()


def send_span(app: App, service: str) -> None:
    """One root server span of ``service`` through the OTLP/HTTP receiver."""
    body = {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
            "scopeSpans": [{"spans": [{"traceId": "5B8EFFF798038103D269B633813FC60D", "spanId": "EEE19B7EC3C1B175",
                                       "kind": 2}]}]}]}  # fmt: skip
    assert httpx.post(f"http://127.0.0.1:{app.receiver.http.port}/v1/traces", json=body).status_code == 200
    app.receiver.queue.wait_idle()


def test_with_reads_closed_the_page_asks_for_a_token_and_shows_the_incidents_with_a_readers(page: Page) -> None:
    """api.reads: token, reached from another host's browser (tokens configured, so loopback is no exception)."""
    sets = ["api.reads=token", "api.readers.bob=bob-reads-only", f"policies.approvals.tokens.alice={TOKEN}"]
    app = App(load_config(environ={}, overrides=[*LOCAL_PORTS, *NOTHING_ON_DISK, *sets]))
    app.start()
    try:
        app.incidents.observe(100.0, [Anomaly("service:shop/payment", "error_ratio", 0.5, 0.0, 9.0, 90.0, 100.0)])
        (incident,) = app.incidents.listed()
        page.goto(f"http://127.0.0.1:{app.api.port}/incidents")
        expect(page.locator("#locked")).to_contain_text("api.reads: token")
        expect(page.locator("main")).not_to_contain_text(incident.id)
        page.fill("#token", "not-a-token")
        page.click("#use-token")
        expect(page.locator("#locked")).to_contain_text("was refused")
        page.click("#forget-token")
        page.fill("#token", "bob-reads-only")
        page.click("#use-token")
        expect(page.locator("main")).to_contain_text(incident.id)
        page.goto(f"http://127.0.0.1:{app.api.port}/")  # the graph reads with the same token
        expect(page.locator("#status")).to_contain_text("updated")
        expect(page.locator("#locked")).to_have_count(0)
        send_span(app, "frontend")  # an entity to click, then the token is forgotten in another tab
        page.reload()
        entity = page.locator("g.entity[data-id='service:/frontend']")
        expect(entity).to_be_visible()
        page.evaluate("sessionStorage.clear()")
        entity.click()  # its details are a read: the 401 brings the token form, not a bare error in the panel
        page.wait_for_selector("#locked, aside.panel .error")  # whichever comes first
        assert page.locator("aside.panel .error").count() == 0
        expect(page.locator("#locked")).to_contain_text("api.reads: token")
        page.fill("#token", "bob-reads-only")
        page.click("#use-token")
        page.goto(f"http://127.0.0.1:{app.api.port}/incidents/{incident.id}")
        page.click("#acknowledge")  # a reader decides nothing
        expect(page.locator("main .notice")).to_contain_text("not the one pasted (a reader's reads only)")
        assert app.incidents.listed()[0].acknowledged is False
    finally:
        app.shutdown()
