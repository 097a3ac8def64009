"""Letting go: what a policy does with the traffic and replicas it moved when it stops managing them.

A policy lets go when it is deleted, switched to Observe, or pointed at another routing object. Its
`spec.release` says what happens then: RestorePrimary routes 100 % to the primary on the routing object it
leaves and scales each fallback it scaled up back to the replicas recorded in status.scaledTiers; Leave
changes nothing. Either way one `Released` Event says what was done (or `ReleaseFailed` why not).

This module decides (what a policy holds, why it lets go, whether its finalizer is due) and makes no
call to the API server: `releaser` carries a release out and `releasing` is the controller's side.

Deletion needs a finalizer, or the policy and its status (which alone know what was moved) are gone before
the operator can act. The finalizer `understudy.dev/release` is held only while something is moved, so a
policy at rest carries none and deleting a namespace or uninstalling the operator never waits on it; and
it is dropped after MAX_ATTEMPTS failed releases, so a deletion never hangs on a routing object that keeps
refusing writes (the ReleaseFailed Event says what was left behind).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from understudy.api.models import Release
from understudy.engine.model import PRIMARY, Mode, Policy, Tier
from understudy.routing.targets import GatewayAPITarget, IstioTarget, RoutingTarget

FINALIZER = "understudy.dev/release"

DELETED = "the policy was deleted"
OBSERVE = "the policy was switched to Observe"
REROUTED = "spec.routing now points at another routing object"


def holds(status: Mapping[str, Any], enforce: bool) -> bool:
    """Whether the policy has moved something it would have to give back: traffic off the primary (only
    an Enforce policy routes: an Observe policy's status.weights say what it would do), a drill's share,
    or fallbacks it scaled up."""
    if status.get("scaledTiers"):
        return True
    if not enforce:
        return False
    weights = {w.get("tier"): int(w.get("weight") or 0) for w in status.get("weights") or []}
    return bool(status.get("drill")) or (bool(weights) and weights.get(PRIMARY, 0) < 100)


def scaled_tiers(status: Mapping[str, Any]) -> dict[str, tuple[int, int | None]]:
    """status.scaledTiers as tier -> (replicas to return to, replicas the operator set or None)."""
    return {str(e["tier"]): (int(e["replicas"]), None if e.get("scaledTo") is None else int(e["scaledTo"]))
            for e in status.get("scaledTiers") or [] if e.get("tier") and e.get("replicas") is not None}


def all_primary(tiers: Sequence[Tier]) -> tuple[tuple[str, int], ...]:
    return tuple((t.name, 100 if t.name == PRIMARY else 0) for t in tiers)


def describe(target: RoutingTarget) -> str:
    if isinstance(target, IstioTarget):
        route = f" route {target.route}" if target.route else ""
        return f"VirtualService {target.virtual_service}{route}"
    if isinstance(target, GatewayAPITarget):
        return f"HTTPRoute {target.http_route} rule {target.rule}"
    return f"Service {target.name}"


def finalizers_with(finalizers: Sequence[str], present: bool) -> list[str] | None:
    """The finalizer list with ours present or absent; None when it already is."""
    others = [f for f in finalizers if f != FINALIZER]
    wanted = [*others, FINALIZER] if present else others
    return None if wanted == list(finalizers) else wanted


@dataclass(frozen=True)
class Holder:
    """One policy as the release needs it: who it is, what it routes to, and how it lets go."""

    namespace: str
    name: str
    uid: str
    policy: Policy
    routing: RoutingTarget
    release: Release


def routed_weights(status: Mapping[str, Any]) -> tuple[tuple[str, int], ...]:
    return tuple((str(w.get("tier")), int(w.get("weight") or 0)) for w in status.get("weights") or [])


def cause(old: Holder, new: Holder) -> str | None:
    """Why a new generation lets go of what the old one routed, if it does."""
    if old.policy.mode is not Mode.ENFORCE:
        return None
    if new.policy.mode is Mode.OBSERVE:
        return OBSERVE
    if new.routing != old.routing:
        return REROUTED
    return None


def finalizer_due(finalizers: Sequence[str], status: Mapping[str, Any], enforce: bool, settled: bool,
                  pending: bool) -> bool:
    """Whether the finalizer is out of step with what the policy holds: to be added while it holds something
    (`pending`: a release of an older generation is still to be done), removed once it holds nothing and its
    routing is `settled` (carries the decision)."""
    want = holds(status, enforce) or pending
    return want != (FINALIZER in finalizers) and (want or settled)
