"""toggle_flag end to end: flagd's file mode on a real flag file in tmp_path, read back through OpenFeature.

The executor's Kubernetes client points at a port nothing listens on: a feature-flag toggle never calls the
Kubernetes API (it needs no RBAC), and any call would fail these tests.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from rootward.actions import Diagnosis, Executor, FeatureFlags, Kube, ToggleFlag, from_json
from rootward.actions.errors import FlagError, InvalidRequest
from rootward.actions.executor import Mode
from rootward.actions.flags import CHANGE_KEY, FlagFile, FlagReader, Resolution
from rootward.config import PolicyRules, load_config
from rootward.policies import Approvals, AuditLog, PolicyEngine

FLAGS: dict[str, Any] = {
    "$schema": "https://flagd.dev/schema/v0/flags.json",
    "flags": {
        "new-checkout": {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "on"},
        # A rule every evaluation matches: whatever the default variant, OpenFeature serves "sale".
        "checkout-banner": {
            "state": "ENABLED",
            "variants": {"sale": "Sale!", "none": ""},
            "defaultVariant": "sale",
            "targeting": {"if": [True, "sale", None]},
        },
        "page-size": {"state": "ENABLED", "variants": {"small": 10, "large": 50}, "defaultVariant": "small"},
    },
    "metadata": {"flagSetId": "shop"},
}
CONFIDENT = Diagnosis("the new checkout fails payments", 0.95, root_cause="service:shop/checkout")

MakeFlagExecutor = Callable[..., Executor]


@pytest.fixture
def flag_path(tmp_path: Path) -> Path:
    path = tmp_path / "flags.json"
    path.write_text(json.dumps(FLAGS, indent=2))
    return path


@pytest.fixture
def flags(flag_path: Path) -> Iterator[FeatureFlags]:
    with FeatureFlags(flag_path, poll_interval_ms=20) as f:
        yield f


@pytest.fixture
def app_reader(flag_path: Path) -> Iterator[FlagReader]:
    """An application's own OpenFeature client on the same file (flagd's file resolver), apart from Rootward's."""
    reader = FlagReader(flag_path, poll_interval_ms=20).open()
    yield reader
    reader.close()


@pytest.fixture
def unreachable_kube() -> Iterator[Kube]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = kubernetes.client.ApiClient(kubernetes.client.Configuration(host=f"http://127.0.0.1:{port}"))
    kube = Kube(client, request_timeout_s=1)
    yield kube
    kube.close()


@pytest.fixture
def make_executor(
    unreachable_kube: Kube, policy: PolicyEngine, audit: AuditLog, approvals: Approvals, flags: FeatureFlags
) -> MakeFlagExecutor:
    def make(mode: Mode = "autonomous", **kw: Any) -> Executor:
        options: dict[str, Any] = {"verify_timeout_s": 5.0, "poll_interval_s": 0.02, "flags": flags, **kw}
        return Executor(unreachable_kube, options.pop("policy", policy), audit, approvals, mode=mode, **options)

    return make


def _flag(path: Path, key: str) -> dict[str, Any]:
    return dict(json.loads(path.read_text())["flags"][key])


def _loaded(reader: FlagReader, path: Path, key: str, like: Any) -> Resolution:
    """What ``reader`` serves once it has loaded the file as it is now (it polls on its own schedule)."""
    stamp = _flag(path, key).get("metadata", {}).get(CHANGE_KEY)
    deadline = time.monotonic() + 10
    while (resolution := reader.resolve(key, like)).change != stamp and time.monotonic() < deadline:
        time.sleep(0.01)
    return resolution


def _kinds(audit: AuditLog, request_id: str) -> list[str]:
    return [r.kind for r in audit.records(request_id=request_id)]


