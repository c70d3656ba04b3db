"""What the detector could not fold into series, on /metrics: a series past ``max_series``, a histogram stream past
its limit or with malformed buckets, spans of operations past ``operations_per_service``, multivariate model fits
that failed, log lines not mined (over the miner's budget, or of traces sampled out), and what the log flow set
aside (traces finished early past its open-trace limit, traces past ``max_keys``, pairs past ``max_pairs``, lines of
services past ``max_entities``). These are counted where they happen (``SeriesTable.refused``, ``Window.dropped``,
``Multivariate.failures``); without this they would be lost silently to anyone who cannot attach a debugger.

    rootward_detector_dropped_total{reason}
    rootward_detector_telemetry_gaps_total   windows in which most steady request rates stopped at once (silence.py)
    rootward_detector_series_released_total  series forgotten after ``series_ttl_s`` without a value
    rootward_detector_series                 series held (in use; released slots excluded)
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from rootward.detector.detector import Detector
from rootward.detector.logflow import LogFlow
from rootward.detector.spanflow import SpanFlow
from rootward.detector.templates import LogTemplates

SERIES_REFUSED = "series past max_series"
MULTIVARIATE_FAILED = "multivariate model fits that failed (the last model stays)"
LOG_SKIPPED = "log lines not mined (over the miner's budget, or of traces sampled out)"
SPANS_SKIPPED = "spans the span flow set aside (past its budget, open traces or names; their traces count for nothing)"
SPANS_DROPPED = "span flow traces told to no one (no root within max_age, past max_spans_per_trace, or spoiled)"
FLOW = {
    "evicted": "log flow traces finished early (open traces past the limit)",
    "overflowed": "log flow traces past max_keys (judged by no one)",
    "refused": "log flow template pairs past max_pairs",
    "crowded": "log flow lines of services past max_entities",
}
#: The same counters of the span flow's own LogFlow.
SPAN_FLOW = {attribute: reason.replace("log flow", "span flow", 1) for attribute, reason in FLOW.items()}


class DetectorMetrics:
    """A prometheus_client collector over a :class:`Detector` (register it on a registry)."""

    def __init__(
        self, detector: Detector, templates: LogTemplates | None = None, spans: SpanFlow | None = None
    ) -> None:
        self.detector = detector
        self.templates = templates
        self.spans = spans

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
        flows: list[tuple[dict[str, str], LogFlow]] = []
        if self.templates is not None:
            family.add_metric([LOG_SKIPPED], self.templates.skipped)
            flows += [(FLOW, self.templates.flow)] if self.templates.flow is not None else []
        if self.spans is not None:
            family.add_metric([SPANS_SKIPPED], self.spans.skipped)
            family.add_metric([SPANS_DROPPED], self.spans.dropped)
            flows.append((SPAN_FLOW, self.spans.flow))
        for reasons, flow in flows:
            for attribute, reason in reasons.items():
                family.add_metric([reason], getattr(flow, attribute))
        yield family
        yield CounterMetricFamily(
            "rootward_detector_telemetry_gaps",
            "Windows in which most steady request rates stopped at once: read as a gap in the telemetry (a Collector"
            " or the network to it), not as traffic that stopped.",
            value=self.detector.silence.telemetry_gaps,
        )
        table = self.detector.table
        yield CounterMetricFamily(
            "rootward_detector_series_released",
            "Series forgotten after detection.series_ttl_s without a value; their slots go to new series.",
            value=table.released,
        )
        yield GaugeMetricFamily(
            "rootward_detector_series", "Series held, of detection.max_series.", value=len(table.index)
        )
