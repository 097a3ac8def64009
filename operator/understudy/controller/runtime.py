"""The leader's per-policy working memory, and the values the cycle hands to the writer."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Hashable, Mapping

from understudy.controller.boundary import Failed
from understudy.controller.compile import Compiled
from understudy.controller.routes import RouteState
from understudy.controller.release import finalizer_due
from understudy.controller.retry import RoutingRetry
from understudy.controller.store import PolicySnapshot, pack, unpack
from understudy.engine import AuditRecord, Decision, Mode, State, TierState
from understudy.engine.governance_state import GovernanceState
from understudy.engine.intents import Intent, IntentOutcome
from understudy.routing.targets import RoutingBackend, Weights
from understudy.signals.reader import SignalError

ACCOUNTING_FIELDS = ("last_evaluation_ms", "creep_buckets")
"""Parts of the engine state that move on every evaluation. They are checkpointed (see
`Evaluator.checkpoint_seconds`), not written each cycle, so a steady state causes no API writes."""
HOT_STATUS_FIELDS = ("drill", "lastDrills", "scaledTiers", "weights")
"""Status fields read on every evaluation; the rest of a policy's status stays JSON text until needed, which
at thousands of policies with full histories and creep windows is most of the operator's memory."""
_ESSENTIAL_FIELDS = tuple(f.name for f in fields(State) if f.name not in (*ACCOUNTING_FIELDS, "tiers"))
_TIER_FIELDS = tuple(f.name for f in fields(TierState) if f.name != "clear_streak")

Essential = tuple[Any, ...]


def essential(state: State) -> Essential:
    """The part of the engine state whose change must be written at once.

    An untripped tier's clear streak only matters once it trips (it counts towards recovery), so its
    growth is left to the next checkpoint: otherwise every new policy would write its status recoverAfter
    times before settling. Read straight off the dataclasses: this runs for every policy every cycle.
    """
    tiers = tuple(tuple(getattr(t, n) for n in _TIER_FIELDS) + ((t.clear_streak,) if t.tripped else ())
                  for t in state.tiers)
    return tuple(getattr(state, n) for n in _ESSENTIAL_FIELDS) + (tiers,)


@dataclass
class Runtime:
    """The leader's working memory for one policy; rebuilt from status whenever in doubt."""

    uid: str
    generation: int
    compiled: Compiled | None
    invalid: str | None
    state: State | None
    status_packed: bytes
    """The status as last read or written (see `pack`): unpacked only when a new status is built."""
    hot: dict[str, Any]
    """The status fields every evaluation reads (HOT_STATUS_FIELDS), kept parsed."""
    resource_version: str
    backend: RoutingBackend | None = None
    """Made by the writer on the first routing write after a (re)compile: the cycle holds no client."""
    next_due: float = 0.0
    routed: Weights | None = None
    """Weights known to be on the routing object; None forces one apply (a no-op if already right)."""
    persisted_essential: Essential | None = None
    last_checkpoint: float = 0.0
    retry: RoutingRetry = field(default_factory=RoutingRetry)
    """The routing write since it last failed (controller.retry): back-off, Ready, and the Events held."""
    finalizers: tuple[str, ...] = ()
    """metadata.finalizers as last read or written."""
    finalizer_forbidden: bool = False
    """The operator may not patch this policy (controller.releasing): its finalizer is not asked for again."""
    signal_error: SignalError | None = None
    """Why the last read left some of this policy's signals unread on purpose (a refused URL or query)."""
    unchanged_by: tuple[Any, ...] | None = None
    """The inputs of the last evaluation that found status already right (reset whenever status changes)."""
    route: RouteState = field(default_factory=RouteState)
    """Route ownership and drift (controller.routes)."""
    governance: GovernanceState = field(default_factory=GovernanceState)
    """The engine's governance memory (known-good revision, scales, rollback episode), mirrored in status."""
    outcomes: list[IntentOutcome] = field(default_factory=list)
    """How the intents carried out since the last evaluation fared: the next `govern` call's input."""
    repaired: tuple[AuditRecord, ...] = ()
    """A StateRepaired record from reading status back, posted with the next decision."""

    @property
    def status(self) -> dict[str, Any]:
        return unpack(self.status_packed)

    def set_status(self, status: Mapping[str, Any]) -> None:
        self.status_packed = pack(status)
        self.hot = {k: status[k] for k in HOT_STATUS_FIELDS if k in status}
        self.unchanged_by = None


