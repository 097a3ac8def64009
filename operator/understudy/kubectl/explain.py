"""`kubectl understudy explain`: the last decision in sentences (pure: a PolicyView and a time in, text out).

Three paragraphs: who serves and why; what must happen for traffic to return, and roughly when; the creep
budget. The estimate is the earliest the rules allow if the better tier reads clear from now on: the
engine's own arithmetic (recoverAfter x interval, minDwell, one step per restoreSteps entry), nothing more.
"""
from __future__ import annotations

import textwrap

from understudy.backtest.render import span, when
from understudy.engine import PRIMARY
from understudy.engine.plan import PROBE_BACKOFF_CAP
from understudy.kubectl.render import ago, at, reading, unfit
from understudy.kubectl.view import PolicyView, TierView, primary_serves_all

WIDTH = 100


def explain(view: PolicyView, now: float) -> str:
    ref = f"{view.namespace}/{view.name}"
    if not view.evaluated:
        return _wrap([f"The operator has not evaluated {ref} yet: its status holds no decision. Is the operator "
                      f"running, and does it watch namespace {view.namespace}?"])
    paragraphs = [" ".join(_situation(view, now))]
    if not primary_serves_all(view):
        paragraphs.append(" ".join(_return(view, now)))
    paragraphs.append(_creep(view))
    return _wrap(paragraphs)


def _wrap(paragraphs: list[str]) -> str:
    return "\n\n".join(textwrap.fill(p, WIDTH, break_on_hyphens=False, break_long_words=False)
                       for p in paragraphs) + "\n"


def _situation(view: PolicyView, now: float) -> list[str]:
    out = []
    if view.mode == "Observe":
        out.append("Mode Observe: this is what the policy would do; the routing object is left as it is.")
    since = f" since {at(view.last_move)} ({ago(view.last_move, now)})" if view.last_move is not None else ""
    if primary_serves_all(view):
        primary = view.tier(PRIMARY)
        out.append(f"The primary has served all traffic{since}.")
        out.append(f"It breached a trigger in its last {primary.breach_streak} evaluation(s); {view.trip_after} in "
                   f"a row trip it." if primary.breach_streak else "None of its triggers is breaching.")
    elif view.restore is not None:
        target, step = view.restore
        share = view.restore_steps[step]
        out.append(f"Traffic is returning to {target}: restore step {step + 1} of {len(view.restore_steps)} has sent "
                   f"it {share}%{since}, and {100 - share}% stays on {view.active_tier}.")
    else:
        share = view.tier(view.active_tier).weight
        out.append(f"{view.active_tier} has served {share}% of the traffic{since}.")
    for tier in view.tiers:
        if tier.name == view.active_tier or view.restore is not None and tier.name == view.restore[0]:
            break
        why = _why_not(tier)
        if why:
            out.append(why + ".")
    last = next((e for e in reversed(view.transitions) if e.reason in ("FallbackActivated", "RestoreAborted",
                                                                       "AllTiersBreached")), None)
    if last is not None and not primary_serves_all(view):
        out.append(f"The last move away: {last.reason} at {when(last.time)}: {last.message}.")
    out += _overrides(view)
    if view.metrics_missing:
        held = " keeps routing as it is until they return" if view.on_missing_data == "Hold" else \
            " reads them as breaches on the tiers that serve"
        out.append(f"Some signals have no data (MetricsMissing); onMissingData {view.on_missing_data}{held}.")
    return out


def _why_not(tier: TierView) -> str | None:
    """Why a better tier does not serve, in a sentence; None for a tier that could (the rest explains why)."""
    if tier.tripped:
        trigger = next((t for t in tier.triggers if t.name == tier.trip_trigger), None)
        if trigger is None:
            return f"{tier.name} tripped" + (f" on {tier.trip_trigger}" if tier.trip_trigger else "")
        if trigger.observed is None:
            return (f"{tier.name} tripped on {trigger.name} ({trigger.limit}); the value is no longer in the "
                    f"audit trail")
        return (f"{tier.name} tripped on {trigger.name}: it read {reading(trigger, trigger.observed)}, "
                f"{trigger.limit} ({trigger.source} at {when(trigger.observed_at or 0.0)})")
    reason = unfit(tier)
    return f"{tier.name} {reason}" if reason else None


