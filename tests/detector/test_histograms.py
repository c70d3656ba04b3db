"""Histogram and exponential histogram points folded into per-window quantile series: OTLP requests through the real
metrics decoder into a window (cumulative deltas, resets, streams, scales), and the OTel SDK's histograms sent by its
OTLP exporter to a running Rootward until a latency shift is an anomaly."""

from __future__ import annotations

import numpy as np
import pytest
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import (
    ExplicitBucketHistogramAggregation,
    ExponentialBucketHistogramAggregation,
    View,
)
from opentelemetry.sdk.resources import Resource

from rootward.app import App
from rootward.clock import ManualClock
from rootward.config import LOCAL_PORTS, NOTHING_ON_DISK, load_config
from rootward.detector.histograms import MAX_EXP_BUCKETS, MAX_LAYOUTS, Exponential
from rootward.detector.windows import SeriesTable, Window
from rootward.model import MetricBatch
from rootward.receiver import MetricDecoder

CUMULATIVE, DELTA = 2, 1
BOUNDS = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5]


def histogram(
    counts: list[int], temporality: int = CUMULATIVE, start: int = 1, route: str = "/cart", pod: str = "cart-1"
) -> MetricBatch:
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    for key, value in {"k8s.pod.name": pod, "k8s.namespace.name": "shop"}.items():
        rm.resource.attributes.add(key=key, value=AnyValue(string_value=value))
    m = rm.scope_metrics.add().metrics.add(name="http.server.request.duration", unit="s")
    m.histogram.aggregation_temporality = temporality  # type: ignore[assignment]
    p = m.histogram.data_points.add(start_time_unix_nano=start, time_unix_nano=start + 10, count=sum(counts))
    p.explicit_bounds.extend(BOUNDS)
    p.bucket_counts.extend(counts)
    p.attributes.add(key="http.route", value=AnyValue(string_value=route))
    return MetricDecoder().decode(req.SerializeToString()).batch


def exponential(
    scale: int, offset: int, counts: list[int], zero: int = 0, temporality: int = CUMULATIVE
) -> MetricBatch:
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    for key, value in {"k8s.pod.name": "cart-1", "k8s.namespace.name": "shop"}.items():
        rm.resource.attributes.add(key=key, value=AnyValue(string_value=value))
    m = rm.scope_metrics.add().metrics.add(name="rpc.duration", unit="ms")
    m.exponential_histogram.aggregation_temporality = temporality  # type: ignore[assignment]
    p = m.exponential_histogram.data_points.add(scale=scale, zero_count=zero, count=sum(counts) + zero)
    p.positive.offset = offset
    p.positive.bucket_counts.extend(counts)
    return MetricDecoder().decode(req.SerializeToString()).batch


def window_values(window: Window) -> dict[tuple[str, str], float]:
    ids, values = window.values()
    window.clear()
    return {window.table.keys[i]: v for i, v in zip(ids.tolist(), values.tolist(), strict=True)}


def test_a_delta_histogram_gives_its_quantiles_for_the_pod() -> None:
    window = Window(SeriesTable(), 10.0)
    window.add_metrics(histogram([0, 0, 10, 0, 0, 0, 0], temporality=DELTA))  # ten values in (0.02, 0.05]
    got = window_values(window)
    assert got[("pod:shop/cart-1", "http.server.request.duration.p50")] == pytest.approx(0.035)
    assert got[("pod:shop/cart-1", "http.server.request.duration.p99")] == pytest.approx(0.0497)


def test_cumulative_histograms_give_this_windows_deltas_and_a_count_going_down_is_a_reset() -> None:
    window = Window(SeriesTable(), 10.0)
    p95 = ("pod:shop/cart-1", "http.server.request.duration.p95")
    window.add_metrics(histogram([100, 0, 0, 0, 0, 0, 0]))  # a first cumulative point: its life, no window yet
    assert window_values(window) == {}
    window.add_metrics(histogram([100, 0, 0, 0, 0, 20, 0]))  # 20 new values, all in (0.2, 0.5]
    assert window_values(window)[p95] == pytest.approx(0.2 + 0.3 * 0.95)
    window.add_metrics(histogram([10, 0, 0, 0, 0, 0, 0]))  # a bucket went down: the process restarted
    assert window_values(window)[p95] == pytest.approx(0.0095)
    window.add_metrics(histogram([10, 0, 0, 0, 0, 0, 0], start=99))  # a new start time is a reset too
    assert window_values(window)[p95] == pytest.approx(0.0095)


