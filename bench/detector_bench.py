"""Detector figure: one window closed over 10,000 series.

- ``detector_tick_ms_10k_series``: ``Detector._close`` time (judge every series that has a value against its
  baseline: median, MAD and tail quantiles over its history, confirmation, anomalies to the sink) with 10,000 series
  each holding a full history (the default 240 values), values drawn at random, a few of them out of line and 200
  (a fault on 50 services) out of line in every timed window; the
  median of ``rounds`` windows after a warm-up. Every series reported stays in an "open incident", so its
  anomalous values are left out of its baseline (``learn_after_s``) and its statistics take the masked path. The
  window's own folding of batches is not in it (that is per
  batch, see r_graph and the soak).
- ``detector_tick_ms_10k_series_multivariate``: the same with the opt-in IsolationForest scoring the window's 2,500
  entities (fitted once in the warm-up; refits run on their own thread and are not in the tick).
- ``multivariate_import_mib``: resident memory scikit-learn's IsolationForest adds to a process that has numpy
  (a fresh interpreter, VmRSS before and after the import).
- ``detector_window_ms_10k_series`` (context, no target): the window's own side for about 10,000 series of the
  signal kinds a cluster sends, decoded once outside the timing: folding one window's batches (spans of 500
  services with 2 operations each, 1,000 pods' cumulative histograms of 2 streams and 16 buckets, their
  kubeletstats / k8s_cluster metrics) and ``Window.values``. Median of ``rounds`` windows.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from rootward.clock import ManualClock
from rootward.detector.detector import Anomaly, Detector, DetectorSettings
from rootward.detector.multivariate import Multivariate, MultivariateSettings
from rootward.detector.windows import SeriesTable, Window
from rootward.model import MetricBatch, SpanBatch
from rootward.receiver import MetricDecoder, TraceDecoder

SERIES = 10_000


@dataclass(frozen=True)
class DetectorFigures:
    tick_ms: float
    anomalies_per_tick: float


def run(rounds: int = 20, series: int = SERIES, multivariate: bool = False) -> DetectorFigures:
    rng = np.random.default_rng(7)
    found: list[int] = []
    held: set[tuple[str, str]] = set()  # every series ever reported, as if its incident were still open

    def sink(now: float, anomalies: list[Anomaly]) -> None:
        found.append(len(anomalies))
        held.update((a.entity, a.signal) for a in anomalies)

    settings = DetectorSettings()
    model = None
    if multivariate:  # one fit at the end of the warm-up, on this thread
        model = Multivariate(MultivariateSettings(refit_windows=settings.history, background=False))
    detector = Detector(sink, settings, ManualClock(0.0), model)
    detector.holding = lambda: held  # their anomalous values are left out of the baselines (the masked refresh)
    signals = ("p95", "rate", "nezha.pod.cpu.usage", "error_ratio")
    for i in range(series):
        detector.table.get(f"service:bench/s{i // 4}", signals[i % 4])
    ids = np.arange(series)
    level = rng.uniform(0.01, 10.0, series)
    values = {"v": np.zeros(series)}
    detector.window.values = lambda: (ids, values["v"])  # type: ignore[method-assign]
    history = detector.settings.history
    faulty = rng.choice(series, 200, replace=False)  # a fault on 50 services: their series out of line throughout
    times = []
    for n in range(history + rounds):
        v = level * (1 + rng.normal(0, 0.05, series))
        if n >= history:
            v[rng.integers(0, series, 10)] *= 20
            v[faulty] *= 20
        values["v"] = v
        started = time.perf_counter()
        detector._close(n)
        if n >= history:
            times.append((time.perf_counter() - started) * 1000)
    return DetectorFigures(statistics.median(times), statistics.mean(found[history:]))


def import_mib() -> float:
    """Peak RSS (MiB) scikit-learn's IsolationForest adds to a fresh interpreter that has numpy."""
    probe = (  # VmRSS, not ru_maxrss: a child inherits its parent's peak through fork and exec
        "import numpy, re; rss = lambda: int(re.search(r'VmRSS:\\s+(\\d+)', open('/proc/self/status').read())[1]); "
        "a = rss(); import sklearn.ensemble; print((rss() - a) / 1024)"
    )
    return float(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout)


def _attrs(target: object, values: dict[str, str]) -> None:
    for key, value in values.items():
        target.attributes.add(key=key, value=AnyValue(string_value=value))  # type: ignore[attr-defined]


