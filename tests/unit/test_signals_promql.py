"""Batched PromQL: constant query count, valid PromQL, and results mapped back without reading gaps as zero."""
from __future__ import annotations

import json
import math
import re
import subprocess
from pathlib import Path

import pytest

from understudy.engine.model import (
    INSUFFICIENT,
    MISSING,
    Comparison,
    Policy,
    Reading,
    SignalKind,
    Tier,
    Trigger,
)
from understudy.signals.confine import Confinement
from understudy.signals.promql import (
    MetricNames,
    QueryPlan,
    Target,
    map_results,
    plan_queries,
    promql_duration,
    render_custom,
)

P99 = Trigger("p99", SignalKind.LATENCY, Comparison.ABOVE, 250.0, quantile=0.99)
ERRORS = Trigger("errors", SignalKind.ERROR_RATIO, Comparison.ABOVE, 0.05)
READY = Trigger("availability", SignalKind.READY_REPLICAS, Comparison.BELOW, 0.5)
CONFIDENCE = Trigger(
    "confidence",
    SignalKind.QUERY,
    Comparison.BELOW,
    0.6,
    promql='avg(model_confidence{workload="$deployment", namespace="$namespace", svc="$service"})',
)
WORKLOADS = ("rec-large", "rec-small", "popularity")


def policy(primary: str, fallback: str, triggers: tuple[Trigger, ...] = (P99, ERRORS, READY)) -> Policy:
    return Policy(
        tiers=(Tier("primary", primary, primary + "-svc"), Tier("fallback", fallback, fallback + "-svc")),
        triggers=triggers,
    )


def fleet(n: int) -> list[Target]:
    """n policies sharing a few workloads in two namespaces."""
    return [
        Target(
            key=f"p{i}",
            namespace=("ml", "search")[i % 2],
            policy=policy(WORKLOADS[i % 3], WORKLOADS[(i + 1) % 3]),
        )
        for i in range(n)
    ]


def vector(*series: tuple[str, str, str], names: MetricNames = MetricNames()) -> list[dict]:
    return [
        {"metric": {names.namespace_label: ns, names.workload_label: wl}, "value": [1.0, value]}
        for ns, wl, value in series
    ]


@pytest.mark.parametrize("n", [1, 10, 1000])
def test_query_count_is_constant_in_the_number_of_policies(n: int) -> None:
    plan = plan_queries(fleet(n))
    # latency p99, error ratio, and the request count that gates both
    assert len(plan.queries) == 3
    assert len(plan.bindings) == n


def test_thousand_policies_on_distinct_workloads_still_three_queries_unrestricted() -> None:
    targets = [Target(f"p{i}", "ml", policy(f"model-{i}-a", f"model-{i}-b")) for i in range(1000)]
    plan = plan_queries(targets)
    assert len(plan.queries) == 3
    # 2,000 names would not fit the matcher budget: the queries cover the whole metric instead
    assert all("destination_workload=~" not in q for q in plan.queries)
    restricted = plan_queries(targets[:5])
    assert all('destination_workload=~"' in q for q in restricted.queries)


def test_one_query_per_window_and_quantile() -> None:
    p95 = Trigger("p95", SignalKind.LATENCY, Comparison.ABOVE, 100.0, quantile=0.95)
    targets = [
        Target("a", "ml", policy("x", "y", (P99, ERRORS))),
        Target("b", "ml", policy("x", "y", (P99, p95, ERRORS))),
        Target("c", "ml", policy("x", "y", (P99, ERRORS)), window=300),
    ]
    plan = plan_queries(targets)
    latency = [q for q in plan.queries if q.startswith("histogram_quantile")]
    assert sorted(q.split(",")[0] + q[q.index("[") :] for q in latency) == [
        "histogram_quantile(0.95[60s])))",
        "histogram_quantile(0.99[300s])))",
        "histogram_quantile(0.99[60s])))",
    ]
    # per window: one error ratio and one request count
    assert len(plan.queries) == 3 + 2 * 2


