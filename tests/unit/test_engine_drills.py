"""Drills as timelines: when they start, what they route, and how they end."""
from __future__ import annotations

import dataclasses

from understudy.audit.reasons import REASONS
from understudy.engine import INSUFFICIENT, Comparison, Mode, Policy, Reading, Samples, SignalKind, Tier, Trigger
from understudy.engine import decide, initial_state
from understudy.engine.drills import DRILL_REASONS, Drill, DrillRun, step_drills

POLICY = Policy(
    tiers=(Tier("primary", "big", "big"), Tier("distilled", "small", "small"), Tier("popular", "pop", "pop")),
    triggers=(Trigger("errors", SignalKind.ERROR_RATIO, Comparison.ABOVE, 0.05),),
    trip_after=2, recover_after=3, min_dwell=30.0, interval=5.0,
)
DRILL = Drill("distilled", every=3600.0, duration=300.0, share=10)


def samples(primary: float = 0.0, distilled: Reading = INSUFFICIENT) -> Samples:
    return Samples({"primary": {"errors": Reading.ok(primary)}, "distilled": {"errors": distilled},
                    "popular": {"errors": INSUFFICIENT}})


def steady(policy: Policy = POLICY, primary_errors: float = 0.0):  # type: ignore[no-untyped-def]
    return decide(policy, samples(primary_errors), initial_state(policy), 10_000.0)


def test_no_drill_before_its_period_has_passed() -> None:
    step = step_drills((DRILL,), POLICY, steady(), samples(), None, {}, created=9_000.0, now=10_000.0)
    assert step.running is None and step.weights is None and step.audit == ()


def test_a_due_drill_sends_its_share_to_the_fallback() -> None:
    step = step_drills((DRILL,), POLICY, steady(), samples(), None, {}, created=0.0, now=10_000.0)
    assert step.running == DrillRun("distilled", 10, 10_000.0, 10_300.0)
    assert step.weights == (("primary", 90), ("distilled", 10), ("popular", 0))
    assert [r.reason for r in step.audit] == ["DrillStarted"]


def test_a_drill_passes_when_its_time_is_up_without_a_breach() -> None:
    run = DrillRun("distilled", 10, 10_000.0, 10_300.0)
    going = step_drills((DRILL,), POLICY, steady(), samples(distilled=Reading.ok(0.01)), run, {}, 0.0, 10_100.0)
    assert going.running == dataclasses.replace(run, evidence=("errors",))
    assert going.weights is not None and going.outcome is None
    done = step_drills((DRILL,), POLICY, steady(), samples(distilled=Reading.ok(0.01)), run, {}, 0.0, 10_300.0)
    assert done.running is None and done.weights is None
    assert done.outcome is not None and done.outcome.result == "Passed"


def test_a_breach_fails_the_drill_at_once_and_names_the_trigger() -> None:
    run = DrillRun("distilled", 10, 10_000.0, 10_300.0)
    step = step_drills((DRILL,), POLICY, steady(), samples(distilled=Reading.ok(0.4)), run, {}, 0.0, 10_010.0)
    assert step.running is None and step.weights is None
    assert step.outcome is not None and step.outcome.result == "Failed"
    (record,) = step.audit
    assert (record.reason, record.trigger, record.observed, record.threshold) == ("DrillFailed", "errors", 0.4, 0.05)


def test_no_drill_while_a_fallback_serves_or_in_observe_mode() -> None:
    state = initial_state(POLICY)
    for t in (10_000.0, 10_005.0):
        fallen = decide(POLICY, samples(primary=0.5), state, t)
        state = fallen.state
    assert dict(fallen.weights)["primary"] == 0
    skipped = step_drills((DRILL,), POLICY, fallen, samples(), None, {}, 0.0, 10_005.0)
    assert skipped.outcome is not None and skipped.outcome.result == "Skipped" and skipped.weights is None
    observe = dataclasses.replace(POLICY, mode=Mode.OBSERVE)
    skipped = step_drills((DRILL,), observe, steady(observe), samples(), None, {}, 0.0, 10_000.0)
    assert skipped.outcome is not None and "Observe" in skipped.outcome.message


