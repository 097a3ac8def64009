"""Duration parsing and the spec -> engine Policy conversion (units settled once, at the edge)."""
from __future__ import annotations

import dataclasses

import pytest

from tests.corpus import VALID
from understudy.api import FallbackPolicy, to_engine_policy
from understudy.api.convert import to_engine_capacities
from understudy.api.durations import parse_duration
from understudy.engine import model as engine
from understudy.engine.governance import TierCapacity


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0", 0.0), ("0s", 0.0), ("250ms", 0.25), ("1.5s", 1.5), ("1m30s", 90.0), ("24h", 86400.0),
     ("2m0.5s", 120.5), ("1h1m1s", 3661.0), ("500us", 0.0005), ("100ns", 1e-7)],
)
def test_parse_go_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "-1s", "1d", "s", "1.s", ".5s", "1 s", "1µs", "3000000h"])
def test_reject_what_the_crd_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def spec_of(name: str) -> FallbackPolicy:
    case = next(c for c in VALID if c.path.stem == name)
    return FallbackPolicy.model_validate(case.document)


def test_full_policy_converts_with_engine_units() -> None:
    policy = to_engine_policy(spec_of("recommender-istio-full").spec)
    assert policy.tiers == (
        engine.Tier("primary", "recommender-large", "recommender-large"),
        engine.Tier("distilled", "recommender-small", "recommender-small"),
        engine.Tier("popular-items", "popularity-baseline", "popularity-baseline"),
    )
    latency, errors, availability, confidence = policy.triggers
    assert latency == engine.Trigger(
        name="p99-latency", kind=engine.SignalKind.LATENCY, comparison=engine.Comparison.ABOVE, threshold=250.0,
        quantile=0.99, min_requests=20, applies_to=frozenset({"primary", "distilled"}),
    )
    assert (errors.kind, errors.comparison, errors.threshold, errors.min_requests) == (
        engine.SignalKind.ERROR_RATIO, engine.Comparison.ABOVE, 0.05, 20)
    assert (availability.kind, availability.comparison, availability.threshold, availability.min_requests) == (
        engine.SignalKind.READY_REPLICAS, engine.Comparison.BELOW, 0.5, 0)
    assert (confidence.kind, confidence.comparison, confidence.threshold) == (
        engine.SignalKind.QUERY, engine.Comparison.BELOW, 0.6)
    assert confidence.promql == 'avg(model_confidence{workload="$deployment"})'
    assert not confidence.applies_to and confidence.applies("popular-items")
    assert (policy.mode, policy.trip_after, policy.recover_after, policy.restore_steps) == (
        engine.Mode.ENFORCE, 2, 6, (10, 50, 100))
    assert (policy.min_dwell, policy.interval, policy.on_missing_data, policy.when_all_breached) == (
        30.0, 5.0, engine.MissingData.HOLD, "popular-items")
    assert (policy.creep_max_ratio, policy.creep_window, policy.creep_action) == (
        0.10, 86400.0, engine.CreepAction.ROLLBACK_PRIMARY)
    assert (policy.pinned_tier, policy.paused) == (None, False)


def test_defaults_convert_to_the_engine_defaults() -> None:
    """A spec that sets nothing optional gives the engine's own defaults: the two never drift apart. The
    routing backend reaches the engine as plain data: a Service selector cannot split traffic."""
    policy = to_engine_policy(spec_of("minimal-service-routing").spec)
    defaults = engine.Policy(tiers=policy.tiers, triggers=policy.triggers)
    assert policy == dataclasses.replace(defaults, traffic_split=False)
    assert to_engine_policy(spec_of("istio-single-route").spec).traffic_split
    assert to_engine_policy(spec_of("gateway-api-rule-index").spec).traffic_split


def test_query_above_and_overrides() -> None:
    (cost,) = to_engine_policy(spec_of("query-above-cost").spec).triggers
    assert (cost.comparison, cost.threshold, cost.min_requests) == (engine.Comparison.ABOVE, 120.0, 0)
    pinned = to_engine_policy(spec_of("override-pin-fallback").spec)
    assert (pinned.pinned_tier, pinned.paused) == ("distilled", True)
    compound = to_engine_policy(spec_of("compound-durations").spec)
    assert (compound.interval, compound.min_dwell, compound.triggers[0].threshold) == (90.0, 120.5, 1500.0)
    assert (compound.window, compound.restore_stall_after) == (180.0, 5400.0)
    observe = to_engine_policy(spec_of("observe-without-degradation").spec)
    assert observe.mode is engine.Mode.OBSERVE


def test_capacities_convert_to_requests_per_second() -> None:
    """A decimal string says what an integer cannot: 0.2 requests/s per replica (code review S13)."""
    assert to_engine_capacities(spec_of("fractional-capacity").spec) == {
        "distilled": TierCapacity(0.2, scale_on_activate=True, max_replicas=40)}
    assert to_engine_capacities(spec_of("capacity-check-only").spec) == {"distilled": TierCapacity(40.0)}
    assert to_engine_capacities(spec_of("minimal-service-routing").spec) == {}


def test_manual_restore_approval_and_its_author_reach_the_engine() -> None:
    policy = to_engine_policy(spec_of("manual-restore-approval").spec)
    assert policy.restore_approval is engine.RestoreApproval.MANUAL
    assert policy.restore_approved_at == 1_796_119_323.0  # 2026-12-01T10:02:03Z
    assert policy.override_by == "system:serviceaccount:ml:on-call"
