"""What the detector could not fold into series, on /metrics: a series past ``max_series``, a histogram stream past
its limit or with malformed buckets, spans of operations past ``operations_per_service``, multivariate model fits
that failed. These are counted where they happen (``SeriesTable.refused``, ``Window.dropped``,
``Multivariate.failures``); without this they would be lost silently to anyone who cannot attach a debugger.

    rootward_detector_dropped_total{reason}
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.metrics_core import CounterMetricFamily, Metric

from rootward.detector.detector import Detector

SERIES_REFUSED = "series past max_series"
MULTIVARIATE_FAILED = "multivariate model fits that failed (the last model stays)"


class DetectorMetrics:
    """A prometheus_client collector over a :class:`Detector` (register it on a registry)."""

    def __init__(self, detector: Detector) -> None:
        self.detector = detector

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "rootward_detector_dropped",
            "Telemetry the detector did not fold into series, by reason.",
            labels=["reason"],
        )
        family.add_metric([SERIES_REFUSED], self.detector.table.refused)
        for reason, count in dict(self.detector.window.dropped).items():  # a dict copy is one step under the GIL
            family.add_metric([reason], count)
        if self.detector.multivariate is not None:
            family.add_metric([MULTIVARIATE_FAILED], self.detector.multivariate.failures)
        yield family
