"""Manual approval of restores as timelines: traffic leaves on its own, and returns only once approved."""
from __future__ import annotations

import json
from dataclasses import replace

from tests.unit.test_engine_scenarios import POLICY, at, count, first_with, moves, obs, run, w
from understudy.engine import (
    Policy,
    RestoreApproval,
    Samples,
    decide,
    restore_state,
    state_from_status,
    state_to_status,
)

MANUAL = replace(POLICY, restore_approval=RestoreApproval.MANUAL)


def spike(t: float) -> Samples:
    """The primary breaches from 10 to 60: it trips at 15 (traffic falls back), recovers at 70."""
    return obs(primary={"p99": 400.0}) if 10 <= t < 60 else obs()


def approved(at_s: float, by: str | None = "alice") -> Policy:
    return replace(MANUAL, restore_approved_at=at_s, override_by=by)


def test_traffic_falls_back_on_its_own_but_waits_for_an_approval_to_return() -> None:
    steps = run(MANUAL, 0, 900, spike)
    assert at(steps, 15).weights == w(0, 100, 0)  # leaving a failing tier needs nobody
    assert at(steps, 70).reasons == ("TierRecovered", "RestoreAwaitingApproval")
    assert all(s.weights == w(0, 100, 0) for s in steps if s.t >= 15)
    assert count(steps, "RestoreAwaitingApproval") == 1, "one record per hold, not per evaluation"
    record = next(a for a in at(steps, 70).decision.audit if a.reason == "RestoreAwaitingApproval")
    assert (record.tier, record.from_tier, record.to_tier) == ("primary", "distilled", "distilled")
    assert "restoreApprovedAt at or after 1970-01-01T00:01:10Z" in record.message
    assert steps[-1].decision.state.held_tier == "primary"
    assert steps[-1].decision.state.held_since_ms == 70_000


def test_automatic_approval_restores_at_the_same_moment_without_a_hold() -> None:
    steps = run(POLICY, 0, 200, spike)
    assert at(steps, 70).reasons == ("TierRecovered", "RestoreStep")
    assert steps[-1].decision.state.held_tier is None


def test_an_approval_releases_the_hold_and_the_restore_takes_its_steps_on_evidence() -> None:
    # Approved at 300 s (the plugin writes the hold's own time, 70 s; any time from 70 s on releases it).
    steps = run(MANUAL, 0, 600, spike, policy_at=lambda t: approved(70.0) if t >= 300 else MANUAL)
    released = first_with(steps, "RestoreApproved")
    assert released.t == 300 and released.reasons == ("RestoreApproved", "RestoreStep")
    record = released.decision.audit[0]
    assert record.message == "restore to primary approved by alice (held since 1970-01-01T00:01:10Z)"
    assert (record.from_tier, record.to_tier) == ("distilled", "primary")
    assert moves(steps)[-3:] == [(300, w(10, 90, 0)), (330, w(50, 50, 0)), (360, w(100, 0, 0))]
    assert count(steps, "RestoreApproved") == 1 and count(steps, "RestoreAwaitingApproval") == 1


def test_an_approval_older_than_the_hold_releases_nothing() -> None:
    # Given at 40 s, during the incident: it cannot speak for a restore that fell due at 70 s.
    steps = run(MANUAL, 0, 600, spike, policy_at=lambda t: approved(40.0) if t >= 40 else MANUAL)
    assert count(steps, "RestoreApproved") == 0
    assert steps[-1].weights == w(0, 100, 0)


def test_an_approval_dated_ahead_takes_effect_when_its_time_comes() -> None:
    steps = run(MANUAL, 0, 600, spike, policy_at=lambda t: approved(400.0) if t >= 100 else MANUAL)
    assert first_with(steps, "RestoreApproved").t == 400