def test_streams_of_one_pod_are_summed_and_a_quiet_window_gives_no_quantiles() -> None:
    window = Window(SeriesTable(), 10.0)
    for route in ("/a", "/b"):
        window.add_metrics(histogram([0] * 7, route=route))
    window.add_metrics(histogram([3, 0, 0, 0, 0, 0, 0], route="/a"))
    assert window_values(window) == {}  # 3 values: below MIN_COUNT
    window.add_metrics(histogram([13, 0, 0, 0, 0, 0, 0], route="/a"))  # 10 new values up to 0.01
    window.add_metrics(histogram([0, 0, 0, 0, 0, 0, 6], route="/b"))  # 6 new values past 0.5
    got = window_values(window)
    assert got[("pod:shop/cart-1", "http.server.request.duration.p50")] == pytest.approx(0.008)  # rank 8 of 10
    assert got[("pod:shop/cart-1", "http.server.request.duration.p99")] == 0.5  # the overflow bucket's bound


def test_two_points_of_one_stream_in_one_request_are_taken_in_time_order() -> None:
    window = Window(SeriesTable(), 10.0)
    window.add_metrics(histogram([0] * 7))
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    for key, value in {"k8s.pod.name": "cart-1", "k8s.namespace.name": "shop"}.items():
        rm.resource.attributes.add(key=key, value=AnyValue(string_value=value))
    m = rm.scope_metrics.add().metrics.add(name="http.server.request.duration")
    m.histogram.aggregation_temporality = CUMULATIVE  # type: ignore[assignment]
    for t, second in ((30, 20), (20, 10)):  # the later point first on the wire
        p = m.histogram.data_points.add(start_time_unix_nano=1, time_unix_nano=t)
        p.explicit_bounds.extend(BOUNDS)
        p.bucket_counts.extend([0, second, 0, 0, 0, 0, 0])
        p.attributes.add(key="http.route", value=AnyValue(string_value="/cart"))
    window.add_metrics(MetricDecoder().decode(req.SerializeToString()).batch)
    got = window_values(window)
    assert got[("pod:shop/cart-1", "http.server.request.duration.p50")] == pytest.approx(0.015)
    assert window.histograms.layouts[tuple(BOUNDS)].prev[0, 1] == 20  # the reference is the latest point


def test_a_point_whose_counts_do_not_match_its_bounds_and_streams_past_the_limit_are_counted_not_folded() -> None:
    window = Window(SeriesTable(max_series=1), 10.0)
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.add(key="k8s.pod.name", value=AnyValue(string_value="cart-1"))
    m = rm.scope_metrics.add().metrics.add(name="http.server.request.duration")
    m.histogram.aggregation_temporality = DELTA  # type: ignore[assignment]
    p = m.histogram.data_points.add(count=10)
    p.explicit_bounds.extend(BOUNDS)
    p.bucket_counts.extend([10, 0])  # 2 counts for 7 buckets
    window.add_metrics(MetricDecoder().decode(req.SerializeToString()).batch)
    assert window_values(window) == {}
    assert window.dropped["histogram points with bucket counts not matching their bounds"] == 1
    window.add_metrics(histogram([0] * 7, route="/a"))  # the one stream the limit allows
    window.add_metrics(histogram([0] * 7, route="/b"))
    assert window.dropped["histogram points of streams past max_series"] == 1


def test_exponential_histograms_rescaled_between_exports_still_give_this_windows_counts() -> None:
    window = Window(SeriesTable(), 10.0)
    window.add_metrics(exponential(scale=3, offset=8, counts=[10]))  # (2, 2.18]: index 8 at base 2 ** (1/8)
    assert window_values(window) == {}
    window.add_metrics(exponential(scale=3, offset=0, counts=[]))  # empty, as a no-recorded-value point: skipped
    window.add_metrics(exponential(scale=2, offset=4, counts=[10, 0, 0, 0, 10]))  # rescaled; 10 new in (4, 4.76]
    got = window_values(window)
    p50 = got[("pod:shop/cart-1", "rpc.duration.p50")]
    assert 4.0 < p50 <= 2 ** (9 / 4)


def test_a_delta_exponential_histogram_with_zeros_reads_them_as_zero() -> None:
    window = Window(SeriesTable(), 10.0)
    window.add_metrics(exponential(scale=0, offset=0, counts=[2, 2], zero=16, temporality=DELTA))
    got = window_values(window)
    assert got[("pod:shop/cart-1", "rpc.duration.p50")] == 0.0
    assert got[("pod:shop/cart-1", "rpc.duration.p99")] == pytest.approx(2 + 2 * (0.99 * 20 - 18) / 2)


