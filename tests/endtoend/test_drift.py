"""Drift and ownership end to end: a person, a GitOps revert or a second policy changes the routing object
behind the operator's back, and the operator puts its decision back (once per episode) or steps aside.

Every test starts the operator as a separate process against the real API server, with real traffic
and a real Prometheus; the edits are made with the API client exactly as `kubectl edit` would.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import pytest
from kubernetes import client

from e2e.harness.prometheus import PrometheusServer
from e2e.scenario import ROUTE, ROUTING_NAME, TIERS, Scenario, wait_until

FAILING = {"error_ratio": 0.6}
ALL_PRIMARY = {"primary": 100, "distilled": 0, "popular-items": 0}
ON_DISTILLED = {"primary": 0, "distilled": 100, "popular-items": 0}
ON_POPULAR = {"primary": 0, "distilled": 0, "popular-items": 100}
HALF = {"primary": 50, "distilled": 50, "popular-items": 0}

REPAIR_BOUND = 15.0
"""Seconds a repair may take: one 1 s interval, generously widened for a loaded two-core machine."""

ISTIO = ("networking.istio.io", "v1", "virtualservices")
GATEWAY = ("gateway.networking.k8s.io", "v1", "httproutes")


def _started(make_scenario: Callable[..., Scenario], prometheus: PrometheusServer, backend: str = "istio",
             **spec: Any) -> Scenario:
    sc = make_scenario(prometheus, backend)
    sc.start_traffic()
    sc.start_operator()
    sc.apply_policy(sc.policy(**spec))
    _ready(sc)
    return sc


def _ready(sc: Scenario, name: str = "recommender") -> dict[str, Any]:
    return wait_until(lambda: (c := sc.condition("Ready", name)) and c["status"] == "True" and c, 60,
                      f"{name} Ready=True")


def _repaired(sc: Scenario) -> None:
    try:
        wait_until(lambda: "RoutingDriftRepaired" in sc.reasons(), 10, "a RoutingDriftRepaired Event")
    except AssertionError as err:
        raise AssertionError(f"{err}\nEvents: {sc.reasons()}\n--- operator log ---\n{sc.operator_logs()}") from None


def _edit(sc: Scenario, weights: dict[str, int]) -> None:
    """A person's edit: the managed route gets `weights`, and another route/field gets a change of its own."""
    custom = client.CustomObjectsApi(sc.api)
    tier_of = {t.name: t.deployment for t in TIERS}
    if sc.backend == "istio":
        vs = custom.get_namespaced_custom_object(*ISTIO[:2], sc.namespace, ISTIO[2], ROUTING_NAME)
        for route in vs["spec"]["http"]:
            if route.get("name") == ROUTE:
                for d in route["route"]:
                    name = next(n for n, dep in tier_of.items() if dep == d["destination"]["host"])
                    d["weight"] = weights[name]
            else:
                route["timeout"] = "7s"
        custom.replace_namespaced_custom_object(*ISTIO[:2], sc.namespace, ISTIO[2], ROUTING_NAME, vs)
    elif sc.backend == "gatewayapi":
        hr = custom.get_namespaced_custom_object(*GATEWAY[:2], sc.namespace, GATEWAY[2], ROUTING_NAME)
        rules = hr["spec"]["rules"]
        for ref in rules[0]["backendRefs"]:
            ref["weight"] = weights[next(n for n, dep in tier_of.items() if dep == ref["name"])]
        hr["spec"]["rules"] = [rules[0], {"matches": [{"path": {"type": "PathPrefix", "value": "/admin"}}],
                                          "backendRefs": [{"name": TIERS[1].deployment, "port": 80}]}]
        custom.replace_namespaced_custom_object(*GATEWAY[:2], sc.namespace, GATEWAY[2], ROUTING_NAME, hr)
    else:
        winner = max(weights, key=lambda n: weights[n])
        client.CoreV1Api(sc.api).patch_namespaced_service(ROUTING_NAME, sc.namespace, {
            "metadata": {"annotations": {"team": "edited-by-hand"}},
            "spec": {"selector": {"app": tier_of[winner]}}})


def _other_edit_survived(sc: Scenario) -> bool:
    custom = client.CustomObjectsApi(sc.api)
    if sc.backend == "istio":
        vs = custom.get_namespaced_custom_object(*ISTIO[:2], sc.namespace, ISTIO[2], ROUTING_NAME)
        other = next(r for r in vs["spec"]["http"] if r.get("name") != ROUTE)
        return bool(other.get("timeout") == "7s")
    if sc.backend == "gatewayapi":
        hr = custom.get_namespaced_custom_object(*GATEWAY[:2], sc.namespace, GATEWAY[2], ROUTING_NAME)
        return len(hr["spec"]["rules"]) == 2
    svc = client.CoreV1Api(sc.api).read_namespaced_service(ROUTING_NAME, sc.namespace)
    return (svc.metadata.annotations or {}).get("team") == "edited-by-hand"


