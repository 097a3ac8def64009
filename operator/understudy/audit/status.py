"""FallbackPolicy status, built the API-conventions way, and the smallest patch that writes it.

Pure: the caller passes the clock and everything it read, so the same decision on the same previous
status always yields the same dict. A steady state must cost no API write, hence two rules: a
condition's lastTransitionTime moves only when its status flips, and timestamps of history entries
are carried over verbatim instead of being rebuilt.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, Final, Protocol

from understudy.audit.reasons import format_value, is_transition
from understudy.engine.model import PRIMARY, AuditRecord

HISTORY_LIMIT: Final = 20
MESSAGE_LIMIT: Final = 1024
CONDITION_TYPES: Final = ("Ready", "FallbackActive", "MetricsAvailable", "CreepBudgetExceeded")
"""The conditions this operator owns, in the order they are listed; others found in status are kept."""


class DecisionLike(Protocol):
    """The parts of the engine's Decision that status is built from."""

    @property
    def active_tier(self) -> str: ...
    @property
    def weights(self) -> tuple[tuple[str, int], ...]: ...
    @property
    def audit(self) -> tuple[AuditRecord, ...]: ...
    @property
    def fallback_ratio(self) -> float: ...
    @property
    def creep_exceeded(self) -> bool: ...
    @property
    def metrics_available(self) -> bool: ...


def format_time(moment: datetime) -> str:
    """metav1.Time: RFC3339 in UTC, whole seconds (what the API server itself writes)."""
    utc = moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)
    return utc.strftime("%Y-%m-%dT%H:%M:%SZ")


def format_ratio(ratio: float) -> str:
    """Three decimal places: fine enough to read, coarse enough not to rewrite status every cycle.

    Never negative or NaN, which the CRD's decimal pattern would reject and fail the whole status write.
    """
    return f"{ratio:.3f}" if ratio > 0 else "0.000"


