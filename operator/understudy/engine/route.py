"""Stage 2 and 3 of `decide`: which tiers may serve, and at most one move of traffic per evaluation."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import NamedTuple

from understudy.engine import reasons
from understudy.engine.approval import end_hold, restore_may_start
from understudy.engine.health import Eval, Verdict, describe
from understudy.engine.model import AuditRecord
from understudy.engine.plan import Plan
from understudy.engine.state import State, TierState


@dataclass
class Routing:
    """The routing part of the state while one evaluation edits it (local, so `decide` stays pure)."""

    weights: list[int]
    active: int
    restore: int | None
    step: int
    evidence: int
    """Requests credited to the current restore step, in thousandths; 0 outside a restore."""
    last_transition_ms: int | None
    audit: list[AuditRecord]
    held: int | None = None
    """evaluation.restoreApproval Manual: the better tier a due restore waits to go to (see `approval`)."""
    held_since_ms: int | None = None


def restore_evidence(plan: Plan, state: State, evals: tuple[Eval, ...], now_ms: int) -> int:
    """The requests (in thousandths) the restore target has served without a breaching value since the
    current step began, for a step whose windows each hold too few requests to judge.

    Each evaluation credits what arrived since the previous one: the window's request count times the
    time elapsed over the window's length (at most the whole count), so overlapping windows count each
    request about once. Any breaching value, even from too few requests, starts the count again; missing
    data adds nothing and keeps what was counted. The count stops at the largest minimum it is needed for.
    """
    if state.restore_tier is None:
        return 0
    ev = evals[plan.index[state.restore_tier]]
    if ev.worst is not None or ev.thin_breach:
        return 0
    if ev.verdict is Verdict.MISSING or not ev.requests:
        return state.restore_evidence
    last = state.last_evaluation_ms
    elapsed = plan.credit_cap_ms // 2 if last is None else now_ms - last
    credited = round(ev.requests * 1000 * min(max(elapsed, 0), plan.rate_window_ms) / plan.rate_window_ms)
    return min(state.restore_evidence + credited, ev.floor * 1000)


class Fitness(NamedTuple):
    """Which tiers may receive traffic in this evaluation, and in which order of preference (a NamedTuple:
    built on every evaluation, and cheaper to build than a frozen dataclass)."""

    eligible: tuple[bool, ...]
    """Not tripped, with capacity, and not known to have 0 ready replicas."""
    evidence: tuple[bool, ...]
    """Evidence that the tier can serve: ready replicas reported above 0, or, with readiness unknown, at
    least one applicable trigger with a reading (OK or Insufficient). A tier without evidence ranks after
    every tier with evidence."""
    capacity: tuple[bool, ...]
    unready: tuple[bool, ...]
    """Known to have no ready replicas."""
    first: int | None
    """The preferred eligible tier: the best in the chain with evidence, else the best without."""
    last_resort: int
    """The tier that serves when none is eligible: whenAllBreached's, unless it has no ready replicas."""


def fitness(plan: Plan, tiers: list[TierState], capacity: tuple[bool, ...], unready: tuple[bool, ...],
            evidence: tuple[bool, ...]) -> Fitness:
    eligible = tuple([fits and not ts.tripped and not down for ts, fits, down in zip(tiers, capacity, unready)])
    first = fallback = None
    for i, ok in enumerate(eligible):  # a plain loop: this runs on every evaluation
        if ok:
            if evidence[i]:
                first = i
                break
            if fallback is None:
                fallback = i
    if first is None:
        first = fallback
    last_resort = plan.last_resort
    if unready[last_resort]:
        last_resort = next((i for i, down in enumerate(unready) if not down), last_resort)
    return Fitness(eligible, evidence, capacity, unready, first, last_resort)


def skip_episodes(tiers: list[TierState], fit: Fitness, prev: tuple[int, ...], audit: list[AuditRecord]) -> None:
    """Open a CapacityInsufficient or NoReadyReplicas episode when such a tier is actually skipped: it would
    have been the first fit tier, or it carries traffic now. A scaled-down fallback nobody needs is not
    news. An episode closes quietly once the tier could serve again."""
    if False not in fit.capacity and True not in fit.unready and not any(
            ts.capacity_short or ts.unready for ts in tiers):
        return  # the common case: every tier can serve, and no episode is open
    first = fit.first
    for i, ts in enumerate(tiers):
        short, down = not fit.capacity[i], fit.unready[i]
        if ts.capacity_short == short and ts.unready == down:
            continue
        skipped = not ts.tripped and (first is None or i < first or prev[i] > 0)
        capacity_short, unready = ts.capacity_short and short, ts.unready and down
        if down and not ts.unready and skipped:
            audit.append(AuditRecord(
                reasons.NO_READY_REPLICAS,
                f"{ts.name} has no ready replicas (its Deployment is missing or scaled to zero); skipped",
                tier=ts.name,
            ))
            unready = True
        if short and not ts.capacity_short and skipped:
            audit.append(AuditRecord(
                reasons.CAPACITY_INSUFFICIENT,
                f"{ts.name} cannot carry its traffic (not enough ready replicas); skipped", tier=ts.name,
            ))
            capacity_short = True
        if (capacity_short, unready) != (ts.capacity_short, ts.unready):
            tiers[i] = replace(ts, capacity_short=capacity_short, unready=unready)


