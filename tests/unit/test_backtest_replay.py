"""The backtest's replay and summary on synthetic Samples, where every answer is known in advance."""
from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import replace

from understudy.backtest.cluster import Step, assumptions
from understudy.backtest.replay import (
    Approval,
    Event,
    TierTime,
    TriggerCount,
    backtest_policy,
    replay,
    summarise,
)
from understudy.engine import (
    INSUFFICIENT,
    MISSING,
    AuditRecord,
    Comparison,
    CreepAction,
    Mode,
    Policy,
    Reading,
    RestoreApproval,
    Samples,
    SignalKind,
    Tier,
    Trigger,
    decide,
    initial_state,
)
from understudy.engine.drills import Drill
from understudy.engine.governance import TierCapacity

T0 = 1_000_000.0
STEP = 5.0
POLICY = Policy(
    tiers=(Tier("primary", "big", "big"), Tier("distilled", "small", "small")),
    triggers=(
        Trigger("p99", SignalKind.LATENCY, Comparison.ABOVE, 250.0, quantile=0.99),
        Trigger("errors", SignalKind.ERROR_RATIO, Comparison.ABOVE, 0.05),
    ),
    trip_after=2,
    recover_after=6,
    restore_steps=(10, 50, 100),
    min_dwell=30.0,
    interval=STEP,
    creep_max_ratio=0.1,
    creep_window=3600.0,
)


def samples(p99: float | Reading = 100.0, errors: float | Reading = 0.0) -> Samples:
    def reading(v: float | Reading) -> Reading:
        return v if isinstance(v, Reading) else Reading.ok(v)

    return Samples({
        "primary": {"p99": reading(p99), "errors": reading(errors)},
        "distilled": {"p99": Reading.ok(80.0), "errors": Reading.ok(0.0)},
    })


def history(steps: int, slow: Collection[int] = (), at: Mapping[int, Samples] | None = None,
            ) -> list[Step]:
    """Healthy steps, slow (p99 400 ms) at the indexes in `slow`, or the Samples given in `at`."""
    given = at or {}
    return [Step(T0 + i * STEP, given.get(i, samples(400.0 if i in slow else 100.0))) for i in range(steps)]


def times(events: Iterable[Event], reason: str) -> list[float]:
    """The step indexes at which `reason` was recorded."""
    return [(e.at - T0) / STEP for e in events if e.record.reason == reason]


def test_healthy_history_changes_nothing() -> None:
    summary = summarise(replay(POLICY, history(100), STEP))
    assert summary.evaluations == 100
    assert (summary.activations, summary.episodes, summary.transitions) == (0, 0, 0)
    assert summary.timeline == () and summary.triggers == ()
    assert summary.tiers == (TierTime("primary", 495.0, 495.0), TierTime("distilled", 0.0, 0.0))
    assert summary.fallback_ratio == 0.0 and not summary.creep_exceeded
    assert (summary.start, summary.end) == (T0, T0 + 495.0)


def test_one_spike_is_one_activation_and_a_stepwise_restore() -> None:
    # breaches at steps 20..39: trip on the second (21); clear from 40, recovered on the sixth (45), then
    # 10% at 45, 50% one minDwell (6 steps) later at 51, 100% at 57
    summary = summarise(replay(POLICY, history(100, slow=set(range(20, 40))), STEP))
    assert summary.activations == 1 and summary.episodes == 1
    assert summary.transitions == 4
    assert summary.transitions_by_reason == {"FallbackActivated": 1, "RestoreStep": 2, "Restored": 1}
    assert summary.triggers == (TriggerCount("primary", "p99", trips=1, breached=20),)
    assert times(summary.timeline, "TierTripped") == [21]
    assert times(summary.timeline, "FallbackActivated") == [21]
    assert times(summary.timeline, "TierRecovered") == [45]
    assert times(summary.timeline, "RestoreStep") == [45, 51]
    assert times(summary.timeline, "Restored") == [57]
    primary, distilled = summary.tiers
    assert distilled.active_seconds == (57 - 21) * STEP
    assert distilled.traffic_seconds == (45 - 21) * STEP + 0.9 * 30 + 0.5 * 30
    assert primary.traffic_seconds + distilled.traffic_seconds == 99 * STEP
    assert summary.fallback_ratio == distilled.traffic_seconds / (99 * STEP)
    assert summary.peak_window_ratio == distilled.traffic_seconds / 3600
    assert not summary.creep_exceeded


