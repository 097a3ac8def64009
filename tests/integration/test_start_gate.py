"""A restart must not let a newer policy take a shared route because the watch listed it first.

The real evaluation loop runs in-process against the real API server and Prometheus; the test plays the
policy watch, delivering the newer of two policies on one Service first and the older one (which owns the
route and keeps traffic on its fallback) two seconds later, as a watch listing thousands of policies may.
"""
from __future__ import annotations

import asyncio
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from e2e.harness.cluster import ControlPlane
from e2e.harness.prometheus import PrometheusServer
from understudy.audit.events import EventRecorder
from understudy.audit.metrics import OperatorMetrics
from understudy.controller.evaluator import Evaluator
from understudy.controller.handlers import evaluation_loop
from understudy.controller.health import LoopHealth
from understudy.controller.listing import StartGate, listed_policies
from understudy.controller.store import DeploymentSnapshot, PolicySnapshot, Store
from understudy.signals.reader import SignalReader

CRD = Path(__file__).resolve().parents[2] / "crds" / "understudy.dev_fallbackpolicies.yaml"
GROUP, VERSION, PLURAL = "understudy.dev", "v1alpha1", "fallbackpolicies"
ON_SMALL = {"app": "recommender", "model": "model-b"}
LATE = 2.0
"""Seconds between the watch delivering the newer policy and the older one."""


def _deployment(name: str) -> dict[str, Any]:
    labels = {"app": "recommender", "model": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "server", "image": f"{name}:1"}]}}}}


def _policy(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "FallbackPolicy", "metadata": {"name": name},
            "spec": {"primary": {"deploymentName": "model-a", "serviceName": "model-a"},
                     "fallbacks": [{"name": "small", "deploymentName": "model-b", "serviceName": "model-b",
                                    "degradation": {"description": "a smaller model",
                                                    "acceptedBy": "ml@example.com"}}],
                     "routing": {"service": {"name": "recommender"}},
                     "triggers": [{"name": "errors", "errorRatio": {"above": "0.1"}}],
                     "evaluation": {"interval": "1s"}, **spec}}


def _snapshot(body: dict[str, Any]) -> PolicySnapshot:
    meta = body["metadata"]
    return PolicySnapshot.of(meta["namespace"], meta["name"], meta["uid"], meta["generation"],
                             meta["resourceVersion"], body["spec"], body.get("status") or {},
                             created=datetime.fromisoformat(meta["creationTimestamp"].replace("Z", "+00:00"))
                             .timestamp())


@pytest.mark.parametrize("waits", [True, False], ids=["gate-waits-for-the-listing", "control-no-gate"])
def test_the_first_cycle_waits_until_every_listed_policy_is_in_the_store(
        control_plane: ControlPlane, kube_api: Any, namespace: str, prometheus: PrometheusServer,
        waits: bool) -> None:
    """`control-no-gate` runs the same loop with a gate that never waits (what the operator did before the
    gate): the newer policy then takes the route, which shows this test can tell the two apart."""
    control_plane.install_crds([yaml.safe_load(CRD.read_text())])
    apps, core, custom = client.AppsV1Api(kube_api), client.CoreV1Api(kube_api), client.CustomObjectsApi(kube_api)
    for name in ("model-a", "model-b"):
        apps.create_namespaced_deployment(namespace, _deployment(name))
    # The older policy pinned its fallback before the restart: the Service selects the small model.
    core.create_namespaced_service(namespace, {"apiVersion": "v1", "kind": "Service",
                                               "metadata": {"name": "recommender"},
                                               "spec": {"selector": ON_SMALL, "ports": [{"port": 80}]}})
    older = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                                   _policy("owner", override={"pinTier": "small"}))
    time.sleep(1.1)  # creationTimestamp has one-second resolution: make "older" unambiguous
    newer = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, _policy("aaa-newer"))
    deployments = {(namespace, n): DeploymentSnapshot(ready=1, desired=1, revision="1")
                   for n in ("model-a", "model-b")}

    gate = StartGate(listed_policies(kube_api, [namespace]), time.time()) if waits else StartGate.opened()
    assert not waits or gate.expected == {(namespace, "owner"), (namespace, "aaa-newer")}
    both = {(namespace, "owner"), (namespace, "aaa-newer")}
    assert listed_policies(kube_api, [namespace], page_size=1) == both  # page by page
    assert both <= listed_policies(kube_api, [], page_size=1)  # cluster-wide, as the chart runs it
    store = Store()
    for key, snapshot in deployments.items():
        store.put(store.deployments, key, snapshot, False)
    selectors: list[dict[str, str]] = []

    async def watch_and_sample(stopped: asyncio.Event) -> None:
        store.put(store.policies, (namespace, "aaa-newer"), _snapshot(newer), False)
        until = time.monotonic() + LATE + 6
        delivered = False
        while time.monotonic() < until:
            if not delivered and time.monotonic() > until - 6:
                store.put(store.policies, (namespace, "owner"), _snapshot(older), False)
                delivered = True
            selector = await asyncio.to_thread(lambda: core.read_namespaced_service("recommender", namespace)
                                               .spec.selector)
            selectors.append(selector)
            await asyncio.sleep(0.2)
        stopped.set()

    metrics = OperatorMetrics()
    with SignalReader(prometheus.url) as reader:
        evaluator = Evaluator(kube_api, reader, EventRecorder(client.EventsV1Api(kube_api), instance="test",
                                                              metrics=metrics), metrics)

        async def run() -> None:
            stopped = asyncio.Event()
            await asyncio.gather(evaluation_loop(evaluator, None, store, stopped, LoopHealth(60), gate),
                                 watch_and_sample(stopped))

        try:
            asyncio.run(run())
        finally:
            evaluator.close()

    flipped = [s for s in selectors if s != ON_SMALL]
    if waits:
        assert not flipped, f"the newer policy took the route before the owner was listed: {selectors}"
        ready = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "aaa-newer")["status"]
        condition = next(c for c in ready["conditions"] if c["type"] == "Ready")
        assert condition["reason"] == "RouteConflict", condition
    else:
        assert flipped, "without the gate the newer policy should have written its primary's selector"
