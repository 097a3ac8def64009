"""What counts as moved (and so holds the finalizer), and how the finalizer list is changed."""
from __future__ import annotations

from understudy.api.models import Release
from understudy.controller.release import (
    FINALIZER,
    OBSERVE,
    REROUTED,
    Holder,
    cause,
    describe,
    finalizer_due,
    finalizers_with,
    holds,
    scaled_tiers,
)
from understudy.engine.model import Mode, Policy, Tier
from understudy.routing import GatewayAPITarget, IstioTarget, ServiceTarget

AT_REST = {"weights": [{"tier": "primary", "weight": 100}, {"tier": "distilled", "weight": 0}]}
MOVED = {"weights": [{"tier": "primary", "weight": 0}, {"tier": "distilled", "weight": 100}]}


def test_traffic_off_the_primary_a_drill_or_a_scale_up_is_held() -> None:
    assert not holds({}, enforce=True)
    assert not holds(AT_REST, enforce=True)
    assert holds(MOVED, enforce=True)
    assert holds({**AT_REST, "drill": {"tier": "distilled", "share": 10}}, enforce=True)
    assert holds({**AT_REST, "scaledTiers": [{"tier": "distilled", "replicas": 2}]}, enforce=True)


def test_an_observe_policys_weights_are_what_it_would_do_not_what_it_moved() -> None:
    assert not holds(MOVED, enforce=False)
    assert holds({**MOVED, "scaledTiers": [{"tier": "distilled", "replicas": 2}]}, enforce=False)


def test_the_finalizer_is_added_or_removed_leaving_others_alone() -> None:
    assert finalizers_with([], present=True) == [FINALIZER]
    assert finalizers_with(["other/x"], present=True) == ["other/x", FINALIZER]
    assert finalizers_with([FINALIZER], present=True) is None
    assert finalizers_with(["other/x", FINALIZER], present=False) == ["other/x"]
    assert finalizers_with([], present=False) is None


def test_routing_targets_are_named_as_a_person_knows_them() -> None:
    assert describe(IstioTarget("recommender", "default")) == "VirtualService recommender route default"
    assert describe(GatewayAPITarget("chat", 1)) == "HTTPRoute chat rule 1"
    assert describe(ServiceTarget("recommender")) == "Service recommender"


def test_scaled_tiers_carry_what_to_return_to_and_what_the_operator_set() -> None:
    status = {"scaledTiers": [{"tier": "distilled", "replicas": 2, "scaledTo": 7}, {"tier": "popular", "replicas": 1}]}
    assert scaled_tiers(status) == {"distilled": (2, 7), "popular": (1, None)}
    assert scaled_tiers({}) == {}


def _holder(mode: Mode = Mode.ENFORCE, route: str = "recommender") -> Holder:
    tiers = (Tier("primary", "large", "large"), Tier("distilled", "small", "small"))
    policy = Policy(tiers=tiers, triggers=(), mode=mode)
    return Holder("ml", "recommender", "uid", policy, IstioTarget(route, "default"), Release.RESTORE_PRIMARY)


def test_a_new_generation_lets_go_when_it_stops_routing_or_routes_elsewhere() -> None:
    assert cause(_holder(), _holder(Mode.OBSERVE)) == OBSERVE
    assert cause(_holder(), _holder(route="other")) == REROUTED
    assert cause(_holder(), _holder()) is None
    assert cause(_holder(Mode.OBSERVE), _holder()) is None, "an Observe policy routed nothing to give back"


def test_the_finalizer_is_added_while_held_and_removed_only_once_settled() -> None:
    assert finalizer_due([], MOVED, enforce=True, settled=False, pending=False)
    assert not finalizer_due([FINALIZER], MOVED, enforce=True, settled=False, pending=False)
    assert not finalizer_due([FINALIZER], AT_REST, enforce=True, settled=False, pending=False), "not before routed"
    assert finalizer_due([FINALIZER], AT_REST, enforce=True, settled=True, pending=False)
    assert not finalizer_due([FINALIZER], AT_REST, enforce=True, settled=True, pending=True), "a release is pending"
