"""Status building: conditions keep their lastTransitionTime, history is capped, a steady state writes nothing."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from understudy.audit.status import HISTORY_LIMIT, build_status, status_patch
from understudy.engine.model import AuditRecord

T0 = datetime(2026, 11, 25, 18, 0, 0, 123456, tzinfo=timezone.utc)
READY = (True, "Reconciled", "routing matches the decision")


@dataclass(frozen=True)
class FakeDecision:
    active_tier: str = "primary"
    weights: tuple[tuple[str, int], ...] = (("primary", 100), ("distilled", 0))
    audit: tuple[AuditRecord, ...] = ()
    fallback_ratio: float = 0.0
    creep_exceeded: bool = False
    metrics_available: bool = True


ON_PRIMARY = FakeDecision()
TRIP = AuditRecord("FallbackActivated", "primary breached p99-latency", tier="primary", trigger="p99-latency",
                   observed=312.4, threshold=250.0, from_tier="primary", to_tier="distilled")
ON_FALLBACK = FakeDecision(active_tier="distilled", weights=(("primary", 0), ("distilled", 100)),
                           audit=(TRIP,), fallback_ratio=0.0304)


def conditions(status: dict) -> dict[str, dict]:
    return {c["type"]: c for c in status["conditions"]}


def test_first_status_is_complete_and_api_shaped() -> None:
    status = build_status(None, ON_FALLBACK, 3, T0, READY, "7", engine={"streak": 2})
    assert status["observedGeneration"] == 3
    assert status["activeTier"] == "distilled"
    assert status["primaryWeight"] == 0
    assert status["weights"] == [{"tier": "primary", "weight": 0}, {"tier": "distilled", "weight": 100}]
    assert status["fallbackRatio"] == "0.030"
    assert status["lastKnownGoodRevision"] == "7"
    assert status["engine"] == {"streak": 2}
    assert [c["type"] for c in status["conditions"]] == [
        "Ready", "FallbackActive", "MetricsAvailable", "CreepBudgetExceeded"]
    for c in status["conditions"]:
        assert c["lastTransitionTime"] == "2026-11-25T18:00:00Z"
        assert c["observedGeneration"] == 3
        assert c["status"] in ("True", "False") and c["reason"] and c["message"]
    assert conditions(status)["FallbackActive"]["status"] == "True"
    assert status["history"] == [{
        "time": "2026-11-25T18:00:00Z", "fromTier": "primary", "toTier": "distilled",
        "reason": "FallbackActivated", "trigger": "p99-latency", "observed": "312.4", "threshold": "250",
        "message": "primary breached p99-latency",
    }]


def test_last_transition_time_moves_only_when_status_flips() -> None:
    first = build_status(None, ON_PRIMARY, 1, T0, READY, None)
    later = build_status(first, ON_FALLBACK, 1, T0 + timedelta(minutes=5), READY, None)
    before, after = conditions(first), conditions(later)
    assert after["FallbackActive"]["status"] == "True"
    assert after["FallbackActive"]["lastTransitionTime"] == "2026-11-25T18:05:00Z"
    for kept in ("Ready", "MetricsAvailable", "CreepBudgetExceeded"):
        assert after[kept]["lastTransitionTime"] == before[kept]["lastTransitionTime"] == "2026-11-25T18:00:00Z"


def test_reason_change_without_flip_keeps_transition_time() -> None:
    fallback = build_status(None, ON_FALLBACK, 1, T0, READY, None)
    restoring = FakeDecision(weights=(("primary", 10), ("distilled", 90)))
    step = build_status(fallback, restoring, 1, T0 + timedelta(minutes=1), READY, None)
    active = conditions(step)["FallbackActive"]
    assert (active["status"], active["reason"]) == ("True", "Restoring")
    assert active["lastTransitionTime"] == "2026-11-25T18:00:00Z"


def test_steady_state_needs_no_write() -> None:
    steady = FakeDecision(active_tier="distilled", weights=(("primary", 0), ("distilled", 100)),
                          fallback_ratio=0.0304)
    first = build_status(None, ON_FALLBACK, 2, T0, READY, "7", engine={"streak": 0, "since": None})
    for minutes in (1, 2, 60):
        again = build_status(first, steady, 2, T0 + timedelta(minutes=minutes), READY, None)
        assert status_patch(first, again) is None


def test_generation_change_is_written() -> None:
    first = build_status(None, ON_PRIMARY, 1, T0, READY, None)
    bumped = build_status(first, ON_PRIMARY, 2, T0 + timedelta(seconds=5), READY, None)
    patch = status_patch(first, bumped)
    assert patch is not None
    assert patch["status"]["observedGeneration"] == 2
    assert all(c["lastTransitionTime"] == "2026-11-25T18:00:00Z" for c in patch["status"]["conditions"])
    assert "history" not in patch["status"] and "weights" not in patch["status"]


def test_ratio_below_three_decimals_causes_no_write() -> None:
    first = build_status(None, ON_PRIMARY, 1, T0, READY, None)
    drift = FakeDecision(fallback_ratio=0.0004)
    assert status_patch(first, build_status(first, drift, 1, T0 + timedelta(seconds=5), READY, None)) is None


def test_history_keeps_the_newest_entries() -> None:
    status = None
    for i in range(HISTORY_LIMIT + 5):
        record = AuditRecord("RestoreStep", f"step {i}", from_tier="distilled", to_tier="primary")
        status = build_status(status, FakeDecision(audit=(record,)), 1, T0 + timedelta(seconds=i), READY, None)
    assert status is not None
    assert len(status["history"]) == HISTORY_LIMIT
    assert status["history"][0]["message"] == "step 5"
    assert status["history"][-1]["message"] == f"step {HISTORY_LIMIT + 4}"


def test_observations_stay_out_of_history() -> None:
    missing = AuditRecord("MetricsMissing", "no data for p99-latency", tier="primary", trigger="p99-latency")
    status = build_status(None, FakeDecision(audit=(missing,), metrics_available=False), 1, T0, READY, None)
    assert status["history"] == []
    assert conditions(status)["MetricsAvailable"]["status"] == "False"


def test_engine_state_is_carried_and_removed_keys_are_nulled() -> None:
    first = build_status(None, ON_PRIMARY, 1, T0, READY, "4", engine={"streak": 3, "tripped": {"primary": 1}})
    kept = build_status(first, ON_PRIMARY, 1, T0, READY, None)
    assert kept["engine"] == first["engine"] and kept["lastKnownGoodRevision"] == "4"
    changed = build_status(first, ON_PRIMARY, 1, T0, READY, None, engine={"streak": 0, "tripped": {}})
    assert status_patch(first, changed) == {"status": {"engine": {"streak": 0, "tripped": {"primary": None}}}}


def test_foreign_conditions_are_kept() -> None:
    first = build_status(None, ON_PRIMARY, 1, T0, READY, None)
    first["conditions"].append({"type": "Example", "status": "True", "reason": "X", "message": "",
                                "lastTransitionTime": "2026-01-01T00:00:00Z"})
    again = build_status(first, ON_PRIMARY, 1, T0, READY, None)
    assert again["conditions"][-1]["type"] == "Example"
    assert status_patch(first, again) is None


def test_history_entries_always_name_both_tiers() -> None:
    pinned = AuditRecord("Pinned", "pinned to distilled by spec.override", tier="distilled")
    paused = AuditRecord("Paused", "routing frozen by spec.paused")
    decision = FakeDecision(active_tier="distilled", weights=(("primary", 0), ("distilled", 100)),
                            audit=(pinned, paused))
    history = build_status(None, decision, 1, T0, READY, None)["history"]
    assert [(e["reason"], e["fromTier"], e["toTier"]) for e in history] == [
        ("Pinned", "distilled", "distilled"), ("Paused", "distilled", "distilled")]


def test_ratio_is_never_negative() -> None:
    assert build_status(None, FakeDecision(fallback_ratio=-1e-9), 1, T0, READY, None)["fallbackRatio"] == "0.000"


def test_status_from_real_decisions_matches_the_api_model() -> None:
    """Drive the real engine through a trip and a steady fallback; the status must validate and settle."""
    from understudy.api.models import FallbackPolicyStatus
    from understudy.engine.decide import decide
    from understudy.engine.model import Comparison, Policy, Reading, Samples, SignalKind, Tier, Trigger
    from understudy.engine.state import initial_state, state_to_status

    policy = Policy(
        tiers=(Tier("primary", "big", "big"), Tier("distilled", "small", "small")),
        triggers=(Trigger("errors", SignalKind.ERROR_RATIO, Comparison.ABOVE, 0.05),),
        trip_after=2, min_dwell=0.0)
    bad = Samples({"primary": {"errors": Reading.ok(0.2)}, "distilled": {"errors": Reading.ok(0.0)}})
    state, status, previous, patch = initial_state(policy), None, None, None
    for i in range(6):
        decision = decide(policy, bad, state, T0.timestamp() + 5 * i)
        state = decision.state
        # The engine's own state changes every cycle; like the operator, persist it only on change of tier.
        engine = state_to_status(state) if decision.audit or status is None else None
        new = build_status(status, decision, 1, T0 + timedelta(seconds=5 * i), READY, None, engine=engine)
        FallbackPolicyStatus.model_validate(new)
        previous, status, patch = status, new, status_patch(status, new)
    assert status is not None and previous is not None and patch is not None
    assert status["activeTier"] == "distilled"
    assert [e["reason"] for e in status["history"]] == ["FallbackActivated"]
    # Once on the fallback, only the creep ratio (still climbing: little time observed) is rewritten.
    assert set(patch["status"]) == {"fallbackRatio", "conditions"}
    before, after = conditions(previous), conditions(status)
    assert [k for k in after if after[k] != before[k]] == ["CreepBudgetExceeded"]
    assert after["CreepBudgetExceeded"]["lastTransitionTime"] == before["CreepBudgetExceeded"]["lastTransitionTime"]
