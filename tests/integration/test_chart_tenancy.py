"""The chart's controls for a shared cluster on the real control plane (issue 13 §1, §5, §6; security review
M1, M2, M4, T9, T10, T12): authors need the rights they delegate, status is the operator's alone, tenants
get FallbackPolicies through the built-in roles, and a ResourceQuota caps policies per namespace.

Identities are ServiceAccounts of the tenant namespace acting through TokenRequest kubeconfigs; the admin
(system:masters) only sets the scene.
"""
from __future__ import annotations

import contextlib
import copy
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from e2e.harness import ControlPlane
from e2e.harness.serviceaccount import write_service_account_kubeconfig
from tests.integration.test_chart import (  # noqa: F401 - fixtures
    CHART,
    GROUP,
    PLURAL,
    POLICY,
    VERSION,
    installed,
    other_namespace,
    service_account,
    wait_for,
)

pytestmark = pytest.mark.cluster


def policy(name: str, **spec: Any) -> dict[str, Any]:
    body = copy.deepcopy(POLICY)
    body["metadata"] = {"name": name}
    body["spec"].update(spec)
    return body


def grant(kube_api: client.ApiClient, namespace: str, user: str, role: str, kind: str = "ClusterRole") -> None:
    client.RbacAuthorizationV1Api(kube_api).create_namespaced_role_binding(namespace, {
        "metadata": {"name": f"{user}-{role}"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": user, "namespace": namespace}],
    })


def role(kube_api: client.ApiClient, namespace: str, name: str, rules: list[dict[str, Any]]) -> None:
    client.RbacAuthorizationV1Api(kube_api).create_namespaced_role(namespace, {"metadata": {"name": name},
                                                                               "rules": rules})


class Tenant:
    """kubectl as one ServiceAccount of the tenant namespace."""

    def __init__(self, cp: ControlPlane, kube_api: client.ApiClient, namespace: str, name: str, tmp: Path) -> None:
        client.CoreV1Api(kube_api).create_namespaced_service_account(namespace, {"metadata": {"name": name}})
        self.cp, self.namespace, self.name = cp, namespace, name
        self.user = service_account(namespace, name)
        self.kubeconfig = write_service_account_kubeconfig(cp, namespace, name, tmp / f"{name}.kubeconfig")

    def kubectl(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {**self.cp.subprocess_env(), "KUBECONFIG": str(self.kubeconfig)}
        return subprocess.run([str(self.cp.kubectl), "-n", self.namespace, *args], env=env, input=input,
                              capture_output=True, text=True, timeout=60)

    def create(self, body: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        return self.kubectl("create", "-f", "-", input=json.dumps(body))

    def patch_status(self, name: str) -> subprocess.CompletedProcess[str]:
        """A forged scale-back size: one the CRD admits (at most 1000), so only the admission policy stops it."""
        return self.kubectl("patch", "fbp", name, "--subresource=status", "--type=merge",
                            "-p", '{"status": {"scaledTiers": [{"tier": "distilled", "replicas": 900}]}}')


def admitted(done: subprocess.CompletedProcess[str]) -> bool:
    return done.returncode == 0


ROUTES = {"istio": {"virtualServiceName": "recommender"}}
SERVICE = {"service": {"name": "recommender"}}
SCALED = [{**POLICY["spec"]["fallbacks"][0],
           "capacity": {"requestsPerReplica": 10, "scaleOnActivate": True, "maxReplicas": 1000}}]


@pytest.fixture
def shared(control_plane: ControlPlane, kube_api: client.ApiClient, namespace: str, other_namespace: str,
           installed: Callable[..., str], tmp_path: Path) -> dict[str, Tenant]:
    """The chart watching the tenant namespace, and five people in it.

    alice: edit, and patch on VirtualServices/HTTPRoutes (Istio's and Gateway API's own roles would give it);
    bob: edit only; carol: FallbackPolicies and Services, no Deployments; dave: a platform team's
    `fallbackpolicies/*` role, status included; erin: view.
    """
    installed("understudy", "--set", f"watchNamespaces={{{other_namespace}}}", "--set", "rbac.kopfObservers=false")
    ns = other_namespace
    people = {name: Tenant(control_plane, kube_api, ns, name, tmp_path)
              for name in ("alice", "bob", "carol", "dave", "erin")}
    role(kube_api, ns, "routes", [
        {"apiGroups": ["networking.istio.io"], "resources": ["virtualservices"], "verbs": ["get", "patch"]},
        {"apiGroups": ["gateway.networking.k8s.io"], "resources": ["httproutes"], "verbs": ["get", "patch"]}])
    role(kube_api, ns, "policies-and-services", [
        {"apiGroups": ["understudy.dev"], "resources": ["fallbackpolicies"], "verbs": ["create", "get"]},
        {"apiGroups": [""], "resources": ["services"], "verbs": ["patch"]}])
    role(kube_api, ns, "platform", [
        {"apiGroups": ["understudy.dev"], "resources": ["fallbackpolicies", "fallbackpolicies/status"],
         "verbs": ["get", "patch"]}])
    grant(kube_api, ns, "alice", "edit")
    grant(kube_api, ns, "alice", "routes", "Role")
    grant(kube_api, ns, "bob", "edit")
    grant(kube_api, ns, "carol", "policies-and-services", "Role")
    grant(kube_api, ns, "dave", "platform", "Role")
    grant(kube_api, ns, "erin", "view")
    # The aggregation controller fills edit/view, and the API server loads the admission policies, a
    # moment after the install: wait until both show.
    probe = policy("probe", routing=ROUTES)
    wait_for("edit to include FallbackPolicies", lambda: people["bob"].kubectl(
        "auth", "can-i", "create", "fallbackpolicies.understudy.dev").returncode == 0)
    wait_for("the author-rights policy in force",
             lambda: "may not patch" in people["bob"].kubectl("create", "--dry-run=server", "-f", "-",
                                                              input=json.dumps(probe)).stderr)
    return people


def test_authors_need_the_rights_they_delegate(shared: dict[str, Tenant], other_namespace: str) -> None:
    alice, bob, carol = shared["alice"], shared["bob"], shared["carol"]
    ns = other_namespace
    assert admitted(alice.create(policy("alices", routing=ROUTES)))

    refused = bob.create(policy("bobs", routing=ROUTES))
    assert not admitted(refused)
    assert (f"{bob.user} may not patch VirtualService recommender in {ns}, so it may not have Understudy "
            "rewrite its weights") in refused.stderr, refused.stderr
    refused = bob.create(policy("bobs", routing={"gatewayAPI": {"httpRouteName": "recommender"}}))
    assert f"{bob.user} may not patch HTTPRoute recommender in {ns}" in refused.stderr, refused.stderr
    # edit may patch Services and Deployments: bob may have them switched, rolled back and scaled.
    assert admitted(bob.create(policy("bobs", routing=SERVICE, creep={"action": "RollbackPrimary"},
                                      fallbacks=SCALED)))

    # carol may write policies and patch Services, but not Deployments.
    assert admitted(carol.create(policy("carols", routing=SERVICE)))
    refused = carol.create(policy("rollback", routing=SERVICE, creep={"action": "RollbackPrimary"}))
    assert (f"{carol.user} may not patch Deployment recommender-large in {ns}, so it may not have Understudy "
            "roll it back (creep.action: RollbackPrimary)") in refused.stderr, refused.stderr
    refused = carol.create(policy("scale", routing=SERVICE, fallbacks=SCALED))
    assert (f"{carol.user} may not patch every Deployment it would have Understudy scale "
            f"(capacity.scaleOnActivate) in {ns}: recommender-small") in refused.stderr, refused.stderr

    # An update is judged by its own author: bob may not retarget alice's route, but may label it.
    edit = bob.kubectl("patch", "fbp", "alices", "--type=merge", "-p", '{"spec": {"mode": "Observe"}}')
    assert not admitted(edit) and "may not patch VirtualService recommender" in edit.stderr, edit.stderr
    assert admitted(bob.kubectl("label", "fbp", "alices", "team=search"))


def test_status_is_written_by_the_operator_alone(shared: dict[str, Tenant], kube_api: client.ApiClient,
                                                 control_plane: ControlPlane, namespace: str,
                                                 other_namespace: str, tmp_path: Path) -> None:
    alice, dave, erin = shared["alice"], shared["dave"], shared["erin"]
    assert admitted(alice.create(policy("recommender", routing=ROUTES)))

    # A namespace editor has FallbackPolicies through `edit`, never their status.
    denied = alice.patch_status("recommender")
    assert not admitted(denied) and "forbidden" in denied.stderr.lower(), denied.stderr
    assert re.search(r'cannot (get|patch) resource "fallbackpolicies/status"', denied.stderr), denied.stderr
    # A role that does grant status (a platform team's) still meets the admission policy.
    refused = dave.patch_status("recommender")
    operator = service_account(namespace, "understudy")
    assert (f"{dave.user} may not write the status of FallbackPolicy recommender: only the Understudy operator "
            f"({operator}) does") in refused.stderr, refused.stderr
    # The admin too: status is what the operator acts on.
    with pytest.raises(ApiException) as admin:
        client.CustomObjectsApi(kube_api).patch_namespaced_custom_object_status(
            GROUP, VERSION, other_namespace, PLURAL, "recommender", {"status": {"activeTier": "distilled"}})
    assert admin.value.status == 403 and "only the Understudy operator" in admin.value.body

    # The operator patches status without reading it first (kubectl would GET it, which it may not).
    kubeconfig = write_service_account_kubeconfig(control_plane, namespace, "understudy", tmp_path / "op")
    with contextlib.closing(config.new_client_from_config(config_file=str(kubeconfig))) as as_operator:
        client.CustomObjectsApi(as_operator).patch_namespaced_custom_object_status(
            GROUP, VERSION, other_namespace, PLURAL, "recommender", {"status": {"activeTier": "primary"}})

    listed = erin.kubectl("get", "fbp", "recommender", "-o", "jsonpath={.status.activeTier}")
    assert listed.returncode == 0 and listed.stdout == "primary", listed.stderr
    assert not admitted(erin.create(policy("viewers-cannot-write", routing=SERVICE)))


def test_an_override_names_its_author_as_the_api_server_authenticated_it(
        shared: dict[str, Tenant], kube_api: client.ApiClient, other_namespace: str) -> None:
    alice = shared["alice"]
    assert admitted(alice.create(policy("recommender", routing=ROUTES)))

    def override(**fields: Any) -> subprocess.CompletedProcess[str]:
        return alice.kubectl("patch", "fbp", "recommender", "--type=merge",
                             "-p", json.dumps({"spec": {"override": fields}}))

    refused = wait_for("the override-author policy in force", lambda: (
        r := override(pinTier="distilled", by="ml-lead@example.com")).returncode != 0 and r)
    assert (f"spec.override.by names ml-lead@example.com, but {alice.user} wrote this override: name yourself "
            "(kubectl understudy does) or leave by out") in refused.stderr, refused.stderr
    assert admitted(override(pinTier="distilled", by=alice.user))
    assert admitted(override(pinTier=None, by=None))  # no name at all is no false name

    # The plugin names its user from the API server's own answer (SelfSubjectReview), which passes.
    plugin = Path(sys.executable).parent / "kubectl-understudy"
    paused = subprocess.run([str(plugin), "pause", "recommender", "-n", other_namespace, "--kubeconfig",
                             str(alice.kubeconfig)], capture_output=True, text=True, timeout=60)
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout == (f"fallbackpolicy {other_namespace}/recommender paused: routing stays as it is and no "
                             f"Deployment is changed (by {alice.user})\n")
    stored = client.CustomObjectsApi(kube_api).get_namespaced_custom_object(GROUP, VERSION, other_namespace, PLURAL,
                                                                            "recommender")
    assert stored["spec"]["override"] == {"paused": True, "by": alice.user}
    # An edit that leaves the override alone is not the override's author's business.
    client.CustomObjectsApi(kube_api).patch_namespaced_custom_object(
        GROUP, VERSION, other_namespace, PLURAL, "recommender", {"spec": {"creep": {"maxFallbackRatio": "0.2"}}})


def readme_quota() -> dict[str, Any]:
    """The ResourceQuota exactly as the chart README shows it."""
    text = (CHART / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.DOTALL)
    (quota,) = [yaml.safe_load(b) for b in (re.sub(r"^  ", "", b, flags=re.MULTILINE) for b in blocks)
                if "kind: ResourceQuota" in b]
    return quota


def test_the_readme_quota_caps_policies_per_namespace(kube_api: client.ApiClient, namespace: str,
                                                      control_plane: ControlPlane) -> None:
    control_plane.run_kubectl("apply", "--server-side", "-f", str(CHART / "crds"))
    quota = readme_quota()
    quota["metadata"]["namespace"] = namespace
    core, custom = client.CoreV1Api(kube_api), client.CustomObjectsApi(kube_api)
    key = "count/fallbackpolicies.understudy.dev"

    def counted() -> bool:
        """The quota controller learns of a new resource at its next discovery (every 30 s), and counts it for
        a quota made before then only at its full resync (5 min): a quota made afresh is counted at once."""
        found = core.list_namespaced_resource_quota(namespace).items
        if found and key in (found[0].status.used or {}):
            return True
        if found and time.monotonic() - made[0] > 10:
            core.delete_namespaced_resource_quota("fallbackpolicies", namespace)
            found = []
        if not found:
            core.create_namespaced_resource_quota(namespace, quota)
            made[0] = time.monotonic()
        return False

    made = [0.0]
    wait_for("the quota controller to count FallbackPolicies", counted, timeout=120)
    limit = int(quota["spec"]["hard"]["count/fallbackpolicies.understudy.dev"])
    for i in range(limit):
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, policy(f"p{i}"))
    with pytest.raises(ApiException) as refused:
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, policy("one-too-many"))
    assert refused.value.status == 403
    assert "exceeded quota: fallbackpolicies" in refused.value.body, refused.value.body
