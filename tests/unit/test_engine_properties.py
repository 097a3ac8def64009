"""Properties of `decide` over random valid policies and random sample streams (hypothesis)."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from understudy.engine import (
    AUDIT_REASONS,
    INSUFFICIENT,
    MISSING,
    Comparison,
    CreepBucket,
    Decision,
    MissingData,
    Mode,
    Policy,
    Reading,
    ReadingStatus,
    RestoreApproval,
    Samples,
    SignalKind,
    State,
    Tier,
    TierState,
    Trigger,
    decide,
    initial_state,
    restore_state,
    state_from_status,
    state_to_status,
)
from understudy.engine.plan import PROBE_BACKOFF_CAP, plan_for

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
START = 1_700_000_000.0
NAMES = ("primary", "fb1", "fb2", "fb3")


@st.composite
def triggers(draw: st.DrawFn, tiers: tuple[str, ...]) -> tuple[Trigger, ...]:
    out = []
    for k in range(draw(st.integers(1, 3))):
        applies = draw(st.one_of(st.just(frozenset()), st.frozensets(st.sampled_from(tiers), min_size=1)))
        out.append(Trigger(
            name=f"t{k}",
            kind=draw(st.sampled_from(list(SignalKind))),
            comparison=draw(st.sampled_from(list(Comparison))),
            threshold=draw(st.sampled_from([0.05, 0.5, 1.0, 250.0])),
            applies_to=applies,
        ))
    return tuple(out)


@st.composite
def policies(draw: st.DrawFn, overrides: bool = False) -> Policy:
    """Random valid policies; pins and pauses only when `overrides`, since they may move at once. Restores
    need an approval in some (a given one, at a random time, or none)."""
    tiers = NAMES[: draw(st.integers(1, 4))]
    steps = tuple(sorted(draw(st.sets(st.integers(1, 100), min_size=1, max_size=4))))
    return Policy(
        tiers=tuple(Tier(n, n, n) for n in tiers),
        triggers=draw(triggers(tiers)),
        mode=draw(st.sampled_from(list(Mode))),
        trip_after=draw(st.integers(1, 4)),
        recover_after=draw(st.integers(1, 6)),
        restore_steps=steps,
        min_dwell=draw(st.sampled_from([0.0, 5.0, 10.0, 30.0, 60.0])),
        on_missing_data=draw(st.sampled_from(list(MissingData))),
        when_all_breached=draw(st.one_of(st.none(), st.sampled_from(tiers))),
        creep_max_ratio=draw(st.sampled_from([0.0, 0.1, 0.5])),
        creep_window=draw(st.sampled_from([60.0, 600.0, 86400.0])),
        pinned_tier=draw(st.one_of(st.none(), st.sampled_from(tiers))) if overrides else None,
        paused=draw(st.booleans()) if overrides else False,
        restore_approval=draw(st.sampled_from(list(RestoreApproval))),
        restore_approved_at=draw(st.one_of(st.none(), st.integers(0, 12_000).map(lambda s: START + s))),
        override_by=draw(st.sampled_from([None, "alice"])),
    )


GAPS = (1.0, 5.0, 5.0, 5.0, 10.0, 30.0, 300.0)
BACKWARDS = (-1.0, -5.0, -300.0)
"""Clock steps backwards: a leader change to a replica whose clock is behind, or a clock correction."""
FACTORS = (0.5, 0.9, 1.0, 1.1, 2.0, 0.5, 0.9, 1.1, 2.0)
"""Reading values as multiples of the threshold, so that streams cross it often."""
ODD = (math.nan, math.inf, -math.inf, -1.0)
"""Values a broken exporter or a strange query can yield (-1 as a multiple of the threshold)."""


def reading(byte: int, trigger: Trigger, messy: bool) -> Reading | None:
    """One reading from one random byte: mostly values around the threshold; when `messy`, also no data,
    NaN, infinities, negative values, and too few requests (with or without a count and a value)."""
    if not messy:
        return Reading.ok(trigger.threshold * FACTORS[byte % len(FACTORS)])
    k = byte % (len(FACTORS) + len(ODD) + 6)
    if k < len(FACTORS):
        return Reading.ok(trigger.threshold * FACTORS[k])
    k -= len(FACTORS)
    if k < len(ODD):
        return Reading.ok(ODD[k] if k < 3 else -trigger.threshold)
    return (MISSING, None, INSUFFICIENT, Reading.insufficient(6.0, trigger.threshold * 0.5),
            Reading.insufficient(math.nan, trigger.threshold * 2.0), Reading.insufficient(math.inf))[k - len(ODD)]


READY = (None, None, 2, 2, 1, 0)
"""Ready replicas of a tier's Deployment: mostly unknown or some, sometimes none."""