@dataclass
class CycleReport:
    due: int = 0
    evaluated: int = 0
    status_writes: int = 0
    routing_writes: int = 0
    conflicts: int = 0
    events: int = 0
    queries: int = 0
    seconds: float = 0.0

    def add(self, other: CycleReport) -> None:
        """Fold in the counts of one group of writes (each worker counts into a report of its own)."""
        self.status_writes += other.status_writes
        self.routing_writes += other.routing_writes
        self.conflicts += other.conflicts
        self.events += other.events


@dataclass
class Effects:
    """One decision's writes, carried out once every due policy has been decided (see `writer.Writer`)."""

    key: Hashable
    rt: Runtime
    snap: PolicySnapshot
    decision: Decision
    routed: Decision
    """The decision as routed: a running drill overrides the weights."""
    patch: dict[str, Any] | None
    """The status merge patch (None: status is already right)."""
    moment: datetime
    essential: Essential
    checkpoint: bool
    now: float
    governance: GovernanceState = GovernanceState()
    """The governance state this decision leads to (adopted with it once status is written)."""
    intents: tuple[Intent, ...] = ()
    """Deployment writes (scale, rollback) the engine asked for: made only once the status write succeeded."""


@dataclass
class InvalidStatus:
    """Ready=False for a spec the models reject, and its Event once the status write succeeded."""

    key: Hashable
    rt: Runtime
    snap: PolicySnapshot
    status: dict[str, Any]
    now: float


NewGeneration = tuple[Hashable, PolicySnapshot, Compiled, Compiled]
"""(key, snapshot, old compiled, new compiled) of a policy whose spec changed."""


@dataclass
class Plan:
    """What one cycle decided: the writes to make, and when each evaluated policy was due (for lateness)."""

    invalid: list[InvalidStatus]
    effects: list[Effects]
    due_at: dict[Hashable, float]
    deleting: list[tuple[Hashable, PolicySnapshot, Compiled | None]] = field(default_factory=list)
    """Policies being deleted that our finalizer holds (controller.releasing releases them)."""
    lettings: list[NewGeneration] = field(default_factory=list)
    """New generations that may let go of what the old one routed."""
    repairs: list[Hashable] = field(default_factory=list)
    """Policies whose routing object drifted from what was written: the writer writes it back."""
    failed: list[Failed] = field(default_factory=list)
    """Policies whose read or decision failed (controller.boundary): the writer reports them."""


def settle(rt: Runtime, decision: Decision, governance: GovernanceState, kept: Essential, checkpoint: bool,
           now: float) -> None:
    """Adopt a decision whose status is on the server (or needed no write); `govern` consumed the outcomes."""
    if checkpoint:
        rt.persisted_essential, rt.last_checkpoint = kept, now
    rt.state, rt.governance, rt.outcomes, rt.repaired = decision.state, governance, [], ()


def readiness(rt: Runtime) -> tuple[bool, str, str]:
    """The Ready condition's status, reason and message as this runtime stands."""
    if rt.route.conflict is not None:
        return False, "RouteConflict", rt.route.conflict
    error = rt.retry.ready_error()
    if error is not None:
        reason, _, message = error.partition(": ")
        return False, reason, message
    if rt.signal_error is not None:
        return False, rt.signal_error.reason, rt.signal_error.message
    return True, "Evaluating", "Signals are read and decisions applied every evaluation interval."


def ready_changed(rt: Runtime) -> bool:
    """Whether the Ready condition on record differs from what `readiness` says now."""
    current = next((c for c in rt.status.get("conditions") or [] if c.get("type") == "Ready"), {})
    return (current.get("status") == "True", current.get("reason"), current.get("message")) != readiness(rt)


def must_route(rt: Runtime, decision: Decision, now: float) -> bool:
    """Weights to write, unless a failed write's back-off is still running."""
    return decision.route and decision.weights != rt.routed and rt.retry.due(now) and rt.route.conflict is None


def finalizer_out_of_step(rt: Runtime) -> bool:
    """Whether the release finalizer is to be added or removed (see controller.release.finalizer_due)."""
    assert rt.compiled is not None
    return not rt.finalizer_forbidden and finalizer_due(
        rt.finalizers, rt.hot, rt.compiled.policy.mode is Mode.ENFORCE and rt.route.conflict is None,
        not rt.retry.failing, False)


def epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def schedule_next(interval: float, now: float) -> float:
    """The next instant on the interval's grid (whole multiples of it since the epoch), at least half an
    interval away.

    Policies of one interval thus fall due together and are read in one batch with one reusable query
    plan, rather than in partial batches that each need planning of their own. The half-interval gap
    keeps a new or late policy from being evaluated twice in quick succession, which the engine would
    count as two evaluations towards tripAfter.
    """
    step = (math.floor(now / interval) + 1) * interval
    return step + interval if step - now < interval / 2 else step