def all_breached_record(plan: Plan, tiers: list[TierState], evals: tuple[Eval, ...], fit: Fitness) -> AuditRecord:
    """AllTiersBreached: who serves, and why every tier is unfit."""
    names = plan.names
    serves = names[fit.last_resort]
    passed_over = (f"{names[plan.last_resort]} has no ready replicas, so {serves} serves"
                   if fit.last_resort != plan.last_resort else f"{serves} serves")
    return AuditRecord(
        reasons.ALL_TIERS_BREACHED,
        f"no tier can serve; {passed_over}: "
        + "; ".join(f"{n}: {why(plan, tiers, evals, fit, i)[3]}" for i, n in enumerate(names)),
        to_tier=serves,
    )


def why(plan: Plan, tiers: list[TierState], evals: tuple[Eval, ...], fit: Fitness,
        i: int) -> tuple[str | None, float | None, float | None, str]:
    """(trigger, observed, threshold, text) explaining why tier i is unfit, for audit records."""
    worst = evals[i].worst
    if tiers[i].tripped:
        if worst is not None:
            return worst.trigger.name, worst.value, worst.trigger.threshold, describe(worst.trigger, worst.value)
        name = tiers[i].trip_trigger
        return name, None, plan.thresholds.get(name or ""), f"tripped by {name}"
    if fit.unready[i]:
        return None, None, None, "no ready replicas"
    if not fit.capacity[i]:
        return None, None, None, "capacity insufficient"
    return None, None, None, "healthy"


def repin(plan: Plan, routing: Routing, old: str | None, new: str | None, now_ms: int) -> str | None:
    """Apply a pin change at once, whatever minDwell says: a person asked for it.

    Pinning makes the pinned tier the anchor, so after the pin is lifted the usual rules move traffic
    on from where it really is (a restore if a better tier is healthy, a fallback if this one is not).
    """
    by = f" by {plan.override_by}" if plan.override_by else ""
    if new is None:
        routing.audit.append(AuditRecord(reasons.UNPINNED, f"pin on {old} lifted{by}", tier=old))
        return None
    end_hold(plan, routing, f"override.pinTier sends all traffic to {new}")
    routing.audit.append(AuditRecord(reasons.PINNED, f"all traffic pinned to {new}{by}", tier=new, to_tier=new))
    weights = [0] * len(plan.names)
    weights[plan.index[new]] = 100
    if weights != routing.weights:
        routing.weights = weights
        routing.last_transition_ms = now_ms
    routing.active, routing.restore, routing.step, routing.evidence = plan.index[new], None, 0, 0
    return new


def transition(plan: Plan, routing: Routing, tiers: list[TierState], evals: tuple[Eval, ...], fit: Fitness,
               now_ms: int) -> None:
    """At most one move per evaluation, chosen in this order:

    - no tier fit to serve: everything on the last resort (the whenAllBreached tier, unless it has no
      ready replicas: then the best tier that has some);
    - the anchor tier itself unfit: everything at once on the next fit tier down the chain, or, when none
      below is fit, on the best fit tier above; tiers with evidence first in either case. Down first,
      because a better tier that has been idle since it tripped has little evidence of health (idle tiers
      read as clear so that a restore can probe them): it gets traffic back through the restore steps,
      not all at once in the middle of an incident;
    - a restore under way: abort it if the better tier became unfit, else take the next step when the
      better tier was clear in this very evaluation, or too thin to judge but has served enough requests
      since the step began (`restore_evidence`); missing data waits;
    - the preferred fit tier is better: start restoring to it (the first step is the probe, and the tier is
      `probing` until it reads clear with traffic anchored on it: see `health.update_tier`), with Manual
      restore approval only once approved (`approval`). A restore in progress is finished before an even
      better tier is considered, so steps never jump between targets.

    A restore held for approval that is no longer due ends here, with the reason.
    """
    c, t, first = routing.active, routing.restore, fit.first
    if first is None:
        _end_hold(plan, routing, tiers, evals, fit)
        _move_all(plan, routing, fit.last_resort, tiers, evals, fit, now_ms)
    elif not fit.eligible[c]:
        end_hold(plan, routing, f"{plan.names[c]} is unfit ({why(plan, tiers, evals, fit, c)[3]}) and traffic "
                                f"leaves it")
        to = min((i for i, ok in enumerate(fit.eligible) if ok and i != c),
                 key=lambda i: (not fit.evidence[i], i < c, i))
        _move_all(plan, routing, to, tiers, evals, fit, now_ms)
    elif t is not None:
        if not fit.eligible[t]:
            _move_all(plan, routing, c, tiers, evals, fit, now_ms)
        elif _proven(evals[t], routing.evidence):
            # min(): restoreSteps may have been shortened by a spec edit during the restore.
            _restore_step(plan, routing, t, min(routing.step + 1, len(plan.steps) - 1), now_ms)
    elif first < c:
        if restore_may_start(plan, routing, first, now_ms):
            _restore_step(plan, routing, first, 0, now_ms)
            tiers[first] = replace(tiers[first], probing=True)  # the probe: see `health.update_tier`
    else:
        _end_hold(plan, routing, tiers, evals, fit)


