"""Bad input, over both transports: each case gets its status and a message saying what was wrong, nothing
crashes, and the server keeps serving afterwards."""

from __future__ import annotations

import gzip
from collections.abc import Iterator

import grpc
import httpx
import pytest
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from rootward.receiver import Receiver
from rootward.testing import RecordingConsumer, running_receiver

from otlp_builders import nested, span, trace_request

TOKEN = {"authorization": "Bearer s3cret"}
LIMITS = {
    "auth.tokens": ["s3cret"],
    "limits.max_request_bytes": 64 * 1024,
    "limits.max_decompressed_bytes": 256 * 1024,
    "limits.max_value_bytes": 1024,
    "limits.max_attributes": 16,
    "limits.max_depth": 4,
}
GOOD = trace_request(span()).SerializeToString()
TOO_DEEP = trace_request(span(attributes={"x": nested(5)})).SerializeToString()
HUGE = trace_request(span(attributes={"x": AnyValue(string_value="x" * 2000)})).SerializeToString()
TOO_MANY = trace_request(span(attributes={f"k{i}": AnyValue(int_value=i) for i in range(17)})).SerializeToString()
MIXED = trace_request(span(), span(attributes={"x": nested(5)})).SerializeToString()
BOMB = gzip.compress(b"\0" * (1024 * 1024))  # 1 MiB of zeros: ~1 KiB compressed, over the 256 KiB limit
OVERSIZE = trace_request(*[span(name="x" * 1000) for _ in range(80)]).SerializeToString()  # ~85 KiB > 64 KiB


@pytest.fixture(scope="module")
def guarded() -> Iterator[tuple[Receiver, RecordingConsumer]]:
    with running_receiver(**LIMITS) as pair:
        yield pair


