"""The shell's facts for the engine, and a policy's memory read back from status (pure parts)."""
from __future__ import annotations

from dataclasses import dataclass

from understudy.controller.governance import READINESS_GRACE_SECONDS, facts_for
from understudy.controller.memory import load_memory, with_engine_conditions
from understudy.engine import (
    Comparison,
    CreepAction,
    Policy,
    Reading,
    Samples,
    SignalKind,
    Tier,
    Trigger,
    decide,
    initial_state,
    state_to_status,
)
from understudy.engine.governance import Workload

POLICY = Policy(
    tiers=(Tier("primary", "big", "big"), Tier("small", "small", "small"), Tier("tiny", "tiny", "tiny")),
    triggers=(Trigger("errors", SignalKind.ERROR_RATIO, Comparison.ABOVE, 0.05),),
    trip_after=1, recover_after=2, interval=1.0, min_dwell=0.0, creep_window=60.0, creep_max_ratio=0.01,
    creep_action=CreepAction.FREEZE,
)
NOW = 1_800_000_000.0


@dataclass(frozen=True)
class Snap:
    ready: int
    desired: int
    revision: str | None = None


def test_facts_take_a_missing_deployment_as_absent_only_after_the_grace() -> None:
    deployments = {("ns", "big"): Snap(2, 2, "3"), ("ns", "small"): Snap(0, 0)}
    facts, ready = facts_for(POLICY, "ns", deployments, 12.5, 4, since_start=1.0)
    assert facts.workloads == {"primary": Workload(2, 2, "3"), "small": Workload(0, 0, None)}
    assert (facts.load, facts.generation) == (12.5, 4)
    assert ready == {"primary": 2, "small": 0}, "tiny is not listed yet: unknown, not absent"
    _, later = facts_for(POLICY, "ns", deployments, None, 4, since_start=READINESS_GRACE_SECONDS)
    assert later == {"primary": 2, "small": 0, "tiny": 0}


def _on_small() -> dict[str, object]:
    failing = Samples({"primary": {"errors": Reading.ok(0.5)}, "small": {"errors": Reading.ok(0.0)}})
    decision = decide(POLICY, failing, initial_state(POLICY), NOW)
    assert dict(decision.weights)["small"] == 100
    return state_to_status(decision.state)


def test_a_sound_status_loads_without_a_repair() -> None:
    memory = load_memory(POLICY, {"engine": _on_small(), "lastKnownGoodRevision": "2",
                                  "knownGoodSince": "2027-01-15T08:00:00Z"}, NOW + 1, lambda: None)
    assert memory.repaired is None
    assert dict(memory.state.weights)["small"] == 100
    assert memory.governance.known_good is not None and memory.governance.known_good.revision == "2"


def test_a_corrupted_status_is_repaired_field_by_field_and_keeps_routing() -> None:
    engine = _on_small()
    engine["tiers"][0]["breachStreak"] = "lots"  # type: ignore[index]
    engine["creepBuckets"] = "not a list"
    status = {"engine": engine, "lastKnownGoodRevision": "2"}  # no knownGoodSince: seen first by an old operator
    memory = load_memory(POLICY, status, NOW + 1, lambda: None)
    assert dict(memory.state.weights)["small"] == 100, "routing is kept"
    assert memory.governance.known_good is None
    assert memory.repaired is not None and memory.repaired.reason == "StateRepaired"
    for part in ("breachStreak", "creepBuckets", "knownGoodSince"):
        assert part in memory.repaired.message


def test_unusable_weights_are_read_off_the_routing_object() -> None:
    engine = _on_small()
    engine["weights"] = [{"tier": "primary", "weight": 250}]
    asked: list[int] = []

    def observed() -> dict[str, int]:
        asked.append(1)
        return {"primary": 0, "small": 100, "tiny": 0}

    memory = load_memory(POLICY, {"engine": engine}, NOW + 1, observed)
    assert asked == [1] and dict(memory.state.weights)["small"] == 100
    assert memory.repaired is not None and "routing object" in memory.repaired.message


def test_engine_conditions_flip_with_the_decision_and_keep_their_transition_time() -> None:
    failing = Samples({"primary": {"errors": Reading.ok(0.5)}, "small": {"errors": Reading.ok(0.0)}})
    first = decide(POLICY, failing, initial_state(POLICY), NOW)
    conditions = with_engine_conditions([{"type": "Ready", "status": "True"}], first, 3, "T1")
    by_type = {c["type"]: c for c in conditions}
    assert by_type == {"Ready": {"type": "Ready", "status": "True"}}, "absent until the engine reports them"
    frozen = decide(POLICY, failing, first.state, NOW + 30)
    assert frozen.frozen
    later = {c["type"]: c for c in with_engine_conditions(conditions, frozen, 3, "T2")}
    assert set(later) == {"Ready", "Frozen"}
    assert later["Frozen"] == {"type": "Frozen", "status": "True", "reason": "Frozen",
                               "message": later["Frozen"]["message"], "lastTransitionTime": "T2",
                               "observedGeneration": 3}
    again = {c["type"]: c for c in with_engine_conditions(list(later.values()), frozen, 4, "T3")}
    assert again["Frozen"]["lastTransitionTime"] == "T2" and again["Frozen"]["observedGeneration"] == 4
    over = {c["type"]: c for c in with_engine_conditions(list(again.values()), first, 4, "T4")}
    assert (over["Frozen"]["status"], over["Frozen"]["reason"], over["Frozen"]["lastTransitionTime"]) == (
        "False", "NotFrozen", "T4")
