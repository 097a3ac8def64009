"""The reader reuses a batch's query plan while the very same targets come due, and replans otherwise."""
from __future__ import annotations

import dataclasses

from understudy.engine import Comparison, Policy, SignalKind, Tier, Trigger
from understudy.signals.endpoints import parse_url
from understudy.signals.promql import Target
from understudy.signals.reader import SignalReader

URL = parse_url("http://127.0.0.1:9")
POLICY = Policy(
    tiers=(Tier("primary", "big", "big"), Tier("small", "small", "small")),
    triggers=(Trigger("errors", SignalKind.ERROR_RATIO, Comparison.ABOVE, 0.05),),
)


def test_same_targets_same_plan_new_target_new_plan() -> None:
    targets = [Target(("ml", f"p{i}"), "ml", POLICY) for i in range(3)]
    with SignalReader("http://127.0.0.1:9") as reader:
        first = reader._plan(URL, targets)
        assert reader._plan(URL, list(targets)) is first
        changed = [*targets[:2], dataclasses.replace(targets[2], window=30.0)]
        replanned = reader._plan(URL, changed)
        assert replanned is not first and any("[30s]" in q for q in replanned.queries)
        assert reader._plan(URL, targets[:2]) is not replanned


def test_batches_that_take_turns_keep_their_plans() -> None:
    """Policies of 1 s and 5 s intervals come due as two recurring batches: neither evicts the other."""
    fast = [Target(("ml", f"fast{i}"), "ml", POLICY) for i in range(3)]
    slow = [Target(("ml", f"slow{i}"), "ml", POLICY, window=300.0) for i in range(3)]
    with SignalReader("http://127.0.0.1:9") as reader:
        only_fast = reader._plan(URL, fast)
        both = reader._plan(URL, [*fast, *slow])
        assert reader._plan(URL, fast) is only_fast
        assert reader._plan(URL, [*fast, *slow]) is both
        others = [reader._plan(URL, [Target(("ml", f"x{n}"), "ml", POLICY)]) for n in range(4)]
        assert reader._plan(URL, fast) is not only_fast  # evicted by four newer batches
        assert len({id(p) for p in others}) == 4
