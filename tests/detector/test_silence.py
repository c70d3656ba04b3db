"""Traffic that stopped (detector/silence.py): a steady request rate with no value reads as 0 while the other rates
go on; most of them stopping at once is the telemetry's gap. End to end: a service stops sending spans, through the
OTel SDK's OTLP exporter, and an incident opens on it alone."""

from __future__ import annotations

import numpy as np
from opentelemetry.trace import SpanKind
from test_edges import WINDOW_NS, Shop, running, window

from rootward.detector.silence import Silence, is_rate


def serve(shop: Shop, names: tuple[str, ...], w: int) -> None:
    """40 requests of 5 ms to each service in window ``w``."""
    for name in names:
        tracer = shop.tracer(name)
        for i in range(40):
            t = w * WINDOW_NS + i * 10**6
            tracer.start_span("GET /", kind=SpanKind.SERVER, start_time=t).end(end_time=t + 5 * 10**6)


def test_a_steady_rate_that_stops_reads_as_0_for_a_while_then_not() -> None:
    silence = Silence(after=3, keep=2)
    silence.add_series(["rate", "rate", "p95", "rate"])
    everything = np.array([0, 1, 2, 3])
    for _ in range(3):
        ids, _ = silence.fill(everything, np.ones(4))
        assert ids.tolist() == [0, 1, 2, 3]  # nothing missing: as it came
    filled = [silence.fill(np.array([1, 2, 3]), np.ones(3)) for _ in range(3)]
    assert [ids.tolist() for ids, _ in filled] == [[1, 2, 3, 0], [1, 2, 3, 0], [1, 2, 3]]  # 2 windows of 0, then gone
    assert filled[0][1].tolist() == [1.0, 1.0, 1.0, 0.0]
    assert silence.telemetry_gaps == 0


def test_a_rate_that_was_not_steady_and_other_series_are_not_filled() -> None:
    silence = Silence(after=3)
    silence.add_series(["rate", "p95", "in:service:shop/a.rate", "in:service:shop/a.latency", "rate"])
    assert [is_rate(s) for s in ("rate", "p95", "in:service:shop/a.rate")] == [True, False, False]  # edges: the mix
    for w in range(6):  # series 0 only every other window; series 4 steady throughout
        ids = np.array([0, 1, 2, 3, 4] if w % 2 == 0 else [1, 2, 3, 4])
        assert silence.fill(ids, np.ones(len(ids)))[0].tolist() == ids.tolist()
    for _ in range(3):  # the steady edge rate stops: not filled
        ids, _ = silence.fill(np.array([0, 1, 3, 4]), np.ones(4))
        assert ids.tolist() == [0, 1, 3, 4]


def test_a_window_with_nothing_in_it_is_a_telemetry_gap() -> None:
    silence = Silence(after=2)
    silence.add_series(["rate", "rate"])
    for _ in range(2):
        silence.fill(np.array([0, 1]), np.ones(2))
    ids, _ = silence.fill(np.zeros(0, np.int64), np.zeros(0))
    assert ids.tolist() == []
    assert silence.telemetry_gaps == 1


def test_most_steady_rates_stopping_at_once_is_a_telemetry_gap() -> None:
    silence = Silence(after=2)
    silence.add_series(["rate", "rate", "rate"])
    for _ in range(2):
        silence.fill(np.array([0, 1, 2]), np.ones(3))
    ids, _ = silence.fill(np.array([2]), np.ones(1))  # two of three gone: the Collector, not the services
    assert ids.tolist() == [2]
    assert silence.telemetry_gaps == 1
    for _ in range(2):  # back: steady again only after `after` windows
        silence.fill(np.array([0, 1, 2]), np.ones(3))
    ids, values = silence.fill(np.array([1, 2]), np.ones(2))
    assert ids.tolist() == [1, 2, 0]
    assert values.tolist() == [1.0, 1.0, 0.0]


def test_a_service_that_stops_serving_opens_an_incident_alone() -> None:
    """Frontend and cart each serve 40 requests a window; then cart sends nothing while frontend goes on."""
    with running("frontend", "cart") as (app, clock, shop):
        for w in range(30):
            serve(shop, ("frontend", "cart") if w < 24 else ("frontend",), w)
            window(app, clock, shop)
        incidents = app.incidents.listed()
        recent = app.detector.recent("service:shop/cart", "rate", 10)
    (incident,) = incidents
    anomaly = incident.anomalies[("service:shop/cart", "rate")]
    assert anomaly.value == 0.0
    assert anomaly.expected == 4.0  # 40 requests a 10 s window
    assert incident.status == "open"
    assert recent[-1] == 0.0
    assert ("service:shop/frontend", "rate") not in incident.anomalies


def test_most_services_going_quiet_together_opens_nothing_and_is_counted_on_metrics() -> None:
    with running("frontend", "cart", "ads") as (app, clock, shop):
        for w in range(30):
            serve(shop, ("frontend", "cart", "ads") if w < 24 else ("frontend",), w)
            window(app, clock, shop)
        incidents = app.incidents.listed()
        gaps = app.telemetry.registry.get_sample_value("rootward_detector_telemetry_gaps_total")
    assert incidents == []
    assert gaps == 1
