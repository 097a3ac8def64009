"""Routing backends against a real API server (the loopback control plane, with Istio and Gateway API CRDs).

A concurrent change is provoked for real: a client that, right after the backend's GET of the routing
object, lets another writer change that object, so the backend's conditional write meets a real 409.
"""
from __future__ import annotations

import copy
from typing import Any, Callable
from urllib.parse import urlsplit

import pytest
from kubernetes.client import ApiClient, AppsV1Api, CoreV1Api, CustomObjectsApi

from understudy.engine.model import BackendRef, Tier
from understudy.routing import (
    GatewayAPITarget,
    IstioBackend,
    IstioTarget,
    RoutingTargetError,
    ServiceTarget,
    backend_for,
)
from understudy.routing.base import MAX_ATTEMPTS

TIERS = (
    Tier("primary", "model-large", "model-large"),
    Tier("distilled", "model-small", "model-small"),
    Tier("baseline", "model-base", "model-base"),
)
ON_PRIMARY = (("primary", 100), ("distilled", 0), ("baseline", 0))
ON_DISTILLED = (("primary", 0), ("distilled", 100), ("baseline", 0))
SPLIT = (("primary", 60), ("distilled", 40), ("baseline", 0))

ISTIO = ("networking.istio.io", "v1", "virtualservices")
GATEWAY = ("gateway.networking.k8s.io", "v1", "httproutes")
JSON_PATCH = "application/json-patch+json"


class Interleaving(ApiClient):
    """A real client that lets another writer change an object right after each of our first N GETs of it.

    It also records the status of every PATCH we send to that object, so a test can see the 409 and
    the retry that followed.
    """

    def __init__(self, base: ApiClient, path_suffix: str, concurrent: Callable[[], None], times: int = 1) -> None:
        super().__init__(base.configuration)
        self.path_suffix = path_suffix
        self.concurrent = concurrent
        self.remaining = times
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


def weights_of(route: list[dict[str, Any]]) -> dict[str, int | None]:
    return {d["destination"]["host"]: d.get("weight") for d in route}


# ---------------------------------------------------------------------------------------------- Istio

def virtual_service(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "recommender"},
        "spec": {
            "hosts": ["recommender"],
            "http": [
                {
                    "name": "debug",
                    "match": [{"headers": {"x-debug": {"exact": "1"}}}],
                    "route": [{"destination": {"host": "model-debug"}}],
                    "timeout": "3s",
                },
                {
                    "name": "default",
                    "route": [
                        {"destination": {"host": f"model-large.{namespace}.svc.cluster.local"}, "weight": 100},
                        {"destination": {"host": f"model-small.{namespace}.svc.cluster.local"}, "weight": 0},
                    ],
                    "retries": {"attempts": 2},
                },
            ],
        },
    }


@pytest.fixture
def vs(kube_api: ApiClient, namespace: str) -> dict[str, Any]:
    return CustomObjectsApi(kube_api).create_namespaced_custom_object(
        *ISTIO[:2], namespace, ISTIO[2], virtual_service(namespace)
    )


def get_vs(kube_api: ApiClient, namespace: str) -> dict[str, Any]:
    return CustomObjectsApi(kube_api).get_namespaced_custom_object(*ISTIO[:2], namespace, ISTIO[2], "recommender")


def test_istio_moves_weights_and_reads_them_back(kube_api: ApiClient, namespace: str, vs: dict[str, Any]) -> None:
    backend = backend_for(kube_api, IstioTarget("recommender", "default"), TIERS)
    assert backend.read(namespace) == ON_PRIMARY

    assert backend.apply(namespace, ON_DISTILLED) is True
    assert backend.read(namespace) == ON_DISTILLED

    after = get_vs(kube_api, namespace)
    fqdn = f".{namespace}.svc.cluster.local"
    assert weights_of(after["spec"]["http"][1]["route"]) == {
        "model-large" + fqdn: 0, "model-small" + fqdn: 100, "model-base" + fqdn: 0,
    }, "the missing tier is added in the primary's host form, weight 0"
    assert after["spec"]["http"][0] == vs["spec"]["http"][0]
    assert after["spec"]["http"][1]["retries"] == {"attempts": 2}
    assert after["spec"]["hosts"] == ["recommender"]

    assert backend.apply(namespace, SPLIT) is True
    assert backend.read(namespace) == SPLIT