def test_a_relapse_ends_the_hold_and_the_next_restore_needs_a_new_approval() -> None:
    def relapse(t: float) -> Samples:
        return obs(primary={"p99": 400.0}) if 10 <= t < 60 or 200 <= t < 260 else obs()

    # The approval written for the first hold (70 s) comes at 230 s, after the primary failed again.
    steps = run(MANUAL, 0, 600, relapse, policy_at=lambda t: approved(70.0) if t >= 230 else MANUAL)
    ended = first_with(steps, "RestoreNoLongerDue")
    assert ended.t == 205 and ended.reasons == ("TierTripped", "RestoreNoLongerDue")
    record = ended.decision.audit[1]
    assert (record.tier, record.from_tier, record.to_tier) == ("primary", "distilled", "distilled")  # no move
    assert ended.decision.audit[1].message == (
        "the restore to primary held since 1970-01-01T00:01:10Z is no longer due (primary: p99 400 above 250); "
        "a later restore waits for a new approval")
    assert count(steps, "RestoreAwaitingApproval") == 2  # a new hold once the primary recovered again, at 270 s
    assert steps[-1].decision.state.held_since_ms == 270_000
    assert count(steps, "RestoreApproved") == 0 and steps[-1].weights == w(0, 100, 0)


def test_a_restore_that_aborts_needs_a_new_approval() -> None:
    def probe_fails(t: float) -> Samples:
        return obs(primary={"p99": 400.0}) if 10 <= t < 60 or 300 <= t < 320 else obs()

    steps = run(MANUAL, 0, 700, probe_fails, policy_at=lambda t: approved(70.0) if t >= 290 else MANUAL)
    assert first_with(steps, "RestoreApproved").t == 290
    aborted = first_with(steps, "RestoreAborted")
    assert aborted.t == 320 and aborted.weights == w(0, 100, 0)  # the probe tripped at 300; minDwell since 290
    assert count(steps, "RestoreAwaitingApproval") == 2 and count(steps, "RestoreApproved") == 1
    assert steps[-1].weights == w(0, 100, 0)


def test_a_pin_takes_over_from_a_hold_and_names_who_pinned() -> None:
    pinned = replace(MANUAL, pinned_tier="popular", override_by="bob")
    steps = run(MANUAL, 0, 300, spike, policy_at=lambda t: pinned if t >= 200 else MANUAL)
    step = at(steps, 200)
    assert step.reasons == ("RestoreNoLongerDue", "Pinned") and step.weights == w(0, 0, 100)
    assert "override.pinTier sends all traffic to popular" in step.decision.audit[0].message
    assert step.decision.audit[1].message == "all traffic pinned to popular by bob"
    assert steps[-1].decision.state.held_tier is None


def test_an_edit_to_automatic_approval_restores_without_ceremony() -> None:
    steps = run(MANUAL, 0, 400, spike, policy_at=lambda t: POLICY if t >= 200 else MANUAL)
    assert at(steps, 200).reasons == ("RestoreStep",)
    assert count(steps, "RestoreApproved") == 0 and steps[-1].weights == w(100, 0, 0)


def test_a_hold_survives_a_restart_through_status() -> None:
    before = run(MANUAL, 0, 100, spike)[-1].decision.state
    status = json.loads(json.dumps(state_to_status(before)))
    assert status["restoreHeld"] == {"tier": "primary", "sinceMs": 70_000}
    assert state_from_status(status) == before
    restored = restore_state(MANUAL, status, 100.0)
    assert (restored.state, restored.repaired) == (before, ())
    after = decide(approved(70.0), obs(), restored.state, 100.0)
    assert [a.reason for a in after.audit] == ["RestoreApproved", "RestoreStep"]


def test_a_hold_read_back_against_a_routing_with_no_restore_to_wait_for_is_dropped() -> None:
    state = run(MANUAL, 0, 100, spike)[-1].decision.state
    status = state_to_status(state)
    status["restoreHeld"]["tier"] = "popular"  # worse than the anchor: no restore goes there
    restored = restore_state(MANUAL, status, 100.0)
    assert restored.state.held_tier is None
    assert restored.repaired == ("restoreHeld names popular, which the routing gives no restore to wait for: dropped",)
    # Under Automatic approval a recorded hold is simply over: not damage.
    assert restore_state(POLICY, state_to_status(state), 100.0).repaired == ()
