"""Never make an incident worse, end to end: readiness, governance, Observe, state carried over and repaired.

Each story runs on the real control plane (Deployments made ready by KWOK, revisions numbered by the real
kube-controller-manager), a real Prometheus and the operator as a separate process.
"""
from __future__ import annotations

import time
from typing import Any, Callable

from kubernetes import client

from e2e.harness.prometheus import PrometheusServer
from e2e.scenario import Scenario, wait_until

FAILING = {"error_ratio": 0.6}
ALL_PRIMARY = {"primary": 100, "distilled": 0, "popular-items": 0}
ON_DISTILLED = {"primary": 0, "distilled": 100}
ON_POPULAR = {"primary": 0, "distilled": 0, "popular-items": 100}
PRIMARY_DEPLOYMENT = "recommender-large"
ROLLBACK = {"maxFallbackRatio": "0.05", "window": "20s", "action": "RollbackPrimary"}
"""A 20 s creep window: a revision becomes known-good after carrying all traffic that long."""
HOLD = "90s"
"""minDwell for the stories that watch the primary get nothing: the primary, left without traffic, has no
readings, and after minDwell the engine probes it with a restore step like a half-open circuit breaker."""


def _ready(sc: Scenario) -> None:
    wait_until(lambda: (c := sc.condition("Ready")) and c["status"] == "True", 60, "Ready=True")


def _started(make_scenario: Callable[..., Scenario], prometheus: PrometheusServer, backend: str = "istio",
             body: dict[str, Any] | None = None, **spec: Any) -> Scenario:
    sc = make_scenario(prometheus, backend)
    sc.start_traffic()
    sc.start_operator()
    sc.apply_policy(body if body is not None else sc.policy(**spec))
    _ready(sc)
    return sc


def _event(sc: Scenario, reason: str) -> dict[str, Any]:
    return next(e for e in sc.events() if e.get("reason") == reason)


