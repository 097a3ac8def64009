"""Signal presets: every trigger kind a server measures becomes PromQL on that server's own metric names,
parsed by a real PromQL parser; a kind it does not measure is refused with the CRD's message."""
from __future__ import annotations

from typing import Any

import promql_parser
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from understudy.api import FallbackPolicySpec, to_engine_policy
from understudy.api.models import preset_message
from understudy.engine import Reading
from understudy.controller.compile import compile_policy
from understudy.controller.store import PolicySnapshot
from understudy.signals.presets import KIND_FIELDS, PRESETS, Preset, presets_measuring
from understudy.signals.promql import map_results, plan_queries, selector, trigger_reads

SIGNALS: dict[str, dict[str, Any]] = {
    "latency": {"quantile": "0.99", "above": "2s"},
    "errorRatio": {"above": "0.05"},
    "timeToFirstToken": {"quantile": "0.9", "above": "800ms"},
    "timePerOutputToken": {"quantile": "0.5", "above": "60ms"},
    "queueDepth": {"above": "8"},
    "kvCacheUsage": {"above": "0.9"},
    "tokensPerSecond": {"below": "5"},
}


def spec(preset: str, kind: str, **signals: Any) -> dict[str, Any]:
    return {
        "primary": {"deploymentName": "llm-large", "serviceName": "llm-large"},
        "fallbacks": [{"name": "small", "deploymentName": "llm-small", "serviceName": "llm-small",
                       "degradation": {"description": "shorter answers", "acceptedBy": "owner@example.com"}}],
        "routing": {"gatewayAPI": {"httpRouteName": "llm"}},
        "triggers": [{"name": "t", kind: SIGNALS[kind]}],
        "signals": {"preset": preset, "minRequests": 4, **signals},
    }


def reads(document: dict[str, Any]) -> dict[str, Any]:
    target = compile_policy(PolicySnapshot.of("ml", "p", "", 0, "", document, {})).target
    return trigger_reads(plan_queries([target]), target.key)["t"]["primary"]


MEASURED = [(p, k) for k in KIND_FIELDS for p in presets_measuring(k)]


@pytest.mark.parametrize(("preset", "kind"), MEASURED, ids=[f"{p.value}-{k}" for p, k in MEASURED])
def test_each_measured_kind_reads_the_servers_own_metric(preset: Preset, kind: str) -> None:
    read = reads(spec(preset.value, kind))
    promql_parser.parse(read.query)
    server = PRESETS[preset]
    named = {"latency": server.latency, "timeToFirstToken": server.time_to_first_token,
             "timePerOutputToken": server.time_per_output_token}.get(kind)
    metric = named.metric if named is not None else getattr(server, KIND_FIELDS[kind])
    if kind == "errorRatio":
        errors = server.errors
        assert errors is not None
        metric = errors.failures or errors.successes or f'{errors.response_code_label}=~"5.."'
    assert str(metric).split("{")[0] in read.query
    assert f'{server.namespace_label}=~"ml"' in read.query and f'{server.workload_label}=~"llm-large' in read.query
    if kind in ("queueDepth", "kvCacheUsage"):
        assert read.count_query is None  # the server's state now: no request minimum
    else:
        assert read.min_requests == 4
        promql_parser.parse(read.count_query)
    if named is not None:
        assert read.query.startswith("1000 * ") == named.seconds


UNMEASURED = [(p, k) for k in KIND_FIELDS for p in Preset if p not in presets_measuring(k)]


@pytest.mark.parametrize(("preset", "kind"), UNMEASURED, ids=[f"{p.value}-{k}" for p, k in UNMEASURED])
def test_a_kind_the_server_does_not_measure_is_refused(preset: Preset, kind: str) -> None:
    with pytest.raises(ValidationError) as err:
        FallbackPolicySpec.model_validate(spec(preset.value, kind))
    assert preset_message(kind) in str(err.value)


def test_overrides_lift_the_refusal_and_are_read() -> None:
    latency = reads(spec("Triton", "latency", durationMetric="triton_request_seconds", durationUnit="Seconds"))
    assert "1000 * histogram_quantile(0.99" in latency.query and "triton_request_seconds_bucket{" in latency.query
    errors = reads(spec("vLLM", "errorRatio", requestsMetric="http_requests_total", responseCodeLabel="status"))
    assert 'http_requests_total{namespace=~"ml", workload=~"llm-large|llm-small", status=~"5.."}' in errors.query


def test_triton_counts_failed_requests_among_all_of_them() -> None:
    read = reads(spec("Triton", "errorRatio"))
    total = ('sum by (namespace, workload) (rate({__name__=~"nv_inference_request_success|'
             'nv_inference_request_failure", namespace=~"ml", workload=~"llm-large|llm-small"}[60s]))')
    assert read.query == (f'(sum by (namespace, workload) (rate(nv_inference_request_failure{{namespace=~"ml", '
                          f'workload=~"llm-large|llm-small"}}[60s])) or 0 * {total}) / {total}')


def test_tgi_errors_are_the_requests_that_did_not_succeed() -> None:
    read = reads(spec("TGI", "errorRatio"))
    assert read.query.startswith("(sum by (namespace, workload) (rate(tgi_request_count{")
    assert " - (sum by (namespace, workload) (rate(tgi_request_success{" in read.query


@given(st.sampled_from(["up", "vllm:num_requests_waiting", 'a{b="c"}', '{__name__=~"x|y"}', 'a{b="{c}"}']),
       st.lists(st.sampled_from(['ns=~"ml"', 'wl=~"a|b"', ""]), max_size=3))
def test_selector_adds_matchers_to_any_selector(metric: str, matchers: list[str]) -> None:
    built = selector(metric, *matchers)
    promql_parser.parse(built)
    assert all(m in built for m in matchers)


def test_a_gauge_reads_ok_without_requests_and_a_token_rate_waits_for_them() -> None:
    policy = to_engine_policy(FallbackPolicySpec.model_validate(
        {**spec("vLLM", "queueDepth"), "triggers": [{"name": "q", "queueDepth": {"above": "8"}},
                                                    {"name": "tps", "tokensPerSecond": {"below": "5"}}]}))
    target = compile_policy(PolicySnapshot.of("ml", "p", "", 0, "", {
        **spec("vLLM", "queueDepth"), "triggers": [{"name": "q", "queueDepth": {"above": "8"}},
                                                   {"name": "tps", "tokensPerSecond": {"below": "5"}}]}, {})).target
    assert target.policy.triggers == policy.triggers
    plan = plan_queries([target])
    read = trigger_reads(plan, target.key)

    def series(value: str) -> list[dict[str, Any]]:
        return [{"metric": {"namespace": "ml", "workload": "llm-large"}, "value": [0, value]}]

    results = {read["q"]["primary"].query: series("12"), read["tps"]["primary"].query: series("3"),
               read["tps"]["primary"].count_query: series("2")}
    samples = map_results(plan, results, {("ml", "llm-large"): (1, 1)})[target.key]
    assert samples.readings["primary"]["q"] == Reading.ok(12.0)
    assert samples.readings["primary"]["tps"] == Reading.insufficient(2.0, 3.0)
