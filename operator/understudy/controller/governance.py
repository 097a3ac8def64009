"""The cycle's side of governance: the facts `govern` and `decide` need, and one evaluation run exactly as
the backtest replays it (capacity fit, decide, drills, govern).

The engine (engine/governance.py) decides what to do to Deployments and returns intents; the writer
carries them out after the status write that records the decision (see workloads.py). Nothing here
writes or reads the cluster: the cycle module that calls it must make no writes.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Mapping, Protocol, Sequence

from understudy.engine import Decision, Policy, Samples, State, decide
from understudy.engine.drills import DrillStep
from understudy.engine.governance import Facts, Governance, TierCapacity, Workload, capacity_fit, govern
from understudy.engine.governance_state import GovernanceState, governance_to_status
from understudy.engine.intents import IntentOutcome

READINESS_GRACE_SECONDS = 10.0
"""For this long after the operator starts, a Deployment missing from the snapshot has unknown readiness
rather than none: the Deployment watch may not have listed it yet, and reading "not seen yet" as "absent"
would route away from a healthy primary at every restart."""


class DeploymentFacts(Protocol):
    """What the shell keeps of one Deployment (store.DeploymentSnapshot)."""

    @property
    def ready(self) -> int: ...
    @property
    def desired(self) -> int: ...
    @property
    def revision(self) -> str | None: ...


def facts_for(policy: Policy, namespace: str, deployments: Mapping[tuple[str, str], DeploymentFacts],
              load: float | None, generation: int, since_start: float) -> tuple[Facts, dict[str, int]]:
    """The engine's Facts for one policy, and Samples.ready (ready replicas by tier, 0 when absent).

    A tier whose Deployment is not in the snapshot is absent (0 ready) once READINESS_GRACE_SECONDS have
    passed since the operator started (`since_start`); before that its readiness is unknown (left out).
    """
    workloads: dict[str, Workload] = {}
    ready: dict[str, int] = {}
    for tier in policy.tiers:
        found = deployments.get((namespace, tier.deployment))
        if found is not None:
            workloads[tier.name] = Workload(found.ready, found.desired, found.revision)
            ready[tier.name] = found.ready
        elif since_start >= READINESS_GRACE_SECONDS:
            ready[tier.name] = 0
    return Facts(workloads, load, generation), ready


def govern_one(policy: Policy, capacities: Mapping[str, TierCapacity], samples: Samples, state: State,
               governance: GovernanceState, outcomes: Sequence[IntentOutcome], facts: Facts,
               ready: Mapping[str, int], now: float,
               drills: Callable[[Decision, Samples], DrillStep]) -> tuple[Decision, DrillStep, Governance]:
    """One evaluation exactly as the backtest replays it: capacity fit, decide, drills, govern.

    The decision's audit is returned with the drill's and governance's records appended, in that order.
    """
    fit = capacity_fit(capacities, facts) if capacities else {}
    samples = replace(samples, capacity={**samples.capacity, **fit}, ready=dict(ready))
    decision = decide(policy, samples, state, now)
    drill = drills(decision, samples)
    governed = govern(policy, capacities, decision, facts, governance, outcomes, now)
    if drill.audit or governed.audit:
        decision = replace(decision, audit=(*decision.audit, *drill.audit, *governed.audit))
    return decision, drill, governed


def governance_status(previous: Mapping[str, Any], state: GovernanceState) -> dict[str, Any]:
    """The governance fields to set in status; a field to remove is None only if `previous` has it (a
    merge patch null for an absent field would be a write on every evaluation)."""
    return {k: v for k, v in governance_to_status(state).items() if v is not None or k in previous}