@pytest.fixture
def http(guarded: tuple[Receiver, RecordingConsumer]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://127.0.0.1:{guarded[0].http.port}", timeout=10) as client:
        yield client


@pytest.fixture
def export(guarded: tuple[Receiver, RecordingConsumer]) -> Iterator[grpc.UnaryUnaryMultiCallable]:
    with grpc.insecure_channel(f"127.0.0.1:{guarded[0].grpc.port}") as channel:
        yield channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")


def _still_serving(http: httpx.Client, export: grpc.UnaryUnaryMultiCallable) -> None:
    r = http.post("/v1/traces", content=GOOD, headers={**TOKEN, "content-type": "application/x-protobuf"})
    assert r.status_code == 200
    assert export(GOOD, metadata=list(TOKEN.items())) == b""


def _status_message(r: httpx.Response) -> str:
    if r.headers["content-type"].startswith("application/json"):
        return str(r.json()["message"])
    return status_pb2.Status.FromString(r.content).message


PROTO = "application/x-protobuf"


@pytest.mark.parametrize(
    ("body", "headers", "status", "message"),
    [
        pytest.param(b"\xff\xfe garbage", {}, 400, "invalid trace request protobuf", id="garbage-bytes"),
        pytest.param(GOOD[:-7], {}, 400, "invalid trace request protobuf", id="truncated-protobuf"),
        pytest.param(GOOD, {"content-type": "text/plain"}, 415, "unsupported content-type 'text/plain'", id="wrong-content-type"),
        pytest.param(b'{"resourceSpans": [', {"content-type": "application/json"}, 400, "invalid JSON", id="bad-json"),
        pytest.param(b"[1, 2]", {"content-type": "application/json"}, 400, "must be a JSON object", id="json-not-object"),
        pytest.param(
            b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz"}]}]}]}',
            {"content-type": "application/json"}, 400, "traceId 'zz' is not hex", id="json-bad-hex-id",
        ),
        pytest.param(BOMB, {"content-encoding": "gzip"}, 400, "max_decompressed_bytes", id="gzip-bomb"),
        pytest.param(b"\x1f\x8b not gzip", {"content-encoding": "gzip"}, 400, "invalid gzip body", id="corrupt-gzip"),
        pytest.param(GOOD, {"content-encoding": "br"}, 400, "unsupported content-encoding 'br'", id="unknown-encoding"),
        pytest.param(OVERSIZE, {}, 400, "max_request_bytes", id="oversize-body"),
        pytest.param(TOO_DEEP, {}, 400, "all 1 spans refused: 1 spans: AnyValue nested too deep (max depth 4)", id="too-deep-anyvalue"),
        pytest.param(HUGE, {}, 400, "attribute value or name too long (max 1024 bytes)", id="huge-attribute"),
        pytest.param(TOO_MANY, {}, 400, "too many attributes (max 16)", id="too-many-attributes"),
        pytest.param(GOOD, {"authorization": None}, 401, "missing authorization header", id="missing-token"),
        pytest.param(GOOD, {"authorization": "Bearer nope"}, 401, "invalid bearer token", id="wrong-token"),
    ],
)  # fmt: skip
def test_bad_http_request_gets_its_status_and_a_message(
    http: httpx.Client,
    export: grpc.UnaryUnaryMultiCallable,
    body: bytes,
    headers: dict[str, str | None],
    status: int,
    message: str,
) -> None:
    sent = {**TOKEN, "content-type": PROTO, **headers}
    r = http.post("/v1/traces", content=body, headers={k: v for k, v in sent.items() if v is not None})
    assert r.status_code == status
    assert message in _status_message(r)
    _still_serving(http, export)


def test_empty_request_is_a_successful_export_of_nothing(
    guarded: tuple[Receiver, RecordingConsumer], http: httpx.Client, export: grpc.UnaryUnaryMultiCallable
) -> None:
    before = guarded[1].count("traces")
    r = http.post("/v1/traces", content=b"", headers={**TOKEN, "content-type": PROTO})
    assert r.status_code == 200
    assert export(b"", metadata=list(TOKEN.items())) == b""
    assert guarded[1].count("traces") == before


@pytest.mark.parametrize(
    ("method", "path", "status"), [("GET", "/v1/traces", 405), ("PUT", "/v1/logs", 405), ("POST", "/v2/traces", 404)]
)
def test_wrong_method_or_path_is_refused(http: httpx.Client, method: str, path: str, status: int) -> None:  # fmt: skip
    assert http.request(method, path, headers=TOKEN).status_code == status


def test_partly_bad_request_gets_partial_success_over_http(
    guarded: tuple[Receiver, RecordingConsumer], http: httpx.Client
) -> None:
    r = http.post("/v1/traces", content=MIXED, headers={**TOKEN, "content-type": PROTO})
    assert r.status_code == 200
    resp = ExportTraceServiceResponse.FromString(r.content)
    assert resp.partial_success.rejected_spans == 1
    assert "AnyValue nested too deep" in resp.partial_success.error_message


def test_partly_bad_json_request_gets_partial_success_as_json(http: httpx.Client) -> None:
    body = (
        b'{"resourceSpans":[{"scopeSpans":[{"spans":['
        b'{"traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"EEE19B7EC3C1B174","name":"ok"},'
        b'{"traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"","name":"no span id"}]}]}]}'
    )
    r = http.post("/v1/traces", content=body, headers={**TOKEN, "content-type": "application/json"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json()["partialSuccess"] == {
        "rejectedSpans": "1",
        "errorMessage": "1 spans: span_id must be 8 bytes and not all zero",
    }


@pytest.mark.parametrize(
    ("body", "metadata", "code", "message"),
    [
        pytest.param(b"\xff\xfe garbage", TOKEN, grpc.StatusCode.INVALID_ARGUMENT, "invalid trace request protobuf", id="garbage-bytes"),
        pytest.param(GOOD[:-7], TOKEN, grpc.StatusCode.INVALID_ARGUMENT, "invalid trace request protobuf", id="truncated-protobuf"),
        pytest.param(TOO_DEEP, TOKEN, grpc.StatusCode.INVALID_ARGUMENT, "AnyValue nested too deep (max depth 4)", id="too-deep-anyvalue"),
        pytest.param(HUGE, TOKEN, grpc.StatusCode.INVALID_ARGUMENT, "too long (max 1024 bytes)", id="huge-attribute"),
        pytest.param(OVERSIZE, TOKEN, grpc.StatusCode.INVALID_ARGUMENT, "max_request_bytes", id="oversize-message"),
        pytest.param(GOOD, {}, grpc.StatusCode.UNAUTHENTICATED, "missing authorization header", id="missing-token"),
        pytest.param(GOOD, {"authorization": "Bearer nope"}, grpc.StatusCode.UNAUTHENTICATED, "invalid bearer token", id="wrong-token"),
    ],
)  # fmt: skip
def test_bad_grpc_request_gets_its_code_and_a_message(
    http: httpx.Client,
    export: grpc.UnaryUnaryMultiCallable,
    body: bytes,
    metadata: dict[str, str],
    code: grpc.StatusCode,
    message: str,
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        export(body, metadata=list(metadata.items()))
    assert info.value.code() == code  # type: ignore[attr-defined]
    assert message in info.value.details()  # type: ignore[attr-defined]
    _still_serving(http, export)


def test_grpc_message_over_the_decompressed_limit_is_refused_by_grpc_core(
    http: httpx.Client, export: grpc.UnaryUnaryMultiCallable
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        export(b"\0" * (300 * 1024), metadata=list(TOKEN.items()), compression=grpc.Compression.Gzip)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
    _still_serving(http, export)


def test_gzip_compressed_grpc_call_is_accepted(
    guarded: tuple[Receiver, RecordingConsumer], export: grpc.UnaryUnaryMultiCallable
) -> None:
    req = trace_request(span(name="zipped"))
    assert export(req.SerializeToString(), metadata=list(TOKEN.items()), compression=grpc.Compression.Gzip) == b""
    guarded[0].queue.wait_idle()
    names = [b.strings[int(n)] for b in guarded[1].traces for n in b.name]
    assert "zipped" in names


def test_gzip_and_deflate_http_bodies_are_accepted(
    guarded: tuple[Receiver, RecordingConsumer], http: httpx.Client
) -> None:
    import zlib

    for encoding, body in (("gzip", gzip.compress(GOOD)), ("deflate", zlib.compress(GOOD))):
        r = http.post(
            "/v1/traces", content=body, headers={**TOKEN, "content-type": PROTO, "content-encoding": encoding}
        )
        assert r.status_code == 200, encoding


def test_partly_bad_grpc_request_gets_partial_success(export: grpc.UnaryUnaryMultiCallable) -> None:
    resp = ExportTraceServiceResponse.FromString(export(MIXED, metadata=list(TOKEN.items())))
    assert resp.partial_success.rejected_spans == 1
    assert resp.partial_success.error_message == "1 spans: AnyValue nested too deep (max depth 4)"


def test_every_refusal_is_counted_by_reason(guarded: tuple[Receiver, RecordingConsumer], http: httpx.Client) -> None:
    telemetry = guarded[0].telemetry
    before = telemetry.value("rootward_receiver_requests_total", transport="http", signal="traces", result="malformed")
    limit_before = telemetry.value("rootward_receiver_items_total", signal="traces", outcome="refused", reason="limit")
    http.post("/v1/traces", content=b"\xff garbage", headers={**TOKEN, "content-type": PROTO})
    http.post("/v1/traces", content=MIXED, headers={**TOKEN, "content-type": PROTO})
    after = telemetry.value("rootward_receiver_requests_total", transport="http", signal="traces", result="malformed")
    assert after == before + 1
    limit_after = telemetry.value("rootward_receiver_items_total", signal="traces", outcome="refused", reason="limit")
    assert limit_after == limit_before + 1


def test_deeply_nested_json_is_refused_not_crashed(http: httpx.Client, export: grpc.UnaryUnaryMultiCallable) -> None:
    body = b'{"resourceSpans":' + b"[" * 30_000 + b"]" * 30_000 + b"}"
    r = http.post("/v1/traces", content=body, headers={**TOKEN, "content-type": "application/json"})
    assert r.status_code == 400
    assert "invalid" in _status_message(r)
    _still_serving(http, export)


def test_resource_with_too_many_attributes_refuses_the_request(http: httpx.Client) -> None:
    req = trace_request(span())
    for i in range(20):
        req.resource_spans[0].resource.attributes.add(key=f"r{i}", value=AnyValue(int_value=i))
    r = http.post("/v1/traces", content=req.SerializeToString(), headers={**TOKEN, "content-type": PROTO})
    assert r.status_code == 400
    assert "too many attributes: 21 (max 16)" in _status_message(r)


def test_metric_points_and_log_records_over_a_limit_are_refused_alone(
    guarded: tuple[Receiver, RecordingConsumer], http: httpx.Client
) -> None:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
        ExportLogsServiceRequest,
        ExportLogsServiceResponse,
    )
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
        ExportMetricsServiceResponse,
    )

    metrics = ExportMetricsServiceRequest()
    points = metrics.resource_metrics.add().scope_metrics.add().metrics.add(name="m").gauge.data_points
    points.add(as_double=1.0)
    points.add(as_double=2.0).attributes.add(key="x", value=nested(5))
    r = http.post("/v1/metrics", content=metrics.SerializeToString(), headers={**TOKEN, "content-type": PROTO})
    assert r.status_code == 200
    partial = ExportMetricsServiceResponse.FromString(r.content).partial_success
    assert (partial.rejected_data_points, partial.error_message) == (
        1,
        "1 data points: AnyValue nested too deep (max depth 4)",
    )
    logs = ExportLogsServiceRequest()
    records = logs.resource_logs.add().scope_logs.add().log_records
    records.add(body=AnyValue(string_value="fine"))
    records.add(body=AnyValue(string_value="x" * 2000))
    r = http.post("/v1/logs", content=logs.SerializeToString(), headers={**TOKEN, "content-type": PROTO})
    assert r.status_code == 200
    partial_logs = ExportLogsServiceResponse.FromString(r.content).partial_success
    assert partial_logs.rejected_log_records == 1
    assert "attribute value too long (max 1024 bytes)" in partial_logs.error_message
    guarded[0].queue.wait_idle()
    assert any(b.body == ["fine"] for b in guarded[1].logs)


def test_an_otlp_json_body_as_deep_as_max_depth_is_taken_and_one_deeper_refused_by_the_limit() -> None:
    """protobuf's JSON parser counted three messages an AnyValue level and refused 21 levels as "invalid OTLP/JSON"
    (a malformed request) before receiver.limits.max_depth (32) could be applied."""

    def body(depth: int) -> dict[str, object]:
        value: dict[str, object] = {"stringValue": "leaf"}
        for _ in range(depth - 1):
            value = {"kvlistValue": {"values": [{"key": "k", "value": value}]}}
        return {"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": value}]}]}]}

    with running_receiver() as (receiver, consumer):
        url = f"http://127.0.0.1:{receiver.http.port}/v1/logs"
        assert httpx.post(url, json=body(32), timeout=10).status_code == 200
        deeper = httpx.post(url, json=body(33), timeout=10)
        assert deeper.status_code == 400
        assert "AnyValue nested too deep (max depth 32)" in deeper.json()["message"]
        receiver.queue.wait_idle()
        assert sum(len(b) for b in consumer.logs) == 1
