"""The log flow: a template that stopped coming while its service and its traces go on is ``log_missing``; a
request type that stopped altogether, a silence, and a trickle too thin to judge are not. The last test sends the
lines through the OTel SDK's OTLP log exporter into a running Rootward and sees the incident open."""

from __future__ import annotations

import itertools
import random

from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from rootward.app import App
from rootward.clock import ManualClock
from rootward.config import LOCAL_PORTS, NOTHING_ON_DISK, load_config
from rootward.detector.detector import Anomaly, Detector
from rootward.detector.logflow import FlowSettings, LogFlow
from rootward.detector.telemetry import FLOW, LOG_SKIPPED, DetectorMetrics
from rootward.detector.templates import LogTemplates
from rootward.model import LogBatch
from rootward.receiver import LogDecoder

A, B, C, X = 1, 2, 3, 4  # template ids: a request logs A, B, C; X is another request type's line
traces = itertools.count(1)
RANDOM = random.Random(5)


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
    assert (first.value, first.start, first.expected) == (0.0, 310.0, 5.0)  # the trace test, from five traces
    assert first.score >= 6
    assert max(a.expected for a in found) > 8  # the share test, once a trail of lines had no B
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


def test_the_trace_test_counts_from_the_last_trace_that_had_both() -> None:
    """Five traces of A without B right after good ones are enough: the trailing window need not be clear of B."""
    flow = LogFlow(FlowSettings(warmup_lines=100, min_expected=1e9))  # the share test off
    run(flow, range(30), 5, (A, B, C))
    found = run(flow, range(30, 32), 5, (A, C))  # window 30's traces finish (and are judged) at the next close
    assert [(a.signal, a.start, a.expected) for a in found] == [(f"log_missing:{B}", 310.0, 5.0)]
    assert run(flow, range(32, 34), 5, (A, B, C))[0].start == 320.0  # until the first trace with both finishes
    assert run(flow, range(34, 36), 5, (A, B, C)) == []


def test_anchors_are_chosen_in_the_first_window_of_each_trail_on_the_clock() -> None:
    """Whenever the flow began (window 3 here), anchors are chosen again in windows 6, 12, ... (trail: 6 windows)."""
    flow = LogFlow(FlowSettings(warmup_lines=100, min_expected=1e9))
    run(flow, range(3, 12), 5, (A, B))
    assert flow.chosen == 6
    run(flow, range(12, 13), 5, (A, B))
    assert flow.chosen == 12
    assert flow.anchors[("svc", B)][0] == ("svc", A)
    run(flow, range(20, 21), 5, (A, B))  # after a silence: the trail's first window the flow saw
    assert flow.chosen == 20


def test_a_service_unheard_for_six_hours_is_forgotten_even_across_a_silence() -> None:
    """Forgetting runs when an hour (360 windows) turns on the clock, also when the window it turns in never closed."""
    flow = LogFlow(FlowSettings(warmup_lines=100, min_expected=1e9))
    run(flow, range(40), 5, (A, B))
    flow.line("other", X, 0, 2_000)  # another service keeps the flow closing windows; svc falls silent
    flow.close(2_000, 20_000.0, 20_010.0)
    assert "svc" in flow.lines  # heard 1,960 windows ago: under 6 hours (2,160)
    flow.line("other", X, 0, 2_521)
    flow.close(2_521, 25_210.0, 25_220.0)  # the hour turned at 2,520, a window that never closed
    assert "svc" not in flow.lines
    assert not flow.anchors


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


def test_a_warn_template_that_stops_is_never_missing() -> None:
    flow = LogFlow(FlowSettings(warmup_lines=100))
    for number in range(40):
        window(flow, number, 5, (A, C))
        for _ in range(5):
            flow.line("svc", X, next(traces), number, severe=number < 30)  # errors, then none
        flow.close(number, number * 10.0, number * 10.0 + 10)
    assert ("svc", X) in flow.severe
    assert run(flow, range(40, 50), 5, (A, C)) == []


def test_a_service_that_writes_a_new_line_is_not_judged_for_a_trail() -> None:
    """A new version logs new lines (and its old ones may be gone): not a fault."""
    flow = LogFlow(FlowSettings(warmup_lines=100))
    run(flow, range(30), 5, (A, B, C))
    assert run(flow, range(30, 36), 5, (A, X, C)) == []  # B gone, X new: for a whole trail, nothing
    assert {a.signal for a in run(flow, range(36, 40), 5, (A, X, C))} == {f"log_missing:{B}"}