def test_query_shapes() -> None:
    plan = plan_queries(fleet(4))
    by = "sum by (destination_workload_namespace, destination_workload)"
    matchers = 'destination_workload_namespace=~"ml|search", destination_workload=~"popularity|rec-large|rec-small"'
    assert plan.queries == tuple(
        sorted(
            [
                f"{by} (increase(istio_requests_total{{{matchers}}}[60s]))",
                f'({by} (rate(istio_requests_total{{{matchers}, response_code=~"5.."}}[60s])) '
                f"or 0 * {by} (rate(istio_requests_total{{{matchers}}}[60s]))) "
                f"/ {by} (rate(istio_requests_total{{{matchers}}}[60s]))",
                "histogram_quantile(0.99, sum by (le, destination_workload_namespace, destination_workload) "
                f"(rate(istio_request_duration_milliseconds_bucket{{{matchers}}}[60s])))",
            ]
        )
    )


def test_custom_metric_names_and_regex_escaping() -> None:
    names = MetricNames(
        requests_metric="http_requests_total",
        duration_metric="http_latency_ms",
        workload_label="app",
        namespace_label="ns",
        response_code_label="code",
    )
    plan = plan_queries([Target("a", "ml", policy("model.v2", "base+1", (P99, ERRORS)), metrics=names)])
    latency = next(q for q in plan.queries if q.startswith("histogram_quantile"))
    assert latency == (
        'histogram_quantile(0.99, sum by (le, ns, app) (rate(http_latency_ms_bucket{ns=~"ml", '
        'app=~"base\\\\+1|model\\\\.v2"}[60s])))'
    )
    assert any('code=~"5.."' in q for q in plan.queries)


def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    targets = fleet(10) + [
        Target("custom", "ml", policy("model.v2", "b", (P99, ERRORS, CONFIDENCE)), window=90.5),
        Target("big", "ml", policy("a", "b", (P99,)), metrics=MetricNames(workload_label="app")),
    ]
    queries = plan_queries(targets).queries
    rules = {"groups": [{"name": "g", "rules": [{"record": f"r{i}", "expr": q} for i, q in enumerate(queries)]}]}
    path = tmp_path / "rules.yml"
    path.write_text(json.dumps(rules))  # JSON is YAML
    out = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_durations() -> None:
    assert promql_duration(60) == "60s"
    assert promql_duration(0.25) == "250ms"
    assert promql_duration(90.5) == "90500ms"
    with pytest.raises(ValueError):
        promql_duration(0)


def test_custom_placeholders_rendered_per_tier_and_deduplicated() -> None:
    tier = Tier("primary", "rec-large", "rec")
    assert render_custom("f{d=\"$deployment\",n=\"${namespace}\",s=\"$service\",x=\"$other\"}", "ml", tier) == (
        'f{d="rec-large",n="ml",s="rec",x="$other"}'
    )
    same = [Target(f"p{i}", "ml", policy("rec-large", "rec-small", (CONFIDENCE,))) for i in range(50)]
    other_ns = Target("q", "search", policy("rec-large", "rec-small", (CONFIDENCE,)))
    plan = plan_queries(same + [other_ns], confinement=Confinement(enabled=False))
    # one per distinct (namespace, deployment): custom PromQL is the one signal that grows with policies
    assert len(plan.queries) == 4
    assert 'avg(model_confidence{workload="rec-small", namespace="ml", svc="rec-small-svc"})' in plan.queries


def test_applies_to_and_trigger_minimum() -> None:
    only_primary = Trigger("p99", SignalKind.LATENCY, Comparison.ABOVE, 250.0, quantile=0.99,
                           min_requests=5, applies_to=frozenset({"primary"}))
    plan = plan_queries([Target("a", "ml", policy("big", "small", (only_primary,)))])
    count = next(q for q in plan.queries if "increase" in q)
    latency = next(q for q in plan.queries if q.startswith("histogram_quantile"))
    results = {count: vector(("ml", "big", "6")), latency: vector(("ml", "big", "120"))}
    samples = map_results(plan, results, {})["a"]
    assert samples.readings == {"primary": {"p99": Reading.ok(120.0)}, "fallback": {}}


