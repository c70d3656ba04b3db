"""Fixtures for the deployment tests: the rendered kustomizations, and a Kubernetes API (kmock) to apply them to."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes.client import ApiClient, Configuration

from deploy_files import BASE, GATEWAY, Doc
from kmock_server import KubeApi
from kustomize_reader import render


@pytest.fixture(scope="session")
def base() -> list[Doc]:
    """otel-config/deploy/base rendered: Rootward on every node (DaemonSet)."""
    return render(BASE)


@pytest.fixture(scope="session")
def gateway() -> list[Doc]:
    """otel-config/deploy/gateway rendered: Rootward replicas behind a Collector gateway (StatefulSet)."""
    return render(GATEWAY)


@pytest.fixture(params=["base", "gateway"])
def rendered(request: pytest.FixtureRequest) -> list[Doc]:
    """Each kustomization in turn, rendered."""
    docs: list[Doc] = request.getfixturevalue(request.param)
    return docs


@pytest.fixture
def kube() -> Iterator[KubeApi]:
    """A Kubernetes API emulator (kmock); its gaps are in ../shared/COMPONENTS.md."""
    api = KubeApi()
    try:
        api.start()
        yield api
    finally:
        api.stop()


@pytest.fixture
def kube_client(kube: KubeApi) -> Iterator[ApiClient]:
    """The official client, pointed at ``kube``."""
    client = ApiClient(Configuration(host=kube.url))
    try:
        yield client
    finally:
        client.close()
