"""The operator end to end: real API server, real Prometheus, real model servers, real traffic.

Each test reads as a story: a fault is injected into a model server, Prometheus sees it, the operator
(a separate process) decides, the routing object changes, and the traffic generator follows it.
"""
from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from kubernetes import client

from e2e.harness.cluster import ControlPlane
from e2e.harness.prometheus import PrometheusServer
from e2e.harness.serviceaccount import write_service_account_kubeconfig
from e2e.scenario import Scenario, wait_until

SLOW = {"latency_ms": 2500}
FAILING = {"error_ratio": 0.6}

ALL_PRIMARY = {"primary": 100, "distilled": 0, "popular-items": 0}
ON_DISTILLED = {"primary": 0, "distilled": 100, "popular-items": 0}
ON_POPULAR = {"primary": 0, "distilled": 0, "popular-items": 100}


def _ready(sc: Scenario, name: str = "recommender") -> dict[str, Any]:
    return wait_until(lambda: (c := sc.condition("Ready", name)) and c["status"] == "True" and c, 60,
                      f"{name} Ready=True")


def _started(make_scenario: Callable[..., Scenario], prometheus: PrometheusServer, backend: str = "istio",
             **spec: Any) -> Scenario:
    sc = make_scenario(prometheus, backend)
    sc.start_traffic()
    sc.start_operator()
    sc.apply_policy(sc.policy(**spec))
    _ready(sc)
    return sc


def test_chain_moves_down_on_breaches_and_restores_step_by_step(make_scenario: Callable[..., Scenario],
                                                                 prometheus: PrometheusServer) -> None:
    sc = _started(make_scenario, prometheus, evaluation={"recoverAfter": 8})
    sc.wait_for_weights(ALL_PRIMARY)

    sc.inject("primary", **SLOW)
    sc.wait_for_weights(ON_DISTILLED, timeout=30)
    assert sc.traffic is not None
    sc.traffic.wait_for_first("recommender-small", timeout=10)

    sc.inject("distilled", **FAILING)
    sc.wait_for_weights(ON_POPULAR, timeout=30)

    sc.inject("primary")
    sc.inject("distilled")
    sc.wait_for_weights(ALL_PRIMARY, timeout=120)

    history = sc.status()["history"]
    reasons = [h["reason"] for h in history]
    assert reasons.count("FallbackActivated") >= 2
    assert "RestoreStep" in reasons and reasons[-1] == "Restored"
    first = next(h for h in history if h["reason"] == "FallbackActivated")
    assert (first["fromTier"], first["toTier"], first["trigger"]) == ("primary", "distilled", "p99-latency")
    assert float(first["observed"]) > 1000 and first["threshold"] == "1000"
    events = wait_until(lambda: "Restored" in (r := sc.reasons()) and r, 10, "a Restored Event")
    assert "FallbackActivated" in events
    assert sc.condition("FallbackActive")["status"] == "False"  # type: ignore[index]


@pytest.mark.parametrize("backend", ["service", "gatewayapi"])
def test_other_backends_fall_back_and_restore(make_scenario: Callable[..., Scenario],
                                              prometheus: PrometheusServer, backend: str) -> None:
    # Service routing runs the default restore (no restoreSteps): one step, since it cannot split traffic.
    sc = _started(make_scenario, prometheus, backend, **({} if backend == "service" else
                                                          {"evaluation": {"restoreSteps": [100]}}))
    sc.wait_for_weights(ALL_PRIMARY)
    sc.inject("primary", **FAILING)
    sc.wait_for_weights(ON_DISTILLED, timeout=30)
    sc.inject("primary")
    sc.wait_for_weights(ALL_PRIMARY, timeout=60)
    wait_until(lambda: {"FallbackActivated", "Restored"} <= set(sc.reasons()), 10, "the audit Events")


