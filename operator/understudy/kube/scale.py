"""Set a Deployment's replicas only if nobody else moved them since the decision was made.

A person, an HPA or a second operator may change spec.replicas between the read the decision was based
on and the write. A JSON patch whose `test` op checks the expected value makes the write conditional on
the one field that matters, without the false conflicts a resourceVersion guard would raise on every
status update the Deployment controller writes.
"""
from __future__ import annotations

from kubernetes.client import AppsV1Api


def set_replicas(apps: AppsV1Api, namespace: str, name: str, replicas: int, expected: int | None) -> None:
    """Patch spec.replicas to `replicas`, only while it is `expected` (when given).

    Raises ApiException; a 422 means the test op failed: someone else changed the replicas.
    """
    patch: list[dict[str, object]] = []
    if expected is not None:
        patch.append({"op": "test", "path": "/spec/replicas", "value": expected})
    patch.append({"op": "replace", "path": "/spec/replicas", "value": replicas})
    apps.patch_namespaced_deployment(name, namespace, patch)
