"""The start gate: closed until every policy listed at start is in the store, or the grace has passed."""
from __future__ import annotations

from understudy.controller.listing import StartGate

A, B = ("ns", "a"), ("ns", "b")


def test_closed_until_every_listed_policy_is_seen_then_open_for_good() -> None:
    gate = StartGate(frozenset({A, B}), started=100.0, grace=30.0)
    assert not gate.open({A}, 101.0)
    assert gate.open({A, B}, 102.0)
    assert gate.open(set(), 103.0), "once open it stays open, whatever the store holds later"


def test_a_policy_that_never_arrives_holds_the_loop_only_for_the_grace() -> None:
    gate = StartGate(frozenset({A, B}), started=100.0, grace=30.0)
    assert not gate.open({A}, 129.9)
    assert gate.open({A}, 130.0)


def test_nothing_listed_or_an_opened_gate_waits_for_nothing() -> None:
    assert StartGate(frozenset(), started=100.0).open(set(), 100.0)
    assert StartGate.opened().open(set(), 0.0)
