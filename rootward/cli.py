"""The ``rootward`` command line.

rootward serve --config rootward.yaml      run the sidecar (OTLP on 4317/4318, API on 8080)
rootward config check rootward.yaml        validate a configuration file and exit
rootward config show [--config FILE]       print the effective configuration (defaults filled in)
rootward demo                              run the loop on synthetic telemetry, no cluster needed
rootward topology [--entity ID] [--at T]   print a running server's dependency graph (now or as of T)
rootward version                           print the version
rootward replay SOURCE...                  replay recorded telemetry (OTLP files, the Nezha data set) as OTLP
rootward diagnose INCIDENT_ID [--llm]      diagnose a running server's incident again and print the hypotheses
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click
import yaml

from rootward._version import __version__
from rootward.cli_acting import audit_group, policy_group
from rootward.cli_approvals import actions_group, approvals_group
from rootward.cli_common import SET_HELP, api_call, config_options, load, when
from rootward.errors import RootwardError
from rootward.logs import setup_logging
from rootward.scoring import LEAD_S


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, "--version", prog_name="rootward")
def main() -> None:
    """Rootward: a telemetry-plane sidecar for autonomous operations on Kubernetes.

    Point an OpenTelemetry Collector's otlp exporter at it (gRPC :4317) or its otlphttp exporter (HTTP :4318).
    Start with `rootward demo` to see the loop on synthetic telemetry, then `rootward serve`.

    Configuration comes from a YAML file (--config), then ROOTWARD_* environment variables
    (ROOTWARD_RECEIVER__GRPC__PORT=14317), then --set flags. `rootward config show` prints every setting.
    """


@main.command()
@config_options
def serve(config_path: Path | None, overrides: tuple[str, ...]) -> None:
    """Run Rootward until SIGTERM or Ctrl-C; then drain the queue and exit.

    \b
    Endpoints (defaults):
      OTLP/gRPC  :4317   TraceService, MetricsService, LogsService
      OTLP/HTTP  :4318   POST /v1/traces /v1/metrics /v1/logs (protobuf or JSON, gzip)
      API        :8080   /metrics (Prometheus), /healthz, /readyz
    """
    from rootward.app import App

    cfg = load(config_path, overrides)
    setup_logging(cfg.logging.level, cfg.logging.format)
    try:
        app = App(cfg)  # a policy bundle that does not compile stops it here, with the compiler's message
    except RootwardError as e:
        raise click.ClickException(str(e)) from e
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        app.start()
    except RootwardError as e:
        raise click.ClickException(str(e)) from e
    click.echo(
        f"rootward {__version__}: OTLP gRPC :{app.receiver.grpc.port}, OTLP HTTP :{app.receiver.http.port}, "
        f"API :{app.api.port}. Ctrl-C to stop.",
        err=True,
    )
    stop.wait()
    click.echo("rootward: draining and stopping...", err=True)
    app.shutdown()


@main.group("config")
def config_group() -> None:
    """Check or print configuration."""


@config_group.command("check")
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
def config_check(path: Path, overrides: tuple[str, ...]) -> None:
    """Validate the configuration in PATH (with the environment and --set applied), and compile the policy bundle
    it names (policies.bundle_dirs, the shipped one unless default_bundle is false); exit 1 naming each bad key or
    the policy file that does not compile."""
    from rootward.policies.engine import PolicyEngine

    cfg = load(path, overrides)
    p = cfg.policies
    absent = [str(d) for d in p.bundle_dirs if not d.exists()]
    if absent:  # a typo, or a pod's paths checked from elsewhere: either way the bundle cannot be compiled here
        raise click.ClickException(
            f"{path}: policies: {', '.join(absent)}: no such directory (checking a pod's config elsewhere? "
            "--set policies.bundle_dirs=[DIR] compiles a copy)"
        )
    tls = cfg.receiver.tls
    files = {"cert_file": tls.cert_file, "key_file": tls.key_file}
    unreadable = [f"receiver.tls.{name}: {file}" for name, file in files.items() if file and not file.is_file()]
    if unreadable:  # serve would stop on them
        raise click.ClickException(
            f"{path}: {'; '.join(unreadable)}: no such file (checking a pod's config elsewhere? "
            "--set receiver.tls.cert_file=... and key_file=... name copies)"
        )
    approvals = cfg.policies.approvals
    nobody = not approvals.tokens and approvals.slack_signing_secret is None
    if cfg.actions.enabled and cfg.actions.mode == "approve-all" and nobody:
        click.echo(
            f"{path}: warning: actions.mode is approve-all but nobody can approve (no policies.approvals.tokens "
            "and no Slack signing secret): every action will wait and expire",
            err=True,
        )
    engine = PolicyEngine.from_config(cfg)
    try:
        if not engine.ok:
            raise click.ClickException(f"{path}: policies: {engine.error}")
        click.echo(f"{path}: ok ({len(engine.modules)} policy files compile: bundle {engine.digest}, as /readyz says)")
    finally:
        engine.close()


@config_group.command("show")
@config_options
def config_show(config_path: Path | None, overrides: tuple[str, ...]) -> None:
    """Print the effective configuration as YAML, every default filled in (secrets masked)."""
    cfg = load(config_path, overrides)
    data: Any = cfg.model_dump(mode="json")
    click.echo(yaml.safe_dump(data, sort_keys=False), nl=False)


@main.command()
@click.option("--api", default="http://127.0.0.1:8080", show_default=True, help="A running Rootward's API address.")
@click.option("--entity", "entity_id", help="Show the neighbourhood of one entity, e.g. service:shop/cart.")
@click.option("--depth", default=1, show_default=True, help="Hops around --entity.")
@click.option("--kind", help="Only entities of this kind (service, pod, workload, node, database, ...).")
@click.option("--namespace", help="Only entities of this namespace.")
@click.option(
    "--at", "at", metavar="TIME", help="The graph as of TIME: RFC 3339 (2024-05-01T12:00:00Z) or unix seconds."
)
@click.option(
    "--diff",
    "diff",
    nargs=2,
    metavar="FROM TO",
    help="What changed from FROM to TO (times as for --at; TO may be now).",
)
@click.option(
    "--token",
    envvar="ROOTWARD_TOKEN",
    default=None,
    help="A reader's or operator's token when the server has api.reads: token; env ROOTWARD_TOKEN.",
)
def topology(
    api: str,
    entity_id: str | None,
    depth: int,
    kind: str | None,
    namespace: str | None,
    at: str | None,
    diff: tuple[str, str] | None,
    token: str | None,
) -> None:
    """Print the live dependency graph of a running Rootward: call edges with requests, errors and mean latency.
    With --at, the graph as of a past time; with --diff, what changed between two times (needs the topology
    history, on by default).

    \b
    Examples:
      rootward topology --api http://rootward:8080
      rootward topology --entity service:shop/payment --depth 2
      rootward topology --at 2024-05-01T12:00:00Z
      rootward topology --diff 2024-05-01T12:00:00Z now --namespace shop
    """
    filters = {k: v for k, v in (("kind", kind), ("namespace", namespace)) if v}
    if diff:
        params = {"from": diff[0], **filters, **({"to": diff[1]} if diff[1] != "now" else {})}
        if entity_id:
            params.update({"id": entity_id, "depth": str(depth)})
        _print_diff(api_call(api, token, "GET", "/api/v1/diff", params=params, local=True))
    elif entity_id:
        params = {"id": entity_id, "depth": str(depth), **({"at": at} if at else {})}
        _print_graph(api_call(api, token, "GET", "/api/v1/subgraph", params=params, local=True), True)
    else:
        params = {**filters, **({"at": at} if at else {})}
        _print_graph(api_call(api, token, "GET", "/api/v1/topology", params=params, local=True), False)


def _print_graph(data: dict[str, Any], structure: bool) -> None:
    calls = [e for e in data["edges"] if e["kind"] == "calls"]
    as_of = f" (as of {when(data['as_of'])})" if "as_of" in data else ""
    click.echo(f"{len(data['entities'])} entities, {len(calls)} call edges{as_of}")
    width = max((len(e["source"]) for e in calls), default=10)
    for e in sorted(calls, key=lambda e: (e["source"], e["target"])):
        mean_ms = 1000 * e.get("latency_sum_s", 0.0) / max(1, e.get("requests", 0))
        click.echo(
            f"  {e['source']:{width}} -> {e['target']}  {e.get('requests', 0)} req, {e.get('errors', 0)} err, "
            f"{mean_ms:.1f} ms mean"
        )
    others = sorted({(e["kind"], e["source"], e["target"]) for e in data["edges"] if e["kind"] != "calls"})
    if others and structure:
        click.echo("structure:")
        for kind_, src, dst in others:
            click.echo(f"  {src} -{kind_}-> {dst}")


def _print_diff(data: dict[str, Any]) -> None:
    ents, edges = data["entities"], data["edges"]
    click.echo(f"from {when(data['as_of']['from'])} to {when(data['as_of']['to'])} (checkpoints):")
    click.echo(
        f"  entities +{len(ents['added'])} -{len(ents['removed'])} ~{len(ents['changed'])}, "
        f"edges +{len(edges['added'])} -{len(edges['removed'])}"
    )
    for sign, items in (("+", ents["added"]), ("-", ents["removed"])):
        for e in items:
            click.echo(f"  {sign} {e['id']}")
    for e in ents["changed"]:
        click.echo(f"  ~ {e['id']}: {e['before']} -> {e['after']}")
    for sign, items in (("+", edges["added"]), ("-", edges["removed"])):
        for e in items:
            click.echo(f"  {sign} {e['source']} -{e['kind']}-> {e['target']}")
    if data["red"]:
        click.echo("calls over the interval:")
        width = max(len(r["source"]) for r in data["red"])
        for r in data["red"]:
            ratio = f"{100 * r['error_ratio']:.1f}%" if r["error_ratio"] is not None else "-"
            mean = f"{1000 * r['mean_latency_s']:.1f} ms mean" if r["mean_latency_s"] is not None else "no requests"
            click.echo(
                f"  {r['source']:{width}} -> {r['target']}  {r['requests']} req, {r['errors']} err ({ratio}), {mean}"
            )


@main.command()
def version() -> None:
    """Print the version."""
    click.echo(f"rootward {__version__}")


@main.command()
@click.option("--requests", "requests_", default=300, show_default=True, help="User requests to simulate.")
@click.option("--protocol", type=click.Choice(["grpc", "http"]), default="grpc", show_default=True)
def demo(requests_: int, protocol: str) -> None:
    """Run Rootward on free local ports and feed it a synthetic five-service shop through the OpenTelemetry SDK's
    OTLP exporters; print what arrived. Needs no cluster and no network."""
    from rootward.demo import run_demo

    setup_logging("WARNING")
    sys.exit(run_demo(requests_, protocol, echo=click.echo))


@main.command("replay")
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--endpoint", metavar="HOST:PORT", help="Send to a running Rootward (any OTLP/gRPC receiver).")
@click.option("--token", help="Bearer token for --endpoint (receiver.auth.tokens).")
@click.option("--insecure/--tls", "insecure", default=None, help="[default: --insecure for a local host, else --tls]")
@click.option("--ca-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="CA bundle for --tls.")
@click.option(
    "--keep-time/--shift-to-now",
    "keep_time",
    default=None,
    help="Keep the recorded timestamps, or shift them so the first event is now. "
    "[default: --keep-time in-process, --shift-to-now with --endpoint]",
)
@click.option(
    "--speed",
    type=click.FloatRange(min=0, min_open=True),
    metavar="N",
    help="N times real time. [default: 1 with --endpoint]",
)
@click.option("--as-fast-as-possible", "fast", is_flag=True, help="No pacing. [default in-process]")
@click.option("--quiet", "-q", is_flag=True, help="No progress lines on stderr.")
@config_options
def replay_command(
    sources: tuple[Path, ...],
    endpoint: str | None,
    token: str | None,
    insecure: bool | None,
    ca_file: Path | None,
    keep_time: bool | None,
    speed: float | None,
    fast: bool,
    quiet: bool,
    config_path: Path | None,
    overrides: tuple[str, ...],
) -> None:
    """Replay recorded telemetry as OTLP/gRPC into a Rootward started here on free ports (the default), or to a
    running one with --endpoint; print what was sent, what was skipped and, in-process, the dependency graph.

    SOURCES are files an OpenTelemetry Collector's file exporter wrote (format json or proto, .gz too), and the
    Nezha data set: a folder holding rca_data/ and construct_data/, one day's folder, or a .tar.gz of them
    (extracted once into ~/.cache/rootward/nezha). Several sources replay merged by time.

    In-process, Rootward's clock follows the replayed time, so windows and TTLs behave as they did live; the
    timestamps are kept and the replay runs as fast as the pipeline takes it (--config and --set configure that
    Rootward). With --endpoint, the timestamps are shifted so that the first event is now, and the replay runs in
    real time (--speed 60: an hour in a minute). Exit status 1 when the receiver refused anything.

    \b
    Examples:
      rootward replay ../shared/data/nezha/ob-2022-08-22.tar.gz
      rootward replay ~/nezha/rca_data/2023-01-29 --set topology.pending_ttl_s=30
      rootward replay traces.jsonl metrics.jsonl logs.jsonl
      rootward replay dump.proto --endpoint localhost:4317 --speed 60
      rootward replay dump.jsonl --endpoint rootward.example:4317 --token "$TOKEN" --keep-time --as-fast-as-possible
    """
    from rootward.replay import options, run
    from rootward.replay_sinks import IN_PROCESS, ReplayError

    if endpoint is not None and (config_path is not None or overrides):
        raise click.UsageError("--config and --set configure the in-process Rootward; not with --endpoint")
    try:
        opts = options(endpoint, token, insecure, ca_file, keep_time, speed, fast)
    except ValueError as e:
        raise click.UsageError(str(e)) from e
    cfg = load(config_path, (*IN_PROCESS, *overrides)) if endpoint is None else None
    setup_logging("WARNING")
    progress = None if quiet else (lambda line: click.echo(line, err=True))
    try:
        code = run(sources, opts, cfg, echo=click.echo, progress=progress)
    except ReplayError as e:
        raise click.ClickException(str(e)) from e
    sys.exit(code)


@main.command()
@click.option("--api", default="http://127.0.0.1:8080", show_default=True, help="A running Rootward's API address.")
@click.option("--status", type=click.Choice(["open", "resolved"]), help="Only open or only resolved incidents.")
@click.option("--id", "incident_id", help="Show one incident: its ranked candidates and anomalies.")
@click.option("--limit", default=20, show_default=True, help="How many, newest first.")
@click.option("--ack", is_flag=True, help="With --id: acknowledge it (someone is on it; Slack shows it).")
@click.option("--silence", metavar="DURATION", help="With --id: no notification for it this long (90, 30m, 2h, 1d).")
@click.option("--resolve", is_flag=True, help="With --id: resolve it now.")
@click.option(
    "--token",
    envvar="ROOTWARD_TOKEN",
    default=None,
    help="An operator token (policies.approvals.tokens) for --ack, --silence, --resolve, a reader's for the rest "
    "when the server has api.reads: token; env ROOTWARD_TOKEN.",
)
def incidents(
    api: str,
    status: str | None,
    incident_id: str | None,
    limit: int,
    ack: bool,
    silence: str | None,
    resolve: bool,
    token: str | None,
) -> None:
    """List a running Rootward's incidents, newest first, or show one; acknowledge, silence or resolve one.

    \b
    Examples:
      rootward incidents --status open
      rootward incidents --id inc-1714564800-3
      rootward incidents --id inc-1714564800-3 --silence 2h      # ROOTWARD_TOKEN set, or from the pod itself
      rootward incidents --api http://rootward.monitoring:8080
    """
    actions = [a for a, on in (("acknowledge", ack), ("silence", silence), ("resolve", resolve)) if on]
    if actions:
        if not incident_id or len(actions) > 1:
            raise click.UsageError("--ack, --silence and --resolve take --id and one at a time")
        params = {"for_s": _seconds(silence)} if silence else None
        path = f"/api/v1/incidents/{quote(incident_id, safe='')}/{actions[0]}"
        done = api_call(api, token, "POST", path, local=True, params=params)
        until = f" until {when(done['silenced_until'])}" if done.get("silenced_until") and silence else ""
        click.echo(f"{done['id']}: {actions[0]}d{until} ({done['status']})")
        return
    if incident_id:
        data = api_call(api, token, "GET", f"/api/v1/incidents/{quote(incident_id, safe='')}", local=True)
    else:
        listing = {"limit": str(limit), **({"status": status} if status else {})}
        data = api_call(api, token, "GET", "/api/v1/incidents", params=listing, local=True)
    if incident_id:
        click.echo(f"{data['id']}  {data['status']}  {data['severity']}  opened {when(data['opened'])}")
        click.echo("likely root cause, most likely first:")
        for i, candidate in enumerate(data["candidates"][:10], 1):
            click.echo(f"  {i}. {candidate}")
        click.echo("anomalies:")
        for a in data["anomalies"][:20]:
            seen = f"  seen by {a['source']}" if a.get("source") else ""
            click.echo(
                f"  {a['entity']}  {a['signal']}  {a['value']:.4g} (expected {a['expected']:.4g}, z {a['score']:+.1f})"
                + seen
            )
        own = {e["id"] for e in data["entities"]}
        calls = [e for e in data.get("subgraph", {}).get("edges", []) if e.get("kind") == "calls"]
        calls = [e for e in calls if e["source"] in own or e["target"] in own]
        if calls:
            click.echo("calls to and from its services:")
            for e in calls[:20]:
                click.echo(
                    f"  {e['source']} -> {e['target']}  {e.get('requests', 0)} requests, {e.get('errors', 0)} errors"
                )
        return
    if not data["incidents"]:
        click.echo("no incidents")
        return
    for inc in data["incidents"]:
        top = ", ".join(inc["candidates"][:3]) or "-"
        mark = " ack" if inc["acknowledged"] else ""
        click.echo(f"{inc['id']:<24} {inc['status']:<9} {inc['severity']:<9}{mark} {when(inc['opened'])}  {top}")
    if data["total"] > len(data["incidents"]):
        click.echo(f"({data['total'] - len(data['incidents'])} more; --limit)")


def _seconds(text: str) -> int:
    """A duration as seconds: 90, 30m, 2h, 1d."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "s")
    try:
        seconds = int(float(number) * units[unit])
    except ValueError:
        raise click.BadParameter(f"{text!r}: a duration such as 90, 30m, 2h or 1d", param_hint="--silence") from None
    if seconds < 1:
        raise click.BadParameter(f"{text!r}: at least a second", param_hint="--silence")
    return seconds


