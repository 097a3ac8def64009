"""Smoke tests proving each part of the loopback control plane is real, not a stub.

Each test exercises one component through its observable effect: the scheduler + KWOK make pods
Ready, the controller-manager rolls ReplicaSets and finalises namespaces, the built kubectl and helm
talk to the API server, the upstream Istio / Gateway API CRD schemas are served and enforced.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from e2e.harness import ControlPlane

pytestmark = pytest.mark.cluster


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 60.0, interval: float = 0.25) -> Any:
    """Poll until probe returns something truthy; fail with the last value seen, not a bare timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}; last value: {last!r}")


def deployment(name: str, replicas: int, image: str) -> dict[str, Any]:
    """A minimal Deployment; the image never gets pulled (KWOK plays the kubelet)."""
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "model", "image": image}]},
            },
        },
    }


def ready_pods(core: client.CoreV1Api, namespace: str, selector: str) -> list[client.V1Pod]:
    """Pods matching selector whose Ready condition is True."""
    pods = core.list_namespaced_pod(namespace, label_selector=selector).items
    return [
        p for p in pods
        if p.metadata.deletion_timestamp is None
        and any(c.type == "Ready" and c.status == "True" for c in (p.status.conditions or []))
    ]


def test_deployment_reaches_three_ready_pods_on_kwok_node(
    control_plane: ControlPlane, kube_api: client.ApiClient, namespace: str
) -> None:
    apps, core = client.AppsV1Api(kube_api), client.CoreV1Api(kube_api)
    apps.create_namespaced_deployment(namespace, deployment("model", 3, "example.invalid/model:v1"))

    wait_for("3 ready replicas",
             lambda: (apps.read_namespaced_deployment_status("model", namespace).status.ready_replicas or 0) == 3)
    pods = ready_pods(core, namespace, "app=model")
    assert len(pods) == 3
    # Scheduled by kube-scheduler onto the KWOK node, given an IP and Running by KWOK.
    assert {p.spec.node_name for p in pods} <= set(control_plane.node_names)
    assert all(p.status.phase == "Running" and p.status.pod_ip for p in pods)
    node = core.read_node(pods[0].spec.node_name)
    assert node.metadata.annotations.get("kwok.x-k8s.io/node") == "fake"


def test_new_pod_template_rolls_a_second_replicaset(kube_api: client.ApiClient, namespace: str) -> None:
    apps, core = client.AppsV1Api(kube_api), client.CoreV1Api(kube_api)
    apps.create_namespaced_deployment(namespace, deployment("model", 3, "example.invalid/model:v1"))
    wait_for("first rollout", lambda: (apps.read_namespaced_deployment_status("model", namespace)
                                       .status.ready_replicas or 0) == 3)

    apps.patch_namespaced_deployment(
        "model", namespace,
        {"spec": {"template": {"spec": {"containers": [{"name": "model", "image": "example.invalid/model:v2"}]}}}},
    )

    def rolled() -> bool:
        d = apps.read_namespaced_deployment_status("model", namespace)
        s = d.status
        return (s.observed_generation == d.metadata.generation and s.updated_replicas == 3
                and s.ready_replicas == 3 and (s.replicas or 0) == 3)

    wait_for("second rollout complete", rolled, timeout=90)
    sets = apps.list_namespaced_replica_set(namespace, label_selector="app=model").items
    revisions = {rs.metadata.annotations["deployment.kubernetes.io/revision"]: rs for rs in sets}
    assert set(revisions) == {"1", "2"}
    assert revisions["2"].spec.template.spec.containers[0].image == "example.invalid/model:v2"
    assert revisions["2"].status.ready_replicas == 3
    assert revisions["1"].spec.replicas == 0
    images = {p.spec.containers[0].image for p in ready_pods(core, namespace, "app=model")}
    assert images == {"example.invalid/model:v2"}


def test_built_kubectl_lists_nodes_and_reports_pinned_version(control_plane: ControlPlane) -> None:
    nodes = json.loads(control_plane.run_kubectl("get", "nodes", "-o", "json").stdout)
    names = {n["metadata"]["name"] for n in nodes["items"]}
    assert set(control_plane.node_names) <= names

    version = json.loads(control_plane.run_kubectl("version", "-o", "json").stdout)
    pinned = control_plane.toolchain.versions["KUBERNETES_VERSION"]
    # Both sides carry the version ldflags (otherwise they report v0.0.0-master).
    assert version["serverVersion"]["gitVersion"] == pinned
    assert version["clientVersion"]["gitVersion"] == pinned


