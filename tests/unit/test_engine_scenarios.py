"""The engine's behaviour as timelines: feed (time, samples) pairs, read back (time, weights, reasons)."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

import pytest

from understudy.engine import (
    AUDIT_REASONS,
    INSUFFICIENT,
    MISSING,
    Comparison,
    CreepAction,
    Decision,
    MissingData,
    Mode,
    Policy,
    Reading,
    Samples,
    SignalKind,
    State,
    Tier,
    Trigger,
    decide,
    initial_state,
    state_from_status,
    state_to_status,
)

TIERS = ("primary", "distilled", "popular")
HEALTHY = {"p99": 100.0, "errors": 0.01}

POLICY = Policy(
    tiers=tuple(Tier(n, f"{n}-deploy", f"{n}-svc") for n in TIERS),
    triggers=(
        Trigger("p99", SignalKind.LATENCY, Comparison.ABOVE, 250.0, quantile=0.99),
        Trigger("errors", SignalKind.ERROR_RATIO, Comparison.ABOVE, 0.05),
    ),
    trip_after=2,
    recover_after=3,
    restore_steps=(10, 50, 100),
    min_dwell=30.0,
    interval=5.0,
    creep_window=3600.0,
)

Value = float | Reading


def obs(capacity: Mapping[str, bool] | None = None, ready: Mapping[str, int] | None = None,
        **tiers: Mapping[str, Value]) -> Samples:
    """Samples where every tier is healthy unless given: obs(primary={"p99": 400}); readiness unknown
    unless given: obs(ready={"distilled": 0})."""
    readings = {}
    for name in TIERS:
        values = {**HEALTHY, **tiers.get(name, {})}
        readings[name] = {k: v if isinstance(v, Reading) else Reading.ok(v) for k, v in values.items()}
    return Samples(readings, dict(capacity or {}), dict(ready or {}))


@dataclass(frozen=True)
class Step:
    t: float
    weights: dict[str, int]
    reasons: tuple[str, ...]
    decision: Decision


def run(policy: Policy, start: float, end: float, samples_at: Callable[[float], Samples],
        every: float = 5.0, state: State | None = None,
        policy_at: Callable[[float], Policy] | None = None) -> list[Step]:
    """Evaluate every `every` seconds in [start, end), passing each decision's state to the next."""
    state = state or initial_state(policy)
    steps = []
    t = start
    while t < end:
        p = policy_at(t) if policy_at else policy
        d = decide(p, samples_at(t), state, t)
        steps.append(Step(t, dict(d.weights), tuple(a.reason for a in d.audit), d))
        state = d.state
        t += every
    return steps


def moves(steps: Iterable[Step]) -> list[tuple[float, dict[str, int]]]:
    """(time, weights) at every change of weights: the routing writes a shell would make."""
    return [(s.t, s.weights) for s in steps if s.decision.changed]


def at(steps: list[Step], t: float) -> Step:
    return next(s for s in steps if s.t == t)


def first_with(steps: list[Step], reason: str) -> Step:
    return next(s for s in steps if reason in s.reasons)


def count(steps: list[Step], reason: str) -> int:
    return sum(s.reasons.count(reason) for s in steps)


def w(p: int, d: int, q: int) -> dict[str, int]:
    return {"primary": p, "distilled": d, "popular": q}


def test_steady_healthy_primary_never_moves_or_audits() -> None:
    steps = run(POLICY, 0, 600, lambda t: obs())
    assert moves(steps) == []
    assert all(s.weights == w(100, 0, 0) and s.reasons == () for s in steps)
    assert steps[-1].decision.route and steps[-1].decision.metrics_available


def test_latency_spike_trips_after_two_evaluations_and_falls_back() -> None:
    # p99 on the primary jumps to 400ms at t=10: evaluations at 10 and 15 breach, the second trips.
    steps = run(POLICY, 0, 60, lambda t: obs(primary={"p99": 400.0}) if t >= 10 else obs())
    assert at(steps, 10).weights == w(100, 0, 0) and at(steps, 10).reasons == ()
    assert at(steps, 15).reasons == ("TierTripped", "FallbackActivated")
    assert moves(steps) == [(15, w(0, 100, 0))]
    record = at(steps, 15).decision.audit[1]
    assert (record.trigger, record.tier, record.observed, record.threshold) == ("p99", "primary", 400.0, 250.0)
    assert (record.from_tier, record.to_tier) == ("primary", "distilled")
    assert at(steps, 15).decision.active_tier == "distilled"