def test_istio_noop_apply_writes_nothing(kube_api: ApiClient, namespace: str, vs: dict[str, Any]) -> None:
    backend = backend_for(kube_api, IstioTarget("recommender", "default"), TIERS)
    assert backend.apply(namespace, SPLIT) is True
    before = get_vs(kube_api, namespace)["metadata"]["resourceVersion"]
    for _ in range(3):
        assert backend.apply(namespace, SPLIT) is False
    assert get_vs(kube_api, namespace)["metadata"]["resourceVersion"] == before


def test_istio_keeps_a_persons_edit_to_another_route(kube_api: ApiClient, namespace: str, vs: dict[str, Any]) -> None:
    backend = backend_for(kube_api, IstioTarget("recommender", "default"), TIERS)
    assert backend.apply(namespace, ON_DISTILLED) is True
    CustomObjectsApi(kube_api).patch_namespaced_custom_object(
        *ISTIO[:2], namespace, ISTIO[2], "recommender",
        [{"op": "replace", "path": "/spec/http/0/timeout", "value": "9s"}], _content_type=JSON_PATCH,
    )
    assert backend.apply(namespace, ON_PRIMARY) is True
    after = get_vs(kube_api, namespace)
    assert after["spec"]["http"][0]["timeout"] == "9s"
    assert backend.read(namespace) == ON_PRIMARY


def test_istio_concurrent_change_is_detected_and_retried(
    kube_api: ApiClient, namespace: str, vs: dict[str, Any]
) -> None:
    """A person edits another route between our read and our write: 409, re-read, and both changes stand."""
    def person_edits() -> None:
        CustomObjectsApi(kube_api).patch_namespaced_custom_object(
            *ISTIO[:2], namespace, ISTIO[2], "recommender",
            [{"op": "replace", "path": "/spec/http/0/timeout", "value": "7s"}], _content_type=JSON_PATCH,
        )

    client = Interleaving(kube_api, "/virtualservices/recommender", person_edits)
    try:
        backend = backend_for(client, IstioTarget("recommender", "default"), TIERS)
        assert backend.apply(namespace, ON_DISTILLED) is True
    finally:
        client.close()
    assert client.patch_statuses == [409, 200]
    after = get_vs(kube_api, namespace)
    assert after["spec"]["http"][0]["timeout"] == "7s"
    assert backend_for(kube_api, IstioTarget("recommender", "default"), TIERS).read(namespace) == ON_DISTILLED


def test_istio_concurrent_writer_that_already_did_it_means_no_write(
    kube_api: ApiClient, namespace: str, vs: dict[str, Any]
) -> None:
    """A second leader writes the same weights in between: after the 409 there is nothing left to do."""
    def other_leader() -> None:
        backend_for(kube_api, IstioTarget("recommender", "default"), TIERS).apply(namespace, ON_DISTILLED)

    client = Interleaving(kube_api, "/virtualservices/recommender", other_leader)
    try:
        assert backend_for(client, IstioTarget("recommender", "default"), TIERS).apply(namespace, ON_DISTILLED) is False
    finally:
        client.close()
    assert client.patch_statuses == [409]


def test_istio_gives_up_with_conflict_when_the_object_keeps_changing(
    kube_api: ApiClient, namespace: str, vs: dict[str, Any]
) -> None:
    counter = iter(range(1, 100))

    def busy_person() -> None:
        CustomObjectsApi(kube_api).patch_namespaced_custom_object(
            *ISTIO[:2], namespace, ISTIO[2], "recommender",
            [{"op": "replace", "path": "/spec/http/0/timeout", "value": f"{next(counter)}s"}], _content_type=JSON_PATCH,
        )

    client = Interleaving(kube_api, "/virtualservices/recommender", busy_person, times=MAX_ATTEMPTS)
    try:
        with pytest.raises(RoutingTargetError) as err:
            backend_for(client, IstioTarget("recommender", "default"), TIERS).apply(namespace, ON_DISTILLED)
    finally:
        client.close()
    assert err.value.reason == "Conflict", err.value.message
    assert client.patch_statuses == [409] * MAX_ATTEMPTS
    assert backend_for(kube_api, IstioTarget("recommender", "default"), TIERS).read(namespace) == ON_PRIMARY


