"""The log flow's cost: every INFO line that names a trace is now mined (detector/logflow.py), not only WARN and
above. Measures, on the same decoded lines in one run: drain3 alone with Rootward's miner settings, and
``LogTemplates.consume_logs`` + the window close with the log flow on (mining, trace grouping, both tests, learning).

    .venv/bin/python bench/logflow_bench.py

Lines are Java/logback-shaped (``<time> INFO  <logger#line> TraceID: <hex> SpanID: <hex> [op][message][values]``),
40 code locations in 5 services, 4 lines a trace, 2,000 lines a 10 s window (the miner's budget for lines below
WARN is half of ``max_lines_per_window``, 5,000).
"""

from __future__ import annotations

import json
import random
import statistics
import time
from pathlib import Path

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from run import merge

from rootward.clock import ManualClock
from rootward.detector.logflow import FlowSettings
from rootward.detector.templates import LogTemplates, miner
from rootward.model import LogBatch
from rootward.receiver import LogDecoder

SERVICES = ["travel", "basic", "route", "price", "seat"]
LINES_PER_WINDOW = 2000


def window(rng: random.Random, number: int) -> tuple[LogBatch, list[str]]:
    req = ExportLogsServiceRequest()
    bodies = []
    groups = {s: req.resource_logs.add() for s in SERVICES}
    for s, rl in groups.items():
        rl.resource.attributes.add(key="service.name", value=AnyValue(string_value=s))
    scopes = {s: rl.scope_logs.add() for s, rl in groups.items()}
    for _ in range(LINES_PER_WINDOW // 4):
        trace = rng.getrandbits(128).to_bytes(16, "big")
        service = rng.choice(SERVICES)
        flow = rng.randrange(2)
        for step in range(4):
            line = 100 + 10 * flow + step
            body = (
                f"16:{number % 60:02d}:{rng.randrange(60):02d}.{rng.randrange(1000):03d} INFO  "
                f"c.s.{service.title()}ServiceImpl#{line} TraceID: {trace.hex()} SpanID: {rng.getrandbits(64):016x} "
                f"[query{flow}][step {step}][id: {rng.getrandbits(32):08x}-{rng.randrange(9999)}, "
                f"n={rng.randrange(50)}]"
            )
            bodies.append(body)
            scopes[service].log_records.add(body=AnyValue(string_value=body), severity_number=9, trace_id=trace)
    return LogDecoder().decode(req.SerializeToString()).batch, bodies


def main() -> None:
    rng = random.Random(7)
    windows = [window(rng, n) for n in range(30)]
    drain_us, flow_us = [], []
    bare = miner(2000)
    clock = ManualClock(0.0)
    templates = LogTemplates(lambda _, a: None, clock, flow=FlowSettings())
    for n, (batch, bodies) in enumerate(windows):
        start = time.perf_counter()
        for body in bodies:
            bare.add_log_message(body)
        drain_us.append((time.perf_counter() - start) / len(bodies) * 1e6)
        start = time.perf_counter()
        templates.consume_logs(batch)
        clock.advance(10)
        templates.tick()
        flow_us.append((time.perf_counter() - start) / len(bodies) * 1e6)
        if n == 4:
            drain_us.clear()
            flow_us.clear()  # warm: templates and anchors learned
    results = {
        "logflow_us_per_line": round(statistics.median(flow_us), 1),
        "logflow_drain_us_per_line": round(statistics.median(drain_us), 1),
        "logflow_vs_drain": round(statistics.median(f / d for f, d in zip(flow_us, drain_us, strict=True)), 2),
        "logflow_skipped": templates.skipped,
    }
    print(json.dumps(results, indent=1))
    merge(Path(__file__).with_name("results.json"), results)


if __name__ == "__main__":
    main()