def test_fallback_also_erroring_moves_to_second_fallback() -> None:
    def samples(t: float) -> Samples:
        if t < 10:
            return obs()
        return obs(primary={"p99": 400.0}, distilled={"errors": 0.2} if t >= 60 else {})

    steps = run(POLICY, 0, 120, samples)
    # distilled breaches from t=60, trips at 65; the fallback at 15 is > minDwell ago.
    assert moves(steps) == [(15, w(0, 100, 0)), (65, w(0, 0, 100))]
    record = at(steps, 65).decision.audit[-1]
    assert (record.reason, record.trigger, record.from_tier, record.to_tier) == (
        "FallbackActivated", "errors", "distilled", "popular")


def test_recovery_restores_in_steps_one_per_min_dwell() -> None:
    # Breach 10..55, clear from 60: recovers after 3 clear evaluations (70), then 10/50/100 every 30s.
    steps = run(POLICY, 0, 300, lambda t: obs(primary={"p99": 400.0}) if 10 <= t < 60 else obs())
    assert moves(steps) == [
        (15, w(0, 100, 0)),
        (70, w(10, 90, 0)),
        (100, w(50, 50, 0)),
        (130, w(100, 0, 0)),
    ]
    assert at(steps, 70).reasons == ("TierRecovered", "RestoreStep")
    assert at(steps, 100).reasons == ("RestoreStep",)
    assert at(steps, 130).reasons == ("Restored",)
    assert steps[-1].decision.active_tier == "primary"


def test_restore_step_waits_for_min_dwell_after_the_fallback() -> None:
    # Recovery after a short spike completes before minDwell since the fallback: the probe waits for it.
    steps = run(POLICY, 0, 120, lambda t: obs(primary={"p99": 400.0}) if 10 <= t < 20 else obs())
    assert moves(steps)[:2] == [(15, w(0, 100, 0)), (45, w(10, 90, 0))]
    assert at(steps, 30).reasons == ("TierRecovered",)


def test_relapse_during_restore_aborts_and_retrips() -> None:
    def samples(t: float) -> Samples:
        bad = 10 <= t < 60 or t >= 105  # relapse right after the 50% step at 100
        return obs(primary={"p99": 400.0}) if bad else obs()

    steps = run(POLICY, 0, 200, samples)
    assert moves(steps) == [
        (15, w(0, 100, 0)),
        (70, w(10, 90, 0)),
        (100, w(50, 50, 0)),
        (130, w(0, 100, 0)),   # breach at 105 re-trips at once; the abort waits for minDwell
    ]
    assert at(steps, 105).reasons == ("TierTripped",)
    assert at(steps, 130).reasons == ("RestoreAborted",)
    record = at(steps, 130).decision.audit[0]
    assert (record.tier, record.trigger, record.from_tier, record.to_tier) == ("primary", "p99", "primary", "distilled")
    assert count(steps, "TierTripped") == 2


def test_all_tiers_breach_last_tier_serves_with_one_record() -> None:
    steps = run(POLICY, 0, 200, lambda t: obs(**{n: {"errors": 0.5} for n in TIERS}) if t >= 10 else obs())
    assert moves(steps) == [(15, w(0, 0, 100))]
    assert count(steps, "AllTiersBreached") == 1
    record = first_with(steps, "AllTiersBreached").decision.audit
    text = next(a.message for a in record if a.reason == "AllTiersBreached")
    assert "primary: errors 0.5 above 0.05" in text and "popular: errors" in text
    assert count(steps, "FallbackActivated") == 1


def test_when_all_breached_names_the_serving_tier() -> None:
    policy = dataclasses.replace(POLICY, when_all_breached="distilled")
    steps = run(policy, 0, 100, lambda t: obs(**{n: {"errors": 0.5} for n in TIERS}) if t >= 10 else obs())
    assert moves(steps) == [(15, w(0, 100, 0))]


def test_missing_data_hold_freezes_streaks_and_routing() -> None:
    def samples(t: float) -> Samples:
        if 15 <= t < 100:
            return obs(primary={"p99": MISSING, "errors": MISSING})
        return obs(primary={"p99": 400.0}) if t in (10.0, 100.0) else obs()

    steps = run(POLICY, 0, 150, samples)
    # 10 breaches (streak 1), 15..95 missing (streak frozen, not reset), 100 breaches again: streak 2 trips.
    assert moves(steps)[0] == (100, w(0, 100, 0))
    assert count(steps, "MetricsMissing") == 1 and count(steps, "MetricsRestored") == 1
    assert first_with(steps, "MetricsMissing").t == 15
    assert "primary/p99" in first_with(steps, "MetricsMissing").decision.audit[0].message
    assert first_with(steps, "MetricsRestored").t == 100
    assert all(not s.decision.metrics_available for s in steps if 15 <= s.t < 100)
    assert all(s.decision.metrics_available for s in steps if s.t >= 100)


