"""Gateway API HTTPRoute backend: rewrites the backendRef weights of one rule.

Only `spec.rules[i].backendRefs[j].weight` is written, conditionally on the resourceVersion read. A
tier's backendRef is the core Service of the tier's name in the route's namespace. Unlike the Istio
backend, a tier missing from the rule is not added (DestinationMissing): a Service backendRef needs a
port, and the operator has no business guessing it. Weights are relative (an absent weight is 1), so a
person's 1/1 reads as 50/50; the operator writes percents.
"""
from __future__ import annotations

from typing import Any

from kubernetes.client import ApiClient, CustomObjectsApi

from understudy.engine.model import Tier
from understudy.routing.base import (
    CustomObject,
    GatewayAPITarget,
    JsonPatch,
    RoutingTargetError,
    Weights,
    check_weights,
    percentages,
    pointer,
)

GROUP = "gateway.networking.k8s.io"
PLURAL = "httproutes"
KIND = "HTTPRoute"


def _is_service(ref: dict[str, Any], namespace: str) -> bool:
    """A backendRef to a core Service in the route's own namespace (the defaults when fields are absent)."""
    return (
        ref.get("group", "") == ""
        and ref.get("kind", "Service") == "Service"
        and ref.get("namespace", namespace) == namespace
    )


class GatewayAPIBackend:
    """Weights of one rule of an HTTPRoute, `gateway.networking.k8s.io/<version>`."""

    def __init__(
        self, api: ApiClient, target: GatewayAPITarget, tiers: tuple[Tier, ...], version: str = "v1"
    ) -> None:
        self._object = CustomObject(CustomObjectsApi(api), GROUP, version, PLURAL, KIND, target.http_route)
        self._target = target
        self._tiers = tiers

    def read(self, namespace: str) -> Weights:
        refs, placed = self._layout(self._object.fetch(namespace), namespace, require_all=False)
        raw = {name: int(refs[j].get("weight", 1)) for name, j in placed.items()}
        return percentages(self._tiers, raw)

    def apply(self, namespace: str, weights: Weights) -> bool:
        desired = check_weights(weights, self._tiers)
        rule = self._target.rule

        def plan(route: dict[str, Any]) -> JsonPatch:
            refs, placed = self._layout(route, namespace, require_all=True)
            return [
                {"op": "add", "path": pointer("spec", "rules", rule, "backendRefs", j, "weight"), "value": desired[n]}
                for n, j in placed.items()
                if refs[j].get("weight", 1) != desired[n]
            ]

        return self._object.rewrite(namespace, plan)

    def _layout(
        self, route: dict[str, Any], namespace: str, require_all: bool
    ) -> tuple[list[dict[str, Any]], dict[str, int]]:
        """(the rule's backendRefs, tier name -> backendRef index) or a refusal.

        `read` tolerates a tier without a backendRef (it gets no traffic, 0); `apply` cannot add one.
        """
        where = f"{KIND} {namespace}/{self._target.http_route}"
        rules = route.get("spec", {}).get("rules") or []
        rule = self._target.rule
        if not 0 <= rule < len(rules):
            raise RoutingTargetError("RouteNotFound", f"{where} has {len(rules)} rules; rule {rule} does not exist")
        refs = rules[rule].get("backendRefs") or []
        by_service = {t.service: t for t in self._tiers}
        if len(by_service) != len(self._tiers):
            raise RoutingTargetError("DestinationAmbiguous", f"several tiers share one Service in {where}")
        placed: dict[str, int] = {}
        for j, ref in enumerate(refs):
            tier = by_service.get(ref.get("name", "")) if _is_service(ref, namespace) else None
            if tier is None:
                raise RoutingTargetError(
                    "DestinationUnknown",
                    f"{where} rule {rule} sends to {ref.get('kind', 'Service')} {ref.get('name')!r}, "
                    "which is no tier's Service",
                )
            if tier.name in placed:
                raise RoutingTargetError(
                    "DestinationAmbiguous", f"{where} rule {rule} has several backendRefs for tier {tier.name!r}"
                )
            placed[tier.name] = j
        absent = [t.service for t in self._tiers if t.name not in placed]
        if absent and (require_all or not placed):
            raise RoutingTargetError(
                "DestinationMissing", f"{where} rule {rule} has no backendRef for the Services {absent}"
            )
        return refs, placed
