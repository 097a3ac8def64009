"""`decide`: one evaluation of one FallbackPolicy, as a pure function of (policy, samples, state, now).

The operator, the backtest and the tests all run this same function, so it owns every routing rule and
the shell only applies the returned weights. Nothing here reads a clock, the network or randomness: the
caller passes `now`, and the result depends on the arguments alone.

One evaluation goes through four stages, in this order:
1. health: each tier's readings become a verdict (breach, missing, inconclusive, clear) that moves its
   streaks, and streaks trip or recover the tier (hysteresis);
2. eligibility: a tier may receive traffic when it is not tripped and has capacity;
3. routing: overrides (pause, pin) first, then at most one transition, never within minDwell of the
   previous one, never while missing data holds routing;
4. creep: time spent off the primary, in a sliding window. The reported ratio is off-primary time over
   observed time, but the budget is exceeded only when off-primary time passes maxFallbackRatio times
   the whole window (or the observed time, if longer): otherwise a freshly started operator, having
   observed ten minutes, would call a five-minute fallback a 50% creep and may roll back a Deployment.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
import weakref
from enum import Enum
from typing import Mapping

from understudy.engine import reasons
from understudy.engine.model import (
    AuditRecord,
    Comparison,
    MissingData,
    Mode,
    Policy,
    Reading,
    ReadingStatus,
    Samples,
    Trigger,
)
from understudy.engine.state import CreepBucket, State, TierState, initial_state

CREEP_BUCKETS = 48
"""Slices of the creep window kept in state: bounds the status size whatever the window's length."""


@dataclass(frozen=True)
class Decision:
    state: State
    """Store it (via state_to_status) and pass it to the next call."""
    weights: tuple[tuple[str, int], ...]
    """Every tier in policy order, integers summing to 100; in Observe mode what the policy would set."""
    route: bool
    """Whether the shell may write these weights to the routing: False in Observe mode and while paused."""
    active_tier: str
    audit: tuple[AuditRecord, ...]
    fallback_ratio: float
    """Share of observed time off the primary within the creep window."""
    creep_exceeded: bool
    metrics_available: bool
    """False while a signal of a tier that receives traffic has no data."""
    changed: bool
    """The weights differ from the previous decision's."""


class Verdict(Enum):
    BREACH = "Breach"
    MISSING = "Missing"
    INCONCLUSIVE = "Inconclusive"
    CLEAR = "Clear"


@dataclass(frozen=True)
class _Plan:
    """What `decide` needs from a policy, validated and precomputed once per policy value (cached)."""

    names: tuple[str, ...]
    index: Mapping[str, int]
    triggers: tuple[tuple[Trigger, ...], ...]
    """Per tier, the triggers that apply to it."""
    thresholds: Mapping[str, float]
    steps: tuple[int, ...]
    last_resort: int
    dwell_ms: int
    credit_cap_ms: int
    bucket_ms: int
    window_ms: int


@dataclass(frozen=True)
class _Breach:
    trigger: Trigger
    value: float


@dataclass(frozen=True)
class _Eval:
    verdict: Verdict
    worst: _Breach | None
    missing: tuple[str, ...]
    """Applicable triggers without data on this tier."""


@dataclass
class _Routing:
    """The routing part of the state while one evaluation edits it (local, so `decide` stays pure)."""

    weights: list[int]
    active: int
    restore: int | None
    step: int
    last_transition_ms: int | None
    audit: list[AuditRecord]


