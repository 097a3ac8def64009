"""The shell's side of governance: the facts `govern` and `decide` need, and carrying out its intents.

The engine (engine/governance.py) decides what to do to Deployments and returns intents; this module turns
the Deployment snapshots into the engine's plain `Facts` and readiness, and, after the status write that
records the decision has succeeded (status is the fence: a stale leader's intents never run), carries the
intents out and reports each outcome for the next `govern` call. It decides nothing itself.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Mapping, Protocol, Sequence

from kubernetes.client import AppsV1Api
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from understudy.engine import Decision, Policy, Samples, State, decide
from understudy.engine.drills import DrillStep
from understudy.engine.governance import Facts, Governance, TierCapacity, Workload, capacity_fit, govern
from understudy.engine.governance_state import GovernanceState, governance_to_status
from understudy.engine.intents import Intent, IntentOutcome, RollbackIntent, ScaleIntent
from understudy.kube.scale import set_replicas
from understudy.rollback.deployment import rollback_to_revision

READINESS_GRACE_SECONDS = 10.0
"""For this long after the operator starts, a Deployment missing from the snapshot has unknown readiness
rather than none: the Deployment watch may not have listed it yet, and reading "not seen yet" as "absent"
would route away from a healthy primary at every restart."""

PERMANENT_STATUSES = frozenset({400, 401, 403, 404, 405, 415})
"""API answers that retrying the same write will not change (forbidden, not found, malformed)."""
PERMANENT_ROLLBACK_REASONS = frozenset({"DeploymentNotFound", "RevisionNotFound", "AlreadyCurrent"})
"""rollback_to_revision refusals that stay true; Paused (a person may resume) and Conflict may pass."""


class DeploymentFacts(Protocol):
    """What the shell keeps of one Deployment (controller's DeploymentSnapshot)."""

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


def carry_out(apps: AppsV1Api, namespace: str, intents: Sequence[Intent], now: Callable[[], float],
              on_write: Callable[[], None] = lambda: None) -> list[IntentOutcome]:
    """Carry out `intents` in order; one outcome each, never an exception for a refused write."""
    outcomes = []
    for intent in intents:
        if isinstance(intent, ScaleIntent):
            done, permanent, message = _scale(apps, namespace, intent)
        else:
            done, permanent, message = _rollback(apps, namespace, intent)
        if done:
            on_write()
        outcomes.append(IntentOutcome(intent, done, permanent, message, now()))
    return outcomes


def _scale(apps: AppsV1Api, namespace: str, intent: ScaleIntent) -> tuple[bool, bool, str]:
    try:
        set_replicas(apps, namespace, intent.deployment, intent.replicas, intent.expected)
    except ApiException as err:
        if err.status == 422:  # the test op failed: the next evaluation decides again on fresh replicas
            return False, False, (f"{intent.deployment} no longer has {intent.expected} replicas "
                                  "(someone else changed them)")
        return False, err.status in PERMANENT_STATUSES, f"the API server refused: {err.status} {err.reason}"
    except (OSError, HTTPError) as err:
        return False, False, f"the API server did not answer: {err}"
    return True, False, f"scaled to {intent.replicas} replicas"


def _rollback(apps: AppsV1Api, namespace: str, intent: RollbackIntent) -> tuple[bool, bool, str]:
    try:
        result = rollback_to_revision(apps, namespace, intent.deployment, intent.revision)
    except ApiException as err:
        permanent = err.status in PERMANENT_STATUSES or err.status == 422
        return False, permanent, f"the API server refused: {err.status} {err.reason}"
    except (OSError, HTTPError) as err:
        return False, False, f"the API server did not answer: {err}"
    if result.rolled_back:
        return True, False, result.message
    return False, result.reason in PERMANENT_ROLLBACK_REASONS, f"{result.reason}: {result.message}"


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
