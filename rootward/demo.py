"""``rootward demo``: the whole loop on an embedded default, self-contained (no network, no cluster).

Starts Rootward on free local ports, sends a synthetic shop's traces, metrics and logs through the OpenTelemetry
SDK's OTLP exporters (the last quarter of the requests with a failing payment service), and prints what arrived.
Each stage adds its part to this same demo as it lands: the graph, the incident, the diagnosis, the dry-run action
and its audit record.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

from rootward.app import App
from rootward.config import load_config
from rootward.synthetic import Shop

_SEVERITY = {9: "INFO", 13: "WARN", 17: "ERROR"}
_KINDS = {1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


def run_demo(requests: int = 300, protocol: str = "grpc", echo: Callable[[str], None] = print) -> int:
    """Run the demo; return the process exit code (0 when everything sent was received)."""
    cfg = load_config(
        environ={},
        overrides=["receiver.grpc.host=127.0.0.1", "receiver.grpc.port=0", "receiver.http.host=127.0.0.1",
                   "receiver.http.port=0", "api.listen.host=127.0.0.1", "api.listen.port=0",
                   "topology.history.enabled=false",
                   "detection.incidents.store=false"],  # self-contained: leaves no files behind
    )  # fmt: skip
    app = App(cfg)
    started = time.monotonic()
    echo("rootward demo: starting...")
    app.start()
    grpc_port, http_port = app.receiver.grpc.port, app.receiver.http.port
    echo(f"  listening: OTLP gRPC 127.0.0.1:{grpc_port}, OTLP HTTP 127.0.0.1:{http_port}, API :{app.api.port}")
    proto: Literal["grpc", "http"] = "http" if protocol == "http" else "grpc"
    endpoint = f"127.0.0.1:{grpc_port}" if proto == "grpc" else f"http://127.0.0.1:{http_port}"
    shop = Shop(endpoint, proto)
    healthy = requests - requests // 4
    echo(f"  sending {requests} shop requests over OTLP/{proto} ({requests - healthy} with payment failing)...")
    for i in range(requests):
        shop.request(payment_failing=i >= healthy)
    shop.close()
    app.receiver.queue.wait_idle(10)
    summary = app.summary
    telemetry = app.telemetry
    echo("")
    echo("received:")
    for signal in ("traces", "metrics", "logs"):
        refused = sum(
            telemetry.value("rootward_receiver_items_total", signal=signal, outcome="refused", reason=r)
            for r in ("limit", "queue_full", "malformed")
        )
        echo(f"  {signal:8} {summary.items[signal]:6d} items  ({refused:.0f} refused)")
    echo("spans by service:")
    for service, count in sorted(summary.services.items()):
        echo(f"  {service:10} {count:6d}")
    echo("spans by kind:   " + ", ".join(f"{_KINDS.get(k, k)} {c}" for k, c in sorted(summary.span_kinds.items())))
    echo("metrics:         " + ", ".join(f"{n} ({c} points)" for n, c in sorted(summary.metric_names.items())))
    echo("logs:            " + ", ".join(f"{_SEVERITY.get(s, s)} {c}" for s, c in sorted(summary.severities.items())))
    app.topology.flush()
    echo("")
    echo("dependency graph (calls: requests, errors):")
    for src, dst, requests_, errors in app.topology.calls():
        echo(f"  {src:22} -> {dst:28} {requests_:5d} requests {errors:4d} errors")
    echo(f"  ({app.topology.graph.number_of_nodes()} entities; GET /api/v1/topology on the API port for all of it)")
    ok = summary.items["traces"] == shop.sent["spans"] and summary.items["logs"] == shop.sent["logs"]
    echo("")
    echo(
        f"sent {shop.sent['spans']} spans and {shop.sent['logs']} log records; "
        f"{'all received' if ok else 'MISMATCH'} in {time.monotonic() - started:.1f} s"
    )
    app.shutdown()
    return 0 if ok else 1