def test_helm_install_and_uninstall_a_chart(
    control_plane: ControlPlane, kube_api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    chart = tmp_path / "smoke"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: smoke\nversion: 0.1.0\n")
    (chart / "values.yaml").write_text("greeting: hello\n")
    (chart / "templates" / "configmap.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\n"
        "data:\n  greeting: {{ .Values.greeting | quote }}\n"
    )
    core = client.CoreV1Api(kube_api)

    control_plane.run_helm("install", "smoke", str(chart), "-n", namespace, "--set", "greeting=hi", "--wait")
    assert core.read_namespaced_config_map("smoke-cm", namespace).data == {"greeting": "hi"}
    releases = json.loads(control_plane.run_helm("list", "-n", namespace, "-o", "json").stdout)
    assert [(r["name"], r["status"]) for r in releases] == [("smoke", "deployed")]

    control_plane.run_helm("uninstall", "smoke", "-n", namespace, "--wait")
    with pytest.raises(ApiException) as err:
        core.read_namespaced_config_map("smoke-cm", namespace)
    assert err.value.status == 404
    assert json.loads(control_plane.run_helm("list", "-n", namespace, "-o", "json").stdout) == []


def test_istio_virtualservice_crd_is_served_with_its_schema(kube_api: client.ApiClient, namespace: str) -> None:
    custom = client.CustomObjectsApi(kube_api)
    vs = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "model"},
        "spec": {
            "hosts": ["model.example.svc.cluster.local"],
            "http": [{"route": [
                {"destination": {"host": "primary"}, "weight": 80},
                {"destination": {"host": "fallback"}, "weight": 20},
            ]}],
        },
    }
    custom.create_namespaced_custom_object("networking.istio.io", "v1", namespace, "virtualservices", vs)
    got = custom.get_namespaced_custom_object("networking.istio.io", "v1", namespace, "virtualservices", "model")
    route = got["spec"]["http"][0]["route"]
    assert [(r["destination"]["host"], r["weight"]) for r in route] == [("primary", 80), ("fallback", 20)]

    # The upstream structural schema is enforced, so this is the real CRD and not a permissive stub.
    bad = json.loads(json.dumps(vs))
    bad["metadata"]["name"] = "bad"
    bad["spec"]["http"][0]["route"][0]["weight"] = "eighty"
    with pytest.raises(ApiException) as err:
        custom.create_namespaced_custom_object("networking.istio.io", "v1", namespace, "virtualservices", bad)
    assert err.value.status == 422

    dr = {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule", "metadata": {"name": "model"},
          "spec": {"host": "primary", "subsets": [{"name": "v1", "labels": {"version": "v1"}}]}}
    custom.create_namespaced_custom_object("networking.istio.io", "v1", namespace, "destinationrules", dr)


def test_gateway_api_httproute_crd_is_served(kube_api: client.ApiClient, namespace: str) -> None:
    custom = client.CustomObjectsApi(kube_api)
    route = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "model"},
        "spec": {
            "parentRefs": [{"name": "inference-gateway"}],
            "rules": [{"backendRefs": [
                {"name": "primary", "port": 8080, "weight": 90},
                {"name": "fallback", "port": 8080, "weight": 10},
            ]}],
        },
    }
    custom.create_namespaced_custom_object("gateway.networking.k8s.io", "v1", namespace, "httproutes", route)
    got = custom.get_namespaced_custom_object("gateway.networking.k8s.io", "v1", namespace, "httproutes", "model")
    refs = got["spec"]["rules"][0]["backendRefs"]
    assert [(r["name"], r["weight"]) for r in refs] == [("primary", 90), ("fallback", 10)]
    # Defaulting from the upstream schema ran (matches defaults to a PathPrefix "/" match).
    assert got["spec"]["rules"][0]["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]


def test_namespace_deletion_completes(kube_api: client.ApiClient) -> None:
    core = client.CoreV1Api(kube_api)
    name = f"doomed-{time.monotonic_ns() % 10**8}"
    core.create_namespace({"metadata": {"name": name}})
    core.create_namespaced_config_map(name, {"metadata": {"name": "leftover"}, "data": {"k": "v"}})
    core.delete_namespace(name)

    def gone() -> bool:
        try:
            core.read_namespace(name)
        except ApiException as err:
            return err.status == 404
        return False

    # Only the controller-manager's namespace controller empties the namespace and drops its finalizer.
    wait_for(f"namespace {name} to be deleted", gone, timeout=90)


def test_rbac_and_pod_security_are_enforced(
    control_plane: ControlPlane, kube_api: client.ApiClient, namespace: str
) -> None:
    # RBAC: a fresh service account may not list pods until granted.
    sa = f"system:serviceaccount:{namespace}:default"
    out = control_plane.run_kubectl("auth", "can-i", "list", "pods", "-n", namespace, "--as", sa, check=False)
    assert out.stdout.strip() == "no"

    # Pod Security Admission: a namespace labelled `restricted` rejects a privileged pod.
    core = client.CoreV1Api(kube_api)
    core.patch_namespace(namespace, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}})
    pod = {"metadata": {"name": "priv"},
           "spec": {"containers": [{"name": "c", "image": "example.invalid/x:1",
                                    "securityContext": {"privileged": True}}]}}
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod(namespace, pod)
    assert err.value.status == 403
    assert "PodSecurity" in err.value.body


