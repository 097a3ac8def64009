"""Replay a history through the operator's own engine, and summarise what it would have done.

Pure: no I/O, no clock. The replay starts from `initial_state` and runs, once per step with `now` = the
step's time, exactly what the operator runs once per evaluation interval: `capacity_fit`, `decide`,
`step_drills` and `govern`, so the answer is the engine's answer and not a re-implementation of it. What
the summary counts comes from the audit records they return (the same words the operator posts as
Events) and from the intents `govern` issues, and time is credited the way the engine's creep accounting
credits it: the weights set at one step hold until the next.

A replay cannot know how the traffic would have moved had the policy routed it: it judges the history
as it was recorded (for a policy that did not exist yet, or ran in Observe mode, that is exact). What it
must assume about revisions and replicas to govern is in `backtest.cluster`, and said in the report.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from itertools import chain
from typing import Iterable, Mapping

from understudy.backtest.cluster import AssumedCluster, Step, starting_state
from understudy.engine import (
    AuditRecord,
    Decision,
    Mode,
    Policy,
    ReadingStatus,
    RestoreApproval,
    decide,
    initial_state,
)
from understudy.engine import reasons
from understudy.engine.drills import Drill, DrillRun, step_drills
from understudy.engine.governance import SCALED_UP, TierCapacity, capacity_fit, govern
from understudy.engine.intents import IntentOutcome, RollbackIntent, ScaleIntent

MOVES = (reasons.FALLBACK_ACTIVATED, reasons.RESTORE_STEP, reasons.RESTORED, reasons.RESTORE_ABORTED)
"""Audit reasons that accompany a change of the weights."""
FROZEN = "Frozen"
"""The record `decide` gives when creep.action Freeze holds the routing."""


@dataclass(frozen=True)
class Event:
    """One audit record and the step it was decided at."""

    at: float
    record: AuditRecord


@dataclass
class Replay:
    """Everything one replay observed, step by step, in compact form (a week at 5s is 120,960 steps)."""

    policy: Policy
    step: float
    times: list[float] = field(default_factory=list)
    weights: list[tuple[int, ...]] = field(default_factory=list)
    """Weights after each step's decision, in policy tier order."""
    active: list[str] = field(default_factory=list)
    signals: dict[tuple[str, str], list[float | None]] = field(default_factory=dict)
    """(tier, trigger) -> the reading at each step; None where it was missing or too few requests."""
    events: list[Event] = field(default_factory=list)
    unavailable: int = 0
    """Steps where a signal of a tier carrying traffic had no data."""
    peak_window_ratio: float = 0.0
    """The highest off-primary time over max(observed time, creep window), the quantity the budget caps."""
    peak_at: float | None = None
    last: Decision | None = None
    approval_delay: float = 0.0
    """Seconds a person is taken to need to approve a held restore (restoreApproval Manual)."""
    rollbacks: list[tuple[float, str]] = field(default_factory=list)
    """(time, revision) of each rollback `govern` asked for."""
    scales: list[tuple[float, ScaleIntent]] = field(default_factory=list)
    drills: Counter[str] = field(default_factory=Counter)
    """Drill outcomes by result: Passed, Failed, Inconclusive, Aborted, Skipped."""


def backtest_policy(policy: Policy, step: float, approval_delay: float = 0.0) -> tuple[Policy, tuple[str, ...]]:
    """The policy as a replay must run it, and notes saying what was changed and why.

    `interval` becomes the step: the engine credits at most two intervals of time per evaluation (to
    ignore operator downtime), so a step longer than that would silently drop time off the primary.
    A pin, pause or recorded approval is dropped: a backtest asks what the rules would have done, not a
    person; with Manual restore approval, `replay` approves each held restore `approval_delay` after it
    fell due. Observe mode is replayed as Enforce, so the report shows the rollbacks, scales and drills it
    would do once enforced.
    """
    notes: list[str] = []
    if abs(step - policy.interval) > 1e-9:
        notes.append(
            f"step {step:g}s differs from evaluation.interval {policy.interval:g}s: tripAfter and recoverAfter "
            f"count steps, so they span {step / policy.interval:g}x the time they would in the operator"
        )
    if policy.pinned_tier is not None or policy.paused:
        notes.append("spec.override (pin or pause) ignored: the replay shows what the triggers would have done")
    if policy.mode is Mode.OBSERVE:
        notes.append("mode Observe replayed as Enforce: the report shows what the policy would do once enforced")
    if policy.restore_approval is RestoreApproval.MANUAL:
        notes.append(f"restoreApproval Manual: each held restore is taken as approved {approval_delay:g}s after it "
                     f"fell due (--approval-delay), so it starts at the first step from then; 'approvals' lists them")
    return replace(policy, interval=step, pinned_tier=None, paused=False, mode=Mode.ENFORCE,
                   restore_approved_at=None, override_by=None), tuple(notes)


