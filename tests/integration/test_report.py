"""`understudy report` against the real API server and a real Prometheus scraping two model servers.

The test writes a FallbackPolicy, runs traffic through two simulated tiers (the primary made slow), then
records in the policy's status (through the status subresource) that the fallback served between two
known moments of that traffic. The report, run as a separate `understudy` process with KUBECONFIG like
kubectl, must find: the one activation of its window (an older one lies outside), the time in fallback,
each tier's mean confidence as the models themselves compute it, a positive latency gain, the creep
budget used, the last known good revision, no drill, and no segment label on the simulators' metrics.

A second test scrapes the operator's own metrics (the real `OperatorMetrics`) and a request counter with a
segment label, with a history truncated at 20 entries: the activation count and the time per tier must then
come from Prometheus, and the fallback share per segment from the labelled counter.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kubernetes import client
from prometheus_client import CollectorRegistry, Counter, start_http_server

from e2e.harness.cluster import ControlPlane
from e2e.harness.prometheus import PrometheusServer, free_port
from e2e.sim.model_server import ModelServer
from understudy.audit.metrics import OperatorMetrics
from understudy.engine.model import AuditRecord

CRD = Path(__file__).resolve().parents[2] / "crds" / "understudy.dev_fallbackpolicies.yaml"
GROUP, VERSION, PLURAL = "understudy.dev", "v1alpha1", "fallbackpolicies"
NAME = "recommender"
PRIMARY, FALLBACK = "rec-large", "rec-small"
SLOW_MS = 800
"""Injected into the primary: every one of its requests lands in the (500, 1000] ms bucket or above."""

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def report_crd(control_plane: ControlPlane) -> None:
    """The FallbackPolicy CRD from crds/, applied server-side and Established (as tests/endtoend does)."""
    control_plane.run_kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    control_plane.run_kubectl("wait", "--for=condition=Established", "--timeout=60s",
                              "crd/fallbackpolicies.understudy.dev")


def policy_body(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "FallbackPolicy",
        "metadata": {"name": NAME, "namespace": namespace},
        "spec": {
            "primary": {"deploymentName": PRIMARY, "serviceName": PRIMARY},
            "fallbacks": [{"name": "distilled", "deploymentName": FALLBACK, "serviceName": FALLBACK,
                           "degradation": {"description": "a logistic regression instead of a forest",
                                           "acceptedBy": "ml-product@example.com"}}],
            "routing": {"service": {"name": "recommender"}},
            "triggers": [{"name": "p99-latency", "latency": {"quantile": "0.99", "above": "250ms"}}],
            "creep": {"maxFallbackRatio": "0.10", "window": "1h", "action": "Alert"},
        },
    }


def rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def status_body(activated: int, restored: int) -> dict[str, Any]:
    def entry(at: float, reason: str, frm: str, to: str, **extra: str) -> dict[str, Any]:
        return {"time": rfc3339(at), "fromTier": frm, "toTier": to, "reason": reason,
                "message": f"{reason} ({frm} to {to})", **extra}

    return {"status": {
        "activeTier": "primary",
        "primaryWeight": 100,
        "weights": [{"tier": "primary", "weight": 100}, {"tier": "distilled", "weight": 0}],
        "fallbackRatio": "0.050",
        "lastKnownGoodRevision": "4",
        "conditions": [{"type": "Ready", "status": "True", "reason": "Reconciled", "message": "test",
                        "lastTransitionTime": rfc3339(activated)}],
        "history": [
            entry(activated - 7200, "FallbackActivated", "primary", "distilled"),  # two hours ago: outside
            entry(activated - 7000, "Restored", "distilled", "primary"),
            entry(activated, "FallbackActivated", "primary", "distilled",
                  trigger="p99-latency", observed="995", threshold="250"),
            entry(restored, "Restored", "distilled", "primary"),
        ],
    }}


class Sender:
    """Sends /predict calls to one server from a thread; counts the ones answered 200."""

    def __init__(self, server: ModelServer) -> None:
        self.server = server
        self.ok = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            request = urllib.request.Request(self.server.url + "/predict", data=b"{}", method="POST",
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    if response.status == 200:
                        self.ok += 1
            except OSError:
                time.sleep(0.05)

    def __enter__(self) -> Sender:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


def expected_confidence(server: ModelServer, served: int) -> float:
    """Mean max class probability over the held-out rows the server answered, in its cyclic order."""
    model = server.model
    top = model.estimator.predict_proba(model.x_test).max(axis=1)
    rows = np.arange(served) % len(model.x_test)
    return float(top[rows].mean())


def wait_for_whole_second() -> int:
    moment = math.ceil(time.time())
    time.sleep(max(0.0, moment - time.time()))
    return moment


def report(control_plane: ControlPlane, namespace: str, prometheus: PrometheusServer, *extra: str) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "understudy", "report", NAME, "-n", namespace, "--prometheus", prometheus.url,
         "--since", "15m", "--segment-label", "request_segment", *extra],
        env=control_plane.subprocess_env(), capture_output=True, text=True, timeout=180)


@pytest.fixture
def servers(prometheus: PrometheusServer, namespace: str) -> Iterator[tuple[ModelServer, ModelServer]]:
    """The primary and the fallback on loopback, scraped every second; stopped and unscraped afterwards."""
    with ExitStack() as stack:
        pair = (ModelServer(PRIMARY, namespace, "large"), ModelServer(FALLBACK, namespace, "small"))
        for server in pair:
            stack.enter_context(server)
            stack.enter_context(prometheus.target(server.metrics_url))
        prometheus.wait_for_targets_up([s.metrics_url for s in pair], timeout=60)
        yield pair


def test_report_of_a_policy_with_one_fallback_episode(
        control_plane: ControlPlane, kube_api: Any, namespace: str, report_crd: None,
        prometheus: PrometheusServer, servers: tuple[ModelServer, ModelServer]) -> None:
    custom = client.CustomObjectsApi(kube_api)
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, policy_body(namespace))
    primary, fallback = servers
    primary.inject(latency_ms=SLOW_MS)

    with Sender(primary) as slow:
        time.sleep(6)  # the primary alone, slow: what tripped the fallback
        activated = wait_for_whole_second()
        with Sender(fallback) as fast:  # the fallback serves; the slow primary keeps a trickle
            time.sleep(15)
        restored = wait_for_whole_second()
    prometheus.wait_for(
        f'sum(model_prediction_confidence_count{{namespace="{namespace}", workload="{FALLBACK}"}})',
        lambda r: bool(r) and float(r[0]["value"][1]) >= fast.ok, timeout=30)
    time.sleep(2)  # one more scrape of every series after the episode
    assert slow.ok >= 5 and fast.ok >= 20, (slow.ok, fast.ok)

    custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, NAME,
                                                 status_body(activated, restored))

    done = report(control_plane, namespace, prometheus, "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["policy"] == {"namespace": namespace, "name": NAME}
    assert doc["activations"]["count"] == 1 and doc["activations"]["source"] == "status.history"
    assert doc["activations"]["fromPrometheus"] is None  # the operator's metrics are not scraped here
    assert doc["timeInFallback"]["seconds"] == pytest.approx(restored - activated)
    assert doc["fallbackRatio"] == pytest.approx(0.05) and doc["creep"]["budgetUsed"] == pytest.approx(0.5)
    assert doc["lastKnownGoodRevision"] == "4"
    assert doc["lastDrill"] is None and doc["lastDrillNote"] == "no drill on record"

    tiers = {t["tier"]: t for t in doc["tiers"]}
    for tier, server, sent in (("primary", primary, slow.ok), ("distilled", fallback, fast.ok)):
        want = expected_confidence(server, sent)
        assert tiers[tier]["meanConfidence"] == pytest.approx(want, abs=0.03), (tier, want, tiers[tier])
        assert 0.5 * sent <= tiers[tier]["predictions"] <= 1.5 * sent, (tier, sent, tiers[tier])
    assert tiers["primary"]["meanConfidence"] > 0.6 and tiers["distilled"]["meanConfidence"] > 0.6

    latency = doc["latency"]
    assert latency["primaryBasis"] == "during fallback" and latency["fallbackPeriods"] == 1
    assert latency["primaryMs"] >= 500, latency  # every primary request took at least SLOW_MS
    assert latency["fallbackMs"] < latency["primaryMs"]
    assert latency["gainedMs"] == pytest.approx(latency["primaryMs"] - latency["fallbackMs"])
    assert latency["gainedMs"] > 0

    assert doc["segments"]["found"] is False
    assert "'request_segment' not found on istio_requests_total" in doc["segments"]["note"]

    text = report(control_plane, namespace, prometheus)
    print(text.stdout)  # shown by pytest when an assertion below fails, or with -s
    assert text.returncode == 0, text.stderr
    assert "1 FallbackActivated (from status.history)" in text.stdout
    assert "no drill on record" in text.stdout
    assert "50% (fallbackRatio / maxFallbackRatio 0.1)" in text.stdout
    assert "Fallback share per segment: label 'request_segment' not found" in text.stdout


def test_report_of_a_missing_policy_fails(control_plane: ControlPlane, namespace: str, report_crd: None,
                                          prometheus: PrometheusServer) -> None:
    done = report(control_plane, namespace, prometheus)
    assert done.returncode == 1
    assert f"fallbackpolicy {namespace}/{NAME} not found" in done.stderr


ACTIVATED = AuditRecord("FallbackActivated", "p99 over 250ms", tier="primary", from_tier="primary",
                        to_tier="distilled")
RESTORED = AuditRecord("Restored", "all traffic back", tier="primary", from_tier="distilled", to_tier="primary")
PER_STEP = {("mobile", PRIMARY): 30, ("mobile", FALLBACK): 10, ("web", PRIMARY): 10, ("web", FALLBACK): 0}
"""Requests per step and segment: mobile's fallback share is 10 / 40, web's 0, all segments' 10 / 50."""


