"""Governance: what a policy does to Deployments, as a pure function of plain values.

`decide` moves traffic. Governance acts on the workloads around it:
- capacity fit: whether a fallback with a stated capacity can carry the load on its ready replicas
  (`capacity_fit`, given to `decide` as Samples.capacity);
- scale plan: scale a fallback that `decide` skipped for capacity up (never above maxReplicas, never from
  a load that is not a finite, non-negative rate), and back to its former size once traffic is settled on
  the primary, but only if the Deployment still has the replicas the operator set;
- known-good revision: the primary's revision becomes known-good once it has carried all traffic for a
  whole creep window without falling back (never on first sight);
- rollback: when the creep budget is exceeded and creep.action is RollbackPrimary, roll the primary back
  to the known-good revision, if one other than the current revision is on record.

It returns intents (engine/intents.py). The shell carries them out after the status write that records
this evaluation (the write is the fence: a stale leader's intents never run) and hands their outcomes to
the next call. Retries, back-off and the audit records live here, one record per episode: the first
failure of an episode is reported, later ones only show in status. Observe mode and
spec.override.paused never yield an intent; one ActionWithheld record per episode says what would have
been done instead. An intent whose outcome never comes back (the operator stopped between the status
write and carrying it out) is issued again after OUTCOME_TIMEOUT_MS.

For one evaluation of one policy the shell calls, in this order:
    fit = capacity_fit(capacities, facts)                     # merged into Samples.capacity
    decision = decide(policy, samples, engine_state, now)
    drill = step_drills(...)
    result = govern(policy, capacities, decision, facts, governance_state, outcomes, now)
then writes status (the engine state, governance_to_status(result.state), the drill), carries out
result.intents in order, posts the audit records, and keeps the outcomes for the next `govern`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Mapping, Sequence

from understudy.engine.decide import Decision
from understudy.engine.governance_state import (
    MESSAGE_LIMIT,
    RETRY_CAP_MS,
    Attempt,
    GovernanceState,
    KnownGood,
    Phase,
    PrimaryRevision,
    Rollback,
    ScaledTier,
    Scaling,
)
from understudy.engine.intents import Intent, IntentOutcome, RollbackIntent, ScaleIntent
from understudy.engine.model import PRIMARY, AuditRecord, CreepAction, Mode, Policy, Tier
from understudy.engine.times import to_rfc3339, whole_second_ms

SCALED_UP = "ScaledUp"
SCALED_DOWN = "ScaledDown"
SCALE_FAILED = "ScaleFailed"
SCALE_BACK_SKIPPED = "ScaleBackSkipped"
"""A scaled fallback was not scaled back: its replicas were changed by someone else, or it is gone."""
ROLLED_BACK = "RolledBack"
ROLLBACK_FAILED = "RollbackFailed"
ACTION_WITHHELD = "ActionWithheld"
"""Observe mode or spec.override.paused kept a scale or rollback from happening; the note says which."""
GOVERNANCE_REASONS = (SCALED_UP, SCALED_DOWN, SCALE_FAILED, SCALE_BACK_SKIPPED, ROLLED_BACK, ROLLBACK_FAILED,
                      ACTION_WITHHELD)

RETRY_FIRST_MS = 10_000
"""The back-off after an episode's first transient failure, doubled after each further one up to RETRY_CAP_MS."""
OUTCOME_TIMEOUT_MS = 60_000


@dataclass(frozen=True, slots=True)
class TierCapacity:
    """A fallback's capacity stanza in plain numbers."""

    requests_per_replica: float
    scale_on_activate: bool = False
    max_replicas: int | None = None


@dataclass(frozen=True, slots=True)
class Workload:
    """What the cluster shows of one tier's Deployment."""

    ready: int
    desired: int
    revision: str | None = None
    """deployment.kubernetes.io/revision, None before the controller has numbered it."""