def _end_hold(plan: Plan, routing: Routing, tiers: list[TierState], evals: tuple[Eval, ...], fit: Fitness) -> None:
    """The held restore's tier is unfit again, or without evidence: end the hold, saying why."""
    held = routing.held
    if held is not None:
        text = "no evidence that it can serve" if fit.eligible[held] else why(plan, tiers, evals, fit, held)[3]
        end_hold(plan, routing, f"{plan.names[held]}: {text}")


def stall_record(plan: Plan, routing: Routing, evals: tuple[Eval, ...], held_by: str | None,
                 now_ms: int) -> AuditRecord:
    """RestoreStalled, saying where the restore stands and what it waits for."""
    assert routing.restore is not None and routing.last_transition_ms is not None
    names, t = plan.names, routing.restore
    ev = evals[t]
    if held_by is not None:
        waits = held_by
    elif ev.verdict is Verdict.INCONCLUSIVE:
        waits = (f"{names[t]} served {routing.evidence / 1000:.1f} of the {ev.floor} requests a step needs "
                 f"(too few per window)")
    elif ev.verdict is Verdict.MISSING:
        waits = f"no data for {', '.join(f'{names[t]}/{m}' for m in ev.missing)}"
    else:
        waits = f"{names[t]} reads {ev.verdict.value.lower()}"
    share = plan.steps[min(routing.step, len(plan.steps) - 1)]
    return AuditRecord(
        reasons.RESTORE_STALLED,
        f"restore step {routing.step + 1}/{len(plan.steps)} ({share}% to {names[t]}) has not advanced for "
        f"{(now_ms - routing.last_transition_ms) / 1000:.0f}s: {waits}",
        tier=names[t],
    )


def freeze_record(plan: Plan, routing: Routing, frozen: bool, exceeded: bool, ratio: float,
                  budget: float) -> AuditRecord:
    """Frozen or Unfrozen: creep.action Freeze took effect, or ended."""
    tier = plan.names[routing.active]
    if frozen:
        shares = ", ".join(f"{n} {w}%" for n, w in zip(plan.names, routing.weights) if w)
        return AuditRecord(
            reasons.FROZEN,
            f"fallback ratio {ratio:.3f} is over the budget {budget:g}: routing frozen ({shares}) until it is "
            f"within budget again; only a tier without ready replicas is still left, and override.pinTier "
            f"still applies", tier=tier)
    why_ = "the fallback ratio is within budget again" if not exceeded else "creep.action is no longer Freeze"
    return AuditRecord(reasons.UNFROZEN, f"routing follows the triggers again: {why_} ({ratio:.3f})", tier=tier)


def _proven(ev: Eval, evidence: int) -> bool:
    """The restore target earned its next step: clear in this evaluation, or too thin to judge but with
    enough requests added up since the step began (see `restore_evidence`)."""
    if ev.verdict is Verdict.CLEAR:
        return True
    return ev.verdict is Verdict.INCONCLUSIVE and not ev.thin_breach and evidence >= ev.floor * 1000


def _move_all(plan: Plan, routing: Routing, to: int, tiers: list[TierState], evals: tuple[Eval, ...],
              fit: Fitness, now_ms: int) -> None:
    weights = [0] * len(plan.names)
    weights[to] = 100
    if weights == routing.weights:
        return
    names, c, t = plan.names, routing.active, routing.restore
    if t is not None and to != t:
        trigger, observed, threshold, text = why(plan, tiers, evals, fit, t)
        # A relapse (the tier tripped) is a failed probe, which the backoff spaces out; a tier that lost its
        # pods or its capacity is back as soon as it has them.
        after = (f"; next probe after {plan.clear_needed(tiers[t].failed_probes)} clear evaluations"
                 if tiers[t].tripped else "")
        routing.audit.append(AuditRecord(
            reasons.RESTORE_ABORTED,
            f"{names[t]} failed during restore ({text}); all traffic to {names[to]}{after}",
            tier=names[t], trigger=trigger, observed=observed, threshold=threshold,
            from_tier=names[t], to_tier=names[to],
        ))
    if to != c:
        trigger, observed, threshold, text = why(plan, tiers, evals, fit, c)
        worse = to > c
        routing.audit.append(AuditRecord(
            reasons.FALLBACK_ACTIVATED if worse else reasons.RESTORED,
            f"{names[c]} unfit ({text}); all traffic {'falls back' if worse else 'returns'} to {names[to]}",
            tier=names[c], trigger=trigger, observed=observed, threshold=threshold,
            from_tier=names[c], to_tier=names[to],
        ))
    routing.weights, routing.active, routing.restore, routing.step = weights, to, None, 0
    routing.evidence = 0
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
    routing.weights, routing.evidence = weights, 0
    routing.last_transition_ms = now_ms
