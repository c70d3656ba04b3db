"""Metric and log decoding on their own: every metric type, temporality, and Kubernetes objects as log bodies."""

from __future__ import annotations

import math

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue, KeyValueList
from opentelemetry.proto.metrics.v1 import metrics_pb2 as m

from rootward.receiver import LogDecoder, MetricDecoder


def _metrics_request(*metrics: m.Metric) -> bytes:
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.add(key="k8s.pod.name", value=AnyValue(string_value="cart-1"))
    rm.scope_metrics.add().metrics.extend(metrics)
    return req.SerializeToString()


def test_every_metric_type_becomes_one_row_per_point_with_its_buckets() -> None:
    data = _metrics_request(
        m.Metric(name="g", gauge=m.Gauge(data_points=[m.NumberDataPoint(as_int=7, time_unix_nano=5)])),
        m.Metric(
            name="s",
            sum=m.Sum(
                aggregation_temporality=m.AGGREGATION_TEMPORALITY_DELTA,
                is_monotonic=True,
                data_points=[m.NumberDataPoint(as_double=1.5, start_time_unix_nano=1, time_unix_nano=2)],
            ),
        ),
        m.Metric(
            name="h",
            histogram=m.Histogram(
                aggregation_temporality=m.AGGREGATION_TEMPORALITY_CUMULATIVE,
                data_points=[m.HistogramDataPoint(count=3, sum=30.0, explicit_bounds=[10.0], bucket_counts=[1, 2])],
            ),
        ),
        m.Metric(
            name="e",
            exponential_histogram=m.ExponentialHistogram(
                data_points=[
                    m.ExponentialHistogramDataPoint(
                        count=4,
                        sum=8.0,
                        scale=2,
                        zero_count=1,
                        positive=m.ExponentialHistogramDataPoint.Buckets(offset=3, bucket_counts=[2, 1]),
                    )
                ]
            ),
        ),
        m.Metric(
            name="q",
            summary=m.Summary(
                data_points=[
                    m.SummaryDataPoint(
                        count=10,
                        sum=55.0,
                        quantile_values=[m.SummaryDataPoint.ValueAtQuantile(quantile=0.99, value=9.9)],
                    )
                ]
            ),
        ),
        m.Metric(name="empty"),
    )
    decoded = MetricDecoder().decode(data)
    batch = decoded.batch
    assert decoded.rejected == 0
    rows = {batch.metrics[mi].name: i for i, mi in enumerate(batch.metric.tolist())}
    assert list(rows) == ["g", "s", "h", "e", "q"]
    g, s, h, e, q = (rows[k] for k in "gsheq")
    assert (batch.value[g], batch.time[g]) == (7.0, 5)
    info = batch.metrics[batch.metric[s]]
    assert (info.type, info.temporality, info.monotonic) == ("sum", 1, True)
    assert (batch.value[s], batch.start[s], batch.time[s]) == (1.5, 1, 2)
    assert batch.metrics[batch.metric[h]].temporality == 2
    assert (batch.value[h], batch.count[h], batch.buckets[h]) == (30.0, 3, ((10.0,), (1, 2)))
    assert (batch.value[e], batch.count[e], batch.buckets[e]) == (8.0, 4, (2, 1, 3, (2, 1), 0, ()))
    assert (batch.value[q], batch.count[q], batch.buckets[q]) == (55.0, 10, ((0.99, 9.9),))
    assert batch.resources[0].attributes == {"k8s.pod.name": "cart-1"}


def test_a_number_point_without_a_value_is_nan() -> None:
    data = _metrics_request(m.Metric(name="g", gauge=m.Gauge(data_points=[m.NumberDataPoint(time_unix_nano=1)])))
    assert math.isnan(MetricDecoder().decode(data).batch.value[0])


def _kv(key: str, value: AnyValue) -> KeyValue:
    return KeyValue(key=key, value=value)


def _s(text: str) -> AnyValue:
    return AnyValue(string_value=text)


def test_kubernetes_event_from_k8sobjects_watch_arrives_as_a_structured_body() -> None:
    # The k8sobjects receiver in watch mode: body {type: MODIFIED, object: <the Event>}.
    event = AnyValue(
        kvlist_value=KeyValueList(
            values=[
                _kv("kind", _s("Event")),
                _kv("reason", _s("OOMKilling")),
                _kv("involvedObject", AnyValue(kvlist_value=KeyValueList(values=[_kv("name", _s("cart-1"))]))),
                _kv("count", AnyValue(int_value=3)),
            ]
        )
    )
    body = AnyValue(kvlist_value=KeyValueList(values=[_kv("type", _s("MODIFIED")), _kv("object", event)]))
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.scope_logs.add().log_records.add(
        observed_time_unix_nano=42, body=body, attributes=[_kv("event.domain", _s("k8s"))]
    )
    batch = LogDecoder().decode(req.SerializeToString()).batch
    assert batch.body[0] == {
        "type": "MODIFIED",
        "object": {"kind": "Event", "reason": "OOMKilling", "involvedObject": {"name": "cart-1"}, "count": 3},
    }
    assert int(batch.time[0]) == 42  # no time_unix_nano: the observed time stands in
    assert batch.attributes[0] == {"event.domain": "k8s"}