def replay(policy: Policy, history: Iterable[Step], step: float, drills: tuple[Drill, ...] = (),
           capacities: Mapping[str, TierCapacity] | None = None, approval_delay: float = 0.0) -> Replay:
    """Run the engine over `history` (steps in increasing time) from the initial state.

    The policy is taken as created at the first step, so a drill first falls due one period later. With
    Manual restore approval, each held restore is approved `approval_delay` seconds after it fell due (an
    approval dated then, which the engine honours from that time on).
    """
    capacities = capacities or {}
    result = Replay(policy=policy, step=step, approval_delay=approval_delay)
    deciding = policy
    """The policy as `decide` sees it: `policy` with the approval of the restore held last, if any."""
    keys = [(tier, trigger.name) for tier in policy.tier_names for trigger in policy.triggers
            if trigger.applies(tier)]
    for key in keys:
        result.signals[key] = []
    window_ms = policy.creep_window * 1000
    steps = iter(history)
    first = next(steps, None)
    if first is None:
        return result
    created = first.at
    state = initial_state(policy)
    cluster = AssumedCluster(policy)
    governance = starting_state(created)
    outcomes: list[IntentOutcome] = []
    running: DrillRun | None = None
    last_drills: dict[str, float] = {}
    for moment in chain([first], steps):
        at, samples = moment.at, moment.samples
        facts = cluster.facts(moment)
        if capacities:
            samples = replace(samples, capacity={**samples.capacity, **capacity_fit(capacities, facts)})
        decision = decide(deciding, samples, state, at)
        state = decision.state
        if state.held_since_ms is not None and deciding.restore_approved_at != (
                approved := state.held_since_ms / 1000 + approval_delay):
            deciding = replace(policy, restore_approved_at=approved)
        drill = step_drills(drills, policy, decision, samples, running, last_drills, created, at)
        running = drill.running
        if drill.outcome is not None:
            last_drills[drill.outcome.tier] = drill.outcome.time
            result.drills[drill.outcome.result] += 1
        governed = govern(policy, capacities, decision, facts, governance, outcomes, at)
        governance = governed.state
        outcomes = cluster.carry_out(governed.intents, at)
        for intent in governed.intents:
            if isinstance(intent, RollbackIntent):
                result.rollbacks.append((at, intent.revision))
            else:
                result.scales.append((at, intent))
        result.times.append(at)
        result.weights.append(tuple(w for _, w in decision.weights))
        result.active.append(decision.active_tier)
        for tier, trigger in keys:
            reading = samples.readings.get(tier, {}).get(trigger)
            ok = reading is not None and reading.status is ReadingStatus.OK
            result.signals[(tier, trigger)].append(reading.value if ok and reading else None)
        result.events.extend(Event(at, record) for record in (*decision.audit, *drill.audit, *governed.audit))
        result.unavailable += not decision.metrics_available
        # Off-primary time only grows after a step that left the primary some traffic short; skipping the
        # sums otherwise keeps a quiet week cheap.
        if len(result.weights) > 1 and result.weights[-2][0] < 100:
            off = sum(b.off_primary_ms for b in state.creep_buckets)
            observed = sum(b.observed_ms for b in state.creep_buckets)
            ratio = off / max(observed, window_ms)
            if ratio > result.peak_window_ratio:
                result.peak_window_ratio, result.peak_at = ratio, at
        result.last = decision
    return result


@dataclass(frozen=True)
class TierTime:
    tier: str
    active_seconds: float
    """Time the tier was the active (anchor) tier."""
    traffic_seconds: float
    """Time weighted by the tier's share of traffic: the tiers' values add up to the replayed time."""


@dataclass(frozen=True)
class TriggerCount:
    tier: str
    trigger: str
    trips: int
    """Times the trigger tripped the tier (TierTripped)."""
    breached: int
    """Evaluations whose reading was past the threshold: more than trips x tripAfter shows near misses."""


@dataclass(frozen=True)
class Approval:
    """One restore held for an approval, and how it ended."""

    held_at: float
    tier: str
    """The better tier the restore would go to."""
    approved_at: float | None
    """When it was approved (None: it was no longer due before, or the range ended first)."""


def approvals(events: Iterable[Event]) -> tuple[Approval, ...]:
    """Each RestoreAwaitingApproval with the RestoreApproved that released it, if one did."""
    found: list[Approval] = []
    for e in events:
        reason = e.record.reason
        if reason == reasons.RESTORE_AWAITING_APPROVAL:
            found.append(Approval(e.at, e.record.tier or "", None))
        elif reason == reasons.RESTORE_APPROVED and found and found[-1].approved_at is None:
            found[-1] = replace(found[-1], tier=e.record.to_tier or found[-1].tier, approved_at=e.at)
    return tuple(found)