def _overrides(view: PolicyView) -> list[str]:
    by = f" (override by {view.override_by})" if view.override_by else ""
    ref = f"{view.name} -n {view.namespace}"
    out = []
    if view.paused:
        out.append(f"Routing is paused by spec.override.paused{by}: the weights stay as they are and no Deployment "
                   f"is changed, while the triggers are still evaluated; `kubectl understudy resume {ref}` ends it.")
    if view.pinned:
        out.append(f"All traffic is pinned to {view.pinned} by spec.override.pinTier{by}: the triggers do not move "
                   f"it; `kubectl understudy unpin {ref}` hands routing back to them.")
    if view.frozen:
        out.append(f"creep.action Freeze holds routing while {view.fallback_ratio} of the last {view.creep_window} "
                   f"was off the primary (budget {view.creep_budget}): only a tier without ready replicas is still "
                   f"left; pinning the primary ends it.")
    return out


def _return(view: PolicyView, now: float) -> list[str]:
    """What must happen for traffic to return to the best tier that does not serve it all, and roughly when."""
    ref = f"{view.name} -n {view.namespace}"
    if view.restore is not None:
        left = len(view.restore_steps) - view.restore[1] - 1
        return [f"Each further step ({left} to go) needs {view.restore[0]} to read clear at its share, at least "
                f"minDwell ({span(view.min_dwell)}) after the previous one; a breach sends its share back at once "
                f"(RestoreAborted).",
                f"At the earliest, the restore completes in about {span(left * max(view.min_dwell, view.interval))}."]
    names = [t.name for t in view.tiers]
    target = view.tier(view.held[0]) if view.held is not None else view.tier(PRIMARY)
    out: list[str] = []
    wait = 0.0
    if target.tripped:
        count, failed = target.clear_needed, target.failed_probes
        remaining = max(count - target.clear_streak, 0)
        wait = remaining * view.interval
        needed = span(count * view.interval)
        if failed <= 0:
            rule = f"recoverAfter {view.recover_after}"
        else:
            row = f"{failed}" if failed < PROBE_BACKOFF_CAP else f"{PROBE_BACKOFF_CAP} or more"
            capped = ", at most a day" if count < view.recover_after << min(failed, PROBE_BACKOFF_CAP) else ""
            rule = (f"recoverAfter {view.recover_after} doubled for each of {row} failed probe"
                    f"{'s' if failed > 1 else ''} in a row{capped}: {count}")
        out.append(f"{target.name} must read clear for {count} evaluations in a row ({rule} x interval "
                   f"{span(view.interval)} = {needed}); it has {target.clear_streak} so far.")
    elif unfit(target):
        out.append(f"{target.name} {unfit(target)}, which must change first.")
    if view.last_move is not None:
        dwell = max(view.last_move + view.min_dwell - now, 0.0)
        wait = max(wait, dwell)
        out.append(f"The restore starts no sooner than minDwell ({span(view.min_dwell)}) after the last move"
                   + (f", {span(dwell)} from now." if dwell else ", which has passed."))
    if view.held is not None:
        out.append(f"It fell due at {at(view.held[1])} and waits for an approval (evaluation.restoreApproval "
                   f"Manual): `kubectl understudy approve {ref}` releases it.")
    elif view.manual_approval:
        out.append(f"Then it waits for an approval (evaluation.restoreApproval Manual): `kubectl understudy approve "
                   f"{ref}` once it is held.")
    steps = len(view.restore_steps)
    shares = " -> ".join(f"{s}%" for s in view.restore_steps)
    total = wait + (steps - 1) * max(view.min_dwell, view.interval)
    out.append(f"Then traffic returns in {steps} step(s) ({shares}), each after {target.name} reads clear at its "
               f"share and at least minDwell apart.")
    blocked = [w for w, on in (("paused", view.paused), ("pinned", view.pinned), ("frozen", view.frozen)) if on]
    if blocked:
        out.append(f"None of this happens while the policy is {' and '.join(blocked)}.")
    elif names.index(target.name) < names.index(view.active_tier):
        approval = " plus the time until it is approved" if view.manual_approval else ""
        out.append(f"At the earliest, if {target.name} reads clear from now on: in about {span(total)} "
                   f"({at(now + total)}){approval}.")
    # Tier names are lowercase DNS labels, so the first sentence reads on after the comma either way.
    out[0] = f"For traffic to return to {target.name}, {out[0][0].lower()}{out[0][1:]}"
    return out


def _creep(view: PolicyView) -> str:
    ratio = view.fallback_ratio if view.fallback_ratio is not None else "not yet known"
    state = "exceeded" if view.creep_exceeded else "not exceeded"
    return (f"Time off the primary: {ratio} of the time observed within the {view.creep_window} creep window; the "
            f"budget of {view.creep_budget} of the window is {state} (creep.action {view.creep_action}).")
