"""A healthy new policy settles after its first write: growing clear streaks of untripped tiers wait for
the next checkpoint instead of being written on every evaluation."""
from __future__ import annotations

from understudy.engine import (
    INSUFFICIENT,
    Comparison,
    Policy,
    Reading,
    Samples,
    SignalKind,
    Tier,
    Trigger,
    decide,
    initial_state,
)
from understudy.controller.runtime import essential

POLICY = Policy(
    tiers=(Tier("primary", "big", "big"), Tier("small", "small", "small")),
    triggers=(Trigger("errors", SignalKind.ERROR_RATIO, Comparison.ABOVE, 0.05),),
    trip_after=2, recover_after=6, interval=5.0,
)
HEALTHY = Samples({"primary": {"errors": Reading.ok(0.0)}, "small": {"errors": INSUFFICIENT}})
FAILING = Samples({"primary": {"errors": Reading.ok(0.5)}, "small": {"errors": INSUFFICIENT}})


def test_a_steady_healthy_policy_has_one_essential_state() -> None:
    state, seen = initial_state(POLICY), []
    for i in range(10):
        state = decide(POLICY, HEALTHY, state, 1000.0 + 5 * i).state
        seen.append(essential(state))
    assert all(e == seen[0] for e in seen)


def test_a_trip_and_a_tripped_tiers_recovery_progress_are_essential() -> None:
    state = initial_state(POLICY)
    before = essential(state)
    for i in range(2):
        state = decide(POLICY, FAILING, state, 1000.0 + 5 * i).state
    tripped = essential(state)
    assert tripped != before
    state = decide(POLICY, Samples({"primary": {"errors": INSUFFICIENT}, "small": {"errors": Reading.ok(0.0)}}),
                   state, 1010.0).state
    assert essential(state) != tripped