@pytest.mark.parametrize(
    ("target", "edit", "reason"),
    [
        (IstioTarget("nope", "default"), None, "TargetNotFound"),
        (IstioTarget("recommender", "nope"), None, "RouteNotFound"),
        (IstioTarget("recommender", None), None, "RouteNotFound"),
        (IstioTarget("recommender", "debug"), None, "DestinationUnknown"),
        (IstioTarget("recommender", "default"),
         [{"op": "remove", "path": "/spec/http/1/route/0"}], "DestinationMissing"),
        (IstioTarget("recommender", "default"),
         [{"op": "add", "path": "/spec/http/1/route/-",
           "value": {"destination": {"host": "model-small", "subset": "b"}, "weight": 0}}], "DestinationAmbiguous"),
    ],
)
def test_istio_refusals(
    kube_api: ApiClient, namespace: str, vs: dict[str, Any],
    target: IstioTarget, edit: list[dict[str, Any]] | None, reason: str,
) -> None:
    if edit:
        CustomObjectsApi(kube_api).patch_namespaced_custom_object(
            *ISTIO[:2], namespace, ISTIO[2], "recommender", edit, _content_type=JSON_PATCH
        )
    before = get_vs(kube_api, namespace)
    backend = backend_for(kube_api, target, TIERS)
    for call in (lambda: backend.read(namespace), lambda: backend.apply(namespace, ON_DISTILLED)):
        with pytest.raises(RoutingTargetError) as err:
            call()
        assert err.value.reason == reason
    assert get_vs(kube_api, namespace)["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


def test_istio_missing_api_is_target_not_found(kube_api: ApiClient, namespace: str) -> None:
    """An API version the server does not serve (as when the CRD is not installed) says so in the message."""
    with pytest.raises(RoutingTargetError) as err:
        IstioBackend(kube_api, IstioTarget("recommender", "default"), TIERS, version="v9").read(namespace)
    assert err.value.reason == "TargetNotFound"
    assert "CRD installed" in err.value.message


def test_weights_must_name_every_tier_and_sum_to_100(kube_api: ApiClient, namespace: str, vs: dict[str, Any]) -> None:
    backend = backend_for(kube_api, IstioTarget("recommender", "default"), TIERS)
    for bad in ((("primary", 100),), (("primary", 50), ("distilled", 0), ("baseline", 0))):
        with pytest.raises(ValueError):
            backend.apply(namespace, bad)


# -------------------------------------------------------------------------------------------- Service

def deployment(name: str) -> dict[str, Any]:
    labels = {"app": "recommender", "model": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "server", "image": f"{name}:1"}]},
            },
        },
    }


@pytest.fixture
def service(kube_api: ApiClient, namespace: str) -> dict[str, Any]:
    for tier in TIERS:
        AppsV1Api(kube_api).create_namespaced_deployment(namespace, deployment(tier.deployment))
    core = CoreV1Api(kube_api)
    core.create_namespaced_service(namespace, {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "recommender"},
        "spec": {"selector": {"app": "recommender", "model": "model-large"}, "ports": [{"port": 80}]},
    })
    return core.read_namespaced_service("recommender", namespace).to_dict()


def service_state(kube_api: ApiClient, namespace: str) -> tuple[dict[str, str], str]:
    svc = CoreV1Api(kube_api).read_namespaced_service("recommender", namespace)
    return svc.spec.selector, svc.metadata.resource_version


def test_service_switches_selector_and_reads_it_back(
    kube_api: ApiClient, namespace: str, service: dict[str, Any]
) -> None:
    backend = backend_for(kube_api, ServiceTarget("recommender"), TIERS)
    assert backend.read(namespace) == ON_PRIMARY

    assert backend.apply(namespace, ON_DISTILLED) is True
    assert service_state(kube_api, namespace)[0] == {"app": "recommender", "model": "model-small"}
    assert backend.read(namespace) == ON_DISTILLED

    # all or nothing: the tier with the largest weight takes the whole selector
    assert backend.apply(namespace, SPLIT) is True
    assert backend.read(namespace) == ON_PRIMARY
    assert CoreV1Api(kube_api).read_namespaced_service("recommender", namespace).spec.ports[0].port == 80


