"""Engine state read back from status, which anyone with `patch` on fallbackpolicies/status can write:
checked field by field against the policy and the clock, repaired or dropped, never trusted blindly,
never a crash, and never a silent return of traffic to the primary."""
from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from tests.unit.test_engine_probe_backoff import SERVICE, closed_loop
from tests.unit.test_engine_scenarios import POLICY, TIERS, moves, obs, run, w
from understudy.engine import (
    Samples,
    State,
    Tier,
    decide,
    initial_state,
    restore_state,
    state_from_status,
    state_to_status,
)

NOW = 10_000.0
ON_DISTILLED = w(0, 100, 0)


def on_distilled() -> State:
    """A real state: the primary tripped at 15 and distilled serves everything since."""
    return run(POLICY, NOW - 300, NOW - 5, lambda t: obs(primary={"p99": 400.0}) if t >= NOW - 290 else obs())[
        -1].decision.state


def status_of(state: State, **changes: Any) -> dict[str, Any]:
    status = json.loads(json.dumps(state_to_status(state)))
    status.update(changes)
    return status


def test_a_sound_status_restores_exactly_and_says_nothing() -> None:
    for step in run(POLICY, 0, 400, lambda t: obs(primary={"p99": 400.0}) if 10 <= t < 60 else obs()):
        restored = restore_state(POLICY, status_of(step.decision.state), step.t)
        assert (restored.state, restored.repaired, restored.routing_known) == (step.decision.state, (), True)
        assert restored.record is None


def test_no_status_yet_is_a_new_policy() -> None:
    restored = restore_state(POLICY, None, NOW)
    assert (restored.state, restored.repaired, restored.routing_known) == (initial_state(POLICY), (), True)


def test_a_status_from_before_the_newer_fields_restores_without_a_word() -> None:
    status = status_of(on_distilled())
    for tier in status["tiers"]:
        tier.pop("unready", None)
    for key in ("frozen", "restoreStalled"):
        status.pop(key, None)
    assert restore_state(POLICY, status, NOW).repaired == ()


def test_a_negative_restore_step_is_repaired_not_a_crash() -> None:
    # Ten percent back on the primary, as a restore would leave it, but with a step no restore can have.
    state = dataclasses.replace(on_distilled(), weights=(("primary", 10), ("distilled", 90), ("popular", 0)),
                                restore_tier="primary", restore_step=0)
    restored = restore_state(POLICY, status_of(state, restore={"tier": "primary", "step": -7}), NOW)
    assert restored.state.restore_step == 0 and restored.state.restore_tier == "primary"
    assert dict(restored.state.weights) == w(10, 90, 0) and restored.routing_known
    assert any("restore.step" in r for r in restored.repaired)
    decide(POLICY, obs(), restored.state, NOW)


def test_a_last_transition_in_the_future_only_delays_the_next_move_by_min_dwell() -> None:
    # The attack: a transition dated in the year 2286 would block every move for ever.
    status = status_of(initial_state(POLICY), lastTransitionMs=9_999_999_999_999, lastEvaluationMs=9_999_999_999_999)
    restored = restore_state(POLICY, status, NOW)
    assert restored.state.last_transition_ms == round(NOW * 1000)
    assert restored.state.last_evaluation_ms == round(NOW * 1000)
    assert any("lastTransitionMs" in r for r in restored.repaired)
    steps = run(POLICY, NOW + 5, NOW + 60, lambda t: obs(primary={"p99": 400.0}), state=restored.state)
    assert moves(steps) == [(NOW + 30, ON_DISTILLED)]  # tripped at +10, moved once minDwell (30 s) passed


def test_a_clock_a_little_behind_the_writer_is_not_news() -> None:
    state = dataclasses.replace(on_distilled(), last_transition_ms=round(NOW * 1000) + 2_000)
    restored = restore_state(POLICY, status_of(state), NOW)
    assert restored.repaired == () and restored.state.last_transition_ms == round(NOW * 1000)


def test_creep_buckets_dated_in_the_future_or_impossible_are_dropped() -> None:
    state = on_distilled()
    buckets = state_to_status(state)["creepBuckets"]
    forged = [*buckets, {"bucket": 10**9, "offPrimaryMs": 10**9, "observedMs": 10**9},
              {"bucket": buckets[-1]["bucket"] - 1, "offPrimaryMs": 5_000, "observedMs": -1}]
    restored = restore_state(POLICY, status_of(state, creepBuckets=forged), NOW)
    assert restored.state.creep_buckets == state.creep_buckets
    assert any("creepBuckets" in r for r in restored.repaired)
    assert dict(restored.state.weights) == ON_DISTILLED and restored.routing_known


