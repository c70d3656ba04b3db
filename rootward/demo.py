"""``rootward demo``: the whole loop on an embedded default, self-contained (no network, no cluster).

Starts Rootward on free local ports, sends a synthetic shop's traces, metrics and logs through the OpenTelemetry
SDK's OTLP exporters, window by window on a clock the demo moves (healthy, then payment failing for a few windows,
then healthy again), and prints what arrived, the dependency graph, the incident detection opened and resolved,
and its Slack message. Later stages add theirs: the diagnosis, the dry-run action and its audit record.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

from rootward.app import App
from rootward.clock import ManualClock
from rootward.config import load_config
from rootward.slack import render
from rootward.synthetic import Shop

_SEVERITY = {9: "INFO", 13: "WARN", 17: "ERROR"}
WINDOW_S = 10.0
WARMUP = 6
FAILING = 3
_KINDS = {1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


def run_demo(requests: int = 300, protocol: str = "grpc", echo: Callable[[str], None] = print) -> int:
    """Run the demo; return the process exit code (0 when everything sent was received)."""
    cfg = load_config(
        environ={},
        overrides=["receiver.grpc.host=127.0.0.1", "receiver.grpc.port=0", "receiver.http.host=127.0.0.1",
                   "receiver.http.port=0", "api.listen.host=127.0.0.1", "api.listen.port=0",
                   "topology.history.enabled=false",
                   "detection.incidents.store=false",  # self-contained: leaves no files behind
                   f"detection.window_s={WINDOW_S}", f"detection.warmup={WARMUP}",
                   f"detection.incidents.hold_s={3 * WINDOW_S}"],
    )  # fmt: skip
    # The shop's traffic is spread over windows of a clock the demo moves, so a few seconds show what detection
    # sees over minutes: a healthy stretch (the baselines), payment failing, then healthy again.
    clock = ManualClock(time.time())
    app = App(cfg, clock=clock)
    started = time.monotonic()
    echo("rootward demo: starting...")
    app.start()
    grpc_port, http_port = app.receiver.grpc.port, app.receiver.http.port
    echo(f"  listening: OTLP gRPC 127.0.0.1:{grpc_port}, OTLP HTTP 127.0.0.1:{http_port}, API :{app.api.port}")
    proto: Literal["grpc", "http"] = "http" if protocol == "http" else "grpc"
    endpoint = f"127.0.0.1:{grpc_port}" if proto == "grpc" else f"http://127.0.0.1:{http_port}"
    shop = Shop(endpoint, proto)
    windows = WARMUP + 2 + FAILING + 5
    per_window = max(6, requests // windows)  # enough spans a window for ratios and quantiles
    failing = range(windows - 5 - FAILING, windows - 5)
    sent = 0
    echo(
        f"  sending {per_window * windows} shop requests over OTLP/{proto} in {windows} windows of "
        f"{WINDOW_S:.0f} s (demo time), payment failing in windows {failing.start + 1}-{failing.stop}..."
    )
    for window in range(windows):
        for _ in range(per_window):
            shop.request(payment_failing=window in failing)
            sent += 1
        shop.flush()
        app.receiver.queue.wait_idle(10)
        clock.advance(WINDOW_S)
        app.tick()
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
    _incidents(app, clock.now(), echo)
    ok = summary.items["traces"] == shop.sent["spans"] and summary.items["logs"] == shop.sent["logs"]
    echo("")
    echo(
        f"sent {shop.sent['spans']} spans and {shop.sent['logs']} log records; "
        f"{'all received' if ok else 'MISMATCH'} in {time.monotonic() - started:.1f} s"
    )
    app.shutdown()
    return 0 if ok else 1


def _incidents(app: App, now: float, echo: Callable[[str], None]) -> None:
    """The incidents detection opened, and the Slack message the first would get."""
    incidents = app.incidents.listed()
    echo("")
    echo(f"incidents ({len(incidents)}; GET /api/v1/incidents, or `rootward incidents` against a server):")
    for incident in reversed(incidents):
        span = f"open {now - incident.opened:.0f} s ago"
        if incident.resolved is not None:
            span = f"lasted {incident.resolved - incident.opened:.0f} s, resolved"
        echo(f"  {incident.id}  {incident.severity}  {span}")
        echo(f"    likely root cause, most likely first: {', '.join(incident.candidates[:4])}")
        for a in sorted(incident.anomalies.values(), key=lambda a: -abs(a.score))[:3]:
            echo(f"    {a.entity} {a.signal}: {a.value:.3g} (expected {a.expected:.3g})")
    if not incidents:
        return
    text, blocks = render(incidents[-1])
    configured = app.slack.configured
    echo("")
    echo(
        "Slack message "
        + ("(sent)" if configured else "(notifications.slack not configured; as it would be sent)")
        + ":"
    )
    echo(f"  {text}")
    for block in blocks:
        body = block.get("text", {}).get("text") if isinstance(block.get("text"), dict) else None
        if body and block["type"] == "section":
            for line in body.splitlines():
                echo(f"  | {line}")
