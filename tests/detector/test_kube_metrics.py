"""The Collector's kubeletstats and k8s_cluster metrics read by name: OTLP requests shaped as those receivers send
them (names, resource attributes and data point attributes from their documentation.md) through the real decoder,
and through a real gRPC client into a running Rootward, where a pod near its memory limit opens an incident."""

from __future__ import annotations

import grpc
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2_grpc import MetricsServiceStub
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from rootward.app import App
from rootward.clock import ManualClock
from rootward.config import LOCAL_PORTS, NOTHING_ON_DISK, load_config
from rootward.detector.baseline import DOWN, UP, rule_for
from rootward.detector.kube_metrics import KubeMetrics
from rootward.detector.windows import SeriesTable, Window
from rootward.model import MetricBatch
from rootward.receiver import MetricDecoder

POD = {"k8s.pod.name": "cart-1", "k8s.pod.uid": "u-1", "k8s.namespace.name": "shop", "k8s.node.name": "node-a"}
CONTAINER = POD | {"k8s.container.name": "server", "container.id": "c0ffee"}
NODE = {"k8s.node.name": "node-a", "k8s.node.uid": "n-1"}
DEPLOYMENT = {"k8s.deployment.name": "cart", "k8s.deployment.uid": "d-1", "k8s.namespace.name": "shop"}

Point = tuple[str, float] | tuple[str, float, dict[str, str]]


def request(resource: dict[str, str], *points: Point, time_s: float = 100.0) -> ExportMetricsServiceRequest:
    """One resource's gauges, as kubeletstats / k8s_cluster send them (ints as as_int, the rest as as_double)."""
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    for key, value in resource.items():
        rm.resource.attributes.add(key=key, value=AnyValue(string_value=value))
    scope = rm.scope_metrics.add()
    scope.scope.name = "github.com/open-telemetry/opentelemetry-collector-contrib/receiver/kubeletstatsreceiver"
    for point in points:
        name, value = point[0], point[1]
        p = scope.metrics.add(name=name).gauge.data_points.add(time_unix_nano=int(time_s * 1e9))
        if float(value).is_integer():
            p.as_int = int(value)
        else:
            p.as_double = value
        for key, v in (point[2] if len(point) == 3 else {}).items():  # type: ignore[misc]
            p.attributes.add(key=key, value=AnyValue(string_value=v))
    return req


def batch(resource: dict[str, str], *points: Point, time_s: float = 100.0) -> MetricBatch:
    return MetricDecoder().decode(request(resource, *points, time_s=time_s).SerializeToString()).batch


GIB = 2**30