def _primary_never_served(sc: Scenario, seconds: float) -> None:
    """The routing gives the primary nothing, checked every 0.1 s for `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        weights = sc.routed_weights()
        assert weights["primary"] == 0, f"traffic went back to the failing primary: {weights}\n{sc.operator_logs()}"
        time.sleep(0.1)


def _weights_until(sc: Scenario, expected: dict[str, int], timeout: float) -> list[dict[str, int]]:
    """Every distinct routing seen, polled every 0.1 s, until it carries `expected`."""
    seen: list[dict[str, int]] = []
    deadline = time.monotonic() + timeout
    while not seen or any(seen[-1].get(k, 0) != v for k, v in expected.items()):
        assert time.monotonic() < deadline, f"routing never became {expected}: {seen}\n{sc.operator_logs()}"
        weights = sc.routed_weights()
        if not seen or weights != seen[-1]:
            seen.append(weights)
        time.sleep(0.1)
    return seen


def _bad_rollout(sc: Scenario) -> client.AppsV1Api:
    """Revision 1 becomes known-good, then revision 2 rolls out (and fails once the caller injects it)."""
    wait_until(lambda: sc.status().get("lastKnownGoodRevision") == "1", 90, "revision 1 known-good")
    apps = client.AppsV1Api(sc.api)
    apps.patch_namespaced_deployment(PRIMARY_DEPLOYMENT, sc.namespace, {"spec": {"template": {"spec": {
        "containers": [{"name": "model", "image": "models/large:v2"}]}}}})
    wait_until(lambda: (sc.status().get("primaryRevision") or {}).get("revision") == "2", 30,
               "the operator to see revision 2")
    return apps


def _image(apps: client.AppsV1Api, sc: Scenario) -> str:
    deployment = apps.read_namespaced_deployment(PRIMARY_DEPLOYMENT, sc.namespace)
    return str(deployment.spec.template.spec.containers[0].image)


def test_a_fallback_scaled_to_zero_is_skipped_for_the_next_ready_one(make_scenario: Callable[..., Scenario],
                                                                    prometheus: PrometheusServer) -> None:
    sc = _started(make_scenario, prometheus)
    apps = client.AppsV1Api(sc.api)
    apps.patch_namespaced_deployment("recommender-small", sc.namespace, {"spec": {"replicas": 0}})
    wait_until(lambda: not apps.read_namespaced_deployment("recommender-small", sc.namespace).status.ready_replicas,
               60, "recommender-small to have no ready replicas")

    sc.inject("primary", **FAILING)
    seen = _weights_until(sc, ON_POPULAR, timeout=30)
    assert all(w["distilled"] == 0 for w in seen), f"traffic went to a tier without pods: {seen}"
    assert "distilled" not in {h.get("toTier") for h in sc.status()["history"]}
    skipped = wait_until(lambda: "NoReadyReplicas" in sc.reasons() and _event(sc, "NoReadyReplicas"), 10,
                         "a NoReadyReplicas Event")
    assert skipped["type"] == "Warning" and "distilled has no ready replicas" in skipped["note"], skipped


def test_a_serving_fallback_that_loses_its_pods_is_left_for_the_next_ready_one(
        make_scenario: Callable[..., Scenario], prometheus: PrometheusServer) -> None:
    sc = _started(make_scenario, prometheus)
    sc.inject("primary", **FAILING)
    sc.wait_for_weights(ON_DISTILLED, timeout=30)
    apps = client.AppsV1Api(sc.api)
    apps.patch_namespaced_deployment("recommender-small", sc.namespace, {"spec": {"replicas": 0}})
    # Its model server still answers (the simulator has no pods), so only readiness can tell.
    sc.wait_for_weights(ON_POPULAR, timeout=30)
    skipped = wait_until(lambda: "NoReadyReplicas" in sc.reasons() and _event(sc, "NoReadyReplicas"), 10,
                         "a NoReadyReplicas Event")
    assert "distilled has no ready replicas" in skipped["note"], skipped


def test_observe_mode_never_rolls_back(make_scenario: Callable[..., Scenario],
                                       prometheus: PrometheusServer) -> None:
    sc = _started(make_scenario, prometheus, mode="Observe", creep=ROLLBACK)
    apps = _bad_rollout(sc)
    sc.inject("primary", **FAILING)
    reasons = wait_until(lambda: {"ActionWithheld", "RolledBack"} & set(r := sc.reasons()) and r, 90,
                         "ActionWithheld (or, wrongly, RolledBack)")
    assert "RolledBack" not in reasons, reasons
    assert _image(apps, sc) == "models/large:v2", "Observe changed the Deployment"
    withheld = _event(sc, "ActionWithheld")
    assert f"would roll {PRIMARY_DEPLOYMENT} back to revision 1" in withheld["note"], withheld
    assert "mode: Observe" in withheld["note"]
    time.sleep(5)  # the withheld rollback stays withheld
    assert "RolledBack" not in sc.reasons() and _image(apps, sc) == "models/large:v2"
    assert sc.status()["rollback"]["phase"] == "Withheld"


def test_a_rollback_refused_for_a_while_is_retried_until_it_succeeds(make_scenario: Callable[..., Scenario],
                                                                     prometheus: PrometheusServer) -> None:
    sc = _started(make_scenario, prometheus, creep=ROLLBACK)
    apps = _bad_rollout(sc)
    apps.patch_namespaced_deployment(PRIMARY_DEPLOYMENT, sc.namespace, {"spec": {"paused": True}})
    sc.inject("primary", **FAILING)
    wait_until(lambda: "RollbackFailed" in sc.reasons(), 90, "a RollbackFailed Event (the Deployment is paused)")
    assert "is paused" in _event(sc, "RollbackFailed")["note"]
    assert sc.status()["rollback"]["phase"] == "Retrying"
    assert _image(apps, sc) == "models/large:v2"

    apps.patch_namespaced_deployment(PRIMARY_DEPLOYMENT, sc.namespace, {"spec": {"paused": False}})
    wait_until(lambda: "RolledBack" in sc.reasons(), 90, "a RolledBack Event after the back-off")
    assert _image(apps, sc) == "models/large:v1"
    assert sc.reasons().count("RollbackFailed") == 1, "later failures of one episode are not posted again"
    wait_until(lambda: sc.status()["rollback"]["phase"] == "Done", 10, "status.rollback phase Done")


def test_a_permanent_rollback_refusal_is_reported_once(make_scenario: Callable[..., Scenario],
                                                       prometheus: PrometheusServer) -> None:
    sc = _started(make_scenario, prometheus, creep=ROLLBACK)
    apps = _bad_rollout(sc)
    # Revision 1's ReplicaSet is gone: the rollback target cannot be found, however often it is tried.
    old = wait_until(lambda: [rs for rs in apps.list_namespaced_replica_set(
        sc.namespace, label_selector=f"app={PRIMARY_DEPLOYMENT}").items
        if (rs.metadata.annotations or {}).get("deployment.kubernetes.io/revision") == "1"], 30, "revision 1's RS")
    apps.delete_namespaced_replica_set(old[0].metadata.name, sc.namespace)
    sc.inject("primary", **FAILING)
    wait_until(lambda: "RollbackFailed" in sc.reasons(), 90, "a RollbackFailed Event")
    assert "has no ReplicaSet of revision" in _event(sc, "RollbackFailed")["note"]
    time.sleep(25)  # longer than the first back-off: a transient failure would have been tried again
    assert sc.reasons().count("RollbackFailed") == 1, sc.reasons()
    rollback = sc.status()["rollback"]
    assert rollback["phase"] == "Refused" and rollback["failedAttempts"] == 1, rollback


def test_adding_a_fallback_mid_incident_keeps_traffic_off_the_failing_primary(
        make_scenario: Callable[..., Scenario], prometheus: PrometheusServer) -> None:
    sc = make_scenario(prometheus, "service")  # a selector: no route lists the tier that is not added yet
    body = sc.policy(evaluation={"minDwell": HOLD})
    fallbacks = body["spec"]["fallbacks"]
    body["spec"]["fallbacks"] = fallbacks[:1]
    sc.start_traffic()
    sc.start_operator()
    sc.apply_policy(body)
    _ready(sc)
    sc.inject("primary", **FAILING)
    sc.wait_for_weights(ON_DISTILLED, timeout=30)

    sc.patch_policy("recommender", {"spec": {"fallbacks": fallbacks}})
    generation = sc.policy_object()["metadata"]["generation"]
    deadline = time.monotonic() + 30
    while sc.status().get("observedGeneration") != generation:  # the operator has taken the edit in
        assert time.monotonic() < deadline, "the operator never observed the edit"
        _primary_never_served(sc, 0.5)
    _primary_never_served(sc, 8)
    assert sc.status()["activeTier"] == "distilled"


def test_a_corrupted_engine_state_is_repaired_and_keeps_routing(make_scenario: Callable[..., Scenario],
                                                                prometheus: PrometheusServer) -> None:
    sc = _started(make_scenario, prometheus, evaluation={"minDwell": HOLD})
    sc.inject("primary", **FAILING)
    sc.wait_for_weights(ON_DISTILLED, timeout=30)
    wait_until(lambda: (sc.status().get("engine") or {}).get("activeTier") == "distilled", 30,
               "status.engine to record the fallback")
    sc.operators[0].stop()
    engine = sc.status()["engine"]
    engine["tiers"][0]["breachStreak"] = "lots"
    engine["creepBuckets"] = "not a list"
    client.CustomObjectsApi(sc.api).patch_namespaced_custom_object_status(
        "understudy.dev", "v1alpha1", sc.namespace, "fallbackpolicies", "recommender", {"status": {"engine": engine}})

    sc.start_operator()
    repaired = wait_until(lambda: "StateRepaired" in sc.reasons() and _event(sc, "StateRepaired"), 30,
                          "a StateRepaired Event")
    assert repaired["type"] == "Warning", repaired
    assert "breachStreak" in repaired["note"] and "creepBuckets" in repaired["note"], repaired["note"]
    _primary_never_served(sc, 8)


def test_the_default_policy_on_service_routing_restores_fully(make_scenario: Callable[..., Scenario],
                                                              prometheus: PrometheusServer) -> None:
    sc = make_scenario(prometheus, "service")
    body = sc.policy()
    del body["spec"]["evaluation"]  # every evaluation default: 5 s interval, 1 m window, restoreSteps unset
    sc.start_traffic()
    sc.start_operator()
    sc.apply_policy(body)
    _ready(sc)
    sc.inject("primary", **FAILING)
    sc.wait_for_weights({"primary": 0, "distilled": 100}, timeout=90)
    sc.inject("primary")
    sc.wait_for_weights(ALL_PRIMARY, timeout=240)
    wait_until(lambda: "Restored" in sc.reasons(), 15, "a Restored Event")
    assert "RestoreStalled" not in sc.reasons()


def test_a_primary_that_fails_every_probe_is_probed_at_growing_gaps(make_scenario: Callable[..., Scenario],
                                                                    prometheus: PrometheusServer) -> None:
    """Service routing: every probe is all the traffic, so a primary that stays broken is probed less and
    less often (recoverAfter 3, then 6, then 12 clear evaluations), the count kept in status between them."""
    sc = _started(make_scenario, prometheus, "service")
    sc.inject("primary", **FAILING)

    def failed_probes() -> int:
        tiers = (sc.status().get("engine") or {}).get("tiers") or []
        return int(next((t.get("failedProbes") or 0 for t in tiers if t.get("name") == "primary"), 0))

    wait_until(lambda: failed_probes() >= 2, 150, "two failed probes of the broken primary")
    notes = [str(e.get("note")) for e in sc.events() if e.get("reason") == "TierTripped"
             and "probe failed" in str(e.get("note"))]
    assert any("(1 in a row): next probe after 6 clear evaluations" in n for n in notes), notes
    assert any("(2 in a row): next probe after 12 clear evaluations" in n for n in notes), notes
    restored = [e for e in sc.events() if e.get("reason") == "Restored"]
    assert len(restored) == 2, [e.get("note") for e in restored]  # one probe per failed probe, no more