@pytest.fixture
def exporters(prometheus: PrometheusServer) -> Iterator[tuple[OperatorMetrics, Counter]]:
    """The operator's metrics and a segment-labelled request counter on loopback, scraped; closed after."""
    operator = OperatorMetrics()
    segments = CollectorRegistry()
    requests = Counter("istio_requests", "Requests by segment (a mesh with a request_segment label).",
                       ["destination_workload", "destination_workload_namespace", "request_segment"],
                       registry=segments)
    with ExitStack() as stack:
        urls = []
        for registry in (operator.registry, segments):
            port = free_port()
            if registry is operator.registry:
                server, thread = operator.serve(port, "127.0.0.1")
            else:
                server, thread = start_http_server(port, "127.0.0.1", registry=registry)
            stack.callback(thread.join, 5)
            stack.callback(server.server_close)
            stack.callback(server.shutdown)
            urls.append(f"http://127.0.0.1:{port}/metrics")
            stack.enter_context(prometheus.target(urls[-1]))
        prometheus.wait_for_targets_up(urls, timeout=60)
        yield operator, requests


def truncated_history(now: float) -> list[dict[str, Any]]:
    """20 entries (the limit), the oldest inside the window: only the last one is an activation."""
    entries = [{"time": rfc3339(now - 60 + i), "fromTier": "primary", "toTier": "primary",
                "reason": "Paused" if i % 2 == 0 else "Resumed", "message": "override"} for i in range(19)]
    entries.append({"time": rfc3339(now - 30), "fromTier": "primary", "toTier": "distilled",
                    "reason": "FallbackActivated", "message": "p99 over 250ms"})
    return entries