@dataclass(frozen=True)
class Facts:
    """What the shell knows besides the signals, for one evaluation."""

    workloads: Mapping[str, Workload]
    """By tier name; a tier whose Deployment does not exist is absent."""
    load: float | None = None
    """Requests per second the policy's tiers serve together; None when unknown."""
    generation: int = 0
    """The policy's metadata.generation: a spec change re-arms a refused rollback or scale."""


@dataclass(frozen=True)
class Governance:
    state: GovernanceState
    intents: tuple[Intent, ...]
    """To carry out after the status write, in this order."""
    audit: tuple[AuditRecord, ...]


def known_load(load: float | None) -> float | None:
    """The load if it is a real rate; NaN, +Inf or a negative number is unknown, never a reason to act."""
    return load if load is not None and math.isfinite(load) and load >= 0 else None


def capacity_fit(capacities: Mapping[str, TierCapacity], facts: Facts) -> dict[str, bool]:
    """Whether each fallback with a stated capacity can carry the whole load on its ready replicas.

    An unknown load judges nobody (no entry: `decide` takes the tier as fit): missing data is the
    triggers' business, and refusing every fallback for want of a number would be the rash choice.
    A tier whose Deployment is absent has no ready replicas.
    """
    load = known_load(facts.load)
    if load is None:
        return {}
    return {tier: _ready(facts, tier) * capacity.requests_per_replica >= load for tier, capacity in capacities.items()}


def _ready(facts: Facts, tier: str) -> int:
    workload = facts.workloads.get(tier)
    return workload.ready if workload is not None else 0


@dataclass
class _Context:
    """One call's inputs and what it has decided so far (local, so `govern` stays pure)."""

    policy: Policy
    decision: Decision
    facts: Facts
    now_ms: int
    audit: list[AuditRecord] = field(default_factory=list)
    intents: list[Intent] = field(default_factory=list)

    @property
    def acting(self) -> bool:
        return self.policy.mode is Mode.ENFORCE and not self.policy.paused

    @property
    def withheld_by(self) -> str:
        return "mode: Observe" if self.policy.mode is Mode.OBSERVE else "spec.override.paused"

    @property
    def settled(self) -> bool:
        """All traffic is on the primary and no restore is under way: the fallbacks are not needed."""
        return dict(self.decision.weights).get(PRIMARY) == 100 and self.decision.state.restore_tier is None


def govern(policy: Policy, capacities: Mapping[str, TierCapacity], decision: Decision, facts: Facts,
           state: GovernanceState, outcomes: Sequence[IntentOutcome], now: float) -> Governance:
    """One evaluation's governance: the new state, the intents to carry out and the audit records.

    `decision` is this evaluation's `decide` result; `outcomes` are the shell's reports on the intents of
    earlier calls that it has carried out since the last call; `now` is epoch seconds. Pure and
    deterministic.
    """
    ctx = _Context(policy, decision, facts, whole_second_ms(now))
    rollback, known_good = state.rollback, state.known_good
    scaled = {s.tier: s for s in state.scaled}
    scaling = {s.tier: s for s in state.scaling}
    for outcome in outcomes:
        if isinstance(outcome.intent, RollbackIntent):
            rollback, known_good = _rollback_outcome(ctx, rollback, known_good, outcome)
        else:
            _scale_outcome(ctx, scaled, scaling, outcome)
    seen, known_good = _revisions(ctx, state.primary_revision, known_good)
    _forget_removed_tiers(ctx, scaled, scaling)
    for index, tier in enumerate(policy.tiers):
        _scale(ctx, index, tier, capacities.get(tier.name), scaled, scaling)
    rollback = _rollback(ctx, rollback, known_good)
    order = policy.tier_names
    new = GovernanceState(
        primary_revision=seen,
        known_good=known_good,
        scaled=tuple(scaled[n] for n in order if n in scaled),
        rollback=rollback,
        scaling=tuple(scaling[n] for n in order if n in scaling),
    )
    return Governance(new, tuple(ctx.intents), tuple(ctx.audit))


# -- known-good revision ------------------------------------------------------------------------------------


