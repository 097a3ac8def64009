"""The error boundary per policy (controller.boundary): failures stay with their policy, one Event per episode."""
from __future__ import annotations

from typing import Sequence

import pytest

from understudy.controller.boundary import EVALUATION_FAILED, Boundary, Stage, failed_status


def boom() -> int:
    raise OverflowError("cannot convert float infinity to integer")


def test_a_failure_is_returned_not_raised_and_opens_one_episode() -> None:
    boundary = Boundary()
    first = boundary.call("a", Stage.DECIDE, boom)
    again = boundary.call("a", Stage.DECIDE, boom)
    assert not isinstance(first, int) and not isinstance(again, int)
    assert first.first and not again.first, "one Event per episode"
    assert first.error == "OverflowError" and "infinity" not in first.message, "the class, never the text"
    assert boundary.call("b", Stage.DECIDE, lambda: 7) == 7
    assert boundary.failing("a") and not boundary.failing("b")
    assert boundary.succeeded("a") and not boundary.failing("a")
    assert boundary.call("a", Stage.DECIDE, boom).first, "a new episode after a success"  # type: ignore[union-attr]


def test_another_stage_or_error_is_another_episode() -> None:
    boundary = Boundary()
    assert boundary.failed("a", Stage.WRITE, ValueError()).first
    assert boundary.failed("a", Stage.WRITE, KeyError()).first
    assert boundary.failed("a", Stage.DECIDE, KeyError()).first
    assert not boundary.failed("a", Stage.DECIDE, KeyError()).first
    boundary.forget("a")
    assert not boundary.failing("a")


def test_a_batch_that_one_target_spoils_is_split_until_that_target_alone_fails() -> None:
    calls: list[tuple[str, ...]] = []

    def read(targets: Sequence[str]) -> dict[str, int]:
        calls.append(tuple(targets))
        if "bad" in targets:
            raise IndexError("list index out of range")
        return {t: len(t) for t in targets}

    def merge(parts: list[dict[str, int]]) -> dict[str, int]:
        return {k: v for part in parts for k, v in part.items()}

    boundary = Boundary()
    names = ["a", "bb", "ccc", "bad", "eeeee", "ffffff", "g"]
    result, failures = boundary.read_isolated(read, merge, names, key=lambda t: t)
    assert result == {t: len(t) for t in names if t != "bad"}
    assert [(f.key, f.stage, f.error) for f in failures] == [("bad", Stage.READ, "IndexError")]
    assert len(calls) <= 2 * len(names), "a binary split, not one read per target"
    assert boundary.read_isolated(read, merge, ["a"], key=lambda t: t) == ({"a": 1}, [])


def test_failed_status_sets_ready_false_once_and_keeps_the_other_conditions() -> None:
    failure = Boundary().failed("a", Stage.WRITE, PermissionError())
    status = {"activeTier": "primary", "conditions": [
        {"type": "Ready", "status": "True", "reason": "Evaluating", "message": "", "lastTransitionTime": "x"},
        {"type": "FallbackActive", "status": "False"}]}
    new = failed_status(status, failure, 3, 1_800_000_000.0)
    assert new is not None and new["activeTier"] == "primary"
    ready = next(c for c in new["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"], ready["observedGeneration"]) == ("False", EVALUATION_FAILED, 3)
    assert ready["lastTransitionTime"] == "2027-01-15T08:00:00Z"
    assert "writing its decision failed with PermissionError" in ready["message"]
    assert {"type": "FallbackActive", "status": "False"} in new["conditions"]
    assert failed_status(new, failure, 3, 1_800_000_100.0) is None, "already says so: no write"


@pytest.mark.parametrize("status", [{}, {"conditions": None}, {"conditions": ["junk"]}])
def test_failed_status_copes_with_a_status_without_conditions(status: dict[str, object]) -> None:
    failure = Boundary().failed("a", Stage.READ, ValueError())
    new = failed_status(status, failure, 1, 0.0)
    assert new is not None and [c["reason"] for c in new["conditions"]] == [EVALUATION_FAILED]


def test_readouts_of_the_halves_merge_into_one() -> None:
    from understudy.controller.boundary import merge_readouts
    from understudy.engine.model import Samples
    from understudy.signals.reader import Readout, SignalError

    left = Readout({"a": Samples({})}, {"a": 1.0}, {"a": SignalError("X", "x")}, frozenset({"c"}))
    right = Readout({"b": Samples({})}, {"b": None}, {}, frozenset({"d"}))
    merged = merge_readouts([left, right])
    assert set(merged.samples) == {"a", "b"} and merged.loads == {"a": 1.0, "b": None}
    assert set(merged.errors) == {"a"} and merged.deferred == {"c", "d"}


def test_a_policy_the_cycle_cannot_load_stops_no_other() -> None:
    """A snapshot that cannot even be loaded is left out; the policy beside it still gets its Ready=False."""
    from understudy.audit.metrics import OperatorMetrics
    from understudy.controller.cycle import Cycle
    from understudy.controller.runtime import CycleReport
    from understudy.controller.store import PolicySnapshot
    from understudy.signals.reader import SignalReader

    unloadable = PolicySnapshot("ns", "broken", "u1", 1, "1", "[1]", PolicySnapshot.of(
        "ns", "x", "u", 1, "1", {}, {}).status_packed)
    invalid = PolicySnapshot.of("ns", "invalid", "u2", 1, "1", {"primary": {}}, {})
    with SignalReader("http://127.0.0.1:9") as reader:
        cycle = Cycle(reader, OperatorMetrics(), {})
        plan = cycle.plan({("ns", "broken"): unloadable, ("ns", "invalid"): invalid}, {}, 1_800_000_000.0,
                          CycleReport())
    assert [i.key for i in plan.invalid] == [("ns", "invalid")]
    assert ("ns", "broken") not in cycle.runtimes and cycle.boundary.failing(("ns", "broken"))
