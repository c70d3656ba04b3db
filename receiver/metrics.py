"""Decode an OTLP ExportMetricsServiceRequest into a columnar :class:`MetricBatch`.

Metric traffic is a small fraction of span traffic (one point per series per collection interval), so this path
uses the upb parse and reads each data point once, into arrays; histogram buckets are kept per row. A point
whose attributes break a limit is refused alone and reported back as partial success.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from rootward.model import AttrValue, MetricBatch, MetricInfo, Resource
from rootward.receiver._common import Decoded, UpbDecoder, as_int64, attributes, summarize, too_many
from rootward.receiver.errors import LimitExceeded


class MetricDecoder(UpbDecoder[ExportMetricsServiceRequest, MetricBatch]):
    """Decodes metric requests; one per receiver (it holds the resource cache)."""

    request_type = ExportMetricsServiceRequest
    what = "metrics request"

    def decode_message(self, req: ExportMetricsServiceRequest) -> Decoded[MetricBatch]:
        """Decode an already parsed request (the OTLP/JSON path)."""
        infos: dict[MetricInfo, int] = {}
        resources: list[Resource] = []
        rows: dict[str, list[float | int]] = {k: [] for k in ("metric", "resource", "start", "time", "value", "count")}
        attrs: list[dict[str, AttrValue]] = []
        buckets: dict[int, tuple[object, ...]] = {}
        rejected: Counter[str] = Counter()
        points = sum(
            len(getattr(m, kind).data_points)
            for rm in req.resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics
            if (kind := m.WhichOneof("data")) is not None
        )
        if max(points, len(req.resource_metrics)) > self.limits.max_items:
            raise too_many(points, "data points", self.limits)
        for rm in req.resource_metrics:
            r = len(resources)
            resources.append(self.resources.get(rm.resource.SerializeToString()))
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    kind = m.WhichOneof("data")
                    if kind is None:
                        continue
                    data = getattr(m, kind)
                    info = MetricInfo(
                        name=m.name,
                        unit=m.unit,
                        type=kind,
                        temporality=getattr(data, "aggregation_temporality", 0),
                        monotonic=getattr(data, "is_monotonic", False),
                    )
                    mi = infos.setdefault(info, len(infos))
                    for p in data.data_points:
                        try:
                            point_attrs = attributes(p.attributes, self.limits)
                        except LimitExceeded as e:
                            rejected[str(e)] += 1
                            continue
                        row = len(attrs)
                        attrs.append(point_attrs)
                        value, count = _point_value(kind, p, buckets, row)
                        rows["metric"].append(mi)
                        rows["resource"].append(r)
                        rows["start"].append(p.start_time_unix_nano)
                        rows["time"].append(p.time_unix_nano)
                        rows["value"].append(value)
                        rows["count"].append(count)
        batch = MetricBatch(
            metric=np.array(rows["metric"], np.int32),
            resource=np.array(rows["resource"], np.int32),
            start=as_int64(rows["start"]),
            time=as_int64(rows["time"]),
            value=np.array(rows["value"], np.float64),
            count=as_int64(rows["count"]),
            metrics=list(infos),
            resources=resources,
            attributes=attrs,
            buckets=buckets,
        )
        return Decoded(batch, sum(rejected.values()), summarize(rejected, "data points"))


def _point_value(kind: str, p: object, buckets: dict[int, tuple[object, ...]], row: int) -> tuple[float, int]:
    """(value, count) of one data point; histogram-like points also record their buckets under ``row``."""
    if kind in ("gauge", "sum"):
        which = p.WhichOneof("value")  # type: ignore[attr-defined]
        return (float(getattr(p, which)) if which else float("nan")), 0
    if kind == "histogram":
        buckets[row] = (tuple(p.explicit_bounds), tuple(p.bucket_counts))  # type: ignore[attr-defined]
    elif kind == "exponential_histogram":
        buckets[row] = (
            p.scale,  # type: ignore[attr-defined]
            p.zero_count,  # type: ignore[attr-defined]
            p.positive.offset,  # type: ignore[attr-defined]
            tuple(p.positive.bucket_counts),  # type: ignore[attr-defined]
            p.negative.offset,  # type: ignore[attr-defined]
            tuple(p.negative.bucket_counts),  # type: ignore[attr-defined]
        )
    elif kind == "summary":
        buckets[row] = tuple((q.quantile, q.value) for q in p.quantile_values)  # type: ignore[attr-defined]
    return float(p.sum), int(p.count)  # type: ignore[attr-defined]
