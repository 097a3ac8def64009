"""Drift: does a routing object, as the watch last saw it, still carry the weights the operator decided?

Pure: a `RoutingSnapshot` (the managed parts of one watched VirtualService, HTTPRoute or Service, kept
compact) and the weights last written -> None when they agree, else a short description of what the
object carries instead. Only the managed fields are compared: the named http route's destination weights,
the numbered rule's backendRef weights, or the Service's selector. Any other change (another route, a
timeout, a label) is no drift, and the operator never touches it.

A routing object whose shape the backend would refuse (the route gone, a destination of no tier) is also
reported as drifted: the repair then fails with that backend's RoutingTargetError, which is what a person
needs to see.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from understudy.engine.model import Tier
from understudy.routing.targets import (
    GatewayAPITarget,
    IstioTarget,
    RoutingTarget,
    ServiceTarget,
    Weights,
    backend_ref,
    host_matches,
)

VIRTUAL_SERVICE, HTTP_ROUTE, SERVICE = "VirtualService", "HTTPRoute", "Service"

RoutingKey = tuple[str, str, str]
"""(kind, namespace, name) of one routing object."""

IstioRoutes = tuple[tuple[str | None, tuple[tuple[str, int | None], ...]], ...]
"""Per http route: (its name, ((destination host, weight or None), ...))."""
GatewayRules = tuple[tuple[tuple[str, str, str, str | None, int | None], ...], ...]
"""Per rule: ((group, kind, name, namespace or None, weight or None) per backendRef, ...)."""
Selector = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class RoutingSnapshot:
    """What the watch keeps of one routing object: its resourceVersion and the fields a policy manages."""

    resource_version: str
    managed: IstioRoutes | GatewayRules | Selector


class RoutingStore:
    """The latest snapshot of every watched routing object (kept by `watches`), and a counter that moves
    whenever one changes, so the cycle looks for drift only after a change."""

    def __init__(self) -> None:
        self.objects: dict[RoutingKey, RoutingSnapshot] = {}
        self.changes = 0

    def put(self, kind: str, namespace: str, name: str, resource_version: str, spec: Mapping[str, Any],
            deleted: bool) -> None:
        key = (kind, namespace, name)
        if deleted:
            self.objects.pop(key, None)
        else:
            self.objects[key] = snapshot_of(kind, resource_version, spec)
        self.changes += 1


def routing_key(namespace: str, target: RoutingTarget) -> RoutingKey:
    """The watched object a policy's routing target lives in."""
    if isinstance(target, IstioTarget):
        return VIRTUAL_SERVICE, namespace, target.virtual_service
    if isinstance(target, GatewayAPITarget):
        return HTTP_ROUTE, namespace, target.http_route
    return SERVICE, namespace, target.name


def snapshot_of(kind: str, resource_version: str, spec: Mapping[str, Any]) -> RoutingSnapshot:
    """The managed parts of a watched object's spec, as plain tuples (a few hundred bytes each)."""
    managed: IstioRoutes | GatewayRules | Selector
    if kind == VIRTUAL_SERVICE:
        managed = tuple(
            (r.get("name"), tuple((str((d.get("destination") or {}).get("host", "")), _weight(d.get("weight")))
                                  for d in r.get("route") or []))
            for r in spec.get("http") or [])
    elif kind == HTTP_ROUTE:
        managed = tuple(
            tuple((str(b.get("group", "")), str(b.get("kind", "Service")), str(b.get("name", "")),
                   b.get("namespace"), _weight(b.get("weight")))
                  for b in rule.get("backendRefs") or [])
            for rule in spec.get("rules") or [])
    else:
        managed = tuple(sorted((str(k), str(v)) for k, v in (spec.get("selector") or {}).items()))
    return RoutingSnapshot(resource_version, managed)


def _weight(value: Any) -> int | None:
    return None if value is None else int(value)


def drift(snapshot: RoutingSnapshot, namespace: str, target: RoutingTarget, tiers: tuple[Tier, ...],
          weights: Weights, selector: Mapping[str, str] | None = None) -> str | None:
    """None when the object carries `weights` (what the operator last wrote), else what it carries.

    `selector` is the Service selector the operator last wrote (Service routing only); without one there
    is nothing to compare and no drift is reported.
    """
    desired = dict(weights)
    if isinstance(target, IstioTarget):
        return _istio(snapshot.managed, namespace, target, tiers, desired)  # type: ignore[arg-type]
    if isinstance(target, GatewayAPITarget):
        return _gateway(snapshot.managed, namespace, target, tiers, desired)  # type: ignore[arg-type]
    assert isinstance(target, ServiceTarget)
    if selector is None:
        return None
    carried = dict(snapshot.managed)  # type: ignore[arg-type]
    return None if carried == dict(selector) else f"selector {_labels(carried)}"


def _istio(routes: IstioRoutes, namespace: str, target: IstioTarget, tiers: tuple[Tier, ...],
           desired: dict[str, int]) -> str | None:
    if target.route is None:
        found = list(routes) if len(routes) == 1 else []
    else:
        found = [r for r in routes if r[0] == target.route]
    if not found:
        return f"no http route {target.route or '(the only one)'}"
    destinations = found[0][1]
    carried: dict[str, int] = {}
    for host, weight in destinations:
        owners = [t for t in tiers if host_matches(host, t.service, namespace)]
        if len(owners) != 1 or owners[0].name in carried:
            return f"a destination {host!r} that is no single tier's"
        # Istio's reading of an absent weight: all traffic for a lone destination, none otherwise
        carried[owners[0].name] = (100 if len(destinations) == 1 else 0) if weight is None else weight
    return _compare(carried, desired)


def _gateway(rules: GatewayRules, namespace: str, target: GatewayAPITarget, tiers: tuple[Tier, ...],
             desired: dict[str, int]) -> str | None:
    if not 0 <= target.rule < len(rules):
        return f"no rule {target.rule}"
    by_ref = {(r.group, r.kind, r.name): t.name for t in tiers for r in (backend_ref(t),)}
    carried: dict[str, int] = {}
    for group, kind, name, ref_namespace, weight in rules[target.rule]:
        tier = by_ref.get((group, kind, name)) if ref_namespace in (None, namespace) else None
        if tier is None or tier in carried:
            return f"a backendRef {kind} {name!r} that is no single tier's"
        carried[tier] = 1 if weight is None else weight  # Gateway API's default weight is 1
    return _compare(carried, desired)


def _compare(carried: dict[str, int], desired: dict[str, int]) -> str | None:
    """Equal when every tier carries exactly its decided weight (the operator writes percents)."""
    if set(carried) == set(desired) and all(carried[n] == w for n, w in desired.items()):
        return None
    return "weights " + ", ".join(f"{n}={carried[n] if n in carried else 'absent'}" for n in desired)


def _labels(selector: Mapping[str, str]) -> str:
    return "{" + ", ".join(f"{k}={v}" for k, v in sorted(selector.items())) + "}"
