"""The engine's memory between evaluations, and its status form.

State lives in the FallbackPolicy's status, so an operator restart (or a new leader) resumes it. It
holds only ints, strings, bools and tuples, times as integer epoch milliseconds: that makes the status
form float-free (API conventions) and the round trip exact, so `decide` after a restart behaves exactly
as it would have without one. Streaks are capped at the policy's thresholds (the clear streak at what
the tier needs now, see `Plan.clear_needed`), and so is the failed-probe count, so a steady situation does
not rewrite status with ever-growing counters.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from understudy.engine.model import Policy


@dataclass(frozen=True, slots=True)
class TierState:
    name: str
    breach_streak: int = 0
    """Consecutive breached evaluations (capped at tripAfter)."""
    clear_streak: int = 0
    """Consecutive clear evaluations (capped at what the tier needs to recover: recoverAfter, more after
    failed probes)."""
    tripped: bool = False
    trip_trigger: str | None = None
    """The trigger that tripped the tier, kept to explain later moves away from it."""
    capacity_short: bool = False
    """A CapacityInsufficient episode is open for this tier."""
    unready: bool = False
    """A NoReadyReplicas episode is open for this tier."""
    failed_probes: int = 0
    """Consecutive failed probes (capped at PROBE_BACKOFF_CAP): trips of this tier while `probing`. Each one
    doubles the clear evaluations it needs to recover (see `Plan.clear_needed`); a clear evaluation with
    traffic anchored on the tier sets it back to 0."""
    probing: bool = False
    """A restore to this tier has begun and the tier has not yet read clear with traffic anchored on it:
    a trip now is a failed probe. Ends without a verdict when the tier no longer receives traffic."""


@dataclass(frozen=True, slots=True)
class CreepBucket:
    """Time observed in one slice of the creep window; `index` is epoch_ms // bucket width."""

    index: int
    off_primary_ms: int
    observed_ms: int


@dataclass(frozen=True, slots=True)
class State:
    weights: tuple[tuple[str, int], ...]
    """Every tier in policy order with its percent; in Observe mode the weights the policy would set."""
    active_tier: str
    """The tier traffic is anchored on; during a restore, the tier the remaining share stays on."""
    tiers: tuple[TierState, ...]
    restore_tier: str | None = None
    """The better tier being restored to, if a restore is under way."""
    restore_step: int = 0
    """Index into the policy's restore steps while restoring."""
    restore_evidence: int = 0
    """Requests credited to the current restore step, in thousandths (see `route.restore_evidence`)."""
    last_transition_ms: int | None = None
    last_evaluation_ms: int | None = None
    pinned_tier: str | None = None
    """The pin in effect (it can lag the spec while paused)."""
    paused: bool = False
    all_tiers_breached: bool = False
    metrics_missing: bool = False
    creep_exceeded: bool = False
    creep_buckets: tuple[CreepBucket, ...] = ()
    frozen: bool = False
    """creep.action Freeze holds routing: the creep budget is exceeded."""
    restore_stalled: bool = False
    """A RestoreStalled episode is open: the current restore step has not advanced within the bound."""
    held_tier: str | None = None
    """evaluation.restoreApproval Manual: a restore to this better tier is due and waits for approval."""
    held_since_ms: int | None = None
    """When that restore became due; an approval releases it only if at least as recent (see `approval`)."""


def initial_state(policy: Policy) -> State:
    """All traffic on the primary, every tier untripped: what a new policy starts from."""
    names = policy.tier_names
    return State(
        weights=tuple((n, 100 if i == 0 else 0) for i, n in enumerate(names)),
        active_tier=names[0],
        tiers=tuple(TierState(n) for n in names),
    )


def state_to_status(state: State) -> dict[str, Any]:
    """The JSON-able status form: camelCase keys, no floats, optional fields omitted when unset."""
    status: dict[str, Any] = {
        "activeTier": state.active_tier,
        "weights": [{"tier": t, "weight": w} for t, w in state.weights],
        "tiers": [_tier_to_status(t) for t in state.tiers],
        "paused": state.paused,
        "allTiersBreached": state.all_tiers_breached,
        "metricsMissing": state.metrics_missing,
        "creepExceeded": state.creep_exceeded,
        "creepBuckets": [
            {"bucket": b.index, "offPrimaryMs": b.off_primary_ms, "observedMs": b.observed_ms}
            for b in state.creep_buckets
        ],
    }
    if state.restore_tier is not None:
        status["restore"] = {"tier": state.restore_tier, "step": state.restore_step}
        if state.restore_evidence:
            status["restore"]["evidenceMilli"] = state.restore_evidence
    if state.frozen:
        status["frozen"] = True
    if state.restore_stalled:
        status["restoreStalled"] = True
    if state.held_tier is not None and state.held_since_ms is not None:
        status["restoreHeld"] = {"tier": state.held_tier, "sinceMs": state.held_since_ms}
    if state.last_transition_ms is not None:
        status["lastTransitionMs"] = state.last_transition_ms
    if state.last_evaluation_ms is not None:
        status["lastEvaluationMs"] = state.last_evaluation_ms
    if state.pinned_tier is not None:
        status["pinnedTier"] = state.pinned_tier
    return status


