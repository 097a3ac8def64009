"""One owner per route: when several policies would write the same route, the oldest keeps it.

Pure. Two policies claim the same route when they name the same routing object in their namespace and
the same route in it: the same http route of a VirtualService (a claim without a route name means the
VirtualService's only route, so it overlaps every claim on that VirtualService), the same rule of an
HTTPRoute, or the same Service. The older claim (creationTimestamp, then name) owns the route; every
other claimant is told who does. The answer depends only on the set of claims, never on the order they
were seen in, so two operators (or two cycles) agree and nothing oscillates; when the owner goes, the
next oldest takes over.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from understudy.routing.targets import GatewayAPITarget, IstioTarget, RoutingTarget

PolicyKey = tuple[str, str]
"""(namespace, name) of a FallbackPolicy."""


@dataclass(frozen=True, slots=True)
class Claim:
    """A policy that would write `target` in its namespace (only Enforce-mode policies claim)."""

    policy: PolicyKey
    target: RoutingTarget
    created: float
    """metadata.creationTimestamp as epoch seconds."""


def _place(claim: Claim) -> tuple[str, str, str]:
    """The routing object a claim is on: (namespace, kind, name)."""
    namespace, target = claim.policy[0], claim.target
    if isinstance(target, IstioTarget):
        return namespace, "VirtualService", target.virtual_service
    if isinstance(target, GatewayAPITarget):
        return namespace, "HTTPRoute", target.http_route
    return namespace, "Service", target.name


def _overlap(a: Claim, b: Claim) -> bool:
    """Both would write the same route of the same object."""
    if _place(a) != _place(b):
        return False
    if isinstance(a.target, IstioTarget) and isinstance(b.target, IstioTarget):
        return a.target.route is None or b.target.route is None or a.target.route == b.target.route
    return a.target == b.target


def conflicts(claims: Iterable[Claim]) -> dict[PolicyKey, PolicyKey]:
    """Each policy that does not own its route -> the policy that does; owners are not listed."""
    by_place: dict[tuple[str, str, str], list[Claim]] = {}
    for claim in claims:
        by_place.setdefault(_place(claim), []).append(claim)
    losers: dict[PolicyKey, PolicyKey] = {}
    for same in by_place.values():
        if len(same) < 2:
            continue
        owners: list[Claim] = []
        for claim in sorted(same, key=lambda c: (c.created, c.policy[1])):
            owner = next((o for o in owners if _overlap(o, claim)), None)
            if owner is None:
                owners.append(claim)
            else:
                losers[claim.policy] = owner.policy
    return losers


def conflict_message(owner: PolicyKey, target: RoutingTarget) -> str:
    """The Ready condition's and the RouteConflict Event's message."""
    return (f"FallbackPolicy {owner[1]} (created earlier) already routes {describe(target)}; this policy "
            f"writes nothing to it until that policy is deleted or points elsewhere")


def describe(target: RoutingTarget) -> str:
    if isinstance(target, IstioTarget):
        route = f"http route {target.route!r}" if target.route else "the only http route"
        return f"{route} of VirtualService {target.virtual_service}"
    if isinstance(target, GatewayAPITarget):
        return f"rule {target.rule} of HTTPRoute {target.http_route}"
    return f"the selector of Service {target.name}"
