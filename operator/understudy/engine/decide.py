"""`decide`: one evaluation of one FallbackPolicy, as a pure function of (policy, samples, state, now).

The operator, the backtest and the tests all run this same function, so it owns every routing rule and
the shell only applies the returned weights. Nothing here reads a clock, the network or randomness: the
caller passes `now`, and the result depends on the arguments alone.

One evaluation goes through four stages, in this order, each in a module of its own:
1. health (`health`): each tier's readings become a verdict (breach, missing, inconclusive, clear) that
   moves its streaks, and streaks trip or recover the tier (hysteresis);
2. eligibility (`route`): a tier may receive traffic when it is not tripped, has capacity and is not
   known to have 0 ready replicas; tiers with evidence of health are preferred;
3. creep (`creep`): time spent off the primary, in a sliding window, credited at the previous weights;
4. routing (`route`): overrides (pause, pin) first, then at most one transition, never within minDwell of
   the previous one, never while missing data holds routing or creep.action Freeze holds it; with Manual
   restore approval, a restore starts only once approved (`approval`).
"""
from __future__ import annotations

from dataclasses import dataclass

from understudy.engine import reasons
from understudy.engine.creep import credit
from understudy.engine.health import Verdict, effective, evaluate, update_tier
from understudy.engine.model import AuditRecord, CreepAction, MissingData, Mode, Policy, Samples
from understudy.engine.plan import plan_for
from understudy.engine.restore import carry_over
from understudy.engine.route import (
    Routing,
    all_breached_record,
    fitness,
    freeze_record,
    repin,
    restore_evidence,
    skip_episodes,
    stall_record,
    transition,
)
from understudy.engine.state import State


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
    frozen: bool = False
    """creep.action Freeze holds routing while the creep budget is exceeded (Frozen/Unfrozen are audited at
    the edges); only a tier without ready replicas is still left, and a pin still applies."""
    restore_stalled: bool = False
    """A restore step has not advanced within evaluation.restoreStallAfter (RestoreStalled was audited
    when it began); the shell shows it as a condition until the restore moves on or ends."""