def test_service_noop_apply_writes_nothing(kube_api: ApiClient, namespace: str, service: dict[str, Any]) -> None:
    backend = backend_for(kube_api, ServiceTarget("recommender"), TIERS)
    _, before = service_state(kube_api, namespace)
    assert backend.apply(namespace, ON_PRIMARY) is False
    assert backend.apply(namespace, SPLIT) is False, "60/40 is the primary's selector, already in place"
    assert service_state(kube_api, namespace)[1] == before


def test_service_concurrent_change_is_detected_and_retried(
    kube_api: ApiClient, namespace: str, service: dict[str, Any]
) -> None:
    def person_labels() -> None:
        CoreV1Api(kube_api).patch_namespaced_service(
            "recommender", namespace, {"metadata": {"labels": {"team": "ml"}}}
        )

    client = Interleaving(kube_api, "/services/recommender", person_labels)
    try:
        assert backend_for(client, ServiceTarget("recommender"), TIERS).apply(namespace, ON_DISTILLED) is True
    finally:
        client.close()
    assert client.patch_statuses == [409, 200]
    svc = CoreV1Api(kube_api).read_namespaced_service("recommender", namespace)
    assert svc.metadata.labels == {"team": "ml"}
    assert svc.spec.selector == {"app": "recommender", "model": "model-small"}


def test_service_refusals(kube_api: ApiClient, namespace: str, service: dict[str, Any]) -> None:
    with pytest.raises(RoutingTargetError) as err:
        backend_for(kube_api, ServiceTarget("nope"), TIERS).apply(namespace, ON_DISTILLED)
    assert err.value.reason == "TargetNotFound"

    ghost = TIERS[:2] + (Tier("baseline", "no-such-deployment", "model-base"),)
    with pytest.raises(RoutingTargetError) as err:
        backend_for(kube_api, ServiceTarget("recommender"), ghost).apply(namespace, ON_DISTILLED)
    assert err.value.reason == "SelectorUnknown"

    CoreV1Api(kube_api).patch_namespaced_service(
        "recommender", namespace, [{"op": "replace", "path": "/spec/selector", "value": {"app": "other"}}]
    )
    _, before = service_state(kube_api, namespace)
    with pytest.raises(RoutingTargetError) as err:
        backend_for(kube_api, ServiceTarget("recommender"), TIERS).read(namespace)
    assert err.value.reason == "SelectorUnmatched"
    assert service_state(kube_api, namespace)[1] == before


# ---------------------------------------------------------------------------------------- Gateway API

def http_route() -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "recommender"},
        "spec": {
            "parentRefs": [{"name": "edge"}],
            "rules": [
                {
                    "matches": [{"headers": [{"name": "x-debug", "value": "1"}]}],
                    "backendRefs": [{"name": "model-debug", "port": 80}],
                },
                {
                    "backendRefs": [
                        {"name": "model-large", "port": 80, "weight": 100},
                        {"name": "model-small", "port": 80, "weight": 0},
                        {"name": "model-base", "port": 80, "weight": 0},
                    ],
                },
            ],
        },
    }


@pytest.fixture
def route(kube_api: ApiClient, namespace: str) -> dict[str, Any]:
    return CustomObjectsApi(kube_api).create_namespaced_custom_object(*GATEWAY[:2], namespace, GATEWAY[2], http_route())


def get_route(kube_api: ApiClient, namespace: str) -> dict[str, Any]:
    return CustomObjectsApi(kube_api).get_namespaced_custom_object(*GATEWAY[:2], namespace, GATEWAY[2], "recommender")


def test_gateway_moves_weights_and_reads_them_back(kube_api: ApiClient, namespace: str, route: dict[str, Any]) -> None:
    backend = backend_for(kube_api, GatewayAPITarget("recommender", 1), TIERS)
    assert backend.read(namespace) == ON_PRIMARY
    assert backend.apply(namespace, SPLIT) is True
    assert backend.read(namespace) == SPLIT
    after = get_route(kube_api, namespace)
    assert [r["weight"] for r in after["spec"]["rules"][1]["backendRefs"]] == [60, 40, 0]
    assert after["spec"]["rules"][0] == route["spec"]["rules"][0]
    assert after["spec"]["parentRefs"] == route["spec"]["parentRefs"]


