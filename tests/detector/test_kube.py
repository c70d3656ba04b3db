"""Kubernetes failure signals and changes, read straight from k8sobjects / audit log records: unit cases through
the real log decoder, and an OOMKilled pod after a rollout sent through the OTel SDK's OTLP log exporter."""

from __future__ import annotations

import json
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from test_kube_metrics import batch

from rootward.app import App
from rootward.clock import ManualClock
from rootward.config import LOCAL_PORTS, NOTHING_ON_DISK, load_config
from rootward.detector.detector import Anomaly
from rootward.detector.kube import FAILURE_REASONS, Change, KubeSignals

from k8s_bodies import log_bodies


def pod(name: str, owner: str, status: dict[str, Any]) -> dict[str, Any]:
    meta = {"name": name, "namespace": "shop", "ownerReferences": [{"kind": "ReplicaSet", "name": owner}]}
    return {"kind": "Pod", "metadata": meta, "spec": {"nodeName": "node-a"}, "status": status}


def replicaset(name: str, revision: int) -> dict[str, Any]:
    meta = {
        "name": name,
        "namespace": "shop",
        "annotations": {"deployment.kubernetes.io/revision": str(revision)},
        "ownerReferences": [{"kind": "Deployment", "name": "cart"}],
    }
    return {"kind": "ReplicaSet", "metadata": meta}


OOM = {"containerStatuses": [{"name": "server", "lastState": {"terminated": {"reason": "OOMKilled"}}}]}


class Sink:
    def __init__(self) -> None:
        self.anomalies: list[Anomaly] = []
        self.changes: list[Change] = []


def signals() -> tuple[KubeSignals, Sink]:
    sink = Sink()
    return KubeSignals(lambda _, a: sink.anomalies.extend(a), sink.changes.append, ManualClock(100.0)), sink


def test_failure_events_and_pod_states_become_anomalies_at_once() -> None:
    kube, sink = signals()
    backoff = {
        "kind": "Event",
        "reason": "BackOff",
        "count": 7,
        "involvedObject": {"kind": "Pod", "name": "cart-1", "namespace": "shop"},
    }
    pressure = {"kind": "Event", "reason": "NodeHasMemoryPressure", "regarding": {"kind": "Node", "name": "node-a"}}
    normal = {"kind": "Event", "reason": "Scheduled", "involvedObject": {"kind": "Pod", "name": "cart-1"}}
    waiting = {"containerStatuses": [{"name": "s", "state": {"waiting": {"reason": "ImagePullBackOff"}}}]}
    kube.consume_logs(log_bodies({"type": "ADDED", "object": backoff}, pressure, normal, pod("cart-2", "rs", OOM)))
    kube.consume_logs(log_bodies(json.dumps(pod("cart-3", "rs", waiting))))  # a JSON line (filelog) works too
    got = {(a.entity, a.signal, a.value) for a in sink.anomalies}
    assert got == {
        ("pod:shop/cart-1", "k8s:CrashLoopBackOff", 7.0),
        ("node:node-a", "k8s:NodePressure", 1.0),
        ("pod:shop/cart-2", "k8s:OOMKilled", 1.0),
        ("pod:shop/cart-3", "k8s:ImagePullBackOff", 1.0),
    }


@pytest.mark.parametrize(("reason", "signal"), sorted(FAILURE_REASONS.items()))
def test_every_known_failure_event_reason_is_an_anomaly_on_its_object(reason: str, signal: str) -> None:
    kube, sink = signals()
    event = {"kind": "Event", "reason": reason, "regarding": {"kind": "Pod", "name": "cart-1", "namespace": "shop"}}
    kube.consume_logs(log_bodies({"type": "ADDED", "object": event}))
    assert [(a.entity, a.signal, a.value) for a in sink.anomalies] == [("pod:shop/cart-1", f"k8s:{signal}", 1.0)]