def test_two_spikes_are_two_episodes_and_eight_flaps() -> None:
    summary = summarise(replay(POLICY, history(200, slow=set(range(20, 30)) | set(range(100, 110))), STEP))
    assert (summary.activations, summary.episodes, summary.transitions) == (2, 2, 8)
    assert summary.triggers == (TriggerCount("primary", "p99", trips=2, breached=20),)


def test_near_miss_breaches_without_a_trip() -> None:
    """Single breached evaluations never reach tripAfter=2: nothing moves, but the report shows them."""
    summary = summarise(replay(POLICY, history(100, slow={10, 30, 50}), STEP))
    assert (summary.activations, summary.transitions) == (0, 0)
    assert summary.triggers == (TriggerCount("primary", "p99", trips=0, breached=3),)


def test_breach_during_restore_aborts_it_and_counts_as_a_flap() -> None:
    # recovered and first restore step at 45 (as above); the primary breaches again at 46 while on probation
    # and trips at once, but the abort, a move of the weights, waits minDwell after the step (51)
    summary = summarise(replay(POLICY, history(120, slow=set(range(20, 40)) | {46}), STEP))
    assert times(summary.timeline, "TierTripped") == [21, 46]
    assert times(summary.timeline, "RestoreAborted") == [51]
    assert summary.transitions_by_reason["RestoreAborted"] == 1
    assert summary.triggers == (TriggerCount("primary", "p99", trips=2, breached=21),)
    assert summary.episodes == 1  # the primary never had all traffic back in between


def test_creep_budget_exceeded_when_time_off_primary_passes_the_budget() -> None:
    policy = replace(POLICY, creep_window=600.0)
    # off the primary from step 21; each later step credits 5 s: 60 s (10% of 600 s) is passed at step 34
    summary = summarise(replay(policy, history(100, slow=set(range(20, 40))), STEP))
    assert summary.creep_exceeded
    assert [(t - T0) / STEP for t in summary.creep_exceeded_at] == [34]
    assert summary.peak_window_ratio == summary.tiers[1].traffic_seconds / 600


def test_missing_data_is_counted_and_never_read_as_healthy() -> None:
    result = replay(POLICY, history(30, at={i: samples(MISSING) for i in range(10, 15)}), STEP)
    summary = summarise(result)
    assert summary.unavailable_evaluations == 5
    assert times(summary.timeline, "MetricsMissing") == [10]
    assert times(summary.timeline, "MetricsRestored") == [15]
    assert result.signals[("primary", "p99")][9:16] == [100.0, None, None, None, None, None, 100.0]


def test_signals_keep_values_and_blank_what_cannot_be_judged() -> None:
    result = replay(POLICY, history(3, at={1: samples(INSUFFICIENT, 0.5)}), STEP)
    assert result.signals[("primary", "p99")] == [100.0, None, 100.0]
    assert result.signals[("primary", "errors")] == [0.0, 0.5, 0.0]
    assert result.signals[("distilled", "p99")] == [80.0, 80.0, 80.0]
    assert result.active == ["primary"] * 3


def test_trigger_applying_to_one_tier_is_only_recorded_there() -> None:
    policy = replace(POLICY, triggers=(POLICY.triggers[0], replace(POLICY.triggers[1], applies_to=frozenset({"distilled"}))))
    result = replay(policy, history(2), STEP)
    assert set(result.signals) == {("primary", "p99"), ("distilled", "p99"), ("distilled", "errors")}


