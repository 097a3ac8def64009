"""Scheduled fallback drills: exercise a fallback before an incident needs it.

Pure like `decide`: the shell passes what it knows (the drills, the decision just made, the readings, the
drill in progress, when each fallback was last drilled, now) and applies the returned step. A drill only
borrows a share of traffic while the primary serves everything; `decide` never sees it, so hysteresis and
creep accounting are not disturbed by an intentional exercise. A fallback that breaches one of its own
triggers while drilled ends the drill at once: a drill must never leave traffic on a failing fallback.
A drill passes only on evidence: every trigger that applies to the fallback must have had a reading while
it served. A drill that measured nothing (a small share of little traffic reads below minRequests) is
Inconclusive, never Passed: certifying a fallback nobody measured would be worse than no drill.
No drill sends traffic in Observe mode or while spec.override.paused holds the routing.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping

from understudy.engine.decide import Decision
from understudy.engine.model import PRIMARY, AuditRecord, Mode, Policy, ReadingStatus, Samples

DRILL_STARTED = "DrillStarted"
DRILL_PASSED = "DrillPassed"
DRILL_FAILED = "DrillFailed"
DRILL_ABORTED = "DrillAborted"
DRILL_SKIPPED = "DrillSkipped"
DRILL_INCONCLUSIVE = "DrillInconclusive"
DRILL_REASONS = (DRILL_STARTED, DRILL_PASSED, DRILL_FAILED, DRILL_ABORTED, DRILL_SKIPPED, DRILL_INCONCLUSIVE)


@dataclass(frozen=True)
class Drill:
    tier: str
    every: float
    duration: float
    share: int


@dataclass(frozen=True)
class DrillRun:
    tier: str
    share: int
    started: float
    ends: float
    evidence: tuple[str, ...] = ()
    """The fallback's triggers that have had a reading while it served, sorted (status.drill.evidence)."""


@dataclass(frozen=True)
class DrillOutcome:
    tier: str
    time: float
    result: str
    """Passed, Failed, Inconclusive, Aborted or Skipped."""
    message: str


@dataclass(frozen=True)
class DrillStep:
    running: DrillRun | None
    weights: tuple[tuple[str, int], ...] | None
    """The routing while a drill runs; None means route the decision's weights."""
    outcome: DrillOutcome | None
    audit: tuple[AuditRecord, ...]


def step_drills(drills: tuple[Drill, ...], policy: Policy, decision: Decision, samples: Samples,
                running: DrillRun | None, last: Mapping[str, float], created: float, now: float) -> DrillStep:
    """Continue, end, start or skip a drill for this evaluation."""
    if running is not None:
        return _continue(policy, decision, samples, running, now)
    for drill in drills:
        if now - last.get(drill.tier, created) < drill.every:
            continue
        busy = _busy(policy, decision)
        if busy:
            outcome = DrillOutcome(drill.tier, now, "Skipped", f"drill of {drill.tier} skipped: {busy}")
            return DrillStep(None, None, outcome, (AuditRecord(DRILL_SKIPPED, outcome.message, tier=drill.tier),))
        run = DrillRun(drill.tier, drill.share, now, now + drill.duration)
        message = (f"drill: {drill.share}% of traffic to {drill.tier} for {drill.duration:g}s, "
                   f"its triggers checked while it serves")
        return DrillStep(run, _split(policy, run), None,
                         (AuditRecord(DRILL_STARTED, message, tier=drill.tier, to_tier=drill.tier),))
    return DrillStep(None, None, None, ())


def _busy(policy: Policy, decision: Decision) -> str | None:
    """Why no drill may start now, or None when the primary steadily serves everything."""
    if policy.mode is Mode.OBSERVE:
        return "the policy is in Observe mode"
    if not decision.route or policy.pinned_tier is not None:
        return "an override is in effect"
    if dict(decision.weights).get(PRIMARY) != 100:
        return "a fallback is serving traffic"
    if decision.creep_exceeded:
        return "the creep budget is exceeded"
    return None


def _continue(policy: Policy, decision: Decision, samples: Samples, run: DrillRun, now: float) -> DrillStep:
    busy = _busy(policy, decision)
    if busy:
        return _end(run, now, "Aborted", DRILL_ABORTED, f"drill of {run.tier} ended early: {busy}")
    readings = samples.readings.get(run.tier, {})
    applicable = [t for t in policy.triggers if t.applies(run.tier)]
    evidence = set(run.evidence)
    for trigger in applicable:
        reading = readings.get(trigger.name)
        value = reading.value if reading is not None and reading.status is ReadingStatus.OK else None
        if value is None or value != value:  # no data, too few requests, or NaN: no evidence either way
            continue
        if trigger.breached_by(value):
            message = (f"drill of {run.tier} failed: {trigger.name} {value:g} "
                       f"{trigger.comparison.value} {trigger.threshold:g}; traffic is back on the primary")
            step = _end(run, now, "Failed", DRILL_FAILED, message)
            record = AuditRecord(DRILL_FAILED, message, tier=run.tier, trigger=trigger.name,
                                 observed=value, threshold=trigger.threshold)
            return DrillStep(None, None, step.outcome, (record,))
        evidence.add(trigger.name)
    run = replace(run, evidence=tuple(sorted(evidence)))
    if now >= run.ends:
        served = f"{run.share}% of traffic for {run.ends - run.started:g}s"
        unread = [t.name for t in applicable if t.name not in evidence]
        if unread:
            return _end(run, now, "Inconclusive", DRILL_INCONCLUSIVE,
                        f"drill of {run.tier} inconclusive: no reading of {', '.join(unread)} while it served "
                        f"{served}, so nothing was proven (LastDrillPassed is left as it was)")
        return _end(run, now, "Passed", DRILL_PASSED,
                    f"drill of {run.tier} passed: {served}, every trigger read without a breach")
    return DrillStep(run, _split(policy, run), None, ())


def _end(run: DrillRun, now: float, result: str, reason: str, message: str) -> DrillStep:
    outcome = DrillOutcome(run.tier, now, result, message)
    return DrillStep(None, None, outcome, (AuditRecord(reason, message, tier=run.tier),))


def _split(policy: Policy, run: DrillRun) -> tuple[tuple[str, int], ...]:
    return tuple((name, 100 - run.share if name == PRIMARY else run.share if name == run.tier else 0)
                 for name in policy.tier_names)
