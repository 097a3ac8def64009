"""Governance as timelines: capacity fit, scale plans, the known-good revision and rollbacks, with the
outcomes the shell would report fed back in, as the operator and the backtest run them."""
from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import pytest

from understudy.engine import CreepAction, Decision, Mode, Policy, Reading, Samples, SignalKind, Comparison
from understudy.engine import Tier, Trigger, decide, initial_state
from understudy.audit.reasons import REASONS
from understudy.engine.governance import (
    GOVERNANCE_REASONS,
    OUTCOME_TIMEOUT_MS,
    RETRY_FIRST_MS,
    Facts,
    Governance,
    TierCapacity,
    Workload,
    capacity_fit,
    govern,
)
from understudy.engine.governance_state import GovernanceState, KnownGood, Phase, ScaledTier
from understudy.engine.intents import IntentOutcome, RollbackIntent, ScaleIntent

T0 = 1_800_000_000.0
WINDOW = 600.0
POLICY = Policy(
    tiers=(Tier("primary", "recommender-large", "large"), Tier("distilled", "recommender-small", "small")),
    triggers=(Trigger("errors", SignalKind.ERROR_RATIO, Comparison.ABOVE, 0.05),),
    creep_window=WINDOW, creep_max_ratio=0.1, creep_action=CreepAction.ROLLBACK_PRIMARY,
)
CAPACITY = {"distilled": TierCapacity(5.0, scale_on_activate=True, max_replicas=12)}
BASE = decide(POLICY, Samples({}), initial_state(POLICY), T0)


def shaped(primary: int = 100, creep: bool = False, tripped: bool = False, short: bool = False,
           restoring: bool = False, ratio: float = 0.0, policy: Policy = POLICY) -> Decision:
    """A decision of the given shape (built from a real one, so fields `decide` adds stay consistent)."""
    weights = (("primary", primary), ("distilled", 100 - primary))
    tiers = (replace(BASE.state.tiers[0], tripped=tripped), replace(BASE.state.tiers[1], capacity_short=short))
    state = replace(BASE.state, weights=weights, tiers=tiers, creep_exceeded=creep,
                    active_tier="primary" if primary == 100 else "distilled",
                    restore_tier="primary" if restoring else None)
    return replace(BASE, state=state, weights=weights, active_tier=state.active_tier, creep_exceeded=creep,
                   fallback_ratio=ratio, route=policy.mode is Mode.ENFORCE and not policy.paused)


def facts(revision: str = "2", desired: int = 2, ready: int | None = None, load: float | None = 40.0,
          generation: int = 1) -> Facts:
    return Facts({"primary": Workload(4, 4, revision),
                  "distilled": Workload(desired if ready is None else ready, desired, "1")}, load, generation)


def outcome(intent: ScaleIntent | RollbackIntent, done: bool = True, permanent: bool = False,
            message: str = "", at: float = T0) -> IntentOutcome:
    return IntentOutcome(intent, done, permanent, message, at)


def reasons(g: Governance) -> list[str]:
    return [r.reason for r in g.audit]


GOOD = GovernanceState(known_good=KnownGood("1", 1000 * int(T0 - 7200)))
"""Revision 1 known-good two hours before T0; the primary now runs revision 2."""


def run(policy: Policy, steps: Sequence[tuple[Decision, Facts]], state: GovernanceState = GOOD,
        start: float = T0, every: float = 5.0, answer: bool | None = True, permanent: bool = False,
        ) -> list[Governance]:
    """Govern one evaluation per step, answering each step's intents with done=answer at the next one."""
    out: list[Governance] = []
    outcomes: list[IntentOutcome] = []
    for k, (decision, known) in enumerate(steps):
        now = start + k * every
        g = govern(policy, CAPACITY, decision, known, state, outcomes, now)
        out.append(g)
        state = g.state
        outcomes = [] if answer is None else [
            outcome(i, done=answer, permanent=permanent, message="the API server said no", at=now + 1)
            for i in g.intents]
    return out


# -- capacity fit -------------------------------------------------------------------------------------------


def test_a_fallback_fits_when_its_ready_replicas_carry_the_load() -> None:
    assert capacity_fit(CAPACITY, facts(desired=8, load=40.0)) == {"distilled": True}
    assert capacity_fit(CAPACITY, facts(desired=8, ready=7, load=40.0)) == {"distilled": False}


def test_fractional_capacity_for_slow_models() -> None:
    slow = {"distilled": TierCapacity(0.2)}
    assert capacity_fit(slow, facts(desired=5, load=1.0)) == {"distilled": True}
    assert capacity_fit(slow, facts(desired=4, load=1.0)) == {"distilled": False}


def test_an_absent_deployment_has_no_capacity() -> None:
    assert capacity_fit(CAPACITY, Facts({}, 1.0)) == {"distilled": False}