NO_DATA = {"p99": MISSING, "errors": MISSING}


def test_missing_data_on_an_idle_tier_is_no_news_but_no_evidence_either() -> None:
    # While the primary serves, an idle tier's missing data raises no alarm and moves nothing ...
    steps = run(POLICY, 0, 60, lambda t: obs(distilled=NO_DATA))
    assert moves(steps) == [] and all(s.reasons == () and s.decision.metrics_available for s in steps)
    # ... but when the primary trips, a tier with no evidence at all (readiness unknown, every trigger
    # missing) ranks after every tier with evidence: traffic skips distilled for popular.
    steps = run(POLICY, 0, 60, lambda t: obs(primary={"p99": 400.0} if t >= 10 else {}, distilled=NO_DATA))
    assert moves(steps) == [(15, w(0, 0, 100))]
    assert at(steps, 15).decision.audit[-1].to_tier == "popular"


def test_a_tier_without_evidence_still_serves_when_no_tier_has_any() -> None:
    steps = run(POLICY, 0, 60, lambda t: obs(primary={"p99": 400.0} if t >= 10 else {},
                                             distilled=NO_DATA, popular=NO_DATA))
    assert moves(steps) == [(15, w(0, 100, 0))]  # the chain's order decides between tiers without evidence


def test_known_ready_replicas_are_evidence_even_without_readings() -> None:
    ready = {"primary": 2, "distilled": 1, "popular": 3}
    steps = run(POLICY, 0, 60, lambda t: obs(ready=ready, primary={"p99": 400.0} if t >= 10 else {},
                                             distilled=NO_DATA))
    assert moves(steps) == [(15, w(0, 100, 0))]


def test_a_fallback_without_ready_replicas_is_skipped_once_per_episode() -> None:
    # distilled's Deployment is gone (the shell reports 0 ready) until t=100; its triggers read nothing.
    def samples(t: float) -> Samples:
        gone = t < 100
        return obs(ready={"primary": 2, "distilled": 0 if gone else 2, "popular": 2},
                   primary={"p99": 400.0} if t >= 10 else {}, distilled=NO_DATA if gone else {})

    steps = run(POLICY, 0, 200, samples)
    assert at(steps, 15).reasons == ("TierTripped", "NoReadyReplicas", "FallbackActivated")
    record = at(steps, 15).decision.audit[1]
    assert record.tier == "distilled" and "no ready replicas" in record.message
    assert count(steps, "NoReadyReplicas") == 1
    # Ready again at 100: distilled is better than popular, so it is restored to in steps.
    assert moves(steps) == [(15, w(0, 0, 100)), (100, w(0, 10, 90)), (130, w(0, 50, 50)), (160, w(0, 100, 0))]


def test_a_serving_tier_losing_every_pod_is_left_even_when_its_data_is_missing() -> None:
    # The primary's Deployment is scaled to 0 at t=20: its series vanish (MISSING). Under Hold, missing
    # data would keep traffic where it is; a tier known to have no ready replicas cannot serve at all.
    def samples(t: float) -> Samples:
        down = t >= 20
        return obs(ready={"primary": 0 if down else 2, "distilled": 2, "popular": 2},
                   primary=NO_DATA if down else {})

    steps = run(POLICY, 0, 60, samples)
    assert moves(steps) == [(20, w(0, 100, 0))]
    assert at(steps, 20).reasons == ("MetricsMissing", "NoReadyReplicas", "FallbackActivated")
    assert "no ready replicas" in at(steps, 20).decision.audit[-1].message


def test_when_every_tier_breaches_a_last_resort_without_pods_is_passed_over() -> None:
    everything_bad = {n: {"errors": 0.5} for n in TIERS}
    steps = run(POLICY, 0, 60, lambda t: obs(ready={"primary": 2, "distilled": 2, "popular": 0},
                                             **(everything_bad if t >= 10 else {})))
    # popular (the last fallback, whenAllBreached's default) has no pods: the best tier that has some serves.
    assert moves(steps) == []
    assert count(steps, "AllTiersBreached") == 1
    text = first_with(steps, "AllTiersBreached").decision.audit
    assert any("popular has no ready replicas" in a.message for a in text if a.reason == "AllTiersBreached")


