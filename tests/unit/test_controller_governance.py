"""One evaluation as the shell runs it (`govern_one`), and the governance fields it writes to status."""
from __future__ import annotations

from dataclasses import replace

from understudy.controller.governance import governance_status, govern_one
from understudy.engine import (
    Comparison,
    CreepAction,
    Decision,
    Mode,
    Policy,
    Reading,
    Samples,
    SignalKind,
    Tier,
    Trigger,
    initial_state,
)
from understudy.engine.drills import DrillStep
from understudy.engine.governance import Facts, Workload
from understudy.engine.governance_state import GovernanceState, KnownGood
from understudy.engine.intents import RollbackIntent

POLICY = Policy(
    tiers=(Tier("primary", "big", "big"), Tier("small", "small", "small")),
    triggers=(Trigger("errors", SignalKind.ERROR_RATIO, Comparison.ABOVE, 0.05),),
    trip_after=1, recover_after=2, interval=1.0, min_dwell=0.0, creep_window=60.0, creep_max_ratio=0.01,
    creep_action=CreepAction.ROLLBACK_PRIMARY,
)
FAILING = Samples({"primary": {"errors": Reading.ok(0.5)}, "small": {"errors": Reading.ok(0.0)}})
FACTS = Facts({"primary": Workload(2, 2, "2"), "small": Workload(2, 2, "1")}, None, 1)
GOOD = GovernanceState(known_good=KnownGood("1", 1_700_000_000_000))
NOW = 1_800_000_000.0


def no_drill(decision: Decision, samples: Samples) -> DrillStep:
    return DrillStep(None, None, None, ())


def run(policy: Policy, ready: dict[str, int]) -> list[tuple[Decision, tuple[object, ...]]]:
    state, governance, out = initial_state(policy), GOOD, []
    for k in range(40):
        decision, _, governed = govern_one(policy, {}, FAILING, state, governance, [], FACTS, ready, NOW + k,
                                           no_drill)
        state, governance = decision.state, governed.state
        out.append((decision, governed.intents))
    return out


def test_an_over_budget_creep_asks_for_one_rollback_to_the_known_good_revision() -> None:
    intents = [i for _, found in run(POLICY, {"primary": 2, "small": 2}) for i in found]
    assert len(intents) == 1 and isinstance(intents[0], RollbackIntent) and intents[0].revision == "1"


def test_observe_mode_asks_for_nothing_and_says_what_it_would_do() -> None:
    steps = run(replace(POLICY, mode=Mode.OBSERVE), {"primary": 2, "small": 2})
    assert not any(intents for _, intents in steps)
    withheld = [r for d, _ in steps for r in d.audit if r.reason == "ActionWithheld"]
    assert len(withheld) == 1 and "would roll big back to revision 1" in withheld[0].message


def test_a_fallback_without_ready_replicas_gets_no_traffic() -> None:
    decision, _ = run(POLICY, {"primary": 2, "small": 0})[0]
    assert dict(decision.weights)["small"] == 0


def test_governance_fields_are_nulled_only_when_status_has_them() -> None:
    assert governance_status({}, GovernanceState()) == {}
    assert governance_status({"rollback": {"phase": "Done"}}, GovernanceState()) == {"rollback": None}
    fields = governance_status({}, GOOD)
    assert fields["lastKnownGoodRevision"] == "1" and "knownGoodSince" in fields and "rollback" not in fields
