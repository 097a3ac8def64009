"""What a decision asks of the workloads: scale a fallback up or back, roll the primary back.

Only intents: the writer carries them out once the policy's status write succeeded.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

from understudy.controller.runtime import Rollback, Runtime, Scale, Workload
from understudy.controller.store import DeploymentSnapshot, PolicySnapshot
from understudy.engine import PRIMARY, AuditRecord, CreepAction, Decision


def scale_intents(rt: Runtime, snap: PolicySnapshot, decision: Decision, load: float | None,
                  deployments: Mapping[tuple[str, str], DeploymentSnapshot],
                  ) -> tuple[list[dict[str, Any]], list[Workload]]:
    """Scale a skipped fallback up so it can take over, and back once traffic has left it.

    Returns the new status.scaledTiers (the replica counts to return to) and the scale writes to make.
    """
    assert rt.compiled is not None
    scaled = {e["tier"]: int(e["replicas"]) for e in rt.hot.get("scaledTiers") or []}
    scales: list[Workload] = []
    weights = dict(decision.weights)
    settled = decision.active_tier == PRIMARY and decision.state.restore_tier is None
    for tier, tier_state in zip(rt.compiled.policy.tiers, decision.state.tiers):
        capacity = rt.compiled.capacities.get(tier.name)
        current = deployments.get((snap.namespace, tier.deployment))
        if capacity is None or current is None or not capacity.scale_on_activate:
            continue
        if tier_state.capacity_short and load is not None:
            wanted = min(capacity.max_replicas or current.desired, math.ceil(load / capacity.requests_per_replica))
            if wanted > current.desired:
                scales.append(Scale("ScaledUp", snap.namespace, tier.name, tier.deployment, wanted,
                                    f"to carry {load:.1f} requests/s at "
                                    f"{capacity.requests_per_replica} per replica"))
                scaled.setdefault(tier.name, current.desired)
        elif tier.name in scaled and settled and weights.get(tier.name, 0) == 0:
            original = scaled.pop(tier.name)
            scales.append(Scale("ScaledDown", snap.namespace, tier.name, tier.deployment, original,
                                "traffic is back on the primary"))
    return [{"tier": t, "replicas": r} for t, r in scaled.items()], scales


def creep_intents(rt: Runtime, snap: PolicySnapshot, decision: Decision,
                  ) -> tuple[list[AuditRecord], list[Workload]]:
    """Act on a creep verdict, once per episode, as the policy's creep.action says."""
    assert rt.compiled is not None
    action = rt.compiled.policy.creep_action
    ratio = f"{decision.fallback_ratio:.3f}"
    if action is not CreepAction.ROLLBACK_PRIMARY:
        return [], []
    deployment = rt.compiled.policy.tiers[0].deployment
    good = rt.hot.get("lastKnownGoodRevision")
    if not good:
        return [AuditRecord(reason="RollbackFailed", tier=PRIMARY,
                            message=f"Fallback ratio {ratio} is over budget, but no healthy revision of "
                                    f"{deployment} is on record: nothing was rolled back.")], []
    return [], [Rollback(snap.namespace, deployment, str(good), ratio)]