def _revisions(ctx: _Context, seen: PrimaryRevision | None,
               known_good: KnownGood | None) -> tuple[PrimaryRevision | None, KnownGood | None]:
    """Track the primary's revision and promote it to known-good after a whole creep window of service.

    The window counts from the first evaluation in which this revision carried all traffic, untripped and
    within the creep budget; any evaluation that finds it otherwise starts the count again.
    """
    workload = ctx.facts.workloads.get(PRIMARY)
    current = workload.revision if workload is not None else None
    if current is None:
        return seen, known_good  # absent or not numbered yet: nothing new to learn
    if seen is None or seen.revision != current:
        seen = PrimaryRevision(current, ctx.now_ms)
    decision = ctx.decision
    carrying = (dict(decision.weights).get(PRIMARY) == 100 and not decision.state.tiers[0].tripped
                and not decision.creep_exceeded)
    if not carrying:
        return replace(seen, serving_since_ms=None), known_good
    serving = ctx.now_ms if seen.serving_since_ms is None else seen.serving_since_ms
    seen = replace(seen, serving_since_ms=serving)
    window_ms = round(ctx.policy.creep_window * 1000)
    if (known_good is None or known_good.revision != current) and ctx.now_ms - serving >= window_ms:
        known_good = KnownGood(current, ctx.now_ms)
    return seen, known_good


# -- the episode of one intent ------------------------------------------------------------------------------


def _may_issue(ctx: _Context, attempt: Attempt | None) -> bool:
    """Whether an intent may go out now, given how the last one of its episode fared."""
    if attempt is None:
        return True
    if attempt.phase is Phase.PENDING:
        return ctx.now_ms - attempt.since_ms >= OUTCOME_TIMEOUT_MS
    if attempt.phase is Phase.RETRYING:
        return ctx.now_ms >= (attempt.retry_ms or 0)
    if attempt.phase is Phase.WITHHELD:
        return ctx.acting
    if attempt.phase is Phase.DONE:
        return False
    return attempt.generation != ctx.facts.generation  # refused, or nothing to do: until the spec changes


def _awaiting(ctx: _Context, attempt: Attempt) -> bool:
    """An intent is out and its outcome may still come."""
    return attempt.phase is Phase.PENDING and ctx.now_ms - attempt.since_ms < OUTCOME_TIMEOUT_MS


def _continues(attempt: Attempt | None) -> bool:
    """The next intent belongs to the same episode as `attempt` (it keeps its failure count)."""
    return attempt is not None and attempt.phase in (Phase.PENDING, Phase.RETRYING)


def _pending(ctx: _Context, attempt: Attempt | None, message: str) -> Attempt:
    failures = attempt.failures if attempt is not None and _continues(attempt) else 0
    return Attempt(Phase.PENDING, ctx.now_ms, ctx.facts.generation, failures, None, message[:MESSAGE_LIMIT])


def _failed(ctx: _Context, attempt: Attempt, outcome: IntentOutcome) -> tuple[Attempt, bool]:
    """The attempt after a failed outcome, and whether this is the episode's first failure (to report)."""
    at = min(whole_second_ms(outcome.time), ctx.now_ms)
    failures = attempt.failures + 1
    message = outcome.message[:MESSAGE_LIMIT]
    if outcome.permanent:
        return Attempt(Phase.REFUSED, at, attempt.generation, failures, None, message), attempt.failures == 0
    delay = min(RETRY_CAP_MS, RETRY_FIRST_MS * 2 ** min(failures - 1, 16))
    return Attempt(Phase.RETRYING, at, attempt.generation, failures, at + delay, message), attempt.failures == 0


def _retry_note(outcome: IntentOutcome, still: str) -> str:
    if outcome.permanent:
        return f"not tried again while {still}, unless the spec changes"
    return f"tried again with back-off while {still}"


# -- rollback -----------------------------------------------------------------------------------------------