def state_from_status(status: Mapping[str, Any]) -> State:
    """Invert `state_to_status` exactly; raises ValueError on a malformed dict.

    For statuses this engine just wrote (round trips, benchmarks). A status read from the API server is
    input anyone with `patch` on the status may have written: read it with `restore.restore_state`, which
    checks every field against the policy and the clock and repairs instead of raising."""
    restore = status.get("restore")
    if restore is not None and not isinstance(restore, Mapping):
        raise ValueError("restore: expected an object")
    held = status.get("restoreHeld")
    if held is not None and not isinstance(held, Mapping):
        raise ValueError("restoreHeld: expected an object")
    return State(
        weights=tuple(
            (_str(w, "tier"), _int(w, "weight")) for w in _list(status, "weights")
        ),
        active_tier=_str(status, "activeTier"),
        tiers=tuple(_tier_from_status(t) for t in _list(status, "tiers")),
        restore_tier=None if restore is None else _str(restore, "tier"),
        restore_step=0 if restore is None else _int(restore, "step"),
        restore_evidence=0 if restore is None else _opt_int(restore, "evidenceMilli") or 0,
        last_transition_ms=_opt_int(status, "lastTransitionMs"),
        last_evaluation_ms=_opt_int(status, "lastEvaluationMs"),
        pinned_tier=_opt_str(status, "pinnedTier"),
        paused=_bool(status, "paused"),
        all_tiers_breached=_bool(status, "allTiersBreached"),
        metrics_missing=_bool(status, "metricsMissing"),
        creep_exceeded=_bool(status, "creepExceeded"),
        creep_buckets=tuple(
            CreepBucket(_int(b, "bucket"), _int(b, "offPrimaryMs"), _int(b, "observedMs"))
            for b in _list(status, "creepBuckets")
        ),
        frozen=_opt_bool(status, "frozen"),
        restore_stalled=_opt_bool(status, "restoreStalled"),
        held_tier=None if held is None else _str(held, "tier"),
        held_since_ms=None if held is None else _int(held, "sinceMs"),
    )


def _tier_to_status(t: TierState) -> dict[str, Any]:
    d: dict[str, Any] = {
        "name": t.name,
        "breachStreak": t.breach_streak,
        "clearStreak": t.clear_streak,
        "tripped": t.tripped,
        "capacityShort": t.capacity_short,
    }
    if t.unready:
        d["unready"] = True
    if t.failed_probes:
        d["failedProbes"] = t.failed_probes
    if t.probing:
        d["probing"] = True
    if t.trip_trigger is not None:
        d["tripTrigger"] = t.trip_trigger
    return d


def _tier_from_status(d: Any) -> TierState:
    return TierState(
        name=_str(d, "name"),
        breach_streak=_int(d, "breachStreak"),
        clear_streak=_int(d, "clearStreak"),
        tripped=_bool(d, "tripped"),
        trip_trigger=_opt_str(d, "tripTrigger"),
        capacity_short=_bool(d, "capacityShort"),
        unready=_opt_bool(d, "unready"),
        failed_probes=_opt_int(d, "failedProbes") or 0,
        probing=_opt_bool(d, "probing"),
    )


def _get(d: Any, key: str) -> Any:
    if not isinstance(d, Mapping) or key not in d:
        raise ValueError(f"{key}: missing")
    return d[key]


def _int(d: Any, key: str) -> int:
    v = _get(d, key)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"{key}: expected an integer, got {v!r}")
    return v


def _opt_int(d: Mapping[str, Any], key: str) -> int | None:
    return _int(d, key) if d.get(key) is not None else None


def _str(d: Any, key: str) -> str:
    v = _get(d, key)
    if not isinstance(v, str):
        raise ValueError(f"{key}: expected a string, got {v!r}")
    return v


def _opt_str(d: Mapping[str, Any], key: str) -> str | None:
    return _str(d, key) if d.get(key) is not None else None


def _bool(d: Any, key: str) -> bool:
    v = _get(d, key)
    if not isinstance(v, bool):
        raise ValueError(f"{key}: expected a boolean, got {v!r}")
    return v


def _opt_bool(d: Mapping[str, Any], key: str) -> bool:
    """A flag added after the first release: absent in statuses written before it, and then False."""
    return _bool(d, key) if d.get(key) is not None else False


def _list(d: Any, key: str) -> list[Any]:
    v = _get(d, key)
    if not isinstance(v, list):
        raise ValueError(f"{key}: expected a list, got {v!r}")
    return v
