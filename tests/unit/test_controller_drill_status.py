"""A running drill's evidence is kept in status.drill.evidence, so it accumulates across evaluations and
survives a restart (the cycle rebuilds the run from status on every evaluation)."""
from __future__ import annotations

from datetime import datetime, timezone

from understudy.controller.status import drill_run, record_drill
from understudy.engine.drills import DrillRun, DrillStep


def test_a_running_drills_evidence_round_trips_through_status() -> None:
    run = DrillRun("distilled", 10, 1_700_000_000.0, 1_700_000_060.0, ("errors",))
    status: dict = {"conditions": [], "observedGeneration": 1}
    record_drill({}, status, DrillStep(run, None, None, ()), datetime.now(timezone.utc))
    assert status["drill"]["evidence"] == ["errors"]
    assert drill_run(status["drill"]) == run
