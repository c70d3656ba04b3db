"""Tiny hand-written Nezha days (../shared/data/nezha/README.md has the real layout): a few rows of each kind, with
what the conversion must make of them stated beside them. Used by tests/test_nezha.py and tests/test_replay.py."""

from __future__ import annotations

import csv
import json
from pathlib import Path

OB_T0 = 1661140800  # 2022-08-22T04:00:00Z
TT_T0 = 1674981720  # 2023-01-29T08:42:00Z
FRONTEND = "frontend-579b9bff58-t2dbm"
CART = "cartservice-579f59597d-wc2lz"
CURRENCY = "currencyservice-cf787dd48-vpjrd"
GATEWAY = "ts-gateway-service-6f6cfc45b-h5m2n"
TRAVEL = "ts-travel-service-64469b5b48-25zj6"
GO_ZERO_TIME = "-6795364578871345152"  # time.Time{}.UnixNano()
TRACE_HEADER = [
    "TraceID",
    "SpanID",
    "ParentID",
    "PodName",
    "OperationName",
    "StartTimeUnixNano",
    "EndTimeUnixNano",
    "Duration",
]
LOG_HEADER = ["Timestamp", "TimeUnixNano", "Node", "PodName", "Container", "TraceID", "SpanID", "Log"]
METRIC_HEADER = ["Time", "TimeStamp", "PodName", "CpuUsageRate(%)", "PodServerLatencyP90(s)", "PodWorkload(Ops)"]


def ns(t0: int, seconds: float) -> int:
    """Unix ns of ``t0`` + ``seconds`` (integer arithmetic: a float cannot hold Unix ns exactly)."""
    return t0 * 1_000_000_000 + round(seconds * 1_000_000_000)


def tid(c: str) -> str:
    return c * 32


def sid(name: str) -> str:
    """A span id of 16 hex digits from a short name such as ``a1``."""
    return (name * 8)[:16]