def test_report_reads_the_operators_metrics_and_the_segment_label(
        control_plane: ControlPlane, kube_api: Any, namespace: str, report_crd: None,
        prometheus: PrometheusServer, exporters: tuple[OperatorMetrics, Counter]) -> None:
    operator, requests = exporters
    custom = client.CustomObjectsApi(kube_api)
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, policy_body(namespace))
    tiers = ("primary", "distilled")
    for segment, workload in PER_STEP:
        requests.labels(workload, namespace, segment)  # every series born at zero, so increase() sees it all
    operator.observe_policy(namespace, NAME, tiers, "primary", 0.0)
    prometheus.wait_for(f'understudy_active_tier{{namespace="{namespace}", tier="primary"}} == 1', timeout=30)
    prometheus.wait_for(f'istio_requests_total{{destination_workload_namespace="{namespace}"}}',
                        lambda r: len(r) == len(PER_STEP), timeout=30)

    # The first activation creates the counter at 1, which increase() cannot see: wait until it is scraped,
    # then three more episodes. Prometheus counts 3 (a little more with extrapolation); the history, 1.
    operator.observe_policy(namespace, NAME, tiers, "distilled", 0.0, [ACTIVATED])
    prometheus.wait_for(f'understudy_transitions_total{{namespace="{namespace}", reason="FallbackActivated"}}',
                        timeout=30)
    for step in range(12):
        for (segment, workload), n in PER_STEP.items():
            requests.labels(workload, namespace, segment).inc(n)
        if step in (1, 5, 9):
            operator.observe_policy(namespace, NAME, tiers, "primary", 0.0, [RESTORED])
        if step in (3, 7, 11):
            operator.observe_policy(namespace, NAME, tiers, "distilled", 0.0, [ACTIVATED])
        time.sleep(1.2)
    prometheus.wait_for(
        f'sum(understudy_transitions_total{{namespace="{namespace}", reason="FallbackActivated"}}) == 4', timeout=30)
    time.sleep(2)

    now = time.time()
    custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, NAME,
        {"status": {"activeTier": "distilled", "history": truncated_history(now)}})

    done = report(control_plane, namespace, prometheus, "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    activations = doc["activations"]
    assert activations["fromHistory"] == 1
    assert activations["source"] == "prometheus" and activations["lowerBound"] is False
    assert 3 <= activations["fromPrometheus"] <= 4 and activations["count"] == activations["fromPrometheus"]

    in_fallback = doc["timeInFallback"]
    assert in_fallback["source"] == "prometheus"
    assert 10 <= in_fallback["coveredSeconds"] <= 300, in_fallback
    share = in_fallback["seconds"] / in_fallback["coveredSeconds"]
    assert 0.2 <= share <= 0.8, in_fallback  # about half of the scraped time was spent on distilled

    segments = doc["segments"]
    assert segments["found"] is True and segments["label"] == "request_segment"
    assert segments["overallShare"] == pytest.approx(10 / 50, abs=0.02)
    by_value = {s["value"]: s for s in segments["segments"]}
    assert set(by_value) == {"mobile", "web"}
    assert by_value["mobile"]["share"] == pytest.approx(10 / 40, abs=0.02)
    assert by_value["web"]["share"] == 0.0 and by_value["web"]["requests"] > 0
