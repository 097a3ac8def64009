"""FallbackPolicySpec -> the engine's frozen Policy, once per spec change.

Units are settled here so the engine never parses a string: durations become seconds, latency limits
milliseconds, decimal strings floats.
"""
from __future__ import annotations

from understudy.api.durations import parse_duration
from understudy.api.models import BackendRef, FallbackPolicySpec, Trigger
from understudy.engine import model as engine
from understudy.engine.governance import TierCapacity


def to_engine_policy(spec: FallbackPolicySpec) -> engine.Policy:
    """The engine's view of a validated spec."""
    tiers = (
        engine.Tier(engine.PRIMARY, spec.primary.deployment_name, spec.primary.service_name,
                    _backend_ref(spec.primary.backend_ref)),
        *(engine.Tier(f.name, f.deployment_name, f.service_name, _backend_ref(f.backend_ref)) for f in spec.fallbacks),
    )
    evaluation, creep, override = spec.evaluation, spec.creep, spec.override
    steps = engine.Policy.restore_steps if evaluation.restore_steps is None else tuple(evaluation.restore_steps)
    return engine.Policy(
        tiers=tiers,
        triggers=tuple(_trigger(t, spec.signals.min_requests) for t in spec.triggers),
        mode=engine.Mode(spec.mode.value),
        trip_after=evaluation.trip_after,
        recover_after=evaluation.recover_after,
        restore_steps=steps,
        traffic_split=spec.routing.service is None,
        min_dwell=parse_duration(evaluation.min_dwell),
        restore_stall_after=parse_duration(evaluation.restore_stall_after),
        on_missing_data=engine.MissingData(evaluation.on_missing_data.value),
        when_all_breached=evaluation.when_all_breached,
        interval=parse_duration(evaluation.interval),
        window=parse_duration(evaluation.window),
        creep_max_ratio=float(creep.max_fallback_ratio),
        creep_window=parse_duration(creep.window),
        creep_action=engine.CreepAction(creep.action.value),
        pinned_tier=override.pin_tier if override else None,
        paused=override.paused if override else False,
    )


def to_engine_capacities(spec: FallbackPolicySpec) -> dict[str, TierCapacity]:
    """The fallbacks' capacity stanzas, by tier name, for `capacity_fit` and `govern`."""
    return {
        f.name: TierCapacity(f.capacity.requests_per_replica, f.capacity.scale_on_activate, f.capacity.max_replicas)
        for f in spec.fallbacks if f.capacity is not None
    }


def _backend_ref(ref: BackendRef | None) -> engine.BackendRef | None:
    return None if ref is None else engine.BackendRef(ref.group, ref.kind, ref.name)


def _trigger(trigger: Trigger, min_requests: int) -> engine.Trigger:
    """One trigger in the engine's units; the request floor only guards the request-based signals."""
    quantile: float | None = None
    promql: str | None = None
    floor = 0
    if trigger.latency is not None:
        kind, comparison = engine.SignalKind.LATENCY, engine.Comparison.ABOVE
        threshold = parse_duration(trigger.latency.above) * 1000.0
        quantile, floor = float(trigger.latency.quantile), min_requests
    elif trigger.error_ratio is not None:
        kind, comparison = engine.SignalKind.ERROR_RATIO, engine.Comparison.ABOVE
        threshold, floor = float(trigger.error_ratio.above), min_requests
    elif trigger.ready_replicas is not None:
        kind, comparison = engine.SignalKind.READY_REPLICAS, engine.Comparison.BELOW
        threshold = float(trigger.ready_replicas.below_ratio)
    else:
        query = trigger.query
        assert query is not None, "the model guarantees exactly one signal"
        kind, promql = engine.SignalKind.QUERY, query.promql
        if query.above is not None:
            comparison, threshold = engine.Comparison.ABOVE, float(query.above)
        else:
            assert query.below is not None, "the model guarantees exactly one of above and below"
            comparison, threshold = engine.Comparison.BELOW, float(query.below)
    return engine.Trigger(
        name=trigger.name,
        kind=kind,
        comparison=comparison,
        threshold=threshold,
        quantile=quantile,
        promql=promql,
        min_requests=floor,
        applies_to=frozenset(trigger.applies_to or ()),
    )
