"""One policy never harms another: the error boundary per policy, end to end.

Beside the recommender's policy (the neighbour) run policies that each go wrong in their own way: four read
their own "Prometheus", a hostile server on loopback that answers garbage (malformed JSON, a result of the
wrong type, a body that never ends, +Inf where a request count is expected), and one must roll its primary
back while an admission policy makes the API server refuse every rollback. The neighbour still fails over
within the time it usually takes, and the policy whose rollback is refused says so in an Event of its own.
"""
from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, Iterator

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from e2e.harness.hostile_prometheus import HostilePrometheus
from e2e.harness.prometheus import PrometheusServer
from e2e.scenario import ROUTE, TIERS, Scenario, wait_until

ALL_PRIMARY = {"primary": 100, "distilled": 0, "popular-items": 0}
ON_DISTILLED = {"primary": 0, "distilled": 100, "popular-items": 0}
FAILOVER_BOUND = 30.0
"""Seconds the neighbour may take to fail over at most (the bound every failover test of the operator uses);
beside the broken policies it must also stay near the time it took alone, measured first."""
GARBAGE = (("malformed", {"shape": "not-json"}), ("wrong-type", {"shape": "result-object"}),
           ("endless", {}), ("inf", {}))
ROLLBACK_ROUTE = "rollback-route"
ADMISSION = "understudy-test-no-rollback"


@contextlib.contextmanager
def hostile_servers(namespace: str) -> Iterator[dict[str, HostilePrometheus]]:
    """One hostile server per kind of garbage; every one is stopped, also when the test fails."""
    series = [{"destination_workload_namespace": namespace, "destination_workload": t.deployment} for t in TIERS]
    with contextlib.ExitStack() as stack:
        servers: dict[str, HostilePrometheus] = {}
        for name, behaviour in GARBAGE:
            mode = {"malformed": "malformed", "wrong-type": "malformed"}.get(name, name)
            servers[name] = stack.enter_context(HostilePrometheus(mode, series=series, **behaviour))
        yield servers


@contextlib.contextmanager
def rollbacks_refused(api: Any, namespace: str, deployment: str) -> Iterator[None]:
    """A ValidatingAdmissionPolicy that refuses any change to `deployment`'s pod template; removed after."""
    admission = client.AdmissionregistrationV1Api(api)
    admission.create_validating_admission_policy({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": ADMISSION},
        "spec": {"failurePolicy": "Fail",
                 "matchConstraints": {"resourceRules": [{"apiGroups": ["apps"], "apiVersions": ["v1"],
                                                         "operations": ["UPDATE"], "resources": ["deployments"]}]},
                 "validations": [{"expression": f"object.metadata.name != '{deployment}' || "
                                                "object.spec.template == oldObject.spec.template",
                                  "message": "this Deployment's pod template is frozen"}]},
    })
    try:
        admission.create_validating_admission_policy_binding({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": ADMISSION},
            "spec": {"policyName": ADMISSION, "validationActions": ["Deny"],
                     "matchResources": {"namespaceSelector": {"matchLabels": {
                         "kubernetes.io/metadata.name": namespace}}}},
        })
        try:
            yield
        finally:
            with contextlib.suppress(ApiException):
                admission.delete_validating_admission_policy_binding(ADMISSION)
    finally:
        with contextlib.suppress(ApiException):
            admission.delete_validating_admission_policy(ADMISSION)


def refused(apps: client.AppsV1Api, namespace: str, deployment: str) -> bool:
    """Whether the admission policy is in force yet: a dry-run change of the template is denied."""
    try:
        apps.patch_namespaced_deployment(deployment, namespace, {"spec": {"template": {"metadata": {
            "annotations": {"probe": str(time.time())}}}}}, dry_run="All")
    except ApiException as err:
        return err.status in (403, 422)
    return False


def own_route(sc: Scenario) -> None:
    """A VirtualService of its own for the policy that rolls back, so its pin moves no neighbour's traffic."""
    client.CustomObjectsApi(sc.api).create_namespaced_custom_object(
        "networking.istio.io", "v1", sc.namespace, "virtualservices", {
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": ROLLBACK_ROUTE},
            "spec": {"hosts": [ROLLBACK_ROUTE], "http": [{"name": ROUTE, "route": [
                {"destination": {"host": t.deployment}, "weight": 100 if i == 0 else 0}
                for i, t in enumerate(TIERS)]}]}})


