"""Stage 4 of `decide`: time spent off the primary, in a sliding window of buckets.

The reported ratio is off-primary time over observed time, but the budget is exceeded only when
off-primary time passes maxFallbackRatio times the whole window (or the observed time, if longer):
otherwise a freshly started operator, having observed ten minutes, would call a five-minute fallback a
50% creep and may roll back a Deployment.
"""
from __future__ import annotations

from operator import attrgetter

from understudy.engine.plan import CREEP_BUCKETS, Plan
from understudy.engine.state import CreepBucket, State


def credit(plan: Plan, state: State, primary_weight: int, now_ms: int) -> tuple[tuple[CreepBucket, ...], int, int]:
    """Credit the time since the previous evaluation, at the previous weights, to the current bucket.

    The credit is capped at twice the evaluation interval so that a gap (operator down, leader change) is
    not counted as time off the primary. Off-primary time is weight-share times seconds, so a 10% restore
    step counts as 90% fallback. Returns (buckets, off-primary ms, observed ms) over the window.
    """
    last = state.last_evaluation_ms
    elapsed = 0 if last is None else min(max(now_ms - last, 0), plan.credit_cap_ms)
    index = now_ms // plan.bucket_ms
    buckets = [b for b in state.creep_buckets if b.index > index - CREEP_BUCKETS]
    if elapsed:
        off = (elapsed * (100 - primary_weight) + 50) // 100
        # The current bucket is almost always the newest, i.e. the last (a clock that stepped back aside).
        at = len(buckets) - 1 if buckets and buckets[-1].index == index else next(
            (k for k, b in enumerate(buckets) if b.index == index), None)
        if at is None:
            buckets.append(CreepBucket(index, off, elapsed))
        else:
            b = buckets[at]
            buckets[at] = CreepBucket(index, b.off_primary_ms + off, b.observed_ms + elapsed)
    # map() with the C getter: up to 48 buckets on every evaluation of every policy.
    return tuple(buckets), sum(map(_OFF, buckets)), sum(map(_OBSERVED, buckets))


_OFF, _OBSERVED = attrgetter("off_primary_ms"), attrgetter("observed_ms")
