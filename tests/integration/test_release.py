"""controller/releaser.py against a real API server: the primary restored on the routing object, scaled-up
fallbacks scaled back only while they hold what the operator set, and the finalizer added and removed with
a resourceVersion guard (a deleted policy goes once it is removed)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import ApiClient, AppsV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from e2e.harness.cluster import ControlPlane
from understudy.api.models import Release
from understudy.controller.release import DELETED, FINALIZER
from understudy.controller.releaser import Letting, Releaser, set_finalizer
from understudy.engine.model import Tier
from understudy.routing import IstioTarget, backend_for

CRD = Path(__file__).resolve().parents[2] / "crds" / "understudy.dev_fallbackpolicies.yaml"
ISTIO = ("networking.istio.io", "v1", "virtualservices")
POLICIES = ("understudy.dev", "v1alpha1", "fallbackpolicies")
TIERS = (Tier("primary", "model-large", "model-large"), Tier("distilled", "model-small", "model-small"))
TARGET = IstioTarget("recommender", "default")


def _virtual_service(weights: tuple[int, int]) -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "recommender"},
            "spec": {"hosts": ["recommender"], "http": [{"name": "default", "route": [
                {"destination": {"host": t.service}, "weight": w} for t, w in zip(TIERS, weights)]}]}}


def _deployment(name: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels}, "template": {
                "metadata": {"labels": labels}, "spec": {"containers": [{"name": "m", "image": "models/m:v1"}]}}}}


def _job(kube_api: ApiClient, namespace: str, choice: Release, scaled: dict[str, tuple[int, int | None]]) -> Letting:
    return Letting(namespace, "recommender", "uid-1", choice, DELETED, TARGET, backend_for(kube_api, TARGET, TIERS),
                   TIERS, (("primary", 0), ("distilled", 100)), scaled)


def _weights(kube_api: ApiClient, namespace: str) -> list[int]:
    vs = CustomObjectsApi(kube_api).get_namespaced_custom_object(*ISTIO[:2], namespace, ISTIO[2], "recommender")
    return [d["weight"] for d in vs["spec"]["http"][0]["route"]]


def test_restore_primary_routes_back_and_scales_back_what_still_holds_the_operators_count(
        kube_api: ApiClient, namespace: str) -> None:
    CustomObjectsApi(kube_api).create_namespaced_custom_object(*ISTIO[:2], namespace, ISTIO[2],
                                                               _virtual_service((0, 100)))
    apps = AppsV1Api(kube_api)
    apps.create_namespaced_deployment(namespace, _deployment("model-small", 7))
    outcome = Releaser(kube_api).release(_job(kube_api, namespace, Release.RESTORE_PRIMARY,
                                              {"distilled": (2, 7)}), now=0.0)
    assert outcome.done and outcome.record.reason == "Released", outcome
    assert _weights(kube_api, namespace) == [100, 0]
    assert apps.read_namespaced_deployment("model-small", namespace).spec.replicas == 2
    assert "scaled model-small back to 2 replicas" in outcome.record.message

    apps.patch_namespaced_deployment("model-small", namespace, {"spec": {"replicas": 9}})  # a person's count
    again = Releaser(kube_api).release(_job(kube_api, namespace, Release.RESTORE_PRIMARY,
                                            {"distilled": (2, 7)}), now=0.0)
    assert again.done and "someone else changed its replicas" in again.record.message
    assert apps.read_namespaced_deployment("model-small", namespace).spec.replicas == 9


def test_leave_changes_nothing_and_says_so(kube_api: ApiClient, namespace: str) -> None:
    CustomObjectsApi(kube_api).create_namespaced_custom_object(*ISTIO[:2], namespace, ISTIO[2],
                                                               _virtual_service((0, 100)))
    outcome = Releaser(kube_api).release(_job(kube_api, namespace, Release.LEAVE, {}), now=0.0)
    assert outcome.done and outcome.record.reason == "Released"
    assert "Leave" in outcome.record.message and "distilled 100 %" in outcome.record.message
    assert _weights(kube_api, namespace) == [0, 100]


def test_a_release_that_keeps_failing_gives_up_after_three_attempts(kube_api: ApiClient, namespace: str) -> None:
    releaser = Releaser(kube_api)  # no VirtualService: every attempt fails with TargetNotFound
    job = _job(kube_api, namespace, Release.RESTORE_PRIMARY, {})
    first = releaser.release(job, now=0.0)
    assert not first.done and first.record.reason == "ReleaseFailed" and "TargetNotFound" in first.record.message
    assert not releaser.due("uid-1", 1.0) and releaser.due("uid-1", 2.0)
    assert not releaser.release(job, now=2.0).done
    last = releaser.release(job, now=10.0)
    assert last.done and last.record.reason == "ReleaseFailed" and "finalizer is removed" in last.record.message


def test_the_finalizer_is_guarded_and_its_removal_lets_a_deletion_finish(
        control_plane: ControlPlane, kube_api: ApiClient, namespace: str) -> None:
    control_plane.run_kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    control_plane.run_kubectl("wait", "--for=condition=Established", "--timeout=60s",
                              "crd/fallbackpolicies.understudy.dev")
    custom = CustomObjectsApi(kube_api)
    body = {"apiVersion": "understudy.dev/v1alpha1", "kind": "FallbackPolicy", "metadata": {"name": "recommender"},
            "spec": {"mode": "Observe", "primary": {"deploymentName": "model-large", "serviceName": "model-large"},
                     "fallbacks": [{"name": "distilled", "deploymentName": "model-small", "serviceName": "model-small"}],
                     "routing": {"istio": {"virtualServiceName": "recommender"}},
                     "triggers": [{"name": "errors", "errorRatio": {"above": "0.1"}}]}}
    created = custom.create_namespaced_custom_object(*POLICIES[:2], namespace, POLICIES[2], body)
    stale = created["metadata"]["resourceVersion"]
    written = set_finalizer(custom, namespace, "recommender", [], True, stale)
    assert written is not None and written["metadata"]["resourceVersion"] != stale
    version = written["metadata"]["resourceVersion"]
    assert custom.get_namespaced_custom_object(*POLICIES[:2], namespace, POLICIES[2], "recommender")[
        "metadata"]["finalizers"] == [FINALIZER]
    assert set_finalizer(custom, namespace, "recommender", [FINALIZER], True, version) is None
    with pytest.raises(ApiException) as conflict:
        set_finalizer(custom, namespace, "recommender", [FINALIZER], False, stale)
    assert conflict.value.status == 409

    custom.delete_namespaced_custom_object(*POLICIES[:2], namespace, POLICIES[2], "recommender")
    deleting = custom.get_namespaced_custom_object(*POLICIES[:2], namespace, POLICIES[2], "recommender")
    assert deleting["metadata"].get("deletionTimestamp"), "the finalizer holds the deletion"
    set_finalizer(custom, namespace, "recommender", [FINALIZER], False, deleting["metadata"]["resourceVersion"])
    with pytest.raises(ApiException) as gone:
        custom.get_namespaced_custom_object(*POLICIES[:2], namespace, POLICIES[2], "recommender")
    assert gone.value.status == 404
