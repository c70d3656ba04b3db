"""Input made to hurt: crafted hash collisions, floods of tiny items, values past int64, slow and vanishing HTTP
senders, multi-member gzip. Each is refused or handled in bounded time and memory, and counted."""

from __future__ import annotations

import gzip
import socket
import time

import httpx
import numpy as np
import pytest
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from rootward.app import MAX_NAMES, OTHER, ReceivedSummary
from rootward.receiver import LogDecoder, MetricDecoder, TraceDecoder
from rootward.receiver._common import Limits, ResourceCache, intern_ranges
from rootward.receiver.errors import LimitExceeded
from rootward.testing import running_receiver

from otlp_builders import span, trace_request

PROTO = {"content-type": "application/x-protobuf"}


def test_strings_crafted_to_share_a_table_slot_are_interned_exactly_and_fast() -> None:
    # Without a seed, FNV-1a's low bits depend only on the low bits of its state, so blocks that collide there
    # chain into any number of names aimed at one slot. Whatever the hash does, the probe cap bounds the work;
    # here 20,000 names that all probe one long run still intern in well under a second, and exactly.
    names = [f"n{i:05d}".encode() for i in range(20_000)]
    data = b"".join(names)
    offs = np.arange(0, len(data), 6, dtype=np.int64)
    lens = np.full(len(offs), 6, np.int64)
    strings: list[str] = []
    started = time.perf_counter()
    ids = intern_ranges(data, np.concatenate([offs, offs]), np.concatenate([lens, lens]), strings)
    assert time.perf_counter() - started < 5  # a generous bound: quadratic probing took minutes at this scale
    assert strings == [n.decode() for n in names]
    assert ids.tolist() == list(range(20_000)) * 2


def test_when_probing_runs_long_interning_falls_back_to_a_dict_with_the_same_result() -> None:
    data = b"abcabdabc"
    offs = np.array([0, 3, 6, 0], np.int64)
    lens = np.array([3, 3, 3, 2], np.int64)
    fast: list[str] = ["x"]
    slow: list[str] = ["x"]
    ids_fast = intern_ranges(data, offs, lens, fast)
    ids_slow = intern_ranges(data, offs, lens, slow, max_probes=0)  # every lookup "runs long": the dict path
    assert ids_fast.tolist() == ids_slow.tolist() == [1, 2, 1, 3]
    assert fast == slow == ["x", "abc", "abd", "ab"]


def test_a_range_outside_the_data_is_refused_by_the_interning_kernel() -> None:
    from rootward.receiver import _wire

    with pytest.raises(ValueError, match="outside the data"):
        _wire.intern_ranges(b"abc", np.array([2], np.int64), np.array([5], np.int64))


@pytest.mark.parametrize(
    ("data", "what"),
    [
        pytest.param(b"\x0a\x02\x12\x00" * 60_000, "spans or resources", id="empty-scopes"),
        pytest.param(b"\x0a\x04\x12\x02\x12\x00" * 60_000, "spans or resources", id="empty-spans"),
        pytest.param(b"\x0a\x00" * 60_000, "spans or resources", id="empty-resource-spans"),
    ],
)
def test_a_flood_of_tiny_spans_is_refused_before_it_is_allocated(data: bytes, what: str) -> None:
    with pytest.raises(LimitExceeded, match=f"request holds more {what} than the limit of 50000"):
        TraceDecoder().decode(data)


def test_floods_of_log_records_and_data_points_are_refused() -> None:
    logs = ExportLogsServiceRequest()
    records = logs.resource_logs.add().scope_logs.add().log_records
    for _ in range(11):
        records.add()
    with pytest.raises(LimitExceeded, match="request holds 11 log records, more than the limit of 10"):
        LogDecoder(Limits(max_items=10)).decode(logs.SerializeToString())
    metrics = ExportMetricsServiceRequest()
    points = metrics.resource_metrics.add().scope_metrics.add().metrics.add(name="m").gauge.data_points
    for _ in range(11):
        points.add()
    with pytest.raises(LimitExceeded, match="request holds 11 data points, more than the limit of 10"):
        MetricDecoder(Limits(max_items=10)).decode(metrics.SerializeToString())


def test_values_past_int8_and_int64_do_not_overflow_logs_or_metrics() -> None:
    logs = ExportLogsServiceRequest()
    logs.resource_logs.add().scope_logs.add().log_records.add(severity_number=300, time_unix_nano=2**64 - 1)  # type: ignore[arg-type]
    batch = LogDecoder().decode(logs.SerializeToString()).batch
    assert (int(batch.severity[0]), int(batch.time[0])) == (-1, -1)
    metrics = ExportMetricsServiceRequest()
    points = metrics.resource_metrics.add().scope_metrics.add().metrics.add(name="h").histogram.data_points
    points.add(count=2**64 - 1, time_unix_nano=2**63)
    mbatch = MetricDecoder().decode(metrics.SerializeToString()).batch
    assert (int(mbatch.count[0]), int(mbatch.time[0])) == (-1, -(2**63))


