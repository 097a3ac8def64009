"""Manual approval of restores (evaluation.restoreApproval: Manual): traffic leaves a tier on its own, and
returns to a better one only once a person has approved.

A restore that is due but not approved is *held*. The hold begins when the restore would otherwise start
(one RestoreAwaitingApproval), and ends either when an approval has come that is at least as recent as the
hold's start, to the second (RestoreApproved, naming who wrote the override when the spec says), or when
the restore is no longer due (RestoreNoLongerDue). So an approval releases the hold it was given for and
never a later one: a restore that aborts and falls due again waits for a new approval. An approval dated
ahead of the engine's clock takes effect when that time comes. Once released, the restore takes its steps
on evidence as usual; an abort needs no approval (it moves traffic away from a failing tier).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from understudy.engine import reasons
from understudy.engine.model import AuditRecord
from understudy.engine.plan import Plan
from understudy.engine.times import to_rfc3339

if TYPE_CHECKING:
    from understudy.engine.route import Routing


def restore_may_start(plan: Plan, routing: Routing, target: int, now_ms: int) -> bool:
    """Whether a restore to `target` may start now: opens the hold, or releases it on an approval."""
    if not plan.manual_restore:
        return True
    names, c = plan.names, routing.active
    if routing.held is None or routing.held_since_ms is None:
        routing.held_since_ms = now_ms
        routing.audit.append(AuditRecord(
            reasons.RESTORE_AWAITING_APPROVAL,
            f"{names[target]} is fit to take traffic back from {names[c]}, and evaluation.restoreApproval is "
            f"Manual: the restore waits for an approval (spec.override.restoreApprovedAt at or after "
            f"{to_rfc3339(now_ms)})",
            tier=names[target], from_tier=names[c], to_tier=names[c],
        ))
    routing.held = target  # the hold follows the best fit tier; its start stays
    approved = plan.approved_ms
    if approved is None or approved // 1000 < routing.held_since_ms // 1000 or approved > now_ms:
        return False
    by = f" by {plan.override_by}" if plan.override_by else ""
    routing.audit.append(AuditRecord(
        reasons.RESTORE_APPROVED,
        f"restore to {names[target]} approved{by} (held since {to_rfc3339(routing.held_since_ms)})",
        tier=names[target], from_tier=names[c], to_tier=names[target],
    ))
    routing.held = routing.held_since_ms = None
    return True


def end_hold(plan: Plan, routing: Routing, why: str) -> None:
    """The held restore is no longer due: say why once, so the next one waits for a new approval."""
    if routing.held is None or routing.held_since_ms is None:
        return
    names = plan.names
    routing.audit.append(AuditRecord(
        reasons.RESTORE_NO_LONGER_DUE,
        f"the restore to {names[routing.held]} held since {to_rfc3339(routing.held_since_ms)} is no longer due "
        f"({why}); a later restore waits for a new approval",
        tier=names[routing.held], from_tier=names[routing.active], to_tier=names[routing.active],
    ))
    routing.held = routing.held_since_ms = None
