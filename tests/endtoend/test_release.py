"""Release end to end: a policy that lets go of its traffic (deleted, switched to Observe, or pointed at
another route) while a fallback is in effect gives the primary its traffic back, or leaves it and says so,
as `spec.release` asks; a finalizer guards deletion only while something is moved."""
from __future__ import annotations

import copy
from typing import Any, Callable

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from e2e.harness.prometheus import PrometheusServer
from e2e.scenario import ROUTE, ROUTING_NAME, Scenario, wait_until

FINALIZER = "understudy.dev/release"
FAILING = {"error_ratio": 0.6}
ALL_PRIMARY = {"primary": 100, "distilled": 0, "popular-items": 0}
ON_DISTILLED = {"primary": 0, "distilled": 100, "popular-items": 0}
ISTIO = ("networking.istio.io", "v1", "virtualservices")


def _fallen_back(make_scenario: Callable[..., Scenario], prometheus: PrometheusServer, **spec: Any) -> Scenario:
    """A scenario whose primary fails and whose traffic is on the distilled tier."""
    sc = make_scenario(prometheus)
    sc.start_traffic()
    sc.start_operator()
    sc.apply_policy(sc.policy(**spec))
    wait_until(lambda: (c := sc.condition("Ready")) and c["status"] == "True", 60, "Ready=True")
    sc.inject("primary", **FAILING)
    sc.wait_for_weights(ON_DISTILLED, timeout=30)
    return sc


def _finalizers(sc: Scenario, name: str = "recommender") -> list[str]:
    return list(sc.policy_object(name)["metadata"].get("finalizers") or [])


def _gone(sc: Scenario, name: str = "recommender") -> bool:
    try:
        sc.policy_object(name)
    except ApiException as err:
        if err.status == 404:
            return True
        raise
    return False


def _delete(sc: Scenario, name: str = "recommender") -> None:
    client.CustomObjectsApi(sc.api).delete_namespaced_custom_object(
        "understudy.dev", "v1alpha1", sc.namespace, "fallbackpolicies", name)


def _released(sc: Scenario, name: str = "recommender") -> dict[str, Any]:
    return wait_until(lambda: next((e for e in sc.events(name) if e.get("reason") == "Released"), None), 30,
                      "a Released Event")


def test_deleting_a_policy_mid_fallback_restores_the_primary(make_scenario: Callable[..., Scenario],
                                                             prometheus: PrometheusServer) -> None:
    sc = _fallen_back(make_scenario, prometheus)
    wait_until(lambda: FINALIZER in _finalizers(sc), 10, "the release finalizer while traffic is moved")
    _delete(sc)
    sc.wait_for_weights(ALL_PRIMARY, timeout=30)
    wait_until(lambda: _gone(sc), 30, "the policy to be gone")
    assert "primary" in str(_released(sc).get("note"))


def test_deleting_a_policy_that_says_leave_keeps_the_fallback_and_says_so(
        make_scenario: Callable[..., Scenario], prometheus: PrometheusServer) -> None:
    sc = _fallen_back(make_scenario, prometheus, release="Leave")
    _delete(sc)
    wait_until(lambda: _gone(sc), 30, "the policy to be gone")
    note = str(_released(sc).get("note"))
    assert "Leave" in note and "distilled" in note, note
    assert sc.routed_weights() == ON_DISTILLED


def test_switching_to_observe_mid_fallback_restores_the_primary(make_scenario: Callable[..., Scenario],
                                                                prometheus: PrometheusServer) -> None:
    sc = _fallen_back(make_scenario, prometheus)
    sc.patch_policy("recommender", {"spec": {"mode": "Observe"}})
    sc.wait_for_weights(ALL_PRIMARY, timeout=30)
    _released(sc)
    wait_until(lambda: FINALIZER not in _finalizers(sc), 30, "the finalizer to go once nothing is moved")
    assert sc.routed_weights() == ALL_PRIMARY  # Observe never routes again


def test_pointing_routing_elsewhere_mid_fallback_restores_the_old_route(make_scenario: Callable[..., Scenario],
                                                                         prometheus: PrometheusServer) -> None:
    sc = _fallen_back(make_scenario, prometheus)
    custom = client.CustomObjectsApi(sc.api)
    other = copy.deepcopy(custom.get_namespaced_custom_object(*ISTIO[:2], sc.namespace, ISTIO[2], ROUTING_NAME))
    other["metadata"] = {"name": "recommender-next"}
    for route in other["spec"]["http"]:
        for i, destination in enumerate(route["route"]):
            destination["weight"] = 100 if i == 0 else 0
    custom.create_namespaced_custom_object(*ISTIO[:2], sc.namespace, ISTIO[2], other)

    sc.patch_policy("recommender", {"spec": {"routing": {"istio": {"virtualServiceName": "recommender-next"}}}})
    sc.wait_for_weights(ALL_PRIMARY, timeout=30)  # the old route has its primary back
    _released(sc)

    def new_route() -> dict[str, int]:
        vs = custom.get_namespaced_custom_object(*ISTIO[:2], sc.namespace, ISTIO[2], "recommender-next")
        route = next(r for r in vs["spec"]["http"] if r.get("name") == ROUTE)
        return {d["destination"]["host"]: int(d.get("weight", 0)) for d in route["route"]}

    wait_until(lambda: new_route().get("recommender-small") == 100, 30, "the new route to carry the fallback")


def test_a_policy_carries_the_finalizer_only_while_something_is_moved(make_scenario: Callable[..., Scenario],
                                                                       prometheus: PrometheusServer) -> None:
    sc = make_scenario(prometheus)
    sc.start_traffic()
    sc.start_operator()
    sc.apply_policy(sc.policy(evaluation={"restoreSteps": [100]}))
    wait_until(lambda: (c := sc.condition("Ready")) and c["status"] == "True", 60, "Ready=True")
    sc.wait_for_weights(ALL_PRIMARY)
    assert _finalizers(sc) == [], "a policy at rest has no finalizer"

    sc.inject("primary", **FAILING)
    sc.wait_for_weights(ON_DISTILLED, timeout=30)
    wait_until(lambda: FINALIZER in _finalizers(sc), 10, "the release finalizer while traffic is moved")

    sc.inject("primary")
    sc.wait_for_weights(ALL_PRIMARY, timeout=60)
    wait_until(lambda: _finalizers(sc) == [], 30, "no finalizer once traffic is back")
