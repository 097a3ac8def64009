"""A Deployment's replica count, changed only if it still holds what the caller last saw."""
from __future__ import annotations

from kubernetes.client import AppsV1Api


def set_replicas(apps: AppsV1Api, namespace: str, name: str, replicas: int, expected: int | None) -> None:
    """Set spec.replicas with one JSON patch; with `expected`, a `test` op makes the write conditional.

    Raises ApiException; a 422 means the test failed: someone else (a person, an HPA) changed the count.
    """
    ops: list[dict[str, object]] = []
    if expected is not None:
        ops.append({"op": "test", "path": "/spec/replicas", "value": expected})
    ops.append({"op": "replace", "path": "/spec/replicas", "value": replicas})
    apps.patch_namespaced_deployment(name, namespace, ops, _content_type="application/json-patch+json")