@main.command()
@click.argument("incident_id")
@click.option("--llm", is_flag=True, help="With the LLM reasoner (agent.llm.enabled on the server).")
@click.option("--api", default="http://127.0.0.1:8080", show_default=True, help="A running Rootward's API address.")
@click.option("--timeout", default=300.0, show_default=True, help="Seconds to wait for the diagnosis.")
@click.option(
    "--token",
    envvar="ROOTWARD_TOKEN",
    default=None,
    help="An operator token (policies.approvals.tokens) when the server has any; env ROOTWARD_TOKEN.",
)
def diagnose(incident_id: str, llm: bool, api: str, timeout: float, token: str | None) -> None:
    """Diagnose a running Rootward's incident again, now, and print the ranked hypotheses. A new diagnosis is a
    write (it may cost an LLM call): the server wants an operator token, or a call from its own host when it has
    none.

    \b
    Examples:
      rootward diagnose inc-1714564800-3
      ROOTWARD_TOKEN=... rootward diagnose inc-1714564800-3 --llm --api http://rootward:8080
      (its reasoning trace: GET /api/v1/incidents/ID/trace)
    """
    import httpx

    url = f"{api.rstrip('/')}/api/v1/incidents/{incident_id}/diagnose"
    headers = {"authorization": f"Bearer {token}"} if token else {}
    try:
        r = httpx.post(url, params={"llm": "true" if llm else "false"}, headers=headers, timeout=timeout)
    except httpx.HTTPError as err:
        raise click.ClickException(f"cannot reach {api}: {err}") from err
    if r.status_code != 200:
        raise click.ClickException(f"{r.status_code}: {r.json().get('message', r.text)}")
    data = r.json()
    click.echo(f"{data['incident']}  by the {data['reasoner']} reasoner: {data.get('summary', '')}")
    if data.get("fallback"):
        click.echo(f"(the LLM reasoner failed: {data['fallback']})")
    for i, h in enumerate(data["hypotheses"], 1):
        click.echo(f"  {i}. {h['entity']}  {h['fault_class']}  {h['confidence']:.0%}")
    if data.get("suggested_action"):
        action = data["suggested_action"]
        click.echo(f"suggested (not executed; policies decide): {action['kind']} {action['target']}")


