"""The public names each package re-exports are deliberate (as in httpx's tests/test_exported_members.py)."""

from __future__ import annotations

import rootward
import rootward.receiver


def test_rootward_exports_only_its_version() -> None:
    assert rootward.__all__ == ["__version__"]


def test_receiver_exports_the_component_queue_and_decoders() -> None:
    assert rootward.receiver.__all__ == ["BatchQueue", "LogDecoder", "MetricDecoder", "Receiver", "TraceDecoder"]
    for name in rootward.receiver.__all__:
        assert getattr(rootward.receiver, name).__module__.startswith("rootward.receiver.")


def test_actions_exports_the_executor_its_requests_and_the_client_wrapper() -> None:
    import rootward.actions

    assert rootward.actions.__all__ == [
        "REGISTRY", "ActionRequest", "Collect", "Cordon", "Diagnosis", "Drain", "Executor", "FeatureFlags", "Kube",
        "Outcome", "PatchResources", "RestartPod", "Rollback", "RolloutRestart", "Scale", "ToggleFlag", "from_json",
    ]  # fmt: skip
    for name in rootward.actions.__all__[1:]:
        assert getattr(rootward.actions, name).__module__.startswith("rootward.actions.")


def test_policies_exports_the_engine_the_audit_log_and_approvals() -> None:
    import rootward.policies

    assert rootward.policies.__all__ == ["Approval", "Approvals", "AuditLog", "Decision", "PolicyEngine"]
    for name in rootward.policies.__all__:
        assert getattr(rootward.policies, name).__module__.startswith("rootward.policies.")


def test_agent_exports_the_context_the_reasoner_the_diagnoser_and_the_schema() -> None:
    import rootward.agent

    assert rootward.agent.__all__ == [
        "ContextBuilder", "Diagnoser", "Diagnosis", "Evidence", "GraphReasoner", "GraphReasonerSettings",
        "Hypothesis", "IncidentContext", "Reasoner", "SeriesWindow",
    ]  # fmt: skip
    for name in rootward.agent.__all__:
        assert getattr(rootward.agent, name).__module__.startswith("rootward.agent.")
