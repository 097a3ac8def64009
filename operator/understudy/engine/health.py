"""Stage 1 of `decide`: each tier's readings become a verdict, and verdicts move streaks (hysteresis)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Mapping

from understudy.engine import reasons
from understudy.engine.model import AuditRecord, Comparison, MissingData, Policy, Reading, ReadingStatus, Trigger
from understudy.engine.plan import PROBE_BACKOFF_CAP, Plan
from understudy.engine.state import TierState


class Verdict(Enum):
    BREACH = "Breach"
    MISSING = "Missing"
    INCONCLUSIVE = "Inconclusive"
    CLEAR = "Clear"


@dataclass(frozen=True)
class Breach:
    trigger: Trigger
    value: float


@dataclass(frozen=True)
class Eval:
    verdict: Verdict
    worst: Breach | None
    missing: tuple[str, ...]
    """Applicable triggers without data on this tier."""
    requests: float = 0.0
    """The largest request count an Insufficient reading carried (0 when none did)."""
    floor: int = 1
    """The largest request minimum among the triggers that read Insufficient (at least 1)."""
    thin_breach: bool = False
    """An Insufficient reading carried a value past its threshold: too few requests to trip the tier,
    enough to distrust it."""


def evaluate(triggers: tuple[Trigger, ...], readings: Mapping[str, Reading] | None, has_traffic: bool) -> Eval:
    """A tier's verdict for this evaluation.

    A real breach wins over missing data elsewhere (it must not be hidden by a dead series). NaN counts
    as missing, never as a value. INSUFFICIENT blocks a clear only on a tier that receives traffic: a
    tier with no traffic has no requests by nature, and letting it clear is what makes the first restore
    step a probe (the half-open state of a circuit breaker).
    """
    worst: Breach | None = None
    worst_severity = 0.0
    missing: list[str] = []
    insufficient = thin_breach = False
    requests, floor = 0.0, 1
    for trigger in triggers:
        reading = readings.get(trigger.name) if readings is not None else None
        if reading is None or reading.status is ReadingStatus.MISSING:
            missing.append(trigger.name)
        elif reading.status is ReadingStatus.INSUFFICIENT:
            insufficient = True
            floor = max(floor, trigger.min_requests)
            count, value = reading.requests, reading.value
            if count is not None and count > requests and math.isfinite(count):
                requests = count
            if value is not None and value == value and trigger.breached_by(value):
                thin_breach = True
        elif reading.value is None or reading.value != reading.value:
            missing.append(trigger.name)
        elif trigger.breached_by(reading.value):
            severity = _severity(trigger, reading.value)
            if worst is None or severity > worst_severity:
                worst, worst_severity = Breach(trigger, reading.value), severity
    if worst is not None:
        verdict = Verdict.BREACH
    elif missing:
        verdict = Verdict.MISSING
    elif insufficient and has_traffic:
        verdict = Verdict.INCONCLUSIVE
    else:
        verdict = Verdict.CLEAR
    if not insufficient:
        return Eval(verdict, worst, tuple(missing))
    return Eval(verdict, worst, tuple(missing), requests, floor, thin_breach)


def _severity(trigger: Trigger, value: float) -> float:
    """How far past its threshold a reading is, relative to the threshold, to name a tier's worst trigger."""
    excess = value - trigger.threshold if trigger.comparison is Comparison.ABOVE else trigger.threshold - value
    return excess / abs(trigger.threshold) if trigger.threshold else excess


def effective(policy: Policy, ev: Eval, has_traffic: bool) -> Verdict:
    """onMissingData=Fallback reads missing data on a tier that serves as a breach; Hold (and any tier
    without traffic) freezes its streaks instead: missing data is never read as healthy or as zero."""
    if ev.verdict is Verdict.MISSING and has_traffic and policy.on_missing_data is MissingData.FALLBACK:
        return Verdict.BREACH
    return ev.verdict