def span(
    trace: str, span_id: str, parent: str | None, pod: str, name: str, t0: int, start: float, end: float
) -> list[str]:
    s, e = ns(t0, start), ns(t0, end)
    return [
        tid(trace),
        sid(span_id),
        sid(parent) if parent else "root",
        pod,
        name,
        str(s),
        str(e),
        str((e - s) // 1000),
    ]


def docker(line: str, t: str) -> str:
    """The Log column: the container's line in Docker's JSON envelope."""
    return json.dumps({"log": line + "\n", "stream": "stdout", "time": t})


def write(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def ob_day(root: Path) -> Path:
    """OnlineBoutique 2022-08-22 under ``root``; returns the rca day folder.

    trace/04_00: trace 1 is frontend Recv. (a1, root: SERVER) -> frontend GetCart (a2: CLIENT) -> cartservice GetCart
      (a3: SERVER) -> cartservice redis GET (a4: INTERNAL); b1 has a start that is not a number, b2 zero times
      (both skipped); c1 is currencyservice Convert (SERVER) whose parent e1 is in the next file.
    trace/04_01: c1 again (the files overlap: a duplicate), d1 an unrelated root span ending 0.3 s after c1, then e0
      frontend Recv. (SERVER) -> p1 frontend Convert (CLIENT).
    log/04_00: a cartservice JSON line with severity "error" on span a3 (node 33.33.33.155, container server), and a
      row cut short (skipped).
    metric: frontend, one good row (CpuUsageRate 5.5 %, latency NaN: skipped, workload 12) with the corrupt
      TimeStamp the real day has, and a row whose Time is not a time (skipped); front_service.csv and dependency.csv
      are not pod metrics.
    fault list: cartservice cpu_contention at 04:00:30, frontend return at 04:10:00 (no trace or log minute).
    """
    day = root / "rca_data" / "2022-08-22"
    t = OB_T0
    write(day / "trace" / "04_00_trace.csv", TRACE_HEADER, [
        span("1", "a1", None, FRONTEND, "hipstershop.Frontend/Recv.", t, 0.0, 0.5),
        span("1", "a2", "a1", FRONTEND, "hipstershop.CartService/GetCart", t, 0.1, 0.4),
        span("1", "a3", "a2", CART, "hipstershop.CartService/GetCart", t, 0.15, 0.35),
        span("1", "a4", "a3", CART, "redis GET", t, 0.2, 0.3),
        [tid("2"), sid("b1"), "root", FRONTEND, "bad", "soon", str(ns(t, 1)), "1"],
        [tid("2"), sid("b2"), "root", FRONTEND, "zero", "0", "0", "0"],
        span("3", "c1", "e1", CURRENCY, "hipstershop.CurrencyService/Convert", t, 59.0, 59.9),
    ])  # fmt: skip
    write(day / "trace" / "04_01_trace.csv", TRACE_HEADER, [
        span("3", "c1", "e1", CURRENCY, "hipstershop.CurrencyService/Convert", t, 59.0, 59.9),
        span("4", "d1", None, FRONTEND, "hipstershop.Frontend/Recv.", t, 59.95, 60.2),
        span("3", "e0", None, FRONTEND, "hipstershop.Frontend/Recv.", t, 58.5, 61.0),
        span("3", "e1", "e0", FRONTEND, "hipstershop.CurrencyService/Convert", t, 58.9, 60.5),
    ])  # fmt: skip
    line = json.dumps({"message": f"TraceID: {tid('1')} SpanID: {sid('a3')} cart failed", "severity": "error"})
    write(day / "log" / "04_00_log.csv", LOG_HEADER, [
        ["2022-08-22T04:00:00.3Z", str(ns(t, 0.3)), "33.33.33.155", CART, "server", tid("1"), sid("a3"),
         docker(line, "2022-08-22T04:00:00.3Z")],
        ["2022-08-22T04:00:00.4Z", str(ns(t, 0.4)), "33.33.33.155"],
    ])  # fmt: skip
    write(day / "metric" / f"{FRONTEND}_metric.csv", METRIC_HEADER, [
        ["2022-08-22 04:00:19.5 +0000 UTC m=+0.113112869", "1861140279", FRONTEND, "5.5", "NaN", "12"],
        ["yesterday", "1861140339", FRONTEND, "6.5", "0.1", "13"],
    ])  # fmt: skip
    write(day / "metric" / "front_service.csv", ["Time", "TimeStamp", "ServiceName", "SuccessRate(%)"], [
        ["2022-08-22 04:00:19.5 +0000 UTC m=+0.1", "1661140819", "Frontend", "100"],
    ])  # fmt: skip
    write(day / "metric" / "dependency.csv", ["Source", "Target", "Weight"], [["frontend", "cartservice", "1"]])
    faults = {"04": [
        {"inject_time": "2022-08-22 04:00:30", "inject_timestamp": "1661140830", "inject_pod": CART,
         "inject_type": "cpu_contention"},
        {"inject_time": "2022-08-22 04:10:00", "inject_timestamp": "1661141400", "inject_pod": FRONTEND,
         "inject_type": "return"},
    ]}  # fmt: skip
    (day / "2022-08-22-fault_list.json").write_text(json.dumps(faults))
    return day


def tt_day(root: Path) -> Path:
    """TrainTicket 2023-01-29 under ``root`` (rca and construct folders); returns the rca day folder.

    trace/08_42: gateway "/*" (f1, root: SERVER) -> gateway FilteringWebHandler.handle (f2: CLIENT) -> travel
      getRouteByRouteId (f3: SERVER).
    log/08_42: a travel text line at INFO (its own clock in UTC+8), and an ERROR line whose TimeUnixNano is Go's zero
      time (its time comes from Timestamp, read as UTC).
    metric: travel, one row (CpuUsageRate 1.5 %, latency 0.2 s, workload 3).
    construct trace/08_50: one fault-free root span of the gateway.
    fault list: travel exception at 08:42:30; ``inject_timestamp`` 8 h off, as on the real day.
    """
    day = root / "rca_data" / "2023-01-29"
    t = TT_T0
    write(day / "trace" / "08_42_trace.csv", TRACE_HEADER, [
        span("5", "f1", None, GATEWAY, "/*", t, 10.0, 10.4),
        span("5", "f2", "f1", GATEWAY, "FilteringWebHandler.handle", t, 10.01, 10.39),
        span("5", "f3", "f2", TRAVEL, "getRouteByRouteId", t, 10.1, 10.3),
    ])  # fmt: skip
    info = f"16:42:22.382 INFO  t.s.TravelServiceImpl#532 TraceID: {tid('5')} SpanID: {sid('f3')} [getRoute]"
    error = f"16:42:23.299 ERROR o.a.c.c.C.[dispatcherServlet]#175 TraceID: {tid('5')} SpanID: {sid('f3')} boom"
    write(day / "log" / "08_42_log.csv", LOG_HEADER, [
        ["2023-01-29T08:42:22.383150913Z", str(ns(t, 22.383150913)), "33.33.33.116", TRAVEL, "server", tid("5"),
         sid("f3"), docker(info, "2023-01-29T08:42:22.383150913Z")],
        ["2023-01-29T08:42:23.295", GO_ZERO_TIME, "33.33.33.116", TRAVEL, "server", tid("5"), sid("f3"),
         docker(error, "2023-01-29T08:42:23.295Z")],
    ])  # fmt: skip
    write(day / "metric" / f"{TRAVEL}_metric.csv", METRIC_HEADER, [
        ["2023-01-29 08:42:09.018658981 +0000 UTC m=+60.094820869", "1674981729", TRAVEL, "1.5", "0.2", "3"],
    ])  # fmt: skip
    construct = root / "construct_data" / "2023-01-29"
    write(construct / "trace" / "08_50_trace.csv", TRACE_HEADER, [
        span("6", "9a", None, GATEWAY, "/*", t, 480.0, 480.2),
    ])  # fmt: skip
    faults = {"08": [{"inject_time": "2023-01-29 08:42:30", "inject_timestamp": "1674952950", "inject_pod": TRAVEL,
                      "inject_type": "exception"}]}  # fmt: skip
    (day / "2023-01-29-fault_list.json").write_text(json.dumps(faults))
    return day