@pytest.mark.parametrize("bad", [{"max_depth": 65}, {"max_depth": 0}, {"max_items": -1}, {"max_attributes": 2**64}])
def test_limits_outside_what_the_kernels_support_are_refused(bad: dict[str, int]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        Limits(**bad)


def test_large_resources_are_not_cached() -> None:
    cache = ResourceCache(Limits())
    big = trace_request(span()).resource_spans[0].resource
    big.attributes.add(key="blob", value={"string_value": "x" * 5000})
    raw = big.SerializeToString()
    assert cache.get(raw).attributes["blob"] == "x" * 5000
    assert cache.get(raw) is not cache.get(raw)  # decoded each time, never held


def test_the_default_summary_keeps_a_bounded_number_of_names() -> None:
    summary = ReceivedSummary()
    for i in range(MAX_NAMES + 50):
        summary.consume_traces(
            TraceDecoder().decode(trace_request(span(), service=f"svc-{i}").SerializeToString()).batch
        )
    assert len(summary.services) == MAX_NAMES + 1
    assert summary.services[OTHER] == 50


def test_multi_member_gzip_bodies_deliver_every_member() -> None:
    with running_receiver() as (server, consumer):
        one, two = (trace_request(span(name=n)).SerializeToString() for n in ("first", "second"))
        # Two gzip members of protobuf messages concatenate into one valid message with both resource spans.
        body = gzip.compress(one) + gzip.compress(two)
        r = httpx.post(
            f"http://127.0.0.1:{server.http.port}/v1/traces",
            content=body,
            headers={**PROTO, "content-encoding": "gzip"},
        )
        assert r.status_code == 200
        assert consumer.wait_for("traces", 2) == 2
        r = httpx.post(
            f"http://127.0.0.1:{server.http.port}/v1/traces",
            content=gzip.compress(one) + b"junk",
            headers={**PROTO, "content-encoding": "gzip"},
        )
        assert r.status_code == 400


def test_large_json_is_refused_with_a_pointer_to_protobuf() -> None:
    with running_receiver(**{"limits.max_json_bytes": 1000}) as (server, _):
        r = httpx.post(
            f"http://127.0.0.1:{server.http.port}/v1/traces",
            content=b'{"resourceSpans": []' + b" " * 1000 + b"}",
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 400
        assert "max_json_bytes); send large batches as protobuf" in r.json()["message"]


def test_a_sender_that_never_finishes_its_body_gets_503_and_frees_its_slot() -> None:
    with running_receiver(**{"limits.body_timeout_s": 0.5}) as (server, _):
        with socket.create_connection(("127.0.0.1", server.http.port)) as sock:
            sock.sendall(
                b"POST /v1/traces HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-protobuf\r\n"
                b"content-length: 1000\r\n\r\npartial"
            )
            sock.settimeout(10)
            reply = sock.recv(4096)
        assert reply.startswith(b"HTTP/1.1 503")
        assert b"retry-after: 1" in reply.lower()
        telemetry = server.telemetry
        assert (
            telemetry.value(
                "rootward_receiver_requests_total", transport="http", signal="traces", result="body_timeout"
            )
            == 1
        )


def test_a_sender_that_disconnects_mid_body_is_counted() -> None:
    with running_receiver() as (server, _):
        with socket.create_connection(("127.0.0.1", server.http.port)) as sock:
            sock.sendall(
                b"POST /v1/logs HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-protobuf\r\n"
                b"content-length: 1000\r\n\r\npartial"
            )
        telemetry = server.telemetry
        deadline = time.monotonic() + 10
        labels = {"transport": "http", "signal": "logs", "result": "client_disconnected"}
        while telemetry.value("rootward_receiver_requests_total", **labels) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert telemetry.value("rootward_receiver_requests_total", **labels) == 1


@pytest.mark.parametrize("header", ["bearer s3cret", "BEARER  s3cret", "Bearer s3cret"])
def test_the_bearer_scheme_is_case_insensitive(header: str) -> None:
    with running_receiver(**{"auth.tokens": ["s3cret"]}) as (server, _):
        r = httpx.post(
            f"http://127.0.0.1:{server.http.port}/v1/traces",
            content=trace_request(span()).SerializeToString(),
            headers={**PROTO, "authorization": header},
        )
        assert r.status_code == 200


def test_error_bodies_carry_the_grpc_code() -> None:
    with running_receiver(**{"auth.tokens": ["s3cret"]}) as (server, _):
        r = httpx.post(f"http://127.0.0.1:{server.http.port}/v1/traces", content=b"", headers=PROTO)
        assert r.status_code == 401
        assert status_pb2.Status.FromString(r.content).code == 16  # UNAUTHENTICATED
