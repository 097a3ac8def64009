"""From a registry, for real: the chart is packaged, pushed to an OCI registry on loopback, installed from
`oci://` and upgraded to a second packaged version while a FallbackPolicy is mid-fallback.

The operator runs the way the chart's pod would run it: the installed Deployment's command line, as the
chart's ServiceAccount (a TokenRequest token), as a host process (KWOK's pods run nothing). The install
and upgrade commands are read from docs/operations.md and run as written there, so the page cannot drift
from what is tested. The previous release is this chart packaged under an earlier version whose CRD lacks
`spec.drills`, so the CRD step of the upgrade has something to do and its effect can be seen.
"""
from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from e2e.harness import ControlPlane
from e2e.harness.cluster import free_ports, kill_with_parent, stop_pgroup
from e2e.harness.prometheus import PrometheusServer
from e2e.harness.registry import OciRegistry
from e2e.harness.serviceaccount import write_service_account_kubeconfig
from e2e.scenario import Scenario, wait_until
from tools.package_chart import package
from understudy.version import VERSION

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "understudy"
OPERATIONS = ROOT / "docs" / "operations.md"
CRD_NAME = "fallbackpolicies.understudy.dev"
PREVIOUS = f"{VERSION}-previous"
RELEASE = "understudy"
# The primary's pods cannot be scheduled: unlike a slow or failing model, this breach does not clear when the
# primary stops receiving traffic, so no restore probe interrupts the fallback while the upgrade runs.
UNSCHEDULABLE = {"spec": {"strategy": {"type": "Recreate", "rollingUpdate": None},
                          "template": {"spec": {"nodeSelector": {"understudy.e2e/no-such-node": "true"}}}}}
SCHEDULABLE = {"spec": {"template": {"spec": {"nodeSelector": None}}}}
TRIGGERS = [{"name": "p99-latency", "latency": {"quantile": "0.99", "above": "1s"}},
            {"name": "errors", "errorRatio": {"above": "0.1"}},
            {"name": "availability", "readyReplicas": {"belowRatio": "0.5"}}]
ON_DISTILLED = {"primary": 0, "distilled": 100, "popular-items": 0}
ALL_PRIMARY = {"primary": 100, "distilled": 0, "popular-items": 0}
# \b around 403: a random loopback port such as 58403 in a log line is not a refusal.
PERMISSION_PROBLEMS = re.compile(r"forbidden|\b403\b|not enough permissions|unauthori[sz]ed", re.IGNORECASE)


def documented_commands(heading: str) -> str:
    """The commands of a `## heading` of docs/operations.md: its last ```sh block."""
    text = OPERATIONS.read_text()
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.DOTALL)
    assert blocks, f"docs/operations.md has no sh block under '## {heading}'"
    return str(blocks[-1])


def run_documented(cp: ControlPlane, heading: str, workdir: Path, env: dict[str, str]) -> None:
    """Run the page's commands in bash as the cluster admin; `--plain-http` is what the page says a
    registry without TLS needs, added to every helm command that reads the chart."""
    script = re.sub(r'(helm (?:show crds|install|upgrade) [^\n]*?"\$CHART")', r"\1 --plain-http",
                    documented_commands(heading))
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=workdir, capture_output=True, text=True,
                          env={**cp.subprocess_env(), **env}, timeout=300)
    assert done.returncode == 0, f"{heading} as documented failed:\n{script}\n{done.stdout}\n{done.stderr}"


def previous_release_chart(tmp_path: Path) -> Path:
    """This chart as an earlier release would ship it: a CRD without spec.drills."""
    chart = tmp_path / "previous" / "understudy"
    shutil.copytree(CHART, chart)
    crd_file = next((chart / "crds").glob("*.yaml"))
    crd = yaml.safe_load(crd_file.read_text())
    for version in crd["spec"]["versions"]:
        spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
        del spec["properties"]["drills"]
        spec["x-kubernetes-validations"] = [v for v in spec["x-kubernetes-validations"] if "drills" not in v["rule"]]
    crd_file.write_text(yaml.safe_dump(crd, sort_keys=False))
    return chart