@pytest.mark.parametrize("load", [None, float("inf"), float("nan"), -1.0])
def test_an_unknown_or_impossible_load_judges_nobody(load: float | None) -> None:
    assert capacity_fit(CAPACITY, facts(load=load)) == {}


# -- scale plan ---------------------------------------------------------------------------------------------


def test_a_capacity_short_fallback_is_scaled_up_and_audited_when_done() -> None:
    first, second = run(POLICY, [(shaped(primary=0, short=True), facts(desired=2, load=40.0)),
                                 (shaped(primary=0, short=True), facts(desired=8, load=40.0))])
    (intent,) = first.intents
    assert intent == ScaleIntent("distilled", "recommender-small", 8, 2, "ScaledUp",
                                 "to carry 40 requests/s at 5 per replica")
    assert first.state.scaled == (ScaledTier("distilled", 2, 8),)
    assert reasons(first) == [] and second.intents == ()
    assert reasons(second) == ["ScaledUp"]
    assert second.audit[0].message == ("scaled recommender-small from 2 to 8 replicas, to carry 40 requests/s at "
                                       "5 per replica")
    assert second.state.scaling == ()


def test_a_slow_model_is_scaled_for_a_fraction_of_a_request_per_second() -> None:
    slow = {"distilled": TierCapacity(0.01, scale_on_activate=True, max_replicas=12)}
    g = govern(POLICY, slow, shaped(primary=0, short=True), facts(desired=1, load=0.043), GOOD, [], T0)
    assert [(i.replicas, i.message) for i in g.intents if isinstance(i, ScaleIntent)] == [
        (5, "to carry 0.043 requests/s at 0.01 per replica")]


def test_a_scale_up_never_passes_max_replicas() -> None:
    (g,) = run(POLICY, [(shaped(primary=0, short=True), facts(desired=2, load=1e300))])
    assert [i.replicas for i in g.intents if isinstance(i, ScaleIntent)] == [12]


@pytest.mark.parametrize("load", [float("inf"), float("nan"), -5.0, None])
def test_no_scale_from_an_unknown_load(load: float | None) -> None:
    """An +Inf request count used to raise OverflowError in the operator's cycle (math.ceil)."""
    (g,) = run(POLICY, [(shaped(primary=0, short=True), facts(desired=2, load=load))])
    assert g.intents == () and g.audit == ()


def test_a_fallback_with_capacity_is_not_scaled_unless_decide_skipped_it() -> None:
    (g,) = run(POLICY, [(shaped(primary=0), facts(desired=2, load=40.0))])
    assert g.intents == ()


def test_scaled_back_once_traffic_is_settled_on_the_primary() -> None:
    state = replace(GOOD, scaled=(ScaledTier("distilled", 2, 8),))
    restoring, settled, after = run(POLICY, [(shaped(primary=100, restoring=True), facts(desired=8)),
                                             (shaped(primary=100), facts(desired=8)),
                                             (shaped(primary=100), facts(desired=2))], state=state)
    assert restoring.intents == ()
    assert settled.intents == (ScaleIntent("distilled", "recommender-small", 2, 8, "ScaledDown",
                                           "traffic is back on the primary"),)
    assert reasons(after) == ["ScaledDown"] and after.state.scaled == () and after.intents == ()


def test_a_scale_back_leaves_a_deployment_someone_else_resized() -> None:
    state = replace(GOOD, scaled=(ScaledTier("distilled", 2, 8),))
    first, second = run(POLICY, [(shaped(), facts(desired=5)), (shaped(), facts(desired=5))], state=state)
    assert first.intents == () and reasons(first) == ["ScaleBackSkipped"]
    assert "has 5 replicas, not the 8 the operator set" in first.audit[0].message
    assert first.state.scaled == () and second.audit == ()


def test_a_hand_edited_size_to_return_to_never_scales_up() -> None:
    """status.scaledTiers said 5000 (security review M2): a scale-back only ever decreases."""
    state = replace(GOOD, scaled=(ScaledTier("distilled", 5000, 8),))
    (g,) = run(POLICY, [(shaped(), facts(desired=8))], state=state)
    assert all(i.replicas <= i.expected for i in g.intents if isinstance(i, ScaleIntent))


def test_scale_failures_are_one_episode_retried_with_back_off() -> None:
    short = (shaped(primary=0, short=True), facts(desired=2))
    steps = [short] * 8
    results = run(POLICY, steps, every=5.0, answer=False)
    assert sum(reasons(g).count("ScaleFailed") for g in results) == 1
    issued = [k for k, g in enumerate(results) if g.intents]
    # issued at 0; failure reported at 1 (at T0 + 1 s): retried RETRY_FIRST_MS later, then twice that later
    assert issued[0] == 0 and issued[1] == 1 + RETRY_FIRST_MS // 5000
    assert "tried again with back-off" in results[1].audit[0].message
    assert results[1].state.scaled == ()  # the record made when the intent went out is undone


