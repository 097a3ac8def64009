"""The report's last drill comes from status.lastDrills, newest first."""
from __future__ import annotations

from understudy.report.assemble import NO_DRILL, _last_drill


def test_no_drill_on_record() -> None:
    assert _last_drill({}) == NO_DRILL


def test_the_newest_outcome_is_reported() -> None:
    status = {"lastDrills": [
        {"tier": "popular", "time": "2026-11-20T10:00:00Z", "result": "Passed", "message": "ok"},
        {"tier": "distilled", "time": "2026-11-25T10:00:00Z", "result": "Failed", "message": "errors 0.4 above 0.05"},
    ]}
    assert _last_drill(status) == "Failed at 2026-11-25T10:00:00Z (distilled): errors 0.4 above 0.05"