def test_toggling_a_flag_rewrites_the_file_and_openfeature_then_serves_the_new_variant(
    make_executor: MakeFlagExecutor, audit: AuditLog, flag_path: Path, app_reader: FlagReader
) -> None:
    assert app_reader.resolve("new-checkout", True).value is True
    outcome = make_executor().submit(ToggleFlag("new-checkout", variant="off"), CONFIDENT)
    assert outcome.status == "succeeded", outcome.detail
    assert outcome.detail == "OpenFeature serves new-checkout variant off"
    assert _flag(flag_path, "new-checkout")["defaultVariant"] == "off"
    served = _loaded(app_reader, flag_path, "new-checkout", True)
    assert (served.value, served.variant, served.error) == (False, "off", None)
    assert _kinds(audit, outcome.request_id) == ["decision", "dry_run", "intent", "executed", "verified", "outcome"]
    records = {r.kind: r.data for r in audit.records(request_id=outcome.request_id)}
    assert records["intent"]["prior"] == {"state": "ENABLED", "defaultVariant": "on"}
    assert records["decision"]["blast_radius"]["flag"]["to"] == {"state": "ENABLED", "defaultVariant": "off"}
    assert records["decision"]["decision"]["result"] == "allow"


def test_a_dry_run_shows_the_change_and_what_openfeature_serves_now_and_leaves_the_file_alone(
    make_executor: MakeFlagExecutor, flag_path: Path
) -> None:
    before = flag_path.read_bytes()
    outcome = make_executor("dry-run").submit(ToggleFlag("new-checkout", variant="off"), CONFIDENT)
    assert outcome.status == "dry_run"
    assert outcome.result["from"] == {"state": "ENABLED", "defaultVariant": "on"}
    assert outcome.result["to"] == {"state": "ENABLED", "defaultVariant": "off"}
    assert outcome.result["resolved_now"] == {"value": True, "variant": "on", "reason": "STATIC", "error": None}
    assert flag_path.read_bytes() == before


def test_a_toggle_whose_anomaly_does_not_clear_is_rolled_back_to_the_prior_variant(
    make_executor: MakeFlagExecutor, audit: AuditLog, flag_path: Path, app_reader: FlagReader
) -> None:
    executor = make_executor(anomaly_cleared=lambda _: False, verify_timeout_s=0.5)
    outcome = executor.submit(ToggleFlag("new-checkout", variant="off"), CONFIDENT)
    assert outcome.status == "rolled_back", outcome.detail
    assert "the anomaly has not cleared" in outcome.detail
    assert outcome.detail.endswith("rolled back: OpenFeature serves new-checkout variant on")
    assert _flag(flag_path, "new-checkout")["defaultVariant"] == "on"
    assert _loaded(app_reader, flag_path, "new-checkout", True).variant == "on"
    assert _kinds(audit, outcome.request_id)[-5:] == [
        "executed", "verification_failed", "rolled_back", "rollback_verified", "outcome",
    ]  # fmt: skip


def test_a_targeting_rule_that_hides_the_new_default_fails_verification_at_once_and_is_rolled_back(
    make_executor: MakeFlagExecutor, flag_path: Path
) -> None:
    outcome = make_executor(verify_timeout_s=30.0).submit(ToggleFlag("checkout-banner", variant="none"), CONFIDENT)
    assert outcome.status == "rolled_back", outcome.detail
    assert "serves checkout-banner variant sale (TARGETING_MATCH), not variant none" in outcome.detail
    assert _flag(flag_path, "checkout-banner")["defaultVariant"] == "sale"
    assert outcome.decision is not None
    assert any("has targeting rules" in note for note in outcome.decision.notes)


def test_disabling_a_flag_is_verified_by_openfeature_reporting_it_disabled(
    make_executor: MakeFlagExecutor, flag_path: Path, app_reader: FlagReader
) -> None:
    outcome = make_executor().submit(ToggleFlag("page-size", state="DISABLED"), CONFIDENT)
    assert outcome.status == "succeeded", outcome.detail
    assert _flag(flag_path, "page-size")["state"] == "DISABLED"
    assert _loaded(app_reader, flag_path, "page-size", 10).reason == "DISABLED"


