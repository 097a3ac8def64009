"""The writer's order against a real API server: status (the fence) first, routing after it, and the
Events that describe a move only once the routing write has succeeded.

The routing write is refused for real: a ValidatingAdmissionPolicy denies every update of the test's
VirtualService (HTTP 422), then is removed. Meanwhile the policy must say Ready=False, retry with backoff,
and post no Event that claims the traffic moved.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from e2e.harness.cluster import ControlPlane
from e2e.harness.prometheus import PrometheusServer
from e2e.scenario import ROUTING_NAME, Scenario, wait_until

CRD = Path(__file__).resolve().parents[2] / "crds" / "understudy.dev_fallbackpolicies.yaml"
FAILING = {"error_ratio": 0.6}
ALL_PRIMARY = {"primary": 100, "distilled": 0, "popular-items": 0}
ON_DISTILLED = {"primary": 0, "distilled": 100, "popular-items": 0}
ISTIO = ("networking.istio.io", "v1", "virtualservices")


@pytest.fixture
def scenario(control_plane: ControlPlane, kube_api: Any, namespace: str, prometheus: PrometheusServer,
             tmp_path: Path) -> Iterator[Scenario]:
    control_plane.run_kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    control_plane.run_kubectl("wait", "--for=condition=Established", "--timeout=60s",
                              "crd/fallbackpolicies.understudy.dev")
    with Scenario(control_plane, prometheus, namespace, kube_api, "istio", tmp_path) as sc:
        yield sc


def _probe_refused(sc: Scenario) -> bool:
    """Whether an update of the VirtualService is refused now (a dry run: nothing is changed)."""
    try:
        client.CustomObjectsApi(sc.api).patch_namespaced_custom_object(
            *ISTIO[:2], sc.namespace, ISTIO[2], ROUTING_NAME,
            {"metadata": {"labels": {"probe": "1"}}}, dry_run="All")
    except ApiException as err:
        if err.status == 422:
            return True
        raise
    return False


class RefusedRouting:
    """A ValidatingAdmissionPolicy (and its binding) that refuses updates of VirtualServices in one namespace."""

    def __init__(self, sc: Scenario) -> None:
        self.sc = sc
        self.name = f"refuse-routing-{sc.namespace}"[:63]
        self.admission = client.AdmissionregistrationV1Api(sc.api)

    def __enter__(self) -> RefusedRouting:
        self.admission.create_validating_admission_policy({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": self.name},
            "spec": {"failurePolicy": "Fail",
                     "matchConstraints": {"resourceRules": [{
                         "apiGroups": ["networking.istio.io"], "apiVersions": ["*"], "operations": ["UPDATE"],
                         "resources": ["virtualservices"]}]},
                     "validations": [{"expression": "false", "reason": "Invalid",
                                      "message": "routing writes are refused by the test"}]}})
        self.admission.create_validating_admission_policy_binding({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": self.name},
            "spec": {"policyName": self.name, "validationActions": ["Deny"],
                     "matchResources": {"namespaceSelector": {"matchLabels": {
                         "kubernetes.io/metadata.name": self.sc.namespace}}}}})
        # admission reads policies from a cache that lags the API by some seconds
        wait_until(lambda: _probe_refused(self.sc), 60, "the admission policy to refuse routing writes", 0.5)
        return self

    def remove(self) -> None:
        for delete in (self.admission.delete_validating_admission_policy_binding,
                       self.admission.delete_validating_admission_policy):
            try:
                delete(self.name)
            except ApiException as err:
                if err.status != 404:
                    raise

    def __exit__(self, *exc: object) -> None:
        self.remove()


def test_a_refused_routing_write_keeps_ready_false_retries_and_holds_the_move_events(scenario: Scenario) -> None:
    sc = scenario
    sc.start_traffic()
    sc.start_operator()
    sc.apply_policy(sc.policy(evaluation={"restoreSteps": [100]}))
    wait_until(lambda: (c := sc.condition("Ready")) and c["status"] == "True", 60, "Ready=True")
    sc.wait_for_weights(ALL_PRIMARY)

    with RefusedRouting(sc) as refused:
        sc.inject("primary", **FAILING)
        # The decision is on record in status (the fence), but the routing write is refused.
        wait_until(lambda: sc.status().get("activeTier") == "distilled", 30, "status to record the fallback")
        ready = wait_until(lambda: (c := sc.condition("Ready")) and c["status"] == "False"
                           and re.search(r"attempt [2-9]", c["message"]) and c, 30,
                           "Ready=False that counts its retries")
        assert ready["reason"] == "Invalid", ready
        assert "refused by the test" in ready["message"] and "next attempt in" in ready["message"], ready
        assert sc.routed_weights() == ALL_PRIMARY
        reasons = sc.reasons()
        assert "FallbackActivated" not in reasons, f"a move was announced that did not happen: {reasons}"
        assert reasons.count("RoutingFailed") == 1, reasons
        refused.remove()
        wait_until(lambda: not _probe_refused(sc), 60, "the admission policy to be gone", 0.5)

        sc.wait_for_weights(ON_DISTILLED, timeout=90)  # the next retry, at most 60 s of backoff away
    wait_until(lambda: (c := sc.condition("Ready")) and c["status"] == "True", 30, "Ready=True again")
    reasons = wait_until(lambda: {"FallbackActivated", "RoutingRestored"} <= set(r := sc.reasons()) and r, 10,
                         "the held FallbackActivated Event and RoutingRestored")
    assert reasons.count("FallbackActivated") == 1 and reasons.count("RoutingFailed") == 1, reasons
