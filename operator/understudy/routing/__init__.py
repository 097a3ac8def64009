"""Routing: write the engine's tier weights to the object that routes the traffic.

One module per backend behind the `RoutingBackend` protocol; `backend_for` picks one from the policy's
routing target.
"""
from __future__ import annotations

from kubernetes.client import ApiClient

from understudy.engine.model import Tier
from understudy.routing.base import (
    GatewayAPITarget,
    IstioTarget,
    RoutingBackend,
    RoutingTarget,
    RoutingTargetError,
    ServiceTarget,
    Weights,
)
from understudy.routing.gatewayapi import GatewayAPIBackend
from understudy.routing.istio import IstioBackend
from understudy.routing.service import ServiceBackend

__all__ = [
    "GatewayAPIBackend",
    "GatewayAPITarget",
    "IstioBackend",
    "IstioTarget",
    "RoutingBackend",
    "RoutingTarget",
    "RoutingTargetError",
    "ServiceBackend",
    "ServiceTarget",
    "Weights",
    "backend_for",
]


def backend_for(api: ApiClient, target: RoutingTarget, tiers: tuple[Tier, ...]) -> RoutingBackend:
    """The backend that writes `tiers`' weights to `target`."""
    if isinstance(target, IstioTarget):
        return IstioBackend(api, target, tiers)
    if isinstance(target, ServiceTarget):
        return ServiceBackend(api, target, tiers)
    return GatewayAPIBackend(api, target, tiers)