def test_the_current_memory_limits_are_kept_for_a_resize() -> None:
    kube = KubeMetrics(max_keys=100)
    sidecar = POD | {"k8s.container.name": "istio-proxy", "container.id": "beef"}
    kube.read(batch(CONTAINER, ("k8s.container.memory_limit", GIB), ("container.memory.working_set", 0.95 * GIB)))
    kube.read(batch(sidecar, ("k8s.container.memory_limit", GIB // 4)))
    assert kube.memory_limits("pod:shop/cart-1") == [("istio-proxy", GIB // 4, None), ("server", GIB, 0.95)]
    assert kube.memory_limits("pod:shop/other") == []


def test_working_set_against_the_k8s_cluster_limit_is_a_ratio_and_near_the_limit_a_failure() -> None:
    kube = KubeMetrics(near_limit=0.9)
    assert kube.read(batch(CONTAINER, ("container.memory.working_set", GIB // 2))).series == []  # no limit yet
    assert kube.read(batch(CONTAINER, ("k8s.container.memory_limit", GIB))).series == []  # a limit alone: no usage
    read = kube.read(batch(CONTAINER, ("container.memory.working_set", GIB // 2)))
    assert read.series == [("pod:shop/cart-1", "k8s.memory.limit_ratio", 0.5)]
    assert read.failures == []
    read = kube.read(batch(CONTAINER, ("container.memory.working_set", int(GIB * 0.95))))
    assert read.failures == [("pod:shop/cart-1", "MemoryNearLimit", pytest.approx(0.95))]


def test_the_kubelets_own_limit_ratio_cpu_and_filesystem_are_read_for_pods_and_nodes() -> None:
    read = KubeMetrics().read(
        batch(
            POD,
            ("k8s.pod.memory_limit_utilization", 0.97),
            ("k8s.pod.cpu.utilization", 0.25),  # the older name, in cores
            ("k8s.pod.filesystem.usage", 30 * GIB),
            ("k8s.pod.filesystem.capacity", 40 * GIB),
        )
    )
    node = KubeMetrics().read(batch(NODE, ("k8s.node.filesystem.capacity", 100), ("k8s.node.filesystem.usage", 95)))
    assert set(read.series) == {
        ("pod:shop/cart-1", "k8s.memory.limit_ratio", 0.97),
        ("pod:shop/cart-1", "k8s.pod.cpu.usage", 0.25),
        ("pod:shop/cart-1", "k8s.filesystem.usage_ratio", 0.75),
    }
    assert read.failures == [("pod:shop/cart-1", "MemoryNearLimit", 0.97)]
    assert node.series == [("node:node-a", "k8s.filesystem.usage_ratio", 0.95)]


def test_restarts_count_as_increases_and_a_pruned_count_is_no_restart() -> None:
    kube = KubeMetrics()
    increases = []
    for count in (3, 3, 5, 0, 1):
        read = kube.read(batch(CONTAINER, ("k8s.container.restarts", count)))
        increases.append([v for _, s, v in read.series if s == "k8s.container.restarts.increase"])
        if count == 5:
            assert read.failures == [("pod:shop/cart-1", "ContainerRestarted", 2.0)]
    assert increases == [[], [0.0], [2.0], [0.0], [1.0]]


def test_a_failed_pod_is_a_failure_at_once_and_a_pending_one_after_pending_s() -> None:
    kube = KubeMetrics(pending_s=300)
    assert kube.read(batch(POD, ("k8s.pod.phase", 4))).failures == [("pod:shop/cart-1", "PodFailed", 4.0)]
    assert kube.read(batch(POD, ("k8s.pod.phase", 1), time_s=1000)).failures == []
    assert kube.read(batch(POD, ("k8s.pod.phase", 1), time_s=1200)).failures == []
    assert kube.read(batch(POD, ("k8s.pod.phase", 1), time_s=1300)).failures == [
        ("pod:shop/cart-1", "PodPending", 300.0)
    ]
    kube.read(batch(POD, ("k8s.pod.phase", 2), time_s=1310))  # running: the clock starts again
    assert kube.read(batch(POD, ("k8s.pod.phase", 1), time_s=1700)).failures == []


@pytest.mark.parametrize(
    ("points", "expected"),
    [
        pytest.param([("k8s.node.condition_ready", 0)], {"NodeNotReady"}, id="ready-false"),
        pytest.param([("k8s.node.condition_ready", -1)], {"NodeNotReady"}, id="ready-unknown"),
        pytest.param([("k8s.node.condition_ready", 1), ("k8s.node.condition_memory_pressure", 0)], set(), id="ok"),
        pytest.param([("k8s.node.condition_disk_pressure", 1)], {"NodePressure"}, id="disk-pressure"),
        pytest.param(
            [
                ("k8s.node.condition", 1, {"condition": "MemoryPressure"}),
                ("k8s.node.condition", 1, {"condition": "Ready"}),
            ],
            {"NodePressure"},
            id="newer-metric-with-a-condition-attribute",
        ),
    ],
)
def test_node_conditions_not_ready_or_under_pressure_are_failures_of_the_node(
    points: list[Point], expected: set[str]
) -> None:
    read = KubeMetrics().read(batch(NODE, *points))
    assert {s for _, s, _ in read.failures} == expected
    assert {e for e, _, _ in read.failures} <= {"node:node-a"}


def test_workload_availability_is_a_ratio_of_the_workload() -> None:
    read = KubeMetrics().read(batch(DEPLOYMENT, ("k8s.deployment.available", 1), ("k8s.deployment.desired", 4)))
    assert read.series == [("workload:shop/deployment/cart", "k8s.workload.available_ratio", 0.25)]


def test_the_window_folds_them_as_series_instead_of_generic_gauges() -> None:
    table = SeriesTable()
    window = Window(table, 10.0)
    window.add_metrics(batch(CONTAINER, ("k8s.container.memory_limit", GIB), ("k8s.container.restarts", 1)))
    window.add_metrics(batch(CONTAINER, ("container.memory.working_set", GIB // 4), ("k8s.container.restarts", 2)))
    window.add_metrics(batch(CONTAINER, ("container.memory.working_set", GIB // 2), ("k8s.container.restarts", 4)))
    window.add_metrics(batch(POD, ("k8s.pod.cpu.usage", 0.5), ("k8s.pod.memory.working_set", GIB // 2)))
    ids, values = window.values()
    got = {table.keys[i]: v for i, v in zip(ids.tolist(), values.tolist(), strict=True)}
    assert got == {
        ("pod:shop/cart-1", "k8s.memory.limit_ratio"): 0.5,  # the window's largest
        ("pod:shop/cart-1", "k8s.container.restarts.increase"): 3.0,  # the window's sum
        ("pod:shop/cart-1", "k8s.pod.cpu.usage"): 0.5,
        ("pod:shop/cart-1", "k8s.pod.memory.working_set"): GIB // 2,  # not read by name: a generic gauge
    }


def test_direction_rules_say_which_way_is_bad() -> None:
    assert rule_for("k8s.memory.limit_ratio").direction == UP
    assert rule_for("k8s.container.restarts.increase").min_abs == 1.0
    assert rule_for("k8s.workload.available_ratio").direction == DOWN
    assert rule_for("k8s.pod.cpu.usage").min_abs == pytest.approx(0.1)  # cores, not the percent of "cpu" metrics
    assert rule_for("http.server.request.duration.p95").direction == UP


def test_kubeletstats_metrics_sent_by_a_grpc_client_open_an_incident_on_the_pod_and_flow_into_series() -> None:
    clock = ManualClock(1_000.0)
    overrides = [*LOCAL_PORTS, *NOTHING_ON_DISK, "detection.window_s=10", "detection.warmup=5"]
    app = App(load_config(environ={}, overrides=overrides), clock=clock)
    app.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{app.receiver.grpc.port}")
    export = MetricsServiceStub(channel).Export
    try:
        export(request(CONTAINER, ("k8s.container.memory_limit", GIB)), timeout=10)

        def window(working_set: int, cpu: float) -> None:
            export(request(CONTAINER, ("container.memory.working_set", working_set)), timeout=10)
            export(request(POD, ("k8s.pod.cpu.usage", cpu)), timeout=10)
            app.receiver.queue.wait_idle()
            clock.advance(10)
            app.tick()

        for w in range(10):  # a steady working set at half the limit, a steady fifth of a core
            window(GIB // 2 + w, 0.2 + w / 1000)
        assert app.detector.recent("pod:shop/cart-1", "k8s.memory.limit_ratio", 1) == (pytest.approx(0.5),)
        assert app.incidents.listed() == []
        window(int(GIB * 0.93), 1.5)  # near the limit: an incident at once
        (incident,) = app.incidents.listed()
        anomaly = incident.anomalies["pod:shop/cart-1", "k8s:MemoryNearLimit"]
        assert (anomaly.value, anomaly.expected) == (pytest.approx(0.93), 0.9)
        assert incident.severity == "critical"
        window(int(GIB * 0.94), 1.5)  # the CPU jump, confirmed over two windows, joins it from its baseline
        assert {s for e, s in incident.anomalies if e == "pod:shop/cart-1"} >= {
            "k8s:MemoryNearLimit",
            "k8s.pod.cpu.usage",
            "k8s.memory.limit_ratio",
        }
    finally:
        channel.close()
        app.shutdown()
