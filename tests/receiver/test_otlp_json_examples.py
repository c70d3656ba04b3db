"""The four OTLP/JSON example requests of opentelemetry-proto (../shared/data/otlp-examples), posted to /v1/*."""

from __future__ import annotations

import json

import httpx
import pytest

from rootward.receiver import Receiver
from rootward.testing import RecordingConsumer

from shared_data import SHARED_DATA

EXAMPLES = SHARED_DATA / "otlp-examples"


def _post(receiver: Receiver, path: str, name: str) -> httpx.Response:
    body = (EXAMPLES / name).read_bytes()
    url = f"http://127.0.0.1:{receiver.http.port}{path}"
    return httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=10)


def test_trace_example_arrives_with_hex_ids_and_int_kind(receiver: tuple[Receiver, RecordingConsumer]) -> None:
    server, consumer = receiver
    r = _post(server, "/v1/traces", "trace.json")
    assert r.status_code == 200, r.text
    assert r.json() == {}
    assert consumer.wait_for("traces", 1) == 1
    batch = consumer.traces[0]
    hi, lo = (int(x) for x in batch.trace_id[0])
    assert f"{hi:016X}{lo:016X}" == "5B8EFFF798038103D269B633813FC60C"
    assert f"{int(batch.span_id[0]):016X}" == "EEE19B7EC3C1B174"
    assert f"{int(batch.parent_id[0]):016X}" == "EEE19B7EC3C1B173"
    assert int(batch.kind[0]) == 2
    assert batch.strings[batch.name[0]] == "I'm a server span"
    assert int(batch.start[0]) == 1544712660000000000
    assert int(batch.end[0]) == 1544712661000000000
    assert batch.resources[batch.resource[0]].service_name == "my.service"


def test_metrics_example_arrives_as_every_kind_of_point(receiver: tuple[Receiver, RecordingConsumer]) -> None:
    server, consumer = receiver
    doc = json.loads((EXAMPLES / "metrics.json").read_text())
    expected = sum(
        len(next(v for k, v in m.items() if k not in ("name", "unit", "description", "metadata"))["dataPoints"])
        for rm in doc["resourceMetrics"]
        for sm in rm["scopeMetrics"]
        for m in sm["metrics"]
    )
    r = _post(server, "/v1/metrics", "metrics.json")
    assert r.status_code == 200, r.text
    assert consumer.wait_for("metrics", expected) == expected
    batch = consumer.metrics[0]
    types = {m.type for m in batch.metrics}
    assert {"sum", "gauge", "histogram"} <= types
    for i, m in enumerate(batch.metric.tolist()):
        info = batch.metrics[m]
        if info.type == "histogram":
            bounds, counts = batch.buckets[i]  # type: ignore[misc]
            assert len(counts) == len(bounds) + 1  # type: ignore[arg-type]
            assert batch.count[i] == sum(counts)  # type: ignore[call-overload]


@pytest.mark.parametrize("name", ["logs.json", "events.json"])
def test_log_and_event_examples_arrive_with_bodies(receiver: tuple[Receiver, RecordingConsumer], name: str) -> None:
    server, consumer = receiver
    doc = json.loads((EXAMPLES / name).read_text())
    records = [r for rl in doc["resourceLogs"] for sl in rl["scopeLogs"] for r in sl["logRecords"]]
    r = _post(server, "/v1/logs", name)
    assert r.status_code == 200, r.text
    assert consumer.wait_for("logs", len(records)) == len(records)
    batch = consumer.logs[0]
    for i, rec in enumerate(records):
        assert int(batch.severity[i]) == rec.get("severityNumber", 0)
        if "traceId" in rec:
            hi, lo = (int(x) for x in batch.trace_id[i])
            assert f"{hi:016X}{lo:016X}" == rec["traceId"].upper()
        body = rec.get("body", {})
        if "stringValue" in body:
            assert batch.body[i] == body["stringValue"]
        elif "kvlistValue" in body:
            assert isinstance(batch.body[i], dict)