def test_policy_denies_a_flag_outside_the_allowed_flags_and_nothing_is_written(
    make_executor: MakeFlagExecutor, audit: AuditLog, flag_path: Path
) -> None:
    before = flag_path.read_bytes()
    engine = PolicyEngine(rules=PolicyRules(allowed_flags=["dark-mode"]))
    try:
        outcome = make_executor(policy=engine).submit(ToggleFlag("new-checkout", variant="off"), CONFIDENT)
    finally:
        engine.close()
    assert outcome.status == "denied"
    assert outcome.detail == "flag new-checkout is not in the allowed flags"
    assert flag_path.read_bytes() == before
    assert _kinds(audit, outcome.request_id) == ["decision", "outcome"]


def test_a_low_confidence_toggle_waits_for_a_human_without_writing(
    make_executor: MakeFlagExecutor, flag_path: Path
) -> None:
    before = flag_path.read_bytes()
    outcome = make_executor().submit(ToggleFlag("new-checkout", variant="off"), Diagnosis("maybe checkout", 0.5))
    assert outcome.status == "pending_approval"
    assert flag_path.read_bytes() == before


def test_an_unknown_variant_fails_before_anything_is_written(make_executor: MakeFlagExecutor, flag_path: Path) -> None:
    before = flag_path.read_bytes()
    outcome = make_executor().submit(ToggleFlag("new-checkout", variant="maybe"), CONFIDENT)
    assert outcome.status == "failed"
    assert "has no variant 'maybe' (off, on)" in outcome.detail
    assert flag_path.read_bytes() == before


def test_without_a_flag_file_a_toggle_fails_saying_flags_are_off(make_executor: MakeFlagExecutor) -> None:
    outcome = make_executor(flags=None).submit(ToggleFlag("new-checkout", variant="off"), CONFIDENT)
    assert outcome.status == "failed"
    assert "feature flags are off: set actions.flags.source" in outcome.detail


def test_the_writer_refuses_a_flag_someone_else_changed_and_leaves_the_file_alone(flag_path: Path) -> None:
    writer = FlagFile(flag_path)
    writer.write(
        "new-checkout", {"state": "ENABLED", "defaultVariant": "on"}, {"state": "DISABLED", "defaultVariant": "on"}
    )
    changed = flag_path.read_bytes()
    with pytest.raises(FlagError, match="is DISABLED/on now, not ENABLED/on: someone else changed it"):
        writer.write(
            "new-checkout", {"state": "ENABLED", "defaultVariant": "on"}, {"state": "ENABLED", "defaultVariant": "off"}
        )
    assert flag_path.read_bytes() == changed


def test_the_writer_changes_one_flag_keeps_the_rest_and_stamps_the_change(flag_path: Path) -> None:
    mode = flag_path.stat().st_mode
    token = FlagFile(flag_path).write(
        "new-checkout", {"state": "ENABLED", "defaultVariant": "on"}, {"state": "ENABLED", "defaultVariant": "off"}
    )
    document = json.loads(flag_path.read_text())
    assert document["flags"]["new-checkout"] == {
        **FLAGS["flags"]["new-checkout"], "defaultVariant": "off", "metadata": {CHANGE_KEY: token},
    }  # fmt: skip
    assert {k: v for k, v in document["flags"].items() if k != "new-checkout"} == {
        k: v for k, v in FLAGS["flags"].items() if k != "new-checkout"
    }
    assert document["metadata"] == FLAGS["metadata"]
    assert flag_path.stat().st_mode == mode
    assert [
        p.name for p in flag_path.parent.iterdir() if p.name.startswith(".flags.json.") and "lock" not in p.name
    ] == []


def test_a_reader_on_a_file_that_is_not_flags_says_so(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    path.write_text("{not json")
    with pytest.raises(FlagError, match="cannot read the flag file"):
        FeatureFlags(path).open()


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        pytest.param({"flag": "new-checkout"}, "needs a variant or a state", id="nothing-to-set"),
        pytest.param({"flag": "new checkout", "variant": "off"}, "is not a flag key", id="bad-key"),
        pytest.param({"flag": "new-checkout", "state": "OFF"}, "ENABLED or DISABLED", id="bad-state"),
    ],
)
def test_a_toggle_request_with_bad_parameters_is_refused(params: dict[str, Any], problem: str) -> None:
    with pytest.raises(InvalidRequest, match=problem):
        from_json({"kind": "toggle_flag", **params})