def test_when_no_tier_has_pods_the_when_all_breached_tier_serves() -> None:
    steps = run(POLICY, 0, 60, lambda t: obs(ready={n: 0 for n in TIERS} if t >= 10 else None))
    assert moves(steps) == [(10, w(0, 0, 100))]
    assert at(steps, 10).reasons[-2:] == ("AllTiersBreached", "FallbackActivated")


def test_missing_data_fallback_counts_as_breach_of_the_serving_tier() -> None:
    policy = dataclasses.replace(POLICY, on_missing_data=MissingData.FALLBACK)
    steps = run(policy, 0, 60, lambda t: obs(primary={"errors": MISSING}) if t >= 10 else obs())
    assert moves(steps) == [(15, w(0, 100, 0))]
    assert at(steps, 10).reasons == ("MetricsMissing",)
    assert at(steps, 15).reasons == ("TierTripped", "FallbackActivated")
    assert at(steps, 15).decision.audit[0].trigger == "errors"
    # Now the primary has no traffic: its missing data no longer counts (and is no longer news).
    assert at(steps, 20).reasons == ("MetricsRestored",)


def test_observe_mode_decides_and_audits_like_enforce_but_never_routes() -> None:
    def samples(t: float) -> Samples:
        return obs(primary={"p99": 400.0}) if 10 <= t < 60 else obs()

    enforce = run(POLICY, 0, 200, samples)
    observe = run(dataclasses.replace(POLICY, mode=Mode.OBSERVE), 0, 200, samples)
    assert [(s.weights, s.reasons) for s in observe] == [(s.weights, s.reasons) for s in enforce]
    assert not any(s.decision.route for s in observe) and all(s.decision.route for s in enforce)


def test_pin_moves_at_once_and_release_resumes_the_rules() -> None:
    def policy_at(t: float) -> Policy:
        return dataclasses.replace(POLICY, pinned_tier="popular") if 20 <= t < 50 else POLICY

    # The primary breaches from 10: trips at 15 (fallback), the pin at 20 ignores minDwell.
    steps = run(POLICY, 0, 120, lambda t: obs(primary={"p99": 400.0}) if t >= 10 else obs(), policy_at=policy_at)
    assert moves(steps)[:3] == [(15, w(0, 100, 0)), (20, w(0, 0, 100)), (50, w(0, 10, 90))]
    assert at(steps, 20).reasons == ("Pinned",)
    # Released at 50 (= minDwell after the pin): traffic is really on popular, which is healthy, and
    # distilled is the best fit tier (the primary is still tripped): an ordinary stepped restore follows.
    assert at(steps, 50).reasons == ("Unpinned", "RestoreStep")
    assert count(steps, "Pinned") == 1 and count(steps, "Unpinned") == 1


def test_streaks_keep_updating_while_pinned() -> None:
    def policy_at(t: float) -> Policy:
        return dataclasses.replace(POLICY, pinned_tier="primary") if t < 100 else POLICY

    steps = run(POLICY, 0, 130, lambda t: obs(primary={"p99": 400.0}) if t >= 10 else obs(), policy_at=policy_at)
    assert at(steps, 15).reasons == ("TierTripped",)      # tripped while pinned: recorded, not routed
    assert moves(steps) == [(100, w(0, 100, 0))]          # released: falls back at once
    assert at(steps, 100).reasons == ("Unpinned", "FallbackActivated")


def test_pause_freezes_weights_and_stops_routing_writes() -> None:
    def policy_at(t: float) -> Policy:
        return dataclasses.replace(POLICY, paused=True) if 5 <= t < 100 else POLICY

    steps = run(POLICY, 0, 130, lambda t: obs(primary={"p99": 400.0}) if t >= 10 else obs(), policy_at=policy_at)
    assert at(steps, 5).reasons == ("Paused",)
    assert all(s.weights == w(100, 0, 0) and not s.decision.route for s in steps if 5 <= s.t < 100)
    assert at(steps, 15).reasons == ("TierTripped",)
    assert moves(steps) == [(100, w(0, 100, 0))]
    assert at(steps, 100).reasons == ("Resumed", "FallbackActivated")
    assert count(steps, "Paused") == 1 and count(steps, "Resumed") == 1