def build_status(
    previous: Mapping[str, Any] | None,
    decision: DecisionLike,
    generation: int,
    now: datetime,
    ready: tuple[bool, str, str],
    last_known_good_revision: str | None,
    engine: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The complete status for this decision.

    `ready` is (status, reason, message) as the shell judged it. A None `last_known_good_revision` or
    `engine` keeps the previous value: neither is known on every cycle, and forgetting them would lose
    the rollback target or the engine's counters.
    """
    previous = previous or {}
    stamp = format_time(now)
    weights = [{"tier": tier, "weight": weight} for tier, weight in decision.weights]
    primary_weight = dict(decision.weights).get(PRIMARY, 0)
    ratio = format_ratio(decision.fallback_ratio)
    owned = [
        _ready(ready),
        _fallback_active(decision, primary_weight),
        _metrics_available(decision.metrics_available),
        _creep(decision.creep_exceeded, ratio),
    ]
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "activeTier": decision.active_tier,
        "primaryWeight": primary_weight,
        "weights": weights,
        "conditions": _conditions(previous.get("conditions") or [], owned, generation, stamp),
        "fallbackRatio": ratio,
        "history": _history(previous.get("history") or [], decision.audit, decision.active_tier, stamp),
    }
    revision = last_known_good_revision if last_known_good_revision is not None else previous.get(
        "lastKnownGoodRevision")
    if revision is not None:
        status["lastKnownGoodRevision"] = revision
    if engine is not None:
        status["engine"] = _without_nulls(engine)
    elif previous.get("engine") is not None:
        status["engine"] = previous["engine"]  # as the API server returned it: already free of nulls
    return status


def status_patch(previous: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any] | None:
    """A JSON merge patch (RFC 7386) `{"status": ...}` taking `previous` to `new`, or None if equal.

    Top-level status fields absent from `new` are left alone (build_status carries over all it owns;
    anything else belongs to someone else); inside nested objects such as `engine`, removed keys are
    nulled so stale engine state cannot linger.
    """
    previous = previous or {}
    changes = {key: _merge_diff(previous.get(key), value)
               for key, value in new.items() if key not in previous or previous[key] != value}
    return {"status": changes} if changes else None


def _without_nulls(value: Any) -> Any:
    """Drop None values: a merge patch stores null as "absent", so keeping them would diff forever."""
    if isinstance(value, Mapping):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _merge_diff(old: Any, new: Any) -> Any:
    if not (isinstance(old, Mapping) and isinstance(new, Mapping)):
        return new
    diff: dict[str, Any] = {key: None for key in old if key not in new}
    for key, value in new.items():
        if key not in old:
            diff[key] = value
        elif old[key] != value:
            diff[key] = _merge_diff(old[key], value)
    return diff


Owned = tuple[str, bool, str, str]
"""(type, status, reason, message) of a condition before its timestamps are settled."""


def _conditions(previous: Sequence[Mapping[str, Any]], owned: list[Owned], generation: int,
                stamp: str) -> list[dict[str, Any]]:
    by_type = {c.get("type"): c for c in previous}
    result = []
    for kind, flag, reason, message in owned:
        status = "True" if flag else "False"
        before = by_type.get(kind) or {}
        flipped = before.get("status") != status or not before.get("lastTransitionTime")
        result.append({
            "type": kind,
            "status": status,
            "reason": reason,
            "message": _cap(message),
            "lastTransitionTime": stamp if flipped else before["lastTransitionTime"],
            "observedGeneration": generation,
        })
    result.extend(dict(c) for c in previous if c.get("type") not in CONDITION_TYPES)
    return result


def _ready(ready: tuple[bool, str, str]) -> Owned:
    flag, reason, message = ready
    return ("Ready", flag, reason, message)


def _fallback_active(decision: DecisionLike, primary_weight: int) -> Owned:
    shares = ", ".join(f"{tier} {weight}%" for tier, weight in decision.weights)
    if decision.active_tier != PRIMARY:
        return ("FallbackActive", True, "FallbackServing", f"{decision.active_tier} serves traffic ({shares})")
    if decision.weights and primary_weight < 100:
        return ("FallbackActive", True, "Restoring", f"traffic is returning to the primary ({shares})")
    return ("FallbackActive", False, "PrimaryServing", "the primary serves all traffic")


def _metrics_available(available: bool) -> Owned:
    if available:
        return ("MetricsAvailable", True, "MetricsAvailable", "every trigger has a current reading")
    return ("MetricsAvailable", False, "MetricsMissing",
            "Prometheus is unreachable or a trigger's series is empty; missing data is never read as zero")


def _creep(exceeded: bool, ratio: str) -> Owned:
    if exceeded:
        return ("CreepBudgetExceeded", True, "CreepBudgetExceeded",
                f"fallback ratio {ratio} is over the creep budget")
    return ("CreepBudgetExceeded", False, "WithinBudget", f"fallback ratio {ratio} is within the creep budget")


def _history(previous: Sequence[Mapping[str, Any]], audit: Sequence[AuditRecord], active_tier: str,
             stamp: str) -> list[dict[str, Any]]:
    entries = [dict(e) for e in previous]
    entries.extend(_entry(record, active_tier, stamp) for record in audit if is_transition(record))
    return entries[-HISTORY_LIMIT:]


def _entry(record: AuditRecord, active_tier: str, stamp: str) -> dict[str, Any]:
    """fromTier and toTier are required: a record that names no move (Pinned, Paused, a rollback)
    is shown as happening on its own tier, or on the tier that serves after the decision."""
    fields = {
        "time": stamp,
        "fromTier": record.from_tier or record.tier or active_tier,
        "toTier": record.to_tier or active_tier,
        "reason": record.reason,
        "trigger": record.trigger,
        "observed": format_value(record.observed),
        "threshold": format_value(record.threshold),
        "message": _cap(record.message),
    }
    return {key: value for key, value in fields.items() if value is not None}


def _cap(message: str) -> str:
    return message if len(message) <= MESSAGE_LIMIT else message[:MESSAGE_LIMIT - 1] + "…"
