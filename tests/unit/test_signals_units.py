"""Latency thresholds keep one unit (milliseconds) whatever unit the user's histogram counts in."""
from __future__ import annotations

from understudy.engine import Comparison, Policy, SignalKind, Tier, Trigger
from understudy.controller.compile import compile_policy
from understudy.controller.store import PolicySnapshot
from understudy.signals.promql import MetricNames, Target, plan_queries

POLICY = Policy(
    tiers=(Tier("primary", "big", "big"), Tier("small", "small", "small")),
    triggers=(Trigger("p99", SignalKind.LATENCY, Comparison.ABOVE, 250.0, quantile=0.99),),
)


def _latency_query(metrics: MetricNames) -> str:
    plan = plan_queries([Target(key="k", namespace="ml", policy=POLICY, metrics=metrics)])
    return next(q for q in plan.queries if "histogram_quantile" in q)


def test_a_seconds_histogram_is_read_in_milliseconds() -> None:
    assert _latency_query(MetricNames(duration_in_seconds=True)).startswith("1000 * histogram_quantile(")
    assert _latency_query(MetricNames()).startswith("histogram_quantile(")


def test_the_policy_says_which_unit_its_histogram_counts() -> None:
    spec = {
        "primary": {"deploymentName": "big", "serviceName": "big"},
        "fallbacks": [{"name": "small", "deploymentName": "small", "serviceName": "small",
                       "degradation": {"description": "smaller model", "acceptedBy": "owner@example.com"}}],
        "routing": {"service": {"name": "front"}},
        "triggers": [{"name": "p99", "latency": {"quantile": "0.99", "above": "250ms"}}],
        "signals": {"durationMetric": "vllm:e2e_request_latency_seconds", "durationUnit": "Seconds"},
    }
    compiled = compile_policy(PolicySnapshot.of("ml", "p", "uid", 1, "1", spec, {}))
    assert compiled.target.metrics.duration_in_seconds
    assert compiled.target.metrics.duration_metric == "vllm:e2e_request_latency_seconds"
