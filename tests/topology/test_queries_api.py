"""The topology query API end to end: the synthetic shop sent through the OTel SDK's OTLP exporter into a running
App, then every query over HTTP, with its errors."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from rootward.app import App
from rootward.config import LOCAL_PORTS, NOTHING_ON_DISK, load_config
from rootward.synthetic import Shop

LOCAL = [*LOCAL_PORTS, *NOTHING_ON_DISK]  # the live graph only; time travel: test_history_api.py


@pytest.fixture(scope="module")
def api() -> Iterator[httpx.Client]:
    app = App(load_config(environ={}, overrides=LOCAL))
    app.start()
    shop = Shop(f"127.0.0.1:{app.receiver.grpc.port}")
    for i in range(20):
        shop.request(payment_failing=i >= 15)
    shop.close()
    app.receiver.queue.wait_idle()
    app.topology.flush()
    with httpx.Client(base_url=f"http://127.0.0.1:{app.api.port}/api/v1", timeout=10) as client:
        yield client
    app.shutdown()


def test_metrics_carry_the_service_graph_under_the_connectors_names(api: httpx.Client) -> None:
    text = httpx.get(str(api.base_url).removesuffix("/api/v1/") + "/metrics").text
    ns = 'server_service_namespace="shop"'
    labels = f'client="checkout",client_service_namespace="shop",connection_type="",server="payment",{ns}'
    assert f"traces_service_graph_request_total{{{labels}}} 20.0" in text
    assert f"traces_service_graph_request_failed_total{{{labels}}} 5.0" in text
    inf = f'client="checkout",client_service_namespace="shop",connection_type="",le="+Inf",server="payment",{ns}'
    assert f"traces_service_graph_request_server_seconds_bucket{{{inf}}} 20.0" in text
    assert f"traces_service_graph_request_server_seconds_count{{{labels}}} 20.0" in text
    db = 'client="cart",client_service_namespace="shop",connection_type="database",server="redis",server_service_namespace=""'
    assert f"traces_service_graph_request_total{{{db}}} 20.0" in text


def test_whole_graph_filters_by_kind_and_namespace(api: httpx.Client) -> None:
    services = api.get("/topology", params={"kind": "service", "namespace": "shop"}).json()
    assert {e["id"] for e in services["entities"]} == {
        "service:shop/frontend",
        "service:shop/cart",
        "service:shop/checkout",
        "service:shop/payment",
        "service:shop/email",
    }
    pods = api.get("/topology", params={"kind": "pod"}).json()["entities"]
    assert len(pods) == 5
    assert all(p["namespace"] == "shop" for p in pods)


def test_entity_shows_its_edges_with_red(api: httpx.Client) -> None:
    payment = api.get("/entity", params={"id": "service:shop/payment"}).json()
    (call,) = [e for e in payment["incoming"] if e["kind"] == "calls"]
    assert (call["source"], call["requests"], call["errors"]) == ("service:shop/checkout", 20, 5)
    assert sum(call["latency_buckets"]) == 20
    assert any(e["kind"] == "instance_of" for e in payment["incoming"])  # its pod


def test_subgraph_follows_direction_depth_and_edge_kinds(api: httpx.Client) -> None:
    out = api.get("/subgraph", params={"id": "service:shop/frontend", "depth": 1, "direction": "out", "edges": "calls"})
    assert {e["id"] for e in out.json()["entities"]} == {
        "service:shop/frontend",
        "service:shop/cart",
        "service:shop/checkout",
    }
    deeper = api.get(
        "/subgraph", params={"id": "service:shop/frontend", "depth": 2, "direction": "out", "edges": "calls"}
    )
    assert "database:redis/redis" in {e["id"] for e in deeper.json()["entities"]}


def test_paths_and_blast_radius(api: httpx.Client) -> None:
    found = api.get("/paths", params={"from": "service:/user", "to": "service:shop/payment"}).json()
    assert found["paths"] == [
        ["service:/user", "service:shop/frontend", "service:shop/checkout", "service:shop/payment"]
    ]
    up = api.get("/blast-radius", params={"id": "service:shop/payment"}).json()
    assert up["services"] == ["service:/user", "service:shop/checkout", "service:shop/frontend"]
    assert len(up["pods"]) == 3  # payment's, checkout's and frontend's pods
    down = api.get("/blast-radius", params={"id": "service:shop/frontend", "direction": "downstream"}).json()
    assert "database:redis/redis" in down["services"]


def test_graph_renders_as_dot_and_cytoscape(api: httpx.Client) -> None:
    dot = api.get("/subgraph", params={"id": "service:shop/checkout", "depth": 1, "edges": "calls", "format": "dot"})
    assert dot.headers["content-type"].startswith("text/vnd.graphviz")
    assert dot.text.startswith("digraph rootward {")
    assert '"service:shop/checkout" -> "service:shop/payment" [label="20 req / 5 err"];' in dot.text
    cy = api.get("/topology", params={"format": "cytoscape"}).json()
    assert {"nodes", "edges"} <= set(cy["elements"])
    assert all("source" in e["data"] and "target" in e["data"] for e in cy["elements"]["edges"])


@pytest.mark.parametrize(
    ("path", "params", "status", "message"),
    [
        pytest.param("/entity", {}, 400, "the query parameter 'id' is required", id="missing-id"),
        pytest.param("/entity", {"id": "service:nope/x"}, 404, "no entity 'service:nope/x'", id="unknown-id"),
        pytest.param("/subgraph", {"id": "service:shop/cart", "depth": "two"}, 400, "depth must be an integer", id="bad-depth"),
        pytest.param("/subgraph", {"id": "service:shop/cart", "depth": 99}, 400, "depth must be between 0 and 10", id="deep"),
        pytest.param("/subgraph", {"id": "service:shop/cart", "direction": "up"}, 400, "direction must be in, out or both", id="bad-direction"),
        pytest.param("/subgraph", {"id": "service:shop/cart", "edges": "likes"}, 400, "unknown edge kind(s) ['likes']", id="bad-edges"),
        pytest.param("/topology", {"format": "png"}, 400, "format must be json, dot or cytoscape", id="bad-format"),
        pytest.param("/paths", {"from": "service:shop/cart"}, 400, "'to' is required", id="missing-to"),
        pytest.param("/blast-radius", {"id": "service:shop/cart", "direction": "sideways"}, 400, "upstream or downstream", id="bad-blast-direction"),
        pytest.param("/topology", {"at": "1714564800"}, 404, "time travel needs the topology history", id="at-without-history"),
    ],
)  # fmt: skip
def test_bad_queries_get_400_or_404_with_a_message(
    api: httpx.Client, path: str, params: dict[str, object], status: int, message: str
) -> None:
    r = api.get(path, params=params)  # type: ignore[arg-type]
    assert r.status_code == status
    assert message in r.json()["message"]


def test_topology_command_prints_the_call_edges_of_a_running_server(api: httpx.Client) -> None:
    from click.testing import CliRunner

    from rootward.cli import main

    base = str(api.base_url).removesuffix("/api/v1/")
    result = CliRunner().invoke(main, ["topology", "--api", base])
    assert result.exit_code == 0, result.output
    assert "service:shop/checkout" in result.output
    assert "-> service:shop/payment  20 req, 5 err," in result.output
    near = CliRunner().invoke(main, ["topology", "--api", base, "--entity", "service:shop/payment"])
    assert "-instance_of-> service:shop/payment" in near.output
    missing = CliRunner().invoke(main, ["topology", "--api", base, "--entity", "service:nope/x"])
    assert missing.exit_code == 1
    assert "404: no entity 'service:nope/x'" in missing.output
    down = CliRunner().invoke(main, ["topology", "--api", "http://127.0.0.1:9"])
    assert down.exit_code == 1
    assert "cannot reach http://127.0.0.1:9" in down.output


def test_an_incidents_subgraph_keeps_its_own_entities_first_and_says_what_it_left_out() -> None:
    import networkx as nx

    from rootward.topology.queries import incident_subgraph

    g: nx.MultiDiGraph[str] = nx.MultiDiGraph()
    g.add_edge("service:a", "service:b", key="calls")
    for n in range(5):
        g.add_edge(f"service:caller{n}", "service:b", key="calls")
    g.add_edge("service:z", "service:y", key="calls")
    data = incident_subgraph(g, ["service:b", "service:gone"], depth=1, limit=4)
    assert [e["id"] for e in data["entities"]] == ["service:a", "service:b", "service:caller0", "service:caller1"]
    assert data["unknown"] == ["service:gone"]
    assert data["truncated"] is True
    assert {(e["source"], e["target"]) for e in data["edges"]} == {
        ("service:a", "service:b"),
        ("service:caller0", "service:b"),
        ("service:caller1", "service:b"),
    }
    assert [e["id"] for e in incident_subgraph(g, ["service:b"], limit=1)["entities"]] == ["service:b"]
    for n in range(300):  # b's pods sort before its callers by id ("pod:" < "service:"), not by rank
        g.add_edge(f"pod:x/b-{n}", "service:b", key="instance_of")
        g.nodes[f"pod:x/b-{n}"]["kind"] = "pod"
    for n in ("service:a", "service:b", *(f"service:caller{i}" for i in range(5))):
        g.nodes[n]["kind"] = "service"
    crowded = incident_subgraph(g, ["service:b"])
    assert crowded["truncated"] is True
    assert {"service:a", "service:caller4"} <= {e["id"] for e in crowded["entities"]}
    assert len(crowded["entities"]) == 200
    whole = incident_subgraph(g, ["service:b"], depth=0)
    assert [e["id"] for e in whole["entities"]] == ["service:b"]
    assert whole["truncated"] is False