def update_tier(policy: Policy, plan: Plan, ts: TierState, verdict: Verdict, ev: Eval, *,
                on_probation: bool, serving: bool = False, anchored: bool = False,
                audit: list[AuditRecord]) -> TierState:
    """Hysteresis: trip after tripAfter consecutive breaches, recover after enough consecutive clears.

    Missing and inconclusive evaluations freeze both streaks: they are evidence neither of health nor of
    a breach. A tier being restored to is on probation: one breach trips it again, as a failure in a
    circuit breaker's half-open state reopens it.

    The probe backoff: a restore to a tier is a probe of it, from its first step until the tier reads clear
    with traffic anchored on it (`anchored`: it is the tier the routing is anchored on, and has traffic).
    A trip before then is a failed probe, and a tier needs recoverAfter x 2^n clear evaluations to recover
    after n failed probes in a row (`Plan.clear_needed`). A clear evaluation with traffic anchored on the
    tier ends the backoff, however the traffic came there (a restore, a pin, a fallback down the chain): the
    tier has served and served well. A probe whose tier stops receiving traffic (`serving`) without tripping
    ends without a verdict: a pin elsewhere, or a restore aborted because the tier lost its pods or capacity.
    """
    breach, clear = ts.breach_streak, ts.clear_streak
    failed, probing = ts.failed_probes, ts.probing
    if probing and not serving:
        probing = False
    if verdict is Verdict.CLEAR and anchored and (failed or probing):
        failed, probing = 0, False
    needed = plan.clear_needed(failed)
    if verdict is Verdict.BREACH:
        breach, clear = min(breach + 1, policy.trip_after), 0
    elif verdict is Verdict.CLEAR:
        breach, clear = 0, min(clear + 1, needed)
    tripped, trip_trigger = ts.tripped, ts.trip_trigger
    if not tripped and verdict is Verdict.BREACH and (breach >= policy.trip_after or on_probation):
        tripped = True
        backoff = ""
        if probing:
            failed, probing = min(max(failed, 0) + 1, PROBE_BACKOFF_CAP), False
            backoff = (f"; probe failed ({_in_a_row(failed)} in a row): next probe after "
                       f"{plan.clear_needed(failed)} clear evaluations")
        if ev.worst is not None:
            trigger = ev.worst.trigger
            trip_trigger = trigger.name
            audit.append(AuditRecord(
                reasons.TIER_TRIPPED,
                f"{ts.name}: {describe(trigger, ev.worst.value)}"
                + (" during restore" if on_probation else f" for {breach} evaluations") + backoff,
                tier=ts.name, trigger=trigger.name, observed=ev.worst.value, threshold=trigger.threshold,
            ))
        else:
            trip_trigger = ev.missing[0]
            audit.append(AuditRecord(
                reasons.TIER_TRIPPED,
                f"{ts.name}: no data for {', '.join(ev.missing)} (onMissingData=Fallback)" + backoff,
                tier=ts.name, trigger=trip_trigger,
            ))
    elif tripped and clear >= needed:
        tripped, trip_trigger = False, None
        audit.append(AuditRecord(
            reasons.TIER_RECOVERED, f"{ts.name}: clear for {clear} evaluations" + _backoff_note(plan, failed),
            tier=ts.name,
        ))
    if (breach, clear, tripped, trip_trigger, failed, probing) == (
            ts.breach_streak, ts.clear_streak, ts.tripped, ts.trip_trigger, ts.failed_probes, ts.probing):
        return ts
    return TierState(ts.name, breach, clear, tripped, trip_trigger, ts.capacity_short, ts.unready, failed, probing)


def _in_a_row(failed: int) -> str:
    """The failed probes in a row as the capped counter knows them."""
    return f"{failed}" if failed < PROBE_BACKOFF_CAP else f"{PROBE_BACKOFF_CAP} or more"


def _backoff_note(plan: Plan, failed: int) -> str:
    """Why a recovery took more than recoverAfter clear evaluations, if it did."""
    if failed <= 0:
        return ""
    plural = "s" if failed > 1 else ""
    ceiling = ", at most a day of evaluations" if plan.clear_needed(failed) < plan.recover_after << min(
        failed, PROBE_BACKOFF_CAP) else ""
    return (f" (recoverAfter {plan.recover_after} doubled for each of {_in_a_row(failed)} failed probe{plural} "
            f"in a row{ceiling})")


def describe(trigger: Trigger, value: float) -> str:
    return f"{trigger.name} {value:g} {trigger.comparison.value} {trigger.threshold:g}"
