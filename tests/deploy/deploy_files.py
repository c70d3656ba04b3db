"""Where the deployment files are, and small lookups in rendered manifests, for the tests of otel-config/ and the
Dockerfile."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from rootward.config import Config

REPO = Path(__file__).resolve().parents[2]
OTEL_CONFIG = REPO / "otel-config"
COLLECTOR = OTEL_CONFIG / "collector"
DEPLOY = OTEL_CONFIG / "deploy"
BASE = DEPLOY / "base"
GATEWAY = DEPLOY / "gateway"
COLLECTOR_CONFIGS = ["agent.yaml", "cluster.yaml", "gateway.yaml", "audit.yaml"]

Doc = dict[str, Any]


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def find(docs: list[Doc], kind: str, name: str | None = None) -> list[Doc]:
    """The objects of ``kind`` (and ``name``)."""
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    """The one object of ``kind`` (and ``name``); fails when there is none or several."""
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[d['metadata']['name'] for d in found]}"
    return found[0]


def workload(docs: list[Doc]) -> Doc:
    """The one object that runs Rootward's pods: the DaemonSet (base) or the StatefulSet (gateway)."""
    found = [d for d in docs if d["kind"] in ("DaemonSet", "StatefulSet", "Deployment")]
    assert len(found) == 1, [f"{d['kind']}/{d['metadata']['name']}" for d in found]
    return found[0]


def pod_spec(docs: list[Doc]) -> Doc:
    spec: Doc = workload(docs)["spec"]["template"]["spec"]
    return spec


def container(docs: list[Doc]) -> Doc:
    """The Rootward container of the workload."""
    containers = pod_spec(docs)["containers"]
    assert [c["name"] for c in containers] == ["rootward"]
    found: Doc = containers[0]
    return found


def container_port(docs: list[Doc], name: str) -> int:
    ports = {p["name"]: p["containerPort"] for p in container(docs)["ports"]}
    return ports[name]


def config_map_data(docs: list[Doc], generated_name: str) -> dict[str, str]:
    """The data of the ConfigMap generated as ``generated_name`` (its rendered name carries a hash)."""
    found = [d for d in find(docs, "ConfigMap") if d["metadata"]["name"].rsplit("-", 1)[0] == generated_name]
    assert len(found) == 1, f"no single ConfigMap generated as {generated_name}"
    data: dict[str, str] = found[0]["data"]
    return data


def mount_path(docs: list[Doc], volume: str) -> str:
    mounts = {m["name"]: m["mountPath"] for m in container(docs)["volumeMounts"]}
    return mounts[volume]


def shipped_config(docs: list[Doc]) -> Config:
    """The Rootward configuration of the ConfigMap rootward-config (validated, without the environment)."""
    return Config.model_validate(yaml.safe_load(config_map_data(docs, "rootward-config")["rootward.yaml"]))
