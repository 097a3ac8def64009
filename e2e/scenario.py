"""One recommender with three tiers, wired end to end: the piece the operator tests, the demo and the
benchmarks share.

Real Deployments in the API server (pods made Ready by KWOK), real model servers on loopback scraped by a
real Prometheus, a traffic generator that follows the routing object the operator writes, and the
operator itself as a separate process (so it can be killed and restarted like a pod).
"""
from __future__ import annotations

import contextlib
import copy
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, TypeVar

from kubernetes import client

from e2e.harness.cluster import ControlPlane, kill_with_parent
from e2e.harness.prometheus import PrometheusServer, free_port
from e2e.sim.model_server import ModelServer
from e2e.sim.traffic import (
    HTTPRouteSource,
    RouteSource,
    ServiceSelectorSource,
    TrafficGenerator,
    VirtualServiceSource,
)

T = TypeVar("T")


@dataclass(frozen=True)
class TierSpec:
    name: str
    deployment: str
    model: str


TIERS = (
    TierSpec("primary", "recommender-large", "large"),
    TierSpec("distilled", "recommender-small", "small"),
    TierSpec("popular-items", "popularity-baseline", "baseline"),
)
ROUTE = "default"
ROUTING_NAME = "recommender"


def wait_until(check: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


class OperatorProcess:
    """`understudy run` in its own process group, logging to a file; killable like a pod."""

    def __init__(self, cp: ControlPlane, prometheus_url: str, namespace: str, log_path: Path,
                 extra_args: tuple[str, ...] = (), kubeconfig: Path | None = None) -> None:
        self.metrics_port = free_port()
        self.log_path = log_path
        self._argv = [sys.executable, "-m", "understudy", "run", "--prometheus-url", prometheus_url,
                      "--namespace", namespace, "--metrics-port", str(self.metrics_port),
                      "--metrics-address", "127.0.0.1", "--query-timeout", "1", *extra_args]
        self._env = cp.subprocess_env()
        if kubeconfig is not None:  # e.g. a ServiceAccount's, so the operator gets exactly its RBAC
            self._env["KUBECONFIG"] = str(kubeconfig)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(self._argv, env=self._env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True, preexec_fn=kill_with_parent)
        finally:
            log.close()
        return self

    def kill(self) -> None:
        """SIGKILL: no cleanup handlers, no Lease release, exactly like a node loss."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Scenario:
    """Three tiers of a recommender in `namespace`, routed by `backend` (istio | service | gatewayapi)."""

    cp: ControlPlane
    prometheus: PrometheusServer
    namespace: str
    api: Any
    backend: str = "istio"
    workdir: Path = field(default_factory=lambda: Path("."))
    servers: dict[str, ModelServer] = field(default_factory=dict)
    traffic: TrafficGenerator | None = None
    operators: list[OperatorProcess] = field(default_factory=list)
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    # -- set-up ---------------------------------------------------------------------------------------

    def __enter__(self) -> Scenario:
        try:
            self._create_workloads()
            self._create_routing()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for op in self.operators:
            op.stop()
        if self.traffic is not None:
            self.traffic.stop()
        for server in self.servers.values():
            self.prometheus.remove_target(server.metrics_url)
        self._stack.close()

    def _create_workloads(self) -> None:
        apps, core = client.AppsV1Api(self.api), client.CoreV1Api(self.api)
        for tier in TIERS:
            labels = {"app": tier.deployment}
            apps.create_namespaced_deployment(self.namespace, {
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": tier.deployment, "labels": labels},
                "spec": {
                    "replicas": 2,
                    "selector": {"matchLabels": labels},
                    "template": {"metadata": {"labels": labels}, "spec": {
                        "containers": [{"name": "model", "image": f"models/{tier.model}:v1"}]}},
                },
            })
            core.create_namespaced_service(self.namespace, {
                "apiVersion": "v1", "kind": "Service", "metadata": {"name": tier.deployment},
                "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": 8080}]},
            })
            server = ModelServer(tier.deployment, self.namespace, tier.model, service=tier.deployment)
            self._stack.enter_context(server)
            self.servers[tier.name] = server
            self.prometheus.add_target(server.metrics_url)
        self.prometheus.wait_for_targets_up([s.metrics_url for s in self.servers.values()])
        wait_until(self._all_ready, 90, "every tier's Deployment to have 2 ready replicas")

    def _all_ready(self) -> bool:
        apps = client.AppsV1Api(self.api)
        return all((apps.read_namespaced_deployment(t.deployment, self.namespace).status.ready_replicas or 0) >= 2
                   for t in TIERS)

    def _create_routing(self) -> None:
        custom = client.CustomObjectsApi(self.api)
        primary, *others = TIERS
        if self.backend == "istio":
            custom.create_namespaced_custom_object("networking.istio.io", "v1", self.namespace, "virtualservices", {
                "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                "metadata": {"name": ROUTING_NAME},
                "spec": {"hosts": [ROUTING_NAME], "http": [
                    {"name": "canary-header", "match": [{"headers": {"x-canary": {"exact": "1"}}}],
                     "route": [{"destination": {"host": primary.deployment}}]},
                    {"name": ROUTE, "route": [
                        {"destination": {"host": t.deployment}, "weight": 100 if t is primary else 0}
                        for t in TIERS]},
                ]},
            })
        elif self.backend == "gatewayapi":
            custom.create_namespaced_custom_object("gateway.networking.k8s.io", "v1", self.namespace, "httproutes", {
                "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                "metadata": {"name": ROUTING_NAME},
                "spec": {"parentRefs": [{"name": "gateway"}], "rules": [{"backendRefs": [
                    {"name": t.deployment, "port": 80, "weight": 100 if t is primary else 0} for t in TIERS]}]},
            })
        elif self.backend == "service":
            client.CoreV1Api(self.api).create_namespaced_service(self.namespace, {
                "apiVersion": "v1", "kind": "Service", "metadata": {"name": ROUTING_NAME},
                "spec": {"selector": {"app": primary.deployment}, "ports": [{"port": 80, "targetPort": 8080}]},
            })
        else:
            raise ValueError(f"unknown backend {self.backend!r}")

    # -- the policy -----------------------------------------------------------------------------------

    def policy(self, name: str = "recommender", **spec_overrides: Any) -> dict[str, Any]:
        """A FallbackPolicy over the three tiers, tuned for tests: 1 s evaluations, short windows.

        The latency limit is generous (1 s) because a shared two-core machine running a control plane can
        itself push a healthy model's p99 past a few hundred milliseconds."""
        routing = {
            "istio": {"istio": {"virtualServiceName": ROUTING_NAME, "routeName": ROUTE}},
            "service": {"service": {"name": ROUTING_NAME}},
            "gatewayapi": {"gatewayAPI": {"httpRouteName": ROUTING_NAME, "ruleIndex": 0}},
        }[self.backend]
        primary, *fallbacks = TIERS
        spec: dict[str, Any] = {
            "primary": {"deploymentName": primary.deployment, "serviceName": primary.deployment},
            "fallbacks": [
                {"name": t.name, "deploymentName": t.deployment, "serviceName": t.deployment,
                 "degradation": {"description": f"answers from the {t.model} model",
                                 "acceptedBy": "ml-product@example.com"}}
                for t in fallbacks],
            "routing": routing,
            "triggers": [
                {"name": "p99-latency", "latency": {"quantile": "0.99", "above": "1s"}},
                {"name": "errors", "errorRatio": {"above": "0.1"}},
            ],
            "signals": {"minRequests": 5},
            "evaluation": {"interval": "1s", "window": "5s", "tripAfter": 2, "recoverAfter": 3, "minDwell": "3s",
                           # A Service selector cannot split traffic: its restore is one step, the default.
                           **({} if self.backend == "service" else {"restoreSteps": [50, 100]})},
            "creep": {"maxFallbackRatio": "0.5", "window": "10m", "action": "Alert"},
        }
        merge_spec(spec, spec_overrides)
        return {"apiVersion": "understudy.dev/v1alpha1", "kind": "FallbackPolicy",
                "metadata": {"name": name, "namespace": self.namespace}, "spec": spec}

    def apply_policy(self, body: Mapping[str, Any]) -> dict[str, Any]:
        custom = client.CustomObjectsApi(self.api)
        return custom.create_namespaced_custom_object("understudy.dev", "v1alpha1", self.namespace,
                                                      "fallbackpolicies", dict(body))

    def patch_policy(self, name: str, patch: Mapping[str, Any]) -> None:
        client.CustomObjectsApi(self.api).patch_namespaced_custom_object(
            "understudy.dev", "v1alpha1", self.namespace, "fallbackpolicies", name, dict(patch))

    # -- processes ------------------------------------------------------------------------------------

    def start_traffic(self, rate: float = 40.0, duration: float = 600.0) -> TrafficGenerator:
        backends = {t.deployment: server.url for t, server in zip(TIERS, self.servers.values())}
        source: RouteSource
        if self.backend == "istio":
            source = VirtualServiceSource(self.api, self.namespace, ROUTING_NAME, ROUTE)
        elif self.backend == "gatewayapi":
            source = HTTPRouteSource(self.api, self.namespace, ROUTING_NAME, 0)
        else:
            source = ServiceSelectorSource(self.api, self.namespace, ROUTING_NAME,
                                           {t.deployment: {"app": t.deployment} for t in TIERS})
        self.traffic = TrafficGenerator(source, backends, rate=rate, duration=duration, max_requests=None)
        self.traffic.start()
        return self.traffic

    def start_operator(self, *extra_args: str, kubeconfig: Path | None = None) -> OperatorProcess:
        log = self.workdir / f"operator-{len(self.operators)}.log"
        op = OperatorProcess(self.cp, self.prometheus.url, self.namespace, log, tuple(extra_args),
                             kubeconfig).start()
        self.operators.append(op)
        return op

    def inject(self, tier: str, **faults: Any) -> None:
        self.servers[tier].inject(reset=True, **faults)

    # -- observation ----------------------------------------------------------------------------------

    def routed_weights(self) -> dict[str, int]:
        """Percent per tier as the routing object carries it now."""
        custom = client.CustomObjectsApi(self.api)
        by_deployment = {t.deployment: t.name for t in TIERS}
        if self.backend == "istio":
            vs = custom.get_namespaced_custom_object("networking.istio.io", "v1", self.namespace,
                                                     "virtualservices", ROUTING_NAME)
            route = next(r for r in vs["spec"]["http"] if r.get("name") == ROUTE)
            return {by_deployment[d["destination"]["host"]]: int(d.get("weight", 0)) for d in route["route"]}
        if self.backend == "gatewayapi":
            hr = custom.get_namespaced_custom_object("gateway.networking.k8s.io", "v1", self.namespace,
                                                     "httproutes", ROUTING_NAME)
            return {by_deployment[r["name"]]: int(r.get("weight", 1)) for r in hr["spec"]["rules"][0]["backendRefs"]}
        svc = client.CoreV1Api(self.api).read_namespaced_service(ROUTING_NAME, self.namespace)
        chosen = (svc.spec.selector or {}).get("app")
        return {t.name: 100 if t.deployment == chosen else 0 for t in TIERS}

    def policy_object(self, name: str = "recommender") -> dict[str, Any]:
        return client.CustomObjectsApi(self.api).get_namespaced_custom_object(
            "understudy.dev", "v1alpha1", self.namespace, "fallbackpolicies", name)

    def status(self, name: str = "recommender") -> dict[str, Any]:
        return dict(self.policy_object(name).get("status") or {})

    def condition(self, type_: str, name: str = "recommender") -> dict[str, Any] | None:
        return next((c for c in self.status(name).get("conditions") or [] if c.get("type") == type_), None)

    def events(self, name: str = "recommender") -> list[dict[str, Any]]:
        """The policy's audit Events (events.k8s.io/v1), oldest first."""
        found = client.EventsV1Api(self.api).list_namespaced_event(
            self.namespace, field_selector=f"regarding.name={name},regarding.kind=FallbackPolicy")
        items = [e.to_dict() if hasattr(e, "to_dict") else e for e in found.items]
        return sorted(items, key=lambda e: str(e.get("event_time") or e.get("eventTime") or ""))

    def reasons(self, name: str = "recommender") -> list[str]:
        return [str(e.get("reason")) for e in self.events(name)]

    def wait_for_weights(self, expected: Mapping[str, int], timeout: float = 60.0) -> dict[str, int]:
        def check() -> dict[str, int] | None:
            current = self.routed_weights()
            return current if all(current.get(k, 0) == v for k, v in expected.items()) else None
        try:
            return wait_until(check, timeout, f"routing weights {dict(expected)}")
        except AssertionError as err:
            raise AssertionError(f"{err}\n--- operator log ---\n{self.operator_logs()}") from None

    def operator_logs(self) -> str:
        return "\n".join(op.log_tail() for op in self.operators)


def merge_spec(base: dict[str, Any], overrides: Mapping[str, Any]) -> None:
    """Deep-merge `overrides` into a policy spec: nested mappings merge, anything else replaces."""
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            merge_spec(base[key], value)
        else:
            base[key] = copy.deepcopy(value)


@contextlib.contextmanager
def scenario(cp: ControlPlane, prometheus: PrometheusServer, namespace: str, api: Any, workdir: Path,
             backend: str = "istio") -> Iterator[Scenario]:
    with Scenario(cp, prometheus, namespace, api, backend, workdir) as sc:
        yield sc


__all__ = ["OperatorProcess", "Scenario", "TIERS", "TierSpec", "merge_spec", "scenario", "wait_until"]