def test_a_real_fallback_aborts_a_running_drill() -> None:
    run = DrillRun("distilled", 10, 10_000.0, 10_300.0)
    state = initial_state(POLICY)
    for t in (10_000.0, 10_005.0):
        fallen = decide(POLICY, samples(primary=0.5), state, t)
        state = fallen.state
    step = step_drills((DRILL,), POLICY, fallen, samples(), run, {}, 0.0, 10_005.0)
    assert step.outcome is not None and step.outcome.result == "Aborted" and step.weights is None


def test_the_next_drill_counts_from_the_last_one() -> None:
    last = {"distilled": 9_000.0}
    assert step_drills((DRILL,), POLICY, steady(), samples(), None, last, 0.0, 10_000.0).running is None
    assert step_drills((DRILL,), POLICY, steady(), samples(), None, last, 0.0, 12_600.0).running is not None


def test_a_drill_without_a_reading_of_a_trigger_is_inconclusive() -> None:
    """INSUFFICIENT readings all along used to pass the drill (code review S5)."""
    run = DrillRun("distilled", 10, 10_000.0, 10_300.0)
    for t in (10_005.0, 10_150.0):
        going = step_drills((DRILL,), POLICY, steady(), samples(), run, {}, 0.0, t)
        assert going.outcome is None and going.running is not None
        run = going.running
    done = step_drills((DRILL,), POLICY, steady(), samples(), run, {}, 0.0, 10_300.0)
    assert done.running is None and done.weights is None
    assert done.outcome is not None and done.outcome.result == "Inconclusive"
    (record,) = done.audit
    assert record.reason == "DrillInconclusive"
    assert record.message == ("drill of distilled inconclusive: no reading of errors while it served 10% of traffic "
                              "for 300s, so nothing was proven (LastDrillPassed is left as it was)")


def test_evidence_gathered_during_the_drill_counts_at_its_end() -> None:
    policy = dataclasses.replace(POLICY, triggers=(
        *POLICY.triggers, Trigger("p99", SignalKind.LATENCY, Comparison.ABOVE, 250.0)))

    def both(errors: Reading, p99: Reading) -> Samples:
        return Samples({"primary": {"errors": Reading.ok(0.0), "p99": Reading.ok(100.0)},
                        "distilled": {"errors": errors, "p99": p99}})

    run: DrillRun | None = DrillRun("distilled", 10, 10_000.0, 10_300.0)
    run = step_drills((DRILL,), policy, steady(policy), both(Reading.ok(0.01), INSUFFICIENT), run, {}, 0.0,
                      10_100.0).running
    assert run is not None and run.evidence == ("errors",)
    run = step_drills((DRILL,), policy, steady(policy), both(INSUFFICIENT, Reading.ok(120.0)), run, {}, 0.0,
                      10_200.0).running
    assert run is not None and run.evidence == ("errors", "p99")
    done = step_drills((DRILL,), policy, steady(policy), both(INSUFFICIENT, INSUFFICIENT), run, {}, 0.0, 10_300.0)
    assert done.outcome is not None and done.outcome.result == "Passed"


def test_a_nan_reading_is_no_evidence() -> None:
    run = DrillRun("distilled", 10, 10_000.0, 10_300.0)
    done = step_drills((DRILL,), POLICY, steady(), samples(distilled=Reading.ok(float("nan"))), run, {}, 0.0,
                       10_300.0)
    assert done.outcome is not None and done.outcome.result == "Inconclusive"


def test_drills_never_send_traffic_in_observe_mode_or_while_paused() -> None:
    run = DrillRun("distilled", 10, 10_000.0, 10_300.0)
    for policy in (dataclasses.replace(POLICY, mode=Mode.OBSERVE), dataclasses.replace(POLICY, paused=True)):
        due = step_drills((DRILL,), policy, steady(policy), samples(), None, {}, 0.0, 10_000.0)
        assert due.weights is None and due.running is None
        assert due.outcome is not None and due.outcome.result == "Skipped"
        running = step_drills((DRILL,), policy, steady(policy), samples(), run, {}, 0.0, 10_100.0)
        assert running.weights is None and running.running is None
        assert running.outcome is not None and running.outcome.result == "Aborted"


def test_every_drill_reason_is_published() -> None:
    assert set(DRILL_REASONS) <= REASONS.keys()
