"""Routing targets and the backend interface as plain values: what a policy routes, with no client attached.

Kept apart from `base` (which talks to the API server) so that code which only names a target, such as
the controller's decision cycle, imports nothing that writes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

Weights = tuple[tuple[str, int], ...]
"""(tier name, percent) for every tier of the policy, in tier order; the percents sum to 100."""


class RoutingTargetError(Exception):
    """A problem with the routing object that a person must see and fix; `reason` is stable CamelCase.

    Reasons: TargetNotFound, TargetUnsupported, RouteNotFound, DestinationMissing, DestinationAmbiguous,
    DestinationUnknown, SelectorUnknown, SelectorUnmatched, Forbidden, Invalid, Conflict.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


class RoutingBackend(Protocol):
    def read(self, namespace: str) -> Weights:
        """The weights the routing object carries now, per tier name."""
        ...

    def apply(self, namespace: str, weights: Weights) -> bool:
        """Write `weights`; True when something changed, False (and no write at all) when already so."""
        ...


@dataclass(frozen=True)
class IstioTarget:
    """An http route of an Istio VirtualService; `route` None means the VirtualService's only http route."""

    virtual_service: str
    route: str | None = None


@dataclass(frozen=True)
class ServiceTarget:
    """A core Service whose selector is switched between the tiers' pods."""

    name: str


@dataclass(frozen=True)
class GatewayAPITarget:
    """One rule of a Gateway API HTTPRoute."""

    http_route: str
    rule: int = 0


RoutingTarget = IstioTarget | ServiceTarget | GatewayAPITarget
