"""The Collector configurations (otel-config/collector): valid YAML whose every component is a Collector contrib
component used on signals it supports, whose pipelines reference only what is defined, whose exporters reach
Rootward's Services on Rootward's default ports within its limits; and the part the reduced Collector binary of the
tests can run (COMPONENTS.md) runs for real against a Rootward App: the agent's container-log pipeline, and a
validation of every configuration's supported components.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from rootward.app import App
from rootward.config import LOCAL_PORTS, NOTHING_ON_DISK, Config, load_config

from collectors import otelcol_binary, running_otelcol, wait_until
from deploy_files import COLLECTOR, COLLECTOR_CONFIGS, Doc, load_yaml, one
from kustomize_reader import render

DEFAULTS = Config()
ALL = frozenset({"traces", "metrics", "logs"})

#: Components of Collector contrib (opentelemetry-collector-contrib, and the core components otelcol-contrib
#: includes) that configurations here may use, with the signals each supports. A component not listed is not
#: accepted: check that it is in contrib (and in the otelcol-k8s distribution) before adding it.
CONTRIB: dict[str, dict[str, frozenset[str]]] = {
    "receivers": {
        "otlp": ALL,
        "filelog": frozenset({"logs"}),
        "journald": frozenset({"logs"}),
        "kubeletstats": frozenset({"metrics"}),
        "hostmetrics": frozenset({"metrics"}),
        "k8sobjects": frozenset({"logs"}),
        "k8s_cluster": frozenset({"metrics", "logs"}),
        "k8s_events": frozenset({"logs"}),
        "prometheus": frozenset({"metrics"}),
        "jaeger": frozenset({"traces"}),
        "zipkin": frozenset({"traces"}),
    },
    "processors": {
        "memory_limiter": ALL,
        "batch": ALL,
        "k8sattributes": ALL,
        "resourcedetection": ALL,
        "resource": ALL,
        "attributes": ALL,
        "filter": ALL,
        "transform": ALL,
        "groupbytrace": frozenset({"traces"}),
        "tail_sampling": frozenset({"traces"}),
    },
    "exporters": {
        "otlp": ALL,
        "otlphttp": ALL,
        "loadbalancing": ALL,
        "debug": ALL,
        "file": ALL,
        "prometheusremotewrite": frozenset({"metrics"}),
    },
    "extensions": {
        "health_check": frozenset(),
        "pprof": frozenset(),
        "zpages": frozenset(),
        "file_storage": frozenset(),
        "bearertokenauth": frozenset(),
    },
    "connectors": {},
}
KINDS = ("receivers", "processors", "exporters", "connectors", "extensions")


def _type(component_id: str) -> str:
    """``otlp/rootward`` -> ``otlp``."""
    return component_id.split("/", 1)[0]


def _signal(pipeline_id: str) -> str:
    return _type(pipeline_id)


@pytest.fixture(params=COLLECTOR_CONFIGS)
def collector_config(request: pytest.FixtureRequest) -> tuple[str, Doc]:
    name: str = request.param
    config = load_yaml(COLLECTOR / name)
    assert isinstance(config, dict), f"{name} is not a YAML mapping"
    return name, config


def test_every_component_is_from_collector_contrib(collector_config: tuple[str, Doc]) -> None:
    name, config = collector_config
    assert set(config) <= {*KINDS, "service"}, f"{name}: unknown top-level keys {set(config) - {*KINDS, 'service'}}"
    for kind in KINDS:
        for component_id in config.get(kind) or {}:
            assert _type(component_id) in CONTRIB[kind], f"{name}: {kind[:-1]} {component_id} is not in the list"


def test_pipelines_use_defined_components_on_signals_they_support(collector_config: tuple[str, Doc]) -> None:
    name, config = collector_config
    service = config["service"]
    used: dict[str, set[str]] = {kind: set() for kind in KINDS}
    for pipeline_id, pipeline in service["pipelines"].items():
        signal = _signal(pipeline_id)
        assert signal in ALL, f"{name}: pipeline {pipeline_id}"
        assert pipeline.get("receivers"), f"{name}: pipeline {pipeline_id} has no receiver"
        assert pipeline.get("exporters"), f"{name}: pipeline {pipeline_id} has no exporter"
        for kind in ("receivers", "processors", "exporters"):
            for component_id in pipeline.get(kind, []):
                assert component_id in (config.get(kind) or {}), f"{name}: {pipeline_id} uses undefined {component_id}"
                supported = CONTRIB[kind][_type(component_id)]
                assert signal in supported, f"{name}: {component_id} does not take {signal}"
                used[kind].add(component_id)
    for extension in service.get("extensions", []):
        assert extension in (config.get("extensions") or {}), f"{name}: undefined extension {extension}"
        used["extensions"].add(extension)
    for kind in KINDS:
        unused = set(config.get(kind) or {}) - used[kind]
        assert not unused, f"{name}: {kind} defined but never used: {sorted(unused)}"


def test_processors_run_memory_limiter_first(collector_config: tuple[str, Doc]) -> None:
    name, config = collector_config
    for pipeline_id, pipeline in config["service"]["pipelines"].items():
        assert pipeline["processors"][0] == "memory_limiter", f"{name}: {pipeline_id}"
        if "batch" in pipeline["processors"]:
            assert pipeline["processors"][-1] == "batch", f"{name}: {pipeline_id}: batch goes last"


def _exporters_to_rootward(config: Doc) -> dict[str, Doc]:
    return {k: v for k, v in config["exporters"].items() if k in ("otlp/rootward",) or _type(k) == "loadbalancing"}


def _service_host(host: str) -> tuple[str, str]:
    """``name.namespace.svc`` or ``name.namespace.svc.cluster.local`` -> (name, namespace)."""
    match = re.fullmatch(r"([a-z0-9-]+)\.([a-z0-9-]+)\.svc(\.cluster\.local)?", host)
    assert match, f"{host} is not a Service's DNS name"
    return match[1], match[2]


def _grpc_target(docs: list[Doc], host: str, port: int) -> None:
    """The Service ``host`` exists in the rendered manifests and ``port`` reaches Rootward's OTLP/gRPC port."""
    name, namespace = _service_host(host)
    service = one(docs, "Service", name)
    assert service["metadata"]["namespace"] == namespace
    ports = {p["port"]: p["targetPort"] for p in service["spec"]["ports"]}
    assert ports.get(port) == "grpc-otlp", f"{host}:{port} does not reach OTLP/gRPC: {ports}"
    assert port == DEFAULTS.receiver.grpc.port


