"""From a diagnosis to a proposed action: the table in agent/propose.py, over a graph built from real resources;
and the responder that hands it on, when the executor fails or cannot keep up."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from rootward.actions.executor import Diagnosis as Reason
from rootward.actions.executor import Outcome
from rootward.actions.requests import (
    ActionRequest,
    Collect,
    Cordon,
    Drain,
    PatchResources,
    RestartPod,
    Rollback,
    RolloutRestart,
)
from rootward.agent.propose import propose
from rootward.agent.respond import Responder
from rootward.agent.schema import Diagnosis, Evidence, Hypothesis
from rootward.detector.incidents import Incident
from rootward.receiver import TraceDecoder
from rootward.topology import TopologyGraph


@pytest.fixture(scope="module")
def graph() -> TopologyGraph:
    """cart: pods of Deployment cart (resource attributes, as the Collector's k8sattributes sets them); ledger: a
    pod with no known owner."""
    g = TopologyGraph()
    req = ExportTraceServiceRequest()
    for service, pod, deployment in (("cart", "cart-7d9f-x1", "cart"), ("ledger", "ledger-0", "")):
        rs = req.resource_spans.add()
        attrs = {
            "service.name": service,
            "service.namespace": "shop",
            "k8s.namespace.name": "shop",
            "k8s.pod.name": pod,
        }
        if deployment:
            attrs["k8s.deployment.name"] = deployment
        for key, value in attrs.items():
            rs.resource.attributes.add(key=key, value=AnyValue(string_value=value))
        rs.scope_spans.add().spans.add(trace_id=b"\x01" * 16, span_id=bytes([len(pod)]) * 8, kind=2, name="op")  # type: ignore[arg-type]
    g.consume_traces(TraceDecoder().decode(req.SerializeToString()).batch)
    return g


def diagnosis(entity: str, kind: str, fault: str, confidence: float = 0.8) -> Diagnosis:
    h = Hypothesis(entity=entity, kind=kind, fault_class=fault, confidence=confidence)  # type: ignore[arg-type]
    return Diagnosis(incident="inc-1", reasoner="test", at=0.0, hypotheses=[h])


@pytest.mark.parametrize(
    ("entity", "kind", "fault", "expected"),
    [
        ("service:shop/cart", "service", "bad_rollout", Rollback("shop", "cart")),
        ("service:shop/cart", "service", "resource_saturation", RolloutRestart("shop", "cart")),
        ("pod:shop/cart-7d9f-x1", "pod", "code_error", RolloutRestart("shop", "cart")),
        ("service:shop/ledger", "service", "code_error", RestartPod("shop", "ledger-0")),
        ("service:shop/cart", "service", "network_delay", Collect("shop", "cart-7d9f-x1")),
        ("node:node-a", "node", "node_problem", Cordon("node-a")),
        ("database:postgresql/db", "peer", "dependency_failure", None),
        ("service:shop/unknown", "service", "code_error", None),
    ],
)
def test_the_top_hypothesis_gives_one_request(
    graph: TopologyGraph, entity: str, kind: str, fault: str, expected: object
) -> None:
    assert propose(diagnosis(entity, kind, fault), graph) == expected


class Sizes:
    """What KubeSignals.memory_limit answers (its own test reads it from Pod objects and k8s_cluster metrics)."""

    def __init__(self, container: str, limit: float) -> None:
        self.known = {"pod:shop/cart-7d9f-x1": (container, limit)}

    def memory_limit(self, pod: str) -> tuple[str, float] | None:
        return self.known.get(pod)


MIB, GIB = 2**20, 2**30
POD = "pod:shop/cart-7d9f-x1"
SERVER = Sizes("server", 512 * MIB)


@pytest.mark.parametrize(
    ("entity", "kind", "fault", "evidence", "sizes", "expected"),
    [
        pytest.param(
            "service:shop/cart", "service", "resource_saturation", [(POD, "k8s:OOMKilled")], SERVER,
            PatchResources("shop", "cart", container="server", limits={"memory": "768Mi"}), id="oom-x1.5",
        ),
        pytest.param(
            POD, "pod", "resource_saturation", [(POD, "k8s:MemoryNearLimit")], Sizes("server", 100 * MIB + 1),
            PatchResources("shop", "cart", container="server", limits={"memory": "151Mi"}), id="rounded-up-to-a-mib",
        ),
        pytest.param(
            "service:shop/cart", "service", "resource_saturation", [(POD, "k8s:OOMKilled")], Sizes("server", 60 * GIB),
            PatchResources("shop", "cart", container="server", limits={"memory": "65536Mi"}), id="capped",
        ),
        pytest.param(
            "service:shop/cart", "service", "resource_saturation", [(POD, "k8s:OOMKilled")], Sizes("server", 64 * GIB),
            RolloutRestart("shop", "cart"), id="at-the-cap-restart",
        ),
        pytest.param(
            "service:shop/cart", "service", "resource_saturation", [("pod:shop/cart-other", "k8s:OOMKilled")],
            SERVER, RolloutRestart("shop", "cart"), id="limit-unknown-restart",
        ),
        pytest.param(
            "service:shop/cart", "service", "resource_saturation", [("pod:shop/ledger-0", "k8s:OOMKilled")],
            Sizes("server", 512 * MIB), RolloutRestart("shop", "cart"), id="another-workloads-pod",
        ),
        pytest.param(
            "service:shop/cart", "service", "resource_saturation", [("service:shop/cart", "k8s.memory.limit_ratio")],
            SERVER, RolloutRestart("shop", "cart"), id="a-memory-series-is-no-oom",
        ),
        pytest.param(
            "service:shop/cart", "service", "resource_saturation", [(POD, "op:k8s:OOMKilled.p95")], SERVER,
            RolloutRestart("shop", "cart"), id="a-senders-span-name-is-no-oom",
        ),
        pytest.param(
            "service:shop/cart", "service", "code_error", [(POD, "k8s:OOMKilled")], SERVER,
            RolloutRestart("shop", "cart"), id="code-error-no-resize",
        ),
        pytest.param(
            "node:node-a", "node", "node_problem", [("node:node-a", "k8s:NodeNotReady")], None, Drain("node-a"),
            id="node-down-drain",
        ),
        pytest.param(
            "node:node-a", "node", "node_problem", [("node:node-a", "k8s.node.cpu.usage")], None, Cordon("node-a"),
            id="busy-cordon",
        ),
        pytest.param(
            "node:node-a", "node", "node_problem", [("node:node-a", "in:k8s:NodeNotReady.latency")], None,
            Cordon("node-a"), id="a-callers-name-is-no-node-down",
        ),
    ],
)  # fmt: skip
def test_a_memory_raise_and_a_drain_follow_the_evidence_and_the_current_size(
    graph: TopologyGraph,
    entity: str,
    kind: str,
    fault: str,
    evidence: list[tuple[str, str]],
    sizes: Sizes | None,
    expected: object,
) -> None:
    found = [Evidence(entity=e, signal=s, value=1.0, expected=0.0, score=10.0) for e, s in evidence]
    h = Hypothesis(entity=entity, kind=kind, fault_class=fault, confidence=0.8, evidence=found)  # type: ignore[arg-type]
    assert propose(Diagnosis(incident="inc-1", reasoner="test", at=0.0, hypotheses=[h]), graph, sizes=sizes) == expected


def test_nothing_below_the_confidence_floor_or_for_names_kubernetes_refuses(graph: TopologyGraph) -> None:
    assert propose(diagnosis("service:shop/cart", "service", "code_error", 0.1), graph) is None
    assert propose(diagnosis("node:Not_A_Name", "node", "node_problem"), graph) is None
    assert propose(Diagnosis(incident="inc-1", reasoner="test", at=0.0), graph) is None


def incident_with(entity: str, number: int = 1) -> Incident:
    incident = Incident(f"inc-{number}", 0.0, 0.0)
    incident.diagnosis = diagnosis(entity, "service", "code_error").model_dump(mode="json")
    return incident


def test_an_executor_failure_is_kept_on_the_incident_and_counted(graph: TopologyGraph) -> None:
    counts: list[tuple[str, str]] = []

    def broken(request: ActionRequest, reason: Reason) -> Outcome:
        raise RuntimeError("executor bug")

    responder = Responder(broken, graph, counted=lambda kind, status: counts.append((kind, status)))
    incident = incident_with("service:shop/cart")
    responder.incident_changed(incident, "opened")
    responder.incident_changed(incident, "updated")  # one action per episode
    responder.flush()
    responder.close()
    assert incident.action == {
        "request": RolloutRestart("shop", "cart").as_json(),
        "confidence": 0.8,  # the top hypothesis' behind it
        "because": "code_error at service:shop/cart",
        "evidence": [],
        "status": "failed",
        "detail": "RuntimeError",
    }
    assert counts == [("rollout_restart", "failed")]


def test_a_full_responder_queue_drops_visibly(graph: TopologyGraph) -> None:
    counts: list[tuple[str, str]] = []
    release = threading.Event()

    def stuck(request: ActionRequest, reason: Reason) -> Outcome:
        release.wait(10)
        return Outcome("r", "dry_run", "dry run only")

    responder = Responder(
        stuck, graph, queue_size=1, counted=lambda kind, status: counts.append((kind, status)), workers=1
    )
    incidents = [incident_with("service:shop/cart", n) for n in range(4)]  # one in the executor, one queued
    for incident in incidents:
        responder.incident_changed(incident, "opened")
    assert ("rollout_restart", "dropped") in counts
    assert any(i.action is not None and i.action["status"] == "dropped" for i in incidents)
    release.set()
    responder.flush()
    responder.close()


def test_a_submission_held_by_the_executor_does_not_hold_back_the_next_incidents(graph: TopologyGraph) -> None:
    release = threading.Event()

    def executor(request: ActionRequest, reason: Reason) -> Outcome:
        if reason.incident_id == "inc-0":  # a change under verification
            release.wait(10)
            return Outcome("r0", "succeeded", "verified")
        return Outcome("r1", "pending_approval", "waits for a human", approval_id="ap-1")

    asked: list[str] = []
    responder = Responder(executor, graph, pending=lambda incident, approval, action: asked.append(approval), workers=2)
    first, second = incident_with("service:shop/cart", 0), incident_with("service:shop/cart", 1)
    responder.incident_changed(first, "opened")
    responder.incident_changed(second, "opened")
    deadline = time.monotonic() + 10
    while not asked and time.monotonic() < deadline:
        time.sleep(0.01)
    assert asked == ["ap-1"]
    assert second.action is not None
    assert second.action["status"] == "pending_approval"
    assert first.action is not None
    assert first.action["status"] == "submitted"
    release.set()
    responder.flush()
    responder.close()
    assert first.action["status"] == "succeeded"


def test_a_collection_does_not_wait_behind_changes_queued_for_a_verdict(graph: TopologyGraph) -> None:
    release = threading.Event()

    def executor(request: ActionRequest, reason: Reason) -> Outcome:
        if not request.read_only:  # each waits for the executor's one change in flight
            release.wait(10)
            return Outcome("r", "succeeded", "verified")
        return Outcome("c", "succeeded", "collected")

    responder = Responder(executor, graph, workers=2)
    changes = [incident_with("service:shop/cart", n) for n in range(3)]  # more than the workers
    for incident in changes:
        responder.incident_changed(incident, "opened")
    collect = Incident("inc-collect", 0.0, 0.0)
    collect.diagnosis = diagnosis("service:shop/cart", "service", "network_delay").model_dump(mode="json")
    responder.incident_changed(collect, "opened")
    deadline = time.monotonic() + 10
    while (collect.action or {}).get("status") != "succeeded" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert collect.action is not None
    assert collect.action["status"] == "succeeded"
    assert [(i.action or {}).get("status") for i in changes] == ["submitted"] * 3
    release.set()
    responder.flush()
    responder.close()
    assert [(i.action or {}).get("status") for i in changes] == ["succeeded"] * 3


def responded(submit: Callable[[ActionRequest, Reason], Outcome], graph: TopologyGraph, incident_id: str) -> Incident:
    """An incident opened with a network-delay diagnosis of cart, after the responder handed its action to
    ``submit`` and kept how it ended."""
    responder = Responder(submit, graph)
    incident = Incident(incident_id, 0.0, 0.0)
    incident.diagnosis = diagnosis("service:shop/cart", "service", "network_delay").model_dump(mode="json")
    responder.incident_changed(incident, "opened")
    responder.flush()
    responder.close()
    return incident


def test_what_a_collection_read_is_kept_on_the_incident_bounded_and_redacted(graph: TopologyGraph) -> None:
    def collect(request: ActionRequest, reason: Reason) -> Outcome:
        result = {
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "False", "reason": "x"}]},
            "events": [{"reason": "Unhealthy", "message": "probe failed: token=abcdef123456", "type": "Warning"}],
            "logs": {"cart": "old line\n" * 1000 + "login password=hunter2 failed\n"},
        }
        return Outcome("act-1", "succeeded", "collected", result=result)

    incident = responded(collect, graph, "inc-1")
    assert incident.action is not None
    collected = incident.action["collected"]
    assert collected["phase"] == "Running"
    assert collected["conditions"] == [{"type": "Ready", "status": "False", "reason": "x"}]
    assert len(collected["logs"]["cart"]) <= 4000
    assert collected["logs"]["cart"].endswith("login password=[REDACTED:api_key] failed\n")  # the newest lines
    assert "abcdef123456" not in str(collected["events"])


def test_a_dry_runs_plan_to_collect_is_not_shown_as_collected(graph: TopologyGraph) -> None:
    def plan(request: ActionRequest, reason: Reason) -> Outcome:
        return Outcome("act-2", "dry_run", "dry run only", result={"would_read": "shop/cart-7d9f-x1"})

    incident = responded(plan, graph, "inc-2")
    assert incident.action is not None
    assert incident.action["status"] == "dry_run"
    assert "collected" not in incident.action
