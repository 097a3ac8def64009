"""Gateway API HTTPRoute backend: rewrites the backendRef weights of one rule.

Only `spec.rules[i].backendRefs[j].weight` is written, conditionally on the resourceVersion read. A
tier's backendRef is the one its spec names (group, kind, name: an InferencePool of the Gateway API
Inference Extension, or any other kind), by default the core Service of the tier's serviceName, always in
the route's namespace; it is matched and weighed the same whatever its kind. Unlike the Istio backend, a
tier missing from the rule is not added (DestinationMissing): a Service backendRef needs a port, and the
operator has no business guessing it. Weights are relative (an absent weight is 1), so a person's 1/1
reads as 50/50; the operator writes percents.
"""
from __future__ import annotations

from typing import Any

from kubernetes.client import ApiClient, CustomObjectsApi

from understudy.engine.model import BackendRef, Tier
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
from understudy.routing.targets import backend_ref

GROUP = "gateway.networking.k8s.io"
PLURAL = "httproutes"
KIND = "HTTPRoute"


def _describe(ref: BackendRef | dict[str, Any]) -> str:
    """`InferencePool "llm-large" (inference.networking.k8s.io)`, or `Service "x"` for the core group."""
    if isinstance(ref, dict):
        ref = BackendRef(str(ref.get("group", "")), str(ref.get("kind", "Service")), str(ref.get("name", "")))
    return f"{ref.kind} {ref.name!r}" + (f" ({ref.group})" if ref.group else "")


def _identity(ref: dict[str, Any], namespace: str) -> BackendRef | None:
    """A rule's backendRef as (group, kind, name) with Gateway API's defaults filled in; None for one in
    another namespace, which no tier names."""
    if ref.get("namespace", namespace) != namespace:
        return None
    return BackendRef(str(ref.get("group", "")), str(ref.get("kind", "Service")), str(ref.get("name", "")))


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
        by_ref = {backend_ref(t): t for t in self._tiers}
        if len(by_ref) != len(self._tiers):
            raise RoutingTargetError("DestinationAmbiguous", f"several tiers share one backendRef in {where}")
        placed: dict[str, int] = {}
        for j, ref in enumerate(refs):
            identity = _identity(ref, namespace)
            tier = by_ref.get(identity) if identity is not None else None
            if tier is None:
                elsewhere = "" if identity is not None else f" in namespace {ref.get('namespace')!r}"
                raise RoutingTargetError(
                    "DestinationUnknown",
                    f"{where} rule {rule} sends to {_describe(ref)}{elsewhere}, which is no tier's backendRef "
                    f"(the tiers' are {', '.join(_describe(backend_ref(t)) for t in self._tiers)})",
                )
            if tier.name in placed:
                raise RoutingTargetError(
                    "DestinationAmbiguous", f"{where} rule {rule} has several backendRefs for tier {tier.name!r}"
                )
            placed[tier.name] = j
        absent = [_describe(backend_ref(t)) for t in self._tiers if t.name not in placed]
        if absent and (require_all or not placed):
            raise RoutingTargetError(
                "DestinationMissing", f"{where} rule {rule} has no backendRef for {', '.join(absent)}"
            )
        return refs, placed
