"""`understudy report`'s arithmetic on a known status and known query answers (no cluster, no Prometheus).

Every expected figure below is worked out by hand from the inputs, in the comment next to it.
"""
from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any

import pytest

from understudy.report.assemble import (
    NO_DRILL,
    ReportInputs,
    TierRef,
    assemble,
    fallback_periods,
    histogram_quantile,
    plan_queries,
    serving_periods,
)
from understudy.signals.promql import MetricNames

T0 = 1_767_571_200  # 2026-01-05T00:00:00Z
START, END = T0 + 1000, T0 + 4600  # a one-hour window


def stamp(offset: float) -> str:
    return datetime.fromtimestamp(T0 + offset, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def entry(offset: float, reason: str, frm: str, to: str) -> dict[str, Any]:
    return {"time": stamp(offset), "fromTier": frm, "toTier": to, "reason": reason, "message": reason}


HISTORY = [
    entry(500, "FallbackActivated", "primary", "distilled"),  # before the window
    entry(700, "Restored", "distilled", "primary"),
    entry(2000, "FallbackActivated", "primary", "distilled"),
    entry(2600, "RestoreStep", "distilled", "primary"),  # 10% back: distilled still the serving tier
    entry(2800, "Restored", "distilled", "primary"),
]

STATUS = {
    "activeTier": "primary",
    "weights": [{"tier": "primary", "weight": 100}, {"tier": "distilled", "weight": 0}],
    "fallbackRatio": "0.050",
    "lastKnownGoodRevision": "3",
    "history": HISTORY,
    "conditions": [{"type": "Ready", "status": "True", "reason": "Reconciled", "message": "",
                    "lastTransitionTime": stamp(0)}],
}


def inputs(status: dict[str, Any] | None = None, **changes: Any) -> ReportInputs:
    base: dict[str, Any] = dict(
        namespace="ml", name="recommender",
        tiers=(TierRef("primary", "rec-large"), TierRef("distilled", "rec-small")),
        status=STATUS if status is None else status, metrics=MetricNames(), max_fallback_ratio=0.10,
        creep_window=86400.0, evaluation_window=60.0, start=START, end=END, segment_label="request_segment",
    )
    base.update(changes)
    return ReportInputs(**base)


def vec(value: float, **labels: str) -> dict[str, Any]:
    return {"metric": labels, "value": [END, repr(value)]}


def buckets(workload: str, cumulative: dict[str, float]) -> list[dict[str, Any]]:
    return [vec(count, le=le, destination_workload=workload) for le, count in cumulative.items()]


SLOW = {"100": 0, "250": 0, "500": 0, "1000": 10, "+Inf": 10}
"""10 requests, all between 500 and 1000 ms: p99 = 500 + 500 * 9.9 / 10 = 995 ms."""
FAST = {"50": 80, "100": 100, "250": 100, "+Inf": 100}
"""100 requests, 80 within 50 ms: p99 = 50 + 50 * (99 - 80) / 20 = 97.5 ms."""

ANSWERS: dict[str, Any] = {
    "activations": [],  # the operator is not scraped
    "active_tier": [],
    "confidence_sum": [vec(93.0, workload="rec-large"), vec(44.0, workload="rec-small")],
    "confidence_count": [vec(100.0, workload="rec-large"), vec(50.0, workload="rec-small")],
    "latency_during:0": buckets("rec-large", SLOW) + buckets("rec-small", FAST),
    "latency_before:0": buckets("rec-large", SLOW),
    "segment_present": [vec(2.0)],
    "segment_total": [vec(300.0, request_segment="a"), vec(100.0, request_segment="b")],
    "segment_fallback": [vec(30.0, request_segment="a"), vec(30.0, request_segment="b")],
}


def test_periods_follow_history_and_a_restore_step_keeps_the_fallback_serving() -> None:
    assert [(p.tier, p.start - T0, p.end - T0) for p in serving_periods(inputs())] == [
        ("primary", 1000, 2000), ("distilled", 2000, 2800), ("primary", 2800, 4600)]
    assert [(p.start - T0, p.end - T0) for p in fallback_periods(inputs())] == [(2000, 2800)]


def test_known_answer() -> None:
    r = assemble(inputs(), ANSWERS)
    assert (r.activations.count, r.activations.source, r.activations.lower_bound) == (1, "status.history", False)
    assert r.activations.from_prometheus is None
    assert r.time_source == "status.history"
    assert r.covered_seconds == 3600 and r.fallback_seconds == 800  # 2000 .. 2800
    primary, distilled = r.tiers
    assert (primary.seconds, distilled.seconds) == (2800, 800)
    assert distilled.share == pytest.approx(800 / 3600)
    assert primary.confidence == pytest.approx(0.93) and distilled.confidence == pytest.approx(0.88)
    assert (primary.predictions, distilled.predictions) == (100, 50)
    assert r.latency.primary_ms == pytest.approx(995.0)
    assert r.latency.fallback_ms == pytest.approx(97.5)
    assert r.latency.gained_ms == pytest.approx(897.5)
    assert r.latency.primary_basis == "during fallback"
    assert (r.latency.periods, r.latency.seconds) == (1, 800)
    assert primary.latency_ms == pytest.approx(995.0) and distilled.latency_ms == pytest.approx(97.5)
    assert r.fallback_ratio == pytest.approx(0.05) and r.creep_budget_used == pytest.approx(0.5)
    assert r.last_known_good_revision == "3"
    assert r.last_drill == NO_DRILL == "no drill on record"
    assert r.segments.found and r.segments.overall_share == pytest.approx(60 / 400)
    assert [(s.value, s.requests, s.share) for s in r.segments.segments] == [("a", 300, 0.1), ("b", 100, 0.3)]
    assert r.conditions == (("Ready", "True", "Reconciled"),)
    assert r.notes == ()


def test_queries_name_the_policy_its_workloads_and_the_fallback_period() -> None:
    plan = plan_queries(inputs())
    assert plan["activations"].promql == (
        'sum(increase(understudy_transitions_total{namespace="ml", policy="recommender", '
        'reason="FallbackActivated"}[3600s]))')
    during = plan["latency_during:0"]
    assert during.at == T0 + 2800
    assert during.promql == (
        "sum by (le, destination_workload) (increase(istio_request_duration_milliseconds_bucket{"
        'destination_workload_namespace="ml", destination_workload=~"rec-large|rec-small"}[800s]))')
    assert plan["latency_before:0"].at == T0 + 2000 and "[60s]" in plan["latency_before:0"].promql
    assert plan["confidence_count"].promql == (
        'sum by (workload) (increase(model_prediction_confidence_count{namespace="ml", '
        'workload=~"rec-large|rec-small"}[3600s]))')
    assert plan["segment_fallback"].promql == (
        "sum by (request_segment) (increase(istio_requests_total{destination_workload_namespace=\"ml\", "
        'destination_workload=~"rec-small"}[3600s]))')
    assert 'request_segment!=""' in plan["segment_present"].promql
    custom = plan_queries(inputs(confidence_metric="my_confidence", segment_label=None))
    assert "my_confidence_sum{" in custom["confidence_sum"].promql
    assert not any(k.startswith("segment") for k in custom)


def test_primary_without_traffic_during_fallback_is_measured_before_each_activation() -> None:
    answers = {**ANSWERS, "latency_during:0": buckets("rec-small", FAST)}
    lat = assemble(inputs(), answers).latency
    assert lat.primary_basis == "before each activation"
    assert lat.gained_ms == pytest.approx(995.0 - 97.5)


def test_latency_seconds_histogram_is_reported_in_milliseconds() -> None:
    slow = {"0.5": 0, "1": 10, "+Inf": 10}  # p99 0.995 s
    fast = {"0.05": 80, "0.1": 100, "+Inf": 100}  # p99 0.0975 s
    answers = {**ANSWERS, "latency_during:0": buckets("rec-large", slow) + buckets("rec-small", fast)}
    lat = assemble(inputs(metrics=MetricNames(duration_in_seconds=True)), answers).latency
    assert lat.primary_ms == pytest.approx(995.0) and lat.fallback_ms == pytest.approx(97.5)


def test_no_fallback_in_the_window_means_no_latency_figure() -> None:
    quiet = {**STATUS, "history": HISTORY[:2]}  # only the episode before the window
    r = assemble(inputs(quiet), {k: v for k, v in ANSWERS.items() if not k.startswith("latency")})
    assert r.activations.count == 0
    assert r.fallback_seconds == 0
    assert r.latency.gained_ms is None and r.latency.primary_basis == "no fallback period in the window"
    assert "latency_during:0" not in plan_queries(inputs(quiet))


def test_complete_history_wins_over_the_sampled_active_tier_gauge() -> None:
    answers = {**ANSWERS, "active_tier": [vec(0.75, tier="primary"), vec(0.25, tier="distilled")],
               "active_tier_since": [vec(START)]}
    r = assemble(inputs(), answers)
    assert (r.time_source, r.fallback_seconds) == ("status.history", 800)


def test_a_truncated_history_is_filled_in_by_the_active_tier_gauge_over_the_time_it_covers() -> None:
    answers = {**ANSWERS, "active_tier": [vec(0.75, tier="primary"), vec(0.25, tier="distilled")],
               "active_tier_since": [vec(START + 600)]}  # the operator was first scraped 10 min in
    r = assemble(inputs({**STATUS, "history": full_history()}), answers)
    assert (r.time_source, r.covered_seconds) == ("prometheus", 3000)
    assert r.fallback_seconds == pytest.approx(750)
    assert [t.seconds for t in r.tiers] == [pytest.approx(2250), pytest.approx(750)]
    assert "the operator's metrics cover only the last 3000s of the window" in r.notes
    assert plan_queries(inputs())["active_tier_since"].promql == (
        'min(min_over_time(timestamp(understudy_active_tier{namespace="ml", policy="recommender"})[3600s:4s]))')


def full_history() -> list[dict[str, Any]]:
    """20 entries (the limit), all inside the window: older transitions may have been dropped."""
    out = []
    for i in range(10):
        out.append(entry(1500 + 200 * i, "FallbackActivated", "primary", "distilled"))
        out.append(entry(1600 + 200 * i, "Restored", "distilled", "primary"))
    return out


def test_truncated_history_is_a_lower_bound_unless_prometheus_counted() -> None:
    status = {**STATUS, "history": full_history()}
    alone = assemble(inputs(status), ANSWERS)
    assert (alone.activations.count, alone.activations.lower_bound) == (10, True)
    assert alone.covered_seconds == 4600 - 1500  # the time before the oldest entry is unknown
    assert any("time per tier covers only the last 3100s" in n for n in alone.notes), alone.notes
    counted = assemble(inputs(status), {**ANSWERS, "activations": [vec(12.2)]})
    assert (counted.activations.count, counted.activations.source, counted.activations.lower_bound) == (
        12, "prometheus", False)


def test_complete_history_wins_over_a_prometheus_count_that_missed_the_counters_birth() -> None:
    r = assemble(inputs(), {**ANSWERS, "activations": [vec(0.0)]})
    assert (r.activations.count, r.activations.source, r.activations.from_prometheus) == (1, "status.history", 0)


def test_no_history_means_the_active_tier_served_all_window_since_creation() -> None:
    status = {"activeTier": "distilled", "fallbackRatio": "0.200"}
    r = assemble(inputs(status, created=START + 600), {})
    assert [(p.tier, p.start - START) for p in serving_periods(inputs(status, created=START + 600))] == [
        ("distilled", 600)]
    assert r.fallback_seconds == 3000 and r.covered_seconds == 3000
    assert r.notes == ("the policy was created 600s into the window: time per tier covers its lifetime only",)
    assert r.creep_budget_used == pytest.approx(2.0)
    assert r.last_known_good_revision is None


def test_missing_segment_label_is_said_not_zeroed() -> None:
    r = assemble(inputs(), {**ANSWERS, "segment_present": [], "segment_total": [], "segment_fallback": []})
    assert not r.segments.found and r.segments.segments == ()
    assert "'request_segment' not found on istio_requests_total" in r.segments.note


def test_unanswered_queries_are_unknown_not_zero() -> None:
    r = assemble(inputs(), {})
    assert r.latency.gained_ms is None and r.latency.primary_basis == "latency histogram not read"
    assert all(t.confidence is None for t in r.tiers)
    assert r.activations.count == 1  # status still answers
    assert not r.segments.found and r.segments.note == "segment query failed"


@pytest.mark.parametrize(("cumulative", "q", "expected"), [
    ({1.0: 5, 2.0: 10, math.inf: 10}, 0.5, 1.0),  # rank 5 is the first bucket's top
    ({1.0: 0, 2.0: 10, math.inf: 10}, 0.5, 1.5),
    ({1.0: 10, math.inf: 10}, 0.99, 0.99),  # the first bucket starts at 0
    ({1.0: 5, 2.0: 5, math.inf: 10}, 0.99, 2.0),  # in +Inf: the highest finite bound
    ({1.0: 0, math.inf: 0}, 0.99, None),
    ({1.0: 3}, 0.5, None),  # no +Inf bucket
])
def test_histogram_quantile(cumulative: dict[float, float], q: float, expected: float | None) -> None:
    got = histogram_quantile(q, cumulative)
    assert got == (None if expected is None else pytest.approx(expected))
