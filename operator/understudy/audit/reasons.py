"""The audit vocabulary: every reason the engine or the shell may report, and how it is published.

Kept free of Kubernetes imports so the status builder and the metrics stay cheap to import and test.
The README documents this table; a reason's type and action never change once released, because
alerting rules and `kubectl events --types=Warning` filters are written against them.
"""
from __future__ import annotations

import logging
import math
from typing import Final, NamedTuple

from understudy.engine.model import AuditRecord

log = logging.getLogger(__name__)

NORMAL: Final = "Normal"
WARNING: Final = "Warning"


class EventKind(NamedTuple):
    """How one reason is published: the Event's `type` and its `action` verb."""

    type: str
    action: str


REASONS: Final[dict[str, EventKind]] = {
    # From the engine (understudy.engine.reasons), one per episode.
    "TierTripped": EventKind(WARNING, "Observe"),
    "TierRecovered": EventKind(NORMAL, "Observe"),
    "FallbackActivated": EventKind(WARNING, "Route"),
    "RestoreStep": EventKind(NORMAL, "Restore"),
    "Restored": EventKind(NORMAL, "Restore"),
    "RestoreAborted": EventKind(WARNING, "Restore"),
    "RestoreStalled": EventKind(WARNING, "Restore"),
    "RestoreAwaitingApproval": EventKind(WARNING, "Restore"),
    "RestoreApproved": EventKind(NORMAL, "Approve"),
    "RestoreNoLongerDue": EventKind(NORMAL, "Restore"),
    "AllTiersBreached": EventKind(WARNING, "Route"),
    "CapacityInsufficient": EventKind(WARNING, "Route"),
    "NoReadyReplicas": EventKind(WARNING, "Route"),
    "MetricsMissing": EventKind(WARNING, "Observe"),
    "MetricsRestored": EventKind(NORMAL, "Observe"),
    "Pinned": EventKind(NORMAL, "Override"),
    "Unpinned": EventKind(NORMAL, "Override"),
    "Paused": EventKind(NORMAL, "Override"),
    "Resumed": EventKind(NORMAL, "Override"),
    "CreepBudgetExceeded": EventKind(WARNING, "Observe"),
    "CreepBudgetRecovered": EventKind(NORMAL, "Observe"),
    "Frozen": EventKind(WARNING, "Freeze"),
    "Unfrozen": EventKind(NORMAL, "Freeze"),
    "StateRepaired": EventKind(WARNING, "Validate"),
    # From the shell and the engine's governance and drills: what happened when a decision met the cluster.
    "RoutingFailed": EventKind(WARNING, "Route"),
    "RoutingRestored": EventKind(NORMAL, "Route"),
    "Released": EventKind(NORMAL, "Release"),
    "ReleaseFailed": EventKind(WARNING, "Release"),
    "ScaledUp": EventKind(NORMAL, "Scale"),
    "ScaledDown": EventKind(NORMAL, "Scale"),
    "ScaleFailed": EventKind(WARNING, "Scale"),
    "ScaleBackSkipped": EventKind(NORMAL, "Scale"),
    "ActionWithheld": EventKind(NORMAL, "Withhold"),
    "RolledBack": EventKind(NORMAL, "Rollback"),
    "RollbackFailed": EventKind(WARNING, "Rollback"),
    "InvalidPolicy": EventKind(WARNING, "Validate"),
    "EvaluationFailed": EventKind(WARNING, "Evaluate"),
    "EventsSuppressed": EventKind(WARNING, "Audit"),
    "DrillStarted": EventKind(NORMAL, "Drill"),
    "DrillPassed": EventKind(NORMAL, "Drill"),
    "DrillFailed": EventKind(WARNING, "Drill"),
    "DrillInconclusive": EventKind(WARNING, "Drill"),
    "DrillAborted": EventKind(NORMAL, "Drill"),
    "DrillSkipped": EventKind(NORMAL, "Drill"),
}
"""Every reason -> (type, action). Warning marks a degradation or a failure to act."""

UNKNOWN_REASON: Final = EventKind(NORMAL, "Observe")
"""Published for a reason missing from REASONS: visible, never dropped, and logged so the table is fixed."""

TRANSITION_REASONS: Final[frozenset[str]] = frozenset({
    "FallbackActivated", "AllTiersBreached", "RestoreStep", "Restored", "RestoreAborted",
    "Pinned", "Unpinned", "Paused", "Resumed", "Frozen", "Unfrozen", "RolledBack", "RollbackFailed",
    "RestoreAwaitingApproval", "RestoreApproved", "RestoreNoLongerDue",
})
"""Reasons that belong in status.history and the transitions counter: changes of who serves traffic,
overrides, restores held for and released by an approval, and rollbacks. Observations (MetricsMissing,
TierTripped...) only go to Events."""


def event_kind(reason: str) -> EventKind:
    """The (type, action) a reason is published with; unknown reasons are logged, not rejected."""
    kind = REASONS.get(reason)
    if kind is None:
        log.warning("audit reason %r is not in the reason table; publishing it as %s/%s",
                    reason, UNKNOWN_REASON.type, UNKNOWN_REASON.action)
        return UNKNOWN_REASON
    return kind


def is_transition(record: AuditRecord) -> bool:
    """A record that changes who serves traffic, by reason or because it names a move between tiers."""
    moved = record.from_tier is not None and record.to_tier is not None and record.from_tier != record.to_tier
    return record.reason in TRANSITION_REASONS or moved


def format_value(value: float | None) -> str | None:
    """A signal value as a short decimal string (status and notes carry no floats): 250, 0.05, 312.4."""
    if value is None:
        return None
    if not math.isfinite(value):
        return str(value)
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}"
