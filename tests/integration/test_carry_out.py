"""Carrying out governance intents against a real API server and kube-controller-manager."""
from __future__ import annotations

import time

import pytest
from kubernetes.client import ApiClient, AppsV1Api
from kubernetes.client.exceptions import ApiException

from understudy.controller.workloads import carry_out
from understudy.engine.intents import RollbackIntent, ScaleIntent
from understudy.kube.scale import set_replicas

NAME = "fallback-small"


@pytest.fixture
def apps(kube_api: ApiClient, namespace: str) -> AppsV1Api:
    apps = AppsV1Api(kube_api)
    labels = {"app": NAME}
    apps.create_namespaced_deployment(namespace, {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": NAME},
        "spec": {"replicas": 2, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels}, "spec": {"containers": [{"name": "m", "image": "model:v1"}]}}},
    })
    return apps


def replicas(apps: AppsV1Api, namespace: str) -> int:
    return int(apps.read_namespaced_deployment(NAME, namespace).spec.replicas)


def test_set_replicas_writes_only_while_the_replicas_are_as_expected(apps: AppsV1Api, namespace: str) -> None:
    set_replicas(apps, namespace, NAME, 4, expected=2)
    assert replicas(apps, namespace) == 4
    with pytest.raises(ApiException) as refused:
        set_replicas(apps, namespace, NAME, 6, expected=2)  # someone else moved it to 4 meanwhile
    assert refused.value.status == 422
    assert replicas(apps, namespace) == 4
    set_replicas(apps, namespace, NAME, 1, expected=None)
    assert replicas(apps, namespace) == 1


def test_carry_out_reports_each_intent_and_never_raises(apps: AppsV1Api, namespace: str) -> None:
    writes: list[int] = []
    intents = [
        ScaleIntent("distilled", NAME, 3, 2, "ScaledUp", "to carry the load"),
        ScaleIntent("distilled", NAME, 5, 2, "ScaledUp", "stale: the Deployment has 3 now"),
        ScaleIntent("gone", "no-such-deployment", 3, 1, "ScaledUp", "absent"),
        RollbackIntent("no-such-deployment", "1", "creep"),
        RollbackIntent(NAME, "7", "creep"),
    ]
    outcomes = carry_out(apps, namespace, intents, lambda: 1000.0, on_write=lambda: writes.append(1))
    assert [(o.done, o.permanent) for o in outcomes] == [
        (True, False), (False, False), (False, True), (False, True), (False, True)]
    assert "someone else changed them" in outcomes[1].message
    assert "DeploymentNotFound" in outcomes[3].message and "RevisionNotFound" in outcomes[4].message
    assert all(o.time == 1000.0 for o in outcomes) and writes == [1]
    assert replicas(apps, namespace) == 3


def test_a_paused_deployment_is_a_refusal_that_may_pass(apps: AppsV1Api, namespace: str) -> None:
    deadline = time.monotonic() + 60
    while not any((rs.metadata.annotations or {}).get("deployment.kubernetes.io/revision") == "1"
                  for rs in apps.list_namespaced_replica_set(namespace).items):
        assert time.monotonic() < deadline, "the controller never numbered revision 1"
        time.sleep(0.2)
    apps.patch_namespaced_deployment(NAME, namespace, {"spec": {"paused": True}})
    apps.patch_namespaced_deployment(NAME, namespace, {"spec": {"template": {"spec": {
        "containers": [{"name": "m", "image": "model:v2"}]}}}})
    [outcome] = carry_out(apps, namespace, [RollbackIntent(NAME, "1", "creep")], lambda: 1.0)
    assert (outcome.done, outcome.permanent) == (False, False), outcome
    assert "Paused" in outcome.message