def test_pause_wins_over_a_pin_set_while_paused() -> None:
    def policy_at(t: float) -> Policy:
        return dataclasses.replace(POLICY, paused=t < 50, pinned_tier="distilled")

    steps = run(POLICY, 0, 60, lambda t: obs(), policy_at=policy_at)
    assert moves(steps) == [(50, w(0, 100, 0))]
    assert at(steps, 50).reasons == ("Resumed", "Pinned")


def test_tier_without_capacity_is_skipped_once_per_episode() -> None:
    def samples(t: float) -> Samples:
        return obs(primary={"p99": 400.0} if t >= 10 else {}, capacity={"distilled": t >= 100})

    steps = run(POLICY, 0, 200, samples)
    # Short distilled is not news while nobody needs it; at the fallback it is skipped, once.
    assert at(steps, 15).reasons == ("TierTripped", "CapacityInsufficient", "FallbackActivated")
    assert count(steps, "CapacityInsufficient") == 1
    # Capacity returns at 100: distilled is better than popular, so it is restored to in steps.
    assert moves(steps) == [(15, w(0, 0, 100)), (100, w(0, 10, 90)), (130, w(0, 50, 50)), (160, w(0, 100, 0))]


def test_serving_tier_losing_capacity_moves_traffic_off_it() -> None:
    steps = run(POLICY, 0, 60, lambda t: obs(capacity={"primary": t < 20}))
    assert moves(steps) == [(20, w(0, 100, 0))]
    assert at(steps, 20).reasons == ("CapacityInsufficient", "FallbackActivated")
    assert "capacity insufficient" in at(steps, 20).decision.audit[1].message


def test_creep_budget_exceeded_and_recovered() -> None:
    # Window 3600s, budget 10% = 360s off the primary. Primary bad from 0 to 600s.
    policy = dataclasses.replace(POLICY, creep_window=3600.0, creep_max_ratio=0.10)
    steps = run(policy, 0, 5400, lambda t: obs(primary={"p99": 400.0}) if t < 600 else obs(), every=10.0)
    exceeded = first_with(steps, "CreepBudgetExceeded")
    recovered = first_with(steps, "CreepBudgetRecovered")
    # Fallback at 10; ~360s later the budget of the whole window is spent.
    assert 360 <= exceeded.t <= 400
    assert exceeded.decision.creep_exceeded and exceeded.decision.fallback_ratio > 0.9
    # Off-primary time (~650s) falls out of the window after about an hour, bucket by bucket.
    assert 3600 <= recovered.t <= 3600 + 600 + 2 * 3600 / 48
    assert count(steps, "CreepBudgetExceeded") == 1 and count(steps, "CreepBudgetRecovered") == 1
    assert all(s.decision.creep_exceeded for s in steps if exceeded.t <= s.t < recovered.t)
    assert len(steps[-1].decision.state.creep_buckets) <= 48


FREEZE = dataclasses.replace(POLICY, creep_window=600.0, creep_max_ratio=0.1, creep_action=CreepAction.FREEZE)


def test_freeze_holds_routing_while_the_creep_budget_is_exceeded() -> None:
    # Budget: 60 s off the primary in 600 s. The fallback at 15 spends it by 80: routing freezes there, so
    # the primary, healthy again from 100 and recovered at 110, gets nothing back. A person's pin still
    # applies (200); with no time off the primary the ratio falls back within budget and the freeze ends.
    def policy_at(t: float) -> Policy:
        return dataclasses.replace(FREEZE, pinned_tier="primary") if 200 <= t < 1000 else FREEZE

    steps = run(FREEZE, 0, 1100, lambda t: obs(primary={"p99": 400.0}) if 10 <= t < 100 else obs(),
                policy_at=policy_at)
    assert at(steps, 80).reasons == ("CreepBudgetExceeded", "Frozen")
    record = at(steps, 80).decision.audit[1]
    assert record.tier == "distilled" and "routing frozen" in record.message
    assert "TierRecovered" in at(steps, 110).reasons
    assert moves(steps) == [(15, w(0, 100, 0)), (200, w(100, 0, 0))]
    assert at(steps, 200).reasons == ("Pinned",)
    unfrozen = first_with(steps, "Unfrozen")
    assert unfrozen.reasons == ("CreepBudgetRecovered", "Unfrozen")
    assert all(s.decision.frozen == (80 <= s.t < unfrozen.t) for s in steps)
    assert count(steps, "Frozen") == 1 and count(steps, "Unfrozen") == 1
    assert not {"Paused", "Resumed"} & {r for s in steps for r in s.reasons}  # no one paused anything
    assert all(s.decision.route for s in steps)