def test_an_init_container_running_past_pod_pending_s_in_a_pending_pod_is_stuck() -> None:
    kube, sink = signals()  # the clock reads 100 s; pending_s is 300

    def init(started: str, phase: str = "Pending") -> dict[str, Any]:
        running = {"name": "migrate", "state": {"running": {"startedAt": started}}}
        return {"phase": phase, "initContainerStatuses": [running]}

    sidecar = pod("cart-5", "rs", init("1969-12-31T23:55:00Z"))  # a native sidecar runs for the pod's life
    sidecar["spec"]["initContainers"] = [{"name": "migrate", "restartPolicy": "Always"}]
    kube.consume_logs(
        log_bodies(
            sidecar,
            pod("cart-1", "rs", init("1969-12-31T23:55:00Z")),  # 400 s ago
            pod("cart-2", "rs", init("1970-01-01T00:00:00Z")),  # 100 s ago: still starting
            pod("cart-3", "rs", init("1969-12-31T23:55:00Z", phase="Running")),  # done (a stale status)
            pod("cart-4", "rs", init("not a time")),
        )
    )
    assert [(a.entity, a.signal) for a in sink.anomalies] == [("pod:shop/cart-1", "k8s:InitContainerStuck")]


def test_a_deleted_failure_event_is_old_news() -> None:
    kube, sink = signals()
    backoff = {"kind": "Event", "reason": "BackOff", "involvedObject": {"kind": "Pod", "name": "c", "namespace": "s"}}
    kube.consume_logs(log_bodies({"type": "DELETED", "object": backoff}))
    assert sink.anomalies == []