def decide(policy: Policy, samples: Samples, state: State, now: float) -> Decision:
    """Evaluate `samples` against `policy` from `state` at `now` (epoch seconds); pure and deterministic.

    Observe mode runs the same machine on the weights it would have set, as if they were applied, so a
    later switch to Enforce starts from exactly what Observe reported. A pause wins over a pin: paused
    means hands off the routing (a person may be editing it), and a pin set meanwhile applies on resume.

    Raises ValueError for a policy the CRD's validation should have rejected (unknown tier names,
    duplicate names, non-increasing restore steps, ...).
    """
    plan = _plan(policy)
    now_ms = round(now * 1000)
    before = state
    state = _fit(policy, plan, state)
    names = plan.names
    prev = tuple(w for _, w in state.weights)
    audit: list[AuditRecord] = []

    if policy.paused and not state.paused:
        audit.append(AuditRecord(reasons.PAUSED, "routing frozen by spec.paused"))
    elif state.paused and not policy.paused:
        audit.append(AuditRecord(reasons.RESUMED, "routing resumed"))

    evals = tuple(
        _evaluate(plan.triggers[i], samples.readings.get(n), prev[i] > 0) for i, n in enumerate(names)
    )
    capacity = tuple(samples.capacity.get(n, True) for n in names)

    missing = [(names[i], t) for i in range(len(names)) if prev[i] > 0 for t in evals[i].missing]
    if missing and not state.metrics_missing:
        tier, trigger = missing[0]
        audit.append(AuditRecord(
            reasons.METRICS_MISSING,
            f"no data for {', '.join(f'{n}/{t}' for n, t in missing)} (onMissingData={policy.on_missing_data.value})",
            tier=tier, trigger=trigger,
        ))
    elif not missing and state.metrics_missing:
        audit.append(AuditRecord(reasons.METRICS_RESTORED, "every signal of the serving tiers has data again"))

    tiers = [
        _update_tier(policy, state.tiers[i], _effective(policy, evals[i], prev[i] > 0), evals[i],
                     on_probation=names[i] == state.restore_tier, audit=audit)
        for i in range(len(names))
    ]
    eligible = tuple(not tiers[i].tripped and capacity[i] for i in range(len(names)))
    first = next((i for i, ok in enumerate(eligible) if ok), None)
    _capacity_episodes(tiers, capacity, prev, first, audit)
    if first is None and not state.all_tiers_breached:
        audit.append(AuditRecord(
            reasons.ALL_TIERS_BREACHED,
            f"no tier can serve, {names[plan.last_resort]} serves: "
            + "; ".join(f"{n}: {_why(plan, tiers, evals, capacity, i)[3]}" for i, n in enumerate(names)),
            to_tier=names[plan.last_resort],
        ))

    routing = _Routing(
        weights=list(prev),
        active=plan.index[state.active_tier],
        restore=None if state.restore_tier is None else plan.index[state.restore_tier],
        step=state.restore_step,
        last_transition_ms=state.last_transition_ms,
        audit=audit,
    )
    pinned = state.pinned_tier
    if not policy.paused:
        if policy.pinned_tier != pinned:
            pinned = _repin(plan, routing, pinned, policy.pinned_tier, now_ms)
        dwell_ok = state.last_transition_ms is None or now_ms - state.last_transition_ms >= plan.dwell_ms
        held = policy.on_missing_data is MissingData.HOLD and any(
            prev[i] > 0 and evals[i].verdict is Verdict.MISSING for i in range(len(names))
        )
        if pinned is None and dwell_ok and not held:
            _transition(plan, routing, tiers, evals, capacity, eligible, first, now_ms)

    buckets, off_ms, observed_ms = _creep(plan, state, prev[0], now_ms)
    ratio = off_ms / observed_ms if observed_ms else 0.0
    exceeded = off_ms > policy.creep_max_ratio * max(observed_ms, plan.window_ms)
    if exceeded != state.creep_exceeded:
        audit.append(AuditRecord(
            reasons.CREEP_BUDGET_EXCEEDED if exceeded else reasons.CREEP_BUDGET_RECOVERED,
            f"{off_ms / 1000:.0f}s off the primary in the last {plan.window_ms / 1000:.0f}s "
            f"(ratio {ratio:.3f}, budget {policy.creep_max_ratio:g}; action {policy.creep_action.value})",
            tier=names[0], observed=ratio, threshold=policy.creep_max_ratio,
        ))

    weights = tuple(zip(names, routing.weights))
    new_state = State(
        weights=weights,
        active_tier=names[routing.active],
        tiers=tuple(tiers),
        restore_tier=None if routing.restore is None else names[routing.restore],
        restore_step=0 if routing.restore is None else routing.step,
        last_transition_ms=routing.last_transition_ms,
        last_evaluation_ms=now_ms,
        pinned_tier=pinned,
        paused=policy.paused,
        all_tiers_breached=first is None,
        metrics_missing=bool(missing),
        creep_exceeded=exceeded,
        creep_buckets=buckets,
    )
    return Decision(
        state=new_state,
        weights=weights,
        route=policy.mode is Mode.ENFORCE and not policy.paused,
        active_tier=new_state.active_tier,
        audit=tuple(audit),
        fallback_ratio=ratio,
        creep_exceeded=exceeded,
        metrics_available=not missing,
        changed=weights != before.weights,
    )