@pytest.mark.parametrize("name", ["agent.yaml", "cluster.yaml", "audit.yaml"])
def test_the_node_collectors_export_to_the_node_local_rootward_service(name: str) -> None:
    config = load_yaml(COLLECTOR / name)
    exporter = config["exporters"]["otlp/rootward"]
    host, port = exporter["endpoint"].rsplit(":", 1)
    docs = render(COLLECTOR.parent / "deploy" / "base")
    _grpc_target(docs, host, int(port))
    assert one(docs, "Service", _service_host(host)[0])["spec"]["internalTrafficPolicy"] == "Local"
    for pipeline in config["service"]["pipelines"].values():
        assert "otlp/rootward" in pipeline["exporters"]


def test_the_gateway_routes_traces_by_trace_id_to_the_replicas_headless_service() -> None:
    config = load_yaml(COLLECTOR / "gateway.yaml")
    docs = render(COLLECTOR.parent / "deploy" / "gateway")
    pipelines = config["service"]["pipelines"]
    for pipeline_id, pipeline in pipelines.items():
        (exporter_id,) = pipeline["exporters"]
        exporter = config["exporters"][exporter_id]
        assert _type(exporter_id) == "loadbalancing"
        dns = exporter["resolver"]["dns"]
        _grpc_target(docs, dns["hostname"], dns["port"])
        name, _ = _service_host(dns["hostname"])
        assert one(docs, "Service", name)["spec"]["clusterIP"] == "None", "the resolver needs one address per replica"
        assert one(docs, "StatefulSet")["spec"]["serviceName"] == name
        expected = {"traces": "traceID", "logs": "traceID", "metrics": "resource"}[_signal(pipeline_id)]
        assert exporter["routing_key"] == expected, pipeline_id
        assert "endpoint" not in exporter["protocol"]["otlp"], "the resolver sets the endpoint"