def _metrics(n: int, pods: int, rng: np.random.Generator) -> bytes:
    """Window ``n``'s metrics of ``pods`` pods: a cumulative request duration histogram (2 routes, 16 buckets), the
    container working set and limit, restarts and pod CPU, as kubeletstats and k8s_cluster send them."""
    req = ExportMetricsServiceRequest()
    bounds = [0.005 * 2**i for i in range(15)]
    for p in range(pods):
        pod = {"k8s.pod.name": f"p{p}", "k8s.namespace.name": "bench", "service.name": f"s{p // 2}"}
        rm = req.resource_metrics.add()
        _attrs(rm.resource, pod | {"k8s.container.name": "app"})
        scope = rm.scope_metrics.add()
        hist = scope.metrics.add(name="http.server.request.duration", unit="s").histogram
        hist.aggregation_temporality = 2  # type: ignore[assignment]
        for route in ("/a", "/b"):
            point = hist.data_points.add(start_time_unix_nano=1, time_unix_nano=n + 2)
            point.explicit_bounds.extend(bounds)
            point.bucket_counts.extend((np.arange(16) * (n + 1) + rng.integers(0, 3, 16) * n).tolist())
            _attrs(point, {"http.route": route})
        for name, value in (
            ("container.memory.working_set", 2**28 + int(rng.integers(0, 2**20))),
            ("k8s.container.memory_limit", 2**29),
            ("k8s.container.restarts", 1),
            ("k8s.pod.cpu.usage", float(rng.uniform(0.1, 0.2))),
        ):
            point = scope.metrics.add(name=name).gauge.data_points.add(time_unix_nano=n + 2)
            if isinstance(value, int):
                point.as_int = value
            else:
                point.as_double = value
    return req.SerializeToString()


def _spans(services: int, rng: np.random.Generator) -> SpanBatch:
    req = ExportTraceServiceRequest()
    for s in range(services):
        rs = req.resource_spans.add()
        _attrs(rs.resource, {"service.name": f"s{s}", "service.namespace": "bench"})
        out = rs.scope_spans.add().spans
        for i in range(20):
            span = out.add(trace_id=rng.bytes(16), span_id=rng.bytes(8), kind=2 + (i % 4 == 0), name=f"GET /{i % 2}")  # type: ignore[arg-type]
            span.start_time_unix_nano = 1
            span.end_time_unix_nano = 1 + int(rng.uniform(1e6, 5e7))
    return TraceDecoder().decode(req.SerializeToString()).batch


@dataclass(frozen=True)
class WindowFigures:
    window_ms: float  # fold one window's batches and compute its values
    decode_ms: float  # MetricDecoder.decode of the same window's metrics request, for scale
    series: int


def window_run(rounds: int = 20, pods: int = 1_000) -> WindowFigures:
    """Medians over ``rounds`` windows (see the module docstring)."""
    rng = np.random.default_rng(3)
    window = Window(SeriesTable(), 10.0, operations_per_service=10)
    spans = _spans(pods // 2, rng)
    metrics: list[MetricBatch] = []
    decode_times = []
    for n in range(rounds + 2):
        wire = _metrics(n, pods, rng)
        started = time.perf_counter()
        metrics.append(MetricDecoder().decode(wire).batch)
        decode_times.append((time.perf_counter() - started) * 1000)
    times, series = [], 0
    for n, batch in enumerate(metrics):
        started = time.perf_counter()
        window.add_spans(spans)
        window.add_metrics(batch)
        ids, _ = window.values()
        window.clear()
        if n >= 2:  # after the histograms' and counters' first points
            times.append((time.perf_counter() - started) * 1000)
            series = len(ids)
    return WindowFigures(statistics.median(times), statistics.median(decode_times), series)


if __name__ == "__main__":
    figures = run()
    print(f"detector_tick_ms_10k_series {figures.tick_ms:.2f} ({figures.anomalies_per_tick:.1f} anomalies a tick)")
    joint = run(multivariate=True)
    print(f"detector_tick_ms_10k_series_multivariate {joint.tick_ms:.2f}")
    print(f"multivariate_import_mib {import_mib():.0f}")
    w = window_run()
    print(f"detector_window_ms_10k_series {w.window_ms:.2f} ({w.series} series; decode {w.decode_ms:.2f} ms)")