@pytest.mark.parametrize("backend", ["istio", "gatewayapi", "service"])
def test_a_persons_edit_of_the_managed_weights_is_reverted_once(make_scenario: Callable[..., Scenario],
                                                                prometheus: PrometheusServer, backend: str) -> None:
    sc = _started(make_scenario, prometheus, backend)
    sc.wait_for_weights(ALL_PRIMARY)
    # Ready=True is written before the first routing write (status is the fence): an edit that lands
    # before the operator ever wrote is simply overwritten by that first write, not repaired.
    time.sleep(3)
    _edit(sc, HALF if backend != "service" else ON_DISTILLED)
    sc.wait_for_weights(ALL_PRIMARY, timeout=REPAIR_BOUND)
    _repaired(sc)
    time.sleep(4)  # several more intervals: the repair is one episode, not one Event per evaluation
    assert sc.reasons().count("RoutingDriftRepaired") == 1, sc.reasons()
    assert sc.routed_weights() == ALL_PRIMARY
    assert _other_edit_survived(sc), "an edit outside the managed weights was undone"
    assert sc.condition("Ready")["status"] == "True"  # type: ignore[index]


def test_a_recreated_virtual_service_gets_the_decision_back(make_scenario: Callable[..., Scenario],
                                                            prometheus: PrometheusServer) -> None:
    sc = _started(make_scenario, prometheus)
    sc.inject("primary", **FAILING)
    sc.wait_for_weights(ON_DISTILLED, timeout=30)
    custom = client.CustomObjectsApi(sc.api)
    vs = custom.get_namespaced_custom_object(*ISTIO[:2], sc.namespace, ISTIO[2], ROUTING_NAME)
    custom.delete_namespaced_custom_object(*ISTIO[:2], sc.namespace, ISTIO[2], ROUTING_NAME)
    for route in vs["spec"]["http"]:  # a GitOps tool recreates it as committed: all traffic on the primary
        if route.get("name") == ROUTE:
            for d in route["route"]:
                d["weight"] = 100 if d["destination"]["host"] == TIERS[0].deployment else 0
    fresh = {"apiVersion": vs["apiVersion"], "kind": vs["kind"], "metadata": {"name": ROUTING_NAME},
             "spec": vs["spec"]}
    time.sleep(2)
    custom.create_namespaced_custom_object(*ISTIO[:2], sc.namespace, ISTIO[2], fresh)
    sc.wait_for_weights(ON_DISTILLED, timeout=REPAIR_BOUND)
    _repaired(sc)


def test_two_policies_on_one_route_the_newer_steps_aside_until_the_older_is_gone(
        make_scenario: Callable[..., Scenario], prometheus: PrometheusServer) -> None:
    sc = _started(make_scenario, prometheus)
    sc.wait_for_weights(ALL_PRIMARY)
    time.sleep(1.1)  # creationTimestamp has one-second resolution: make "older" unambiguous
    sc.apply_policy(sc.policy("usurper", override={"pinTier": "popular-items"}))
    ready = wait_until(lambda: (c := sc.condition("Ready", "usurper")) and c["status"] == "False" and c, 30,
                       "usurper Ready=False")
    assert ready["reason"] == "RouteConflict" and "recommender" in ready["message"], ready
    samples = []
    for _ in range(8):  # several intervals of both policies evaluating: nothing may flip the weights
        samples.append(sc.routed_weights())
        time.sleep(1)
    assert all(s == ALL_PRIMARY for s in samples), samples
    assert sc.reasons("usurper").count("RouteConflict") == 1, sc.reasons("usurper")
    assert sc.condition("Ready")["status"] == "True"  # type: ignore[index]

    client.CustomObjectsApi(sc.api).delete_namespaced_custom_object(
        "understudy.dev", "v1alpha1", sc.namespace, "fallbackpolicies", "recommender")
    sc.wait_for_weights(ON_POPULAR, timeout=30)
    _ready(sc, "usurper")


def test_deleting_the_newer_policy_of_a_shared_route_releases_nothing_on_the_owners_route(
        make_scenario: Callable[..., Scenario], prometheus: PrometheusServer) -> None:
    sc = _started(make_scenario, prometheus)
    time.sleep(1.1)  # creationTimestamp has one-second resolution: make "older" unambiguous
    sc.apply_policy(sc.policy("usurper", override={"pinTier": "popular-items"}))
    wait_until(lambda: (c := sc.condition("Ready", "usurper")) and c["reason"] == "RouteConflict", 30,
               "usurper RouteConflict")
    sc.inject("primary", **FAILING)
    sc.wait_for_weights(ON_DISTILLED, timeout=30)
    client.CustomObjectsApi(sc.api).delete_namespaced_custom_object(
        "understudy.dev", "v1alpha1", sc.namespace, "fallbackpolicies", "usurper")
    samples = []
    for _ in range(8):  # the usurper never routed: its deletion must not give "its" traffic back to the primary
        samples.append(sc.routed_weights())
        time.sleep(0.5)
    assert all(s == ON_DISTILLED for s in samples), samples
    assert "RoutingDriftRepaired" not in sc.reasons(), sc.reasons()