def crd_knows_drills(api: Any) -> bool:
    crd = client.ApiextensionsV1Api(api).read_custom_resource_definition(CRD_NAME)
    return all("drills" in v.schema.open_apiv3_schema.properties["spec"].properties for v in crd.spec.versions)


class ChartOperator:
    """`understudy run` with the installed Deployment's arguments, as the chart's ServiceAccount.

    What only a pod has is replaced: its name, and ports that would listen on every interface (metrics on a
    loopback port, liveness off).
    """

    def __init__(self, cp: ControlPlane, api: Any, release_namespace: str, prometheus_url: str,
                 kubeconfig: Path, log: Path) -> None:
        deployment = client.AppsV1Api(api).read_namespaced_deployment(RELEASE, release_namespace)
        (container,) = deployment.spec.template.spec.containers
        assert container.command == ["understudy", "run"]
        (self.metrics_port,) = free_ports(1)
        replacements = {"--prometheus-url=": prometheus_url, "--metrics-port=": str(self.metrics_port),
                        "--liveness-port=": "0", "--identity=": "release-check"}
        args = [next((flag + value for flag, value in replacements.items() if arg.startswith(flag)), arg)
                for arg in container.args]
        argv = [str(Path(sys.executable).parent / "understudy"), "run", *args, "--metrics-address=127.0.0.1"]
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(argv, env={**cp.subprocess_env(), "KUBECONFIG": str(kubeconfig)},
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                         preexec_fn=kill_with_parent)

    def stop(self) -> None:
        stop_pgroup(self.proc.pid, timeout=15)

    def metrics(self) -> str:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
                return str(response.read().decode())
        except OSError:  # not listening yet
            return ""