def test_env_file_is_sourceable_and_extendable(control_plane: ControlPlane, tmp_path: Path) -> None:
    import subprocess

    from e2e.harness import update_env_file

    env_file = control_plane.write_env()
    assert env_file is not None and "PROMETHEUS_URL" in env_file.read_text()  # the placeholder
    copy = tmp_path / "env"
    copy.write_text(env_file.read_text())
    # Another harness (separate process) adds its line without losing ours.
    update_env_file({"PROMETHEUS_URL": "http://127.0.0.1:9090"}, copy)
    script = f'. {copy} && kubectl get nodes -o name && helm version --short && echo "$PROMETHEUS_URL"'
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}).stdout.split()
    assert out[0] == f"node/{control_plane.node_names[0]}"
    assert out[1].startswith(control_plane.toolchain.versions["HELM_VERSION"])
    assert out[2] == "http://127.0.0.1:9090"


def test_inference_pool_crd_is_served_and_httproutes_weigh_pools(kube_api: client.ApiClient, namespace: str) -> None:
    """The Inference Extension's InferencePool, from its pinned Go module, and an HTTPRoute rule weighing two."""
    custom = client.CustomObjectsApi(kube_api)
    for name in ("llm-large", "llm-small"):
        custom.create_namespaced_custom_object("inference.networking.k8s.io", "v1", namespace, "inferencepools", {
            "apiVersion": "inference.networking.k8s.io/v1", "kind": "InferencePool", "metadata": {"name": name},
            "spec": {"selector": {"matchLabels": {"app": name}}, "targetPorts": [{"number": 8000}],
                     "endpointPickerRef": {"name": f"{name}-epp", "port": {"number": 9002}}},
        })
    route = {
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "llm"},
        "spec": {"parentRefs": [{"name": "inference-gateway"}], "rules": [{"backendRefs": [
            {"group": "inference.networking.k8s.io", "kind": "InferencePool", "name": n, "weight": w}
            for n, w in (("llm-large", 90), ("llm-small", 10))]}]},
    }
    custom.create_namespaced_custom_object("gateway.networking.k8s.io", "v1", namespace, "httproutes", route)
    got = custom.get_namespaced_custom_object("gateway.networking.k8s.io", "v1", namespace, "httproutes", "llm")
    assert [(r["kind"], r["name"], r["weight"]) for r in got["spec"]["rules"][0]["backendRefs"]] == [
        ("InferencePool", "llm-large", 90), ("InferencePool", "llm-small", 10)]
    pool = {"apiVersion": "inference.networking.k8s.io/v1", "kind": "InferencePool", "metadata": {"name": "bad"},
            "spec": {"selector": {"matchLabels": {"app": "x"}}, "targetPorts": [{"number": 8000}],
                     "endpointPickerRef": {"name": "epp"}}}
    with pytest.raises(ApiException) as err:  # the upstream CEL rule: a Service picker needs a port
        custom.create_namespaced_custom_object("inference.networking.k8s.io", "v1", namespace, "inferencepools", pool)
    assert err.value.status == 422 and "port is required" in err.value.body