@dataclass(frozen=True)
class Summary:
    start: float
    end: float
    step: float
    evaluations: int
    activations: int
    """FallbackActivated records: moves of all traffic to a worse tier."""
    episodes: int
    """Times the primary went from all traffic to less."""
    transitions: int
    """Weight changes of any kind (fallbacks, restore steps, aborts): the flaps a person would see."""
    transitions_by_reason: dict[str, int]
    tiers: tuple[TierTime, ...]
    triggers: tuple[TriggerCount, ...]
    """Which triggers tripped which tier, and how often."""
    fallback_ratio: float
    """Share of the replayed traffic-time off the primary."""
    creep_max_ratio: float
    creep_window: float
    peak_window_ratio: float
    peak_at: float | None
    creep_exceeded: bool
    creep_exceeded_at: tuple[float, ...]
    unavailable_evaluations: int
    timeline: tuple[Event, ...]
    rollbacks: tuple[tuple[float, str], ...] = ()
    """(time, revision) of each rollback of the primary the policy would have done."""
    freezes: tuple[float, ...] = ()
    """When creep.action Freeze would have frozen the routing."""
    scale_ups: tuple[tuple[float, str, int], ...] = ()
    """(time, tier, replicas) of each scale-up of a fallback."""
    scale_downs: tuple[tuple[float, str, int], ...] = ()
    drills: Mapping[str, int] = field(default_factory=dict)
    """Drill outcomes by result."""
    manual_approval: bool = False
    """The policy holds restores for an approval (restoreApproval Manual)."""
    approvals: tuple[Approval, ...] = ()
    """Restores held for an approval: where a person would have been needed."""


def summarise(result: Replay) -> Summary:
    """The numbers a person asks of a backtest, from one replay."""
    names = result.policy.tier_names
    active = dict.fromkeys(names, 0.0)
    traffic = [0.0] * len(names)
    for i in range(1, len(result.times)):
        dt = result.times[i] - result.times[i - 1]
        active[result.active[i - 1]] += dt
        for k, w in enumerate(result.weights[i - 1]):
            traffic[k] += dt * w / 100
    total = sum(traffic)
    start = tuple(100 if k == 0 else 0 for k in range(len(names)))
    pairs = list(zip([start, *result.weights], result.weights))
    by_reason = Counter(e.record.reason for e in result.events if e.record.reason in MOVES)
    trips = Counter((e.record.tier or "", e.record.trigger or "") for e in result.events
                    if e.record.reason == reasons.TIER_TRIPPED)
    exceeded_at = tuple(e.at for e in result.events if e.record.reason == reasons.CREEP_BUDGET_EXCEEDED)
    trigger_of = {t.name: t for t in result.policy.triggers}
    breached = {key: sum(1 for v in values if v is not None and trigger_of[key[1]].breached_by(v))
                for key, values in result.signals.items()}
    return Summary(
        start=result.times[0] if result.times else 0.0,
        end=result.times[-1] if result.times else 0.0,
        step=result.step,
        evaluations=len(result.times),
        activations=by_reason[reasons.FALLBACK_ACTIVATED],
        episodes=sum(1 for before, after in pairs if before[0] == 100 and after[0] < 100),
        transitions=sum(1 for before, after in pairs if before != after),
        transitions_by_reason=dict(sorted(by_reason.items())),
        tiers=tuple(TierTime(n, active[n], traffic[k]) for k, n in enumerate(names)),
        triggers=tuple(TriggerCount(tier, trigger, trips[(tier, trigger)], breached.get((tier, trigger), 0))
                       for tier in names for trigger in trigger_of
                       if trips[(tier, trigger)] or breached.get((tier, trigger), 0)),
        fallback_ratio=(total - traffic[0]) / total if total else 0.0,
        creep_max_ratio=result.policy.creep_max_ratio,
        creep_window=result.policy.creep_window,
        peak_window_ratio=result.peak_window_ratio,
        peak_at=result.peak_at,
        creep_exceeded=bool(exceeded_at),
        creep_exceeded_at=exceeded_at,
        unavailable_evaluations=result.unavailable,
        timeline=tuple(result.events),
        rollbacks=tuple(result.rollbacks),
        freezes=tuple(e.at for e in result.events if e.record.reason == FROZEN),
        scale_ups=tuple((at, i.tier, i.replicas) for at, i in result.scales if i.reason == SCALED_UP),
        scale_downs=tuple((at, i.tier, i.replicas) for at, i in result.scales if i.reason != SCALED_UP),
        drills=dict(sorted(result.drills.items())),
        manual_approval=result.policy.restore_approval is RestoreApproval.MANUAL,
        approvals=approvals(result.events),
    )
