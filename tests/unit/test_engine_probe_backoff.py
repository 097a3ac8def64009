"""The probe backoff: a tier that keeps failing the probe of a restore is probed less and less often.

A tripped tier without traffic reads clear (no requests, no evidence against it), recovers and is probed
by the first restore step. Each consecutive failed probe doubles the clear evaluations it needs before the
next one (recoverAfter x 2^n, n capped); serving as the anchor with a clear reading ends the backoff.

These timelines close the loop the way a real model does: the tier under test reads breaching only while
it has traffic (a broken model answers badly), and too few requests to judge while it has none.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

from tests.unit.test_engine_scenarios import INSUFFICIENT, POLICY, TIERS, Step, at, count, obs
from understudy.engine import Policy, Samples, State, decide, initial_state
from understudy.engine import plan as engine_plan

IDLE = {"p99": INSUFFICIENT, "errors": INSUFFICIENT}
BROKEN = {"p99": 400.0}

SERVICE = dataclasses.replace(POLICY, traffic_split=False, min_dwell=0.0)
"""Service routing: every probe (and every restore) is one step of 100%. minDwell 0 so that the gaps
between probes are the clear evaluations alone (recoverAfter 3, tripAfter 2, every 5 s)."""
SPLIT = dataclasses.replace(POLICY, min_dwell=0.0)
"""Istio or Gateway API routing: restore steps 10%, 50%, 100%."""


def closed_loop(policy: Policy, start: float, end: float, broken: Callable[[float, int], bool],
                state: State | None = None, every: float = 5.0,
                policy_at: Callable[[float], Policy] | None = None,
                ready: Callable[[float], dict[str, int]] | None = None) -> list[Step]:
    """Evaluate every `every` seconds; the primary's readings follow its share of the previous decision:
    none (too few requests) without traffic, breaching when `broken(t, share)`, healthy otherwise."""
    state = state or initial_state(policy)
    steps = []
    t = start
    while t < end:
        share = dict(state.weights)["primary"]
        primary = IDLE if share == 0 else BROKEN if broken(t, share) else {}
        samples = obs(primary=primary, ready=ready(t) if ready else None)
        p = policy_at(t) if policy_at else policy
        d = decide(p, samples, state, t)
        steps.append(Step(t, dict(d.weights), tuple(a.reason for a in d.audit), d))
        state = d.state
        t += every
    return steps


def times(steps: list[Step], reason: str) -> list[float]:
    return [s.t for s in steps if reason in s.reasons]


def message(step: Step, reason: str) -> str:
    return next(a.message for a in step.decision.audit if a.reason == reason)


def primary(step: Step) -> tuple[int, bool]:
    """(failed probes, probing) of the primary after this step."""
    ts = step.decision.state.tiers[0]
    return ts.failed_probes, ts.probing


def gaps(steps: list[Step], probe: str, back: str) -> list[int]:
    """Evaluations from each time traffic left the primary (`back`) to the next probe of it (`probe`)."""
    probes, backs = times(steps, probe), times(steps, back)
    return [round((next(p for p in probes if p > b) - b) / 5) for b in backs if any(p > b for p in probes)]


def test_a_primary_that_fails_every_probe_is_probed_at_doubling_gaps_up_to_the_cap() -> None:
    # Service routing: each probe hands the primary all traffic; it breaches twice and trips, traffic falls
    # back. Without the backoff, it would get everything again every recoverAfter (3) evaluations.
    steps = closed_loop(SERVICE, 0, 1300, lambda t, share: t >= 10)
    assert gaps(steps, "Restored", "FallbackActivated")[:7] == [3, 6, 12, 24, 48, 48, 48]
    assert engine_plan.PROBE_BACKOFF_CAP == 4  # 48 = recoverAfter 3 x 2^4
    first, second = times(steps, "Restored")[:2]
    assert (first, second) == (30, 70)
    # Each probe lasts tripAfter (2) evaluations; the trip says it was a failed probe and when the next comes.
    tripped = [s for s in steps if "TierTripped" in s.reasons]
    assert [s.t for s in tripped][:3] == [15, 40, 80]
    assert "next probe" not in message(tripped[0], "TierTripped")  # the first trip ends no probe
    assert message(tripped[1], "TierTripped") == (
        "primary: p99 400 above 250 for 2 evaluations; probe failed (1 in a row): next probe after 6 clear "
        "evaluations")
    assert message(tripped[2], "TierTripped").endswith("probe failed (2 in a row): next probe after 12 clear "
                                                       "evaluations")
    recovered = [s for s in steps if "TierRecovered" in s.reasons]
    assert message(recovered[0], "TierRecovered") == "primary: clear for 3 evaluations"
    assert message(recovered[2], "TierRecovered") == (
        "primary: clear for 12 evaluations (recoverAfter 3 doubled for each of 2 failed probes in a row)")
    # The counter stops at the cap: the status does not grow with the incident.
    assert max(primary(s)[0] for s in steps) == engine_plan.PROBE_BACKOFF_CAP
    assert all(s.decision.state.tiers[0].clear_streak <= 48 for s in steps)


def test_a_probe_that_fails_at_its_first_step_is_aborted_and_says_when_the_next_comes() -> None:
    steps = closed_loop(SPLIT, 0, 800, lambda t, share: t >= 10)
    assert gaps(steps, "RestoreStep", "RestoreAborted")[:5] == [6, 12, 24, 48, 48]
    aborted = [s for s in steps if "RestoreAborted" in s.reasons]
    assert message(aborted[0], "RestoreAborted") == (
        "primary failed during restore (p99 400 above 250); all traffic to distilled; next probe after 6 clear "
        "evaluations")
    assert message(aborted[1], "RestoreAborted").endswith("next probe after 12 clear evaluations")
    assert [s.weights["primary"] for s in steps if "RestoreStep" in s.reasons][:5] == [10] * 5  # never more


def test_a_relapse_at_full_traffic_before_a_clear_evaluation_is_a_failed_probe() -> None:
    # Healthy at 10% and 50%, broken with all the traffic: the restore reaches Restored, but the probe
    # is not over until the primary reads clear with traffic anchored on it; it trips first.
    steps = closed_loop(SPLIT, 0, 200, lambda t, share: share == 100 and t >= 10)
    assert times(steps, "Restored")[:1] == [40]
    assert times(steps, "TierTripped")[:2] == [15, 50]
    assert primary(at(steps, 50)) == (1, False)
    assert times(steps, "RestoreStep")[2] == 80  # 6 clear evaluations after the fallback at 50


def test_a_restore_that_holds_resets_the_backoff_for_the_next_incident() -> None:
    # Broken until 100: probes at 30 and 70 fail; the one at 140 (12 clear evaluations later) holds, and
    # the primary's first clear evaluation with all traffic ends the backoff. A new incident at 300 is
    # probed after recoverAfter (3) again, not after 24.
    steps = closed_loop(SERVICE, 0, 500, lambda t, share: 10 <= t < 100 or t >= 300)
    assert times(steps, "Restored")[:4] == [30, 70, 140, 320]
    assert primary(at(steps, 140)) == (2, True)  # probing, all traffic, no verdict yet
    assert primary(at(steps, 145)) == (0, False)  # clear with traffic anchored on it: proven
    assert message(at(steps, 320), "TierRecovered") == "primary: clear for 3 evaluations"
    assert primary(at(steps, 330)) == (1, False)


def test_a_restore_aborted_for_want_of_pods_is_no_failed_probe() -> None:
    # The primary is healthy again, but its Deployment loses its ready replicas during the 10% step:
    # the restore is aborted (the tier cannot serve), not failed (nothing showed it unhealthy).
    def ready(t: float) -> dict[str, int]:
        return {"primary": 0 if 35 <= t < 60 else 2, "distilled": 2, "popular": 2}

    steps = closed_loop(SPLIT, 0, 200, lambda t, share: 10 <= t < 20, ready=ready)
    assert times(steps, "RestoreAborted") == [35]
    assert "no ready replicas" in message(at(steps, 35), "RestoreAborted")
    assert "next probe" not in message(at(steps, 35), "RestoreAborted")
    assert all(primary(s)[0] == 0 for s in steps)
    assert not primary(at(steps, 40))[1]  # the probe ended without a verdict
    assert times(steps, "RestoreStep")[1] == 60  # back at once when the pods are: not tripped, nothing to wait


def test_a_pin_is_no_verdict_but_clear_readings_with_the_pinned_traffic_end_the_backoff() -> None:
    # Two failed probes (n = 2), then a person pins the primary while it is still broken: the pin itself
    # resets nothing. Fixed at 150, it reads clear with all the (pinned) traffic: the backoff ends.
    def policy_at(t: float) -> Policy:
        return dataclasses.replace(SERVICE, pinned_tier="primary") if 110 <= t < 200 else SERVICE

    steps = closed_loop(SERVICE, 0, 260, lambda t, share: 10 <= t < 150, policy_at=policy_at)
    assert primary(at(steps, 105))[0] == 2
    assert primary(at(steps, 145))[0] == 2
    assert primary(at(steps, 150))[0] == 0


def test_the_counter_is_carried_across_an_edit_of_the_tier_list_by_name() -> None:
    steps = closed_loop(SERVICE, 0, 100, lambda t, share: t >= 10)
    state = steps[-1].decision.state
    assert state.tiers[0].failed_probes == 2
    longer = dataclasses.replace(SERVICE, tiers=(SERVICE.tiers[0], dataclasses.replace(SERVICE.tiers[1], name="fast"),
                                                 *SERVICE.tiers[1:]))
    samples = obs(primary=IDLE)
    samples = Samples({**samples.readings, "fast": samples.readings["distilled"]})
    d = decide(longer, samples, state, 100.0)
    assert [t.name for t in d.state.tiers] == ["primary", "fast", *TIERS[1:]]
    assert d.state.tiers[0].failed_probes == 2 and d.state.tiers[1].failed_probes == 0
    assert count(steps, "TierTripped") == 3


def test_the_wait_never_exceeds_a_day_of_evaluations() -> None:
    # recoverAfter 1000 x 30 s is 8h20m, within the API's 24h bound; 16 x that would be more than five days.
    # The backoff stops at a day of evaluations: 2880 at 30 s.
    slow = dataclasses.replace(SERVICE, recover_after=1000, interval=30.0)
    assert engine_plan.plan_for(slow).clear_needed(0) == 1000
    assert engine_plan.plan_for(slow).clear_needed(1) == 2000
    assert engine_plan.plan_for(slow).clear_needed(2) == 2880
    assert engine_plan.plan_for(slow).clear_needed(engine_plan.PROBE_BACKOFF_CAP) == 2880
    assert engine_plan.plan_for(dataclasses.replace(slow, recover_after=2000, interval=40.0)).clear_needed(3) == 2160
