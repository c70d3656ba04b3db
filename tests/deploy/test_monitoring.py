"""otel-config/deploy/monitoring: the PodMonitor scrapes the port the pods name, and every alert expression names
only metrics (and label values) a running Rootward exports."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from rootward.app import App
from rootward.config import LOCAL_PORTS, NOTHING_ON_DISK, load_config

from deploy_files import DEPLOY, load_yaml

MONITORING = DEPLOY / "monitoring"


@pytest.fixture(scope="module")
def exported() -> Iterator[tuple[set[str], str]]:
    """The metric names a Rootward with actions on exports (families and samples), and its exposition."""
    overrides = [*LOCAL_PORTS, *NOTHING_ON_DISK, "actions.enabled=true", "actions.kubernetes.host=http://127.0.0.1:9"]
    app = App(load_config(environ={}, overrides=overrides))
    try:
        names: set[str] = set()
        for family in app.telemetry.registry.collect():
            names.add(family.name)
            names.add(f"{family.name}_total" if family.type == "counter" else family.name)
        yield names, app.telemetry.exposition().decode()
    finally:
        app.shutdown()


def _rules() -> list[dict[str, object]]:
    doc = load_yaml(MONITORING / "prometheusrule.yaml")
    return [rule for group in doc["spec"]["groups"] for rule in group["rules"]]


def test_the_kustomization_lists_its_files() -> None:
    kustomization = load_yaml(MONITORING / "kustomization.yaml")
    assert sorted(kustomization["resources"]) == sorted(
        p.name for p in MONITORING.glob("*.yaml") if p.name != "kustomization.yaml"
    )


def test_the_pod_monitor_scrapes_the_port_the_pods_name() -> None:
    monitor = load_yaml(MONITORING / "podmonitor.yaml")
    daemonset = yaml.safe_load((DEPLOY / "base" / "daemonset.yaml").read_text())
    container = daemonset["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"] for p in container["ports"]}
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] in ports
    assert endpoint["path"] == "/metrics"
    labels = daemonset["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()


@pytest.mark.parametrize("rule", _rules(), ids=lambda r: str(r["alert"]))
def test_every_alert_names_only_what_rootward_exports(rule: dict[str, object], exported: tuple[set[str], str]) -> None:
    names, exposition = exported
    expr = str(rule["expr"])
    used = set(re.findall(r"\brootward_[a-z_]+", expr))
    assert used, expr
    assert used <= names, f"{rule['alert']}: not exported: {sorted(used - names)}"
    helps = "\n".join(line for line in exposition.splitlines() if line.startswith("# HELP"))
    for label, value in re.findall(r'(\w+)=~?"([^"]+)"', expr):  # a label value it exports, or its help names
        for one in value.split("|"):
            assert f'{label}="{one}"' in exposition or one in helps, f"{rule['alert']}: {label}={one!r}"
    assert rule["annotations"]["summary"]
    assert rule["annotations"]["description"]
    assert rule["labels"]["severity"] in ("critical", "warning", "info")  # type: ignore[index]


def test_the_alert_files_are_plain_yaml_documents(tmp_path: Path) -> None:
    for path in MONITORING.glob("*.yaml"):
        assert isinstance(yaml.safe_load(path.read_text()), dict), path
