"""``rootward demo``: the whole loop on an embedded default, self-contained (no network, no cluster).

Starts Rootward on free local ports, sends a synthetic shop's traces, metrics and logs through the OpenTelemetry
SDK's OTLP exporters, window by window on a clock the demo moves (healthy, then payment failing for a few windows,
then healthy again), and prints what arrived, the dependency graph, the incident detection opened and resolved,
its Slack message, its diagnosis, the action proposed for it with the policy's decision and the server-side dry
run against a simulated Kubernetes API (rootward/simcluster.py, holding the shop's Deployments), and the audit
trail, verified.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Literal

from rootward.app import App
from rootward.clock import ManualClock
from rootward.config import LOCAL_PORTS, KubernetesAccess, load_config
from rootward.slack import render
from rootward.synthetic import SERVICES, Shop
from rootward.topology.queries import incident_subgraph

_SEVERITY = {9: "INFO", 13: "WARN", 17: "ERROR"}
WINDOW_S = 10.0
WARMUP = 6
FAILING = 3
_KINDS = {1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


def run_demo(requests: int = 300, protocol: str = "grpc", echo: Callable[[str], None] = print) -> int:
    """Run the demo; return the process exit code (0 when everything sent was received)."""
    with ExitStack() as stack:
        data = stack.enter_context(tempfile.TemporaryDirectory(prefix="rootward-demo-"))  # no files left behind
        cluster = _cluster(stack, echo)
        return _run(requests, protocol, echo, Path(data), cluster)


def _cluster(stack: ExitStack, echo: Callable[[str], None]) -> str | None:
    """A simulated Kubernetes API with the shop's Deployments (kmock, from the dev extras), or None."""
    try:
        from rootward.actions import Kube
        from rootward.simcluster import deploy, running_cluster
    except ImportError as e:
        echo(f"  (no simulated cluster: {e.name} is not installed; `make demo` installs it. Actions are skipped.)")
        return None
    running = stack.enter_context(running_cluster())
    kube = Kube.connect(KubernetesAccess(host=running.url))
    for service in SERVICES:
        deploy(kube, service, replicas=2, image=f"shop/{service}:1")
    kube.close()
    return running.url


def _run(requests: int, protocol: str, echo: Callable[[str], None], data: Path, cluster: str | None) -> int:
    acting = ["actions.enabled=true", f"actions.kubernetes.host={cluster}", "actions.lease.enabled=false"]
    cfg = load_config(
        environ={},
        overrides=[*LOCAL_PORTS, "topology.history.enabled=false", f"storage.data_dir={data}",
                   f"detection.window_s={WINDOW_S}", f"detection.warmup={WARMUP}",
                   f"detection.incidents.hold_s={3 * WINDOW_S}", f"detection.log_trail_s={WINDOW_S}",
                   *(acting if cluster else [])],
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
    echo(f"  web page: http://127.0.0.1:{app.api.port}/ while the demo runs (`rootward serve` keeps one up)")
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
    if app.acting is not None:
        app.acting.responder.flush()
        _actions(app, echo)
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
    echo(f"incidents ({len(incidents)}; GET /api/v1/incidents, `rootward incidents`, or the page's /incidents/<id>):")
    for incident in reversed(incidents):
        span = f"open {now - incident.opened:.0f} s ago"
        if incident.resolved is not None:
            span = f"lasted {incident.resolved - incident.opened:.0f} s, resolved"
        echo(f"  {incident.id}  {incident.severity}  {span}")
        echo(f"    likely root cause, most likely first: {', '.join(incident.candidates[:4])}")
        for a in sorted(incident.anomalies.values(), key=lambda a: -abs(a.score))[:3]:
            echo(f"    {a.entity} {a.signal}: {a.value:.3g} (expected {a.expected:.3g})")
        with app.topology.read() as g:  # what GET /api/v1/incidents/<id> adds: the calls around it
            around = incident_subgraph(g, incident.first_seen)
        calls = [e for e in around["edges"] if e.get("kind") == "calls" and e["target"] in incident.first_seen]
        if calls:
            echo("    called by: " + ", ".join(f"{e['source']} ({e.get('requests', 0)} calls)" for e in calls[:4]))
    if not incidents:
        return
    text, blocks = render(incidents[-1], links=app.topology.calls_among(list(incidents[-1].first_seen)))
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


def _actions(app: App, echo: Callable[[str], None]) -> None:
    """The diagnosis, the action proposed for it, the policy's decision, the server-side dry run, and the audit
    trail, verified."""
    assert app.acting is not None
    for incident in reversed(app.incidents.listed()):
        if incident.diagnosis:
            echo("")
            echo(f"diagnosis of {incident.id} ({incident.diagnosis['reasoner']}):")
            for h in incident.diagnosis["hypotheses"][:3]:
                echo(f"  {h['entity']:24} {h['fault_class']:20} confidence {h['confidence']:.2f}")
        action = incident.action
        if action:
            request = action["request"]
            decision = action.get("decision") or {}
            echo(f"proposed action: {request['kind']} {request.get('namespace', '')}/{request.get('name', '')}")
            reasons = decision.get("deny") or decision.get("approval") or decision.get("notes") or []
            echo(f"  policy: {decision.get('result', '-')}" + (f" ({'; '.join(reasons)})" if reasons else ""))
            echo(f"  outcome: {action['status']}: {action.get('detail', '')}")
    log = app.acting.audit
    records = list(log.records())
    verified = log.verify()
    echo(f"audit log ({len(records)} records, hash-chained): " + ", ".join(r.kind for r in records))
    echo(f"  `rootward audit verify`: {'chain intact' if verified.ok else verified}")
