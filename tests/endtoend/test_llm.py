"""The operator on an LLM platform: two language models behind InferencePools of one HTTPRoute rule, LLM
simulators streaming tokens with vLLM's metrics, a vLLM-preset policy on time to first token."""
from __future__ import annotations

import time
from typing import Any, Callable

from e2e.harness.prometheus import PrometheusServer
from e2e.llm_scenario import POLICY_NAME, LLMScenario
from e2e.scenario import wait_until
from tests.corpus import readme_llm_examples

ON_LARGE = {"primary": 100, "small": 0}
ON_SMALL = {"primary": 0, "small": 100}


def _started(make: Callable[[PrometheusServer], LLMScenario], prometheus: PrometheusServer, rate: float,
             **spec: Any) -> LLMScenario:
    sc = make(prometheus)
    sc.start_traffic(rate=rate)
    sc.start_operator()
    sc.apply_policy(sc.policy(**spec))
    wait_until(lambda: (c := sc.condition("Ready", POLICY_NAME)) and c["status"] == "True", 60, "policy Ready")
    sc.wait_for_weights(ON_LARGE)
    return sc


def _history(sc: LLMScenario) -> list[dict[str, Any]]:
    return list(sc.status(POLICY_NAME).get("history") or [])


def test_a_ttft_breach_moves_traffic_to_the_small_model_through_inference_pools_and_back(
        make_llm_scenario: Callable[[PrometheusServer], LLMScenario], prometheus: PrometheusServer) -> None:
    sc = _started(make_llm_scenario, prometheus, rate=4.0)
    sc.inject("primary", ttft_ms=2500)
    sc.wait_for_weights(ON_SMALL, timeout=45)
    assert sc.traffic is not None
    sc.traffic.wait_for_first("llm-small", timeout=10)
    activated = next(h for h in _history(sc) if h["reason"] == "FallbackActivated")
    assert (activated["fromTier"], activated["toTier"], activated["trigger"]) == ("primary", "small", "ttft")
    assert float(activated["observed"]) > 1000 and activated["threshold"] == "1000"

    sc.inject("primary")
    sc.wait_for_weights(ON_LARGE, timeout=120)
    reasons = [h["reason"] for h in _history(sc)]
    assert "RestoreStep" in reasons and reasons[-1] == "Restored"
    stats = sc.traffic.stats()
    assert stats.errors() == 0, stats.statuses


def test_half_a_request_per_second_is_judged_only_on_enough_requests_and_restored_on_their_sum(
        make_llm_scenario: Callable[[PrometheusServer], LLMScenario], prometheus: PrometheusServer) -> None:
    """0.5 requests/s: a 10 s window holds about 5. With minRequests 20 a slow primary is not judged; with 4 it
    trips; the 50% restore step then sends the primary 0.25 requests/s, at most 3 per window, so the step can
    only advance on the requests it served added up over evaluations (README: restores advance on evidence)."""
    window = {"interval": "1s", "window": "10s", "tripAfter": 2, "recoverAfter": 3, "minDwell": "2s",
              "restoreSteps": [50, 100]}
    sc = _started(make_llm_scenario, prometheus, rate=0.5, signals={"minRequests": 20}, evaluation=window)
    sc.inject("primary", ttft_ms=3000)
    time.sleep(20)  # two full windows of slow first tokens, each under 20 requests
    assert sc.routed_weights() == ON_LARGE
    assert "TierTripped" not in [h["reason"] for h in _history(sc)]

    sc.patch_policy(POLICY_NAME, {"spec": {"signals": {"minRequests": 4}}})
    sc.wait_for_weights(ON_SMALL, timeout=60)
    sc.inject("primary")
    sc.wait_for_weights({"primary": 50, "small": 50}, timeout=90)
    step_began = time.monotonic()
    sc.wait_for_weights(ON_LARGE, timeout=120)
    restored = time.monotonic()
    reasons = [h["reason"] for h in _history(sc)]
    assert reasons[-2:] == ["RestoreStep", "Restored"] and "RestoreAborted" not in reasons, reasons
    assert sc.traffic is not None
    to_primary = [t for t, backend in sc.traffic.stats().dispatches
                  if backend == "llm-large" and step_began - 10 <= t < restored]
    # The premise: no 10 s window of the step held minRequests (4) requests to the primary.
    assert max(sum(1 for u in to_primary if t <= u < t + 10) for t in to_primary) <= 3, to_primary


def test_the_readmes_vllm_example_runs_against_the_simulator(
        make_llm_scenario: Callable[[PrometheusServer], LLMScenario], prometheus: PrometheusServer) -> None:
    """The README's vLLM policy as written (5 s evaluations, a 1 m window): every trigger reads, and a slow
    first token moves the traffic to the small model's pool."""
    sc = make_llm_scenario(prometheus)
    sc.start_traffic(rate=4.0)
    sc.start_operator()
    example = readme_llm_examples()["vLLM"]
    sc.apply_policy({**example, "metadata": {"name": POLICY_NAME, "namespace": sc.namespace}})
    for condition in ("Ready", "MetricsAvailable"):
        wait_until(lambda c=condition: (got := sc.condition(c, POLICY_NAME)) and got["status"] == "True", 90,
                   f"{condition}=True")
    assert sc.routed_weights() == ON_LARGE
    sc.inject("primary", ttft_ms=3000)
    sc.wait_for_weights(ON_SMALL, timeout=120)
    activated = next(h for h in _history(sc) if h["reason"] == "FallbackActivated")
    assert activated["trigger"] in ("ttft", "queue"), activated
