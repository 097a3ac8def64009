"""`kubectl understudy` end to end: the real kubectl finds the plugin on PATH and runs it against a live
failover (real API server, Prometheus, model servers, traffic, and the operator as a process)."""
from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from kubernetes import client

from e2e.harness.prometheus import PrometheusServer
from e2e.harness.serviceaccount import write_service_account_kubeconfig
from e2e.scenario import Scenario, wait_until

SLOW = {"latency_ms": 2500}
FAILING = {"error_ratio": 0.6}
ALL_PRIMARY = {"primary": 100, "distilled": 0, "popular-items": 0}
ON_DISTILLED = {"primary": 0, "distilled": 100, "popular-items": 0}
ON_POPULAR = {"primary": 0, "distilled": 0, "popular-items": 100}


def _started(make_scenario: Callable[..., Scenario], prometheus: PrometheusServer, **spec: Any) -> Scenario:
    sc = make_scenario(prometheus)
    sc.start_traffic()
    sc.start_operator()
    sc.apply_policy(sc.policy(**spec))
    wait_until(lambda: (c := sc.condition("Ready")) and c["status"] == "True", 60, "recommender Ready=True")
    return sc


def _env(sc: Scenario, kubeconfig: Path | None = None) -> dict[str, str]:
    """The control plane's environment with this interpreter's bin first on PATH, where the package installed
    the kubectl-understudy console script: kubectl finds plugins on PATH."""
    env = sc.cp.subprocess_env()
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.pop("NO_COLOR", None)
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    return env


def kubectl_understudy(sc: Scenario, *args: str, kubeconfig: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(sc.cp.kubectl), "understudy", *args, "-n", sc.namespace], env=_env(sc, kubeconfig),
                          capture_output=True, text=True, timeout=60)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    return result.stdout


def test_get_explain_history_and_watch_through_a_failover(make_scenario: Callable[..., Scenario],
                                                          prometheus: PrometheusServer) -> None:
    sc = _started(make_scenario, prometheus)
    watcher = Watcher(sc)
    try:
        watcher.wait_for("FallbackPolicy", "a first frame")
        sc.inject("primary", **SLOW)
        sc.wait_for_weights(ON_DISTILLED, timeout=30)
        wait_until(lambda: "TierTripped" in sc.reasons(), 10, "a TierTripped Event")
        watcher.wait_for("distilled 100%", "a frame of the fallback")

        shown = ok(kubectl_understudy(sc, "get", "recommender"))
        assert re.search(r"^  Serving +distilled 100% since ", shown, re.MULTILINE), shown
        tripped = re.search(r"^  Cause +primary tripped on p99-latency \((\d+)ms, above 1s\)$", shown, re.MULTILINE)
        assert tripped and int(tripped.group(1)) > 1000, shown
        assert re.search(r"^\+- primary +0% +2/2 ready +tripped +breach 2/2", shown, re.MULTILINE), shown
        assert re.search(r"^\|  \+- p99-latency +above 1s +breached +\d+ms +TierTripped ", shown, re.MULTILINE), shown
        assert "\x1b[" not in shown, "plain text when piped"

        tree = json.loads(ok(kubectl_understudy(sc, "get", "recommender", "-o", "json")))
        assert tree["activeTier"] == "distilled"
        latency = tree["tiers"][0]["triggers"][0]
        assert (latency["name"], latency["state"], latency["source"]) == ("p99-latency", "breached", "TierTripped")
        assert float(latency["observed"]) > 1000

        said = " ".join(ok(kubectl_understudy(sc, "explain", "recommender")).split())
        value = re.search(r"primary tripped on p99-latency: it read (\d+)ms, above 1s \(TierTripped at ", said)
        assert value and int(value.group(1)) > 1000, said
        # recoverAfter 3, doubled per failed probe if a restore step already probed the still slow primary
        # (the probe backoff): the commands above can take longer than the ~8 s before the first probe.
        assert re.search(r"For traffic to return to primary, primary must read clear for (3|6|12|24|48) "
                         r"evaluations in a row", said), said

        history = ok(kubectl_understudy(sc, "history", "recommender"))
        assert re.search(r"Warning +FallbackActivated +primary -> distilled +p99-latency \d+ms \(above 1s\)", history)

        sc.inject("primary")
        sc.wait_for_weights(ALL_PRIMARY, timeout=60)
        watcher.wait_for("primary 100%", "a frame of the primary serving again")
        assert watcher.frames_with("Restore     to primary: step 1 of 2"), "the watch showed the restore step"
    finally:
        code, err = watcher.interrupt()
    assert code == 0 and "Traceback" not in err, err


def test_pin_moves_traffic_and_who_pinned_is_in_the_event(make_scenario: Callable[..., Scenario],
                                                          prometheus: PrometheusServer) -> None:
    sc = _started(make_scenario, prometheus)
    sc.wait_for_weights(ALL_PRIMARY)
    pinned = ok(kubectl_understudy(sc, "pin", "recommender", "popular-items"))
    user = re.search(r"pinned to popular-items: the operator moves all traffic there at its next evaluation "
                     r"\(by (.+)\)$", pinned.strip())
    assert user, pinned
    sc.wait_for_weights(ON_POPULAR, timeout=30)
    note = wait_until(lambda: next((e["note"] for e in sc.events() if e["reason"] == "Pinned"), None), 10,
                      "a Pinned Event")
    assert f"all traffic pinned to popular-items by {user.group(1)}" in note
    override = sc.policy_object()["spec"]["override"]
    assert (override["pinTier"], override["by"]) == ("popular-items", user.group(1))

    ok(kubectl_understudy(sc, "unpin", "recommender"))
    sc.wait_for_weights(ALL_PRIMARY, timeout=60)
    wait_until(lambda: "Unpinned" in sc.reasons(), 10, "an Unpinned Event")


