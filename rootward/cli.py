"""The ``rootward`` command line.

rootward serve --config rootward.yaml      run the sidecar (OTLP on 4317/4318, API on 8080)
rootward config check rootward.yaml        validate a configuration file and exit
rootward config show [--config FILE]       print the effective configuration (defaults filled in)
rootward demo                              run the loop on synthetic telemetry, no cluster needed
rootward topology [--entity ID]            print a running server's dependency graph
rootward version                           print the version
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click
import yaml

from rootward._version import __version__
from rootward.config import Config, load_config
from rootward.errors import RootwardError
from rootward.logs import setup_logging

_SET_HELP = "Override one setting, e.g. --set receiver.grpc.port=14317 (repeatable; YAML values)."


def _load(path: Path | None, overrides: tuple[str, ...]) -> Config:
    try:
        return load_config(path, overrides=overrides)
    except RootwardError as e:
        raise click.ClickException(str(e)) from e


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
@click.option("--config", "-c", "config_path", type=click.Path(path_type=Path, dir_okay=False), help="YAML file.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=_SET_HELP)
def serve(config_path: Path | None, overrides: tuple[str, ...]) -> None:
    """Run Rootward until SIGTERM or Ctrl-C; then drain the queue and exit.

    \b
    Endpoints (defaults):
      OTLP/gRPC  :4317   TraceService, MetricsService, LogsService
      OTLP/HTTP  :4318   POST /v1/traces /v1/metrics /v1/logs (protobuf or JSON, gzip)
      API        :8080   /metrics (Prometheus), /healthz, /readyz
    """
    from rootward.app import App

    cfg = _load(config_path, overrides)
    setup_logging(cfg.logging.level, cfg.logging.format)
    app = App(cfg)
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
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=_SET_HELP)
def config_check(path: Path, overrides: tuple[str, ...]) -> None:
    """Validate the configuration in PATH (with the environment and --set applied); exit 1 naming each bad key."""
    _load(path, overrides)
    click.echo(f"{path}: ok")


@config_group.command("show")
@click.option("--config", "-c", "config_path", type=click.Path(path_type=Path, dir_okay=False), help="YAML file.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=_SET_HELP)
def config_show(config_path: Path | None, overrides: tuple[str, ...]) -> None:
    """Print the effective configuration as YAML, every default filled in (secrets masked)."""
    cfg = _load(config_path, overrides)
    data: Any = cfg.model_dump(mode="json")
    click.echo(yaml.safe_dump(data, sort_keys=False), nl=False)


@main.command()
@click.option("--api", default="http://127.0.0.1:8080", show_default=True, help="A running Rootward's API address.")
@click.option("--entity", "entity_id", help="Show the neighbourhood of one entity, e.g. service:shop/cart.")
@click.option("--depth", default=1, show_default=True, help="Hops around --entity.")
@click.option("--kind", help="Only entities of this kind (service, pod, workload, node, database, ...).")
@click.option("--namespace", help="Only entities of this namespace.")
def topology(api: str, entity_id: str | None, depth: int, kind: str | None, namespace: str | None) -> None:
    """Print the live dependency graph of a running Rootward: call edges with requests, errors and mean latency.

    \b
    Examples:
      rootward topology --api http://rootward:8080
      rootward topology --entity service:shop/payment --depth 2
    """
    import httpx

    base = api.rstrip("/") + "/api/v1"
    try:
        if entity_id:
            r = httpx.get(f"{base}/subgraph", params={"id": entity_id, "depth": depth}, timeout=10)
        else:
            params = {k: v for k, v in (("kind", kind), ("namespace", namespace)) if v}
            r = httpx.get(f"{base}/topology", params=params, timeout=10)
    except httpx.HTTPError as err:
        raise click.ClickException(f"cannot reach Rootward at {api}: {err}") from err
    if r.status_code != 200:
        raise click.ClickException(f"{r.status_code}: {r.json().get('message', r.text)}")
    data = r.json()
    calls = [e for e in data["edges"] if e["kind"] == "calls"]
    click.echo(f"{len(data['entities'])} entities, {len(calls)} call edges")
    width = max((len(e["source"]) for e in calls), default=10)
    for e in sorted(calls, key=lambda e: (e["source"], e["target"])):
        mean_ms = 1000 * e.get("latency_sum_s", 0.0) / max(1, e.get("requests", 0))
        click.echo(
            f"  {e['source']:{width}} -> {e['target']}  {e.get('requests', 0)} req, {e.get('errors', 0)} err, "
            f"{mean_ms:.1f} ms mean"
        )
    others = sorted({(e["kind"], e["source"], e["target"]) for e in data["edges"] if e["kind"] != "calls"})
    if others and entity_id:
        click.echo("structure:")
        for kind_, src, dst in others:
            click.echo(f"  {src} -{kind_}-> {dst}")


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


if __name__ == "__main__":  # pragma: no cover
    main()
