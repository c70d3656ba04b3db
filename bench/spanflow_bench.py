"""The span flow's intake (detector/spanflow.py): ``SpanFlow.consume_traces`` on one decoded batch of 10,000 spans
(5 services, 20 span names, one span a trace), with every trace sampled and with an eighth of them (the share the
flow sets when the offer is eight times its budget), by a flow already holding 10,000 open traces. Beside it, in the
same run, the batch's decode from protobuf.

    .venv/bin/python bench/spanflow_bench.py
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from run import merge

from rootward.clock import ManualClock
from rootward.detector.spanflow import SpanFlow
from rootward.model import SpanBatch
from rootward.receiver import TraceDecoder


def payload(rng: random.Random) -> bytes:
    req = ExportTraceServiceRequest()
    for s in range(5):
        rs = req.resource_spans.add()
        rs.resource.attributes.add(key="service.name", value=AnyValue(string_value=f"svc{s}"))
        spans = rs.scope_spans.add()
        for i in range(2000):
            spans.spans.add(
                trace_id=rng.getrandbits(128).to_bytes(16, "big"),
                span_id=rng.getrandbits(64).to_bytes(8, "big"),
                name=f"op{i % 20}",
            )
    return req.SerializeToString()


def intake_ms(batch: SpanBatch, warm: SpanBatch, keep: int) -> float:
    """Best of 5: the batch's intake by a flow that already holds the 10,000 open traces of ``warm``."""
    best = float("inf")
    for _ in range(5):
        flow = SpanFlow(lambda *_: None, ManualClock(0.0), max_spans_per_window=100_000, max_open=100_000)
        flow.consume_traces(warm)  # names known, window open, 10,000 traces open
        flow.keep = keep
        start = time.perf_counter()
        flow.consume_traces(batch)
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def main() -> None:
    data = payload(random.Random(3))
    warm = TraceDecoder().decode(payload(random.Random(4))).batch
    decode = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        batch = TraceDecoder().decode(data).batch
        decode = min(decode, (time.perf_counter() - start) * 1e3)
    results = {
        "spanflow_intake_ms_10k_spans_all": round(intake_ms(batch, warm, 1024), 1),
        "spanflow_intake_ms_10k_spans_eighth": round(intake_ms(batch, warm, 128), 1),
        "spanflow_decode_ms_10k_spans": round(decode, 1),
    }
    print(json.dumps(results, indent=1))
    merge(Path(__file__).with_name("results.json"), results)


if __name__ == "__main__":
    main()