def test_streaks_beyond_their_caps_and_unknown_tiers_are_repaired() -> None:
    status = status_of(on_distilled())
    status["tiers"][1]["breachStreak"] = 999
    status["tiers"][1]["clearStreak"] = -3
    status["tiers"].append({"name": "gone", "breachStreak": 1, "clearStreak": 0, "tripped": True,
                            "capacityShort": False})
    status["weights"].append({"tier": "gone", "weight": 0})
    restored = restore_state(POLICY, status, NOW)
    distilled = restored.state.tiers[1]
    assert (distilled.breach_streak, distilled.clear_streak) == (POLICY.trip_after, 0)
    assert [t.name for t in restored.state.tiers] == list(TIERS)
    assert len(restored.repaired) == 2  # the streaks; a tier no longer in the spec is an edit, not damage


def test_an_accounting_field_alone_never_moves_routing() -> None:
    for damage in ({"creepBuckets": "lots"}, {"lastEvaluationMs": "yesterday"}, {"creepExceeded": "no"},
                   {"tiers": [1, 2, 3]}, {"paused": None}, {"metricsMissing": 7}):
        restored = restore_state(POLICY, status_of(on_distilled(), **damage), NOW)
        assert dict(restored.state.weights) == ON_DISTILLED and restored.state.active_tier == "distilled"
        assert restored.routing_known and restored.repaired, damage


def test_weights_that_cannot_be_trusted_are_reported_with_a_placeholder_and_read_from_the_route() -> None:
    for weights in ([{"tier": "primary", "weight": 60}, {"tier": "distilled", "weight": 100}],
                    [{"tier": "primary", "weight": -50}, {"tier": "distilled", "weight": 150}],
                    [{"tier": "elsewhere", "weight": 100}], "all of it", None):
        status = status_of(on_distilled(), weights=weights)
        restored = restore_state(POLICY, status, NOW)
        assert not restored.routing_known and any("weights" in r for r in restored.repaired)
        assert sum(wt for _, wt in restored.state.weights) == 100  # a valid placeholder, never a crash
        assert restored.state.tiers == on_distilled().tiers  # health survives bad routing fields
        # The shell reads the routing object and calls again: traffic stays where it really is.
        again = restore_state(POLICY, status, NOW, observed={"primary": 0, "distilled": 100, "popular": 0})
        assert again.routing_known and dict(again.state.weights) == ON_DISTILLED
        assert again.state.active_tier == "distilled"
        assert any("routing object" in r for r in again.repaired)


def test_a_split_read_off_the_route_resumes_as_a_restore() -> None:
    status = status_of(on_distilled(), weights="broken")
    restored = restore_state(POLICY, status, NOW, observed={"primary": 50, "distilled": 50, "popular": 0})
    state = restored.state
    assert (state.active_tier, state.restore_tier, state.restore_step) == ("distilled", "primary", 1)


def test_active_tier_that_disagrees_with_the_weights_follows_the_weights() -> None:
    restored = restore_state(POLICY, status_of(on_distilled(), activeTier="primary"), NOW)
    assert restored.state.active_tier == "distilled" and dict(restored.state.weights) == ON_DISTILLED
    assert restored.routing_known and any("activeTier" in r for r in restored.repaired)


def test_the_repairs_make_one_warning_record() -> None:
    restored = restore_state(POLICY, status_of(on_distilled(), paused="no", lastTransitionMs=-5), NOW)
    record = restored.record
    assert record is not None and record.reason == "StateRepaired"
    assert all(r in record.message for r in restored.repaired) and len(restored.repaired) == 2


@pytest.mark.parametrize("garbage", [
    5, "engine", [], {"weights": [{"tier": 1, "weight": "x"}]}, {"tiers": "x", "activeTier": 3},
    {"restore": [1]}, {"restore": {"tier": "nope", "step": "x"}}, {"creepBuckets": [{"bucket": "x"}]},
    {"weights": [{"tier": "primary", "weight": True}]}, {"pinnedTier": 9, "lastTransitionMs": 1.5},
])
def test_garbage_is_repaired_never_raised(garbage: Any) -> None:
    restored = restore_state(POLICY, garbage, NOW)
    assert restored.repaired
    assert [n for n, _ in restored.state.weights] == list(TIERS)
    decide(POLICY, obs(), restored.state, NOW)


def test_a_fallback_added_mid_incident_keeps_traffic_where_it_is() -> None:
    state = on_distilled()
    longer = dataclasses.replace(POLICY, tiers=(*POLICY.tiers, Tier("cached", "cached-deploy", "cached-svc")))
    samples = obs(primary={"p99": 400.0})
    samples = Samples({**samples.readings, "cached": samples.readings["popular"]})
    # In memory (a spec edit while the operator runs) and through status (an edit while it was down):
    for carried in (state, restore_state(longer, status_of(state), NOW).state):
        d = decide(longer, samples, carried, NOW)
        assert dict(d.weights) == {**ON_DISTILLED, "cached": 0}
        assert not [a for a in d.audit if a.from_tier or a.to_tier]
    assert restore_state(longer, status_of(state), NOW).repaired == ()


