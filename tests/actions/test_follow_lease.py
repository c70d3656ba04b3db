"""The DaemonSet's sidecars agree on one incident per fault (topology.export.follow_lease): the one holding the Lease
labels its own pod for the Service rootward-leader, the others forward their anomalies to it over OTLP, and only it
alerts Slack (a local HTTP server). Two running Apps against the simulated Kubernetes API (kmock)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from cluster import RunningCluster
from pytest_httpserver import HTTPServer

from rootward.actions import Kube
from rootward.actions.leader import LEADER_LABEL
from rootward.app import App
from rootward.config import LOCAL_PORTS, load_config
from rootward.detector.detector import Anomaly
from rootward.topology import Entity
from rootward.topology.red import EdgeDelta

from collectors import wait_until

NAMESPACE = "rootward"
CART = "service:shop/cart"


def own_pod(kube: Kube, name: str) -> None:
    labels = {"app.kubernetes.io/name": "rootward"}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels},
           "spec": {"containers": [{"name": "rootward"}]}}  # fmt: skip
    kube.core.create_namespaced_pod(NAMESPACE, pod)


def labels(kube: Kube, name: str) -> dict[str, str]:
    return dict(kube.pod(NAMESPACE, name)["metadata"].get("labels") or {})


def sidecar(cluster: RunningCluster, data: Path, name: str, leader_port: int, slack: str) -> App:
    overrides = [
        *LOCAL_PORTS,
        f"storage.data_dir={data / name}",
        "topology.history.enabled=false",
        "actions.enabled=true",
        f"actions.kubernetes.host={cluster.url}",
        f"actions.lease.identity={name}",
        f"actions.lease.pod={name}",
        "actions.lease.renew_s=0.2",
        "topology.export.enabled=true",
        "topology.export.follow_lease=true",
        f"topology.export.replica={name}",
        f"topology.export.endpoint=127.0.0.1:{leader_port}",  # the Service rootward-leader, in the cluster
        f"notifications.slack.webhook_url={slack}",
    ]
    return App(load_config(environ={}, overrides=overrides))


def failing(service: str, now: float) -> list[Anomaly]:
    return [Anomaly(f"service:shop/{service}", "error_ratio", 0.4, 0.01, 14.5, now - 10, now)]


@pytest.fixture
def sidecars(cluster: RunningCluster, kube: Kube, tmp_path: Path, httpserver: HTTPServer) -> Iterator[tuple[App, App]]:
    """rootward-a, which holds the Lease, and rootward-b, which forwards to it; both running."""
    httpserver.expect_request("/hook").respond_with_data("ok")
    slack = httpserver.url_for("/hook")
    own_pod(kube, "rootward-a")
    own_pod(kube, "rootward-b")
    with ExitStack() as stack:
        a = sidecar(cluster, tmp_path, "rootward-a", 9, slack)
        a.start()
        stack.callback(a.shutdown)
        assert wait_until(a.leading, 10)
        b = sidecar(cluster, tmp_path, "rootward-b", a.receiver.grpc.port, slack)
        b.start()
        stack.callback(b.shutdown)
        assert b.acting is not None
        assert wait_until(lambda: b.acting is not None and b.acting.elector._labelled is False, 10)
        yield a, b


def holds(app: App, service: str) -> bool:
    return any(f"service:shop/{service}" in i.first_seen for i in app.incidents.open)


def test_the_holder_labels_its_pod_and_a_follower_forwards_what_it_finds_to_it(
    sidecars: tuple[App, App], kube: Kube, httpserver: HTTPServer
) -> None:
    a, b = sidecars
    assert labels(kube, "rootward-a")[LEADER_LABEL] == "true"
    assert LEADER_LABEL not in labels(kube, "rootward-b")
    leader, follower = (httpx.get(f"http://127.0.0.1:{x.api.port}/readyz").json() for x in (a, b))
    assert (leader["acting"], leader["lease_holder"], leader["forwards_to"]) == (True, "rootward-a", None)
    assert (follower["acting"], follower["lease_holder"]) == (False, "rootward-a")
    assert follower["forwards_to"] == f"127.0.0.1:{a.receiver.grpc.port}"
    assert "rootward_acting 1.0" in httpx.get(f"http://127.0.0.1:{a.api.port}/metrics").text
    assert "rootward_acting 0.0" in httpx.get(f"http://127.0.0.1:{b.api.port}/metrics").text
    frontend, cart = (
        Entity("service:shop/frontend", "service", "frontend", "shop"),
        Entity(CART, "service", "cart", "shop"),
    )
    delta = EdgeDelta()
    delta.add(0.01, error=False)
    b.topology.merge_calls({(frontend.id, CART): delta}, [frontend, cart])  # a call b's node saw
    b.detector.sink(b.clock.now(), failing("cart", b.clock.now()))
    assert wait_until(lambda: holds(a, "cart"), 10)  # the holder's incidents hold what the follower found
    assert wait_until(lambda: (frontend.id, CART, 0, 0) in a.topology.calls(), 10)  # and the calls around it, as
    # structure: the holder's counts (and its servicegraph metrics) stay its own
    assert holds(b, "cart")  # and the follower keeps its own
    assert wait_until(lambda: len(httpserver.log) == 1, 10)  # one message: the holder's
    a.detector.sink(a.clock.now(), failing("payment", a.clock.now()))  # the holder's own finding goes nowhere else
    assert wait_until(lambda: len(httpserver.log) == 2, 10)
    b.slack.flush()
    assert not holds(b, "payment")
    assert a.telemetry.value("rootward_gateway_anomalies_total", outcome="accepted") == 1
    assert b.telemetry.value("rootward_gateway_anomalies_total", outcome="accepted") == 0
    assert b.telemetry.value("rootward_gateway_anomalies_total", outcome="sent") == 1
    messages = [request.get_data(as_text=True) for request, _ in httpserver.log]
    assert "cart" in messages[0]
    assert "payment" in messages[1]


def test_when_the_holder_stops_the_follower_takes_over_the_label_and_the_alerts(
    sidecars: tuple[App, App], kube: Kube, httpserver: HTTPServer
) -> None:
    a, b = sidecars
    a.shutdown()  # gives the Lease up and takes its label off
    assert LEADER_LABEL not in labels(kube, "rootward-a")
    assert wait_until(b.leading, 10)
    assert wait_until(lambda: labels(kube, "rootward-b").get(LEADER_LABEL) == "true", 10)
    b.detector.sink(b.clock.now(), failing("cart", b.clock.now()))
    assert wait_until(lambda: len(httpserver.log) == 1, 10)  # b alerts now, and forwards nothing
    assert b.telemetry.value("rootward_gateway_anomalies_total", outcome="sent") == 0