def test_a_toggle_request_round_trips_through_json_and_targets_the_flag() -> None:
    request = ToggleFlag("new-checkout", variant="off")
    assert from_json(request.as_json()) == request
    assert request.target.id == "FeatureFlag/new-checkout"
    assert request.tier == "medium"


@pytest.mark.parametrize("value", ["", None])
def test_an_empty_flag_source_turns_flag_actions_off(value: str | None) -> None:
    env = {"ROOTWARD_ACTIONS__FLAGS__SOURCE": value} if value is not None else {}
    assert load_config(environ=env).actions.flags.source is None


def test_an_approved_toggle_is_carried_out_and_verified(
    make_executor: MakeFlagExecutor, audit: AuditLog, flag_path: Path
) -> None:
    executor = make_executor()
    pending = executor.submit(ToggleFlag("new-checkout", variant="off"), Diagnosis("maybe checkout", 0.5))
    assert pending.approval_id is not None
    outcome = executor.approve(pending.approval_id, "alice")
    assert outcome.status == "succeeded", outcome.detail
    assert _flag(flag_path, "new-checkout")["defaultVariant"] == "off"
    assert "approved" in _kinds(audit, outcome.request_id)


class _RacingFile(FlagFile):
    """A flag file that someone else edits between the executor's reading and its write."""

    def write(self, key: str, expect: dict[str, Any], setting: dict[str, Any], change: str | None = None) -> str:
        FlagFile(self.path).write(key, expect, {**expect, "defaultVariant": "off"})  # an operator turns it off
        self.write = super().write  # type: ignore[method-assign]  # once
        return super().write(key, expect, setting, change)


def test_a_flag_changed_by_someone_else_midway_is_not_overwritten_and_the_failure_is_audited(
    make_executor: MakeFlagExecutor, audit: AuditLog, flags: FeatureFlags, flag_path: Path
) -> None:
    flags.file = _RacingFile(flag_path)
    outcome = make_executor().submit(ToggleFlag("new-checkout", state="DISABLED"), CONFIDENT)
    assert outcome.status == "failed"
    assert "someone else changed it" in outcome.detail
    assert outcome.detail.endswith("the change was not applied")
    assert _flag(flag_path, "new-checkout") | {"metadata": None} == {
        **FLAGS["flags"]["new-checkout"], "defaultVariant": "off", "metadata": None,
    }  # fmt: skip
    records = {r.kind: r.data for r in audit.records(request_id=outcome.request_id)}
    assert records["execute_failed"]["type"] == "FlagError"
    assert records["reconciled"] == {"state": "not applied"}


def test_stopping_rootward_mid_verification_records_it_and_leaves_the_change(
    make_executor: MakeFlagExecutor, audit: AuditLog, flag_path: Path
) -> None:
    """A change whose anomaly has not cleared when Rootward stops: the verification ends at once, audited as
    interrupted, the change left as it is (not rolled back on the way out), and stop() returns once it is recorded."""
    import threading

    executor = make_executor(anomaly_cleared=lambda _: False, verify_timeout_s=60.0)
    outcomes: list[Any] = []
    worker = threading.Thread(
        target=lambda: outcomes.append(executor.submit(ToggleFlag("new-checkout", variant="off"), CONFIDENT))
    )
    worker.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "executed" not in [r.kind for r in audit.records()]:
        time.sleep(0.02)
    executor.stop(timeout_s=10)
    worker.join(5)
    (outcome,) = outcomes
    assert outcome.status == "failed", outcome.detail
    assert "Rootward stopped while verifying" in outcome.detail
    assert _flag(flag_path, "new-checkout")["defaultVariant"] == "off"  # left as it is
    assert _kinds(audit, outcome.request_id)[-3:] == ["executed", "verification_interrupted", "outcome"]
    later = executor.submit(ToggleFlag("checkout-banner", variant="none"), CONFIDENT)  # after the stop: not made
    assert later.status == "failed", later.detail
    assert "Rootward is stopping" in later.detail
    assert _flag(flag_path, "checkout-banner")["defaultVariant"] == "sale"
    assert "not_run" in _kinds(audit, later.request_id)