def _fleet_results(plan: QueryPlan, count: dict, latency: dict, errors: dict) -> dict:
    """Answers to whichever of the three batched queries the plan holds."""
    kinds = {"increase": count, "histogram_quantile": latency, " or 0 * ": errors}
    return {
        q: vector(*[(ns, wl, v) for (ns, wl), v in values.items()])
        for q in plan.queries
        for marker, values in kinds.items()
        if marker in q
    }


def test_mapping_ok_missing_insufficient_nan() -> None:
    targets = [
        Target("ok", "ml", policy("a", "b", (P99, ERRORS))),
        Target("quiet", "ml", policy("c", "d", (P99, ERRORS))),
    ]
    plan = plan_queries(targets)
    results = _fleet_results(
        plan,
        count={("ml", "a"): "500", ("ml", "b"): "21.5", ("ml", "c"): "19.9", ("ml", "d"): "300"},
        latency={("ml", "a"): "480.5", ("ml", "b"): "NaN", ("ml", "c"): "12"},
        errors={("ml", "a"): "0.2", ("ml", "b"): "0", ("ml", "c"): "0"},
    )
    samples = map_results(plan, results, {})
    assert samples["ok"].readings == {
        "primary": {"p99": Reading.ok(480.5), "errors": Reading.ok(0.2)},
        "fallback": {"p99": MISSING, "errors": Reading.ok(0.0)},  # NaN is missing, a real 0 is a value
    }
    assert samples["quiet"].readings == {
        # 19.9 < 20 requests: too few to judge, but the count and the values travel with the reading
        "primary": {"p99": Reading.insufficient(19.9, 12.0), "errors": Reading.insufficient(19.9, 0.0)},
        "fallback": {"p99": MISSING, "errors": MISSING},  # plenty of requests, but no series
    }
    assert samples["quiet"].readings["primary"]["p99"].status is INSUFFICIENT.status


def test_insufficient_reading_without_a_value_still_carries_its_count() -> None:
    plan = plan_queries([Target("a", "ml", policy("a", "b", (P99, ERRORS)))])
    results = _fleet_results(plan, count={("ml", "a"): "3"}, latency={("ml", "a"): "NaN"}, errors={})
    assert map_results(plan, results, {})["a"].readings["primary"] == {
        "p99": Reading.insufficient(3.0), "errors": Reading.insufficient(3.0)}


def test_absent_request_count_is_missing_not_zero() -> None:
    plan = plan_queries([Target("a", "ml", policy("a", "b", (P99,)))])
    results = _fleet_results(plan, count={}, latency={("ml", "a"): "10"}, errors={})
    assert map_results(plan, results, {("ml", "a"): (2, 2)})["a"].readings["primary"] == {"p99": MISSING}


def test_running_workload_without_series_has_served_nothing_yet() -> None:
    plan = plan_queries([Target("a", "ml", policy("a", "b", (P99, ERRORS)))])
    results = _fleet_results(plan, count={("ml", "a"): "400"}, latency={("ml", "a"): "10"}, errors={("ml", "a"): "0"})
    fresh = map_results(plan, results, {("ml", "b"): (2, 2)})["a"].readings["fallback"]
    assert fresh == {"p99": Reading.insufficient(0.0), "errors": Reading.insufficient(0.0)}  # none served yet
    for ready in ({("ml", "b"): (0, 2)}, {}):  # no ready pods, or no Deployment: unknown
        assert map_results(plan, results, ready)["a"].readings["fallback"] == {"p99": MISSING, "errors": MISSING}