def _rollback(ctx: _Context, episode: Rollback | None, known_good: KnownGood | None) -> Rollback | None:
    """Roll the primary back once per creep episode, retrying transient failures with back-off."""
    attempt = episode.attempt if episode is not None else None
    if not (ctx.decision.creep_exceeded and ctx.policy.creep_action is CreepAction.ROLLBACK_PRIMARY):
        # The episode is over. A rollback still out keeps its record, so that its outcome is reported.
        return episode if attempt is not None and _awaiting(ctx, attempt) else None
    if not _may_issue(ctx, attempt):
        return episode
    deployment = ctx.policy.tiers[0].deployment
    workload = ctx.facts.workloads.get(PRIMARY)
    current = workload.revision if workload is not None else None
    target = known_good.revision if known_good is not None and known_good.revision != current else None
    why = (f"the fallback ratio {ctx.decision.fallback_ratio:.3f} is over the creep budget "
           f"{ctx.policy.creep_max_ratio:g}")
    missing = (f"no known-good revision of {deployment} is on record" if known_good is None else
               f"the current revision {current} of {deployment} is itself the last known-good one")
    if not ctx.acting:
        would = (f"would roll {deployment} back to revision {target}" if target is not None
                 else f"would roll {deployment} back, but {missing}")
        ctx.audit.append(AuditRecord(ACTION_WITHHELD, f"{would}: {why} ({ctx.withheld_by})", tier=PRIMARY))
        return Rollback(target, Attempt(Phase.WITHHELD, ctx.now_ms, ctx.facts.generation, message=would))
    if target is None:
        message = f"{why}, but {missing}: nothing was rolled back"
        if attempt is None or not _continues(attempt) or attempt.failures == 0:
            ctx.audit.append(AuditRecord(ROLLBACK_FAILED, message, tier=PRIMARY))
        failures = attempt.failures if attempt is not None and _continues(attempt) else 0
        return Rollback(None, Attempt(Phase.NO_TARGET, ctx.now_ms, ctx.facts.generation, failures, None, message))
    assert known_good is not None
    ctx.intents.append(RollbackIntent(
        deployment, target, f"{why}; revision {target} is known-good since {to_rfc3339(known_good.since_ms)}"))
    return Rollback(target, _pending(ctx, attempt, f"rollback of {deployment} to revision {target} requested"))


def _rollback_outcome(ctx: _Context, episode: Rollback | None, known_good: KnownGood | None,
                      outcome: IntentOutcome) -> tuple[Rollback | None, KnownGood | None]:
    intent = outcome.intent
    assert isinstance(intent, RollbackIntent)
    awaited = (episode is not None and episode.attempt.phase is Phase.PENDING
               and episode.revision == intent.revision)
    if outcome.done:
        ctx.audit.append(AuditRecord(
            ROLLED_BACK, f"rolled {intent.deployment} back to revision {intent.revision}: {intent.message}",
            tier=PRIMARY))
        # Kubernetes renumbers the restored template as a new revision, so revision N is gone; the
        # restored one earns known-good status again like any other.
        if known_good is not None and known_good.revision == intent.revision:
            known_good = None
        if not awaited:
            return episode, known_good
        assert episode is not None
        done = Attempt(Phase.DONE, min(whole_second_ms(outcome.time), ctx.now_ms), episode.attempt.generation,
                       episode.attempt.failures, None, f"rolled back to revision {intent.revision}")
        return Rollback(intent.revision, done), known_good
    if not awaited:
        if episode is None:  # nobody waits for it any more, but a failure is never silent
            ctx.audit.append(_rollback_failed(intent, outcome, "the creep budget stays exceeded"))
        return episode, known_good
    assert episode is not None
    attempt, first = _failed(ctx, episode.attempt, outcome)
    if first:
        ctx.audit.append(_rollback_failed(intent, outcome, "the creep budget stays exceeded"))
    return Rollback(episode.revision, attempt), known_good


def _rollback_failed(intent: RollbackIntent, outcome: IntentOutcome, still: str) -> AuditRecord:
    return AuditRecord(
        ROLLBACK_FAILED,
        f"rollback of {intent.deployment} to revision {intent.revision} failed: {outcome.message}; "
        f"{_retry_note(outcome, still)}",
        tier=PRIMARY)


