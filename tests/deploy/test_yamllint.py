"""Every YAML file under otel-config/ is yamllint-clean under otel-config/.yamllint.yaml, warnings included."""

from __future__ import annotations

from pathlib import Path

import pytest
from yamllint import linter
from yamllint.config import YamlLintConfig

from deploy_files import OTEL_CONFIG, REPO

CONFIG = OTEL_CONFIG / ".yamllint.yaml"
FILES = sorted(p for p in OTEL_CONFIG.rglob("*") if p.suffix in (".yaml", ".yml"))


def test_there_are_yaml_files_to_lint() -> None:
    names = {p.relative_to(OTEL_CONFIG).as_posix() for p in FILES}
    assert {"collector/agent.yaml", "deploy/base/kustomization.yaml", "deploy/gateway/statefulset.yaml"} <= names
    assert CONFIG in FILES


@pytest.mark.parametrize("path", [pytest.param(p, id=p.relative_to(OTEL_CONFIG).as_posix()) for p in FILES])
def test_yamllint_finds_nothing(path: Path) -> None:
    config = YamlLintConfig(file=str(CONFIG))
    problems = list(linter.run(path.read_text(), config, str(path)))
    where = path.relative_to(REPO)
    assert not problems, "\n".join(f"{where}:{p.line}:{p.column}: [{p.level}] {p.desc} ({p.rule})" for p in problems)