def test_a_trace_past_max_keys_counts_for_nothing() -> None:
    flow = LogFlow(FlowSettings(max_keys=2))
    for template in (A, B, C):
        flow.line("svc", template, 99, 0)
    flow.close(1, 10.0, 20.0)
    assert flow.overflowed == 1
    assert flow.n_a == {}


def test_lines_below_warn_are_sampled_by_trace_to_half_the_budget() -> None:
    clock = ManualClock(0.0)
    mined = LogTemplates(lambda _, a: None, clock, max_lines_per_window=1000, flow=FlowSettings())
    per_window = []
    for _ in range(6):  # 2,000 INFO lines a window (4 a trace), twice the half budget of 500... four times
        before = mined.skipped
        mined.consume_logs(info_lines(500))
        per_window.append(2000 - (mined.skipped - before))
        clock.advance(10)
        mined.tick()
    assert per_window[0] == 500  # the cap holds within a window
    assert mined.keep == 1024 * 500 // 2000  # the share settles at what fits, and stays there
    assert 350 <= per_window[-1] <= 650  # whole traces of a quarter of them
    assert mined.flow is not None
    assert all(keys is None or len(keys) == 4 for _, keys in mined.flow.open.values())
    for _ in range(2):  # the offer falls: all traces again
        mined.consume_logs(info_lines(50))
        clock.advance(10)
        mined.tick()
    assert mined.keep == 1024


def info_lines(traces_n: int, steps: tuple[str, ...] = ("read", "check", "write", "reply")) -> LogBatch:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.add(key="service.name", value=AnyValue(string_value="svc"))
    scope = rl.scope_logs.add()
    for _ in range(traces_n):
        trace = RANDOM.getrandbits(128).to_bytes(16, "big")  # real trace ids are random: sampling by them is fair
        for step in steps:
            scope.log_records.add(body=AnyValue(string_value=f"{step} done"), severity_number=9, trace_id=trace)
    return LogDecoder().decode(req.SerializeToString()).batch


def test_what_the_flow_sets_aside_is_on_metrics() -> None:
    clock = ManualClock(0.0)
    mined = LogTemplates(lambda _, a: None, clock, max_lines_per_window=10, flow=FlowSettings(max_keys=2))
    mined.consume_logs(info_lines(5))
    family = next(DetectorMetrics(Detector(lambda _, a: None), mined).collect())
    values = {s.labels["reason"]: s.value for s in family.samples}
    assert values[LOG_SKIPPED] == 15  # 20 lines offered, 5 mined (half the budget)
    assert values[FLOW["overflowed"]] == 1  # the first trace's third template was past max_keys 2


def test_the_agent_sees_the_templates_of_lines_below_warn_and_which_went_missing() -> None:
    clock = ManualClock(0.0)
    mined = LogTemplates(lambda _, a: None, clock, flow=FlowSettings())
    mined.consume_logs(info_lines(3))
    clock.advance(10)
    mined.tick()
    texts, counts, _ = mined.snapshot()
    by_text = {texts[t]: n for (e, t), n in counts.items() if e == "service:/svc"}
    assert by_text == {"read done": 3, "check done": 3, "write done": 3, "reply done": 3}


def test_a_busy_service_does_not_wash_out_a_quiet_ones_anchors() -> None:
    flow = LogFlow(FlowSettings(warmup_lines=100, min_expected=1e9))  # the trace test only
    for number in range(40):  # 3 quiet traces a window beside 400 busy ones: 16,000 busy traces, 5 half-lives
        window(flow, number, 3, (A, B), entity="quiet")
        window(flow, number, 400, (X, C), entity="busy")
        flow.close(number, number * 10.0, number * 10.0 + 10)
    found = []
    for number in range(40, 50):
        window(flow, number, 3, (A,), entity="quiet")
        window(flow, number, 400, (X, C), entity="busy")
        found += flow.close(number, number * 10.0, number * 10.0 + 10)
    assert {(a.entity, a.signal) for a in found} == {("quiet", f"log_missing:{B}")}


def test_templates_the_miner_evicted_are_forgotten_not_missing() -> None:
    clock = ManualClock(0.0)
    mined = LogTemplates(lambda _, a: None, clock, max_templates=2, flow=FlowSettings())
    assert mined.flow is not None
    for steps in (("read", "check"), ("write", "reply")):  # a miner that holds two: the second pair evicts the first
        for _ in range(7):
            mined.consume_logs(info_lines(2, steps))
            clock.advance(10)
            mined.tick()
    texts = set(mined.templates.values())
    assert texts == {"write done", "reply done"}
    assert set(mined.flow.learned["service:/svc"]) == set(mined.templates)  # the first pair's ids: gone
