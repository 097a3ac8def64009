"""Drift is judged on the managed fields only: the named route's weights, the rule's backendRef weights,
the Service's selector. Everything else a person changes is no drift."""
from __future__ import annotations

from typing import Any

from understudy.controller.drift import HTTP_ROUTE, SERVICE, VIRTUAL_SERVICE, drift, routing_key, snapshot_of
from understudy.engine.model import BackendRef, Tier
from understudy.routing.base import GatewayAPITarget, IstioTarget, ServiceTarget

TIERS = (Tier("primary", "big", "big"), Tier("distilled", "small", "small"))
PRIMARY = (("primary", 100), ("distilled", 0))
HALF = (("primary", 50), ("distilled", 50))


def _vs(default: list[dict[str, Any]], other_timeout: str = "1s") -> dict[str, Any]:
    return {"http": [{"name": "canary", "timeout": other_timeout, "route": [{"destination": {"host": "big"}}]},
                     {"name": "default", "route": default}]}


def test_a_virtual_service_carrying_the_decision_has_no_drift_whatever_else_changes() -> None:
    spec = _vs([{"destination": {"host": "big"}, "weight": 100},
                {"destination": {"host": "small.ml.svc.cluster.local"}, "weight": 0}], other_timeout="9s")
    snap = snapshot_of(VIRTUAL_SERVICE, "7", spec)
    assert drift(snap, "ml", IstioTarget("rec", "default"), TIERS, PRIMARY) is None


def test_an_edit_of_the_managed_weights_is_drift_and_says_what_is_carried() -> None:
    spec = _vs([{"destination": {"host": "big"}, "weight": 50}, {"destination": {"host": "small"}, "weight": 50}])
    found = drift(snapshot_of(VIRTUAL_SERVICE, "8", spec), "ml", IstioTarget("rec", "default"), TIERS, PRIMARY)
    assert found == "weights primary=50, distilled=50"
    assert drift(snapshot_of(VIRTUAL_SERVICE, "8", spec), "ml", IstioTarget("rec", "default"), TIERS, HALF) is None


def test_istio_reads_absent_weights_as_istio_does() -> None:
    lone = snapshot_of(VIRTUAL_SERVICE, "1", {"http": [{"route": [{"destination": {"host": "big"}}]}]})
    # a lone destination carries everything; the missing fallback destination is drift (it must be added)
    assert drift(lone, "ml", IstioTarget("rec"), TIERS, PRIMARY) == "weights primary=100, distilled=absent"
    assert drift(lone, "ml", IstioTarget("rec"), (TIERS[0],), (("primary", 100),)) is None


def test_a_route_gone_or_a_foreign_destination_is_drift_the_repair_reports() -> None:
    gone = snapshot_of(VIRTUAL_SERVICE, "1", {"http": [{"name": "other", "route": []}]})
    assert drift(gone, "ml", IstioTarget("rec", "default"), TIERS, PRIMARY) == "no http route default"
    foreign = snapshot_of(VIRTUAL_SERVICE, "1", _vs([{"destination": {"host": "elsewhere"}, "weight": 100}]))
    assert "no single tier's" in (drift(foreign, "ml", IstioTarget("rec", "default"), TIERS, PRIMARY) or "")


def test_http_route_compares_its_rule_with_the_default_weight_of_one() -> None:
    rules = {"rules": [{"backendRefs": [{"name": "big", "port": 80}, {"name": "small", "port": 80}]},
                       {"backendRefs": [{"name": "small", "port": 80, "weight": 5}]}]}
    snap = snapshot_of(HTTP_ROUTE, "3", rules)
    assert drift(snap, "ml", GatewayAPITarget("rec", 0), TIERS, PRIMARY) == "weights primary=1, distilled=1"
    rules["rules"][0]["backendRefs"][0]["weight"] = 100
    rules["rules"][0]["backendRefs"][1]["weight"] = 0
    assert drift(snapshot_of(HTTP_ROUTE, "4", rules), "ml", GatewayAPITarget("rec", 0), TIERS, PRIMARY) is None
    assert drift(snap, "ml", GatewayAPITarget("rec", 2), TIERS, PRIMARY) == "no rule 2"


def test_http_route_matches_backend_refs_of_any_kind_in_the_policys_namespace_only() -> None:
    pools = (Tier("primary", "big", "big", BackendRef("inference.networking.k8s.io", "InferencePool", "big")),
             Tier("distilled", "small", "small"))
    refs = [{"group": "inference.networking.k8s.io", "kind": "InferencePool", "name": "big", "weight": 100},
            {"name": "small", "weight": 0}]
    assert drift(snapshot_of(HTTP_ROUTE, "1", {"rules": [{"backendRefs": refs}]}), "ml",
                 GatewayAPITarget("rec"), pools, PRIMARY) is None
    refs[1]["namespace"] = "other"
    assert drift(snapshot_of(HTTP_ROUTE, "2", {"rules": [{"backendRefs": refs}]}), "ml",
                 GatewayAPITarget("rec"), pools, PRIMARY) is not None


def test_a_service_drifts_when_its_selector_is_not_the_one_last_written() -> None:
    snap = snapshot_of(SERVICE, "5", {"selector": {"app": "small"}, "ports": [{"port": 80}]})
    assert drift(snap, "ml", ServiceTarget("rec"), TIERS, PRIMARY, {"app": "big"}) == "selector {app=small}"
    assert drift(snap, "ml", ServiceTarget("rec"), TIERS, PRIMARY, {"app": "small"}) is None
    assert drift(snap, "ml", ServiceTarget("rec"), TIERS, PRIMARY, None) is None  # nothing written yet


def test_routing_keys_name_the_watched_object() -> None:
    assert routing_key("ml", IstioTarget("rec", "default")) == (VIRTUAL_SERVICE, "ml", "rec")
    assert routing_key("ml", GatewayAPITarget("rec", 1)) == (HTTP_ROUTE, "ml", "rec")
    assert routing_key("ml", ServiceTarget("rec")) == (SERVICE, "ml", "rec")
