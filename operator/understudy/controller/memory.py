"""A policy's memory read back from status, and the conditions that show the engine's episodes.

Status is input from outside (a person or a stale leader may have written it), so the engine state and
the governance state are both read through the engine's own repair (`restore_state`,
`governance_from_status`): what cannot be trusted is dropped field by field and reported in one
StateRepaired Warning, never a crash and never a silent reset of routing to the primary. When the
status holds no usable weights, the weights the routing object carries now are used instead.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from understudy.engine import AuditRecord, Decision, Policy, State, restore_state
from understudy.engine import reasons
from understudy.engine.governance_state import GovernanceState, governance_from_status

log = logging.getLogger(__name__)

CONDITION_TYPES = ("Frozen", "RestoreStalled", "RestoreAwaitingApproval")
"""The conditions this module owns in status.conditions (besides those audit/status.py builds)."""


@dataclass(frozen=True)
class Memory:
    state: State
    governance: GovernanceState
    repaired: AuditRecord | None
    """One StateRepaired record to post, or None when status was sound."""


def load_memory(policy: Policy, status: Mapping[str, Any], now: float,
                observed: Callable[[], Mapping[str, int] | None]) -> Memory:
    """The engine and governance state recorded in `status`, repaired where it cannot be trusted.

    `observed` reads the routing object's weights by tier name (None when unreadable); it is only called
    when status.engine exists but holds no usable weights.
    """
    engine = status.get("engine")
    restored = restore_state(policy, engine, now)
    if not restored.routing_known:
        weights = observed()
        restored = restore_state(policy, engine, now, observed=weights)
    governance, problems = governance_from_status(status, now)
    notes = (*restored.repaired, *problems)
    record = None
    if notes:
        record = AuditRecord(reasons.STATE_REPAIRED, "status could not be fully trusted: " + "; ".join(notes))
        log.warning("%s", record.message)
    return Memory(restored.state, governance, record)


Owned = tuple[str, bool, str, str]


def engine_conditions(decision: Decision) -> list[Owned]:
    """(type, status, reason, message) of Frozen, RestoreStalled and RestoreAwaitingApproval."""
    state = decision.state
    return [
        ("Frozen", True, reasons.FROZEN, "creep.action Freeze holds the routing while the creep budget is "
                                         f"exceeded (fallback ratio {decision.fallback_ratio:.3f})")
        if decision.frozen else ("Frozen", False, "NotFrozen", "routing is not frozen"),
        ("RestoreStalled", True, reasons.RESTORE_STALLED, f"the restore to {state.restore_tier} has not advanced "
                                                          "within evaluation.restoreStallAfter")
        if decision.restore_stalled else ("RestoreStalled", False, "NotStalled", "no restore is stalled"),
        ("RestoreAwaitingApproval", True, reasons.RESTORE_AWAITING_APPROVAL,
         f"a restore to {state.held_tier} is due and waits for spec.override.restoreApprovedAt")
        if state.held_tier is not None else
        ("RestoreAwaitingApproval", False, "NoRestoreHeld", "no restore waits for an approval"),
    ]


def with_engine_conditions(conditions: Sequence[Mapping[str, Any]], decision: Decision, generation: int,
                           stamp: str) -> list[dict[str, Any]]:
    """`conditions` with this module's three set from `decision`; lastTransitionTime moves only on a flip.

    Each is absent until the engine first reports it (like LastDrillPassed until a drill has run), then
    stays, False once the episode is over: most policies never freeze or hold a restore.
    """
    by_type = {c.get("type"): c for c in conditions}
    result = [dict(c) for c in conditions if c.get("type") not in CONDITION_TYPES]
    for kind, flag, reason, message in engine_conditions(decision):
        status = "True" if flag else "False"
        before = by_type.get(kind) or {}
        if not flag and not before:
            continue
        flipped = before.get("status") != status or not before.get("lastTransitionTime")
        result.append({"type": kind, "status": status, "reason": reason, "message": message,
                       "lastTransitionTime": stamp if flipped else before["lastTransitionTime"],
                       "observedGeneration": generation})
    return result
