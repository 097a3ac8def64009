"""Status fields the shell adds to the engine's: drills (governance fields come from the engine)."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Mapping

from understudy.audit.status import format_time
from understudy.engine.drills import DrillOutcome, DrillRun, DrillStep


def drill_run(drill: Mapping[str, Any]) -> DrillRun:
    """status.drill as the engine's DrillRun, with the evidence gathered so far (it accumulates over the
    drill's evaluations and survives a restart)."""
    return DrillRun(drill["tier"], int(drill["share"]), _epoch(drill["startedAt"]), _epoch(drill["endsAt"]),
                    tuple(sorted(str(t) for t in drill.get("evidence") or ())))


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def record_drill(previous: Mapping[str, Any], status: dict[str, Any], step: DrillStep, moment: datetime) -> None:
    """status.drill (the drill in progress), status.lastDrills and the LastDrillPassed condition."""
    if step.running is not None:
        status["drill"] = {"tier": step.running.tier, "share": step.running.share,
                           "startedAt": format_time(datetime.fromtimestamp(step.running.started, timezone.utc)),
                           "endsAt": format_time(datetime.fromtimestamp(step.running.ends, timezone.utc)),
                           "evidence": list(step.running.evidence)}
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
