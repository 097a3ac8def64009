"""The backtest's reading side without a server: times, steps, chunking, and per-step vectors from matrices."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest

from understudy.backtest.source import (
    DESIRED_METRIC,
    READY_METRIC,
    History,
    PrometheusHistory,
    _by_step,
    _readiness,
    parse_span,
    parse_step,
    parse_time,
    step_times,
)
from understudy.engine import MISSING, Comparison, Policy, Reading, SignalKind, Tier, Trigger
from understudy.signals.promql import Target, map_results, plan_queries

NOW = 1_767_571_200.0  # 2026-01-05T00:00:00Z
P99 = Trigger("p99", SignalKind.LATENCY, Comparison.ABOVE, 250.0, quantile=0.99)
READY = Trigger("availability", SignalKind.READY_REPLICAS, Comparison.BELOW, 0.5)
POLICY = Policy(tiers=(Tier("primary", "rec.large", "rec"), Tier("distilled", "rec-small", "rec-small")),
                triggers=(P99, READY))
TARGET = Target(key=("ml", "rec"), namespace="ml", policy=POLICY, window=60.0)


@pytest.mark.parametrize(("text", "expected"), [
    ("now", NOW),
    ("-7d", NOW - 7 * 86400),
    ("now-1h30m", NOW - 5400),
    ("-90s", NOW - 90),
    ("1767571200", NOW),
    ("1767571200.5", NOW + 0.5),
    ("2026-01-05T00:00:00Z", NOW),
    ("2026-01-05T01:00:00+01:00", NOW),
    ("2026-01-04T23:59:59.250Z", NOW - 0.75),
])
def test_times_in_every_accepted_form(text: str, expected: float) -> None:
    assert parse_time(text, NOW) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["yesterday", "-7", "now-", "2026-01-05T00:00:00", "-1y", ""])
def test_times_that_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_time(text, NOW)


def test_spans_and_steps() -> None:
    assert parse_span("1w2d3h4m5s") == 604800 + 2 * 86400 + 3 * 3600 + 4 * 60 + 5
    assert parse_span("250ms") == 0.25
    assert parse_step("15s") == 15.0 and parse_step("15") == 15.0 and parse_step("1m30s") == 90.0
    for bad in ("0", "0s", "-5s", "fast", "nan"):
        with pytest.raises(ValueError):
            parse_step(bad)
    with pytest.raises(ValueError):
        parse_span("7 days")


def test_step_times_are_prometheus_points() -> None:
    assert step_times(NOW, NOW + 20, 5) == [int(NOW * 1000) + k * 5000 for k in range(5)]
    assert step_times(NOW, NOW + 22, 5)[-1] == int(NOW * 1000) + 20000  # the end need not be on a step
    assert step_times(NOW, NOW, 5) == [int(NOW * 1000)]
    with pytest.raises(ValueError):
        step_times(NOW, NOW - 1, 5)


def series(metric: dict[str, str], values: dict[int, str]) -> dict[str, Any]:
    """A range-query series with values at the given epoch milliseconds."""
    return {"metric": metric, "values": [[ms / 1000, v] for ms, v in sorted(values.items())]}


def test_matrix_becomes_the_instant_vectors_of_each_step() -> None:
    a, b = {"w": "a"}, {"w": "b"}
    vectors = _by_step([series(a, {1000: "1", 2000: "2"}), series(b, {2000: "NaN"})])
    assert vectors == {
        1000: [{"metric": a, "value": [1.0, "1"]}],
        2000: [{"metric": a, "value": [2.0, "2"]}, {"metric": b, "value": [2.0, "NaN"]}],
    }


def test_readiness_needs_both_series_at_a_step() -> None:
    key = {"namespace": "ml", "deployment": "rec.large"}
    ready = [series(key, {1000: "1", 2000: "3"})]
    desired = [series(key, {2000: "4", 3000: "4"})]
    assert _readiness(ready, desired) == {2000: {("ml", "rec.large"): (3, 4)}}


def _labels(workload: str) -> dict[str, str]:
    return {"destination_workload_namespace": "ml", "destination_workload": workload}


def _history(ready: dict[int, dict[tuple[str, str], tuple[int, int]]] | None) -> History:
    plan = plan_queries([TARGET])
    latency = next(q for q in plan.queries if q.startswith("histogram_quantile"))
    count = next(q for q in plan.queries if q.startswith("sum by") and "increase" in q)
    # the primary serves at both steps (slow at the second); the fallback has no request series at all
    vectors = {
        latency: _by_step([series(_labels("rec.large"), {1000: "120", 6000: "400"})]),
        count: _by_step([series(_labels("rec.large"), {1000: "500", 6000: "500"})]),
    }
    return History(TARGET, (1000, 6000), vectors, ready, requests=2)


def test_history_steps_map_like_the_operator_with_readiness_assumed() -> None:
    steps = list(_history(None).steps())
    assert [s.at for s in steps] == [1.0, 6.0]
    assert all(s.replicas is None for s in steps)  # unknown, not taken from the assumption above
    first, second = steps[0].samples, steps[1].samples
    assert first.readings["primary"]["p99"] == Reading.ok(120.0)
    assert second.readings["primary"]["p99"] == Reading.ok(400.0)
    # assumed ready: an idle fallback reads INSUFFICIENT (probe-able), and availability is full
    assert first.readings["distilled"]["p99"] == Reading.insufficient(0.0)
    assert first.readings["primary"]["availability"] == Reading.ok(1.0)
    assert first.ready == {} and second.ready == {}  # assumed for the mapping, unknown to the engine


def test_history_uses_kube_state_metrics_per_step() -> None:
    ready = {1000: {("ml", "rec.large"): (4, 4), ("ml", "rec-small"): (2, 2)},
             6000: {("ml", "rec.large"): (1, 4)}}
    recorded = list(_history(ready).steps())
    assert [s.replicas for s in recorded] == [{"primary": (4, 4), "distilled": (2, 2)}, {"primary": (1, 4)}]
    steps = [s.samples for s in recorded]
    assert steps[0].readings["primary"]["availability"] == Reading.ok(1.0)
    assert steps[1].readings["primary"]["availability"] == Reading.ok(0.25)
    # at 6000 the fallback's Deployment is unknown: MISSING, never taken as ready
    assert steps[1].readings["distilled"]["availability"] == MISSING
    assert steps[1].readings["distilled"]["p99"] == MISSING
    # The engine gets the ready replicas kube-state-metrics reported at each step; a tier without a series
    # at that step has unknown readiness (not 0: a gap in the history is no proof the Deployment was gone).
    assert steps[0].ready == {"primary": 4, "distilled": 2}
    assert steps[1].ready == {"primary": 1}


def test_a_step_equals_map_results_on_the_same_instant_vector() -> None:
    history = _history(None)
    plan = plan_queries([TARGET])
    ready = {("ml", "rec.large"): (1, 1), ("ml", "rec-small"): (1, 1)}
    instant = {q: list(history.vectors.get(q, {}).get(6000, [])) for q in plan.queries}
    assert {s.at: s.samples for s in history.steps()}[6.0] == map_results(plan, instant, ready)[TARGET.key]


class Recording(PrometheusHistory):
    """A PrometheusHistory whose range requests are answered from memory and recorded."""

    def __init__(self, max_points: int) -> None:
        super().__init__("http://127.0.0.1:9", max_points=max_points)
        self.calls: list[tuple[str, int, int, int]] = []

    def _range(self, query: str, start_ms: int, end_ms: int, step_ms: int) -> list[dict[str, Any]]:
        self.calls.append((query, start_ms, end_ms, step_ms))
        if READY_METRIC in query or DESIRED_METRIC in query:
            return []
        return [series(_labels("rec.large"), {ms: "1" for ms in range(start_ms, end_ms + 1, step_ms)})]


def test_long_ranges_are_read_in_chunks_covering_every_step_once() -> None:
    times = step_times(NOW, NOW + 5 * 22, 5)  # 23 steps
    source = Recording(max_points=10)
    done: list[int] = []
    history = source.read(TARGET, times, done.append)
    queries = len(plan_queries([TARGET]).queries) + 2
    assert history.requests == len(source.calls) == queries * 3 == source.requests_needed(TARGET, times)
    assert sum(done) == history.requests
    for query in {c[0] for c in source.calls}:
        chunks = [(s, e) for q, s, e, step in source.calls if q == query and step == 5000]
        assert chunks == [(times[0], times[9]), (times[10], times[19]), (times[20], times[22])]
        if query in history.vectors:
            assert sorted(history.vectors[query]) == times
    assert history.ready is None and not history.readiness_known
    selector = next(c[0] for c in source.calls if READY_METRIC in c[0])
    assert 'namespace="ml"' in selector and 'deployment=~"rec-small|rec\\\\.large"' in selector


def test_range_request_carries_exact_times_not_whole_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    source = PrometheusHistory("http://127.0.0.1:9", timeout=3)
    seen: dict[str, Any] = {}

    def fake(query: str, start_time: datetime, end_time: datetime, step: str, params: dict[str, str],
             timeout: float) -> list[Any]:
        seen.update(params, step=step, timeout=timeout, start_time=start_time)
        return []

    monkeypatch.setattr(source._client, "custom_query_range", fake)
    assert source._range("up", 1_500, 3_500, 500) == []
    assert (seen["start"], seen["end"], seen["step"], seen["timeout"]) == ("1.500", "3.500", "0.5", 3)
    assert seen["start_time"] == datetime.fromtimestamp(1.5, timezone.utc)