def test_prometheus_outage_holds_routing(private_prometheus: PrometheusServer,
                                         make_scenario: Callable[..., Scenario]) -> None:
    # private_prometheus comes first so that it is torn down after the scenario that scrapes it.
    sc = _started(make_scenario, private_prometheus)
    sc.wait_for_weights(ALL_PRIMARY)
    private_prometheus.stop()
    try:
        wait_until(lambda: (c := sc.condition("MetricsAvailable")) and c["status"] == "False", 30,
                   "MetricsAvailable=False")
        wait_until(lambda: sc.reasons().count("MetricsMissing") == 1, 10, "one MetricsMissing Event")
        sc.inject("primary", **FAILING)  # nobody can see it: Hold must keep the routing as it is
        for _ in range(5):
            assert sc.routed_weights() == ALL_PRIMARY
            time.sleep(1)
        assert sc.reasons().count("MetricsMissing") == 1, "one Event per episode, not per evaluation"
    finally:
        private_prometheus.start()
    sc.inject("primary")
    wait_until(lambda: (c := sc.condition("MetricsAvailable")) and c["status"] == "True", 60,
               "MetricsAvailable=True after Prometheus is back")
    wait_until(lambda: "MetricsRestored" in sc.reasons(), 10, "a MetricsRestored Event")


def test_observe_mode_audits_but_never_routes(make_scenario: Callable[..., Scenario],
                                              prometheus: PrometheusServer) -> None:
    sc = _started(make_scenario, prometheus, mode="Observe")
    sc.inject("primary", **FAILING)
    wait_until(lambda: "FallbackActivated" in sc.reasons(), 30, "a FallbackActivated Event")
    assert sc.routed_weights() == ALL_PRIMARY
    assert sc.status()["activeTier"] == "distilled"  # what it would have done, for all to see


def test_pinned_tier_holds_whatever_the_signals(make_scenario: Callable[..., Scenario],
                                                prometheus: PrometheusServer) -> None:
    sc = _started(make_scenario, prometheus, override={"pinTier": "popular-items"})
    sc.wait_for_weights(ON_POPULAR, timeout=30)
    sc.inject("popular-items", **FAILING)
    for _ in range(5):
        time.sleep(1)
        assert sc.routed_weights() == ON_POPULAR
    sc.patch_policy("recommender", {"spec": {"override": None}})
    sc.wait_for_weights(ALL_PRIMARY, timeout=60)
    wait_until(lambda: {"Pinned", "Unpinned"} <= set(sc.reasons()), 10, "Pinned and Unpinned Events")


def test_new_revision_that_keeps_falling_back_is_rolled_back(make_scenario: Callable[..., Scenario],
                                                              prometheus: PrometheusServer) -> None:
    # Revision 1 becomes known-good after carrying all traffic for a whole creep window (20 s).
    sc = _started(make_scenario, prometheus,
                  creep={"maxFallbackRatio": "0.05", "window": "20s", "action": "RollbackPrimary"})
    wait_until(lambda: sc.status().get("lastKnownGoodRevision") == "1", 90, "revision 1 known good")
    apps = client.AppsV1Api(sc.api)
    apps.patch_namespaced_deployment("recommender-large", sc.namespace, {"spec": {"template": {"spec": {
        "containers": [{"name": "model", "image": "models/large:v2"}]}}}})
    wait_until(lambda: (sc.status().get("primaryRevision") or {}).get("revision") == "2", 30,
               "the operator to see revision 2")

    sc.inject("primary", **FAILING)  # revision 2 is bad
    wait_until(lambda: "RolledBack" in sc.reasons(), 60, "a RolledBack Event")
    deployment = apps.read_namespaced_deployment("recommender-large", sc.namespace)
    assert deployment.spec.template.spec.containers[0].image == "models/large:v1"
    assert deployment.metadata.annotations["deployment.kubernetes.io/revision"] == "3"
    status = sc.status()
    # Revision 1 was renumbered 3 by the rollback: 3 earns known-good status again like any revision.
    assert "lastKnownGoodRevision" not in status and status["rollback"]["phase"] == "Done", status.get("rollback")
    assert sc.condition("CreepBudgetExceeded")["status"] == "True"  # type: ignore[index]


