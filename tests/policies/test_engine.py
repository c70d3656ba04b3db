"""The policy engine on the shipped bundle: decisions and their reasons, approvals, and failing closed."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from rootward.config import FreezeWindow, PolicyRules
from rootward.policies.engine import PolicyEngine


@pytest.fixture(scope="module")
def engine() -> PolicyEngine:
    return PolicyEngine()


def test_the_shipped_bundle_compiles_and_allows_a_request_in_scope(
    engine: PolicyEngine, document: dict[str, Any]
) -> None:
    assert engine.ok, engine.error
    decision = engine.decide(document)
    assert decision.result == "allow"
    assert decision.deny == decision.approval == ()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        pytest.param(
            {"action": {"target": {"namespace": "kube-system"}}}, "kube-system is never acted on", id="kube-system"
        ),
        pytest.param(
            {"blast_radius": {"namespaces": ["shop", "kube-system"]}},
            "kube-system is never acted on",
            id="drain-touching-kube-system",
        ),
        pytest.param(
            {"blast_radius": {"pods_at_once": 2}},
            "takes down 2 of 5 pods at once (40%), over the 20% limit (1 at a time)",
            id="over-a-fifth",
        ),
        pytest.param(
            {"history": {"last_action_on_target_s_ago": 30.0}},
            "cooldown: Deployment/shop/cart was acted on 30 s ago (wait 870 s)",
            id="cooldown",
        ),
        pytest.param(
            {"history": {"actions_last_hour": 12}},
            "rate limit: 12 actions in the last hour (at most 10)",
            id="rate-limit",
        ),
        pytest.param({"blast_radius": {"replicas_after": 80}}, "80 replicas is over the ceiling of 50", id="ceiling"),
        pytest.param({"action": {"tier": "extreme"}}, "unknown risk tier extreme", id="unknown-tier"),
        pytest.param({"action": {"target": {"kind": "Secret"}}}, "kind Secret is not in the allowed kinds", id="kind"),
    ],
)
def test_requests_out_of_bounds_are_denied_with_the_reason(
    engine: PolicyEngine, document: dict[str, Any], change: dict[str, Any], reason: str
) -> None:
    _merge(document, change)
    decision = engine.decide(document)
    assert decision.result == "deny"
    assert reason in decision.deny
    assert decision.reasons == decision.deny


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        pytest.param({"action": {"tier": "high"}}, "high-risk action: a human approves", id="high-tier"),
        pytest.param(
            {"diagnosis": {"confidence": 0.6}},
            "medium-risk action and the diagnosis confidence 0.6 is under 0.8",
            id="unsure-medium",
        ),
        pytest.param(
            {"blast_radius": {"pdbs": [{"name": "cart", "disruptions_allowed": 0}]}},
            "PodDisruptionBudget cart allows no disruption now",
            id="pdb",
        ),
    ],
)
def test_gated_requests_need_approval_and_an_approval_lets_them_through(
    engine: PolicyEngine, document: dict[str, Any], change: dict[str, Any], reason: str
) -> None:
    _merge(document, change)
    held = engine.decide(document)
    assert (held.result, held.reasons) == ("needs_approval", (reason,))
    document["approval"] = {"approved_by": "alice"}
    approved = engine.decide(document)
    assert approved.result == "allow"
    assert "approved by alice" in approved.notes


def test_an_approval_never_overrides_a_denial(engine: PolicyEngine, document: dict[str, Any]) -> None:
    _merge(document, {"action": {"tier": "high", "target": {"namespace": "kube-system"}}})
    document["approval"] = {"approved_by": "alice"}
    assert engine.decide(document).result == "deny"


def test_a_low_tier_action_runs_whatever_the_confidence(engine: PolicyEngine, document: dict[str, Any]) -> None:
    _merge(document, {"action": {"tier": "low"}, "diagnosis": {"confidence": 0.1}})
    assert engine.decide(document).result == "allow"


def test_settings_come_from_the_configuration(document: dict[str, Any]) -> None:
    window = FreezeWindow(
        start=datetime(2023, 11, 14, tzinfo=UTC), end=datetime(2023, 11, 15, tzinfo=UTC), reason="release day"
    )
    rules = PolicyRules(allowed_namespaces=["web"], max_pods_fraction=0.5, freeze_windows=[window])
    engine = PolicyEngine(rules=rules)
    _merge(document, {"blast_radius": {"pods_at_once": 2}})
    decision = engine.decide(document)
    assert decision.deny == (
        "change freeze until 2023-11-15T00:00:00Z: release day",
        "namespace shop is not in the allowed namespaces",
    )


def test_a_users_bundle_adds_denials_beside_the_shipped_ones(tmp_path: Path, document: dict[str, Any]) -> None:
    (tmp_path / "night.rego").write_text(
        "package rootward.policy\nimport rego.v1\n"
        'deny contains "no drains of shop" if { input.action.kind == "drain" }\n'
    )
    engine = PolicyEngine([tmp_path])
    assert engine.decide(document).result == "allow"
    document["action"]["kind"] = "drain"
    assert engine.decide(document).deny == ("no drains of shop",)


def test_a_bundle_that_does_not_compile_denies_everything_naming_the_file(
    tmp_path: Path, document: dict[str, Any]
) -> None:
    (tmp_path / "broken.rego").write_text("package rootward.policy\nimport rego.v1\ndeny contains msg if { msg := }\n")
    engine = PolicyEngine([tmp_path])
    assert not engine.ok
    assert engine.error is not None
    assert "broken.rego" in engine.error
    decision = engine.decide(document)
    assert decision.result == "deny"
    assert decision.error == engine.error


def test_a_decision_that_errors_at_evaluation_denies(tmp_path: Path, document: dict[str, Any]) -> None:
    (tmp_path / "conflict.rego").write_text(
        "package rootward.policy\nimport rego.v1\nextra := 1 if input.schema == 1\nextra := 2 if input.schema == 1\n"
        'deny contains "never" if extra == 3\n'
    )
    decision = PolicyEngine([tmp_path]).decide(document)
    assert decision.result == "deny"
    assert decision.error is not None


def test_a_bundle_without_the_decision_rule_denies(tmp_path: Path, document: dict[str, Any]) -> None:
    (tmp_path / "other.rego").write_text("package other\nimport rego.v1\nx := 1\n")
    decision = PolicyEngine([tmp_path], default=False).decide(document)
    assert decision.result == "deny"
    assert decision.error is not None


def test_a_decision_slower_than_the_timeout_denies_and_the_engine_recovers(
    tmp_path: Path, document: dict[str, Any]
) -> None:
    (tmp_path / "slow.rego").write_text(
        "package rootward.policy\nimport rego.v1\n"
        'deny contains "slow" if { input.slow; count([x | some x in numbers.range(1, 300000); x % 7 == 0]) < 0 }\n'
    )
    engine = PolicyEngine([tmp_path], timeout_s=0.05)
    document["slow"] = True
    started = time.monotonic()
    decision = engine.decide(document)
    assert time.monotonic() - started < 1.0
    assert decision.result == "deny"
    assert decision.error is not None
    assert "took over 0.05 s" in decision.error
    document["slow"] = False
    assert engine.decide(document).result == "allow"


def _merge(target: dict[str, Any], change: dict[str, Any]) -> None:
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value


def test_the_bundles_digest_names_its_files_and_settings_wherever_they_are_mounted(tmp_path: Path) -> None:
    from rootward.config import PolicyRules

    shipped = PolicyEngine()
    copy = tmp_path / "policies"
    copy.mkdir()
    for name in shipped.modules:
        source = (Path(__file__).parents[2] / "policies" / name).read_text()
        (copy / Path(name).name).write_text(source)
    assert PolicyEngine([copy], default=False).digest == shipped.digest
    assert PolicyEngine(rules=PolicyRules(cooldown_s=60)).digest != shipped.digest
    (copy / "decision.rego").write_text((copy / "decision.rego").read_text() + "\n# edited\n")
    assert PolicyEngine([copy], default=False).digest != shipped.digest


def test_a_configmap_volumes_hidden_folders_are_not_read_twice(tmp_path: Path) -> None:
    """A ConfigMap mounted as a volume: each file a link into ..data, itself a link to a ..<timestamp> folder."""
    shipped = PolicyEngine()
    stamp = tmp_path / "..2026_11_26_12_00_00.123"
    stamp.mkdir()
    for name in shipped.modules:
        (stamp / Path(name).name).write_text((Path(__file__).parents[2] / "policies" / name).read_text())
    (tmp_path / "..data").symlink_to(stamp.name)
    for name in shipped.modules:
        (tmp_path / Path(name).name).symlink_to(Path("..data") / Path(name).name)
    mounted = PolicyEngine([tmp_path], default=False)
    assert len(mounted.modules) == len(shipped.modules)
    assert mounted.digest == shipped.digest