def test_a_user_without_patch_rights_gets_the_api_servers_refusal(make_scenario: Callable[..., Scenario],
                                                                  prometheus: PrometheusServer,
                                                                  tmp_path: Path) -> None:
    sc = _started(make_scenario, prometheus)
    viewer = _viewer(sc, tmp_path)
    assert "FallbackPolicy" in ok(kubectl_understudy(sc, "get", "recommender", kubeconfig=viewer))
    refused = kubectl_understudy(sc, "pin", "recommender", "distilled", kubeconfig=viewer)
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.startswith("kubectl understudy: the API server refused (403 Forbidden): ")
    assert (f'User "system:serviceaccount:{sc.namespace}:viewer" cannot patch resource "fallbackpolicies" in API '
            f'group "understudy.dev" in the namespace "{sc.namespace}"') in refused.stderr
    assert "Traceback" not in refused.stderr
    assert (sc.policy_object()["spec"].get("override") or {}) == {}


def test_approve_releases_a_held_restore(make_scenario: Callable[..., Scenario], prometheus: PrometheusServer) -> None:
    sc = _started(make_scenario, prometheus, evaluation={"restoreApproval": "Manual"})
    sc.inject("primary", **FAILING)
    sc.wait_for_weights(ON_DISTILLED, timeout=30)
    sc.inject("primary")
    wait_until(lambda: "RestoreAwaitingApproval" in sc.reasons(), 60, "a RestoreAwaitingApproval Event")
    held = sc.status()["engine"]["restoreHeld"]
    assert held["tier"] == "primary"
    for _ in range(5):  # recovered and past minDwell: only the approval is missing
        assert sc.routed_weights() == ON_DISTILLED
        time.sleep(1)
    shown = ok(kubectl_understudy(sc, "get", "recommender"))
    assert "to primary held for approval since " in shown and "kubectl understudy approve recommender" in shown

    approved = ok(kubectl_understudy(sc, "approve", "recommender"))
    user = re.search(r"approved the restore to primary held since (\S+) \(by (.+)\); the operator starts it", approved)
    assert user, approved
    sc.wait_for_weights(ALL_PRIMARY, timeout=60)
    note = wait_until(lambda: next((e["note"] for e in sc.events() if e["reason"] == "RestoreApproved"), None), 10,
                      "a RestoreApproved Event")
    assert f"restore to primary approved by {user.group(2)} (held since {user.group(1)})" in note
    assert sc.policy_object()["spec"]["override"]["restoreApprovedAt"] == user.group(1)
    again = kubectl_understudy(sc, "approve", "recommender")
    assert again.returncode == 1 and "is waiting for approval" in again.stderr


def _viewer(sc: Scenario, tmp_path: Path) -> Path:
    """A ServiceAccount with the built-in `view` role and read access to FallbackPolicies (what the chart's
    aggregation adds to `view`): it may read everything the plugin reads, and write nothing."""
    core, rbac = client.CoreV1Api(sc.api), client.RbacAuthorizationV1Api(sc.api)
    core.create_namespaced_service_account(sc.namespace, {"metadata": {"name": "viewer"}})
    rbac.create_namespaced_role(sc.namespace, {"metadata": {"name": "read-fallbackpolicies"}, "rules": [
        {"apiGroups": ["understudy.dev"], "resources": ["fallbackpolicies"], "verbs": ["get", "list", "watch"]}]})
    for kind, role in (("ClusterRole", "view"), ("Role", "read-fallbackpolicies")):
        rbac.create_namespaced_role_binding(sc.namespace, {
            "metadata": {"name": f"viewer-{role}"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": "viewer", "namespace": sc.namespace}]})
    return write_service_account_kubeconfig(sc.cp, sc.namespace, "viewer", tmp_path / "viewer")


class Watcher:
    """`kubectl understudy get --watch` with its output piped: frames are collected as they come."""

    def __init__(self, sc: Scenario) -> None:
        self.proc = subprocess.Popen([str(sc.cp.kubectl), "understudy", "get", "recommender", "--watch", "-n",
                                      sc.namespace], env=_env(sc), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.output = ""
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def _drain(self) -> str:
        while not self.lines.empty():
            self.output += self.lines.get_nowait()
        return self.output

    def wait_for(self, text: str, what: str, timeout: float = 60) -> None:
        wait_until(lambda: text in self._drain(), timeout, what)

    def frames_with(self, text: str) -> list[str]:
        return [f for f in self._drain().split("\nFallbackPolicy ") if text in f]

    def interrupt(self) -> tuple[int, str]:
        """Ctrl-C, as a terminal sends it: SIGINT to the plugin (kubectl execs it in its own place)."""
        self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(timeout=15)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        assert self.proc.stderr is not None
        return code, self.proc.stderr.read()
