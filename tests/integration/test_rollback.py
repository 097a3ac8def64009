"""Deployment rollback against a real API server and kube-controller-manager (which numbers revisions)."""
from __future__ import annotations

import time
from typing import Any, Callable
from urllib.parse import urlsplit

import pytest
from kubernetes.client import ApiClient, AppsV1Api

from understudy.rollback import current_revision, rollback_to_revision
from understudy.rollback.deployment import HASH_LABEL, REVISION_ANNOTATION

NAME = "model-large"
TIMEOUT = 60.0


class Interleaving(ApiClient):
    """A real client that lets another writer change the Deployment right after our first GET of it."""

    def __init__(self, base: ApiClient, path_suffix: str, concurrent: Callable[[], None]) -> None:
        super().__init__(base.configuration)
        self.path_suffix = path_suffix
        self.concurrent = concurrent
        self.remaining = 1
        self.patch_statuses: list[int] = []

    def call_api(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        response = super().call_api(method, url, *args, **kwargs)
        ours = urlsplit(url).path.endswith(self.path_suffix)
        if ours and method == "PATCH":
            self.patch_statuses.append(response.status)
        if ours and method == "GET" and self.remaining > 0:
            self.remaining -= 1
            self.concurrent()
        return response


def wait_for(what: str, probe: Callable[[], Any]) -> Any:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {TIMEOUT}s waiting for {what}")


def wait_for_revision(apps: AppsV1Api, namespace: str, revision: str) -> None:
    """Until the controller has observed the latest spec and numbered it `revision`."""
    def done() -> bool:
        d = apps.read_namespaced_deployment(NAME, namespace)
        return (
            d.status.observed_generation == d.metadata.generation
            and (d.metadata.annotations or {}).get(REVISION_ANNOTATION) == revision
        )

    wait_for(f"revision {revision}", done)


def replica_set_template(apps: AppsV1Api, namespace: str, revision: str) -> tuple[str, dict[str, Any]]:
    """(name, pod template without the hash label) of the Deployment's ReplicaSet of `revision`."""
    for rs in apps.list_namespaced_replica_set(namespace).items:
        if (rs.metadata.annotations or {}).get(REVISION_ANNOTATION) == revision:
            return rs.metadata.name, without_hash(apps.api_client.sanitize_for_serialization(rs.spec.template))
    raise AssertionError(f"no ReplicaSet of revision {revision}")


def without_hash(template: dict[str, Any]) -> dict[str, Any]:
    labels = {k: v for k, v in template["metadata"]["labels"].items() if k != HASH_LABEL}
    return {**template, "metadata": {**template["metadata"], "labels": labels}}


def deployment_template(apps: AppsV1Api, namespace: str) -> dict[str, Any]:
    d = apps.read_namespaced_deployment(NAME, namespace)
    return apps.api_client.sanitize_for_serialization(d.spec.template)


def set_image(apps: AppsV1Api, namespace: str, image: str) -> None:
    apps.patch_namespaced_deployment(NAME, namespace, [
        {"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": image},
    ])


@pytest.fixture
def apps(kube_api: ApiClient, namespace: str) -> AppsV1Api:
    """A Deployment with two revisions: 1 runs model:v1, 2 (current) runs model:v2."""
    apps = AppsV1Api(kube_api)
    labels = {"app": NAME}
    apps.create_namespaced_deployment(namespace, {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": NAME, "annotations": {"team": "ml"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": {"model.version": "v1"}},
                "spec": {"containers": [{"name": "server", "image": "model:v1"}]},
            },
        },
    })
    wait_for_revision(apps, namespace, "1")
    set_image(apps, namespace, "model:v2")
    wait_for_revision(apps, namespace, "2")
    return apps


def test_current_revision(apps: AppsV1Api, namespace: str) -> None:
    assert current_revision(apps, namespace, NAME) == "2"


def test_rollback_to_revision_1_restores_its_template_as_a_new_revision(apps: AppsV1Api, namespace: str) -> None:
    rs1, template1 = replica_set_template(apps, namespace, "1")
    assert deployment_template(apps, namespace) != template1

    result = rollback_to_revision(apps, namespace, NAME, "1")

    assert (result.rolled_back, result.reason, result.previous_revision) == (True, "RolledBack", "2")
    assert deployment_template(apps, namespace) == template1
    assert HASH_LABEL not in deployment_template(apps, namespace)["metadata"]["labels"]
    wait_for_revision(apps, namespace, "3")
    assert current_revision(apps, namespace, NAME) == "3"
    # like kubectl: the controller adopts revision 1's ReplicaSet again and renumbers it
    assert replica_set_template(apps, namespace, "3") == (rs1, template1)
    annotations = apps.read_namespaced_deployment(NAME, namespace).metadata.annotations
    assert annotations["team"] == "ml"

    again = rollback_to_revision(apps, namespace, NAME, "1")
    assert (again.rolled_back, again.reason) == (False, "RevisionNotFound"), "revision 1 became 3"


def spec_and_annotations(apps: AppsV1Api, namespace: str) -> tuple[int, dict[str, str]]:
    """What a rollback writes: any spec write bumps the generation; annotations do not, so compare them too.

    The resourceVersion is no witness here: the controller keeps writing the Deployment's status.
    """
    d = apps.read_namespaced_deployment(NAME, namespace)
    return d.metadata.generation, d.metadata.annotations


def refused_without_write(apps: AppsV1Api, namespace: str, revision: str, reason: str) -> None:
    before = spec_and_annotations(apps, namespace)
    result = rollback_to_revision(apps, namespace, NAME, revision)
    assert (result.rolled_back, result.reason) == (False, reason), result.message
    assert spec_and_annotations(apps, namespace) == before


def test_rollback_to_a_missing_revision_is_refused_without_a_write(apps: AppsV1Api, namespace: str) -> None:
    refused_without_write(apps, namespace, "7", "RevisionNotFound")


def test_rollback_to_the_current_revision_is_refused_without_a_write(apps: AppsV1Api, namespace: str) -> None:
    refused_without_write(apps, namespace, "2", "AlreadyCurrent")


def test_rollback_of_a_paused_deployment_is_refused(apps: AppsV1Api, namespace: str) -> None:
    apps.patch_namespaced_deployment(NAME, namespace, {"spec": {"paused": True}})
    refused_without_write(apps, namespace, "1", "Paused")


def test_rollback_of_a_missing_deployment(kube_api: ApiClient, namespace: str) -> None:
    result = rollback_to_revision(AppsV1Api(kube_api), namespace, "nope", "1")
    assert (result.rolled_back, result.reason) == (False, "DeploymentNotFound")


def test_rollback_concurrent_change_is_detected_and_retried(
    kube_api: ApiClient, apps: AppsV1Api, namespace: str
) -> None:
    """Someone scales the Deployment between our read and our write: 409, re-read, both changes stand."""
    _, template1 = replica_set_template(apps, namespace, "1")

    def person_scales() -> None:
        apps.patch_namespaced_deployment(NAME, namespace, {"spec": {"replicas": 3}})

    client = Interleaving(kube_api, f"/deployments/{NAME}", person_scales)
    try:
        result = rollback_to_revision(AppsV1Api(client), namespace, NAME, "1")
    finally:
        client.close()
    assert result.reason == "RolledBack"
    # the first write meets the person's change; the controller's status writes may cost more retries
    assert client.patch_statuses[0] == 409
    assert client.patch_statuses[-1] == 200
    assert set(client.patch_statuses[:-1]) == {409}
    d = apps.read_namespaced_deployment(NAME, namespace)
    assert d.spec.replicas == 3
    assert deployment_template(apps, namespace) == template1
