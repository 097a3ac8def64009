"""The Helm chart against the real control plane: lint, server-side validation, install under Pod Security
"restricted", least-privilege RBAC proven with `kubectl auth can-i`, upgrade to two replicas with leader
election, uninstall without leftovers, and `kubectl get fbp` as the chart's ServiceAccount.

Every `helm` and `kubectl` here is the pinned binary of the harness (`control_plane.run_helm/run_kubectl`).
"""
from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from understudy.cli import build_parser

from e2e.harness import ControlPlane
from e2e.harness.cluster import free_ports
from e2e.harness.serviceaccount import write_service_account_kubeconfig

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "understudy"
GROUP, VERSION, PLURAL = "understudy.dev", "v1alpha1", "fallbackpolicies"
INSTANCE = "app.kubernetes.io/instance"
HA = ("--set", "replicaCount=2", "--set", "leaderElection.enabled=true")
MONITORING = ("--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.prometheusRule.enabled=true",
              "--set", "metrics.grafanaDashboard.enabled=true")
NETWORK_POLICY = ("--set", "networkPolicy.enabled=true", "--set", "networkPolicy.apiServerCIDRs={198.51.100.1/32}",
                  "--set-json", 'networkPolicy.prometheusPeers=[{"namespaceSelector": {"matchLabels": '
                  '{"kubernetes.io/metadata.name": "monitoring"}}, "podSelector": {"matchLabels": '
                  '{"app.kubernetes.io/name": "prometheus"}}}]')
TENANT_ROLE = "rbac.authorization.k8s.io/aggregate-to-"
"""Labels of the ClusterRoles that give tenants FallbackPolicies through edit/view: nothing for the operator."""


def operator_roles(roles: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in roles if not any(k.startswith(TENANT_ROLE) for k in r["metadata"].get("labels", {}))]