# -- scaling ------------------------------------------------------------------------------------------------


def _forget_removed_tiers(ctx: _Context, scaled: dict[str, ScaledTier], scaling: dict[str, Scaling]) -> None:
    """A tier removed from the spec can no longer be scaled back (its Deployment is not named any more)."""
    names = set(ctx.policy.tier_names)
    for tier in [t for t in scaled if t not in names]:
        entry = scaled.pop(tier)
        ctx.audit.append(AuditRecord(
            SCALE_BACK_SKIPPED, f"tier {tier} is no longer part of the policy: its Deployment is left as it is "
                                f"(it had {entry.replicas} replicas before the operator scaled it up)", tier=tier))
    for tier in [t for t in scaling if t not in names]:
        del scaling[tier]


def _scale(ctx: _Context, index: int, tier: Tier, capacity: TierCapacity | None,
           scaled: dict[str, ScaledTier], scaling: dict[str, Scaling]) -> None:
    workload = ctx.facts.workloads.get(tier.name)
    entry = scaled.get(tier.name)
    current = scaling.get(tier.name)
    wanted = _wanted(ctx, index, capacity, workload, entry if current is None else None)
    if wanted is not None and capacity is not None and workload is not None:
        load = known_load(ctx.facts.load)
        why = f"to carry {load:.3g} requests/s at {capacity.requests_per_replica:g} per replica"
        intent = ScaleIntent(tier.name, tier.deployment, wanted, workload.desired, SCALED_UP, why)
        would = f"would scale {tier.deployment} from {workload.desired} to {wanted} replicas {why}"
        if _scale_step(ctx, scaling, current, intent, would):
            # Recorded before the write (the status write fences it): should the operator stop before the
            # outcome comes back, the replicas to return to are still known. A failed write undoes it.
            before = entry.replicas if entry is not None else workload.desired
            scaled[tier.name] = ScaledTier(tier.name, before, wanted)
    elif entry is not None and ctx.settled:
        _scale_back(ctx, tier, workload, entry, scaled, scaling, current)
    elif current is not None and not _awaiting(ctx, current.attempt) and not (
            ctx.decision.state.tiers[index].capacity_short and current.replicas > current.expected):
        del scaling[tier.name]  # the need has passed, and with it the episode


def _wanted(ctx: _Context, index: int, capacity: TierCapacity | None, workload: Workload | None,
            confirmed: ScaledTier | None) -> int | None:
    """The replicas to scale a fallback up to: `decide` skipped it for capacity, and the load is known.

    `confirmed` is the scale-up on record once its write is known to have gone through: the Deployment
    then has those replicas even if the Deployment snapshot has not caught up yet.
    """
    load = known_load(ctx.facts.load)
    if (capacity is None or not capacity.scale_on_activate or capacity.max_replicas is None or workload is None
            or load is None or not ctx.decision.state.tiers[index].capacity_short):
        return None
    needed = load / capacity.requests_per_replica
    wanted = capacity.max_replicas if needed >= capacity.max_replicas else math.ceil(needed)
    already = confirmed.scaled_to if confirmed is not None and confirmed.scaled_to is not None else 0
    return wanted if wanted > workload.desired and wanted > already else None


