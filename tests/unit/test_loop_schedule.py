"""The evaluation loop's cadence: one evaluation per interval, never two in a row."""
from __future__ import annotations

from understudy.loop import schedule_next


def test_on_time_policies_keep_their_cadence() -> None:
    assert schedule_next(100.0, 5.0, 100.2) == 105.0


def test_a_new_or_late_policy_waits_a_full_interval() -> None:
    assert schedule_next(0.0, 5.0, 1_700_000_000.0) == 1_700_000_005.0
    assert schedule_next(100.0, 5.0, 112.0) == 117.0
