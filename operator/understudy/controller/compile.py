"""A policy's spec compiled, once per generation, into what every cycle needs; and the capacity check."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from understudy.api import FallbackPolicySpec, to_engine_policy
from understudy.api.durations import parse_duration
from understudy.api.models import Capacity, DurationUnit
from understudy.controller.store import DeploymentSnapshot, PolicySnapshot
from understudy.engine import Policy
from understudy.engine.drills import Drill
from understudy.routing.targets import GatewayAPITarget, IstioTarget, RoutingTarget, ServiceTarget
from understudy.signals.promql import MetricNames, Target


@dataclass(frozen=True)
class Compiled:
    """A policy's spec turned, once per generation, into everything a cycle needs."""

    policy: Policy
    target: Target
    interval: float
    routing: RoutingTarget
    capacities: Mapping[str, Capacity]
    """Fallback tiers with a stated capacity, by tier name."""
    drills: tuple[Drill, ...] = ()


def compile_policy(snapshot: PolicySnapshot) -> Compiled:
    """Raises pydantic's ValidationError for a spec the CRD let through but the models reject."""
    spec = FallbackPolicySpec.model_validate(snapshot.spec)
    policy = to_engine_policy(spec)
    signals = spec.signals
    metrics = MetricNames(
        requests_metric=signals.requests_metric,
        duration_metric=signals.duration_metric,
        workload_label=signals.workload_label,
        namespace_label=signals.namespace_label,
        response_code_label=signals.response_code_label,
        duration_in_seconds=signals.duration_unit is DurationUnit.SECONDS,
        min_requests=signals.min_requests,
    )
    capacities = {f.name: f.capacity for f in spec.fallbacks if f.capacity is not None}
    target = Target(
        key=(snapshot.namespace, snapshot.name),
        namespace=snapshot.namespace,
        policy=policy,
        metrics=metrics,
        window=parse_duration(spec.evaluation.window),
        prometheus_url=signals.prometheus_url or None,
        needs_load=bool(capacities),
    )
    routing: RoutingTarget
    if spec.routing.istio is not None:
        routing = IstioTarget(spec.routing.istio.virtual_service_name, spec.routing.istio.route_name)
    elif spec.routing.service is not None:
        routing = ServiceTarget(spec.routing.service.name)
    else:
        assert spec.routing.gateway_api is not None  # the CRD and the models demand exactly one backend
        routing = GatewayAPITarget(spec.routing.gateway_api.http_route_name, spec.routing.gateway_api.rule_index)
    drills = tuple(Drill(d.tier, parse_duration(d.every), parse_duration(d.duration), d.share)
                   for d in spec.drills or ())
    return Compiled(policy, target, parse_duration(spec.evaluation.interval), routing, capacities, drills)


def capacity_fits(compiled: Compiled, namespace: str, load: float | None,
                  deployments: Mapping[tuple[str, str], DeploymentSnapshot]) -> dict[str, bool]:
    """Whether each fallback with a stated capacity could carry the whole load on its ready replicas.

    An unknown load (no request series, Prometheus down) blocks nobody: missing data is handled by the
    triggers, and refusing every fallback for want of a number would be the rash choice.
    """
    fits: dict[str, bool] = {}
    for tier in compiled.policy.tiers:
        capacity = compiled.capacities.get(tier.name)
        if capacity is None or load is None:
            continue
        current = deployments.get((namespace, tier.deployment))
        ready = current.ready if current else 0
        fits[tier.name] = ready * capacity.requests_per_replica >= load
    return fits