def test_failed_queries_make_every_served_reading_missing() -> None:
    targets = fleet(10)
    plan = plan_queries(targets)
    ready = {("ml", w): (3, 3) for w in WORKLOADS} | {("search", w): (3, 3) for w in WORKLOADS}
    for failed in ({q: None for q in plan.queries}, {}):
        samples = map_results(plan, failed, ready)
        for s in samples.values():
            for tier in s.readings.values():
                assert tier["p99"] == MISSING and tier["errors"] == MISSING
                assert tier["availability"] == Reading.ok(1.0)  # not from Prometheus


def test_failed_gate_query_is_missing_even_when_the_value_arrived() -> None:
    plan = plan_queries([Target("a", "ml", policy("a", "b", (P99,)))])
    results = _fleet_results(plan, count={}, latency={("ml", "a"): "10"}, errors={})
    results[next(q for q in plan.queries if "increase" in q)] = None
    assert map_results(plan, results, {})["a"].readings["primary"]["p99"] == MISSING


def test_infinite_quantile_is_a_real_reading() -> None:
    plan = plan_queries([Target("a", "ml", policy("a", "b", (P99,)))])
    results = _fleet_results(plan, count={("ml", "a"): "100"}, latency={("ml", "a"): "+Inf"}, errors={})
    reading = map_results(plan, results, {})["a"].readings["primary"]["p99"]
    assert reading.value == math.inf and P99.breached_by(reading.value)


def test_ready_replicas() -> None:
    plan = plan_queries([Target("a", "ml", policy("a", "b", (READY,))), Target("z", "ml", policy("z", "a", (READY,)))])
    assert plan.queries == ()
    samples = map_results(plan, {}, {("ml", "a"): (1, 4), ("ml", "z"): (0, 0), ("other", "b"): (2, 2)})
    assert samples["a"].readings == {"primary": {"availability": Reading.ok(0.25)}, "fallback": {"availability": MISSING}}
    assert samples["z"].readings["primary"] == {"availability": MISSING}  # desired 0: no ratio


def test_custom_query_results() -> None:
    plan = plan_queries([Target("a", "ml", policy("a", "b", (CONFIDENCE,)))])
    label = MetricNames().namespace_label  # custom queries are held to the namespace by default
    qa, qb = (render_custom(CONFIDENCE.promql or "", "ml", t, label) for t in policy("a", "b").tiers)
    cases = [
        ([{"metric": {}, "value": [1.0, "0.7"]}], Reading.ok(0.7)),
        ([1.0, "0.4"], Reading.ok(0.4)),  # scalar result
        ([], MISSING),
        ([{"metric": {"a": "1"}, "value": [1.0, "0.7"]}, {"metric": {"a": "2"}, "value": [1.0, "0.1"]}], MISSING),
        ([{"metric": {}, "value": [1.0, "NaN"]}], MISSING),
        (None, MISSING),
    ]
    for result, expected in cases:
        readings = map_results(plan, {qa: result, qb: [1.0, "0.9"]}, {})["a"].readings
        assert readings == {"primary": {"confidence": expected}, "fallback": {"confidence": Reading.ok(0.9)}}


def test_unreadable_trigger_is_missing_without_failing_the_batch() -> None:
    no_quantile = Trigger("p", SignalKind.LATENCY, Comparison.ABOVE, 1.0)
    no_promql = Trigger("q", SignalKind.QUERY, Comparison.ABOVE, 1.0)
    plan = plan_queries([Target("bad", "ml", policy("a", "b", (no_quantile, no_promql))), *fleet(2)])
    assert len(plan.queries) == 3
    assert map_results(plan, {}, {})["bad"].readings["primary"] == {"p": MISSING, "q": MISSING}


def test_queries_are_deterministic() -> None:
    assert plan_queries(fleet(30)).queries == plan_queries(list(reversed(fleet(30)))).queries
    assert all(re.fullmatch(r"[ -~]+", q) for q in plan_queries(fleet(30)).queries)
