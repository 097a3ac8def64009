"""The Deployments as a backtest must assume them: Kubernetes keeps no history of revisions or of what an
operator would have scaled, so the replay runs governance against this small model and says so.

- Revisions: the primary runs revision 2 throughout, and revision 1 was known-good when the range began,
  so the report shows the rollbacks creep.action RollbackPrimary would do after a bad rollout. A rollback
  makes a new revision, as Kubernetes does, which must earn known-good status again.
- Replicas: as kube-state-metrics recorded them, when Prometheus has them; a fallback the replay scaled
  has the replicas it was scaled to, all ready at once. Without kube-state-metrics nothing tells how many
  replicas served, so capacity is not judged and nothing is scaled.
- Every scale and rollback succeeds at once, and none of it (nor a drill's share of traffic) changes a
  signal: the history is judged as it was recorded.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, NamedTuple, Sequence

from understudy.engine import PRIMARY, CreepAction, Policy, Samples
from understudy.engine.drills import Drill
from understudy.engine.governance import SCALED_DOWN, Facts, TierCapacity, Workload
from understudy.engine.governance_state import GovernanceState, KnownGood
from understudy.engine.intents import Intent, IntentOutcome, ScaleIntent
from understudy.engine.times import whole_second_ms

RUNNING_REVISION = 2
KNOWN_GOOD_REVISION = "1"


class Step(NamedTuple):
    """What the history holds for one evaluation."""

    at: float
    samples: Samples
    load: float | None = None
    """Requests per second the policy's tiers served together, when read."""
    replicas: Mapping[str, tuple[int, int]] | None = None
    """Tier -> (ready, desired) from kube-state-metrics; None when Prometheus has no such series."""


@dataclass
class AssumedCluster:
    policy: Policy
    revision: int = RUNNING_REVISION
    scaled: dict[str, int] = field(default_factory=dict)
    """Fallbacks the replay scaled, and to how many replicas."""

    def facts(self, step: Step) -> Facts:
        workloads = {}
        for tier in self.policy.tiers:
            if tier.name in self.scaled:
                ready = desired = self.scaled[tier.name]
            elif step.replicas is None:
                ready = desired = 1
            elif tier.name in step.replicas:
                ready, desired = step.replicas[tier.name]
            else:
                continue  # no series for it at this step: the Deployment did not exist
            workloads[tier.name] = Workload(ready, desired, str(self.revision) if tier.name == PRIMARY else "1")
        return Facts(workloads, step.load if step.replicas is not None else None, generation=1)

    def carry_out(self, intents: Sequence[Intent], at: float) -> list[IntentOutcome]:
        for intent in intents:
            if not isinstance(intent, ScaleIntent):
                self.revision += 1
            elif intent.reason == SCALED_DOWN:
                self.scaled.pop(intent.tier, None)  # back to the size the history recorded
            else:
                self.scaled[intent.tier] = intent.replicas
        return [IntentOutcome(i, True, False, "assumed done", at) for i in intents]


def starting_state(start: float) -> GovernanceState:
    return GovernanceState(known_good=KnownGood(KNOWN_GOOD_REVISION, whole_second_ms(start)))


def assumptions(policy: Policy, capacities: Mapping[str, TierCapacity], drills: Sequence[Drill],
                readiness_known: bool) -> tuple[str, ...]:
    """The assumptions behind this policy's governance and drill figures, for the report."""
    notes = []
    if policy.creep_action is CreepAction.ROLLBACK_PRIMARY:
        notes.append(f"rollbacks assume the primary ran revision {RUNNING_REVISION} throughout with revision "
                     f"{KNOWN_GOOD_REVISION} known-good when the range began (Kubernetes keeps no revision history); "
                     "each rollback is assumed to succeed and makes a new revision")
    if capacities and not readiness_known:
        notes.append("capacity not judged and nothing scaled: without kube-state-metrics the replicas that served "
                     "are unknown")
    elif any(c.scale_on_activate for c in capacities.values()):
        notes.append("scale-ups are assumed to succeed at once with every new replica ready; replicas otherwise "
                     "as kube-state-metrics recorded them")
    if drills:
        notes.append("drills are judged on the fallback's recorded readings: one that served nothing then has none, "
                     "and its drill is inconclusive")
    if notes:
        notes.append("what the policy would have done to Deployments changes no signal: the history is judged as "
                     "it was recorded")
    return tuple(notes)