_PUBLISHED_HELP = "Published results to compare with [default: the shared data's Nezha Table 3, when found]."


@main.group("eval")
def eval_group() -> None:
    """Score Rootward's root-cause analysis on recorded, fault-injected data with known answers."""


@eval_group.command("nezha")
@click.argument("data", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Write the scores here.")
@click.option("--published", type=click.Path(exists=True, dir_okay=False, path_type=Path), help=_PUBLISHED_HELP)
@click.option(
    "--lead",
    "lead_s",
    type=click.FloatRange(min=0),
    default=LEAD_S,
    show_default=True,
    help="Seconds before a fault's labelled injection an incident still counts as its detection (labels are when "
    "the injector returned; JVM-agent faults show earlier). 0 scores against the labels as they are.",
)
@config_options
def eval_nezha(
    data: tuple[Path, ...],
    json_path: Path | None,
    published: Path | None,
    lead_s: float,
    config_path: Path | None,
    overrides: tuple[str, ...],
) -> None:
    """Replay every day of the Nezha data set in DATA through the whole pipeline (receiver, topology, detector,
    incidents) and score the incidents it opens against each day's fault list: AC@1/3/5 and Avg@5 of the ranked
    root-cause services, detection recall and delay, false incidents per fault-free hour, per day, system and fault
    type; then a table beside the published results (Nezha, FSE 2023, Table 3). A fault's window runs from --lead
    seconds before its label to 180 s after; the first incident opened in it is its detection.

    DATA: folders laid out like the upstream repository (rca_data/<day>/, construct_data/<day>/), one day's folder,
    or .tar.gz archives of them (extracted once into ~/.cache/rootward/nezha). The fault lists are read for scoring
    only; Rootward must open the incidents itself. --json writes the stable document other tools read:
    {"days": [...], "overall": {"ob": {...}, "tt": {...}}} with fractions in 0..1.

    \b
    Examples:
      rootward eval nezha ../shared/data/nezha/ob-2022-08-22.tar.gz ../shared/data/nezha/tt-2023-01-29.tar.gz
      rootward eval nezha ~/Nezha --json scores.json --set detection.z=5
      rootward eval nezha ~/Nezha --lead 0          # score against the labels as they are
    """
    import json

    from rootward.evaluate import evaluate
    from rootward.replay_sinks import IN_PROCESS
    from rootward.scoring import published as read_published
    from rootward.scoring import table

    cfg = load(config_path, (*IN_PROCESS, *overrides))
    setup_logging("WARNING")
    try:
        doc = evaluate(data, cfg, echo=lambda line: click.echo(line, err=True), lead_s=lead_s)
    except (ValueError, OSError) as e:
        raise click.ClickException(str(e)) from e
    if json_path is not None:
        json_path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    rows = read_published(published) if published is not None else _shared_published()
    click.echo(table(doc["overall"], rows))
    for day in doc["days"]:
        for line in _not_first(day):
            click.echo(line)
    for system, scores in doc["overall"].items():
        delay = scores["mean_delay_s"]
        click.echo(
            f"{system}: {scores['detected']}/{scores['faults']} faults detected"
            f"{f' (mean delay {delay:.0f} s)' if delay is not None else ''}, "
            f"{scores['false_incidents']} false incidents"
            + (f" ({scores['false_per_hour']:.1f} per fault-free hour)" if scores["false_per_hour"] is not None else "")
        )


def _not_first(day: dict[str, Any]) -> list[str]:
    """A line per fault the day's incidents missed or did not rank first: what to look at next."""
    import time

    lines = []
    for o in day["outcomes"]:
        if o["rank"] == 1:
            continue
        when = time.strftime("%H:%M:%S", time.gmtime(o["inject"]))
        if not o["detected"]:
            what = "missed"
        else:
            ranked = f"ranked {o['rank']}" if o["rank"] else "not named"
            what = f"detected at {o['delay_s']:+.0f} s, {ranked}"
        lines.append(f"  {day['system']} {day['day']} {when} {o['kind']} on {o['service']}: {what}")
    return lines


def _shared_published() -> list[Any]:
    from rootward.scoring import published as read_published

    for base in (Path.cwd(), Path(__file__).resolve().parents[1]):
        path = base.parent / "shared" / "data" / "published-results" / "nezha_fse23_table3_service_level.csv"
        if path.is_file():
            return read_published(path)
    return []


main.add_command(policy_group)
main.add_command(audit_group)
main.add_command(approvals_group)
main.add_command(actions_group)


if __name__ == "__main__":  # pragma: no cover
    main()