def test_replay_is_the_engines_own_answer() -> None:
    steps = history(80, slow=set(range(10, 25)))
    result = replay(POLICY, steps, STEP)
    state = initial_state(POLICY)
    records = []
    for at, s, _, _ in steps:
        decision = decide(POLICY, s, state, at)
        state = decision.state
        records += [(at, r) for r in decision.audit]
    assert [(e.at, e.record) for e in result.events] == records
    assert result.last is not None and result.last.state == state


def test_backtest_policy_runs_at_the_step_and_ignores_overrides() -> None:
    same, notes = backtest_policy(POLICY, STEP)
    assert same == POLICY and notes == ()
    coarse, notes = backtest_policy(replace(POLICY, pinned_tier="distilled", paused=True), 15.0)
    assert coarse.interval == 15.0 and coarse.pinned_tier is None and not coarse.paused
    assert len(notes) == 2
    assert "3x the time" in notes[0] and "override" in notes[1]


def test_coarse_step_still_credits_all_time_off_the_primary() -> None:
    """With interval 5 s the engine credits at most 10 s per evaluation; a 15 s step must not lose time."""
    policy, _ = backtest_policy(POLICY, 15.0)
    steps = [Step(T0 + i * 15.0, samples(400.0 if 5 <= i < 40 else 100.0)) for i in range(60)]
    summary = summarise(replay(policy, steps, 15.0))
    off = summary.tiers[1].traffic_seconds
    assert summary.peak_window_ratio == off / 3600


# -- governance and drills in the replay ------------------------------------------------------------------

ROLLING_BACK = replace(POLICY, creep_window=600.0, creep_action=CreepAction.ROLLBACK_PRIMARY)


def test_a_creeping_primary_is_rolled_back_once_per_episode() -> None:
    # off the primary from step 21: the budget (60 s of 600 s) is passed at step 34 and stays exceeded
    result = replay(ROLLING_BACK, history(100, slow=set(range(20, 40))), STEP)
    summary = summarise(result)
    assert summary.rollbacks == ((T0 + 34 * STEP, "1"),)
    assert times(summary.timeline, "RolledBack") == [35]  # the outcome comes back at the next evaluation
    assert "rolled big back to revision 1" in next(
        e.record.message for e in summary.timeline if e.record.reason == "RolledBack")


def test_without_rollback_primary_nothing_is_rolled_back() -> None:
    summary = summarise(replay(replace(ROLLING_BACK, creep_action=CreepAction.ALERT),
                               history(100, slow=set(range(20, 40))), STEP))
    assert summary.rollbacks == () and "RolledBack" not in {e.record.reason for e in summary.timeline}


def test_an_observe_policy_is_replayed_as_enforced() -> None:
    policy, notes = backtest_policy(replace(ROLLING_BACK, mode=Mode.OBSERVE), STEP)
    assert policy.mode is Mode.ENFORCE and "Observe replayed as Enforce" in notes[0]
    assert len(summarise(replay(policy, history(100, slow=set(range(20, 40))), STEP)).rollbacks) == 1


SCALING = {"distilled": TierCapacity(5.0, scale_on_activate=True, max_replicas=12)}


def recorded(steps: list[Step], replicas: Mapping[str, tuple[int, int]] | None, load: float) -> list[Step]:
    return [s._replace(load=load, replicas=replicas) for s in steps]


def test_a_short_fallback_is_scaled_up_for_the_incident_and_back_after_it() -> None:
    steps = recorded(history(100, slow=set(range(20, 40))), {"primary": (4, 4), "distilled": (2, 2)}, 40.0)
    summary = summarise(replay(POLICY, steps, STEP, capacities=SCALING))
    # two replicas carry 10 requests/s, not 40: skipped at the trip (21), scaled to 8, back once restored (57)
    assert times(summary.timeline, "CapacityInsufficient") == [21]
    assert summary.scale_ups == ((T0 + 21 * STEP, "distilled", 8),)
    assert summary.scale_downs == ((T0 + 57 * STEP, "distilled", 2),)
    assert times(summary.timeline, "ScaledUp") == [22] and times(summary.timeline, "ScaledDown") == [58]