def test_operator_killed_mid_restore_converges_without_duplicates(make_scenario: Callable[..., Scenario],
                                                                   prometheus: PrometheusServer) -> None:
    sc = _started(make_scenario, prometheus, evaluation={"restoreSteps": [50, 100], "minDwell": "6s"})
    sc.inject("primary", **FAILING)
    sc.wait_for_weights(ON_DISTILLED, timeout=30)
    sc.inject("primary")
    sc.wait_for_weights({"primary": 50, "distilled": 50}, timeout=60)
    sc.operators[0].kill()
    sc.start_operator()
    sc.wait_for_weights(ALL_PRIMARY, timeout=60)
    history = [h["reason"] for h in sc.status()["history"]]
    assert history.count("RestoreStep") == 1 and history.count("Restored") == 1, history
    # Events follow the status write that records the decision; give the last one a moment.
    events = wait_until(lambda: "Restored" in (r := sc.reasons()) and r, 10, "a Restored Event")
    assert events.count("RestoreStep") == 1 and events.count("Restored") == 1, events


def test_a_persons_edit_to_another_route_survives(make_scenario: Callable[..., Scenario],
                                                  prometheus: PrometheusServer) -> None:
    sc = _started(make_scenario, prometheus)
    custom = client.CustomObjectsApi(sc.api)
    vs = custom.get_namespaced_custom_object("networking.istio.io", "v1", sc.namespace, "virtualservices",
                                             "recommender")
    vs["spec"]["http"][0]["timeout"] = "3s"
    custom.replace_namespaced_custom_object("networking.istio.io", "v1", sc.namespace, "virtualservices",
                                            "recommender", vs)
    sc.inject("primary", **FAILING)
    sc.wait_for_weights(ON_DISTILLED, timeout=30)
    after = custom.get_namespaced_custom_object("networking.istio.io", "v1", sc.namespace, "virtualservices",
                                                "recommender")
    assert after["spec"]["http"][0]["timeout"] == "3s"
    assert after["spec"]["http"][0]["match"] == [{"headers": {"x-canary": {"exact": "1"}}}]


def test_a_broken_policy_reports_itself_and_leaves_neighbours_alone(make_scenario: Callable[..., Scenario],
                                                                    prometheus: PrometheusServer) -> None:
    sc = _started(make_scenario, prometheus)
    broken = sc.policy("broken", routing={"istio": {"virtualServiceName": "no-such-route", "routeName": "x"}})
    broken["spec"]["primary"]["deploymentName"] = "no-such-deployment"
    sc.apply_policy(broken)
    sc.inject("primary", **FAILING)
    sc.wait_for_weights(ON_DISTILLED, timeout=30)
    ready = wait_until(lambda: (c := sc.condition("Ready", "broken")) and c["status"] == "False" and c, 30,
                       "broken Ready=False")
    assert ready["reason"] == "TargetNotFound" and "no-such-route" in ready["message"]
    assert "RoutingFailed" in sc.reasons("broken")


def test_signals_the_operator_refuses_to_read_make_their_policy_not_ready(
        make_scenario: Callable[..., Scenario], prometheus: PrometheusServer) -> None:
    """A policy's own Prometheus URL (denied by default) and a custom query that cannot be held to its
    namespace are never sent; each policy says why in Ready, and the policy beside them is not disturbed."""
    sc = _started(make_scenario, prometheus)
    sc.apply_policy(sc.policy("own-prometheus", mode="Observe",
                              signals={"prometheusURL": "http://thanos.example:9090"}))
    sc.apply_policy(sc.policy("info-query", mode="Observe", triggers=[
        {"name": "inventory", "query": {"promql": "info(up)", "above": "0"}}]))
    for name, reason, says in (("own-prometheus", "PrometheusURLNotAllowed", "prometheusURL"),
                               ("info-query", "CustomQueryRefused", "trigger inventory")):
        ready = wait_until(lambda: (c := sc.condition("Ready", name)) and c["status"] == "False" and c, 30,
                           f"{name} Ready=False")
        assert ready["reason"] == reason and says in ready["message"], ready
    assert _ready(sc)["reason"] == "Evaluating"