def test_a_fallback_inserted_above_the_serving_one_is_restored_to_never_the_failing_primary() -> None:
    inserted = dataclasses.replace(POLICY, tiers=(POLICY.tiers[0], Tier("fast", "fast", "fast"), *POLICY.tiers[1:]))
    samples = obs(primary={"p99": 400.0})
    samples = Samples({**samples.readings, "fast": samples.readings["popular"]})
    d = decide(inserted, samples, restore_state(inserted, status_of(on_distilled()), NOW).state, NOW)
    assert dict(d.weights) == {"primary": 0, "fast": 10, "distilled": 90, "popular": 0}
    assert [a.reason for a in d.audit] == ["RestoreStep"]


def test_removing_the_serving_fallback_moves_on_at_once_never_back_to_a_failing_primary() -> None:
    shorter = dataclasses.replace(POLICY, tiers=POLICY.tiers[:1] + POLICY.tiers[2:])
    status = status_of(on_distilled(), lastTransitionMs=round(NOW * 1000) - 1000)  # moved 1 s ago
    restored = restore_state(shorter, status, NOW)
    assert not restored.routing_known  # the traffic was on a tier the spec no longer has
    d = decide(shorter, obs(primary={"p99": 400.0}), restored.state, NOW)
    assert d.weights == (("primary", 0), ("popular", 100))  # no minDwell wait on a primary known tripped


def test_restoring_twice_is_stable() -> None:
    restored = restore_state(POLICY, status_of(on_distilled(), paused="no", lastTransitionMs=10**15), NOW)
    again = restore_state(POLICY, state_to_status(restored.state), NOW)
    assert again.state == restored.state and again.repaired == ()


def probed_twice() -> State:
    """A real state: the primary failed two probes in a row (Service routing, minDwell 0) and is tripped."""
    state = closed_loop(SERVICE, NOW - 300, NOW - 200, lambda t, share: t >= NOW - 290)[-1].decision.state
    assert state.tiers[0].failed_probes == 2 and state.tiers[0].tripped
    return state


def test_failed_probes_survive_the_status_round_trip() -> None:
    state = probed_twice()
    status = status_of(state)
    assert status["tiers"][0]["failedProbes"] == 2
    assert "failedProbes" not in status["tiers"][1]  # omitted at 0, like the other optional fields
    assert state_from_status(status) == state
    restored = restore_state(SERVICE, status, NOW - 200)
    assert (restored.state, restored.repaired) == (state, ())


def test_a_probe_under_way_survives_the_status_round_trip() -> None:
    steps = closed_loop(SERVICE, NOW - 300, NOW, lambda t, share: t >= NOW - 290)
    probing = next(s.decision.state for s in steps if s.decision.state.tiers[0].probing)
    status = status_of(probing)
    assert status["tiers"][0]["probing"] is True
    assert state_from_status(status) == probing
    assert restore_state(SERVICE, status, NOW).state == probing


def test_a_status_from_before_the_probe_backoff_reads_no_failed_probes() -> None:
    status = status_of(probed_twice())
    for tier in status["tiers"]:
        tier.pop("failedProbes", None)
        tier.pop("probing", None)
    restored = restore_state(SERVICE, status, NOW - 200)
    assert restored.repaired == ()
    assert [(t.failed_probes, t.probing) for t in restored.state.tiers] == [(0, False)] * 3
    assert state_from_status(status).tiers[0].failed_probes == 0


@pytest.mark.parametrize(("value", "kept", "note"), [
    (-1, 0, "tiers[primary].failedProbes -1 is outside 0..4: clamped"),
    (10**12, 4, "tiers[primary].failedProbes 1000000000000 is outside 0..4: clamped"),
    ("2", 0, "tiers[primary].failedProbes is '2': dropped"),
    (True, 0, "tiers[primary].failedProbes is True: dropped"),
    (2.0, 0, "tiers[primary].failedProbes is 2.0: dropped"),
])
def test_a_hand_edited_failed_probe_count_is_repaired_with_a_note(value: Any, kept: int, note: str) -> None:
    status = status_of(probed_twice())
    status["tiers"][0]["failedProbes"] = value
    restored = restore_state(SERVICE, status, NOW - 200)
    assert restored.state.tiers[0].failed_probes == kept
    assert restored.repaired == (note,)
    assert dict(restored.state.weights) == ON_DISTILLED and restored.routing_known


def test_a_clear_streak_is_clamped_to_what_the_tier_needs_now() -> None:
    status = status_of(probed_twice())
    status["tiers"][0]["clearStreak"] = 12  # recoverAfter 3 x 2^2: within bounds
    assert restore_state(SERVICE, status, NOW - 200).repaired == ()
    status["tiers"][0]["clearStreak"] = 13
    restored = restore_state(SERVICE, status, NOW - 200)
    assert restored.state.tiers[0].clear_streak == 12
    assert restored.repaired == ("tiers[primary].clearStreak 13 is outside 0..12: clamped",)


def test_a_hand_edited_probing_flag_is_dropped_with_a_note() -> None:
    status = status_of(probed_twice())
    status["tiers"][0]["probing"] = "yes"
    restored = restore_state(SERVICE, status, NOW - 200)
    assert not restored.state.tiers[0].probing
    assert restored.repaired == ("tiers[primary].probing is 'yes': dropped",)