def test_gateway_reads_relative_weights_as_percent(kube_api: ApiClient, namespace: str, route: dict[str, Any]) -> None:
    CustomObjectsApi(kube_api).patch_namespaced_custom_object(
        *GATEWAY[:2], namespace, GATEWAY[2], "recommender",
        [{"op": "replace", "path": f"/spec/rules/1/backendRefs/{j}/weight", "value": w}
         for j, w in enumerate((3, 1, 0))],
        _content_type=JSON_PATCH,
    )
    assert backend_for(kube_api, GatewayAPITarget("recommender", 1), TIERS).read(namespace) == (
        ("primary", 75), ("distilled", 25), ("baseline", 0)
    )


def test_gateway_noop_apply_writes_nothing(kube_api: ApiClient, namespace: str, route: dict[str, Any]) -> None:
    backend = backend_for(kube_api, GatewayAPITarget("recommender", 1), TIERS)
    before = get_route(kube_api, namespace)["metadata"]["resourceVersion"]
    assert backend.apply(namespace, ON_PRIMARY) is False
    assert get_route(kube_api, namespace)["metadata"]["resourceVersion"] == before


def test_gateway_concurrent_change_is_detected_and_retried(
    kube_api: ApiClient, namespace: str, route: dict[str, Any]
) -> None:
    def person_edits() -> None:
        CustomObjectsApi(kube_api).patch_namespaced_custom_object(
            *GATEWAY[:2], namespace, GATEWAY[2], "recommender",
            [{"op": "replace", "path": "/spec/rules/0/backendRefs/0/port", "value": 8080}], _content_type=JSON_PATCH,
        )

    client = Interleaving(kube_api, "/httproutes/recommender", person_edits)
    try:
        assert backend_for(client, GatewayAPITarget("recommender", 1), TIERS).apply(namespace, ON_DISTILLED) is True
    finally:
        client.close()
    assert client.patch_statuses == [409, 200]
    after = get_route(kube_api, namespace)
    assert after["spec"]["rules"][0]["backendRefs"][0]["port"] == 8080
    assert [r["weight"] for r in after["spec"]["rules"][1]["backendRefs"]] == [0, 100, 0]


@pytest.mark.parametrize(
    ("target", "edit", "reason"),
    [
        (GatewayAPITarget("nope", 1), None, "TargetNotFound"),
        (GatewayAPITarget("recommender", 2), None, "RouteNotFound"),
        (GatewayAPITarget("recommender", 0), None, "DestinationUnknown"),
        (GatewayAPITarget("recommender", 1), [{"op": "remove", "path": "/spec/rules/1/backendRefs/2"}],
         "DestinationMissing"),
    ],
)
def test_gateway_refusals(
    kube_api: ApiClient, namespace: str, route: dict[str, Any],
    target: GatewayAPITarget, edit: list[dict[str, Any]] | None, reason: str,
) -> None:
    if edit:
        CustomObjectsApi(kube_api).patch_namespaced_custom_object(
            *GATEWAY[:2], namespace, GATEWAY[2], "recommender", edit, _content_type=JSON_PATCH
        )
    before = copy.deepcopy(get_route(kube_api, namespace))
    with pytest.raises(RoutingTargetError) as err:
        backend_for(kube_api, target, TIERS).apply(namespace, ON_DISTILLED)
    assert err.value.reason == reason
    assert get_route(kube_api, namespace)["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


# ---- Gateway API over InferencePools (the Inference Extension's backend kind) -----------------------------------

INFERENCE = "inference.networking.k8s.io"
POOL_TIERS = tuple(
    Tier(t.name, t.deployment, t.service, BackendRef(INFERENCE, "InferencePool", f"pool-{t.name}")) for t in TIERS
)


def pool_route() -> dict[str, Any]:
    """Rule 0 sends debug traffic to a Service; rule 1 weighs one InferencePool per tier."""
    def pool(name: str, weight: int) -> dict[str, Any]:
        return {"group": INFERENCE, "kind": "InferencePool", "name": name, "weight": weight}

    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "recommender"},
        "spec": {
            "parentRefs": [{"name": "inference-gateway"}],
            "rules": [
                {"matches": [{"headers": [{"name": "x-debug", "value": "1"}]}],
                 "backendRefs": [{"name": "model-debug", "port": 80}]},
                {"backendRefs": [pool("pool-primary", 100), pool("pool-distilled", 0), pool("pool-baseline", 0)]},
            ],
        },
    }


