"""status.drill carries a drill's evidence from one evaluation to the next (engine/drills.py reads it back)."""
from __future__ import annotations

from datetime import datetime, timezone

from understudy.controller.status import drill_in_progress, record_drill
from understudy.engine.drills import DrillRun, DrillStep


def test_the_evidence_of_a_running_drill_survives_the_round_trip_through_status() -> None:
    run = DrillRun("distilled", 10, 1_700_000_000.0, 1_700_000_060.0, ("error-ratio", "p99-latency"))
    status: dict = {"conditions": [], "observedGeneration": 1}
    record_drill({}, status, DrillStep(run, None, None, ()), datetime.fromtimestamp(1_700_000_010, timezone.utc))
    assert status["drill"]["evidence"] == ["error-ratio", "p99-latency"]
    assert drill_in_progress(status["drill"]) == run


def test_a_drill_without_evidence_yet_writes_none_and_reads_back_empty() -> None:
    run = DrillRun("distilled", 10, 1_700_000_000.0, 1_700_000_060.0)
    status: dict = {"conditions": [], "observedGeneration": 1}
    record_drill({}, status, DrillStep(run, None, None, ()), datetime.fromtimestamp(1_700_000_010, timezone.utc))
    assert "evidence" not in status["drill"]
    assert drill_in_progress(status["drill"]) == run
    assert drill_in_progress(None) is None
