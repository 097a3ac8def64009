"""What `decide` needs from a policy, validated and precomputed once per Policy object."""
from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Mapping

from understudy.engine.model import Policy, RestoreApproval, Trigger

CREEP_BUCKETS = 48
"""Slices of the creep window kept in state: bounds the status size whatever the window's length."""

PROBE_BACKOFF_CAP = 4
"""The most consecutive failed probes that lengthen the wait for the next probe: at most 2^4 = 16 x
recoverAfter clear evaluations. Each failed probe of a tier sends it real traffic (with Service routing, all
of it) while it is still broken, so each one doubles the wait for the next, as Envoy's outlier detection
lengthens each consecutive ejection; past four doublings the probes come seldom enough that waiting longer
mostly delays the return of a model that has been fixed. The count is kept capped, so an incident that goes
on does not grow the status."""

PROBE_WAIT_CEILING_S = 86_400
"""However many probes failed, a tier needs at most a day of clear evaluations to recover (or recoverAfter,
if that is more): the bound the API puts on recoverAfter x interval, for the same reason."""


@dataclass(frozen=True)
class Plan:
    names: tuple[str, ...]
    index: Mapping[str, int]
    triggers: tuple[tuple[Trigger, ...], ...]
    """Per tier, the triggers that apply to it."""
    thresholds: Mapping[str, float]
    steps: tuple[int, ...]
    last_resort: int
    dwell_ms: int
    stall_ms: int
    credit_cap_ms: int
    bucket_ms: int
    window_ms: int
    """The creep window."""
    rate_window_ms: int
    """The rate() window request counts cover (evaluation.window)."""
    manual_restore: bool = False
    """evaluation.restoreApproval Manual: a restore starts only once approved."""
    approved_ms: int | None = None
    """spec.override.restoreApprovedAt in epoch milliseconds, floored to the second."""
    override_by: str | None = None
    recover_after: int = 1
    """evaluation.recoverAfter: the clear evaluations a tripped tier needs before any failed probe."""
    clear_ceiling: int = 1
    """The most clear evaluations a tier may need to recover: a day of evaluations, or recoverAfter if more."""

    def clear_needed(self, failed_probes: int) -> int:
        """Consecutive clear evaluations a tripped tier needs to recover: recoverAfter x 2^n, n its consecutive
        failed probes (at most PROBE_BACKOFF_CAP), and never more than `clear_ceiling`. The clear streak is
        capped here too, so a steady state does not rewrite status with a growing counter."""
        if failed_probes <= 0:
            return self.recover_after
        return min(self.recover_after << min(failed_probes, PROBE_BACKOFF_CAP), self.clear_ceiling)


_plans: dict[int, tuple[weakref.ref[Policy], Plan]] = {}


def plan_for(policy: Policy) -> Plan:
    """Validated and precomputed once per Policy object, found by identity.

    A policy value only changes with its spec, and callers keep one object per spec. A cache keyed by
    value would hash the whole policy on every evaluation, and a bounded one would thrash at thousands
    of policies; an entry here lives exactly as long as its policy.
    """
    key = id(policy)
    cached = _plans.get(key)
    if cached is not None and cached[0]() is policy:
        return cached[1]
    plan = _make_plan(policy)
    _plans[key] = (weakref.ref(policy, lambda _, key=key: _plans.pop(key, None)), plan)  # type: ignore[misc]
    return plan


def _make_plan(policy: Policy) -> Plan:
    names = policy.tier_names
    if not names:
        raise ValueError("a policy needs at least the primary tier")
    if len(set(names)) != len(names):
        raise ValueError(f"tier names must be unique: {names}")
    trigger_names = [t.name for t in policy.triggers]
    if len(set(trigger_names)) != len(trigger_names):
        raise ValueError(f"trigger names must be unique: {trigger_names}")
    for label, value in (("pinned tier", policy.pinned_tier), ("whenAllBreached", policy.when_all_breached)):
        if value is not None and value not in names:
            raise ValueError(f"{label} {value!r} is not a tier of this policy")
    if policy.trip_after < 1 or policy.recover_after < 1:
        raise ValueError("tripAfter and recoverAfter must be at least 1")
    if policy.min_dwell < 0 or policy.interval <= 0 or policy.creep_window <= 0 or policy.restore_stall_after <= 0:
        raise ValueError("minDwell must be >= 0, interval, creep window and restoreStallAfter > 0")
    if policy.restore_approved_at is not None and not math.isfinite(policy.restore_approved_at):
        raise ValueError(f"restoreApprovedAt must be a time: {policy.restore_approved_at}")
    steps = policy.restore_steps
    if any(not 0 < s <= 100 for s in steps) or any(a >= b for a, b in zip(steps, steps[1:])):
        raise ValueError(f"restore steps must increase within 1..100: {steps}")
    window_ms = round(policy.creep_window * 1000)
    return Plan(
        names=names,
        index={n: i for i, n in enumerate(names)},
        triggers=tuple(tuple(t for t in policy.triggers if t.applies(n)) for n in names),
        thresholds={t.name: t.threshold for t in policy.triggers},
        # A restore always ends with all traffic on the better tier, whether or not the spec says 100; where
        # the routing cannot split traffic, a smaller step would send the better tier nothing to judge.
        steps=(100,) if not policy.traffic_split else steps if steps and steps[-1] == 100 else (*steps, 100),
        last_resort=len(names) - 1 if policy.when_all_breached is None else names.index(policy.when_all_breached),
        dwell_ms=round(policy.min_dwell * 1000),
        stall_ms=round(policy.restore_stall_after * 1000),
        credit_cap_ms=round(2 * policy.interval * 1000),
        bucket_ms=max(1, -(-window_ms // CREEP_BUCKETS)),
        window_ms=window_ms,
        rate_window_ms=max(1, round(policy.window * 1000)),
        manual_restore=policy.restore_approval is RestoreApproval.MANUAL,
        approved_ms=None if policy.restore_approved_at is None else math.floor(policy.restore_approved_at) * 1000,
        override_by=policy.override_by,
        recover_after=policy.recover_after,
        clear_ceiling=max(policy.recover_after, math.floor(PROBE_WAIT_CEILING_S / policy.interval)),
    )