@st.composite
def streams(draw: st.DrawFn, policy: Policy, missing: bool = True, capacity: bool = True,
            max_size: int = 60, backwards: bool = True) -> list[tuple[float, Samples]]:
    """(now, samples) pairs decoded from one byte string: a single draw keeps generation cheap.

    With `missing`, readings may be absent or odd (see `reading`); with `capacity`, tiers may be short of
    capacity or known to have no ready replicas; with `backwards`, the clock sometimes steps back."""
    gaps = GAPS + BACKWARDS if backwards else GAPS
    width = 1 + len(policy.tier_names) * (len(policy.triggers) + 2)
    size = draw(st.integers(1, max_size))
    raw = draw(st.binary(min_size=size * width, max_size=size * width))
    now, out = START + draw(st.integers(0, 10_000)), []
    for row in (raw[k:k + width] for k in range(0, len(raw), width)):
        now += gaps[row[0] % len(gaps)]
        readings, caps, ready, at = {}, {}, {}, 1
        for tier in policy.tier_names:
            values = {t.name: reading(row[at + m], t, missing) for m, t in enumerate(policy.triggers)}
            readings[tier] = {k: v for k, v in values.items() if v is not None}
            at += len(policy.triggers)
            if capacity:
                caps[tier] = row[at] % 4 != 3
                if (count := READY[row[at + 1] % len(READY)]) is not None:
                    ready[tier] = count
            at += 2
        out.append((now, Samples(readings, caps, ready)))
    return out


@dataclass(frozen=True)
class Eval:
    before: State
    now: float
    samples: Samples
    decision: Decision


def run(policy: Policy, stream: list[tuple[float, Samples]],
        policy_at: list[Policy] | None = None) -> list[Eval]:
    state, out = initial_state(policy), []
    for k, (now, samples) in enumerate(stream):
        d = decide(policy_at[k] if policy_at else policy, samples, state, now)
        out.append(Eval(state, now, samples, d))
        state = d.state
    return out


def has_no_floats(v: object) -> bool:
    if isinstance(v, dict):
        return all(isinstance(k, str) and has_no_floats(x) for k, x in v.items())
    if isinstance(v, list):
        return all(has_no_floats(x) for x in v)
    return isinstance(v, (str, int, bool)) or v is None


@SETTINGS
@given(st.data())
def test_weights_are_whole_percent_summing_to_100_over_every_tier(data: st.DataObject) -> None:
    policy = data.draw(policies(overrides=True))
    stream = data.draw(streams(policy))
    pins = (None, *policy.tier_names)
    raw = data.draw(st.binary(min_size=len(stream), max_size=len(stream)))
    overrides = [replace(policy, pinned_tier=pins[b % len(pins)] if b & 0x80 else None, paused=b % 5 == 0)
                 for b in raw]
    for e, spec in zip(run(policy, stream, overrides), overrides):
        d = e.decision
        assert [n for n, _ in d.weights] == list(policy.tier_names)
        assert all(isinstance(w, int) and w >= 0 for _, w in d.weights)
        assert sum(w for _, w in d.weights) == 100
        assert d.weights == d.state.weights and d.active_tier == d.state.active_tier
        assert d.changed == (d.weights != e.before.weights)
        assert {a.reason for a in d.audit} <= set(AUDIT_REASONS)
        assert d.route == (policy.mode is Mode.ENFORCE and not spec.paused)


def routing_held(policy: Policy, before: State, samples: Samples) -> bool:
    """onMissingData=Hold and a serving tier that may still have pods has missing data and no breach
    (recomputed independently)."""
    if policy.on_missing_data is not MissingData.HOLD:
        return False
    for tier, weight in before.weights:
        if weight == 0 or samples.ready.get(tier) == 0:
            continue
        got = samples.readings.get(tier, {})
        applicable = [t for t in policy.triggers if t.applies(tier)]
        values = [got.get(t.name) for t in applicable]
        breach = any(r is not None and r.status is ReadingStatus.OK and r.value is not None
                     and t.breached_by(r.value) for t, r in zip(applicable, values))
        if not breach and any(r is None or r.status is ReadingStatus.MISSING
                              or r.status is ReadingStatus.OK and not (r.value == r.value) for r in values):
            return True
    return False


