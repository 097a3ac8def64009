"""The pure decision engine: `decide(policy, samples, state, now) -> Decision`, and its vocabulary."""
from understudy.engine.decide import Decision, decide
from understudy.engine.plan import CREEP_BUCKETS
from understudy.engine.model import (
    INSUFFICIENT,
    MISSING,
    PRIMARY,
    AuditRecord,
    Comparison,
    CreepAction,
    MissingData,
    Mode,
    Policy,
    Reading,
    ReadingStatus,
    RestoreApproval,
    Samples,
    Series,
    SignalKind,
    Tier,
    Trigger,
)
from understudy.engine.reasons import AUDIT_REASONS
from understudy.engine.restore import Restored, restore_state
from understudy.engine.state import CreepBucket, State, TierState, initial_state, state_from_status, state_to_status

__all__ = [
    "AUDIT_REASONS",
    "CREEP_BUCKETS",
    "INSUFFICIENT",
    "MISSING",
    "PRIMARY",
    "AuditRecord",
    "Comparison",
    "CreepAction",
    "CreepBucket",
    "Decision",
    "MissingData",
    "Mode",
    "Policy",
    "Reading",
    "ReadingStatus",
    "RestoreApproval",
    "Restored",
    "Samples",
    "Series",
    "SignalKind",
    "State",
    "Tier",
    "TierState",
    "Trigger",
    "decide",
    "initial_state",
    "restore_state",
    "state_from_status",
    "state_to_status",
]