def failover(sc: Scenario) -> float:
    """Seconds from a failing primary to all of the neighbour's traffic on the first fallback."""
    injected = time.monotonic()
    sc.inject("primary", error_ratio=0.6)
    sc.wait_for_weights(ON_DISTILLED, timeout=FAILOVER_BOUND)
    return time.monotonic() - injected


def ready(sc: Scenario, name: str, status: str) -> dict[str, Any]:
    return wait_until(lambda: (c := sc.condition("Ready", name)) and c["status"] == status and c, 60,
                      f"{name} Ready={status}")


def test_garbage_signals_and_a_refused_rollback_leave_the_neighbour_on_time(
        make_scenario: Callable[..., Scenario], prometheus: PrometheusServer) -> None:
    sc = make_scenario(prometheus)
    sc.start_traffic()
    sc.start_operator("--policy-prometheus-urls", "any")
    sc.apply_policy(sc.policy())
    ready(sc, "recommender", "True")
    sc.wait_for_weights(ALL_PRIMARY)
    apps = client.AppsV1Api(sc.api)
    primary = TIERS[0].deployment
    usual = failover(sc)
    sc.inject("primary")
    sc.wait_for_weights(ALL_PRIMARY, timeout=120)

    own_route(sc)
    sc.apply_policy(sc.policy(
        "rollback-refused", routing={"istio": {"virtualServiceName": ROLLBACK_ROUTE, "routeName": ROUTE}},
        creep={"maxFallbackRatio": "0.05", "window": "60s", "action": "RollbackPrimary"}))
    # Known-good after carrying all traffic for a whole creep window; revision 2 is pinned away well before.
    wait_until(lambda: sc.status("rollback-refused").get("lastKnownGoodRevision") == "1", 150,
               "revision 1 known good")
    apps.patch_namespaced_deployment(primary, sc.namespace, {"spec": {"template": {"spec": {
        "containers": [{"name": "model", "image": "models/large:v2"}]}}}})
    wait_until(lambda: (sc.status("rollback-refused").get("primaryRevision") or {}).get("revision") == "2", 30,
               "the operator to see revision 2")

    with hostile_servers(sc.namespace) as servers, rollbacks_refused(sc.api, sc.namespace, primary):
        for name, server in servers.items():
            capacity = {"capacity": {"requestsPerReplica": "5", "scaleOnActivate": True, "maxReplicas": 4}}
            garbage = sc.policy(f"garbage-{name}", mode="Observe", signals={"prometheusURL": server.url},
                                **({"fallbacks": [{**f, **capacity} for f in sc.policy()["spec"]["fallbacks"]]}
                                   if name == "inf" else {}))
            sc.apply_policy(garbage)
        wait_until(lambda: refused(apps, sc.namespace, primary), 30, "the admission policy to refuse rollbacks")
        # Pinned to a fallback, the policy spends its creep budget (3 s of a 60 s window) and must roll back.
        sc.patch_policy("rollback-refused", {"spec": {"override": {"pinTier": "distilled"}}})
        wait_until(lambda: all(s.requests for s in servers.values()), 30, "every hostile server to be asked")
        time.sleep(10)  # creep exceeded and the refused rollback tried, on every evaluation since

        beside = failover(sc)
        print(f"neighbour failover: {usual:.1f}s alone, {beside:.1f}s beside the broken policies")

        # The refusal is the broken policy's own trouble, and it says so: an EvaluationFailed Event (or, once
        # rollback refusals are caught as such, RollbackFailed) on that policy alone.
        said = wait_until(lambda: {"EvaluationFailed", "RollbackFailed"} & set(sc.reasons("rollback-refused")), 60,
                          "the broken policy to report its refused rollback")
        print(f"the policy whose rollback was refused reported {sorted(said)}")
        assert "EvaluationFailed" not in sc.reasons(), "the neighbour never failed"
        for name in servers:  # garbage reads as missing data: evaluated, never failed
            assert (sc.condition("Ready", f"garbage-{name}") or {}).get("reason") != "EvaluationFailed", name
        assert apps.read_namespaced_deployment(primary, sc.namespace).spec.template.spec.containers[0].image == (
            "models/large:v2"), "the refused rollback did not happen"
    assert beside <= max(2 * usual, usual + 10), (usual, beside)