def fit_tiers(e: Eval) -> set[str]:
    """Tiers that may serve after the decision: not tripped, capacity not reported short, not known to
    have 0 ready replicas."""
    return {t.name for t in e.decision.state.tiers
            if not t.tripped and e.samples.capacity.get(t.name, True) and e.samples.ready.get(t.name) != 0}


def has_evidence(policy: Policy, tier: str, samples: Samples) -> bool:
    """Ready replicas reported above 0, or, readiness unknown, an applicable trigger with a reading."""
    if tier in samples.ready:
        return samples.ready[tier] > 0
    got = samples.readings.get(tier, {})
    for trigger in policy.triggers:
        r = got.get(trigger.name)
        if trigger.applies(tier) and r is not None and (
                r.status is ReadingStatus.INSUFFICIENT
                or r.status is ReadingStatus.OK and r.value is not None and r.value == r.value):
            return True
    return False


@SETTINGS
@given(st.data())
def test_no_tripped_short_or_podless_tier_serves_while_a_fit_tier_exists(data: st.DataObject) -> None:
    """After any decision free to move (minDwell elapsed, routing not held by missing data under Hold,
    no pin or pause), if some tier is fit (not tripped, capacity not reported short, not known to have 0
    ready replicas), then every tier that receives traffic is fit."""
    policy = data.draw(policies())
    for e in run(policy, data.draw(streams(policy))):
        last = e.before.last_transition_ms
        free = last is None or round(e.now * 1000) - last >= round(policy.min_dwell * 1000)
        if not free or routing_held(policy, e.before, e.samples):
            continue
        fit = fit_tiers(e)
        if fit:
            assert {n for n, w in e.decision.weights if w > 0} <= fit


@SETTINGS
@given(st.data())
def test_traffic_never_goes_to_a_tier_without_ready_replicas_unless_no_tier_has_any(data: st.DataObject) -> None:
    """A tier whose share rises is never known to have 0 ready replicas, unless every tier is: then no tier
    can serve, the whenAllBreached tier takes the traffic, and AllTiersBreached says so."""
    policy = data.draw(policies())
    for e in run(policy, data.draw(streams(policy))):
        before, after = dict(e.before.weights), dict(e.decision.weights)
        for tier in (n for n in policy.tier_names if after[n] > before.get(n, 0)):
            if e.samples.ready.get(tier) == 0:
                assert all(e.samples.ready.get(n) == 0 for n in policy.tier_names)
                assert tier == (policy.when_all_breached or policy.tier_names[-1])
                assert e.decision.state.all_tiers_breached


@SETTINGS
@given(st.data())
def test_a_tier_without_evidence_takes_new_traffic_only_when_no_fit_tier_has_evidence(data: st.DataObject) -> None:
    """A tier that had no traffic and now gets some has evidence that it can serve, unless no fit tier
    had any (when no tier is fit at all, the whenAllBreached rule decides instead)."""
    policy = data.draw(policies())
    for e in run(policy, data.draw(streams(policy))):
        before = dict(e.before.weights)
        fit = fit_tiers(e)
        for tier, weight in e.decision.weights:
            if weight > 0 and before.get(tier, 0) == 0 and not has_evidence(policy, tier, e.samples):
                assert not fit or not any(has_evidence(policy, n, e.samples) for n in fit)


@SETTINGS
@given(st.data())
def test_no_weight_change_within_min_dwell_of_the_previous(data: st.DataObject) -> None:
    policy = data.draw(policies())
    changes = [e.now for e in run(policy, data.draw(streams(policy))) if e.decision.changed]
    assert all(b - a >= policy.min_dwell - 1e-3 for a, b in zip(changes, changes[1:]))