def test_two_replicas_elect_one_leader_and_the_standby_takes_over(make_scenario: Callable[..., Scenario],
                                                                  prometheus: PrometheusServer) -> None:
    sc = make_scenario(prometheus)
    sc.start_traffic()
    lease = ("--leader-election", "--lease-namespace", sc.namespace, "--lease-name", "understudy")
    first = sc.start_operator(*lease, "--identity", "replica-a")
    sc.start_operator(*lease, "--identity", "replica-b")
    sc.apply_policy(sc.policy(evaluation={"restoreSteps": [100]}))
    _ready(sc)
    coordination = client.CoordinationV1Api(sc.api)
    holder = wait_until(lambda: coordination.read_namespaced_lease("understudy", sc.namespace).spec.holder_identity,
                        30, "a Lease holder")
    leader = first if holder == "replica-a" else sc.operators[1]

    sc.inject("primary", **FAILING)
    sc.wait_for_weights(ON_DISTILLED, timeout=30)
    wait_until(lambda: "FallbackActivated" in sc.reasons(), 10, "a FallbackActivated Event")
    assert sc.reasons().count("FallbackActivated") == 1, "only the leader acts"

    leader.kill()
    standby = "replica-b" if holder == "replica-a" else "replica-a"
    wait_until(lambda: coordination.read_namespaced_lease("understudy", sc.namespace).spec.holder_identity
               == standby, 45, "the standby to take the Lease")
    sc.inject("primary")
    sc.wait_for_weights(ALL_PRIMARY, timeout=60)
    restored = wait_until(lambda: "Restored" in (r := sc.reasons()) and r, 10, "a Restored Event")
    assert restored.count("FallbackActivated") == 1 and restored.count("Restored") == 1, restored


def test_a_fallback_too_small_is_skipped_scaled_up_then_scaled_back(make_scenario: Callable[..., Scenario],
                                                                    prometheus: PrometheusServer) -> None:
    sc = make_scenario(prometheus)
    sc.start_traffic(rate=40)
    sc.start_operator()
    policy = sc.policy(evaluation={"restoreSteps": [100], "recoverAfter": 3})
    policy["spec"]["fallbacks"][0]["capacity"] = {"requestsPerReplica": 5, "scaleOnActivate": True,
                                                  "maxReplicas": 12}
    sc.apply_policy(policy)
    _ready(sc)
    apps = client.AppsV1Api(sc.api)

    sc.inject("primary", **FAILING)
    # two replicas carry 10 requests/s, not 40: distilled is skipped, and scaled up to take over
    wait_until(lambda: "CapacityInsufficient" in sc.reasons(), 30, "a CapacityInsufficient Event")
    wait_until(lambda: (apps.read_namespaced_deployment("recommender-small", sc.namespace).spec.replicas or 0) >= 7,
               30, "distilled scaled up to carry the load")
    wait_until(lambda: "ScaledUp" in sc.reasons(), 10, "a ScaledUp Event")
    sc.wait_for_weights(ON_DISTILLED, timeout=60)

    sc.inject("primary")
    sc.wait_for_weights(ALL_PRIMARY, timeout=60)
    wait_until(lambda: apps.read_namespaced_deployment("recommender-small", sc.namespace).spec.replicas == 2,
               30, "distilled scaled back to its 2 replicas")
    wait_until(lambda: "ScaledDown" in sc.reasons(), 10, "a ScaledDown Event")
    assert not sc.status().get("scaledTiers")


