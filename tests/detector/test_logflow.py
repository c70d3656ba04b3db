"""The log flow: a template that stopped coming while its service and its traces go on is ``log_missing``; a
request type that stopped altogether, a silence, and a trickle too thin to judge are not. The last test sends the
lines through the OTel SDK's OTLP log exporter into a running Rootward and sees the incident open."""

from __future__ import annotations

import itertools

from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from rootward.app import App
from rootward.clock import ManualClock
from rootward.config import LOCAL_PORTS, NOTHING_ON_DISK, load_config
from rootward.detector.detector import Anomaly
from rootward.detector.logflow import FlowSettings, LogFlow

A, B, C, X = 1, 2, 3, 4  # template ids: a request logs A, B, C; X is another request type's line
traces = itertools.count(1)


def window(flow: LogFlow, number: int, requests: int, templates: tuple[int, ...], entity: str = "svc") -> None:
    for _ in range(requests):
        trace_id = next(traces)
        for template in templates:
            flow.line(entity, template, trace_id, number)


def run(flow: LogFlow, windows: range, requests: int, templates: tuple[int, ...]) -> list[Anomaly]:
    found = []
    for number in windows:
        window(flow, number, requests, templates)
        found += flow.close(number, number * 10.0, number * 10.0 + 10)
    return found


def test_a_line_that_stops_while_its_requests_go_on_is_missing() -> None:
    flow = LogFlow(FlowSettings(warmup_lines=100))
    assert run(flow, range(30), 5, (A, B, C)) == []  # steady: nothing
    found = run(flow, range(30, 40), 5, (A, C))  # B stopped: the line after a failing statement
    assert {(a.entity, a.signal) for a in found} == {("svc", f"log_missing:{B}")}
    first = found[0]
    assert first.value == 0.0
    assert first.expected > 8
    assert first.score >= 6
    back = run(flow, range(40, 50), 5, (A, B, C))  # B is back: clear once its first traces have finished
    assert [a.start for a in back] == [400.0]


def test_the_trace_test_alone_finds_it_and_keeps_its_anchor_a_while_into_the_fault() -> None:
    """Learning goes on during the fault, so a template gone for good is forgotten: in this quiet service (150
    traces learned) after two minutes; in a busy one later."""
    flow = LogFlow(FlowSettings(warmup_lines=100, min_expected=1e9))  # the share test off
    run(flow, range(30), 5, (A, B, C))
    found = run(flow, range(30, 60), 5, (A, C))
    assert {a.signal for a in found} == {f"log_missing:{B}"}
    assert found[0].start <= 370
    assert found[-1].start - found[0].start >= 100
    assert run(flow, range(60, 70), 5, (A, C)) == []  # learned: (A, C) is how this service works now


def test_a_request_type_that_stops_altogether_says_nothing_to_the_trace_test() -> None:
    flow = LogFlow(FlowSettings(warmup_lines=100, min_expected=1e9))  # the share test off: traces only
    for number in range(30):
        window(flow, number, 4, (A, B))
        window(flow, number, 4, (X,))
        flow.close(number, 0.0, 10.0)
    assert run(flow, range(30, 40), 4, (X,)) == []  # A and B stopped together: the mix changed
    found = run(flow, range(40, 50), 4, (A,))  # A comes without B: that path broke
    assert {a.signal for a in found} == {f"log_missing:{B}"}
    assert flow.anchors[("svc", B)][0] == ("svc", A)


def test_a_service_is_judged_only_a_whole_trailing_window_after_its_lines_resume() -> None:
    flow = LogFlow(FlowSettings(warmup_lines=100, min_evidence=1e9))  # the share test only
    run(flow, range(30), 5, (A, B, C))
    # a silence, then lines resume mid-request (B and C of requests whose A came before the silence)
    assert run(flow, range(100, 105), 5, (B, C)) == []
    assert {a.signal for a in run(flow, range(105, 110), 5, (B, C))} == {f"log_missing:{A}"}


def test_a_trickle_too_thin_to_judge_is_not_missing() -> None:
    flow = LogFlow(FlowSettings(warmup_lines=10, min_expected=8, min_evidence=1e9))
    run(flow, range(60), 1, (A, B))  # one request a window: 6 B lines a minute expected, under 8
    assert run(flow, range(60, 70), 1, (A,)) == []


def test_open_traces_and_learned_pairs_are_bounded() -> None:
    flow = LogFlow(FlowSettings(max_open=10, max_pairs=4))
    window(flow, 0, 25, (A, B, C))
    assert len(flow.open) == 10
    assert flow.evicted == 15
    assert len(flow.n_ab) == 4
    assert flow.refused > 0


def test_a_failing_code_path_through_the_sdk_exporter_opens_an_incident() -> None:
    """A service logs three lines a request; then the middle one stops and an error comes in its place."""
    clock = ManualClock(1_000_000.0)
    app = App(load_config(environ={}, overrides=[*LOCAL_PORTS, *NOTHING_ON_DISK]), clock=clock)
    app.start()
    provider = LoggerProvider(resource=Resource.create({"service.name": "contacts"}))
    exporter = OTLPLogExporter(endpoint=f"127.0.0.1:{app.receiver.grpc.port}", insecure=True)
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
    logger = provider.get_logger("contacts")

    def request(n: int, failing: bool) -> None:
        context = trace.set_span_in_context(
            NonRecordingSpan(SpanContext(n + 1, n + 1, is_remote=False, trace_flags=TraceFlags(1)))
        )
        info = SeverityNumber.INFO
        logger.emit(body=f"GET /contacts/{n} for account {n * 7}", severity_number=info, context=context)
        if failing:
            logger.emit(body=f"lookup of contact {n} failed", severity_number=SeverityNumber.ERROR, context=context)
        else:
            logger.emit(body=f"found contact {n} in {n % 9} ms", severity_number=info, context=context)
        logger.emit(body=f"returning contact {n}", severity_number=info, context=context)

    try:
        n = 0
        for w in range(40):
            for _ in range(4):
                request(n := n + 1, failing=w >= 30)
            provider.force_flush()
            app.receiver.queue.wait_idle()
            clock.advance(10)
            app.tick()
        (incident,) = app.incidents.listed()
        missing = [s for e, s in incident.anomalies if e == "service:/contacts" and s.startswith("log_missing:")]
        assert len(missing) == 1
        template = int(missing[0].removeprefix("log_missing:"))
        assert app.log_templates.templates[template] == "found contact <NUM> in <NUM> ms"
    finally:
        provider.shutdown()
        app.shutdown()