def test_a_freeze_never_keeps_traffic_on_a_tier_without_ready_replicas() -> None:
    def samples(t: float) -> Samples:
        gone = t >= 300
        return obs(ready={"primary": 2, "distilled": 0 if gone else 2, "popular": 2},
                   primary={"p99": 400.0} if t >= 10 else {}, distilled=NO_DATA if gone else {})

    steps = run(FREEZE, 0, 400, samples)
    assert at(steps, 80).decision.frozen
    assert moves(steps) == [(15, w(0, 100, 0)), (300, w(0, 0, 100))]
    assert at(steps, 300).decision.frozen  # still frozen, now on popular


def test_long_gap_between_evaluations_is_not_counted_as_fallback() -> None:
    policy = dataclasses.replace(POLICY, creep_window=86400.0)
    state = run(policy, 0, 30, lambda t: obs(primary={"p99": 400.0}))[-1].decision.state
    before = sum(b.off_primary_ms for b in state.creep_buckets)
    d = decide(policy, obs(primary={"p99": 400.0}), state, 10_000.0)
    assert sum(b.off_primary_ms for b in d.state.creep_buckets) - before == 10_000  # 2 x interval, not 9970s


def test_insufficient_neither_trips_nor_recovers_a_serving_tier() -> None:
    steps = run(POLICY, 0, 60, lambda t: obs(primary={"p99": INSUFFICIENT, "errors": INSUFFICIENT}))
    assert moves(steps) == [] and all(s.reasons == () for s in steps)

    # A breach, then insufficient data, then a breach: the streak survives the gap (not reset to zero).
    def samples(t: float) -> Samples:
        if t in (10.0, 40.0):
            return obs(primary={"p99": 400.0})
        return obs(primary={"p99": INSUFFICIENT}) if t > 10 else obs()

    steps = run(POLICY, 0, 60, samples)
    assert moves(steps) == [(40, w(0, 100, 0))]


def test_insufficient_on_a_tier_without_traffic_lets_it_recover_and_be_probed() -> None:
    def samples(t: float) -> Samples:
        if t < 20:
            return obs(primary={"p99": 400.0} if t >= 10 else {})
        return obs(primary={"p99": INSUFFICIENT, "errors": INSUFFICIENT}) if t < 70 else obs()

    steps = run(POLICY, 0, 200, samples)
    # No traffic, no requests: clear, recovers at 30, probed with 10% at 45 (minDwell after 15).
    assert at(steps, 30).reasons == ("TierRecovered",)
    assert moves(steps)[:2] == [(15, w(0, 100, 0)), (45, w(10, 90, 0))]
    # With 10% of traffic the primary is serving: insufficient data now blocks the next steps until 70.
    assert moves(steps)[2] == (75, w(50, 50, 0))


def test_min_dwell_delays_a_second_fallback() -> None:
    def samples(t: float) -> Samples:
        return obs(primary={"p99": 400.0}, distilled={"errors": 0.3} if t >= 15 else {})

    steps = run(POLICY, 0, 60, samples)
    # Distilled trips at 20, but the previous move was at 5: the next may be at 35.
    assert moves(steps) == [(5, w(0, 100, 0)), (35, w(0, 0, 100))]


def test_restart_through_status_changes_nothing() -> None:
    def samples(t: float) -> Samples:
        return obs(primary={"p99": 400.0}) if 10 <= t < 60 or 105 <= t < 120 else obs()

    straight = run(POLICY, 0, 400, samples)
    state = initial_state(POLICY)
    for s in straight:
        status = json.loads(json.dumps(state_to_status(state)))
        d = decide(POLICY, samples(s.t), state_from_status(status), s.t)
        assert d == s.decision
        state = d.state


def test_spec_change_keeps_tier_health_by_name() -> None:
    state = run(POLICY, 0, 30, lambda t: obs(primary={"p99": 400.0}))[-1].decision.state
    assert dict(state.weights) == w(0, 100, 0)
    shorter = dataclasses.replace(POLICY, tiers=POLICY.tiers[:1] + POLICY.tiers[2:])
    # distilled (serving) is gone 10 s after the fallback: routing restarts on the primary, still known
    # tripped, so it moves on at once; the restart is no move of the engine's, so minDwell does not hold
    # traffic on the failing primary meanwhile.
    d = decide(shorter, obs(primary={"p99": 400.0}), state, 25.0)
    assert d.weights == (("primary", 0), ("popular", 100))
    assert [a.reason for a in d.audit] == ["FallbackActivated"]


