"""Properties of manual restore approval over random policies and sample streams (hypothesis)."""
from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from tests.unit.test_engine_properties import SETTINGS, Eval, policies, run, streams
from understudy.engine import Policy, RestoreApproval

MANUAL = RestoreApproval.MANUAL


def restore_started(e: Eval) -> bool:
    """A restore began in this evaluation: its first step, or a one-step restore straight to 100%.

    (A Restored record of a move away from an unfit tier says "unfit"; one of a restore says "back on".)"""
    return e.before.restore_tier is None and any(
        a.reason == "RestoreStep" or a.reason == "Restored" and a.message.startswith("all traffic back on")
        for a in e.decision.audit)


def reasons(e: Eval) -> list[str]:
    return [a.reason for a in e.decision.audit]


@st.composite
def manual_policies(draw: st.DrawFn, overrides: bool = False) -> Policy:
    return replace(draw(policies(overrides=overrides)), restore_approval=MANUAL)


@SETTINGS
@given(st.data())
def test_without_an_approval_no_restore_ever_starts(data: st.DataObject) -> None:
    policy = replace(data.draw(manual_policies()), restore_approved_at=None)
    for e in run(policy, data.draw(streams(policy))):
        assert not restore_started(e), reasons(e)
        assert "RestoreApproved" not in reasons(e)


@SETTINGS
@given(st.data())
def test_every_restore_starts_on_an_approval_at_least_as_recent_as_its_hold(data: st.DataObject) -> None:
    """...and never before the approval's own time: an approval releases one hold, the one it was given for."""
    policy = data.draw(manual_policies(overrides=True))
    for e in run(policy, data.draw(streams(policy))):
        if restore_started(e):
            assert "RestoreApproved" in reasons(e)
        if "RestoreApproved" in reasons(e):
            assert policy.restore_approved_at is not None
            since = e.before.held_since_ms if e.before.held_since_ms is not None else round(e.now * 1000)
            assert int(policy.restore_approved_at) >= since // 1000
            assert policy.restore_approved_at <= e.now
            assert e.decision.state.held_tier is None


@SETTINGS
@given(st.data())
def test_each_hold_is_audited_once_when_it_begins_and_once_when_it_ends(data: st.DataObject) -> None:
    policy = data.draw(manual_policies(overrides=True))
    evals = run(policy, data.draw(streams(policy)))
    opened = closed = 0
    for e in evals:
        opened += reasons(e).count("RestoreAwaitingApproval")
        closed += reasons(e).count("RestoreApproved") + reasons(e).count("RestoreNoLongerDue")
        held = e.decision.state.held_tier is not None
        assert opened - closed == (1 if held else 0), reasons(e)
        assert held == (e.decision.state.held_since_ms is not None)
        if held:
            assert e.decision.state.restore_tier is None
            names = policy.tier_names
            assert names.index(e.decision.state.held_tier) < names.index(e.decision.state.active_tier)
