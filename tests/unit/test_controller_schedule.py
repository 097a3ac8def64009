"""The evaluation loop's cadence: policies of one interval fall due together, never twice in a row."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from understudy.controller.runtime import schedule_next


def test_policies_of_one_interval_fall_due_on_the_same_grid() -> None:
    assert schedule_next(5.0, 100.2) == 105.0
    assert schedule_next(5.0, 101.9) == 105.0
    assert schedule_next(1.0, 1_700_000_000.3) == 1_700_000_001.0


def test_a_new_or_late_policy_waits_at_least_half_an_interval() -> None:
    assert schedule_next(5.0, 103.0) == 110.0
    assert schedule_next(5.0, 112.0) == 115.0


@given(st.sampled_from([1.0, 2.0, 5.0, 10.0, 30.0, 60.0]), st.floats(1e6, 2e9))
def test_next_due_is_on_the_grid_between_half_and_one_and_a_half_intervals_away(interval: float, now: float) -> None:
    due = schedule_next(interval, now)
    assert interval / 2 <= due - now <= interval * 1.5
    assert abs(due / interval - round(due / interval)) < 1e-6
