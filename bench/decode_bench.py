"""``r_decode``: the receiver's decode + normalise time over the plain upb parse of the same bytes.

Why a ratio: absolute times move with the machine and its load, while the parse of the same bytes in the same
process and run is the floor no receiver can avoid (PERFORMANCE.md). Both are timed over the same list of distinct
500-span requests, in interleaved rounds (parse, decode, parse, decode, ...) so that drift in CPU frequency or
neighbours' load hits both alike; the figure is the median over rounds of the per-round ratio.

The decoder is warmed up first (the resource cache fills on the first
request, as it does in a running receiver). One decoder is used throughout, as one receiver holds one.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from rootward.receiver import TraceDecoder


@dataclass(frozen=True)
class DecodeResult:
    ratio: float
    decode_us_per_span: float
    parse_us_per_span: float
    rounds: int


def _time_pass(fn: Callable[[bytes], object], requests: list[bytes]) -> int:
    """Nanoseconds to run ``fn`` over every request once."""
    started = time.perf_counter_ns()
    for data in requests:
        fn(data)
    return time.perf_counter_ns() - started


def run(requests: list[bytes], spans_per_request: int, rounds: int, passes: int = 3) -> DecodeResult:
    """Time the parse and the decode over ``requests``; each round takes the best of ``passes`` passes of each
    (the best, because interference only ever adds time), and the result is the median over ``rounds``."""
    decoder = TraceDecoder()
    parse = ExportTraceServiceRequest.FromString
    decode = decoder.decode
    for data in requests:  # warm-up: compile, fill the resource cache, check every request decodes fully
        batch = decode(data).batch
        if len(batch) != spans_per_request:
            raise RuntimeError(f"decoder returned {len(batch)} spans for a {spans_per_request}-span request")
        parse(data)
    spans = len(requests) * spans_per_request
    ratios: list[float] = []
    parse_us: list[float] = []
    decode_us: list[float] = []
    for i in range(rounds):
        gc.collect()
        if i % 2:  # alternate which goes first, so that neither always runs on a warmer cache
            d = min(_time_pass(decode, requests) for _ in range(passes))
            p = min(_time_pass(parse, requests) for _ in range(passes))
        else:
            p = min(_time_pass(parse, requests) for _ in range(passes))
            d = min(_time_pass(decode, requests) for _ in range(passes))
        ratios.append(d / p)
        parse_us.append(p / 1e3 / spans)
        decode_us.append(d / 1e3 / spans)
    return DecodeResult(statistics.median(ratios), statistics.median(decode_us), statistics.median(parse_us), rounds)
