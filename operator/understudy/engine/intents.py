"""What the engine asks the shell to do to workloads, and what the shell reports back.

The engine's governance rules (when to scale a fallback, when and to which revision to roll the primary
back) decide; the shell only carries intents out, after the policy's status write has fenced the decision,
and reports each outcome. The next evaluation feeds the outcomes back to the engine, which owns retries,
back-off and the audit records ("one per episode"), so the backtest replays exactly what the operator does.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ScaleIntent:
    """Set a Deployment's spec.replicas, only if it still holds `expected` (a person or an HPA may have moved it)."""

    tier: str
    deployment: str
    replicas: int
    expected: int
    reason: str
    """ScaledUp or ScaledDown: the audit reason once the write succeeded."""
    message: str


@dataclass(frozen=True, slots=True)
class RollbackIntent:
    """Roll a Deployment back to one of its recorded revisions, as `kubectl rollout undo --to-revision` would."""

    deployment: str
    revision: str
    message: str


Intent = ScaleIntent | RollbackIntent


@dataclass(frozen=True, slots=True)
class IntentOutcome:
    """How the cluster answered one intent."""

    intent: Intent
    done: bool
    permanent: bool
    """A refusal that retrying will not change (forbidden, not found, invalid, already at that revision)."""
    message: str
    time: float
    """When the shell carried the intent out, epoch seconds."""