def test_invalid_policy_is_rejected() -> None:
    with pytest.raises(ValueError):
        decide(dataclasses.replace(POLICY, pinned_tier="nope"), obs(), initial_state(POLICY), 0.0)
    with pytest.raises(ValueError):
        decide(dataclasses.replace(POLICY, restore_steps=(50, 10)), obs(), initial_state(POLICY), 0.0)


def test_restore_steps_without_100_still_end_on_the_better_tier() -> None:
    policy = dataclasses.replace(POLICY, restore_steps=(25,))
    steps = run(policy, 0, 200, lambda t: obs(primary={"p99": 400.0}) if 10 <= t < 20 else obs())
    assert [m[1] for m in moves(steps)] == [w(0, 100, 0), w(25, 75, 0), w(100, 0, 0)]


def test_status_form_has_no_floats_and_camel_case_keys() -> None:
    state = run(POLICY, 0, 200, lambda t: obs(primary={"p99": 400.0}) if 10 <= t < 60 else obs())[-6].decision.state

    def walk(v: object) -> None:
        assert not isinstance(v, float)
        if isinstance(v, dict):
            for k, x in v.items():
                assert k[0].islower() and "_" not in k
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    status = state_to_status(state)
    walk(status)
    assert state_from_status(json.loads(json.dumps(status))) == state
    with pytest.raises(ValueError):
        state_from_status({**status, "paused": "no"})


def test_every_emitted_reason_is_listed() -> None:
    assert len(set(AUDIT_REASONS)) == 24
    assert all(r[0].isupper() and r.isalnum() for r in AUDIT_REASONS)


LOW = dataclasses.replace(POLICY, window=60.0, triggers=tuple(
    dataclasses.replace(t, min_requests=20) for t in POLICY.triggers))


def thin(requests: float, p99: float | None = 100.0) -> dict[str, Value]:
    """A tier's readings from too few requests: the count and the values they gave."""
    return {"p99": Reading.insufficient(requests, p99), "errors": Reading.insufficient(requests, 0.0)}


def low_traffic(t: float, during: Callable[[float], dict[str, Value]] = lambda t: thin(6.0)) -> Samples:
    """The primary breaches from 10 to 60, is idle until its first restore step at 70 and then serves its
    10% share at about 6 requests per 60 s window: never the 20 one window needs."""
    if 10 <= t < 60:
        return obs(primary={"p99": 400.0})
    return obs(primary=thin(0.0) if t < 75 else during(t))


def test_a_thin_restore_step_advances_on_requests_added_up_over_evaluations() -> None:
    steps = run(LOW, 0, 600, low_traffic)
    # Each 5 s evaluation credits what arrived since the previous one: 6 requests x 5 s / 60 s = 0.5, so
    # 20 requests take 40 evaluations (not 4, as adding up the overlapping windows' counts would).
    assert moves(steps) == [(15, w(0, 100, 0)), (70, w(10, 90, 0)), (270, w(50, 50, 0)), (470, w(100, 0, 0))]
    assert at(steps, 270).reasons == ("RestoreStep",)


def test_a_breaching_value_from_too_few_requests_starts_the_count_again() -> None:
    def during(t: float) -> dict[str, Value]:
        return thin(6.0, 400.0 if t == 170 else 100.0)

    steps = run(LOW, 0, 600, lambda t: low_traffic(t, during))
    # 170 breaches (too few requests to trip, enough to distrust): the count restarts at 175.
    assert moves(steps)[2] == (370, w(50, 50, 0))
    assert count(steps, "TierTripped") == 1


def test_missing_data_neither_adds_to_nor_resets_the_count() -> None:
    def during(t: float) -> dict[str, Value]:
        return {"p99": MISSING, "errors": MISSING} if 170 <= t < 200 else thin(6.0)

    steps = run(LOW, 0, 600, lambda t: low_traffic(t, during))
    # Six evaluations without data (routing held, onMissingData=Hold) add nothing and keep what was counted:
    # the step comes 30 s later than with data throughout.
    assert moves(steps)[2] == (300, w(50, 50, 0))