def test_install_from_the_registry_and_upgrade_mid_fallback(
    control_plane: ControlPlane, kube_api: Any, namespace: str, prometheus: PrometheusServer,
    oci_registry: OciRegistry, tmp_path: Path
) -> None:
    # ---- package and push two versions ------------------------------------------------------------------
    # As the release workflow does it: the image and the runbooks of each version written into values.yaml.
    image = f"{oci_registry.host}/understudy"
    runbooks = "https://docs.example/understudy/{}/operations.md"
    packages = tmp_path / "packages"
    pushed = [package(control_plane.helm, PREVIOUS, image, runbooks.format(PREVIOUS), packages,
                      chart=previous_release_chart(tmp_path)),
              package(control_plane.helm, VERSION, image, runbooks.format(VERSION), packages)]
    for archive in pushed:
        control_plane.run_helm("push", str(archive), f"oci://{oci_registry.host}/charts", "--plain-http")
    assert oci_registry.tags("charts/understudy") == sorted([VERSION, PREVIOUS])

    # ---- the cluster runs the previous release ------------------------------------------------------------
    release_namespace = f"{namespace}-sys"
    env = {"CHART": f"oci://{oci_registry.host}/charts/understudy", "RELEASE_NAMESPACE": release_namespace}
    (tmp_path / "understudy-values.yaml").write_text(yaml.safe_dump({
        "prometheus": {"url": prometheus.url}, "watchNamespaces": [namespace]}))
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(control_plane.run_kubectl, "delete", "namespace", release_namespace, "--wait=false",
                         check=False)
        cleanup.callback(control_plane.run_helm, "uninstall", RELEASE, "-n", release_namespace, "--wait",
                         check=False)
        # A session that ran other tests first already has the current CRD, which `helm install` leaves
        # alone: put the previous release's in its place, as a cluster on that release would have it.
        if control_plane.run_kubectl("get", "crd", CRD_NAME, check=False).returncode == 0:
            previous_crd = next((tmp_path / "previous" / "understudy" / "crds").glob("*.yaml"))
            control_plane.run_kubectl("apply", "--server-side", "--force-conflicts", "-f", str(previous_crd))
        run_documented(control_plane, "Installing", tmp_path, {**env, "VERSION": PREVIOUS})
        assert not crd_knows_drills(kube_api)
        deployment = client.AppsV1Api(kube_api).read_namespaced_deployment(RELEASE, release_namespace)
        assert deployment.spec.template.spec.containers[0].image == f"{image}:{PREVIOUS}"

        sc = cleanup.enter_context(Scenario(control_plane, prometheus, namespace, kube_api, "istio", tmp_path))
        sc.start_traffic()
        kubeconfig = write_service_account_kubeconfig(control_plane, release_namespace, RELEASE,
                                                      tmp_path / "sa.kubeconfig")
        old = ChartOperator(control_plane, kube_api, release_namespace, prometheus.url, kubeconfig,
                            tmp_path / "operator-previous.log")
        cleanup.callback(old.stop)
        sc.apply_policy(sc.policy(triggers=TRIGGERS, evaluation={"restoreSteps": [100]}))
        wait_until(lambda: (c := sc.condition("Ready")) and c["status"] == "True", 60, "Ready=True")

        # ---- mid-fallback -----------------------------------------------------------------------------------
        apps = client.AppsV1Api(kube_api)
        apps.patch_namespaced_deployment(sc.servers["primary"].workload, namespace, UNSCHEDULABLE)
        sc.wait_for_weights(ON_DISTILLED, timeout=60)
        wait_until(lambda: "FallbackActivated" in sc.reasons(), 15, "a FallbackActivated Event")
        before = sc.status()
        assert before["activeTier"] == "distilled"

        # ---- upgrade as documented ----------------------------------------------------------------------------
        run_documented(control_plane, "Upgrading", tmp_path, {**env, "VERSION": VERSION})
        assert crd_knows_drills(kube_api), "the documented CRD step installs the new release's CRD"
        history = yaml.safe_load(control_plane.run_helm("history", RELEASE, "-n", release_namespace,
                                                        "-o", "yaml").stdout)
        assert [(h["chart"], h["status"]) for h in history] == [(f"understudy-{PREVIOUS}", "superseded"),
                                                                (f"understudy-{VERSION}", "deployed")]
        deployment = apps.read_namespaced_deployment(RELEASE, release_namespace)
        assert deployment.spec.template.spec.containers[0].image == f"{image}:{VERSION}"
        # The Recreate strategy stops the old pod before the new one starts; so does this test.
        old.stop()
        assert sc.routed_weights() == ON_DISTILLED, "nobody writes routing while the operator restarts"
        new = ChartOperator(control_plane, kube_api, release_namespace, prometheus.url, kubeconfig,
                            tmp_path / "operator-upgraded.log")
        cleanup.callback(new.stop)

        # ---- state and routing survived -------------------------------------------------------------------
        serving = f'understudy_active_tier{{namespace="{namespace}",policy="recommender",tier="distilled"}} 1.0'

        def serving_from_distilled() -> str | None:
            text = new.metrics()
            return text if serving in text else None

        metrics = wait_until(serving_from_distilled, 60, "the upgraded operator to serve the policy from distilled")
        assert f'version="{VERSION}"' in metrics, "understudy_build_info names the running version"
        for _ in range(5):  # several evaluations of the upgraded operator: it holds the fallback
            assert sc.routed_weights() == ON_DISTILLED
            time.sleep(1)
        after = sc.status()
        assert after["activeTier"] == "distilled"
        assert after["history"][: len(before["history"])] == before["history"], "the history is kept"
        assert sc.reasons().count("FallbackActivated") == 1, "the upgrade is not a new fallback episode"
        assert sc.condition("FallbackActive")["status"] == "True"  # type: ignore[index]

        # ---- and it carries on from there: the primary recovers, traffic returns ----------------------------
        apps.patch_namespaced_deployment(sc.servers["primary"].workload, namespace, SCHEDULABLE)
        sc.wait_for_weights(ALL_PRIMARY, timeout=90)
        wait_until(lambda: "Restored" in sc.reasons(), 15, "a Restored Event from the upgraded operator")

        # ---- the new CRD is in force: a policy with drills is accepted -------------------------------------
        drilled = sc.policy("drilled", drills=[{"tier": "distilled", "every": "168h", "duration": "5m",
                                                "share": 5}])
        accepted = control_plane.run_kubectl("apply", "--server-side", "--dry-run=server", "-f", "-",
                                             input=yaml.safe_dump(drilled), check=False)
        assert accepted.returncode == 0, accepted.stderr
        denied = [line for log in (old.log, new.log) for line in log.read_text().splitlines()
                  if PERMISSION_PROBLEMS.search(line)]
        assert denied == []