# ---- helpers ---------------------------------------------------------------------------------------------


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 90.0) -> Any:
    """Poll until probe returns something truthy; fail with the last value seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.25)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}; last value: {last!r}")


def helm(cp: ControlPlane, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = cp.run_helm(*args, check=False, timeout=240)
    if check and done.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


def kubectl(cp: ControlPlane, *args: str, input: str | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
    done = cp.run_kubectl(*args, input=input, check=False, timeout=120)
    if check and done.returncode != 0:
        pytest.fail(f"kubectl {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


def render(cp: ControlPlane, release: str, namespace: str, *values: str) -> list[dict[str, Any]]:
    out = helm(cp, "template", release, str(CHART), "--namespace", namespace, *values).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def of_kind(docs: Sequence[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def service_account(namespace: str, name: str) -> str:
    return f"system:serviceaccount:{namespace}:{name}"


def can_i(cp: ControlPlane, user: str, verb: str, resource: str, namespace: str | None,
          subresource: str | None = None) -> bool:
    """`kubectl auth can-i` as another user (the admin impersonates); exit 0 is yes, 1 is no."""
    args = ["auth", "can-i", verb, resource, f"--as={user}", "--quiet"]
    args += ["--namespace", namespace] if namespace else ["--all-namespaces"]
    if subresource:
        args.append(f"--subresource={subresource}")
    done = kubectl(cp, *args, check=False)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode == 0


def label_restricted(core: client.CoreV1Api, namespace: str) -> None:
    labels = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn", "audit")}
    labels["pod-security.kubernetes.io/enforce-version"] = "latest"
    core.patch_namespace(namespace, {"metadata": {"labels": labels}})


def running_pods(core: client.CoreV1Api, namespace: str, release: str) -> list[client.V1Pod]:
    pods = core.list_namespaced_pod(namespace, label_selector=f"{INSTANCE}={release}").items
    return [p for p in pods if p.metadata.deletion_timestamp is None and p.status.phase == "Running"
            and any(c.type == "Ready" and c.status == "True" for c in (p.status.conditions or []))]


@pytest.fixture
def other_namespace(kube_api: client.ApiClient) -> Iterator[str]:
    """A second namespace (a watched namespace in namespaced mode, or an unwatched one)."""
    core = client.CoreV1Api(kube_api)
    name = f"t-chart-other-{int(time.time() * 1000) % 10**8}"
    core.create_namespace({"metadata": {"name": name, "labels": {"understudy.e2e/test": "true"}}})
    try:
        yield name
    finally:
        with contextlib.suppress(ApiException):
            core.delete_namespace(name, propagation_policy="Background")


@pytest.fixture
def installed(control_plane: ControlPlane, namespace: str) -> Iterator[Callable[..., str]]:
    """Install the chart (once per test) into `namespace`; uninstalled afterwards if still there."""
    releases: list[str] = []

    def install(release: str, *values: str) -> str:
        done = helm(control_plane, "install", release, str(CHART), "--namespace", namespace,
                    "--wait", "--timeout", "120s", *values)
        releases.append(release)
        return done.stdout + done.stderr

    yield install
    for release in releases:
        helm(control_plane, "uninstall", release, "--namespace", namespace, "--wait", check=False)
        status_admission_released(control_plane, namespace)


def status_admission_released(control_plane: ControlPlane, namespace: str) -> None:
    """Wait until a status write by someone other than the uninstalled operator is admitted again.

    The API server's admission follows deleted ValidatingAdmissionPolicies from a cache, some seconds behind
    the objects: a cluster-wide release's status-writer policy would otherwise still refuse the next test's
    operator. A dry-run status patch by the admin, in `namespace`, is what that policy refused.
    """
    with contextlib.closing(control_plane.api_client()) as api:
        custom = client.CustomObjectsApi(api)
        probe = {**POLICY, "metadata": {"name": "admission-probe"}}
        with contextlib.suppress(ApiException):
            custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, probe)

        def admitted() -> bool:
            try:
                custom.patch_namespaced_custom_object_status(
                    GROUP, VERSION, namespace, PLURAL, "admission-probe", {"status": {"observedGeneration": 1}},
                    dry_run="All")
            except ApiException as refused:
                if refused.status != 403:
                    raise
                return False
            return True

        wait_for("status writes admitted again after the uninstall", admitted, timeout=60)


# ---- rendering: lint and schema ---------------------------------------------------------------------------


@pytest.mark.parametrize("values", [(), HA, ("--set", "watchNamespaces={ml,search}"), MONITORING,
                                    (*HA, *MONITORING, *NETWORK_POLICY, "--set", "watchNamespaces={ml}",
                                     "--set", "rbac.kopfObservers=false")],
                         ids=["default", "ha", "namespaced", "monitoring", "everything"])
def test_helm_lint_strict(control_plane: ControlPlane, values: tuple[str, ...]) -> None:
    done = helm(control_plane, "lint", "--strict", str(CHART), *values)
    assert "0 chart(s) failed" in done.stdout
    assert "[WARNING]" not in done.stdout and "[ERROR]" not in done.stdout, done.stdout


@pytest.mark.parametrize(("values", "message"), [
    (("--set", "replicaCount=2"), "leaderElection"),
    (("--set", "replicaCount=0"), "replicaCount"),
    (("--set", "replicaCont=2"), "replicaCont"),
    (("--set", "runAsUser=0"), "runAsUser"),
    (("--set", "prometheus.url=prometheus:9090"), "prometheus"),
    (("--set", "watchNamespaces={Not_A_Namespace}"), "watchNamespaces"),
    (("--set", "metrics.service.enabled=false", "--set", "metrics.serviceMonitor.enabled=true"), "metrics.service"),
    ((*HA, "--set", "podDisruptionBudget.minAvailable=2"), "minAvailable"),
    (("--set", "extraArgs={leader-election}"), "extraArgs"),
    (("--set", "prometheus.queryTimeout=0.0"), "queryTimeout"),
    (("--set", "networkPolicy.enabled=true"), "networkPolicy.apiServerCIDRs"),
    (("--set", "customPromQL.namespaceLabel=not-a-label"), "namespaceLabel"),
    (("--set", "prometheus.url=http://user:secret@prometheus:9090"), "prometheus/url"),
    (("--set", "prometheus.policyURLs.mode=sometimes"), "mode"),
    (("--set", "prometheus.policyURLs.allowed={http://thanos:9090}"), "mode=allowlist"),
    (("--set", "prometheus.policyURLs.mode=allowlist", "--set", "prometheus.policyURLs.allowed={http://thanos:9090/?x=}"),
     "allowed"),
    (("--set", "prometheus.auth.username=understudy"), "passwordSecret"),
    (("--set", "prometheus.auth.bearerTokenSecret=t", "--set", "prometheus.auth.username=u",
      "--set", "prometheus.auth.passwordSecret=p"), "not both"),
    (("--set", "prometheus.headers.X-Scope-OrgID=a\nInjected: b"), "headers"),
], ids=["replicas-without-leader-election", "no-replicas", "typo", "root", "url-without-scheme",
        "bad-namespace", "servicemonitor-without-service", "undrainable-pdb", "arg-not-a-flag",
        "zero-timeout-string", "network-policy-without-api-server", "promql-label-not-a-label",
        "url-with-password", "unknown-url-mode", "allowlist-without-its-mode", "allowed-url-with-query",
        "username-without-password", "bearer-and-basic", "header-with-newline"])
def test_schema_and_templates_reject_bad_values(control_plane: ControlPlane, values: tuple[str, ...],
                                                message: str) -> None:
    done = helm(control_plane, "template", "understudy", str(CHART), *values, check=False)
    assert done.returncode != 0, f"accepted {values}"
    assert message in done.stderr, done.stderr


def test_default_render_is_secure_and_least_privilege(control_plane: ControlPlane) -> None:
    docs = render(control_plane, "understudy", "understudy-system")
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["ClusterRole", "ClusterRole", "ClusterRole", "ClusterRole", "ClusterRoleBinding",
                     "ClusterRoleBinding", "Deployment", "Service", "ServiceAccount", "ValidatingAdmissionPolicy",
                     "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding",
                     "ValidatingAdmissionPolicyBinding", "ValidatingAdmissionPolicyBinding"]
    (deployment,) = of_kind(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert container["command"] == ["understudy", "run"]
    assert "--identity=$(POD_NAME)" in container["args"]
    assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in container["env"]
    assert not any(a.startswith("--namespace") or a.startswith("--lease") for a in container["args"])
    assert "--prometheus-url=http://prometheus-operated.monitoring.svc:9090" in container["args"]
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}, "one replica without a Lease: never two at once"
    observer = next(r for r in of_kind(docs, "ClusterRole") if r["metadata"]["name"].endswith("-observer"))
    assert observer["rules"] == [{"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
                                  "verbs": ["list", "watch"]}], "cluster-wide, kopf never lists namespaces"
    for role in operator_roles(of_kind(docs, "ClusterRole")):
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], (role["metadata"]["name"], rule)
            assert "secrets" not in rule["resources"]
            assert not {"delete", "deletecollection", "update", "escalate", "bind", "impersonate"} & set(rule["verbs"])
    # Tenants get FallbackPolicies through edit/admin/view, never their status (the operator's alone).
    tenant = {r["metadata"]["name"]: r["rules"] for r in of_kind(docs, "ClusterRole") if r not in operator_roles([r])}
    assert {resource for rules in tenant.values() for rule in rules for resource in rule["resources"]} == {
        "fallbackpolicies"}
    assert "--no-confine-custom-promql" not in container["args"], "custom PromQL is confined by default"


def test_namespaced_render_has_no_cluster_wide_workload_access(control_plane: ControlPlane) -> None:
    docs = render(control_plane, "understudy", "understudy-system", "--set", "watchNamespaces={ml,search}",
                  "--set", "rbac.kopfObservers=false")
    assert operator_roles(of_kind(docs, "ClusterRole")) == [] and of_kind(docs, "ClusterRoleBinding") == []
    assert sorted(r["metadata"]["namespace"] for r in of_kind(docs, "Role")) == ["ml", "search"]
    for binding in of_kind(docs, "ValidatingAdmissionPolicyBinding"):  # never judges another release's policies
        assert binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"] == [
            {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["ml", "search"]}]
    assert sorted(b["metadata"]["namespace"] for b in of_kind(docs, "RoleBinding")) == ["ml", "search"]
    (container,) = of_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"]
    assert [a for a in container["args"] if a.startswith("--namespace")] == ["--namespace=ml", "--namespace=search"]


def test_ha_render_has_lease_rbac_pdb_and_rolling_update(control_plane: ControlPlane) -> None:
    docs = render(control_plane, "understudy", "understudy-system", *HA)
    (deployment,) = of_kind(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert {"--leader-election", "--lease-name=understudy-leader", "--lease-namespace=understudy-system"} <= set(args)
    (pdb,) = of_kind(docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    (lease_role,) = of_kind(docs, "Role")
    assert lease_role["metadata"]["namespace"] == "understudy-system"
    assert lease_role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["understudy-leader"],
         "verbs": ["get", "update", "patch"]},
    ]


NAMESPACED = ("--set", "watchNamespaces={ml,search}", "--set", "prometheus.queryTimeout=0.5")
AUTHENTICATED = ("--set", "prometheus.url=https://mimir.monitoring.svc:8080/prometheus",
                 "--set", "prometheus.policyURLs.mode=allowlist",
                 "--set", "prometheus.policyURLs.allowed={http://thanos.monitoring.svc:9090/prom}",
                 "--set", "prometheus.policyURLs.queryTimeout=0.5",
                 "--set", "prometheus.maxAnswerBytes=4194304", "--set", "prometheus.maxCustomAnswerBytes=4096",
                 "--set", "prometheus.auth.username=understudy", "--set", "prometheus.auth.passwordSecret=prom-basic",
                 "--set", "prometheus.tls.caSecret=prom-ca", "--set", "prometheus.tls.caKey=bundle.pem",
                 "--set", "prometheus.tls.clientCertSecret=prom-client",
                 "--set", "prometheus.headers.X-Scope-OrgID=team-a")


def test_authenticated_render_mounts_every_secret_the_flags_name(control_plane: ControlPlane) -> None:
    from understudy.cli import prometheus_access

    (deployment,) = of_kind(render(control_plane, "understudy", "understudy-system", *AUTHENTICATED), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = build_parser().parse_args([*container["command"][1:], *container["args"]])
    access = prometheus_access(args)
    assert [str(u) for u in access.policy_urls.allowed] == ["http://thanos.monitoring.svc:9090/prom"]
    assert (access.policy_timeout, access.max_answer_bytes, access.max_custom_answer_bytes) == (0.5, 4194304, 4096)
    credentials = access.credentials
    assert credentials is not None and credentials.username == "understudy"
    assert credentials.headers == (("X-Scope-OrgID", "team-a"),)
    secrets = {v["name"]: v["secret"] for v in pod["volumes"] if "secret" in v}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    for path, secret, key in ((credentials.password_file, "prom-basic", "password"),
                              (credentials.ca_file, "prom-ca", "bundle.pem"),
                              (credentials.cert_file, "prom-client", "tls.crt"),
                              (credentials.key_file, "prom-client", "tls.key")):
        directory, file = str(path).rsplit("/", 1)
        volume = secrets[mounts[directory]]
        assert volume["secretName"] == secret and {"key": key, "path": file} in volume["items"]
    assert not any("prom-basic" in a or "password=" in a for a in container["args"])


@pytest.mark.parametrize("values", [(), HA, NAMESPACED], ids=["default", "ha", "namespaced"])
def test_rendered_command_line_is_what_understudy_run_accepts(control_plane: ControlPlane,
                                                             values: tuple[str, ...]) -> None:
    (deployment,) = of_kind(render(control_plane, "understudy", "understudy-system", *values), "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    args = build_parser().parse_args([*container["command"][1:], *container["args"]])
    assert args.policy_prometheus_urls == "deny" and args.allowed_prometheus_url == []
    rendered = yaml.safe_load(helm(control_plane, "show", "values", str(CHART)).stdout)
    assert args.command == "run"
    assert args.prometheus_url == rendered["prometheus"]["url"]
    assert args.metrics_port == rendered["metrics"]["port"] and args.liveness_port == rendered["liveness"]["port"]
    assert args.stall_seconds == rendered["liveness"]["stallSeconds"], "the liveness probe's stall bound"
    assert args.api_timeout == rendered["apiTimeoutSeconds"]
    assert args.identity == "$(POD_NAME)"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": args.metrics_port, "healthz": args.liveness_port}
    if values == HA:
        assert args.leader_election and (args.lease_name, args.lease_namespace) == ("understudy-leader",
                                                                                   "understudy-system")
    else:
        assert not args.leader_election
    if "watchNamespaces={ml,search}" in values:
        assert args.namespace == ["ml", "search"] and args.query_timeout == 0.5
    else:
        assert args.namespace == [] and args.query_timeout == 2.0


def test_custom_promql_values_reach_the_operators_flags(control_plane: ControlPlane) -> None:
    def parsed(*values: str) -> Any:
        (deployment,) = of_kind(render(control_plane, "understudy", "understudy-system", *values), "Deployment")
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        return build_parser().parse_args([*container["command"][1:], *container["args"]])

    default = parsed()
    assert default.confine_custom_promql is True and default.custom_promql_namespace_label is None
    single_team = parsed("--set", "customPromQL.confineToNamespace=false", "--set", "customPromQL.namespaceLabel=namespace")
    assert single_team.confine_custom_promql is False and single_team.custom_promql_namespace_label == "namespace"


# ---- monitoring objects: the alerts are valid PromQL and fire when they should ----------------------------


def test_prometheus_rules_pass_promtool_and_fire_on_their_scenarios(control_plane: ControlPlane,
                                                                   tmp_path: Path) -> None:
    docs = render(control_plane, "understudy", "ops", *MONITORING,
                  "--set", "metrics.prometheusRule.fallbackActiveFor=10m",
                  "--set", "metrics.prometheusRule.operatorDownFor=5m")
    (rule,) = of_kind(docs, "PrometheusRule")
    (monitor,) = of_kind(docs, "ServiceMonitor")
    (service,) = of_kind(docs, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    (dashboard,) = of_kind(docs, "ConfigMap")
    assert json.loads(dashboard["data"]["understudy.json"])["uid"] == "understudy-operator"

    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    promtool = shutil.which("promtool")
    assert promtool, "promtool is installed by `make system-deps`"
    check = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert alerts == {"UnderstudyFallbackActiveTooLong", "UnderstudyFallbackRateCreep", "UnderstudyRollbackFailed",
                      "UnderstudyMetricsMissing", "UnderstudyOperatorDown", "UnderstudyNotEvaluating"}

    # honorLabels keeps the per-policy series' own namespace (the policy's, "ml"); the operator's series
    # carry the target's namespace (the release's, "ops").
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True
    job = 'job="understudy-metrics", namespace="ops"'
    policy = 'job="understudy-metrics", namespace="ml"'
    tests = {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [
                # rec falls back at minute 5 and stays there; other stays on primary.
                {"series": f'understudy_active_tier{{{policy}, policy="rec", tier="primary"}}', "values": "1x4 0x40"},
                {"series": f'understudy_active_tier{{{policy}, policy="rec", tier="distilled"}}', "values": "0x4 1x40"},
                {"series": f'understudy_active_tier{{{policy}, policy="other", tier="primary"}}', "values": "1x45"},
                {"series": f'understudy_fallback_ratio{{{policy}, policy="rec"}}', "values": "0+0.002x45"},
                {"series": f'understudy_transitions_total{{{policy}, policy="rec", reason="RollbackFailed"}}',
                 "values": "0x20 1x25"},
                # Every second query to the operator's Prometheus fails from the start; every query to
                # policies' own URLs fails too, which must not page whoever runs the operator's Prometheus.
                {"series": f'understudy_prometheus_queries_total{{{job}, source="default"}}', "values": "0+60x45"},
                {"series": f'understudy_prometheus_query_errors_total{{{job}, source="default"}}',
                 "values": "0+30x45"},
                {"series": f'understudy_prometheus_queries_total{{{job}, source="policy"}}', "values": "0+600x45"},
                {"series": f'understudy_prometheus_query_errors_total{{{job}, source="policy"}}',
                 "values": "0+600x45"},
                # The only replica is up and evaluating until minute 15, then up but no longer evaluating,
                # and from minute 30 it is not scraped at all.
                {"series": f"up{{{job}}}", "values": "1x29 _x15"},
                {"series": f"understudy_evaluation_cycle_duration_seconds_count{{{job}}}",
                 "values": "0+60x15 900x13 _x15"},
            ],
            "alert_rule_test": [
                {"eval_time": "14m", "alertname": "UnderstudyFallbackActiveTooLong", "exp_alerts": []},
                {"eval_time": "16m", "alertname": "UnderstudyFallbackActiveTooLong", "exp_alerts": [{
                    "exp_labels": {"severity": "warning", "namespace": "ml", "policy": "rec", "tier": "distilled"},
                    "exp_annotations": {
                        "summary": "FallbackPolicy ml/rec has served from fallback tier distilled for more than 10m.",
                        "description": "A fallback is a degraded mode, not a home. Check the primary's triggers with "
                                       "`kubectl events --for fallbackpolicy/rec -n ml` and "
                                       "`kubectl get fbp -n ml`."},
                }]},
                # The ratio crosses 0.05 at minute 26 and has to stay above it for 30m.
                {"eval_time": "40m", "alertname": "UnderstudyFallbackRateCreep", "exp_alerts": []},
                {"eval_time": "21m", "alertname": "UnderstudyRollbackFailed", "exp_alerts": [{
                    "exp_labels": {"severity": "critical", "namespace": "ml", "policy": "rec"},
                    "exp_annotations": {
                        "summary": "FallbackPolicy ml/rec exceeded its creep budget but the primary could not be "
                                   "rolled back.",
                        "description": "See the RollbackFailed Event of the policy for the reason (no known-good "
                                       "revision, or the revision's ReplicaSet is gone)."},
                }]},
                {"eval_time": "15m", "alertname": "UnderstudyMetricsMissing", "exp_alerts": [{
                    "exp_labels": {"severity": "warning", "namespace": "ops", "job": "understudy-metrics"},
                    "exp_annotations": {
                        "summary": "Understudy's PromQL queries fail at a rate of 50%; the triggers' signals are "
                                   "missing.",
                        "description": "Missing signals are never read as healthy. Policies with onMissingData Hold "
                                       "keep traffic where it is, Fallback policies leave the affected tiers. Check "
                                       "Prometheus at http://prometheus-operated.monitoring.svc:9090 and the "
                                       "MetricsAvailable condition of the policies."},
                }]},
                {"eval_time": "22m", "alertname": "UnderstudyNotEvaluating", "exp_alerts": []},
                {"eval_time": "26m", "alertname": "UnderstudyNotEvaluating", "exp_alerts": [{
                    "exp_labels": {"severity": "critical", "namespace": "ops", "job": "understudy-metrics"},
                    "exp_annotations": {
                        "summary": "The Understudy operator in ops is up but no replica is evaluating policies.",
                        "description": "No replica holds the leader Lease or every cycle is stuck. Check the "
                                       "operator's logs and `kubectl -n ops get lease`."},
                }]},
                {"eval_time": "29m", "alertname": "UnderstudyOperatorDown", "exp_alerts": []},
                {"eval_time": "44m", "alertname": "UnderstudyOperatorDown", "exp_alerts": [{
                    "exp_labels": {"severity": "critical"},
                    "exp_annotations": {
                        "summary": "No Understudy operator in ops has been scraped successfully for 5m.",
                        "description": "While the operator is down, no fallback happens and no traffic is restored. "
                                       "Check `kubectl -n ops get pods -l app.kubernetes.io/instance=understudy`."},
                }]},
            ],
        }],
    }
    # Every alert links to its runbook (that the section exists: tests/integration/test_chart_monitoring.py).
    for case in tests["tests"][0]["alert_rule_test"]:
        for alert in case["exp_alerts"]:
            alert["exp_annotations"]["runbook_url"] = f"docs/operations.md#{case['alertname'].lower()}"
    scenario = tmp_path / "tests.yaml"
    scenario.write_text(yaml.safe_dump(tests, sort_keys=False))
    done = subprocess.run([promtool, "test", "rules", str(scenario)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


# ---- the API server accepts what the chart renders -------------------------------------------------------


@pytest.mark.parametrize("values", [(), (*HA, "--set", "metrics.grafanaDashboard.enabled=true"), NETWORK_POLICY,
                                    AUTHENTICATED], ids=["default", "ha-with-dashboard", "network-policy", "authenticated"])
def test_rendered_objects_pass_server_side_dry_run(control_plane: ControlPlane, namespace: str,
                                                   values: tuple[str, ...]) -> None:
    out = helm(control_plane, "template", "understudy", str(CHART), "--namespace", namespace,
               "--include-crds", *values).stdout
    # Server-side apply: the CRD may already exist from other tests, created without kubectl's
    # last-applied annotation, which a client-side apply would warn about.
    done = kubectl(control_plane, "apply", "--server-side", "--force-conflicts", "--dry-run=server",
                   "--validate=strict", "-f", "-", input=out)
    created = [line for line in done.stdout.splitlines() if line.strip()]
    assert len(created) == len([d for d in yaml.safe_load_all(out) if d]), done.stdout
    assert "Warning" not in done.stderr, done.stderr


def test_namespaced_render_passes_server_side_dry_run(control_plane: ControlPlane, namespace: str,
                                                      other_namespace: str) -> None:
    out = helm(control_plane, "template", "understudy", str(CHART), "--namespace", namespace,
               "--set", f"watchNamespaces={{{other_namespace}}}").stdout
    done = kubectl(control_plane, "apply", "--dry-run=server", "--validate=strict", "-f", "-", input=out)
    assert f"role.rbac.authorization.k8s.io/understudy created (server dry run)" in done.stdout


# ---- install, RBAC, upgrade, uninstall -------------------------------------------------------------------


def test_install_in_a_restricted_namespace_is_admitted_and_running(
    control_plane: ControlPlane, kube_api: client.ApiClient, namespace: str, installed: Callable[..., str]
) -> None:
    core = client.CoreV1Api(kube_api)
    label_restricted(core, namespace)
    # The label is in force: a pod without the restricted settings is refused.
    bare = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bare", "namespace": namespace},
            "spec": {"containers": [{"name": "c", "image": "example.invalid/x:1"}]}}
    with pytest.raises(ApiException) as refused:
        core.create_namespaced_pod(namespace, bare, dry_run="All")
    assert refused.value.status == 403 and "violates PodSecurity" in refused.value.body

    output = installed("understudy")
    assert "PodSecurity" not in output, output
    assert "Next step" in output, "NOTES.txt tells the user what to do next"
    pods = wait_for("the operator pod Running and Ready", lambda: running_pods(core, namespace, "understudy"))
    assert len(pods) == 1
    assert pods[0].spec.service_account_name == "understudy"
    events = core.list_namespaced_event(namespace, field_selector="reason=FailedCreate").items
    assert events == []


SUFFICIENT = [
    # (verb, resource, subresource): what the operator's code calls, in a watched namespace.
    ("list", "fallbackpolicies.understudy.dev", None),
    ("watch", "fallbackpolicies.understudy.dev", None),
    ("patch", "fallbackpolicies.understudy.dev", "status"),
    ("patch", "fallbackpolicies.understudy.dev", None),
    ("list", "deployments.apps", None),
    ("watch", "deployments.apps", None),
    ("get", "deployments.apps", None),
    ("patch", "deployments.apps", None),
    ("list", "replicasets.apps", None),
    ("get", "services", None),
    ("patch", "services", None),
    ("get", "virtualservices.networking.istio.io", None),
    ("patch", "virtualservices.networking.istio.io", None),
    ("get", "httproutes.gateway.networking.k8s.io", None),
    ("patch", "httproutes.gateway.networking.k8s.io", None),
    ("create", "events.events.k8s.io", None),
]
DENIED = [
    ("get", "secrets", None), ("list", "secrets", None), ("watch", "secrets", None),
    ("get", "configmaps", None), ("create", "pods", None), ("create", "pods", "exec"),
    ("delete", "deployments.apps", None), ("create", "deployments.apps", None),
    ("update", "deployments.apps", None), ("patch", "deployments.apps", "scale"),
    ("update", "fallbackpolicies.understudy.dev", None),
    ("delete", "fallbackpolicies.understudy.dev", None), ("create", "fallbackpolicies.understudy.dev", None),
    ("delete", "services", None), ("update", "virtualservices.networking.istio.io", None),
    ("delete", "httproutes.gateway.networking.k8s.io", None), ("delete", "events.events.k8s.io", None),
    ("create", "events", None), ("patch", "replicasets.apps", None), ("create", "leases.coordination.k8s.io", None),
    ("create", "serviceaccounts", "token"),
    # Never called by the operator (kopf lists and watches; a status patch answers with the object; rollback
    # lists ReplicaSets): not granted.
    ("get", "fallbackpolicies.understudy.dev", None), ("get", "fallbackpolicies.understudy.dev", "status"),
    ("get", "replicasets.apps", None),
]


def assert_rbac(cp: ControlPlane, user: str, watched: str, expect: bool) -> None:
    wrong = [(v, r, s) for v, r, s in SUFFICIENT if can_i(cp, user, v, r, watched, s) != expect]
    assert wrong == [], f"{user} in {watched}: expected can-i={expect} for {wrong}"


def assert_least_privilege(cp: ControlPlane, user: str, namespace: str) -> None:
    allowed = [(v, r, s) for v, r, s in DENIED if can_i(cp, user, v, r, namespace, s)]
    assert allowed == [], f"{user} may do more than it needs in {namespace}: {allowed}"
    for verb, resource in (("list", "namespaces"), ("get", "nodes"),
                           ("create", "clusterroles.rbac.authorization.k8s.io"),
                           ("create", "rolebindings.rbac.authorization.k8s.io"), ("impersonate", "users"),
                           ("delete", "customresourcedefinitions.apiextensions.k8s.io"), ("list", "secrets")):
        assert not can_i(cp, user, verb, resource, None), f"{user} can {verb} {resource} cluster-wide"


def test_cluster_wide_rbac_is_sufficient_and_least_privilege(
    control_plane: ControlPlane, namespace: str, other_namespace: str, installed: Callable[..., str]
) -> None:
    installed("understudy")
    user = service_account(namespace, "understudy")
    assert_rbac(control_plane, user, other_namespace, expect=True)
    assert_least_privilege(control_plane, user, other_namespace)
    assert_least_privilege(control_plane, user, namespace)
    for verb in ("list", "watch"):
        assert can_i(control_plane, user, verb, "fallbackpolicies.understudy.dev", None)
        assert can_i(control_plane, user, verb, "customresourcedefinitions.apiextensions.k8s.io", None)
    assert not can_i(control_plane, user, "get", "customresourcedefinitions.apiextensions.k8s.io", None)
    # No leader election: no Lease access at all.
    assert not can_i(control_plane, user, "get", "leases.coordination.k8s.io", namespace)


def test_namespaced_rbac_stops_at_the_watched_namespaces(
    control_plane: ControlPlane, kube_api: client.ApiClient, namespace: str, other_namespace: str,
    installed: Callable[..., str]
) -> None:
    installed("understudy", "--set", f"watchNamespaces={{{other_namespace}}}", "--set", "rbac.kopfObservers=false")
    user = service_account(namespace, "understudy")
    assert_rbac(control_plane, user, other_namespace, expect=True)
    assert_rbac(control_plane, user, namespace, expect=False)  # its own namespace is not watched
    assert_rbac(control_plane, user, "default", expect=False)
    assert_least_privilege(control_plane, user, other_namespace)
    assert not can_i(control_plane, user, "list", "deployments.apps", None)
    assert not can_i(control_plane, user, "list", "customresourcedefinitions.apiextensions.k8s.io", None)
    rbac = client.RbacAuthorizationV1Api(kube_api)
    mine = f"{INSTANCE}=understudy"
    roles = [r for r in rbac.list_cluster_role(label_selector=mine).items if namespace in r.metadata.name]
    assert [r.metadata.name for r in roles if not any(k.startswith(TENANT_ROLE) for k in r.metadata.labels)] == []
    assert [b for b in rbac.list_cluster_role_binding(label_selector=mine).items if namespace in b.metadata.name] == []


def test_upgrade_to_two_replicas_with_leader_election_then_uninstall_leaves_nothing(
    control_plane: ControlPlane, kube_api: client.ApiClient, namespace: str
) -> None:
    core, apps = client.CoreV1Api(kube_api), client.AppsV1Api(kube_api)
    policy_rbac, rbac = client.PolicyV1Api(kube_api), client.RbacAuthorizationV1Api(kube_api)
    label_restricted(core, namespace)
    release = "understudy"
    user = service_account(namespace, release)
    helm(control_plane, "install", release, str(CHART), "-n", namespace, "--wait", "--timeout", "120s")
    assert not can_i(control_plane, user, "get", "leases.coordination.k8s.io", namespace)

    done = helm(control_plane, "upgrade", release, str(CHART), "-n", namespace, *HA, "--wait", "--timeout", "120s")
    assert "PodSecurity" not in done.stderr, done.stderr
    wait_for("two operator pods Running and Ready", lambda: len(running_pods(core, namespace, release)) == 2)
    args = apps.read_namespaced_deployment(release, namespace).spec.template.spec.containers[0].args
    assert "--leader-election" in args and f"--lease-namespace={namespace}" in args
    assert policy_rbac.read_namespaced_pod_disruption_budget(release, namespace).spec.min_available == 1
    assert can_i(control_plane, user, "create", "leases.coordination.k8s.io", namespace)
    for verb in ("get", "update", "patch"):
        assert can_i(control_plane, user, verb, "leases.coordination.k8s.io/understudy-leader", namespace)
        assert not can_i(control_plane, user, verb, "leases.coordination.k8s.io/someone-else", namespace)
    assert not can_i(control_plane, user, "delete", "leases.coordination.k8s.io/understudy-leader", namespace)
    assert not can_i(control_plane, user, "create", "leases.coordination.k8s.io", "default")

    helm(control_plane, "uninstall", release, "-n", namespace, "--wait", "--timeout", "120s")
    selector = f"{INSTANCE}={release}"

    def leftovers() -> list[str]:
        namespaced = (
            ("Deployment", apps.list_namespaced_deployment), ("ReplicaSet", apps.list_namespaced_replica_set),
            ("Pod", core.list_namespaced_pod), ("Service", core.list_namespaced_service),
            ("ServiceAccount", core.list_namespaced_service_account), ("ConfigMap", core.list_namespaced_config_map),
            ("PodDisruptionBudget", policy_rbac.list_namespaced_pod_disruption_budget),
        )
        found = [f"{kind} {o.metadata.name}" for kind, lister in namespaced
                 for o in lister(namespace, label_selector=selector).items]
        admission = client.AdmissionregistrationV1Api(kube_api)
        cluster = (("Role", rbac.list_role_for_all_namespaces),
                   ("RoleBinding", rbac.list_role_binding_for_all_namespaces),
                   ("ClusterRole", rbac.list_cluster_role), ("ClusterRoleBinding", rbac.list_cluster_role_binding),
                   ("ValidatingAdmissionPolicy", admission.list_validating_admission_policy),
                   ("ValidatingAdmissionPolicyBinding", admission.list_validating_admission_policy_binding))
        # Other tests' releases are also called "understudy": only objects bound to this namespace count.
        found += [f"{kind} {o.metadata.name}" for kind, lister in cluster
                  for o in lister(label_selector=selector).items
                  if o.metadata.namespace == namespace or namespace in o.metadata.name]
        return found

    deadline = time.monotonic() + 60
    while leftovers() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert leftovers() == []
    status_admission_released(control_plane, namespace)
    assert not can_i(control_plane, user, "list", "fallbackpolicies.understudy.dev", None)
    # CRDs from crds/ are never deleted by Helm: policies survive an uninstall.
    ext = client.ApiextensionsV1Api(kube_api)
    assert ext.read_custom_resource_definition("fallbackpolicies.understudy.dev").metadata.name


# ---- kubectl, as the chart's ServiceAccount ------------------------------------------------------------------


POLICY = {
    "apiVersion": f"{GROUP}/{VERSION}",
    "kind": "FallbackPolicy",
    "metadata": {"name": "recommender"},
    "spec": {
        "primary": {"deploymentName": "recommender-large", "serviceName": "recommender-large"},
        "fallbacks": [{"name": "distilled", "deploymentName": "recommender-small", "serviceName": "recommender-small",
                       "degradation": {"description": "top-10 recall drops about 4 points",
                                       "acceptedBy": "ml-product@example.com"}}],
        "routing": {"istio": {"virtualServiceName": "recommender"}},
        "triggers": [{"name": "errors", "errorRatio": {"above": "0.05"}}],
    },
}


def test_get_fbp_shows_the_status_the_service_account_patched(
    control_plane: ControlPlane, kube_api: client.ApiClient, namespace: str, other_namespace: str,
    installed: Callable[..., str], tmp_path: Path
) -> None:
    installed("understudy", "--set", f"watchNamespaces={{{other_namespace}}}")
    kubeconfig = write_service_account_kubeconfig(control_plane, namespace, "understudy", tmp_path / "sa.kubeconfig")
    client.CustomObjectsApi(kube_api).create_namespaced_custom_object(GROUP, VERSION, other_namespace, PLURAL, POLICY)

    def as_operator(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {**control_plane.subprocess_env(), "KUBECONFIG": str(kubeconfig)}
        return subprocess.run([str(control_plane.kubectl), *args], env=env, input=input, capture_output=True,
                              text=True, timeout=60)

    whoami = as_operator("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
    assert whoami.stdout == service_account(namespace, "understudy"), whoami.stderr
    status = {"status": {
        "observedGeneration": 1, "activeTier": "distilled", "primaryWeight": 10,
        "weights": [{"tier": "primary", "weight": 10}, {"tier": "distilled", "weight": 90}],
        "conditions": [{"type": "Ready", "status": "True", "reason": "Evaluating", "message": "evaluating",
                        "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1}],
    }}
    # The operator patches status without reading it first, as the operator does (kubectl would GET it).
    with contextlib.closing(config.new_client_from_config(config_file=str(kubeconfig))) as operator_api:
        client.CustomObjectsApi(operator_api).patch_namespaced_custom_object_status(
            GROUP, VERSION, other_namespace, PLURAL, "recommender", status)
    # The same identity may not touch the spec, nor read anything outside the watched namespace.
    denied = as_operator("patch", "fbp", "recommender", "-n", other_namespace, "--type=merge",
                         "-p", '{"spec": {"mode": "Observe"}}')
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower(), denied.stderr
    outside = as_operator("get", "deployments", "-n", "default")
    assert outside.returncode != 0 and "forbidden" in outside.stderr.lower(), outside.stderr

    table = as_operator("get", "fbp", "-n", other_namespace)
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()[:2]
    assert header.split() == ["NAME", "ACTIVE", "PRIMARY-WEIGHT", "READY", "AGE"]
    cells = row.split()
    assert cells[:4] == ["recommender", "distilled", "10", "True"]
    assert re.fullmatch(r"\d+s|\d+m\d*s?", cells[4]), cells[4]


def scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return response.read().decode()
    except OSError:  # not listening yet
        return ""


def parse_exposition(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Samples of the Prometheus text format, keyed by name and sorted labels."""
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


