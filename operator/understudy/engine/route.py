"""Stage 2 and 3 of `decide`: which tiers may serve, and at most one move of traffic per evaluation."""
from __future__ import annotations

from dataclasses import dataclass, replace

from understudy.engine import reasons
from understudy.engine.health import Eval, Verdict, describe
from understudy.engine.model import AuditRecord
from understudy.engine.plan import Plan
from understudy.engine.state import TierState


@dataclass
class Routing:
    """The routing part of the state while one evaluation edits it (local, so `decide` stays pure)."""

    weights: list[int]
    active: int
    restore: int | None
    step: int
    last_transition_ms: int | None
    audit: list[AuditRecord]


def capacity_episodes(tiers: list[TierState], capacity: tuple[bool, ...], prev: tuple[int, ...],
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


def why(plan: Plan, tiers: list[TierState], evals: tuple[Eval, ...], capacity: tuple[bool, ...],
        i: int) -> tuple[str | None, float | None, float | None, str]:
    """(trigger, observed, threshold, text) explaining why tier i is unfit, for audit records."""
    worst = evals[i].worst
    if tiers[i].tripped:
        if worst is not None:
            return worst.trigger.name, worst.value, worst.trigger.threshold, describe(worst.trigger, worst.value)
        name = tiers[i].trip_trigger
        return name, None, plan.thresholds.get(name or ""), f"tripped by {name}"
    if not capacity[i]:
        return None, None, None, "capacity insufficient"
    return None, None, None, "healthy"


def repin(plan: Plan, routing: Routing, old: str | None, new: str | None, now_ms: int) -> str | None:
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


def transition(plan: Plan, routing: Routing, tiers: list[TierState], evals: tuple[Eval, ...],
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


def _move_all(plan: Plan, routing: Routing, to: int, tiers: list[TierState], evals: tuple[Eval, ...],
              capacity: tuple[bool, ...], now_ms: int) -> None:
    weights = [0] * len(plan.names)
    weights[to] = 100
    if weights == routing.weights:
        return
    names, c, t = plan.names, routing.active, routing.restore
    if t is not None and to != t:
        trigger, observed, threshold, text = why(plan, tiers, evals, capacity, t)
        routing.audit.append(AuditRecord(
            reasons.RESTORE_ABORTED, f"{names[t]} failed during restore ({text}); all traffic to {names[to]}",
            tier=names[t], trigger=trigger, observed=observed, threshold=threshold,
            from_tier=names[t], to_tier=names[to],
        ))
    if to != c:
        trigger, observed, threshold, text = why(plan, tiers, evals, capacity, c)
        worse = to > c
        routing.audit.append(AuditRecord(
            reasons.FALLBACK_ACTIVATED if worse else reasons.RESTORED,
            f"{names[c]} unfit ({text}); all traffic {'falls back' if worse else 'returns'} to {names[to]}",
            tier=names[c], trigger=trigger, observed=observed, threshold=threshold,
            from_tier=names[c], to_tier=names[to],
        ))
    routing.weights, routing.active, routing.restore, routing.step = weights, to, None, 0
    routing.last_transition_ms = now_ms


def _restore_step(plan: Plan, routing: Routing, to: int, step: int, now_ms: int) -> None:
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
