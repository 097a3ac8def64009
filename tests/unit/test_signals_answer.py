"""An answer of any other shape than a valid vector or scalar fails its query; the mapping never raises."""
from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from e2e.harness.hostile_prometheus import SHAPES
from understudy.engine import MISSING, Comparison, Policy, SignalKind, Tier, Trigger
from understudy.signals.answer import AnswerError, instant_result
from understudy.signals.promql import Target, _by_series, _single, map_loads, map_results, plan_queries

LATENCY = Trigger("p99", SignalKind.LATENCY, Comparison.ABOVE, 250.0, quantile=0.99)
QUERY = Trigger("q", SignalKind.QUERY, Comparison.ABOVE, 0.5, promql="vector(1)")
POLICY = Policy(tiers=(Tier("primary", "a", "a"), Tier("small", "b", "b")), triggers=(LATENCY, QUERY))


def answer(result: Any, kind: str = "vector") -> bytes:
    return json.dumps({"status": "success", "data": {"resultType": kind, "result": result}}).encode()


def test_valid_vector_and_scalar() -> None:
    vector = [{"metric": {"a": "b"}, "value": [1.5, "2"]}, {"value": [1, "NaN"]}]
    assert instant_result(answer(vector)) == vector
    assert instant_result(answer([1.5, "+Inf"], "scalar")) == [1.5, "+Inf"]
    assert instant_result(answer([])) == []


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_every_hostile_shape_is_refused(shape: str) -> None:
    with pytest.raises(AnswerError):
        instant_result(SHAPES[shape])


def test_the_error_never_quotes_the_answer() -> None:
    with pytest.raises(AnswerError) as error:
        instant_result(answer({"secret-label": "CANARY"}, "CANARY"))
    assert "CANARY" not in str(error.value)


JSON = st.recursive(st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
                    max_leaves=20)


@given(JSON)
def test_mapping_never_raises_on_any_result(result: Any) -> None:
    """Whatever reaches the mapping (a held result, a backtest's vector) gives readings, never an exception."""
    targets = [Target(("ns", "p"), "ns", POLICY, needs_load=True)]
    plan = plan_queries(targets)
    results = {q: result for q in plan.queries}
    samples = map_results(plan, results, {("ns", "a"): (1, 1), ("ns", "b"): (1, 1)})
    assert set(samples[("ns", "p")].readings) == {"primary", "small"}
    load = map_loads(plan, results)[("ns", "p")]
    assert load is None or (math.isfinite(load) and load >= 0)
    _single(result)
    _by_series(result, ("destination_workload_namespace", "destination_workload"))


@pytest.mark.parametrize("value", ["+Inf", "-Inf", "-5", "NaN"])
def test_a_load_no_counter_can_have_is_unknown(value: str) -> None:
    """A fallback's capacity is checked against the load: an infinite or negative count must not size it."""
    targets = [Target(("ns", "p"), "ns", POLICY, needs_load=True)]
    plan = plan_queries(targets)
    series = [{"metric": {"destination_workload_namespace": "ns", "destination_workload": w}, "value": [0, value]}
              for w in ("a", "b")]
    assert map_loads(plan, {q: series for q in plan.queries}) == {("ns", "p"): None}


def test_custom_queries_are_told_apart_from_batched_ones() -> None:
    plan = plan_queries([Target(("ns", "p"), "ns", POLICY)])
    assert plan.custom == frozenset({"vector(1)"})
    assert set(plan.queries) - plan.custom and all("histogram_quantile" in q or "increase" in q
                                                   for q in set(plan.queries) - plan.custom)


def test_a_malformed_single_value_reads_missing() -> None:
    assert _single([{"metric": {}, "value": [0]}]) == MISSING
    assert _single({"a": 1}) == MISSING  # type: ignore[arg-type]
    assert _single(5) == MISSING  # type: ignore[arg-type]
    assert _single([0, "+Inf"]).value == math.inf  # a scalar +Inf is a value (latency beyond the last bucket)