def test_sdk_histograms_through_the_otlp_exporter_become_quantile_series_and_a_shift_is_an_anomaly() -> None:
    clock = ManualClock(1_000.0)
    overrides = [*LOCAL_PORTS, *NOTHING_ON_DISK, "detection.window_s=10", "detection.warmup=5"]
    overrides.append("detection.incidents.min_families=1")  # one metric's quantiles alone may open an incident
    app = App(load_config(environ={}, overrides=overrides), clock=clock)
    app.start()
    exporter = OTLPMetricExporter(endpoint=f"127.0.0.1:{app.receiver.grpc.port}", insecure=True)
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    views = [
        View(instrument_name="http.server.request.duration", aggregation=ExplicitBucketHistogramAggregation(BOUNDS)),
        View(instrument_name="db.client.duration", aggregation=ExponentialBucketHistogramAggregation()),
    ]
    resource = Resource.create({"service.name": "cart", "k8s.pod.name": "cart-1", "k8s.namespace.name": "shop"})
    provider = MeterProvider(resource=resource, metric_readers=[reader], views=views)
    meter = provider.get_meter("test")
    http = meter.create_histogram("http.server.request.duration", unit="s")
    db = meter.create_histogram("db.client.duration", unit="ms")
    rng = np.random.default_rng(4)
    pod = "pod:shop/cart-1"
    try:
        for w in range(22):
            slow = w >= 20
            http_values = rng.uniform(0.021, 0.049, 40) * (8 if slow else 1)
            db_values = rng.lognormal(np.log(3.0), 0.2, 40)
            for value in http_values:
                http.record(float(value), {"http.route": "/cart"})
            for value in db_values:
                db.record(float(value), {"db.system": "postgresql"})
            assert provider.force_flush(10_000)
            app.receiver.queue.wait_idle()
            clock.advance(10)
            app.tick()
            if w == 2:
                (db_p50,) = app.detector.recent(pod, "db.client.duration.p50", 1)
                assert db_p50 == pytest.approx(np.median(db_values), rel=0.1)  # exponential buckets: ~4 % wide
                (http_p95,) = app.detector.recent(pod, "http.server.request.duration.p95", 1)
                assert 0.02 < http_p95 <= 0.05
        anomalies = [a for i in app.incidents.listed() for a in i.anomalies.values()]
        assert {(a.entity, a.signal) for a in anomalies} >= {(pod, "http.server.request.duration.p95")}
        assert not any(a.signal.startswith("db.client.duration") for a in anomalies)
    finally:
        provider.shutdown()
        app.shutdown()


@pytest.mark.parametrize(
    ("far", "why"),
    [
        pytest.param(10_485_760, "one stream near 1 ms, one near 1 s, at scale 20", id="honest-far-apart"),
        pytest.param(-(2**31), "a hostile offset", id="hostile-offset"),
    ],
)
def test_merging_far_apart_exponential_streams_rescales_instead_of_allocating_millions_of_buckets(
    far: int, why: str
) -> None:
    near = Exponential(20, 0.0, (0, np.ones(4)), (0, np.zeros(0)))
    other = Exponential(20, 0.0, (far, np.ones(4)), (0, np.zeros(0)))
    merged = near.combine(other, 1.0)
    assert len(merged.positive[1]) <= MAX_EXP_BUCKETS, why
    assert merged.total() == 8.0
    assert merged.scale < 20


def varied(n: int, first_bound: float) -> MetricBatch:
    """One delta histogram point per request whose first bound differs (a sender varying its bounds)."""
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.add(key="k8s.pod.name", value=AnyValue(string_value="cart-1"))
    m = rm.scope_metrics.add().metrics.add(name="http.server.request.duration", unit="s")
    m.histogram.aggregation_temporality = DELTA  # type: ignore[assignment]
    p = m.histogram.data_points.add(start_time_unix_nano=1, time_unix_nano=n + 2, count=3)
    p.explicit_bounds.extend([first_bound, 1.0, 2.0])
    p.bucket_counts.extend([1, 1, 1, 0])
    return MetricDecoder().decode(req.SerializeToString()).batch


def test_bounds_that_vary_without_end_or_are_not_numbers_stop_at_the_layout_limit_and_are_counted() -> None:
    window = Window(SeriesTable(), 10.0)
    for n in range(MAX_LAYOUTS + 50):
        window.add_metrics(varied(n, 0.001 * (n + 1)))
    window.add_metrics(varied(0, float("nan")))
    assert len(window.histograms.layouts) == MAX_LAYOUTS
    refused = [v for k, v in window.dropped.items() if "bounds that are unsorted" in k]
    assert refused == [51]