# ---- the operator itself, as the chart's ServiceAccount ------------------------------------------------------

# \b around 403: a random loopback port such as 58403 in a log line is not a refusal.
# A 403 is a status code, not the milliseconds of a log line's timestamp ("14:32:58,403").
PERMISSION_PROBLEMS = re.compile(r"forbidden|(?<![,.])\b403\b|not enough permissions|unauthori[sz]ed", re.IGNORECASE)


@pytest.mark.parametrize("mode", ["cluster-wide", "namespaced"])
def test_operator_runs_with_exactly_the_charts_permissions(
    control_plane: ControlPlane, kube_api: client.ApiClient, namespace: str, other_namespace: str,
    installed: Callable[..., str], tmp_path: Path, mode: str
) -> None:
    """kopf's watches, leader election, status writes and Events all work with the chart's RBAC alone.

    The operator runs from this checkout with the installed Deployment's command line (the pod under KWOK
    runs nothing), authenticated by a TokenRequest token of the chart's ServiceAccount. Prometheus is a
    closed loopback port, so the policy's signals are missing: the operator must still evaluate, write
    status and post its Events.
    """
    extra = ("--set", f"watchNamespaces={{{other_namespace}}}") if mode == "namespaced" else ()
    installed("understudy", *HA, *extra)
    kubeconfig = write_service_account_kubeconfig(control_plane, namespace, "understudy", tmp_path / "sa.kubeconfig")
    custom = client.CustomObjectsApi(kube_api)
    custom.create_namespaced_custom_object(GROUP, VERSION, other_namespace, PLURAL, POLICY)
    # The installed container's command line, with what only a pod has replaced: its name, and ports that
    # would listen on every interface (turned off here; tests stay on loopback).
    deployment = client.AppsV1Api(kube_api).read_namespaced_deployment("understudy", namespace)
    (container,) = deployment.spec.template.spec.containers
    closed_port, metrics_port = free_ports(2)
    replacements = {"--prometheus-url=": f"http://127.0.0.1:{closed_port}", "--metrics-port=": str(metrics_port),
                    "--liveness-port=": "0", "--identity=": "chart-smoke"}
    args = [next((flag + value for flag, value in replacements.items() if arg.startswith(flag)), arg)
            for arg in container.args]
    assert container.command == ["understudy", "run"]
    argv = [str(Path(sys.executable).parent / "understudy"), "run", *args, "--metrics-address=127.0.0.1"]
    log = tmp_path / "operator.log"
    env = {**control_plane.subprocess_env(), "KUBECONFIG": str(kubeconfig)}
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        def evaluated() -> dict[str, Any] | None:
            assert proc.poll() is None, f"operator exited:\n{log.read_text()}"
            status = custom.get_namespaced_custom_object(GROUP, VERSION, other_namespace, PLURAL, "recommender")
            conditions = {c["type"]: c for c in status.get("status", {}).get("conditions", [])}
            return conditions or None

        conditions = wait_for("the operator to write the policy's status", evaluated, timeout=60)
        assert conditions["MetricsAvailable"]["status"] == "False", conditions

        def audit_events() -> list[str]:
            events = client.EventsV1Api(kube_api).list_namespaced_event(other_namespace).items
            return [e.reason for e in events
                    if e.reporting_controller == "understudy.dev/operator" and e.reporting_instance == "chart-smoke"]

        # Events are posted after the status and routing writes of the same decision.
        assert "MetricsMissing" in wait_for("the operator's audit Events", audit_events, timeout=30)
        lease = client.CoordinationV1Api(kube_api).read_namespaced_lease("understudy-leader", namespace)
        assert lease.spec.holder_identity == "chart-smoke"
        # The series the PrometheusRule and the dashboard are written against, from the operator itself.
        exposition = wait_for("the policy's series on /metrics", lambda: (
            lambda text: text if 'policy="recommender"' in text else None)(scrape(metrics_port)), timeout=30)
        samples = parse_exposition(exposition)
        assert samples[("understudy_active_tier", (("namespace", other_namespace), ("policy", "recommender"),
                                                    ("tier", "primary")))] == 1
        assert ("understudy_fallback_ratio", (("namespace", other_namespace), ("policy", "recommender"))) in samples
        assert samples[("understudy_prometheus_query_errors_total", (("source", "default"),))] > 0
        assert samples[("understudy_evaluation_cycle_duration_seconds_count", ())] > 0
        # Lateness counts evaluations after the first (due on the 5 s interval's grid).
        wait_for("a second evaluation's lateness", lambda: parse_exposition(scrape(metrics_port)).get(
            ("understudy_evaluation_lateness_seconds_count", ()), 0) > 0, timeout=30)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    text = log.read_text()
    problems = [line for line in text.splitlines() if PERMISSION_PROBLEMS.search(line)]
    assert problems == [], text
