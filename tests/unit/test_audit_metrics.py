"""Operator metrics: per-policy series follow the policy's tiers and disappear with the policy."""
from __future__ import annotations

import urllib.request

from understudy.audit.metrics import OperatorMetrics
from understudy.engine.model import AuditRecord
from understudy.signals.reader import ReaderStats

TIERS = ("primary", "distilled", "popular-items")
TRIP = AuditRecord("FallbackActivated", "x", from_tier="primary", to_tier="distilled")
MISSING = AuditRecord("MetricsMissing", "no data", tier="primary")


def tier_value(m: OperatorMetrics, tier: str, policy: str = "rec") -> float | None:
    return m.registry.get_sample_value("understudy_active_tier",
                                       {"namespace": "ml", "policy": policy, "tier": tier})


def test_active_tier_is_one_hot_and_transitions_are_counted() -> None:
    m = OperatorMetrics()
    m.observe_policy("ml", "rec", TIERS, "distilled", 0.25, (TRIP, MISSING))
    assert [tier_value(m, t) for t in TIERS] == [0, 1, 0]
    assert m.registry.get_sample_value("understudy_fallback_ratio", {"namespace": "ml", "policy": "rec"}) == 0.25
    assert m.registry.get_sample_value(
        "understudy_transitions_total", {"namespace": "ml", "policy": "rec", "reason": "FallbackActivated"}) == 1
    assert m.registry.get_sample_value(
        "understudy_transitions_total", {"namespace": "ml", "policy": "rec", "reason": "MetricsMissing"}) is None


def test_dropped_tier_and_deleted_policy_lose_their_series() -> None:
    m = OperatorMetrics()
    m.observe_policy("ml", "rec", TIERS, "primary", 0.0, (TRIP,))
    m.observe_policy("ml", "other", ("primary",), "primary", 0.0)
    m.observe_policy("ml", "rec", TIERS[:2], "primary", 0.0)
    assert tier_value(m, "popular-items") is None
    m.forget_policy("ml", "rec")
    exposition = [s for metric in m.registry.collect() for s in metric.samples if s.labels.get("policy") == "rec"]
    assert exposition == []
    assert tier_value(m, "primary", policy="other") == 1


def test_serve_exposes_the_private_registry() -> None:
    m = OperatorMetrics()
    m.api_write("VirtualService")
    m.count_queries(ReaderStats(), ReaderStats(queries_sent=3, query_errors=2, policy_queries_sent=1,
                                                policy_query_errors=1))
    with m.cycle_duration.time():
        pass
    server, thread = m.serve(0, "127.0.0.1")
    try:
        port = server.server_address[1]
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        server.shutdown()
        thread.join(timeout=5)
    assert 'understudy_api_writes_total{kind="VirtualService"} 1.0' in body
    assert 'understudy_prometheus_queries_total{source="default"} 2.0' in body
    assert 'understudy_prometheus_queries_total{source="policy"} 1.0' in body
    assert 'understudy_prometheus_query_errors_total{source="default"} 1.0' in body
    assert 'understudy_prometheus_query_errors_total{source="policy"} 1.0' in body
    assert "understudy_evaluation_cycle_duration_seconds_count 1.0" in body
    assert "python_gc" not in body


def test_metrics_carry_names_and_states_never_what_a_tenant_measured() -> None:
    """What another tenant (or whoever scrapes /metrics) learns of a policy: its namespace, name, tiers,
    active tier, creep ratio and transition reasons. Never an observed value, a trigger, a query or a URL."""
    from prometheus_client import generate_latest

    m = OperatorMetrics()
    secret = AuditRecord("FallbackActivated", 'primary breached peek (sum(model_secret{team="b"}))',
                         tier="primary", trigger="peek-at-b", observed=4242.4242, threshold=0.5,
                         from_tier="primary", to_tier="distilled")
    m.observe_policy("ml", "rec", TIERS, "distilled", 0.25, (secret,))
    m.event_suppressed("TierTripped")
    text = generate_latest(m.registry).decode()
    for leak in ("4242", "peek", "model_secret", "team", "http"):
        assert leak not in text, leak
    per_policy = {"understudy_active_tier": {"namespace", "policy", "tier"},
                  "understudy_fallback_ratio": {"namespace", "policy"},
                  "understudy_transitions": {"namespace", "policy", "reason"}}
    for family in m.registry.collect():
        for sample in family.samples:
            if family.name in per_policy:
                assert set(sample.labels) == per_policy[family.name], sample
            else:
                assert not {"namespace", "policy", "tier"} & set(sample.labels), sample