def test_the_charts_service_account_is_enough_for_a_full_failover(
        make_scenario: Callable[..., Scenario], prometheus: PrometheusServer, control_plane: ControlPlane,
        tmp_path: Path) -> None:
    sc = make_scenario(prometheus)
    system = f"{sc.namespace}-sys"
    chart = Path(__file__).resolve().parents[2] / "charts" / "understudy"
    control_plane.run_helm("install", "understudy", str(chart), "-n", system, "--create-namespace",
                           "--set", f"watchNamespaces={{{sc.namespace}}}", "--wait=false")
    try:
        kubeconfig = write_service_account_kubeconfig(control_plane, system, "understudy", tmp_path / "sa")
        sc.start_traffic()
        operator = sc.start_operator(kubeconfig=kubeconfig)
        sc.apply_policy(sc.policy(evaluation={"restoreSteps": [100]}))
        _ready(sc)
        sc.inject("primary", **FAILING)
        sc.wait_for_weights(ON_DISTILLED, timeout=30)
        sc.inject("primary")
        sc.wait_for_weights(ALL_PRIMARY, timeout=60)
        wait_until(lambda: {"FallbackActivated", "Restored"} <= set(sc.reasons()), 10, "the audit Events")
        denied = [line for line in operator.log_tail(2000).splitlines()
                  if re.search(r"forbidden|\b403\b|unauthori[sz]ed", line, re.IGNORECASE)]
        assert denied == []
    finally:
        control_plane.run_helm("uninstall", "understudy", "-n", system, check=False)
        control_plane.run_kubectl("delete", "namespace", system, "--wait=false", check=False)


def test_drills_exercise_a_fallback_fail_fast_and_wait_out_a_real_fallback(
        make_scenario: Callable[..., Scenario], prometheus: PrometheusServer) -> None:
    drill = {"tier": "distilled", "every": "30s", "duration": "8s", "share": 20}
    sc = _started(make_scenario, prometheus, drills=[drill], evaluation={"restoreSteps": [100]})
    drilling = {"primary": 80, "distilled": 20, "popular-items": 0}

    sc.wait_for_weights(drilling, timeout=60)
    wait_until(lambda: "DrillPassed" in sc.reasons(), 40, "a passed drill")
    sc.wait_for_weights(ALL_PRIMARY, timeout=10)
    assert sc.condition("LastDrillPassed")["status"] == "True"  # type: ignore[index]

    sc.inject("distilled", **FAILING)
    sc.wait_for_weights(drilling, timeout=60)
    wait_until(lambda: "DrillFailed" in sc.reasons(), 30, "a failed drill")
    sc.wait_for_weights(ALL_PRIMARY, timeout=10)  # a failing drill never leaves traffic on the fallback
    failed = sc.condition("LastDrillPassed")
    assert failed is not None and failed["status"] == "False" and "errors" in failed["message"]
    assert any(d["result"] == "Failed" for d in sc.status()["lastDrills"])

    sc.inject("distilled")
    sc.inject("primary", **FAILING)
    sc.wait_for_weights(ON_DISTILLED, timeout=30)
    # The next drill falls due up to one period (30 s, the floor) after the fallback: as much slack as before.
    # Read from status.lastDrills, the durable trail: by now this busy policy may have spent its Event budget
    # (30 per 10 minutes), and a suppressed DrillSkipped Event is counted, not posted. With restoreSteps [100]
    # the idle, tripped primary is probed with all traffic (the half-open state), at growing gaps as the
    # probes fail (the probe backoff: 3, 6, 12, ... clear evaluations); a drill that falls due during such a
    # probe starts and is aborted as soon as the fallback serves again. Either way the drill gives way to the
    # real fallback, and the message says so.
    wait_until(lambda: any(d["result"] in ("Skipped", "Aborted") and "a fallback is serving traffic" in d["message"]
                           for d in sc.status().get("lastDrills") or []), 70,
               "a drill that gave way to a real fallback")
    assert sc.routed_weights() == ON_DISTILLED
