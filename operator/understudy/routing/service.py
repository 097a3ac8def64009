"""Service backend: switches one Service's selector between the tiers' pods, all or nothing.

A Service cannot split traffic, so fractional weights cannot be expressed: the tier with the largest
weight (the better tier on a tie) gets the whole selector, and `read` reports 100 on the tier whose pod
labels equal the selector. A tier's pod labels are its Deployment's `spec.selector.matchLabels`; a
Deployment that is missing, or selects with matchExpressions, has no selector a Service can carry
(SelectorUnknown). Only `spec.selector` is written, conditionally on the resourceVersion read.
"""
from __future__ import annotations

from typing import Any

from kubernetes.client import ApiClient, AppsV1Api, CoreV1Api
from kubernetes.client.exceptions import ApiException

from understudy.engine.model import Tier
from understudy.routing.base import (
    JsonPatch,
    RoutingTargetError,
    ServiceTarget,
    Weights,
    check_weights,
    load,
    read_modify_write,
    translate,
)

KIND = "Service"


class ServiceBackend:
    """Selector switching on a core/v1 Service."""

    def __init__(self, api: ApiClient, target: ServiceTarget, tiers: tuple[Tier, ...]) -> None:
        self._core = CoreV1Api(api)
        self._apps = AppsV1Api(api)
        self._target = target
        self._tiers = tiers
        self.selector: dict[str, str] | None = None
        """The selector the last successful `apply` left on the Service: what a watch compares (drift)."""

    def read(self, namespace: str) -> Weights:
        selector = self._fetch(namespace).get("spec", {}).get("selector") or {}
        labels = self._tier_labels(namespace)
        for tier in self._tiers:
            if labels[tier.name] == selector:
                return tuple((t.name, 100 if t is tier else 0) for t in self._tiers)
        raise RoutingTargetError(
            "SelectorUnmatched",
            f"{KIND} {namespace}/{self._target.name} selects {selector}, which are no tier's pod labels",
        )

    def apply(self, namespace: str, weights: Weights) -> bool:
        desired = check_weights(weights, self._tiers)
        winner = max(self._tiers, key=lambda t: desired[t.name])
        wanted = self._tier_labels(namespace)[winner.name]
        name = self._target.name

        def plan(service: dict[str, Any]) -> JsonPatch:
            if service.get("spec", {}).get("type") == "ExternalName":
                raise RoutingTargetError(
                    "TargetUnsupported", f"{KIND} {namespace}/{name} is an ExternalName Service: it has no selector"
                )
            if (service.get("spec", {}).get("selector") or {}) == wanted:
                return []
            return [{"op": "add", "path": "/spec/selector", "value": wanted}]

        changed = read_modify_write(
            KIND, name, namespace,
            fetch=lambda: self._fetch(namespace),
            plan=plan,
            patch=lambda ops: self._core.patch_namespaced_service(name, namespace, ops, _preload_content=False),
        )
        self.selector = wanted
        return changed

    def _fetch(self, namespace: str) -> dict[str, Any]:
        name = self._target.name
        try:
            return load(self._core.read_namespaced_service(name, namespace, _preload_content=False))
        except ApiException as e:
            raise translate(e, KIND, name, namespace) from e

    def _tier_labels(self, namespace: str) -> dict[str, dict[str, str]]:
        """Tier name -> its Deployment's matchLabels; read every time so a relabelled Deployment is seen."""
        labels: dict[str, dict[str, str]] = {}
        for tier in self._tiers:
            try:
                deployment = load(
                    self._apps.read_namespaced_deployment(tier.deployment, namespace, _preload_content=False)
                )
            except ApiException as e:
                if e.status == 404:
                    raise RoutingTargetError(
                        "SelectorUnknown",
                        f"tier {tier.name!r}: Deployment {namespace}/{tier.deployment} does not exist",
                    ) from e
                raise translate(e, "Deployment", tier.deployment, namespace) from e
            selector = deployment.get("spec", {}).get("selector", {})
            if selector.get("matchExpressions") or not selector.get("matchLabels"):
                raise RoutingTargetError(
                    "SelectorUnknown",
                    f"tier {tier.name!r}: Deployment {namespace}/{tier.deployment} has no matchLabels-only selector "
                    "a Service could carry",
                )
            labels[tier.name] = selector["matchLabels"]
        owners: dict[tuple[tuple[str, str], ...], str] = {}
        for name, value in labels.items():
            key = tuple(sorted(value.items()))
            if key in owners:
                raise RoutingTargetError(
                    "SelectorUnknown", f"tiers {owners[key]!r} and {name!r} select the same pods ({value})"
                )
            owners[key] = name
        return labels