def test_exports_to_rootward_are_gzip_retried_and_queued(collector_config: tuple[str, Doc]) -> None:
    name, config = collector_config
    exporters = _exporters_to_rootward(config)
    assert exporters, name
    for exporter_id, exporter in exporters.items():
        settings = exporter["protocol"]["otlp"] if _type(exporter_id) == "loadbalancing" else exporter
        assert settings["compression"] == "gzip", f"{name}: {exporter_id}"
        assert settings["retry_on_failure"]["enabled"] is True, f"{name}: {exporter_id}"
        assert settings["sending_queue"]["enabled"] is True, f"{name}: {exporter_id}"
        assert settings["tls"] == {"insecure": True}, f"{name}: {exporter_id}: matches Rootward's default (no TLS)"


def test_batches_fit_rootwards_request_limits(collector_config: tuple[str, Doc]) -> None:
    name, config = collector_config
    for processor_id, processor in (config.get("processors") or {}).items():
        if _type(processor_id) == "batch":
            assert processor["send_batch_max_size"] >= processor["send_batch_size"] > 0
            assert processor["send_batch_max_size"] <= DEFAULTS.receiver.limits.max_items_per_request, name


@pytest.mark.parametrize("name", ["agent.yaml", "gateway.yaml"])
def test_otlp_receivers_listen_on_the_standard_ports(name: str) -> None:
    protocols = load_yaml(COLLECTOR / name)["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"].endswith(":4317")
    assert protocols["http"]["endpoint"].endswith(":4318")


# --- the real Collector ---------------------------------------------------------------------------------------------


