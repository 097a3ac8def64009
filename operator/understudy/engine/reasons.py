"""Stable audit reasons: Event reasons, status history entries and the README all use these words.

They are part of the public interface (people alert on them), so never rename one; add new ones instead.
Each marks the start or end of an episode, never one evaluation of an unchanged situation.
"""
from __future__ import annotations

TIER_TRIPPED = "TierTripped"
"""A tier breached a trigger for tripAfter consecutive evaluations (or once while on restore probation)."""
TIER_RECOVERED = "TierRecovered"
"""A tripped tier was clear for recoverAfter consecutive evaluations."""
FALLBACK_ACTIVATED = "FallbackActivated"
"""Traffic moved to a worse tier of the chain."""
RESTORE_STEP = "RestoreStep"
"""Part of the traffic went back to a better tier (one of restoreSteps)."""
RESTORED = "Restored"
"""All traffic is on the better tier again."""
RESTORE_ABORTED = "RestoreAborted"
"""The better tier failed during a restore; its share went back to the tier that was serving."""
RESTORE_STALLED = "RestoreStalled"
"""A restore step has not advanced within evaluation.restoreStallAfter; the note says what it waits for."""
RESTORE_AWAITING_APPROVAL = "RestoreAwaitingApproval"
"""evaluation.restoreApproval Manual: a restore is due and waits for a person's approval."""
RESTORE_APPROVED = "RestoreApproved"
"""A held restore was approved (spec.override.restoreApprovedAt) and starts."""
RESTORE_NO_LONGER_DUE = "RestoreNoLongerDue"
"""A held restore is no longer due (the better tier failed again, or a pin took over): a later restore needs a
new approval."""
ALL_TIERS_BREACHED = "AllTiersBreached"
"""No tier is fit to serve; the whenAllBreached tier serves anyway."""
CAPACITY_INSUFFICIENT = "CapacityInsufficient"
"""A tier that would have received traffic cannot carry it and was skipped."""
NO_READY_REPLICAS = "NoReadyReplicas"
"""A tier that would have received traffic has no ready replicas (its Deployment is missing or scaled to
zero) and was skipped."""
METRICS_MISSING = "MetricsMissing"
"""A signal of a tier that receives traffic has no data."""
METRICS_RESTORED = "MetricsRestored"
"""Every signal of the tiers that receive traffic has data again."""
FROZEN = "Frozen"
"""creep.action Freeze took effect: the creep budget is exceeded and routing holds where it is."""
UNFROZEN = "Unfrozen"
"""The freeze ended: the creep budget is met again (or creep.action changed)."""
PINNED = "Pinned"
UNPINNED = "Unpinned"
PAUSED = "Paused"
RESUMED = "Resumed"
CREEP_BUDGET_EXCEEDED = "CreepBudgetExceeded"
"""Time off the primary within the creep window is above the policy's budget."""
CREEP_BUDGET_RECOVERED = "CreepBudgetRecovered"
STATE_REPAIRED = "StateRepaired"
"""status.engine held fields that could not be trusted; they were repaired or dropped (the note lists them)."""

AUDIT_REASONS: tuple[str, ...] = (
    TIER_TRIPPED,
    TIER_RECOVERED,
    FALLBACK_ACTIVATED,
    RESTORE_STEP,
    RESTORED,
    RESTORE_ABORTED,
    RESTORE_STALLED,
    RESTORE_AWAITING_APPROVAL,
    RESTORE_APPROVED,
    RESTORE_NO_LONGER_DUE,
    ALL_TIERS_BREACHED,
    CAPACITY_INSUFFICIENT,
    NO_READY_REPLICAS,
    METRICS_MISSING,
    METRICS_RESTORED,
    PINNED,
    UNPINNED,
    PAUSED,
    RESUMED,
    CREEP_BUDGET_EXCEEDED,
    CREEP_BUDGET_RECOVERED,
    FROZEN,
    UNFROZEN,
    STATE_REPAIRED,
)
