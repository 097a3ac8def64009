"""FallbackPolicySpec -> the engine's frozen Policy, once per spec change.

Units are settled here so the engine never parses a string: durations become seconds, latency limits
milliseconds, decimal strings floats.
"""
from __future__ import annotations

from understudy.api.durations import parse_duration
from understudy.api.models import BackendRef, FallbackPolicySpec, Signals, Trigger
from understudy.engine import model as engine
from understudy.engine.governance import TierCapacity
from understudy.signals.presets import Histogram


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
        triggers=tuple(_trigger(t, spec.signals) for t in spec.triggers),
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
        restore_approval=evaluation.restore_approval,
        restore_approved_at=override.restore_approved_seconds if override else None,
        override_by=override.by if override else None,
    )


def to_engine_capacities(spec: FallbackPolicySpec) -> dict[str, TierCapacity]:
    """The fallbacks' capacity stanzas, by tier name, for `capacity_fit` and `govern`."""
    return {
        f.name: TierCapacity(f.capacity.requests_per_replica, f.capacity.scale_on_activate, f.capacity.max_replicas)
        for f in spec.fallbacks if f.capacity is not None
    }


def _backend_ref(ref: BackendRef | None) -> engine.BackendRef | None:
    return None if ref is None else engine.BackendRef(ref.group, ref.kind, ref.name)


def _trigger(trigger: Trigger, signals: Signals) -> engine.Trigger:
    """One trigger in the engine's units; the request floor only guards the request-based signals."""
    quantile: float | None = None
    promql: str | None = None
    series: engine.Series | None = None
    floor = 0
    server = signals.server
    if trigger.latency is not None:
        kind, comparison = engine.SignalKind.LATENCY, engine.Comparison.ABOVE
        threshold = parse_duration(trigger.latency.above) * 1000.0
        quantile, floor = float(trigger.latency.quantile), signals.min_requests
    elif trigger.error_ratio is not None:
        kind, comparison = engine.SignalKind.ERROR_RATIO, engine.Comparison.ABOVE
        threshold, floor = float(trigger.error_ratio.above), signals.min_requests
        errors = server.errors
        if errors is not None and not signals.response_code_label_override and not errors.response_code_label:
            counter = errors.failures or errors.successes
            assert counter is not None, "a preset's errors name exactly one source"
            series = engine.Series(counter, counts_successes=errors.successes is not None)
    elif trigger.ready_replicas is not None:
        kind, comparison = engine.SignalKind.READY_REPLICAS, engine.Comparison.BELOW
        threshold = float(trigger.ready_replicas.below_ratio)
    elif trigger.query is not None:
        query = trigger.query
        kind, promql = engine.SignalKind.QUERY, query.promql
        if query.above is not None:
            comparison, threshold = engine.Comparison.ABOVE, float(query.above)
        else:
            assert query.below is not None, "the model guarantees exactly one of above and below"
            comparison, threshold = engine.Comparison.BELOW, float(query.below)
    elif trigger.time_to_first_token is not None or trigger.time_per_output_token is not None:
        first = trigger.time_to_first_token is not None
        signal = trigger.time_to_first_token or trigger.time_per_output_token
        assert signal is not None
        histogram = server.time_to_first_token if first else server.time_per_output_token
        assert histogram is not None, "the model refuses a kind the preset does not measure"
        kind = engine.SignalKind.TIME_TO_FIRST_TOKEN if first else engine.SignalKind.TIME_PER_OUTPUT_TOKEN
        comparison, threshold = engine.Comparison.ABOVE, parse_duration(signal.above) * 1000.0
        quantile, floor, series = float(signal.quantile), signals.min_requests, _histogram(histogram)
    elif trigger.queue_depth is not None:
        assert server.queue_depth is not None, "the model refuses a kind the preset does not measure"
        kind, comparison = engine.SignalKind.QUEUE_DEPTH, engine.Comparison.ABOVE
        threshold, series = float(trigger.queue_depth.above), engine.Series(server.queue_depth)
    elif trigger.kv_cache_usage is not None:
        assert server.kv_cache_usage is not None, "the model refuses a kind the preset does not measure"
        kind, comparison = engine.SignalKind.KV_CACHE_USAGE, engine.Comparison.ABOVE
        threshold, series = float(trigger.kv_cache_usage.above), engine.Series(server.kv_cache_usage)
    else:
        tokens = trigger.tokens_per_second
        assert tokens is not None, "the model guarantees exactly one signal"
        assert server.generated_tokens is not None, "the model refuses a kind the preset does not measure"
        kind, series, floor = engine.SignalKind.TOKENS_PER_SECOND, engine.Series(server.generated_tokens), \
            signals.min_requests
        if tokens.above is not None:
            comparison, threshold = engine.Comparison.ABOVE, float(tokens.above)
        else:
            assert tokens.below is not None, "the model guarantees exactly one of above and below"
            comparison, threshold = engine.Comparison.BELOW, float(tokens.below)
    return engine.Trigger(
        name=trigger.name,
        kind=kind,
        comparison=comparison,
        threshold=threshold,
        quantile=quantile,
        promql=promql,
        min_requests=floor,
        applies_to=frozenset(trigger.applies_to or ()),
        series=series,
    )


def _histogram(histogram: Histogram) -> engine.Series:
    """A histogram read in milliseconds, the engine's unit for durations."""
    return engine.Series(histogram.metric, scale=1000.0 if histogram.seconds else 1.0)
