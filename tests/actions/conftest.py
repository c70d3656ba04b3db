"""A kmock Kubernetes API (cluster.py) on a free port, the official client on it, and executors over it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from cluster import MakeExecutor, RunningCluster, running_cluster

from rootward.actions import Executor, Kube
from rootward.actions.executor import Mode
from rootward.policies import Approvals, AuditLog, PolicyEngine


@pytest.fixture
def cluster() -> Iterator[RunningCluster]:
    with running_cluster() as running:
        yield running


@pytest.fixture
def kube(cluster: RunningCluster) -> Iterator[Kube]:
    client = kubernetes.client.ApiClient(kubernetes.client.Configuration(host=cluster.url))
    k = Kube(client, request_timeout_s=5)
    yield k
    k.close()


@pytest.fixture(scope="session")
def policy() -> PolicyEngine:
    return PolicyEngine()


@pytest.fixture
def audit(tmp_path: Path) -> Iterator[AuditLog]:
    with AuditLog(tmp_path / "audit.db") as log:
        yield log


@pytest.fixture
def approvals(tmp_path: Path) -> Iterator[Approvals]:
    a = Approvals(tmp_path / "audit.db", ttl_s=60)
    yield a
    a.close()


@pytest.fixture
def make_executor(kube: Kube, policy: PolicyEngine, audit: AuditLog, approvals: Approvals) -> MakeExecutor:
    def make(mode: Mode = "autonomous", **kw: Any) -> Executor:
        options: dict[str, Any] = {"verify_timeout_s": 2.0, "poll_interval_s": 0.05, **kw}
        return Executor(kube, policy, audit, approvals, mode=mode, **options)

    return make
