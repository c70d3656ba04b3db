"""The tests' view of the simulated cluster (rootward/simcluster.py), plus helpers of their own."""

from __future__ import annotations

from collections.abc import Callable

from rootward.actions import Executor, Kube
from rootward.policies import AuditLog
from rootward.simcluster import Cluster, RunningCluster, deploy, running_cluster

__all__ = ["Cluster", "MakeExecutor", "RunningCluster", "deploy", "kinds", "memory_limit", "running_cluster"]

MakeExecutor = Callable[..., Executor]


def memory_limit(kube: Kube, name: str, namespace: str = "shop") -> str:
    containers = kube.workload("Deployment", namespace, name)["spec"]["template"]["spec"]["containers"]
    return str(containers[0]["resources"]["limits"]["memory"])


def kinds(audit: AuditLog, request_id: str) -> list[str]:
    return [r.kind for r in audit.records(request_id=request_id)]
