"""What `kubectl understudy` shows of one FallbackPolicy, built from the API objects alone (pure).

The status does not keep every reading: writing one per evaluation would cost an API write per policy per
interval. What it keeps is the engine's verdict per tier (tripped, and the streaks of `status.engine`), and
the audit trail keeps the values that mattered: the reading that tripped a tier (its TierTripped Event, or
the history entry of the move it caused) and the signals that had no data (the open MetricsMissing
episode). A trigger's line shows that, and says where it comes from; it never invents a value.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from pydantic import ValidationError

from understudy.api.convert import to_engine_policy
from understudy.api.errors import field_path
from understudy.api.models import FallbackPolicySpec, Trigger
from understudy.audit.reasons import TRANSITION_REASONS
from understudy.engine import PRIMARY, Policy, RestoreApproval, restore_state
from understudy.engine.plan import plan_for
from understudy.kubectl.timeline import Entry, merged, policy_events, seconds

RECENT = 5
"""Transitions `get` lists under the tree."""


class PolicyUnreadable(ValueError):
    """The spec is not one the models accept: nothing sensible can be said about its tiers."""


@dataclass(frozen=True)
class TriggerView:
    name: str
    limit: str
    """The threshold as the spec writes it, with its comparison: "above 1s", "below 0.5"."""
    unit: str
    """The unit of an observed value: "ms" for latency, "" for ratios and custom queries."""
    state: str
    """"breached" (it tripped the tier), "no data" (a MetricsMissing episode names it), "ok" (the tier's
    last conclusive evaluation breached nothing), or "" when the status cannot tell."""
    observed: str | None = None
    """The value the audit trail recorded for the breach, in `unit`."""
    observed_at: float | None = None
    source: str | None = None
    """The record the value comes from, e.g. "TierTripped"."""


@dataclass(frozen=True)
class TierView:
    name: str
    deployment: str
    weight: int
    ready: int | None
    """Ready replicas of the Deployment; None when it does not exist."""
    desired: int | None
    tripped: bool
    trip_trigger: str | None
    breach_streak: int
    clear_streak: int
    unready: bool
    capacity_short: bool
    triggers: tuple[TriggerView, ...]
    failed_probes: int
    """Consecutive failed probes of the tier (the probe backoff), as the capped counter knows them."""
    clear_needed: int
    """Consecutive clear evaluations the tier needs to recover now: recoverAfter, doubled per failed probe."""


@dataclass(frozen=True)
class Condition:
    type: str
    status: str
    reason: str
    message: str
    since: float | None


@dataclass(frozen=True)
class PolicyView:
    namespace: str
    name: str
    mode: str
    generation: int | None
    observed_generation: int | None
    evaluated: bool
    """The operator has written the engine's state: False for a policy it has not evaluated yet."""
    active_tier: str
    tiers: tuple[TierView, ...]
    trip_after: int
    recover_after: int
    interval: float
    min_dwell: float
    restore_steps: tuple[int, ...]
    last_move: float | None
    """When traffic last moved (epoch seconds)."""
    restore: tuple[str, int] | None
    """(tier, step index) of a restore under way."""
    manual_approval: bool
    held: tuple[str, float] | None
    """(tier, since) of a restore held for an approval."""
    approved_at: str | None
    override_by: str | None
    pinned: str | None
    paused: bool
    frozen: bool
    fallback_ratio: str | None
    creep_budget: str
    creep_window: str
    creep_action: str
    creep_exceeded: bool
    metrics_missing: bool
    on_missing_data: str
    drill: Mapping[str, Any] | None
    last_drills: tuple[Mapping[str, Any], ...]
    conditions: tuple[Condition, ...]
    transitions: tuple[Entry, ...]
    """The whole merged trail (status.history and Events), oldest first."""
    repaired: tuple[str, ...]
    """What the engine's read-back of status.engine would repair (normally nothing)."""

    @property
    def recent(self) -> tuple[Entry, ...]:
        return tuple(e for e in self.transitions if e.reason in TRANSITION_REASONS)[-RECENT:]

    def tier(self, name: str) -> TierView:
        return next(t for t in self.tiers if t.name == name)


def engine_policy(spec: Mapping[str, Any]) -> tuple[FallbackPolicySpec, Policy]:
    try:
        validated = FallbackPolicySpec.model_validate(spec)
    except ValidationError as error:
        raise PolicyUnreadable("; ".join(f"{field_path(('spec', *e['loc']))}: {e['msg']}"
                                         for e in error.errors(include_url=False))) from None
    return validated, to_engine_policy(validated)


