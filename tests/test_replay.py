"""Replay: recorded OTLP (the Collector file exporter's JSON lines and proto files) and the Nezha layout sent through
a real gRPC client into a running receiver; what the receiver decodes is what was recorded. Malformed sources are
reported and skipped; retries honour RetryInfo; ``rootward replay`` end to end, in-process and to an endpoint with a
token."""

from __future__ import annotations

import base64
import json
import re
import struct
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from google.protobuf import json_format
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue, KeyValueList

from rootward.cli import main
from rootward.model import LogBatch, MetricBatch, SpanBatch
from rootward.receiver import LogDecoder, MetricDecoder, Receiver, TraceDecoder
from rootward.recorded import Request, proto_signal
from rootward.replay import Progress, open_source, replay
from rootward.replay_sinks import GrpcSink, InProcess, ReplayClock, ReplayError
from rootward.testing import RecordingConsumer, running_receiver

from nezha_days import CART, OB_T0, ob_day

T = 1_700_000_000_000_000_000


def kv(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def recorded() -> list[Message]:
    """A traces, a metrics and a logs request with a bit of everything the decoders read."""
    traces = ExportTraceServiceRequest()
    rs = traces.resource_spans.add()
    rs.resource.attributes.extend([kv("service.name", "checkout"), kv("k8s.pod.name", "checkout-7d9f-abcde")])
    spans = rs.scope_spans.add().spans
    root = spans.add(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, name="POST /checkout", kind=2,
                     start_time_unix_nano=T, end_time_unix_nano=T + 5_000_000)  # fmt: skip
    root.attributes.extend([kv("http.route", "/checkout")])
    root.events.add(name="retry", time_unix_nano=T + 1_000)
    child = spans.add(trace_id=b"\x01" * 16, span_id=b"\x03" * 8, parent_span_id=b"\x02" * 8, name="charge", kind=3,
                      start_time_unix_nano=T + 1_000_000, end_time_unix_nano=T + 4_000_000)  # fmt: skip
    child.attributes.extend([kv("peer.service", "payment")])
    child.status.code = 2
    metrics = ExportMetricsServiceRequest()
    rm = metrics.resource_metrics.add()
    rm.resource.attributes.extend([kv("service.name", "checkout")])
    sm = rm.scope_metrics.add()
    sm.metrics.add(name="queue.depth", unit="{item}").gauge.data_points.add(time_unix_nano=T, as_double=3.5)
    total = sm.metrics.add(name="requests", unit="{request}").sum
    total.aggregation_temporality, total.is_monotonic = 2, True
    total.data_points.add(start_time_unix_nano=T - 10**9, time_unix_nano=T, as_int=42).attributes.extend(
        [kv("route", "/checkout")]
    )
    histogram = sm.metrics.add(name="latency", unit="s").histogram
    histogram.aggregation_temporality = 2
    histogram.data_points.add(time_unix_nano=T, count=3, sum=0.6, explicit_bounds=[0.1, 1.0], bucket_counts=[1, 2, 0])
    logs = ExportLogsServiceRequest()
    rl = logs.resource_logs.add()
    rl.resource.attributes.extend([kv("service.name", "checkout")])
    record = rl.scope_logs.add().log_records.add(time_unix_nano=T + 2_000, severity_number=17, severity_text="ERROR",
                                                 trace_id=b"\x01" * 16, span_id=b"\x03" * 8)  # fmt: skip
    record.body.kvlist_value.CopyFrom(KeyValueList(values=[kv("msg", "card declined")]))
    return [traces, metrics, logs]


def hex_ids(doc: Any) -> Any:
    """OTLP/JSON as the file exporter writes it: trace and span ids in hex, not protobuf JSON's base64."""
    if isinstance(doc, list):
        return [hex_ids(x) for x in doc]
    if isinstance(doc, dict):
        return {k: base64.b64decode(v).hex() if k in ("traceId", "spanId", "parentSpanId") else hex_ids(v)
                for k, v in doc.items()}  # fmt: skip
    return doc


def json_line(message: Message) -> str:
    return json.dumps(hex_ids(json_format.MessageToDict(message, use_integers_for_enums=True)))


def write_json_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def framed(message: Message) -> bytes:
    data = message.SerializeToString()
    return struct.pack(">I", len(data)) + data


def rows(batch: SpanBatch | MetricBatch | LogBatch) -> list[tuple[Any, ...]]:
    """A batch as plain rows, to compare what the receiver decoded with a direct decode."""
    res = [dict(r.attributes) for r in batch.resources]
    if isinstance(batch, SpanBatch):
        return [(batch.trace_id[i].tolist(), int(batch.span_id[i]), int(batch.parent_id[i]), int(batch.kind[i]),
                 int(batch.status[i]), int(batch.start[i]), int(batch.end[i]), batch.strings[batch.name[i]],
                 res[batch.resource[i]], {k: batch.string(k, i) for k in batch.str_attrs})
                for i in range(len(batch))]  # fmt: skip
    if isinstance(batch, MetricBatch):
        return [(batch.metrics[batch.metric[i]], int(batch.start[i]), int(batch.time[i]), float(batch.value[i]),
                 int(batch.count[i]), dict(batch.attributes[i]), res[batch.resource[i]], repr(batch.buckets.get(i)))
                for i in range(len(batch))]  # fmt: skip
    return [(int(batch.time[i]), int(batch.severity[i]), batch.trace_id[i].tolist(), int(batch.span_id[i]),
             batch.body[i], dict(batch.attributes[i]), res[batch.resource[i]]) for i in range(len(batch))]  # fmt: skip


def direct(messages: list[Message]) -> dict[str, list[tuple[Any, ...]]]:
    traces, metrics, logs = (m.SerializeToString() for m in messages)
    return {
        "traces": rows(TraceDecoder().decode(traces).batch),
        "metrics": rows(MetricDecoder().decode(metrics).batch),
        "logs": rows(LogDecoder().decode(logs).batch),
    }


def received(consumer: RecordingConsumer, expected: dict[str, list[tuple[Any, ...]]]) -> dict[str, list[Any]]:
    for signal, items in expected.items():
        consumer.wait_for(signal, len(items))
    return {signal: [r for b in getattr(consumer, signal) for r in rows(b)] for signal in expected}


@pytest.mark.parametrize("fmt", [pytest.param("json", id="json-lines"), pytest.param("proto", id="proto")])
def test_recorded_otlp_replays_to_what_the_receiver_decodes(
    tmp_path: Path, receiver: tuple[Receiver, RecordingConsumer], fmt: str
) -> None:
    messages = recorded()
    if fmt == "json":
        path = write_json_lines(tmp_path / "otlp.jsonl", [json_line(m) for m in messages])
    else:
        path = tmp_path / "otlp.proto"
        path.write_bytes(b"".join(map(framed, messages)))
    server, consumer = receiver
    source = open_source([path])
    sink = GrpcSink(f"127.0.0.1:{server.grpc.port}")
    try:
        stats = replay(source, sink)
    finally:
        sink.close()
    assert stats.sent == {"traces": 2, "metrics": 3, "logs": 1}
    assert stats.requests == {"traces": 1, "metrics": 1, "logs": 1}
    assert not sum(stats.rejected.values())
    assert not stats.failed
    assert not source.issues.skipped
    expected = direct(messages)
    assert received(consumer, expected) == expected


def test_proto_files_name_their_signal_by_their_first_item() -> None:
    traces, metrics, logs = (m.SerializeToString() for m in recorded())
    assert [proto_signal(traces), proto_signal(metrics), proto_signal(logs)] == ["traces", "metrics", "logs"]
    assert proto_signal(b"") is None
    assert proto_signal(b"\x0a\xff") is None  # a length past the end: not protobuf


def test_a_bad_json_line_and_a_truncated_proto_message_are_reported_and_skipped(
    tmp_path: Path, receiver: tuple[Receiver, RecordingConsumer]
) -> None:
    traces, metrics, logs = recorded()
    bad = write_json_lines(tmp_path / "bad.jsonl", [
        json_line(traces),
        "{not json",
        '{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz", "spanId": "0102030405060708"}]}]}]}',
        "[1, 2]",
        json_line(logs),
    ])  # fmt: skip
    truncated = tmp_path / "cut.proto"
    truncated.write_bytes(framed(metrics) + framed(metrics)[:-3])
    server, consumer = receiver
    source = open_source([bad, truncated])
    sink = GrpcSink(f"127.0.0.1:{server.grpc.port}")
    try:
        stats = replay(source, sink)
    finally:
        sink.close()
    assert stats.issues.skipped == {"json_line_bad": 3, "proto_truncated": 1}
    assert stats.issues.examples["json_line_bad"].startswith("bad.jsonl:2: ")
    assert stats.sent == {"traces": 2, "metrics": 3, "logs": 1}
    assert consumer.wait_for("metrics", 3) == 3


def test_a_full_queue_is_retried_after_the_servers_retry_info() -> None:
    delays: list[float] = []

    def sleep(seconds: float) -> None:
        delays.append(seconds)
        time.sleep(seconds)

    slow = RecordingConsumer(delay=0.05)
    with running_receiver(slow, **{"queue.max_items": 2, "queue.retry_after_s": 0.02}) as (server, consumer):
        sink = GrpcSink(f"127.0.0.1:{server.grpc.port}", sleep=sleep)
        try:
            stats = replay([Request("traces", recorded()[0], 2, T)] * 6, sink)
        finally:
            sink.close()
        assert consumer.wait_for("traces", 12) == 12
    assert not stats.failed
    assert sink.retries > 0
    assert set(delays) == {0.02}  # the server's RetryInfo, not the client's own backoff


def test_a_wrong_token_stops_the_replay_with_the_servers_answer(secured: tuple[Receiver, RecordingConsumer]) -> None:
    server, _ = secured
    sink = GrpcSink(f"127.0.0.1:{server.grpc.port}", token="wrong")
    with pytest.raises(ReplayError, match="UNAUTHENTICATED: invalid bearer token"):
        replay([Request("traces", recorded()[0], 2, T)], sink)
    sink.close()


def test_speed_paces_requests_by_their_event_time(receiver: tuple[Receiver, RecordingConsumer]) -> None:
    server, _ = receiver
    requests = [Request("traces", recorded()[0], 2, T + i * 1_000_000_000) for i in range(3)]  # 2 s of events
    sink = GrpcSink(f"127.0.0.1:{server.grpc.port}")
    began = time.monotonic()
    try:
        replay(requests, sink, speed=10.0)  # 2 s at 10x: 0.2 s
    finally:
        sink.close()
    assert 0.19 <= time.monotonic() - began < 2.0


def test_in_process_the_pipeline_runs_at_replayed_time(tmp_path: Path) -> None:
    ob_day(tmp_path)
    source = open_source([tmp_path])
    clocks: list[tuple[int, float]] = []
    with InProcess() as target:
        assert target.sink is not None

        def on_progress(p: Progress) -> None:
            clocks.append((p.time_ns, target.clock.now()))

        stats = replay(source, target.sink, clock=target.clock, on_progress=on_progress)
        target.app.topology.flush()
        calls = {(src, dst): n for src, dst, n, _ in target.app.topology.calls()}
        summary = target.app.summary
    assert all(abs(t / 1e9 - now) < 1e-6 for t, now in clocks)  # the clock was at each request's event time
    assert clocks[-1][0] == stats.last_ns
    assert OB_T0 < clocks[0][1] < clocks[-1][1] < OB_T0 + 120
    assert calls[("service:/frontend", "service:/cartservice")] == 1
    assert calls[("service:/frontend", "service:/currencyservice")] == 1
    assert summary.items == {"traces": 8, "logs": 1, "metrics": 2}


def test_a_replay_clock_closes_every_window_it_passes_as_a_live_ticker_would() -> None:
    """Set across a silence, the clock stops at each window boundary and ticks there: the open window closes at
    its end (not at the far side of the silence) and each empty window between closes too."""
    clock = ReplayClock(10.0)
    ticks: list[float] = []
    clock.on_window = lambda: ticks.append(clock.now())
    clock.set(1_000.0)  # the first request's jump off 0: no windows stepped
    clock.set(1_004.0)
    clock.set(1_041.5)
    clock.set(1_041.0)  # replayed time never goes backwards
    assert ticks == [1_010.0, 1_020.0, 1_030.0, 1_040.0]
    assert clock.now() == 1_041.5
    clock.advance(9.0)  # advancing steps across windows too
    assert ticks[-1] == 1_050.0
    with pytest.raises(ValueError, match="does not go backwards"):
        clock.advance(-1.0)
    assert clock.now() == 1_050.5


def test_a_replay_clock_stops_in_every_window_whatever_its_length() -> None:
    """Boundaries of a window that is no exact binary fraction (3.3 s) still fall in the window they start."""
    clock = ReplayClock(3.3)
    numbers: list[int] = []
    clock.on_window = lambda: numbers.append(int(clock.now() // 3.3))
    clock.set(1_700_000_000.0)
    first = int(1_700_000_000.0 // 3.3)
    clock.set(1_700_000_000.0 + 3.3 * 1_000)
    assert numbers[:2] == [first + 1, first + 2]
    assert numbers == list(range(first + 1, first + 1 + len(numbers)))
    assert len(numbers) in (999, 1_000)


def test_in_process_every_window_between_two_requests_closes() -> None:
    """Two requests 35 s apart: the three windows they span close at their ends (the App's ticker is off in-process,
    and the first window closed at the second request alone, the others never, before the ReplayClock)."""
    with InProcess() as target:
        assert target.sink is not None
        requests = [Request("traces", recorded()[0], 2, T + n * 35 * 10**9) for n in (0, 1)]
        replay(requests, target.sink, clock=target.clock)
        assert target.app.detector.judged["windows"] == 3
        target.clock.advance(10.0)  # advancing closes windows too
        assert target.app.detector.judged["windows"] == 4


# --- the command line -----------------------------------------------------------------------------------------------


def test_replay_help_teaches_with_examples() -> None:
    result = CliRunner().invoke(main, ["replay", "--help"])
    assert result.exit_code == 0
    for word in (
        "Examples",
        "--endpoint",
        "--token",
        "--speed 60",
        "--as-fast-as-possible",
        "--shift-to-now",
        ".tar.gz",
    ):
        assert word in result.output


def test_cli_replays_a_nezha_day_in_process_and_prints_the_summary(tmp_path: Path) -> None:
    ob_day(tmp_path)
    result = CliRunner().invoke(main, ["replay", str(tmp_path)], env={})
    assert result.exit_code == 0, result.output
    out = result.output
    assert "replaying " in out  # the progress lines go to stderr (mixed in by CliRunner)
    assert re.search(r"traces\s+\d+ requests\s+8 spans\s+0 rejected", out)
    assert "receiver (its counters): traces 8 accepted / 0 refused / 0 dropped" in out
    assert re.search(r"span_time_bad\s+1", out)
    assert re.search(r"trace_minute\s+1\s+e\.g\. 2022-08-22 04:10 \(frontend\)", out)
    assert re.search(r"service:/frontend\s+-> service:/cartservice\s+1 requests", out)


def test_cli_replays_to_an_endpoint_with_a_token_shifting_time_to_now(
    tmp_path: Path, secured: tuple[Receiver, RecordingConsumer]
) -> None:
    ob_day(tmp_path)
    server, consumer = secured
    endpoint = f"127.0.0.1:{server.grpc.port}"
    args = ["replay", str(tmp_path), "--endpoint", endpoint, "--token", "s3cret", "--as-fast-as-possible", "-q"]
    result = CliRunner().invoke(main, args, env={})
    assert result.exit_code == 0, result.output
    assert "shifted by" in result.output
    assert consumer.wait_for("traces", 8) == 8
    starts = [int(t) for b in consumer.traces for t in b.start]
    assert abs(min(starts) / 1e9 - time.time()) < 600  # the first event is now, not in 2022
    record = consumer.logs[0]
    assert record.resources[0].get("k8s.pod.name") == CART

    wrong = CliRunner().invoke(main, [*args[:5], "wrong", *args[6:]], env={})
    assert wrong.exit_code == 1
    assert "UNAUTHENTICATED" in wrong.output


def test_cli_reports_a_malformed_source_and_refuses_contradictory_options(tmp_path: Path) -> None:
    bad = write_json_lines(tmp_path / "bad.jsonl", ["{not json", json_line(recorded()[0])])
    result = CliRunner().invoke(main, ["replay", str(bad), "-q"], env={})
    assert result.exit_code == 0, result.output
    assert re.search(r"json_line_bad\s+1\s+e\.g\. bad\.jsonl:1: ", result.output)
    clash = CliRunner().invoke(main, ["replay", str(bad), "--speed", "2", "--as-fast-as-possible"], env={})
    assert clash.exit_code == 2
    assert "exclude each other" in clash.output
    token = CliRunner().invoke(main, ["replay", str(bad), "--token", "x"], env={})
    assert token.exit_code == 2
    assert "go with --endpoint" in token.output
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(b"\x1f\x8b not really gzip")
    result = CliRunner().invoke(main, ["replay", str(broken)], env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert result.exit_code == 1
    assert f"Error: {broken}: " in result.output