def test_the_container_to_give_more_memory_is_the_one_killed_else_the_one_at_its_limit() -> None:
    """cart-1's server was OOM-killed and restarted small; its istio-proxy is fuller now but was not killed."""
    kube, _ = signals()
    gib = 2**30

    def limits(name: str, server: float, proxy: float) -> None:
        for container, limit, used in (("server", gib, server), ("istio-proxy", gib // 4, proxy)):
            resource = {"k8s.pod.name": name, "k8s.namespace.name": "shop", "k8s.container.name": container}
            kube.consume_metrics(
                batch(resource, ("k8s.container.memory_limit", limit), ("container.memory.working_set", used))
            )

    limits("cart-1", 0.1 * gib, 0.2 * gib)
    killed = {"containerStatuses": [{"name": "server", "lastState": {"terminated": {"reason": "OOMKilled"}}}]}
    kube.consume_logs(log_bodies(pod("cart-1", "rs", killed)))
    assert kube.memory_limit("pod:shop/cart-1") == ("server", gib)
    limits("cart-2", 0.95 * gib, 0.1 * gib)  # no kill seen: the one at its limit
    assert kube.memory_limit("pod:shop/cart-2") == ("server", gib)
    limits("cart-3", 0.5 * gib, 0.1 * gib)  # neither: unknown
    assert kube.memory_limit("pod:shop/cart-3") is None
    assert kube.memory_limit("pod:shop/nope") is None


def test_a_new_revision_is_a_rollout_and_audit_writes_are_changes_with_who() -> None:
    kube, sink = signals()
    kube.consume_logs(log_bodies(replicaset("cart-7d9f", 3)))
    kube.consume_logs(log_bodies(replicaset("cart-7d9f", 3), replicaset("cart-8e0a", 4)))
    audit = {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "stage": "ResponseComplete",
        "verb": "patch",
        "user": {"username": "alice@example.com"},
        "objectRef": {"resource": "deployments", "namespace": "shop", "name": "cart"},
    }
    read = {**audit, "verb": "get"}
    kube.consume_logs(log_bodies(audit, read, "plain text line", {"kind": "ConfigMap"}))
    stamped = {**audit, "requestReceivedTimestamp": "1970-01-01T00:01:01.000000Z"}  # the time the request came
    stamped_later = {**stamped, "stageTimestamp": "1970-01-01T00:01:10.250000Z"}  # and completed: this one counts
    skewed = {**audit, "stageTimestamp": "1970-01-01T01:00:00Z"}  # ahead of now: now
    unreadable = {**audit, "stageTimestamp": "yesterday", "requestReceivedTimestamp": "1970-01-01T00:01:00"}  # naive
    lease = {**audit, "objectRef": {"resource": "leases", "namespace": "kube-node-lease", "name": "node-a"}}
    status = {**audit, "objectRef": {**audit["objectRef"], "subresource": "status"}}  # type: ignore[dict-item]
    refused = {**audit, "responseStatus": {"metadata": {}, "code": 403}}
    kube.consume_logs(log_bodies(stamped, stamped_later, skewed, unreadable, lease, status, refused))
    assert sink.changes == [
        Change(100.0, "workload:shop/deployment/cart", "rollout", "revision 4"),
        Change(100.0, "workload:shop/deployment/cart", "patch", "", "alice@example.com"),
        Change(61.0, "workload:shop/deployment/cart", "patch", "", "alice@example.com"),
        Change(70.25, "workload:shop/deployment/cart", "patch", "", "alice@example.com"),
        Change(100.0, "workload:shop/deployment/cart", "patch", "", "alice@example.com"),
        Change(100.0, "workload:shop/deployment/cart", "patch", "", "alice@example.com"),
    ]
    assert sink.anomalies == []


def test_an_oomkilled_pod_after_a_rollout_opens_an_incident_linked_to_the_rollout() -> None:
    local = [*LOCAL_PORTS, *NOTHING_ON_DISK]
    clock = ManualClock(1_000.0)
    app = App(load_config(environ={}, overrides=local), clock=clock)
    app.start()
    provider = LoggerProvider()
    exporter = OTLPLogExporter(endpoint=f"127.0.0.1:{app.receiver.grpc.port}", insecure=True)
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    logger = provider.get_logger("k8sobjects")
    try:
        for body in (replicaset("cart-7d9f", 3), replicaset("cart-8e0a", 4)):  # the rollout
            logger.emit(body={"type": "MODIFIED", "object": body})
        app.receiver.queue.wait_idle()
        clock.advance(60)
        logger.emit(body={"type": "MODIFIED", "object": pod("cart-8e0a-x1", "cart-8e0a", OOM)})
        app.receiver.queue.wait_idle()
        (incident,) = app.incidents.listed()
        assert ("pod:shop/cart-8e0a-x1", "k8s:OOMKilled") in incident.anomalies
        assert incident.severity == "critical"
        assert [(c.entity, c.kind) for c in incident.changes] == [("workload:shop/deployment/cart", "rollout")]
    finally:
        provider.shutdown()
        app.shutdown()


def test_a_crashlooping_pod_opens_an_incident_at_once_through_the_sdk_exporter() -> None:
    clock = ManualClock(1_000.0)
    app = App(load_config(environ={}, overrides=[*LOCAL_PORTS, *NOTHING_ON_DISK]), clock=clock)
    app.start()
    provider = LoggerProvider()
    exporter = OTLPLogExporter(endpoint=f"127.0.0.1:{app.receiver.grpc.port}", insecure=True)
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    backoff = {
        "kind": "Event",
        "type": "Warning",
        "reason": "BackOff",
        "message": "Back-off restarting failed container server in pod cart-7d9f-x1",
        "count": 5,
        "involvedObject": {"kind": "Pod", "name": "cart-7d9f-x1", "namespace": "shop"},
    }
    try:
        provider.get_logger("k8sobjects").emit(body={"type": "ADDED", "object": backoff})
        app.receiver.queue.wait_idle()
        (incident,) = app.incidents.listed()
        assert incident.status == "open"
        assert ("pod:shop/cart-7d9f-x1", "k8s:CrashLoopBackOff") in incident.anomalies
        assert incident.severity == "critical"
    finally:
        provider.shutdown()
        app.shutdown()