def build(obj: Mapping[str, Any], deployments: Mapping[str, Mapping[str, Any]],
          events: Sequence[Mapping[str, Any]], now: float) -> PolicyView:
    """The view of one policy object, its tiers' Deployments (by name) and the Events regarding it."""
    meta, status = obj.get("metadata") or {}, obj.get("status") or {}
    spec, policy = engine_policy(obj.get("spec") or {})
    restored = restore_state(policy, status.get("engine"), now)
    state = restored.state
    trail = merged(status.get("history") or [], policy_events(events, meta.get("uid")))
    weights = {w.get("tier"): w.get("weight", 0) for w in status.get("weights") or []} or dict(state.weights)
    conditions = tuple(Condition(str(c.get("type")), str(c.get("status")), str(c.get("reason") or ""),
                                 str(c.get("message") or ""), seconds(c.get("lastTransitionTime")))
                       for c in status.get("conditions") or [])
    missing = _missing(trail) if state.metrics_missing else set()
    limits = {t.name: _limit(t) for t in spec.triggers}
    plan = plan_for(policy)
    tiers = []
    for tier, ts, applicable in zip(policy.tiers, state.tiers, plan.triggers):
        found = deployments.get(tier.deployment)
        trips = _trip_values(trail, tier.name) if ts.tripped else {}
        tiers.append(TierView(
            name=tier.name, deployment=tier.deployment, weight=int(weights.get(tier.name, 0)),
            ready=None if found is None else int((found.get("status") or {}).get("readyReplicas") or 0),
            desired=None if found is None else int((found.get("spec") or {}).get("replicas", 1)),
            tripped=ts.tripped, trip_trigger=ts.trip_trigger, breach_streak=ts.breach_streak,
            clear_streak=ts.clear_streak, unready=ts.unready, capacity_short=ts.capacity_short,
            failed_probes=ts.failed_probes, clear_needed=plan.clear_needed(ts.failed_probes),
            triggers=tuple(_trigger(t.name, limits[t.name], ts.tripped, ts.trip_trigger, ts.breach_streak,
                                    (tier.name, t.name) in missing, trips.get(t.name)) for t in applicable),
        ))
    override, creep = spec.override, spec.creep
    return PolicyView(
        namespace=str(meta.get("namespace") or ""), name=str(meta.get("name") or ""), mode=spec.mode.value,
        generation=meta.get("generation"), observed_generation=status.get("observedGeneration"),
        evaluated=status.get("engine") is not None,
        active_tier=str(status.get("activeTier") or state.active_tier), tiers=tuple(tiers),
        trip_after=policy.trip_after, recover_after=policy.recover_after, interval=policy.interval,
        min_dwell=policy.min_dwell, restore_steps=plan.steps,
        last_move=None if state.last_transition_ms is None else state.last_transition_ms / 1000,
        restore=None if state.restore_tier is None else (state.restore_tier, state.restore_step),
        manual_approval=policy.restore_approval is RestoreApproval.MANUAL,
        held=None if state.held_tier is None or state.held_since_ms is None else (
            state.held_tier, state.held_since_ms / 1000),
        approved_at=override.restore_approved_at if override else None,
        override_by=override.by if override else None,
        pinned=state.pinned_tier if state.pinned_tier is not None else policy.pinned_tier, paused=policy.paused,
        frozen=state.frozen, fallback_ratio=status.get("fallbackRatio"), creep_budget=creep.max_fallback_ratio,
        creep_window=creep.window, creep_action=creep.action.value, creep_exceeded=state.creep_exceeded,
        metrics_missing=state.metrics_missing, on_missing_data=policy.on_missing_data.value,
        drill=status.get("drill"), last_drills=tuple(status.get("lastDrills") or ()), conditions=conditions,
        transitions=tuple(trail), repaired=restored.repaired if status.get("engine") is not None else (),
    )


def _limit(trigger: Trigger) -> tuple[str, str]:
    """("above 1s", "ms"): the spec's threshold with its comparison, and the unit of observed values."""
    if trigger.latency is not None:
        return f"above {trigger.latency.above}", "ms"
    if trigger.error_ratio is not None:
        return f"above {trigger.error_ratio.above}", ""
    if trigger.ready_replicas is not None:
        return f"below {trigger.ready_replicas.below_ratio}", ""
    query = trigger.query
    assert query is not None, "the model guarantees exactly one signal"
    return (f"above {query.above}", "") if query.above is not None else (f"below {query.below}", "")


def _trigger(name: str, limit: tuple[str, str], tripped: bool, trip_trigger: str | None, breach_streak: int,
             missing: bool, trip: Entry | None) -> TriggerView:
    text, unit = limit
    if tripped and trip_trigger == name:
        if trip is None:
            return TriggerView(name, text, unit, "breached")
        return TriggerView(name, text, unit, "breached", trip.observed, trip.time, trip.reason)
    if missing:
        return TriggerView(name, text, unit, "no data")
    return TriggerView(name, text, unit, "ok" if not tripped and breach_streak == 0 else "")


def _trip_values(trail: Sequence[Entry], tier: str) -> dict[str, Entry]:
    """The record of each trigger's reading that tripped `tier` in its current episode: its TierTripped Event
    after its last TierRecovered, else the latest history entry of a move away from it that names one."""
    found: dict[str, Entry] = {}
    for entry in trail:
        if entry.reason == "TierRecovered" and entry.tier == tier:
            found.clear()
        elif entry.trigger and entry.observed is not None and (
                entry.reason == "TierTripped" and entry.tier == tier
                or entry.reason in ("FallbackActivated", "RestoreAborted") and entry.from_tier == tier):
            if entry.reason == "TierTripped" or entry.trigger not in found:
                found[entry.trigger] = entry
    return found


def _missing(trail: Sequence[Entry]) -> set[tuple[str, str]]:
    """(tier, trigger) pairs the open MetricsMissing episode names ("no data for primary/p99, ...")."""
    latest = next((e for e in reversed(trail) if e.reason == "MetricsMissing"), None)
    if latest is None or not latest.message.startswith("no data for "):
        return set()
    listed = latest.message[len("no data for "):].partition(" (")[0]
    return {(tier, trigger) for tier, _, trigger in (p.strip().partition("/") for p in listed.split(","))}


def primary_serves_all(view: PolicyView) -> bool:
    return view.active_tier == PRIMARY and view.restore is None and view.tier(PRIMARY).weight == 100
