"""A policy's spec compiled, once per generation, into what every cycle needs."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from understudy.api import FallbackPolicySpec, to_engine_policy
from understudy.api.convert import to_engine_capacities
from understudy.api.durations import parse_duration
from understudy.api.models import DurationUnit, Release
from understudy.controller.store import PolicySnapshot
from understudy.engine import Policy
from understudy.engine.drills import Drill
from understudy.engine.governance import TierCapacity
from understudy.routing.targets import GatewayAPITarget, IstioTarget, RoutingTarget, ServiceTarget
from understudy.signals.promql import MetricNames, Target


@dataclass(frozen=True)
class Compiled:
    """A policy's spec turned, once per generation, into everything a cycle needs."""

    policy: Policy
    target: Target
    interval: float
    routing: RoutingTarget
    capacities: Mapping[str, TierCapacity]
    """Fallback tiers with a stated capacity, by tier name."""
    drills: tuple[Drill, ...] = ()
    release: Release = Release.RESTORE_PRIMARY


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
    capacities = to_engine_capacities(spec)
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
    return Compiled(policy, target, parse_duration(spec.evaluation.interval), routing, capacities, drills,
                    spec.release)
