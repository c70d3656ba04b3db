"""Time travel end to end: the synthetic shop sent through the OTel SDK's OTLP exporter into a running App with its
history in a temporary directory; two checkpoints (healthy, then payment failing); every query with ``at=``, the
diff, the CLI, and their errors over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from rootward.app import App
from rootward.cli import main
from rootward.config import LOCAL_PORTS, load_config
from rootward.storage import StorageError
from rootward.synthetic import Shop
from rootward.topology.queries import format_time

LOCAL = list(LOCAL_PORTS)
PAYMENT = ("service:shop/checkout", "service:shop/payment")


@dataclass
class Running:
    api: httpx.Client
    base: str
    healthy: float  # the checkpoint after 10 healthy requests
    failing: float  # the checkpoint after 10 more with payment failing


def send(app: App, requests: int, failing: bool) -> float:
    shop = Shop(f"127.0.0.1:{app.receiver.grpc.port}")
    for _ in range(requests):
        shop.request(payment_failing=failing)
    shop.close()
    app.receiver.queue.wait_idle()
    app.topology.flush()
    app.maintenance.run_once()
    assert app.history is not None
    return app.history.checkpoints()[-1][0]


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    data = tmp_path_factory.mktemp("history")
    settings = [*LOCAL, f"storage.data_dir={data}", "topology.history.checkpoint_interval_s=3600"]
    app = App(load_config(environ={}, overrides=settings))
    app.start()
    healthy = send(app, 10, failing=False)
    failing = send(app, 10, failing=True)
    base = f"http://127.0.0.1:{app.api.port}"
    with httpx.Client(base_url=f"{base}/api/v1", timeout=10) as client:
        yield Running(client, base, healthy, failing)
    app.shutdown()
    assert (data / "topology.db").exists()


def call(data: dict[str, object], source: str, target: str) -> dict[str, object]:
    (edge,) = [e for e in data["edges"] if (e["source"], e["target"], e["kind"]) == (source, target, "calls")]  # type: ignore[attr-defined, index]
    return edge  # type: ignore[no-any-return]


def test_the_whole_graph_as_of_each_checkpoint(running: Running) -> None:
    then = running.api.get("/topology", params={"at": running.healthy}).json()
    assert then["as_of"] == running.healthy
    assert (call(then, *PAYMENT)["requests"], call(then, *PAYMENT)["errors"]) == (10, 0)
    rfc3339 = format_time(running.failing + 1)
    now = running.api.get("/topology", params={"at": rfc3339, "kind": "service"}).json()
    assert now["as_of"] == running.failing
    assert (call(now, *PAYMENT)["requests"], call(now, *PAYMENT)["errors"]) == (20, 10)
    assert len(now["entities"]) == 6  # the five shop services and the uninstrumented caller


def test_entity_subgraph_paths_and_blast_radius_take_at(running: Running) -> None:
    at = {"at": running.healthy}
    payment = running.api.get("/entity", params={"id": PAYMENT[1], **at}).json()
    (incoming,) = [e for e in payment["incoming"] if e["kind"] == "calls"]
    assert (incoming["requests"], payment["as_of"]) == (10, running.healthy)
    dot = running.api.get("/subgraph", params={"id": PAYMENT[0], "depth": 1, "edges": "calls", "format": "dot", **at})
    assert '"service:shop/checkout" -> "service:shop/payment" [label="10 req / 0 err"];' in dot.text
    paths = running.api.get("/paths", params={"from": "service:/user", "to": PAYMENT[1], **at}).json()
    assert paths["paths"] == [["service:/user", "service:shop/frontend", *PAYMENT]]
    blast = running.api.get("/blast-radius", params={"id": PAYMENT[1], **at}).json()
    assert blast["services"] == ["service:/user", "service:shop/checkout", "service:shop/frontend"]


def test_the_diff_gives_each_calls_red_over_the_interval(running: Running) -> None:
    d = running.api.get("/diff", params={"from": running.healthy, "to": running.failing, "kind": "service"}).json()
    assert d["as_of"] == {"from": running.healthy, "to": running.failing}
    assert d["entities"] == {"added": [], "removed": [], "changed": []}
    red = {(r["source"], r["target"]): r for r in d["red"]}
    assert (red[PAYMENT]["requests"], red[PAYMENT]["errors"], red[PAYMENT]["error_ratio"]) == (10, 10, 1.0)
    assert red["service:shop/frontend", "service:shop/cart"]["error_ratio"] == 0.0
    assert red[PAYMENT]["mean_latency_s"] > 0
    around = running.api.get("/diff", params={"from": running.healthy, "id": PAYMENT[1], "depth": 1}).json()
    assert {(r["source"], r["target"]) for r in around["red"]} == {PAYMENT}
    assert around["as_of"]["to"] == running.failing  # to defaults to now: the last checkpoint


def test_metrics_serve_the_last_checkpoint_and_checkpoint_telemetry(running: Running) -> None:
    text = httpx.get(f"{running.base}/metrics").text
    labels = 'client="checkout",client_service_namespace="shop",connection_type="",server="payment",server_service_namespace="shop"'
    assert f"traces_service_graph_request_total{{{labels}}} 20.0" in text
    assert f"traces_service_graph_request_failed_total{{{labels}}} 10.0" in text
    samples = {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples["rootward_topology_last_checkpoint_timestamp_seconds"] == running.failing
    assert samples["rootward_topology_checkpoint_rows_total"] > 0
    assert samples["rootward_topology_checkpoint_failures_total"] == 0
    assert samples["rootward_topology_history_bytes"] > 0


@pytest.mark.parametrize(
    ("path", "params", "status", "message"),
    [
        pytest.param("/topology", {"at": "yesterday"}, 400, "at must be an RFC 3339 time such as 2024-05-01T12:00:00Z, or unix seconds, not 'yesterday'", id="garbage-at"),
        pytest.param("/topology", {"at": "nan"}, 400, "at must be an RFC 3339 time", id="nan-at"),
        pytest.param("/entity", {"id": PAYMENT[1], "at": "2024-05-01T12:00:00"}, 400, "at needs a UTC offset (Z or +hh:mm)", id="naive-at"),
        pytest.param("/topology", {"at": "0"}, 404, "no topology history at or before 1970-01-01T00:00:00.000Z: the oldest checkpoint is", id="before-history"),
        pytest.param("/entity", {"id": "service:nope/x", "at": "9999999999"}, 404, "no entity 'service:nope/x'", id="unknown-id-then"),
        pytest.param("/diff", {}, 400, "the query parameter 'from' is required", id="diff-without-from"),
        pytest.param("/diff", {"from": "soon"}, 400, "from must be an RFC 3339 time", id="garbage-from"),
        pytest.param("/diff", {"from": "2000000000", "to": "1999999999"}, 400, "from (2033-05-18T03:33:20.000Z) is after to (2033-05-18T03:33:19.000Z)", id="from-after-to"),
        pytest.param("/diff", {"from": "1"}, 404, "no topology history at or before 1970-01-01T00:00:01.000Z", id="diff-before-history"),
        pytest.param("/diff", {"from": "1999999999", "to": "2000000000", "id": "service:nope/x"}, 404, "no entity 'service:nope/x'", id="diff-unknown-id"),
        pytest.param("/diff", {"from": "1999999999", "to": "2000000000", "direction": "up"}, 400, "direction must be in, out or both", id="diff-bad-direction"),
    ],
)  # fmt: skip
def test_bad_times_get_400_and_times_without_history_404(
    running: Running, path: str, params: dict[str, str], status: int, message: str
) -> None:
    r = running.api.get(path, params=params)
    assert r.status_code == status
    assert message in r.json()["message"]


def test_the_topology_command_travels_in_time_and_diffs(running: Running) -> None:
    then = CliRunner().invoke(main, ["topology", "--api", running.base, "--at", str(running.healthy)])
    assert then.exit_code == 0, then.output
    assert f"(as of {format_time(running.healthy)})" in then.output
    assert "-> service:shop/payment  10 req, 0 err," in then.output
    diff = CliRunner().invoke(
        main, ["topology", "--api", running.base, "--diff", str(running.healthy), "now", "--kind", "service"]
    )
    assert diff.exit_code == 0, diff.output
    assert "entities +0 -0 ~0, edges +0 -0" in diff.output
    assert "-> service:shop/payment  10 req, 10 err (100.0%)," in diff.output
    bad = CliRunner().invoke(main, ["topology", "--api", running.base, "--at", "noon"])
    assert bad.exit_code == 1
    assert "400: at must be an RFC 3339 time" in bad.output


def test_an_app_whose_history_file_is_corrupt_does_not_start(tmp_path: Path) -> None:
    path = tmp_path / "topology.db"
    path.write_bytes(b"\x00garbage" * 1000)
    app = App(load_config(environ={}, overrides=[*LOCAL, f"topology.history.path={path}"]))
    with pytest.raises(StorageError, match=r"topology.db: cannot open: file is not a database\. Move the file away"):
        app.start()
    assert not app.receiver.running
    app.shutdown()
