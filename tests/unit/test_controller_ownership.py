"""One owner per route: the oldest claim wins, whatever order the claims come in."""
from __future__ import annotations

import itertools

from understudy.controller.ownership import Claim, conflict_message, conflicts
from understudy.routing.base import GatewayAPITarget, IstioTarget, ServiceTarget


def test_the_older_policy_owns_a_shared_route_and_the_newer_is_told_who() -> None:
    old = Claim(("ml", "b-old"), IstioTarget("rec", "default"), created=100.0)
    new = Claim(("ml", "a-new"), IstioTarget("rec", "default"), created=200.0)
    assert conflicts([new, old]) == {("ml", "a-new"): ("ml", "b-old")}
    assert "b-old" in conflict_message(("ml", "b-old"), old.target)


def test_a_tie_on_creation_time_goes_to_the_name_first_in_order() -> None:
    a = Claim(("ml", "a"), ServiceTarget("rec"), created=100.0)
    b = Claim(("ml", "b"), ServiceTarget("rec"), created=100.0)
    for order in itertools.permutations([a, b]):
        assert conflicts(order) == {("ml", "b"): ("ml", "a")}


def test_different_routes_objects_rules_or_namespaces_do_not_conflict() -> None:
    claims = [
        Claim(("ml", "p1"), IstioTarget("rec", "default"), 1.0),
        Claim(("ml", "p2"), IstioTarget("rec", "canary"), 2.0),
        Claim(("ml", "p3"), IstioTarget("other", "default"), 3.0),
        Claim(("ml", "p4"), GatewayAPITarget("rec", 0), 4.0),
        Claim(("ml", "p5"), GatewayAPITarget("rec", 1), 5.0),
        Claim(("ml", "p6"), ServiceTarget("rec"), 6.0),
        Claim(("other", "p1"), IstioTarget("rec", "default"), 7.0),
    ]
    assert conflicts(claims) == {}


def test_a_claim_without_a_route_name_overlaps_every_route_of_its_virtual_service() -> None:
    whole = Claim(("ml", "whole"), IstioTarget("rec"), 1.0)
    named = Claim(("ml", "named"), IstioTarget("rec", "default"), 2.0)
    other = Claim(("ml", "other"), IstioTarget("rec", "canary"), 3.0)
    assert conflicts([named, other, whole]) == {("ml", "named"): ("ml", "whole"), ("ml", "other"): ("ml", "whole")}


def test_when_the_owner_goes_the_next_oldest_takes_over_and_the_answer_never_depends_on_order() -> None:
    claims = [Claim(("ml", f"p{i}"), ServiceTarget("rec"), float(i)) for i in range(4)]
    for order in itertools.permutations(claims):
        assert conflicts(order) == {("ml", "p1"): ("ml", "p0"), ("ml", "p2"): ("ml", "p0"), ("ml", "p3"): ("ml", "p0")}
    assert conflicts(claims[1:]) == {("ml", "p2"): ("ml", "p1"), ("ml", "p3"): ("ml", "p1")}