def _binary_components() -> dict[str, set[str]]:
    """What the reduced Collector binary of the tests has, by kind (``otelcol components``)."""
    out = subprocess.run(
        [str(otelcol_binary()), "components"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    listed = yaml.safe_load(out)
    return {kind: {c["name"] for c in listed.get(kind) or []} for kind in KINDS}


def _supported_part(config: Doc, pipeline_id: str, have: dict[str, set[str]]) -> Doc:
    """One pipeline of ``config`` with only the receivers and processors the binary has, verbatim."""
    pipeline = config["service"]["pipelines"][pipeline_id]
    kept = {kind: [c for c in pipeline.get(kind, []) if _type(c) in have[kind]] for kind in ("receivers", "processors")}
    return {
        "receivers": {c: copy.deepcopy(config["receivers"][c]) for c in kept["receivers"]},
        "processors": {c: copy.deepcopy(config["processors"][c]) for c in kept["processors"]},
        "service": {"telemetry": {"metrics": {"level": "none"}}, "pipelines": {pipeline_id: kept}},
    }


def _as_otlphttp(exporter: Doc, url: str) -> Doc:
    """An otlp exporter's settings for the otlphttp exporter (the binary has no gRPC exporter): the same
    compression, timeout, retries and queue, sent to ``url``."""
    settings = copy.deepcopy(exporter)
    settings["endpoint"] = url
    return settings


@pytest.mark.parametrize("name", COLLECTOR_CONFIGS)
def test_the_components_the_binary_has_accept_their_settings(name: str, tmp_path: Path) -> None:
    config = load_yaml(COLLECTOR / name)
    have = _binary_components()
    checked = 0
    for pipeline_id in config["service"]["pipelines"]:
        part = _supported_part(config, pipeline_id, have)
        if not part["processors"]:
            continue
        checked += len(part["processors"])
        pipelines = part["service"]["pipelines"]
        if not part["receivers"]:
            # A pipeline needs a receiver: the binary's only one, filelog, on an empty folder, in a logs pipeline
            # (memory_limiter and batch take every signal with the same settings).
            part["receivers"] = {"filelog": {"include": [str(tmp_path / "none" / "*.log")]}}
            pipelines[f"logs/{pipeline_id.replace('/', '-')}"] = {
                **pipelines.pop(pipeline_id),
                "receivers": ["filelog"],
            }
        part["exporters"] = {"otlphttp": {"endpoint": "http://127.0.0.1:4318"}}
        (pipeline,) = pipelines.values()
        pipeline["exporters"] = ["otlphttp"]
        path = tmp_path / f"{pipeline_id.replace('/', '-')}.yaml"
        path.write_text(yaml.safe_dump(part))
        result = subprocess.run(
            [str(otelcol_binary()), "validate", "--config", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, f"{name} {pipeline_id}:\n{yaml.safe_dump(part)}\n{result.stderr}"
    assert checked, f"{name}: nothing the binary could check"


LOCAL = [*LOCAL_PORTS, *NOTHING_ON_DISK]


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    """A running Rootward on free local ports, its state under tmp_path."""
    rootward = App(load_config(environ={}, overrides=[*LOCAL, f"storage.data_dir={tmp_path / 'rootward-data'}"]))
    rootward.start()
    try:
        yield rootward
    finally:
        rootward.shutdown()


UID = "0b6c3e6a-1f0e-4c5b-9a7e-2f1d3c4b5a6f"
#: What the kubelet writes under /var/log/pods, in the three formats the container parser reads.
POD_LOGS = {
    # containerd / CRI-O: a partial line (P) is joined with the rest (F).
    f"shop_cart-5d8f7c9b4-x2x7q_{UID}/cart/0.log": (
        "2025-01-01T00:00:00.000000001Z stdout F GET /cart 200\n"
        "2025-01-01T00:00:01.000000000Z stderr P payment timed out \n"
        "2025-01-01T00:00:01.000000001Z stderr F after 5000 ms\n"
    ),
    # docker's json-file driver
    f"payments_pay-0_{UID}/pay/1.log": json.dumps(
        {"log": "charge accepted\n", "stream": "stdout", "time": "2025-01-01T00:00:02.000000000Z"}
    )
    + "\n",
    # the Collector's own container: excluded, or its logs would loop through it
    f"observability_otel-agent-7x2kq_{UID}/otel-collector/0.log": (
        "2025-01-01T00:00:03.000000000Z stderr F exporting failed, will retry\n"
    ),
    # Rootward's own container: excluded, or its incident lines would become incidents about itself
    f"rootward_rootward-8xk2p_{UID}/rootward/0.log": (
        "2025-01-01T00:00:04.000000000Z stderr F WARNING incident inc-1 opened (critical): service:shop/cart\n"
    ),
}


def _entity(app: App, entity_id: str) -> Doc | None:
    r = httpx.get(f"http://127.0.0.1:{app.api.port}/api/v1/entity", params={"id": entity_id}, timeout=5)
    if r.status_code == 404:
        return None
    r.raise_for_status()
    body: Doc = r.json()
    return body


def _accepted_logs(app: App) -> float:
    return app.telemetry.value("rootward_receiver_items_total", signal="logs", outcome="accepted", reason="")


def test_the_agents_container_log_pipeline_runs_on_the_real_collector_into_rootward(app: App, tmp_path: Path) -> None:
    agent = load_yaml(COLLECTOR / "agent.yaml")
    have = _binary_components()
    assert "filelog" in have["receivers"], "the pinned binary lost the filelog receiver"
    part = _supported_part(agent, "logs", have)
    assert list(part["receivers"]) == ["filelog"]
    assert part["service"]["pipelines"]["logs"]["processors"] == ["memory_limiter", "batch"]
    root = tmp_path / "node"
    filelog = part["receivers"]["filelog"]
    # The node's paths, under a folder of the test; the rest of the receiver (operators, exclusion) is verbatim.
    filelog["include"] = [str(root) + p for p in filelog["include"]]
    filelog["exclude"] = [str(root) + p for p in filelog["exclude"]]
    filelog["start_at"] = "beginning"  # the files are written before the Collector starts, not appended after
    for relative, text in POD_LOGS.items():
        path = root / "var/log/pods" / relative
        path.parent.mkdir(parents=True)
        path.write_text(text)
    url = f"http://127.0.0.1:{app.receiver.http.port}"
    part["exporters"] = {"otlphttp/rootward": _as_otlphttp(agent["exporters"]["otlp/rootward"], url)}
    part["service"]["pipelines"]["logs"]["exporters"] = ["otlphttp/rootward"]

    with running_otelcol(tmp_path, yaml.safe_dump(part)) as otelcol:
        arrived = wait_until(lambda: _accepted_logs(app) >= 3, timeout=30)
        wait_until(lambda: _accepted_logs(app) > 3, timeout=1.0)  # an excluded or unjoined line would show
        context = f"\n{otelcol.describe()}"
        assert arrived, f"accepted {_accepted_logs(app)} log records{context}"
        assert _accepted_logs(app) == 3, context  # two cart lines (one joined from two parts), one pay line

    cart = _entity(app, "pod:shop/cart-5d8f7c9b4-x2x7q")
    pay = _entity(app, "pod:payments/pay-0")
    assert cart is not None, "the container parser did not name the pod"
    assert pay is not None, "the container parser did not name the pod (docker's format)"
    assert cart["containers"] == ["cart"]
    assert pay["containers"] == ["pay"]
    assert _entity(app, "pod:observability/otel-agent-7x2kq") is None, "the Collector's own logs were not excluded"
    assert _entity(app, "pod:rootward/rootward-8xk2p") is None, "Rootward's own logs were not excluded"
    for probe in ("/healthz", "/readyz"):  # what the manifests' probes ask
        assert httpx.get(f"http://127.0.0.1:{app.api.port}{probe}", timeout=5).status_code == 200


def test_the_readme_snippet_is_the_agents_exporter() -> None:
    """The minimal exporter in the README (Point your Collector at it) sends where agent.yaml sends."""
    readme = (COLLECTOR.parents[1] / "README.md").read_text()
    section = readme.split("## Point your Collector at it", 1)[1].split("\n## ", 1)[0]
    snippet: Any = yaml.safe_load(section.split("```yaml", 1)[1].split("```", 1)[0])
    agent = load_yaml(COLLECTOR / "agent.yaml")["exporters"]["otlp/rootward"]
    exporter = snippet["exporters"]["otlp/rootward"]
    assert exporter["endpoint"] == agent["endpoint"]
    assert exporter["tls"] == agent["tls"]


def test_the_audit_pipeline_runs_on_the_real_collector_and_writes_become_changes(app: App, tmp_path: Path) -> None:
    """API audit log lines (one JSON event a line, as the API server writes them) through audit.yaml's filelog
    receiver: the write becomes a change with who and the entry's own time; the read is not one."""
    config = load_yaml(COLLECTOR / "audit.yaml")
    part = _supported_part(config, "logs", _binary_components())
    assert list(part["receivers"]) == ["filelog/audit"]
    root = tmp_path / "control-plane"
    filelog = part["receivers"]["filelog/audit"]
    filelog["include"] = [str(root) + p for p in filelog["include"]]
    filelog["start_at"] = "beginning"
    event = {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Metadata",
        "stage": "ResponseComplete",
        "verb": "patch",
        "user": {"username": "alice@example.com"},
        "objectRef": {"resource": "deployments", "namespace": "shop", "name": "cart", "apiGroup": "apps"},
        "requestReceivedTimestamp": "2025-01-01T00:00:00.000000Z",
        "stageTimestamp": "2025-01-01T00:00:00.250000Z",
    }
    lines = [event, {**event, "verb": "get"}]
    log = root / "var/log/kubernetes/audit/audit.log"
    log.parent.mkdir(parents=True)
    log.write_text("".join(json.dumps(line) + "\n" for line in lines))
    url = f"http://127.0.0.1:{app.receiver.http.port}"
    part["exporters"] = {"otlphttp/rootward": _as_otlphttp(config["exporters"]["otlp/rootward"], url)}
    part["service"]["pipelines"]["logs"]["exporters"] = ["otlphttp/rootward"]

    with running_otelcol(tmp_path, yaml.safe_dump(part)) as otelcol:
        arrived = wait_until(lambda: _accepted_logs(app) >= 2, timeout=30)
        assert arrived, f"accepted {_accepted_logs(app)} log records\n{otelcol.describe()}"
    app.receiver.queue.wait_idle()
    changes = [(c.time, c.entity, c.kind, c.who) for c in app.incidents.recent_changes]
    assert changes == [(1735689600.25, "workload:shop/deployment/cart", "patch", "alice@example.com")]