def decide(policy: Policy, samples: Samples, state: State, now: float) -> Decision:
    """Evaluate `samples` against `policy` from `state` at `now` (epoch seconds); pure and deterministic.

    Observe mode runs the same machine on the weights it would have set, as if they were applied, so a
    later switch to Enforce starts from exactly what Observe reported. A pause wins over a pin: paused
    means hands off the routing (a person may be editing it), and a pin set meanwhile applies on resume.

    Raises ValueError for a policy the CRD's validation should have rejected (unknown tier names,
    duplicate names, non-increasing restore steps, ...).
    """
    plan = plan_for(policy)
    now_ms = round(now * 1000)
    before = state
    state = carry_over(policy, plan, state)
    names = plan.names
    prev = tuple(w for _, w in state.weights)
    audit: list[AuditRecord] = []

    if policy.paused != state.paused:
        by = f" by {policy.override_by}" if policy.override_by else ""
        audit.append(AuditRecord(reasons.PAUSED, f"routing frozen by spec.paused{by}") if policy.paused
                     else AuditRecord(reasons.RESUMED, f"routing resumed{by}"))

    evals = tuple([evaluate(triggers, samples.readings.get(n), share > 0)
                   for n, triggers, share in zip(names, plan.triggers, prev)])
    capacity = tuple(samples.capacity.get(n, True) for n in names)
    # Evidence that a tier can serve: ready replicas reported, or, readiness unknown, any reading at all.
    ready = samples.ready
    if ready:
        unready = tuple([n in ready and ready[n] <= 0 for n in names])
        evidence = tuple([ready[n] > 0 if n in ready else len(ev.missing) < len(triggers)
                          for n, ev, triggers in zip(names, evals, plan.triggers)])
    else:
        unready = (False,) * len(names)
        evidence = tuple([len(ev.missing) < len(triggers) for ev, triggers in zip(evals, plan.triggers)])

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

    # Traffic anchored on a tier that reads clear ends its probe backoff (see `update_tier`).
    anchor = plan.index.get(state.active_tier)
    tiers = [
        update_tier(policy, plan, state.tiers[i], effective(policy, evals[i], prev[i] > 0), evals[i],
                    on_probation=names[i] == state.restore_tier, serving=prev[i] > 0,
                    anchored=i == anchor and prev[i] > 0, audit=audit)
        for i in range(len(names))
    ]
    fit = fitness(plan, tiers, capacity, unready, evidence)
    skip_episodes(tiers, fit, prev, audit)
    if fit.first is None and not state.all_tiers_breached:
        audit.append(all_breached_record(plan, tiers, evals, fit))

    routing = Routing(
        weights=list(prev),
        active=plan.index[state.active_tier],
        restore=None if state.restore_tier is None else plan.index[state.restore_tier],
        step=state.restore_step,
        evidence=restore_evidence(plan, state, evals, now_ms),
        last_transition_ms=state.last_transition_ms,
        audit=audit,
        # Automatic approval (or a spec edit to it) holds nothing; a held tier the spec dropped is dropped.
        held=plan.index.get(state.held_tier) if plan.manual_restore and state.held_tier is not None else None,
        held_since_ms=state.held_since_ms if plan.manual_restore and state.held_tier in plan.index else None,
    )
    # Creep credits the time since the previous evaluation at the previous weights, so it is known before
    # this evaluation moves anything: a Freeze it calls for holds this evaluation's routing already.
    buckets, off_ms, observed_ms = credit(plan, state, prev[0], now_ms)
    ratio = off_ms / observed_ms if observed_ms else 0.0
    exceeded = off_ms > policy.creep_max_ratio * max(observed_ms, plan.window_ms)
    frozen = exceeded and policy.creep_action is CreepAction.FREEZE

    pinned = state.pinned_tier
    if not policy.paused:
        if policy.pinned_tier != pinned:
            pinned = repin(plan, routing, pinned, policy.pinned_tier, now_ms)
        dwell_ok = state.last_transition_ms is None or now_ms - state.last_transition_ms >= plan.dwell_ms
        # Missing data holds routing only on a tier that may still serve: one known to have no ready
        # replicas has no data because it has no pods. Neither does a freeze keep traffic on such a tier.
        held = policy.on_missing_data is MissingData.HOLD and any(
            prev[i] > 0 and evals[i].verdict is Verdict.MISSING and not unready[i] for i in range(len(names))
        )
        if pinned is None and dwell_ok and not held and (
                not frozen or any(share > 0 and down for share, down in zip(prev, unready))):
            transition(plan, routing, tiers, evals, fit, now_ms)
    # A pause or a freeze holds the stall report as it holds the restore: neither opens nor closes it.
    stalled = routing.restore is not None and (state.restore_stalled if policy.paused or frozen else (
        routing.last_transition_ms is not None and now_ms - routing.last_transition_ms >= plan.stall_ms))
    if stalled and not state.restore_stalled:
        held_by = (f"no data for {', '.join(f'{n}/{t}' for n, t in missing)} "
                   f"(onMissingData={policy.on_missing_data.value} holds routing)") if missing else None
        audit.append(stall_record(plan, routing, evals, held_by, now_ms))

    if exceeded != state.creep_exceeded:
        audit.append(AuditRecord(
            reasons.CREEP_BUDGET_EXCEEDED if exceeded else reasons.CREEP_BUDGET_RECOVERED,
            f"{off_ms / 1000:.0f}s off the primary in the last {plan.window_ms / 1000:.0f}s "
            f"(ratio {ratio:.3f}, budget {policy.creep_max_ratio:g}; action {policy.creep_action.value})",
            tier=names[0], observed=ratio, threshold=policy.creep_max_ratio,
        ))
    if frozen != state.frozen:
        audit.append(freeze_record(plan, routing, frozen, exceeded, ratio, policy.creep_max_ratio))

    weights = tuple(zip(names, routing.weights))
    new_state = State(
        weights=weights,
        active_tier=names[routing.active],
        tiers=tuple(tiers),
        restore_tier=None if routing.restore is None else names[routing.restore],
        restore_step=0 if routing.restore is None else routing.step,
        restore_evidence=0 if routing.restore is None else routing.evidence,
        last_transition_ms=routing.last_transition_ms,
        last_evaluation_ms=now_ms,
        pinned_tier=pinned,
        paused=policy.paused,
        all_tiers_breached=fit.first is None,
        metrics_missing=bool(missing),
        creep_exceeded=exceeded,
        creep_buckets=buckets,
        frozen=frozen,
        restore_stalled=stalled,
        held_tier=None if routing.held is None else names[routing.held],
        held_since_ms=None if routing.held is None else routing.held_since_ms,
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
        frozen=frozen,
        restore_stalled=stalled,
    )

