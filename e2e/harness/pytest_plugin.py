"""pytest fixtures for tests that need a real API server: `control_plane`, `kube_api`, `namespace`.

Loaded from the root conftest (`pytest_plugins = ["e2e.harness.pytest_plugin"]`). The control plane
starts lazily, once per session, only when a test asks for it; unit-only runs pay nothing.
"""

from __future__ import annotations

import re
import secrets
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from e2e.harness.cluster import ControlPlane

_CLUSTER_FIXTURES = {"control_plane", "kube_api", "namespace"}


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker, and turn SIGTERM into a normal interrupt so fixtures tear down."""
    config.addinivalue_line("markers", "cluster: needs the loopback Kubernetes control plane (e2e.harness)")
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        def _on_term(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt(f"signal {signum}")

        try:
            signal.signal(signal.SIGTERM, _on_term)
        except ValueError:  # not the main thread (e.g. pytest run inside another tool)
            pass


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that use a cluster fixture are `cluster` tests even if they forgot the marker."""
    for item in items:
        if _CLUSTER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """One control plane per test session with one Ready KWOK node and the Istio/Gateway API CRDs.

    Its env file lives in the session's tmp dir (not `.e2e/env`) so a test run never clobbers the
    cluster a developer started with `make cluster-up`.
    """
    env_file = tmp_path_factory.mktemp("control-plane") / "env"
    cp = ControlPlane(nodes=1, env_file=env_file)
    with cp:
        yield cp


@pytest.fixture(scope="session")
def kube_api(control_plane: ControlPlane) -> Iterator[Any]:
    """A `kubernetes.client.ApiClient` authenticated as the cluster admin."""
    api = control_plane.api_client()
    try:
        yield api
    finally:
        api.close()


def _namespace_name(nodeid: str) -> str:
    base = re.sub(r"[^a-z0-9-]+", "-", nodeid.rsplit("::", 1)[-1].lower()).strip("-")[:40].strip("-")
    return f"t-{base or 'test'}-{secrets.token_hex(3)}"


@pytest.fixture
def namespace(kube_api: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test (name derived from the test), deleted afterwards without waiting."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    core = client.CoreV1Api(kube_api)
    name = _namespace_name(request.node.nodeid)
    core.create_namespace({"apiVersion": "v1", "kind": "Namespace",
                           "metadata": {"name": name, "labels": {"understudy.e2e/test": "true"}}})
    try:
        yield name
    finally:
        try:
            core.delete_namespace(name, propagation_policy="Background")
        except ApiException as err:
            if err.status != 404:
                raise