def _scale_back(ctx: _Context, tier: Tier, workload: Workload | None, entry: ScaledTier,
                scaled: dict[str, ScaledTier], scaling: dict[str, Scaling], current: Scaling | None) -> None:
    """Return a scaled fallback to its former size, only if it still has the replicas the operator set."""
    if current is not None and _awaiting(ctx, current.attempt):
        return
    expected = entry.scaled_to if entry.scaled_to is not None else (workload.desired if workload else None)
    if workload is None or expected is None or workload.desired == entry.replicas or expected <= entry.replicas:
        if workload is None:
            ctx.audit.append(AuditRecord(
                SCALE_BACK_SKIPPED, f"{tier.deployment} no longer exists: nothing to scale back", tier=tier.name))
        del scaled[tier.name]  # gone, already back at its former size, or never scaled up
        scaling.pop(tier.name, None)
        return
    if workload.desired != expected:
        ctx.audit.append(AuditRecord(
            SCALE_BACK_SKIPPED,
            f"{tier.deployment} has {workload.desired} replicas, not the {expected} the operator set: someone "
            f"else (a person or an autoscaler) changed it, so it is left as it is (it had {entry.replicas} "
            "before the scale-up)", tier=tier.name))
        del scaled[tier.name]
        scaling.pop(tier.name, None)
        return
    intent = ScaleIntent(tier.name, tier.deployment, entry.replicas, expected, SCALED_DOWN,
                         "traffic is back on the primary")
    would = f"would scale {tier.deployment} back from {expected} to {entry.replicas} replicas: {intent.message}"
    _scale_step(ctx, scaling, current, intent, would)


def _scale_step(ctx: _Context, scaling: dict[str, Scaling], current: Scaling | None, intent: ScaleIntent,
                would: str) -> bool:
    """Issue `intent` now, wait for back-off or an outcome, or report it withheld; True when it went out."""
    if current is not None and _awaiting(ctx, current.attempt):
        return False
    if current is not None and (current.replicas > current.expected) != (intent.replicas > intent.expected):
        current = None  # the other direction: a new episode
    attempt = current.attempt if current is not None else None
    if not _may_issue(ctx, attempt):
        return False
    if not ctx.acting:
        ctx.audit.append(AuditRecord(ACTION_WITHHELD, f"{would} ({ctx.withheld_by})", tier=intent.tier))
        scaling[intent.tier] = Scaling(intent.tier, intent.replicas, intent.expected,
                                       Attempt(Phase.WITHHELD, ctx.now_ms, ctx.facts.generation, message=would))
        return False
    ctx.intents.append(intent)
    scaling[intent.tier] = Scaling(intent.tier, intent.replicas, intent.expected,
                                   _pending(ctx, attempt, f"scale to {intent.replicas} replicas requested"))
    return True


def _scale_outcome(ctx: _Context, scaled: dict[str, ScaledTier], scaling: dict[str, Scaling],
                   outcome: IntentOutcome) -> None:
    intent = outcome.intent
    assert isinstance(intent, ScaleIntent)
    current = scaling.get(intent.tier)
    awaited = (current is not None and current.attempt.phase is Phase.PENDING
               and (current.replicas, current.expected) == (intent.replicas, intent.expected))
    up = intent.reason == SCALED_UP
    if outcome.done:
        ctx.audit.append(AuditRecord(
            intent.reason, f"scaled {intent.deployment} from {intent.expected} to {intent.replicas} replicas, "
                           f"{intent.message}", tier=intent.tier))
        if not up:
            scaled.pop(intent.tier, None)
        if awaited:
            del scaling[intent.tier]
        return
    entry = scaled.get(intent.tier)
    if up and entry is not None and entry.scaled_to == intent.replicas:
        # Undo the record made when the intent went out: the Deployment kept the replicas it had.
        if entry.replicas >= intent.expected:
            del scaled[intent.tier]
        else:
            scaled[intent.tier] = replace(entry, scaled_to=intent.expected)
    still = "the fallback is short of capacity" if up else "traffic stays on the primary"
    if not awaited:
        if current is None:  # nobody waits for it any more, but a failure is never silent
            ctx.audit.append(_scale_failed(intent, outcome, still))
        return
    assert current is not None
    attempt, first = _failed(ctx, current.attempt, outcome)
    if first:
        ctx.audit.append(_scale_failed(intent, outcome, still))
    scaling[intent.tier] = replace(current, attempt=attempt)


def _scale_failed(intent: ScaleIntent, outcome: IntentOutcome, still: str) -> AuditRecord:
    return AuditRecord(
        SCALE_FAILED,
        f"could not scale {intent.deployment} from {intent.expected} to {intent.replicas} replicas: "
        f"{outcome.message}; {_retry_note(outcome, still)}",
        tier=intent.tier)
