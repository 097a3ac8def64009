"""Istio VirtualService backend: rewrites the destination weights of one named http route.

Only `spec.http[i].route[j].weight` (and, once, missing tier destinations) are written; every other
route and field is left as a person wrote it, and the write is conditional on the resourceVersion read.

A tier's destination is the one whose `destination.host` is the tier's Service, as a short name or as
`<service>.<namespace>[.svc[.<cluster domain>]]`. Choice on missing tiers: when the route already sends
to the primary's Service, a tier missing from it is added on the first write (weight as decided, 0 when
it gets no traffic) with a host in the same form as the primary's, so the route shows the whole chain;
when the primary itself is absent the route is someone else's and DestinationMissing is raised. A
destination that is no tier's (DestinationUnknown) or several destinations of one tier, e.g. subsets
(DestinationAmbiguous), are refused rather than guessed at.
"""
from __future__ import annotations

from typing import Any

from kubernetes.client import ApiClient, CustomObjectsApi

from understudy.engine.model import PRIMARY, Tier
from understudy.routing.base import (
    CustomObject,
    IstioTarget,
    JsonPatch,
    RoutingTargetError,
    Weights,
    check_weights,
    percentages,
    pointer,
)
from understudy.routing.targets import host_matches

GROUP = "networking.istio.io"
PLURAL = "virtualservices"
KIND = "VirtualService"


class IstioBackend:
    """Weights of one http route of a VirtualService, `networking.istio.io/<version>`."""

    def __init__(self, api: ApiClient, target: IstioTarget, tiers: tuple[Tier, ...], version: str = "v1") -> None:
        self._object = CustomObject(CustomObjectsApi(api), GROUP, version, PLURAL, KIND, target.virtual_service)
        self._target = target
        self._tiers = tiers
        self._primary = next(t for t in tiers if t.name == PRIMARY)

    def read(self, namespace: str) -> Weights:
        vs = self._object.fetch(namespace)
        _, destinations, placed = self._layout(vs, namespace)
        raw = {name: _effective(destinations, j) for name, j in placed.items()}
        return percentages(self._tiers, raw)

    def apply(self, namespace: str, weights: Weights) -> bool:
        desired = check_weights(weights, self._tiers)

        def plan(vs: dict[str, Any]) -> JsonPatch:
            index, destinations, placed = self._layout(vs, namespace)
            missing = [t for t in self._tiers if t.name not in placed]
            if not missing and all(_effective(destinations, j) == desired[n] for n, j in placed.items()):
                return []
            ops: JsonPatch = [
                {"op": "add", "path": pointer("spec", "http", index, "route", j, "weight"), "value": desired[n]}
                for n, j in placed.items()
                if destinations[j].get("weight") != desired[n]
            ]
            primary_host = destinations[placed[PRIMARY]]["destination"]["host"]
            primary_service = self._primary.service
            for tier in missing:
                suffix = primary_host[len(primary_service):] if primary_host != primary_service else ""
                host = tier.service + suffix
                ops.append({
                    "op": "add",
                    "path": pointer("spec", "http", index, "route", "-"),
                    "value": {"destination": {"host": host}, "weight": desired[tier.name]},
                })
            return ops

        return self._object.rewrite(namespace, plan)

    def _layout(self, vs: dict[str, Any], namespace: str) -> tuple[int, list[dict[str, Any]], dict[str, int]]:
        """(index of the http route, its destinations, tier name -> destination index) or a refusal."""
        where = f"{KIND} {namespace}/{self._target.virtual_service}"
        http = vs.get("spec", {}).get("http") or []
        wanted = self._target.route
        if wanted is None:
            if len(http) != 1:
                raise RoutingTargetError(
                    "RouteNotFound", f"{where} has {len(http)} http routes; name the one to rewrite"
                )
            index = 0
        else:
            found = [i for i, r in enumerate(http) if r.get("name") == wanted]
            if not found:
                raise RoutingTargetError("RouteNotFound", f"{where} has no http route named {wanted!r}")
            index = found[0]
        destinations = http[index].get("route") or []
        placed: dict[str, int] = {}
        for j, d in enumerate(destinations):
            host = d.get("destination", {}).get("host", "")
            owners = [t for t in self._tiers if host_matches(host, t.service, namespace)]
            if not owners:
                raise RoutingTargetError(
                    "DestinationUnknown", f"{where} route {index} sends to {host!r}, which is no tier's Service"
                )
            if len(owners) > 1:
                raise RoutingTargetError(
                    "DestinationAmbiguous",
                    f"{where} route {index}: tiers {[t.name for t in owners]} share the Service of {host!r}",
                )
            tier = owners[0]
            if tier.name in placed:
                raise RoutingTargetError(
                    "DestinationAmbiguous",
                    f"{where} route {index} has several destinations for tier {tier.name!r} ({tier.service})",
                )
            placed[tier.name] = j
        if PRIMARY not in placed:
            raise RoutingTargetError(
                "DestinationMissing",
                f"{where} route {index} has no destination for the primary's Service {self._primary.service!r}",
            )
        return index, destinations, placed


def _effective(destinations: list[dict[str, Any]], j: int) -> int:
    """Istio's reading of an absent weight: all traffic for a lone destination, none otherwise."""
    weight = destinations[j].get("weight")
    if weight is None:
        return 100 if len(destinations) == 1 else 0
    return int(weight)
