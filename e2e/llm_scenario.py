"""A chat assistant on two language models, wired end to end like `e2e.scenario.Scenario`, but for an LLM
platform: each model is a Deployment, a Service and an InferencePool of the Gateway API Inference
Extension; one HTTPRoute rule weighs the two pools; the models are LLM simulators (streaming tokens,
vLLM's metrics) scraped by a real Prometheus with the namespace and Deployment as target labels, as a
PodMonitor's relabelling would attach them; the traffic generator sends chat completions to the pool the
HTTPRoute weighs; the operator runs as a process and reads the vLLM preset.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kubernetes import client

from e2e.scenario import Scenario, TierSpec, merge_spec, wait_until
from e2e.sim.llm_server import LLMServer
from e2e.sim.traffic import HTTPRouteSource, TrafficGenerator

INFERENCE_GROUP = "inference.networking.k8s.io"
LLM_TIERS = (TierSpec("primary", "llm-large", "large"), TierSpec("small", "llm-small", "small"))
ROUTE_NAME = "assistant"
POLICY_NAME = "assistant"
HEALTHY = {"large": {"ttft_ms": 150.0, "tokens_per_second": 60.0},
           "small": {"ttft_ms": 60.0, "tokens_per_second": 120.0}}
CHAT = {"model": "assistant", "messages": [{"role": "user", "content": "Summarise the incident report."}],
        "max_tokens": 6, "stream": True}


def inference_pool(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{INFERENCE_GROUP}/v1", "kind": "InferencePool", "metadata": {"name": name},
        "spec": {"selector": {"matchLabels": {"app": name}}, "targetPorts": [{"number": 8000}],
                 "endpointPickerRef": {"name": f"{name}-epp", "port": {"number": 9002}}},
    }


def pool_ref(name: str) -> dict[str, str]:
    return {"group": INFERENCE_GROUP, "kind": "InferencePool", "name": name}


@dataclass
class LLMScenario(Scenario):
    """Two language models behind InferencePools in `namespace`; `inject(tier, ttft_ms=...)` slows one."""

    backend: str = "gatewayapi"
    servers: dict[str, LLMServer] = field(default_factory=dict)  # type: ignore[assignment]

    def _create_workloads(self) -> None:
        apps, core = client.AppsV1Api(self.api), client.CoreV1Api(self.api)
        custom = client.CustomObjectsApi(self.api)
        for tier in LLM_TIERS:
            labels = {"app": tier.deployment}
            apps.create_namespaced_deployment(self.namespace, {
                "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": tier.deployment, "labels": labels},
                "spec": {"replicas": 2, "selector": {"matchLabels": labels}, "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "vllm", "image": f"models/{tier.model}-llm:v1"}]}}},
            })
            core.create_namespaced_service(self.namespace, {
                "apiVersion": "v1", "kind": "Service", "metadata": {"name": tier.deployment},
                "spec": {"selector": labels, "ports": [{"port": 8000, "targetPort": 8000}]},
            })
            custom.create_namespaced_custom_object(INFERENCE_GROUP, "v1", self.namespace, "inferencepools",
                                                   inference_pool(tier.deployment))
            server = LLMServer(f"assistant-{tier.model}", concurrency=8, **HEALTHY[tier.model])
            self._stack.enter_context(server)
            self.servers[tier.name] = server
            self.prometheus.add_target(server.metrics_url, {"namespace": self.namespace, "workload": tier.deployment})
        self.prometheus.wait_for_targets_up([s.metrics_url for s in self.servers.values()])
        wait_until(self._all_ready, 90, "every model's Deployment to have 2 ready replicas")

    def _all_ready(self) -> bool:
        apps = client.AppsV1Api(self.api)
        return all((apps.read_namespaced_deployment(t.deployment, self.namespace).status.ready_replicas or 0) >= 2
                   for t in LLM_TIERS)

    def _create_routing(self) -> None:
        primary = LLM_TIERS[0]
        client.CustomObjectsApi(self.api).create_namespaced_custom_object(
            "gateway.networking.k8s.io", "v1", self.namespace, "httproutes", {
                "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": ROUTE_NAME},
                "spec": {"parentRefs": [{"name": "inference-gateway"}], "rules": [{"backendRefs": [
                    {**pool_ref(t.deployment), "weight": 100 if t is primary else 0} for t in LLM_TIERS]}]},
            })

    def policy(self, name: str = POLICY_NAME, **spec_overrides: Any) -> dict[str, Any]:
        """A vLLM-preset policy over the two pools: time to first token p90 above 1 s trips a model."""
        primary, small = LLM_TIERS
        spec: dict[str, Any] = {
            "primary": {"deploymentName": primary.deployment, "serviceName": primary.deployment,
                        "backendRef": pool_ref(primary.deployment)},
            "fallbacks": [{"name": small.name, "deploymentName": small.deployment, "serviceName": small.deployment,
                           "backendRef": pool_ref(small.deployment),
                           "degradation": {"description": "a smaller model: shorter, less accurate answers",
                                           "acceptedBy": "ml-product@example.com"}}],
            "routing": {"gatewayAPI": {"httpRouteName": ROUTE_NAME, "ruleIndex": 0}},
            "triggers": [{"name": "ttft", "timeToFirstToken": {"quantile": "0.9", "above": "1s"}}],
            "signals": {"preset": "vLLM", "minRequests": 3},
            "evaluation": {"interval": "1s", "window": "5s", "tripAfter": 2, "recoverAfter": 3, "minDwell": "3s",
                           "restoreSteps": [50, 100]},
            "creep": {"maxFallbackRatio": "0.5", "window": "10m", "action": "Alert"},
        }
        merge_spec(spec, spec_overrides)
        return {"apiVersion": "understudy.dev/v1alpha1", "kind": "FallbackPolicy",
                "metadata": {"name": name, "namespace": self.namespace}, "spec": spec}

    def start_traffic(self, rate: float = 4.0, duration: float = 600.0) -> TrafficGenerator:
        backends = {t.deployment: self.servers[t.name].url for t in LLM_TIERS}
        source = HTTPRouteSource(self.api, self.namespace, ROUTE_NAME, 0)
        self.traffic = TrafficGenerator(source, backends, rate=rate, duration=duration, max_requests=None,
                                        path="/v1/chat/completions", body=CHAT, timeout=15.0,
                                        source_workload="chat-frontend")
        self.traffic.start()
        return self.traffic

    def routed_weights(self) -> dict[str, int]:
        route = client.CustomObjectsApi(self.api).get_namespaced_custom_object(
            "gateway.networking.k8s.io", "v1", self.namespace, "httproutes", ROUTE_NAME)
        by_pool = {t.deployment: t.name for t in LLM_TIERS}
        return {by_pool[r["name"]]: int(r.get("weight", 1)) for r in route["spec"]["rules"][0]["backendRefs"]}


__all__ = ["LLM_TIERS", "LLMScenario", "POLICY_NAME"]