@SETTINGS
@given(st.data())
def test_transitions_on_a_signal_oscillating_around_its_threshold_are_bounded_by_hysteresis(
        data: st.DataObject) -> None:
    """Every weight change is paid for by a trip or a recovery (a restore spends at most one per step),
    trips and recoveries of a tier alternate with at least the configured streaks between them, and
    changes are at most one per minDwell."""
    policy = data.draw(policies())
    stream = data.draw(streams(policy, missing=False, capacity=False, max_size=80, backwards=False))
    evals = run(policy, stream)
    changes = sum(e.decision.changed for e in evals)
    events: dict[str, list[tuple[int, str, bool, int]]] = {n: [] for n in policy.tier_names}
    for k, e in enumerate(evals):
        failed = {t.name: t.failed_probes for t in e.decision.state.tiers}
        for a in e.decision.audit:
            if a.reason in ("TierTripped", "TierRecovered") and a.tier is not None:
                events[a.tier].append((k, a.reason, e.before.restore_tier == a.tier, failed[a.tier]))
    plan = plan_for(policy)
    for tier, log in events.items():
        kinds = [r for _, r, _, _ in log]
        assert kinds == ["TierTripped", "TierRecovered"] * (len(kinds) // 2) + ["TierTripped"] * (len(kinds) % 2)
        if log:
            assert log[0][0] >= policy.trip_after - 1
        for (k0, r0, _, _), (k1, _, probation, failed) in zip(log, log[1:]):
            if r0 == "TierTripped":
                # The probe backoff: recoverAfter x 2^n clear evaluations after n failed probes in a row.
                assert k1 - k0 >= plan.clear_needed(failed) >= policy.recover_after
            else:
                assert k1 - k0 >= (1 if probation else policy.trip_after)
    steps = len(policy.restore_steps) + (policy.restore_steps[-1] != 100)
    assert changes <= steps * sum(len(log) for log in events.values())
    if policy.min_dwell > 0 and changes:
        assert changes <= (stream[-1][0] - stream[0][0]) / policy.min_dwell + 1


@SETTINGS
@given(st.data())
def test_counters_stay_within_their_caps_so_a_steady_state_rewrites_nothing(data: st.DataObject) -> None:
    """Streaks and the failed-probe count never grow past what the rules can use: breaches up to tripAfter,
    failed probes up to the cap, clear evaluations up to what the tier needs now (recoverAfter x 2^n)."""
    policy = data.draw(policies(overrides=True))
    plan = plan_for(policy)
    for e in run(policy, data.draw(streams(policy))):
        for t in e.decision.state.tiers:
            assert 0 <= t.failed_probes <= PROBE_BACKOFF_CAP
            assert 0 <= t.breach_streak <= policy.trip_after
            assert 0 <= t.clear_streak <= plan.clear_needed(t.failed_probes)
            assert not (t.probing and t.tripped)


@SETTINGS
@given(st.data())
def test_flapping_every_evaluation_never_moves_traffic(data: st.DataObject) -> None:
    """A signal that crosses its threshold on every evaluation never trips a tier when tripAfter >= 2."""
    policy = replace(data.draw(policies()), trip_after=data.draw(st.integers(2, 4)))
    trigger = policy.triggers[0]
    stream = []
    for k in range(data.draw(st.integers(1, 60))):
        factor = 2.0 if k % 2 else 0.5
        values = {t.name: Reading.ok(t.threshold * (factor if t is trigger else 1.0)) for t in policy.triggers}
        stream.append((START + 5 * k, Samples({n: values for n in policy.tier_names})))
    evals = run(policy, stream)
    assert not any(e.decision.changed for e in evals)
    assert not any(a.reason == "TierTripped" for e in evals for a in e.decision.audit)


@SETTINGS
@given(st.data())
def test_deterministic_and_restartable_through_status(data: st.DataObject) -> None:
    """Same inputs, same outputs; and a restart that reloads state from its JSON status at any point
    continues exactly as an uninterrupted run (so the status form is float-free and exact)."""
    policy = data.draw(policies(overrides=True))
    stream = data.draw(streams(policy))
    first, second = run(policy, stream), run(policy, stream)
    assert [e.decision for e in first] == [e.decision for e in second]
    for e in first:
        status = state_to_status(e.decision.state)
        assert has_no_floats(status)
        reloaded = state_from_status(json.loads(json.dumps(status)))
        assert reloaded == e.decision.state
        assert decide(policy, e.samples, state_from_status(state_to_status(e.before)), e.now) == e.decision


@SETTINGS
@given(st.data())
def test_spec_edits_mid_stream_keep_the_invariants(data: st.DataObject) -> None:
    """Tiers added or removed, restore steps or streak lengths changed between evaluations: no crash,
    weights stay whole percent over the current tier list, summing to 100."""
    specs = [data.draw(policies(overrides=True)) for _ in range(3)]
    stream = data.draw(streams(specs[0]))
    picks = data.draw(st.binary(min_size=len(stream), max_size=len(stream)))
    state = initial_state(specs[0])
    for (now, samples), pick in zip(stream, picks):
        policy = specs[pick % 3]
        d = decide(policy, samples, state, now)
        assert [n for n, _ in d.weights] == list(policy.tier_names)
        assert all(w >= 0 for _, w in d.weights) and sum(w for _, w in d.weights) == 100
        assert state_from_status(state_to_status(d.state)) == d.state
        state = d.state


def assert_valid(policy: Policy, d: Decision) -> None:
    """Weights name every tier of the policy once, in order, whole non-negative percents summing to 100."""
    assert [n for n, _ in d.weights] == list(policy.tier_names)
    assert all(isinstance(w, int) and w >= 0 for _, w in d.weights) and sum(w for _, w in d.weights) == 100


@SETTINGS
@given(st.data())
def test_a_sound_status_restores_exactly_and_untouched(data: st.DataObject) -> None:
    """What the engine wrote, read back at the next evaluation through the untrusting path, is the same
    state, with nothing to repair (so a healthy operator never posts StateRepaired)."""
    policy = data.draw(policies(overrides=True))
    for e in run(policy, data.draw(streams(policy, backwards=False))):
        restored = restore_state(policy, json.loads(json.dumps(state_to_status(e.before))), e.now)
        assert (restored.state, restored.repaired, restored.routing_known) == (e.before, (), True)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-10**16, 10**16) | st.floats() | st.text(max_size=6)
    | st.sampled_from([*NAMES, "ghost"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def corrupted(draw: st.DrawFn, status: dict[str, Any]) -> Any:
    """A real status with some of its fields, at any depth, replaced by arbitrary JSON; or arbitrary JSON."""
    if draw(st.integers(0, 9)) == 0:
        return draw(JSON)
    status = json.loads(json.dumps(status))
    for _ in range(draw(st.integers(1, 4))):
        node: Any = status
        while True:
            keys = list(node) if isinstance(node, dict) else list(range(len(node))) if isinstance(node, list) else []
            if not keys:
                break
            key = draw(st.sampled_from(keys))
            if draw(st.booleans()) or not isinstance(node[key], (dict, list)):
                node[key] = draw(JSON)
                break
            node = node[key]
    return status


@SETTINGS
@given(st.data())
def test_a_corrupted_status_never_raises_and_routing_stays_valid(data: st.DataObject) -> None:
    """Any damage to status.engine, at any depth: restoring never raises, decide never raises from what
    was restored, and the weights stay valid. (Whether a change is reported depends on the field: an
    unknown tier or trigger name reads as a spec edit, not as damage.)"""
    policy = data.draw(policies(overrides=True))
    stream = data.draw(streams(policy))
    evals = run(policy, stream)
    start = data.draw(st.integers(0, len(evals) - 1))
    status = state_to_status(evals[start].decision.state)
    damaged = data.draw(corrupted(status))
    state = restore_state(policy, damaged, stream[start][0]).state
    for now, samples in stream[start:]:
        d = decide(policy, samples, state, now)
        assert_valid(policy, d)
        state = d.state


@SETTINGS
@given(st.data())
def test_a_state_with_values_out_of_range_never_raises(data: st.DataObject) -> None:
    """The State dataclass handed to decide directly with hostile values of the right types: unknown tiers,
    negative or huge steps and streaks, times far ahead or behind, weights that do not add up."""
    policy = data.draw(policies(overrides=True))
    stream = data.draw(streams(policy))
    names = st.sampled_from([*NAMES, "ghost"])
    ints = st.integers(-10**13, 10**13)
    base = run(policy, stream[:1])[0].decision.state
    state = replace(
        base,
        weights=tuple(data.draw(st.lists(st.tuples(names, st.integers(-50, 150)), max_size=5))),
        active_tier=data.draw(names),
        tiers=tuple(TierState(data.draw(names), data.draw(ints), data.draw(ints), data.draw(st.booleans()),
                              failed_probes=data.draw(ints), probing=data.draw(st.booleans()))
                    for _ in range(data.draw(st.integers(0, 5)))),
        restore_tier=data.draw(st.none() | names),
        restore_step=data.draw(st.integers(-20, 20)),
        restore_evidence=data.draw(ints),
        last_transition_ms=data.draw(st.none() | ints),
        last_evaluation_ms=data.draw(st.none() | ints),
        pinned_tier=data.draw(st.none() | names),
        creep_buckets=tuple(CreepBucket(data.draw(ints), data.draw(ints), data.draw(ints))
                            for _ in range(data.draw(st.integers(0, 3)))),
    )
    for now, samples in stream:
        d = decide(policy, samples, state, now)
        assert_valid(policy, d)
        state = d.state