def test_a_restore_that_cannot_progress_is_reported_once() -> None:
    # 0.6 requests per 60 s window, 0.05 credited per evaluation: 20 take 2,000 s. The step taken at 70 is
    # reported stalled once, 120 s after it.
    policy = dataclasses.replace(LOW, restore_stall_after=120.0)
    steps = run(policy, 0, 2400, lambda t: low_traffic(t, lambda t: thin(0.6)))
    stalled = first_with(steps, "RestoreStalled")
    assert stalled.t == 190 and count(steps, "RestoreStalled") == 2  # once per step: 10% and 50%
    record = next(a for a in stalled.decision.audit if a.reason == "RestoreStalled")
    assert record.tier == "primary" and record.from_tier is None  # not a move: Events only, no history entry
    assert "step 1/3 (10% to primary)" in record.message and "1.2 of the 20 requests" in record.message
    assert all(s.decision.restore_stalled == (190 <= s.t < 2070) for s in steps if s.t < 2070)
    assert moves(steps)[2] == (2070, w(50, 50, 0))  # it does advance, late: the stall ends with the step
    assert not at(steps, 2070).decision.restore_stalled and not at(steps, 2070).decision.state.restore_stalled


def test_a_restore_held_by_missing_data_says_so() -> None:
    policy = dataclasses.replace(LOW, restore_stall_after=120.0)
    steps = run(policy, 0, 400, lambda t: low_traffic(t, lambda t: {"p99": MISSING, "errors": MISSING}))
    record = next(a for a in first_with(steps, "RestoreStalled").decision.audit if a.reason == "RestoreStalled")
    assert "no data for primary/p99, primary/errors" in record.message


def test_a_paused_restore_is_not_reported_stalled() -> None:
    def policy_at(t: float) -> Policy:
        return dataclasses.replace(LOW, restore_stall_after=120.0, paused=100 <= t < 1000)

    steps = run(LOW, 0, 1000, lambda t: low_traffic(t, lambda t: thin(0.6)), policy_at=policy_at)
    assert count(steps, "RestoreStalled") == 0  # 70 -> 100 is under the bound, then paused
    assert all(not s.decision.restore_stalled for s in steps)


def test_routing_that_cannot_split_traffic_restores_in_one_step() -> None:
    # A Service selector sends all traffic to one tier: a 10% step would send the primary nothing, its
    # readings would stay too thin and the restore would never advance. Whatever restoreSteps says (a
    # policy stored with an older default), the engine returns all traffic at once.
    policy = dataclasses.replace(POLICY, traffic_split=False)
    steps = run(policy, 0, 200, lambda t: obs(primary={"p99": 400.0}) if 10 <= t < 60 else obs())
    assert moves(steps) == [(15, w(0, 100, 0)), (70, w(100, 0, 0))]
    assert at(steps, 70).reasons == ("TierRecovered", "Restored")


def test_restore_steps_shortened_mid_restore_finishes_the_restore() -> None:
    def policy_at(t: float) -> Policy:
        return dataclasses.replace(POLICY, restore_steps=(10,)) if t >= 90 else POLICY

    steps = run(POLICY, 0, 200, lambda t: obs(primary={"p99": 400.0}) if 10 <= t < 60 else obs(), policy_at=policy_at)
    assert moves(steps) == [(15, w(0, 100, 0)), (70, w(10, 90, 0)), (100, w(100, 0, 0))]


def test_inconsistent_status_restarts_routing_but_keeps_health() -> None:
    state = run(POLICY, 0, 30, lambda t: obs(primary={"p99": 400.0}))[-1].decision.state
    broken = dataclasses.replace(state, weights=(("primary", 0), ("distilled", 60), ("popular", 0)))
    d = decide(POLICY, obs(primary={"p99": 400.0}), broken, 60.0)
    assert d.weights == (("primary", 0), ("distilled", 100), ("popular", 0)) and d.changed


def test_an_idle_recovered_primary_is_not_handed_everything_when_the_fallback_fails() -> None:
    # The primary trips at 15 and then gets no traffic: its readings are inconclusive, which lets it
    # "recover" at 30 (so a restore can probe it). Distilled trips at 40; at 45 (minDwell) traffic goes
    # down the chain to popular, not all at once to the unproven primary.
    def samples(t: float) -> Samples:
        idle = {"p99": INSUFFICIENT, "errors": INSUFFICIENT}
        if t < 10:
            return obs()
        return obs(primary={"p99": 400.0} if t < 20 else idle, distilled={"errors": 0.5} if t >= 35 else {})

    steps = run(POLICY, 0, 50, samples)
    assert "TierRecovered" in {r for s in steps for r in s.reasons}
    assert moves(steps) == [(15, w(0, 100, 0)), (45, w(0, 0, 100))]
    assert at(steps, 45).decision.audit[-1].to_tier == "popular"