def test_a_refused_scale_is_not_retried_until_the_spec_changes() -> None:
    steps = [(shaped(primary=0, short=True), facts(desired=2))] * 30
    results = run(POLICY, steps, answer=False, permanent=True)
    assert [k for k, g in enumerate(results) if g.intents] == [0]
    assert sum(reasons(g).count("ScaleFailed") for g in results) == 1
    edited = govern(POLICY, CAPACITY, shaped(primary=0, short=True), facts(desired=2, generation=2),
                    results[-1].state, [], T0 + 200)
    assert len(edited.intents) == 1


def test_an_outcome_that_never_comes_is_waited_for_then_the_intent_is_issued_again() -> None:
    every = 5.0
    steps = [(shaped(primary=0, short=True), facts(desired=2))] * (OUTCOME_TIMEOUT_MS // 5000 + 2)
    results = run(POLICY, steps, every=every, answer=None)
    assert [k for k, g in enumerate(results) if g.intents] == [0, OUTCOME_TIMEOUT_MS // 5000]


# -- known-good revision ------------------------------------------------------------------------------------


def test_a_revision_is_not_known_good_on_first_sight() -> None:
    """The old rule trusted the first revision at once (code review S7)."""
    g = govern(POLICY, {}, shaped(), facts(revision="1"), GovernanceState(), [], T0)
    assert g.state.known_good is None
    assert g.state.primary_revision is not None and g.state.primary_revision.serving_since_ms == 1000 * int(T0)


def test_known_good_after_a_whole_creep_window_carrying_all_traffic() -> None:
    state = GovernanceState()
    for k in range(int(WINDOW / 60) + 1):
        g = govern(POLICY, {}, shaped(), facts(revision="1"), state, [], T0 + 60 * k)
        state = g.state
    assert state.known_good == KnownGood("1", 1000 * int(T0 + WINDOW))


@pytest.mark.parametrize("interruption", [
    shaped(primary=90, restoring=True), shaped(primary=0), shaped(tripped=True), shaped(creep=True)])
def test_falling_back_restarts_the_count(interruption: Decision) -> None:
    state = govern(POLICY, {}, shaped(), facts(revision="1"), GovernanceState(), [], T0).state
    state = govern(POLICY, {}, interruption, facts(revision="1"), state, [], T0 + 300).state
    state = govern(POLICY, {}, shaped(), facts(revision="1"), state, [], T0 + 310).state
    assert govern(POLICY, {}, shaped(), facts(revision="1"), state, [], T0 + WINDOW + 5).state.known_good is None
    assert govern(POLICY, {}, shaped(), facts(revision="1"), state, [], T0 + 310 + WINDOW).state.known_good \
        == KnownGood("1", 1000 * int(T0 + 310 + WINDOW))


def test_a_new_revision_starts_over_and_the_old_one_stays_the_target_meanwhile() -> None:
    state = govern(POLICY, {}, shaped(), facts(revision="2"), GOOD, [], T0).state
    assert state.known_good == GOOD.known_good
    assert state.primary_revision is not None and state.primary_revision.revision == "2"
    later = govern(POLICY, {}, shaped(), facts(revision="2"), state, [], T0 + WINDOW).state
    assert later.known_good == KnownGood("2", 1000 * int(T0 + WINDOW))


# -- rollback -----------------------------------------------------------------------------------------------


def test_a_rollback_is_due_when_creep_exceeds_the_budget() -> None:
    creeping = (shaped(primary=0, creep=True, ratio=0.25), facts(revision="2", load=None))
    first, second, third = run(POLICY, [creeping] * 3)
    (intent,) = first.intents
    assert intent == RollbackIntent("recommender-large", "1", "the fallback ratio 0.250 is over the creep budget "
                                    "0.1; revision 1 is known-good since 2027-01-15T06:00:00Z")
    assert reasons(second) == ["RolledBack"] and second.intents == ()
    assert second.audit[0].message.startswith("rolled recommender-large back to revision 1: the fallback ratio")
    assert second.state.known_good is None  # revision 1 is renumbered by the rollback: it must earn it again
    assert second.state.rollback is not None and second.state.rollback.attempt.phase is Phase.DONE
    assert third.intents == () and third.audit == ()


def test_no_rollback_for_alert_or_freeze() -> None:
    for action in (CreepAction.ALERT, CreepAction.FREEZE):
        (g,) = run(replace(POLICY, creep_action=action), [(shaped(primary=0, creep=True), facts(load=None))])
        assert g.intents == () and g.audit == ()


def test_no_known_good_revision_is_reported_once_per_episode() -> None:
    creeping = (shaped(primary=0, creep=True), facts(load=None))
    results = run(POLICY, [creeping] * 5 + [(shaped(primary=0), facts(load=None))] + [creeping] * 2,
                  state=GovernanceState())
    assert [reasons(g) for g in results] == [["RollbackFailed"], [], [], [], [], [], ["RollbackFailed"], []]
    assert "no known-good revision of recommender-large is on record" in results[0].audit[0].message
    assert all(g.intents == () for g in results)


def test_the_current_revision_being_the_known_good_one_is_reported_once() -> None:
    results = run(POLICY, [(shaped(primary=0, creep=True), facts(revision="1", load=None))] * 3)
    assert [reasons(g) for g in results] == [["RollbackFailed"], [], []]
    assert "the current revision 1 of recommender-large is itself the last known-good one" in results[0].audit[0].message


def test_a_transient_rollback_failure_is_retried_with_back_off_and_reported_once() -> None:
    creeping = (shaped(primary=0, creep=True), facts(load=None))
    results = run(POLICY, [creeping] * 12, answer=False)
    issued = [k for k, g in enumerate(results) if g.intents]
    assert issued[:2] == [0, 1 + RETRY_FIRST_MS // 5000]
    assert sum(reasons(g).count("RollbackFailed") for g in results) == 1
    assert "tried again with back-off while the creep budget stays exceeded" in results[1].audit[0].message
    # and the retry succeeds
    state = results[issued[1]].state
    done = govern(POLICY, CAPACITY, creeping[0], creeping[1], state,
                  [outcome(results[issued[1]].intents[0])], T0 + 5 * (issued[1] + 1))
    assert reasons(done) == ["RolledBack"]


def test_a_refused_rollback_is_reported_once_and_not_retried_in_the_episode() -> None:
    creeping = (shaped(primary=0, creep=True), facts(load=None))
    results = run(POLICY, [creeping] * 40, answer=False, permanent=True)
    assert [k for k, g in enumerate(results) if g.intents] == [0]
    assert sum(reasons(g).count("RollbackFailed") for g in results) == 1
    assert "not tried again while the creep budget stays exceeded, unless the spec changes" \
        in results[1].audit[0].message
    edited = govern(POLICY, CAPACITY, creeping[0], facts(load=None, generation=2), results[-1].state, [], T0 + 300)
    assert len(edited.intents) == 1


def test_a_rollback_failure_after_the_episode_ended_is_still_reported() -> None:
    (first,) = run(POLICY, [(shaped(primary=0, creep=True), facts(load=None))])
    ended = govern(POLICY, CAPACITY, shaped(primary=0), facts(load=None), first.state,
                   [outcome(first.intents[0], done=False, message="forbidden")], T0 + 5)
    assert reasons(ended) == ["RollbackFailed"] and ended.state.rollback is None


# -- Observe mode and pause ---------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", [replace(POLICY, mode=Mode.OBSERVE), replace(POLICY, paused=True)],
                         ids=["observe", "paused"])
def test_observe_and_pause_never_act_and_say_what_they_would_have_done(policy: Policy) -> None:
    steps = [(shaped(primary=0, creep=True, short=True, policy=policy), facts(desired=2))] * 4
    results = run(policy, steps)
    assert all(g.intents == () for g in results)
    assert [reasons(g) for g in results] == [["ActionWithheld", "ActionWithheld"], [], [], []]
    scale, rollback = (r.message for r in results[0].audit)
    held = "mode: Observe" if policy.mode is Mode.OBSERVE else "spec.override.paused"
    assert scale == f"would scale recommender-small from 2 to 8 replicas to carry 40 requests/s at 5 per replica ({held})"
    assert rollback.startswith("would roll recommender-large back to revision 1: the fallback ratio")
    assert rollback.endswith(f"({held})")


def test_a_scale_back_waits_out_a_pause() -> None:
    paused = replace(POLICY, paused=True)
    state = replace(GOOD, scaled=(ScaledTier("distilled", 2, 8),))
    held = run(paused, [(shaped(policy=paused), facts(desired=8))] * 2, state=state)
    assert [reasons(g) for g in held] == [["ActionWithheld"], []] and all(g.intents == () for g in held)
    resumed = govern(POLICY, CAPACITY, shaped(), facts(desired=8, generation=2), held[-1].state, [], T0 + 10)
    assert [i.replicas for i in resumed.intents if isinstance(i, ScaleIntent)] == [2] and len(resumed.intents) == 1


def test_every_governance_reason_is_published_with_a_kind_of_its_own() -> None:
    assert set(GOVERNANCE_REASONS) <= REASONS.keys()