@pytest.fixture
def pools(kube_api: ApiClient, namespace: str) -> dict[str, Any]:
    return CustomObjectsApi(kube_api).create_namespaced_custom_object(*GATEWAY[:2], namespace, GATEWAY[2], pool_route())


def test_inference_pools_are_weighed_like_services(kube_api: ApiClient, namespace: str, pools: dict[str, Any]) -> None:
    backend = backend_for(kube_api, GatewayAPITarget("recommender", 1), POOL_TIERS)
    assert backend.read(namespace) == ON_PRIMARY
    assert backend.apply(namespace, SPLIT) is True
    assert backend.read(namespace) == SPLIT
    after = get_route(kube_api, namespace)
    refs = after["spec"]["rules"][1]["backendRefs"]
    assert [(r["kind"], r["name"], r["weight"]) for r in refs] == [
        ("InferencePool", "pool-primary", 60), ("InferencePool", "pool-distilled", 40),
        ("InferencePool", "pool-baseline", 0)]
    assert after["spec"]["rules"][0] == pools["spec"]["rules"][0]
    assert backend.apply(namespace, SPLIT) is False


def test_inference_pools_keep_a_persons_edit_to_another_rule(
    kube_api: ApiClient, namespace: str, pools: dict[str, Any]
) -> None:
    def person_edits() -> None:
        CustomObjectsApi(kube_api).patch_namespaced_custom_object(
            *GATEWAY[:2], namespace, GATEWAY[2], "recommender",
            [{"op": "replace", "path": "/spec/rules/0/backendRefs/0/port", "value": 8080}], _content_type=JSON_PATCH,
        )

    client = Interleaving(kube_api, "/httproutes/recommender", person_edits)
    try:
        assert backend_for(client, GatewayAPITarget("recommender", 1), POOL_TIERS).apply(namespace, ON_DISTILLED)
    finally:
        client.close()
    assert client.patch_statuses == [409, 200]
    after = get_route(kube_api, namespace)
    assert after["spec"]["rules"][0]["backendRefs"][0]["port"] == 8080
    assert [r["weight"] for r in after["spec"]["rules"][1]["backendRefs"]] == [0, 100, 0]


@pytest.mark.parametrize(
    ("edit", "reason", "said"),
    [
        # the same name as a tier's pool, but a Service: not the tier's backend
        ([{"op": "replace", "path": "/spec/rules/1/backendRefs/1",
           "value": {"name": "pool-distilled", "port": 80, "weight": 0}}],
         "DestinationUnknown", "sends to Service 'pool-distilled', which is no tier's backendRef"),
        # the right pool, in another namespace
        ([{"op": "add", "path": "/spec/rules/1/backendRefs/2/namespace", "value": "elsewhere"}],
         "DestinationUnknown", "InferencePool 'pool-baseline' (inference.networking.k8s.io) in namespace 'elsewhere'"),
        ([{"op": "remove", "path": "/spec/rules/1/backendRefs/2"}],
         "DestinationMissing", "no backendRef for InferencePool 'pool-baseline' (inference.networking.k8s.io)"),
        ([{"op": "add", "path": "/spec/rules/1/backendRefs/-",
           "value": {"group": INFERENCE, "kind": "InferencePool", "name": "pool-primary", "weight": 0}}],
         "DestinationAmbiguous", "several backendRefs for tier 'primary'"),
    ],
)
def test_inference_pool_refusals_name_what_does_not_match(
    kube_api: ApiClient, namespace: str, pools: dict[str, Any], edit: list[dict[str, Any]], reason: str, said: str,
) -> None:
    CustomObjectsApi(kube_api).patch_namespaced_custom_object(
        *GATEWAY[:2], namespace, GATEWAY[2], "recommender", edit, _content_type=JSON_PATCH
    )
    before = get_route(kube_api, namespace)["metadata"]["resourceVersion"]
    with pytest.raises(RoutingTargetError) as err:
        backend_for(kube_api, GatewayAPITarget("recommender", 1), POOL_TIERS).apply(namespace, ON_DISTILLED)
    assert err.value.reason == reason
    assert said in err.value.message
    assert get_route(kube_api, namespace)["metadata"]["resourceVersion"] == before
