"""Status fields the shell adds to the engine's: the primary's revision, the known-good one, drills."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Mapping

from understudy.audit.status import format_time
from understudy.controller.store import DeploymentSnapshot
from understudy.engine import PRIMARY, Decision
from understudy.engine.drills import DrillOutcome, DrillStep


def record_drill(previous: Mapping[str, Any], status: dict[str, Any], step: DrillStep, moment: datetime) -> None:
    """status.drill (the drill in progress), status.lastDrills and the LastDrillPassed condition."""
    if step.running is not None:
        status["drill"] = {"tier": step.running.tier, "share": step.running.share,
                           "startedAt": format_time(datetime.fromtimestamp(step.running.started, timezone.utc)),
                           "endsAt": format_time(datetime.fromtimestamp(step.running.ends, timezone.utc))}
    elif previous.get("drill"):
        status["drill"] = None  # a merge patch null removes it
    outcome: DrillOutcome | None = step.outcome
    if outcome is None:
        return
    stamp = format_time(datetime.fromtimestamp(outcome.time, timezone.utc))
    entry = {"tier": outcome.tier, "time": stamp, "result": outcome.result, "message": outcome.message[:1024]}
    status["lastDrills"] = [*(o for o in previous.get("lastDrills") or [] if o.get("tier") != outcome.tier), entry]
    if outcome.result in ("Passed", "Failed"):
        passed = outcome.result == "Passed"
        before = next((c for c in status["conditions"] if c["type"] == "LastDrillPassed"), None)
        condition = {"type": "LastDrillPassed", "status": "True" if passed else "False",
                     "reason": "DrillPassed" if passed else "DrillFailed", "message": entry["message"],
                     "lastTransitionTime": stamp if not before or before["status"] != ("True" if passed else "False")
                     else before["lastTransitionTime"],
                     "observedGeneration": status["observedGeneration"]}
        status["conditions"] = [*(c for c in status["conditions"] if c["type"] != "LastDrillPassed"), condition]


def primary_revision(status: Mapping[str, Any], primary: DeploymentSnapshot | None,
                     moment: datetime) -> dict[str, str] | None:
    """The primary Deployment's current revision and since when this policy has seen it."""
    if primary is None or primary.revision is None:
        return None
    seen = status.get("primaryRevision") or {}
    if seen.get("revision") == primary.revision and seen.get("since"):
        return {"revision": primary.revision, "since": seen["since"]}
    return {"revision": primary.revision, "since": moment.strftime("%Y-%m-%dT%H:%M:%SZ")}


def last_known_good(status: Mapping[str, Any], revision: Mapping[str, str] | None, decision: Decision,
                    creep_window: float, now: float) -> str | None:
    """The primary's revision becomes known-good once it has carried all traffic for a whole creep window
    with no time off the primary in that window.

    A revision that keeps falling back never gets there, so it can be rolled back to the one before it.
    The first revision a policy sees healthy is taken as known-good at once, so a rollback target exists
    from the start. None keeps the value on record.
    """
    if revision is None:
        return None
    healthy = dict(decision.weights).get(PRIMARY) == 100 and not decision.creep_exceeded
    if not healthy or decision.state.tiers[0].tripped:
        return None
    known = status.get("lastKnownGoodRevision")
    if known is None:
        return revision["revision"]
    if known == revision["revision"]:
        return None
    since = datetime.fromisoformat(revision["since"].replace("Z", "+00:00")).timestamp()
    fallback_free = all(b.off_primary_ms == 0 for b in decision.state.creep_buckets)
    return revision["revision"] if fallback_free and now - since >= creep_window else None
