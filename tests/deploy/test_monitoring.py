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
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, set[str]], str]]:
    """Each metric name a Rootward with actions on exports (families and their samples) with its label names, and
    its exposition."""
    data = tmp_path_factory.mktemp("data")  # the audit log and approvals live there
    overrides = [
        *LOCAL_PORTS, *NOTHING_ON_DISK, f"storage.data_dir={data}", "actions.enabled=true",
        "actions.kubernetes.host=http://127.0.0.1:9",
    ]  # fmt: skip
    app = App(load_config(environ={}, overrides=overrides))
    try:
        labels: dict[str, set[str]] = {}
        for metric in vars(app.telemetry).values():  # label names even of families with no sample yet
            name, names = getattr(metric, "_name", None), getattr(metric, "_labelnames", None)
            if isinstance(name, str) and names is not None:
                for exposed in (name, f"{name}_total"):
                    labels.setdefault(exposed, set()).update(names)
        for family in app.telemetry.registry.collect():
            labels.setdefault(family.name, set())
            for sample in family.samples:
                labels.setdefault(sample.name, set()).update(sample.labels)
        yield labels, app.telemetry.exposition().decode()
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
def test_every_alert_names_only_what_rootward_exports(
    rule: dict[str, object], exported: tuple[dict[str, set[str]], str]
) -> None:
    labels, exposition = exported
    expr = str(rule["expr"])
    for a, b in ("()", "{}", "[]"):
        assert expr.count(a) == expr.count(b), f"{rule['alert']}: unbalanced {a}{b}"
    used = set(re.findall(r"\brootward_[a-z_]+", expr))
    assert used, expr
    assert used <= labels.keys(), f"{rule['alert']}: not exported: {sorted(used - labels.keys())}"
    helps = "\n".join(line for line in exposition.splitlines() if line.startswith("# HELP"))
    for metric, selector in re.findall(r"\b(rootward_[a-z_]+)\{([^}]*)\}", expr):
        for label, value in re.findall(r'(\w+)=~?"([^"]+)"', selector):
            assert label in labels[metric], f"{rule['alert']}: {metric} has no label {label!r}"
            for one in value.split("|"):  # a value it exports, or one its help names
                assert f'{label}="{one}"' in exposition or one in helps, f"{rule['alert']}: {label}={one!r}"
    for label in re.findall(r"by \(([^)]*)\)", expr):
        assert {name.strip() for name in label.split(",")} <= {"namespace", "pod"}, "by: the scrape's own labels"
    annotations, rule_labels = rule["annotations"], rule["labels"]
    assert isinstance(annotations, dict)
    assert isinstance(rule_labels, dict)
    assert annotations["summary"]
    assert annotations["description"]
    assert rule_labels["severity"] in ("critical", "warning", "info")


def test_the_alert_files_are_plain_yaml_documents(tmp_path: Path) -> None:
    for path in MONITORING.glob("*.yaml"):
        assert isinstance(yaml.safe_load(path.read_text()), dict), path