def test_without_recorded_replicas_capacity_is_not_judged() -> None:
    steps = recorded(history(100, slow=set(range(20, 40))), None, 40.0)
    summary = summarise(replay(POLICY, steps, STEP, capacities=SCALING))
    assert summary.scale_ups == () and "CapacityInsufficient" not in {e.record.reason for e in summary.timeline}
    notes = assumptions(POLICY, SCALING, (), readiness_known=False)
    assert any("capacity not judged" in n for n in notes)


def test_drills_are_replayed_and_need_evidence() -> None:
    drill = (Drill("distilled", every=100.0, duration=20.0, share=10),)
    quiet = history(100)  # the fallback reads 80 ms and no errors throughout
    unread = [Step(s.at, Samples({**s.samples.readings, "distilled": {"p99": INSUFFICIENT, "errors": INSUFFICIENT}}))
              for s in quiet]
    assert summarise(replay(POLICY, quiet, STEP, drill)).drills == {"Passed": 4}
    assert summarise(replay(POLICY, unread, STEP, drill)).drills == {"Inconclusive": 4}


def test_freezes_are_counted_from_the_engines_records() -> None:
    result = replay(POLICY, history(3), STEP)
    result.events.append(Event(T0 + STEP, AuditRecord("Frozen", "routing frozen on distilled")))
    assert summarise(result).freezes == (T0 + STEP,)


def test_assumptions_are_stated_for_what_the_policy_governs() -> None:
    assert assumptions(POLICY, {}, (), readiness_known=False) == ()
    notes = assumptions(ROLLING_BACK, SCALING, (), readiness_known=True)
    assert "revision 1 known-good when the range began" in notes[0]
    assert "scale-ups are assumed to succeed at once" in notes[1]
    assert "changes no signal" in notes[-1]


# -- manual restore approval ---------------------------------------------------------------------------------

MANUAL = replace(POLICY, restore_approval=RestoreApproval.MANUAL)


def test_a_manual_policy_shows_where_approvals_were_needed_and_what_waiting_costs() -> None:
    # slow from step 20 to 39: the fallback at 21, the primary recovered at 45, when the restore falls due
    policy, notes = backtest_policy(replace(MANUAL, restore_approved_at=T0, override_by="alice"), STEP, 60.0)
    assert policy.restore_approved_at is None and policy.override_by is None
    assert notes == ("restoreApproval Manual: each held restore is taken as approved 60s after it fell due "
                     "(--approval-delay), so it starts at the first step from then; 'approvals' lists them",)
    at_once = summarise(replay(policy, history(100, slow=set(range(20, 40))), STEP))
    assert at_once.manual_approval
    assert at_once.approvals == (Approval(T0 + 45 * STEP, "primary", T0 + 46 * STEP),)
    assert times(at_once.timeline, "RestoreApproved") == [46] and times(at_once.timeline, "RestoreStep")[0] == 46
    waiting = summarise(replay(policy, history(100, slow=set(range(20, 40))), STEP, approval_delay=60.0))
    assert waiting.approvals == (Approval(T0 + 45 * STEP, "primary", T0 + 57 * STEP),)
    assert waiting.tiers[1].traffic_seconds > at_once.tiers[1].traffic_seconds + 50


def test_a_hold_that_ends_before_its_approval_is_listed_as_not_approved() -> None:
    # the primary recovers at 45, is held, and trips again at 51 before a 60 s approval could come
    summary = summarise(replay(MANUAL, history(100, slow=set(range(20, 40)) | set(range(50, 100))), STEP,
                               approval_delay=60.0))
    assert summary.approvals == (Approval(T0 + 45 * STEP, "primary", None),)
    assert times(summary.timeline, "RestoreNoLongerDue") == [51]
