"""Backpressure, draining and consumer failures: the receiver never blocks forever, never drops silently."""

from __future__ import annotations

import logging

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2, status_pb2

from rootward.receiver.errors import QueueFull, ShuttingDown
from rootward.receiver.queue import BatchQueue
from rootward.receiver.traces import TraceDecoder
from rootward.telemetry import Telemetry
from rootward.testing import RecordingConsumer, running_receiver

from otlp_builders import span, trace_request

TEN_SPANS = trace_request(*[span() for _ in range(10)]).SerializeToString()
EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
PROTO = {"content-type": "application/x-protobuf"}


def test_full_queue_answers_429_with_retry_after_over_http() -> None:
    slow = RecordingConsumer(delay=0.5)
    with running_receiver(slow, **{"queue.max_items": 25, "queue.retry_after_s": 2}) as (server, _):
        url = f"http://127.0.0.1:{server.http.port}/v1/traces"
        statuses = [httpx.post(url, content=TEN_SPANS, headers=PROTO, timeout=10) for _ in range(5)]
        full = [r for r in statuses if r.status_code == 429]
        assert full, [r.status_code for r in statuses]
        assert full[0].headers["retry-after"] == "2"
        assert "pipeline queue full" in status_pb2.Status.FromString(full[0].content).message
        refused = server.telemetry.value(
            "rootward_receiver_items_total", signal="traces", outcome="refused", reason="queue_full"
        )
        assert refused == 10 * len(full)


def test_full_queue_answers_resource_exhausted_with_retry_info_over_grpc() -> None:
    slow = RecordingConsumer(delay=0.5)
    with running_receiver(slow, **{"queue.max_items": 25, "queue.retry_after_s": 1.5}) as (server, _):
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc.port}") as channel:
            export = channel.unary_unary(EXPORT)
            errors = []
            for _ in range(5):
                try:
                    export(TEN_SPANS)
                except grpc.RpcError as e:
                    errors.append(e)
        assert errors
        err = errors[0]
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
        details = dict(err.trailing_metadata())  # type: ignore[attr-defined]
        status = status_pb2.Status.FromString(details["grpc-status-details-bin"])
        info = error_details_pb2.RetryInfo()
        assert status.details[0].Unpack(info)
        assert (info.retry_delay.seconds, info.retry_delay.nanos) == (1, 500_000_000)


def test_shutdown_drains_queued_batches_into_the_consumer_and_is_safe_twice() -> None:
    slow = RecordingConsumer(delay=0.05)
    with running_receiver(slow) as (server, consumer):
        url = f"http://127.0.0.1:{server.http.port}/v1/traces"
        for _ in range(8):
            assert httpx.post(url, content=TEN_SPANS, headers=PROTO, timeout=10).status_code == 200
        assert server.shutdown() == 0
        assert consumer.count("traces") == 80
        assert server.shutdown() == 0


def test_items_still_queued_at_the_drain_deadline_are_counted_as_dropped(caplog: pytest.LogCaptureFixture) -> None:
    telemetry = Telemetry()
    consumer = RecordingConsumer(delay=0.3)
    queue = BatchQueue(consumer, telemetry, max_items=1000)
    queue.start()
    batch = TraceDecoder().decode(TEN_SPANS).batch
    for _ in range(5):
        queue.put("traces", batch)
    with caplog.at_level(logging.WARNING, logger="rootward"):
        lost = queue.shutdown(timeout=0.1)
    assert lost > 0
    assert consumer.count("traces") + lost + 10 >= 50  # at most one batch was in the consumer's hands
    assert (
        telemetry.value("rootward_receiver_items_total", signal="traces", outcome="dropped", reason="shutdown_deadline")
        == lost
    )
    assert "counted as dropped" in caplog.text
    with pytest.raises(ShuttingDown):
        queue.put("traces", batch)
    assert queue.shutdown() == 0


def test_a_batch_larger_than_the_whole_queue_is_accepted_into_an_empty_queue() -> None:
    consumer = RecordingConsumer()
    queue = BatchQueue(consumer, Telemetry(), max_items=5)
    batch = TraceDecoder().decode(TEN_SPANS).batch
    queue.put("traces", batch)  # not started: stays queued
    with pytest.raises(QueueFull, match="pipeline queue full"):
        queue.put("traces", batch)
    queue.start()
    assert queue.wait_idle()
    assert consumer.count("traces") == 10
    queue.shutdown()


def test_a_failing_consumer_loses_only_its_batch_and_it_is_counted(caplog: pytest.LogCaptureFixture) -> None:
    failing = RecordingConsumer(fail=True)
    with running_receiver(failing) as (server, _):
        url = f"http://127.0.0.1:{server.http.port}/v1/traces"
        with caplog.at_level(logging.ERROR, logger="rootward"):
            assert httpx.post(url, content=TEN_SPANS, headers=PROTO, timeout=10).status_code == 200
            assert httpx.post(url, content=TEN_SPANS, headers=PROTO, timeout=10).status_code == 200
            server.queue.wait_idle()
        dropped = server.telemetry.value(
            "rootward_receiver_items_total", signal="traces", outcome="dropped", reason="consumer_error"
        )
        assert dropped == 20
        assert server.telemetry.value("rootward_pipeline_consumer_errors_total", signal="traces") == 2
        assert "pipeline stage failed on a traces batch of 10 items" in caplog.text