_plans: dict[int, tuple[weakref.ref[Policy], _Plan]] = {}


def _plan(policy: Policy) -> _Plan:
    """Validated and precomputed once per Policy object, found by identity.

    A policy value only changes with its spec, and callers keep one object per spec. A cache keyed by
    value would hash the whole policy on every evaluation, and a bounded one would thrash at thousands
    of policies; an entry here lives exactly as long as its policy.
    """
    key = id(policy)
    cached = _plans.get(key)
    if cached is not None and cached[0]() is policy:
        return cached[1]
    plan = _make_plan(policy)
    _plans[key] = (weakref.ref(policy, lambda _, key=key: _plans.pop(key, None)), plan)  # type: ignore[misc]
    return plan


def _make_plan(policy: Policy) -> _Plan:
    names = policy.tier_names
    if not names:
        raise ValueError("a policy needs at least the primary tier")
    if len(set(names)) != len(names):
        raise ValueError(f"tier names must be unique: {names}")
    trigger_names = [t.name for t in policy.triggers]
    if len(set(trigger_names)) != len(trigger_names):
        raise ValueError(f"trigger names must be unique: {trigger_names}")
    for label, value in (("pinned tier", policy.pinned_tier), ("whenAllBreached", policy.when_all_breached)):
        if value is not None and value not in names:
            raise ValueError(f"{label} {value!r} is not a tier of this policy")
    if policy.trip_after < 1 or policy.recover_after < 1:
        raise ValueError("tripAfter and recoverAfter must be at least 1")
    if policy.min_dwell < 0 or policy.interval <= 0 or policy.creep_window <= 0:
        raise ValueError("minDwell must be >= 0, interval and creep window > 0")
    steps = policy.restore_steps
    if any(not 0 < s <= 100 for s in steps) or any(a >= b for a, b in zip(steps, steps[1:])):
        raise ValueError(f"restore steps must increase within 1..100: {steps}")
    window_ms = round(policy.creep_window * 1000)
    return _Plan(
        names=names,
        index={n: i for i, n in enumerate(names)},
        triggers=tuple(tuple(t for t in policy.triggers if t.applies(n)) for n in names),
        thresholds={t.name: t.threshold for t in policy.triggers},
        # A restore always ends with all traffic on the better tier, whether or not the spec says 100.
        steps=steps if steps and steps[-1] == 100 else (*steps, 100),
        last_resort=len(names) - 1 if policy.when_all_breached is None else names.index(policy.when_all_breached),
        dwell_ms=round(policy.min_dwell * 1000),
        credit_cap_ms=round(2 * policy.interval * 1000),
        bucket_ms=max(1, -(-window_ms // CREEP_BUCKETS)),
        window_ms=window_ms,
    )


def _fit(policy: Policy, plan: _Plan, state: State) -> State:
    """Carry a state across a spec change of the tier list: health by tier name, routing if it still fits.

    When a tier that carries traffic is removed (or a hand-edited status does not add up), routing
    restarts from the primary; the tiers' health carries over, so the next transition moves on from
    there without relearning.
    """
    index = plan.index
    routing_fits = (
        state.active_tier in index
        and (state.restore_tier is None or state.restore_tier in index)
        and all(w >= 0 and (w == 0 or n in index) for n, w in state.weights)
        and sum(w for _, w in state.weights) == 100
    )
    names_fit = (tuple(t.name for t in state.tiers) == plan.names
                 and tuple(n for n, _ in state.weights) == plan.names)
    if names_fit and routing_fits:
        return state
    by_name = {t.name: t for t in state.tiers}
    tiers = tuple(by_name.get(n, TierState(n)) for n in plan.names)
    pinned = state.pinned_tier if state.pinned_tier in index else None
    if routing_fits:
        old = dict(state.weights)
        return replace(state, tiers=tiers, pinned_tier=pinned,
                       weights=tuple((n, old.get(n, 0)) for n in plan.names))
    fresh = initial_state(policy)
    return replace(state, tiers=tiers, pinned_tier=pinned, weights=fresh.weights,
                   active_tier=fresh.active_tier, restore_tier=None, restore_step=0)


def _evaluate(triggers: tuple[Trigger, ...], readings: Mapping[str, Reading] | None, has_traffic: bool) -> _Eval:
    """A tier's verdict for this evaluation.

    A real breach wins over missing data elsewhere (it must not be hidden by a dead series). NaN counts
    as missing, never as a value. INSUFFICIENT blocks a clear only on a tier that receives traffic: a
    tier with no traffic has no requests by nature, and letting it clear is what makes the first restore
    step a probe (the half-open state of a circuit breaker).
    """
    worst: _Breach | None = None
    worst_severity = 0.0
    missing: list[str] = []
    insufficient = False
    for trigger in triggers:
        reading = readings.get(trigger.name) if readings is not None else None
        if reading is None or reading.status is ReadingStatus.MISSING:
            missing.append(trigger.name)
        elif reading.status is ReadingStatus.INSUFFICIENT:
            insufficient = True
        elif reading.value is None or reading.value != reading.value:
            missing.append(trigger.name)
        elif trigger.breached_by(reading.value):
            severity = _severity(trigger, reading.value)
            if worst is None or severity > worst_severity:
                worst, worst_severity = _Breach(trigger, reading.value), severity
    if worst is not None:
        verdict = Verdict.BREACH
    elif missing:
        verdict = Verdict.MISSING
    elif insufficient and has_traffic:
        verdict = Verdict.INCONCLUSIVE
    else:
        verdict = Verdict.CLEAR
    return _Eval(verdict, worst, tuple(missing))


def _severity(trigger: Trigger, value: float) -> float:
    """How far past its threshold a reading is, relative to the threshold, to name a tier's worst trigger."""
    excess = value - trigger.threshold if trigger.comparison is Comparison.ABOVE else trigger.threshold - value
    return excess / abs(trigger.threshold) if trigger.threshold else excess


def _effective(policy: Policy, ev: _Eval, has_traffic: bool) -> Verdict:
    """onMissingData=Fallback reads missing data on a tier that serves as a breach; Hold (and any tier
    without traffic) freezes its streaks instead: missing data is never read as healthy or as zero."""
    if ev.verdict is Verdict.MISSING and has_traffic and policy.on_missing_data is MissingData.FALLBACK:
        return Verdict.BREACH
    return ev.verdict


def _update_tier(policy: Policy, ts: TierState, verdict: Verdict, ev: _Eval, *,
                 on_probation: bool, audit: list[AuditRecord]) -> TierState:
    """Hysteresis: trip after tripAfter consecutive breaches, recover after recoverAfter consecutive clears.

    Missing and inconclusive evaluations freeze both streaks: they are evidence neither of health nor of
    a breach. A tier being restored to is on probation: one breach trips it again, as a failure in a
    circuit breaker's half-open state reopens it.
    """
    breach, clear = ts.breach_streak, ts.clear_streak
    if verdict is Verdict.BREACH:
        breach, clear = min(breach + 1, policy.trip_after), 0
    elif verdict is Verdict.CLEAR:
        breach, clear = 0, min(clear + 1, policy.recover_after)
    tripped, trip_trigger = ts.tripped, ts.trip_trigger
    if not tripped and verdict is Verdict.BREACH and (breach >= policy.trip_after or on_probation):
        tripped = True
        if ev.worst is not None:
            trigger = ev.worst.trigger
            trip_trigger = trigger.name
            audit.append(AuditRecord(
                reasons.TIER_TRIPPED,
                f"{ts.name}: {_describe(trigger, ev.worst.value)}"
                + (" during restore" if on_probation else f" for {breach} evaluations"),
                tier=ts.name, trigger=trigger.name, observed=ev.worst.value, threshold=trigger.threshold,
            ))
        else:
            trip_trigger = ev.missing[0]
            audit.append(AuditRecord(
                reasons.TIER_TRIPPED,
                f"{ts.name}: no data for {', '.join(ev.missing)} (onMissingData=Fallback)",
                tier=ts.name, trigger=trip_trigger,
            ))
    elif tripped and clear >= policy.recover_after:
        tripped, trip_trigger = False, None
        audit.append(AuditRecord(
            reasons.TIER_RECOVERED, f"{ts.name}: clear for {clear} evaluations", tier=ts.name,
        ))
    if (breach, clear, tripped, trip_trigger) == (ts.breach_streak, ts.clear_streak, ts.tripped, ts.trip_trigger):
        return ts
    return TierState(ts.name, breach, clear, tripped, trip_trigger, ts.capacity_short)


def _describe(trigger: Trigger, value: float) -> str:
    return f"{trigger.name} {value:g} {trigger.comparison.value} {trigger.threshold:g}"


def _capacity_episodes(tiers: list[TierState], capacity: tuple[bool, ...], prev: tuple[int, ...],
                       first: int | None, audit: list[AuditRecord]) -> None:
    """Open a CapacityInsufficient episode when a short tier is actually skipped: it would have been the
    first healthy tier, or it carries traffic now. A scaled-down fallback nobody needs is not news."""
    for i, ts in enumerate(tiers):
        if capacity[i]:
            if ts.capacity_short:
                tiers[i] = replace(ts, capacity_short=False)
        elif not ts.capacity_short and not ts.tripped and (first is None or i < first or prev[i] > 0):
            audit.append(AuditRecord(
                reasons.CAPACITY_INSUFFICIENT,
                f"{ts.name} cannot carry its traffic (not enough ready replicas); skipped", tier=ts.name,
            ))
            tiers[i] = replace(ts, capacity_short=True)


def _why(plan: _Plan, tiers: list[TierState], evals: tuple[_Eval, ...], capacity: tuple[bool, ...],
         i: int) -> tuple[str | None, float | None, float | None, str]:
    """(trigger, observed, threshold, text) explaining why tier i is unfit, for audit records."""
    worst = evals[i].worst
    if tiers[i].tripped:
        if worst is not None:
            return worst.trigger.name, worst.value, worst.trigger.threshold, _describe(worst.trigger, worst.value)
        name = tiers[i].trip_trigger
        return name, None, plan.thresholds.get(name or ""), f"tripped by {name}"
    if not capacity[i]:
        return None, None, None, "capacity insufficient"
    return None, None, None, "healthy"


def _repin(plan: _Plan, routing: _Routing, old: str | None, new: str | None, now_ms: int) -> str | None:
    """Apply a pin change at once, whatever minDwell says: a person asked for it.

    Pinning makes the pinned tier the anchor, so after the pin is lifted the usual rules move traffic
    on from where it really is (a restore if a better tier is healthy, a fallback if this one is not).
    """
    if new is None:
        routing.audit.append(AuditRecord(reasons.UNPINNED, f"pin on {old} lifted", tier=old))
        return None
    routing.audit.append(AuditRecord(reasons.PINNED, f"all traffic pinned to {new}", tier=new, to_tier=new))
    weights = [0] * len(plan.names)
    weights[plan.index[new]] = 100
    if weights != routing.weights:
        routing.weights = weights
        routing.last_transition_ms = now_ms
    routing.active, routing.restore, routing.step = plan.index[new], None, 0
    return new


def _transition(plan: _Plan, routing: _Routing, tiers: list[TierState], evals: tuple[_Eval, ...],
                capacity: tuple[bool, ...], eligible: tuple[bool, ...], first: int | None, now_ms: int) -> None:
    """At most one move per evaluation, chosen in this order:

    - no tier fit to serve: everything on the whenAllBreached tier;
    - the anchor tier itself unfit: everything at once on the next fit tier down the chain, or, when none
      below is fit, on the best fit tier above. Down first, because a better tier that has been idle since
      it tripped has no evidence of health (idle tiers read as clear so that a restore can probe them):
      it gets traffic back through the restore steps, not all at once in the middle of an incident;
    - a restore under way: abort it if the better tier became unfit, else take the next step when the
      better tier was clear in this very evaluation (inconclusive or missing data waits);
    - a better tier is fit: start restoring to it (the first step is the probe). A restore in progress
      is finished before an even better tier is considered, so steps never jump between targets.
    """
    c, t = routing.active, routing.restore
    if first is None:
        _move_all(plan, routing, plan.last_resort, tiers, evals, capacity, now_ms)
    elif not eligible[c]:
        below = next((i for i in range(c + 1, len(eligible)) if eligible[i]), first)
        _move_all(plan, routing, below, tiers, evals, capacity, now_ms)
    elif t is not None:
        if not eligible[t]:
            _move_all(plan, routing, c, tiers, evals, capacity, now_ms)
        elif evals[t].verdict is Verdict.CLEAR:
            # min(): restoreSteps may have been shortened by a spec edit during the restore.
            _restore_step(plan, routing, t, min(routing.step + 1, len(plan.steps) - 1), now_ms)
    elif first < c:
        _restore_step(plan, routing, first, 0, now_ms)


def _move_all(plan: _Plan, routing: _Routing, to: int, tiers: list[TierState], evals: tuple[_Eval, ...],
              capacity: tuple[bool, ...], now_ms: int) -> None:
    weights = [0] * len(plan.names)
    weights[to] = 100
    if weights == routing.weights:
        return
    names, c, t = plan.names, routing.active, routing.restore
    if t is not None and to != t:
        trigger, observed, threshold, text = _why(plan, tiers, evals, capacity, t)
        routing.audit.append(AuditRecord(
            reasons.RESTORE_ABORTED, f"{names[t]} failed during restore ({text}); all traffic to {names[to]}",
            tier=names[t], trigger=trigger, observed=observed, threshold=threshold,
            from_tier=names[t], to_tier=names[to],
        ))
    if to != c:
        trigger, observed, threshold, text = _why(plan, tiers, evals, capacity, c)
        worse = to > c
        routing.audit.append(AuditRecord(
            reasons.FALLBACK_ACTIVATED if worse else reasons.RESTORED,
            f"{names[c]} unfit ({text}); all traffic {'falls back' if worse else 'returns'} to {names[to]}",
            tier=names[c], trigger=trigger, observed=observed, threshold=threshold,
            from_tier=names[c], to_tier=names[to],
        ))
    routing.weights, routing.active, routing.restore, routing.step = weights, to, None, 0
    routing.last_transition_ms = now_ms


def _restore_step(plan: _Plan, routing: _Routing, to: int, step: int, now_ms: int) -> None:
    names, c = plan.names, routing.active
    share = plan.steps[step]
    weights = [0] * len(names)
    weights[to] = share
    weights[c] += 100 - share
    if share == 100:
        routing.audit.append(AuditRecord(
            reasons.RESTORED, f"all traffic back on {names[to]} from {names[c]}",
            tier=names[to], from_tier=names[c], to_tier=names[to],
        ))
        routing.active, routing.restore, routing.step = to, None, 0
    else:
        routing.audit.append(AuditRecord(
            reasons.RESTORE_STEP,
            f"restore step {step + 1}/{len(plan.steps)}: {share}% to {names[to]}, {100 - share}% stays on {names[c]}",
            tier=names[to], from_tier=names[c], to_tier=names[to],
        ))
        routing.restore, routing.step = to, step
    routing.weights = weights
    routing.last_transition_ms = now_ms


def _creep(plan: _Plan, state: State, primary_weight: int, now_ms: int) -> tuple[tuple[CreepBucket, ...], int, int]:
    """Credit the time since the previous evaluation, at the previous weights, to the current bucket.

    The credit is capped at twice the evaluation interval so that a gap (operator down, leader change) is
    not counted as time off the primary. Off-primary time is weight-share times seconds, so a 10% restore
    step counts as 90% fallback. Returns (buckets, off-primary ms, observed ms) over the window.
    """
    last = state.last_evaluation_ms
    elapsed = 0 if last is None else min(max(now_ms - last, 0), plan.credit_cap_ms)
    index = now_ms // plan.bucket_ms
    buckets = [b for b in state.creep_buckets if b.index > index - CREEP_BUCKETS]
    if elapsed:
        off = (elapsed * (100 - primary_weight) + 50) // 100
        at = next((k for k, b in enumerate(buckets) if b.index == index), None)
        if at is None:
            buckets.append(CreepBucket(index, off, elapsed))
        else:
            b = buckets[at]
            buckets[at] = CreepBucket(index, b.off_primary_ms + off, b.observed_ms + elapsed)
    return (tuple(buckets), sum(b.off_primary_ms for b in buckets), sum(b.observed_ms for b in buckets))
