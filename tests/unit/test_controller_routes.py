"""The route bookkeeping between the watches and the writer: ownership moves only when policies change,
drift is looked for only when a watched object's resourceVersion moved, and each episode is one record."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from understudy.controller.drift import VIRTUAL_SERVICE, RoutingStore
from understudy.controller.routes import RouteKeeper, RouteState, announce, routed
from understudy.engine.model import Mode, Tier
from understudy.routing.base import IstioTarget, Weights

TIERS = (Tier("primary", "big", "big"), Tier("distilled", "small", "small"))
PRIMARY: Weights = (("primary", 100), ("distilled", 0))


@dataclass
class Policy:
    tiers: tuple[Tier, ...] = TIERS
    mode: Mode = Mode.ENFORCE


@dataclass
class Compiled:
    routing: Any = IstioTarget("rec", "default")
    policy: Policy = field(default_factory=Policy)


@dataclass
class Runtime:
    """The fields of the Evaluator's runtime the keeper reads and resets."""

    compiled: Compiled | None = field(default_factory=Compiled)
    routed: Weights | None = PRIMARY
    backend: Any = None
    unchanged_by: Any = ()
    route: RouteState = field(default_factory=RouteState)
    status: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Snap:
    created: float


def _vs(store: RoutingStore, rv: str, primary: int, timeout: str = "1s") -> None:
    store.put(VIRTUAL_SERVICE, "ml", "rec", rv, {"http": [
        {"name": "canary", "timeout": timeout, "route": [{"destination": {"host": "big"}}]},
        {"name": "default", "route": [{"destination": {"host": "big"}, "weight": primary},
                                      {"destination": {"host": "small"}, "weight": 100 - primary}]}]},
        deleted=False)


def test_drift_is_found_once_per_changed_object_and_repaired_with_one_record() -> None:
    keeper, store = RouteKeeper(), RoutingStore()
    rt = Runtime()
    runtimes, policies = {("ml", "a"): rt}, {("ml", "a"): Snap(1.0)}
    _vs(store, "1", 100)
    assert keeper.observe(policies, runtimes, store) == []
    _vs(store, "2", 100, timeout="9s")  # another route's edit: no drift
    assert keeper.observe(policies, runtimes, store) == []
    _vs(store, "3", 50)
    assert keeper.observe(policies, runtimes, store) == [("ml", "a")]
    assert keeper.observe(policies, runtimes, store) == []  # nothing moved since: nothing compared
    record = routed(rt, PRIMARY, changed=True)
    assert record is not None and record.reason == "RoutingDriftRepaired"
    assert "primary=50, distilled=50" in record.message and "wrote back primary=100, distilled=0" in record.message
    assert routed(rt, PRIMARY, changed=True) is None


def test_a_repair_that_changed_nothing_records_nothing() -> None:
    keeper, store = RouteKeeper(), RoutingStore()
    rt = Runtime()
    _vs(store, "1", 50)
    assert keeper.observe({("ml", "a"): Snap(1.0)}, {("ml", "a"): rt}, store) == [("ml", "a")]
    assert routed(rt, PRIMARY, changed=False) is None and rt.route.drift is None


def test_a_deleted_object_makes_the_policy_route_again_and_its_recreation_counts_as_a_repair() -> None:
    keeper, store = RouteKeeper(), RoutingStore()
    rt = Runtime()
    runtimes, policies = {("ml", "a"): rt}, {("ml", "a"): Snap(1.0)}
    _vs(store, "1", 100)
    keeper.observe(policies, runtimes, store)
    store.put(VIRTUAL_SERVICE, "ml", "rec", "2", {}, deleted=True)
    assert keeper.observe(policies, runtimes, store) == []
    assert rt.routed is None
    record = routed(rt, PRIMARY, changed=True)
    assert record is not None and "deleted" in record.message


def test_the_newer_of_two_policies_on_one_route_is_announced_once_and_takes_over_when_the_older_goes() -> None:
    keeper, store = RouteKeeper(), RoutingStore()
    old, new = Runtime(), Runtime(routed=None)
    runtimes = {("ml", "old"): old, ("ml", "new"): new}
    policies = {("ml", "old"): Snap(1.0), ("ml", "new"): Snap(2.0)}
    keeper.observe(policies, runtimes, store)
    assert old.route.conflict is None
    assert "old" in (new.route.conflict or "")
    first = announce(new)
    assert first is not None and first.reason == "RouteConflict"
    assert announce(new) is None
    keeper.observe(dict(policies), runtimes, store)  # a policy changed, ownership did not: no new episode
    assert announce(new) is None
    new.routed = PRIMARY  # whatever it thinks it routed, it must write its own weights once it owns the route
    del runtimes[("ml", "old")]
    keeper.observe({("ml", "new"): Snap(2.0)}, runtimes, store)
    assert new.route.conflict is None and new.routed is None


def test_a_conflicting_policy_is_not_checked_for_drift() -> None:
    keeper, store = RouteKeeper(), RoutingStore()
    old, new = Runtime(), Runtime()
    _vs(store, "1", 50)
    repairs = keeper.observe({("ml", "old"): Snap(1.0), ("ml", "new"): Snap(2.0)},
                             {("ml", "old"): old, ("ml", "new"): new}, store)
    assert repairs == [("ml", "old")]


def test_observe_mode_policies_claim_nothing() -> None:
    keeper = RouteKeeper()
    shadow = Runtime(compiled=Compiled(policy=Policy(mode=Mode.OBSERVE)))
    enforcing = Runtime()
    keeper.observe({("ml", "shadow"): Snap(1.0), ("ml", "live"): Snap(2.0)},
                   {("ml", "shadow"): shadow, ("ml", "live"): enforcing}, RoutingStore())
    assert enforcing.route.conflict is None


def test_a_reloaded_runtime_is_judged_again_and_does_not_announce_a_reported_episode_twice() -> None:
    keeper, store = RouteKeeper(), RoutingStore()
    policies = {("ml", "old"): Snap(1.0), ("ml", "new"): Snap(2.0)}
    runtimes = {("ml", "old"): Runtime(), ("ml", "new"): Runtime(routed=None)}
    keeper.observe(policies, runtimes, store)
    reported = {"conditions": [{"type": "Ready", "status": "False", "reason": "RouteConflict"}]}
    runtimes[("ml", "new")] = reloaded = Runtime(routed=None, status=reported)  # e.g. after a 409
    keeper.observe(policies, runtimes, store)  # the same snapshots: only the new runtime is judged
    assert reloaded.route.conflict is not None and announce(reloaded) is None
