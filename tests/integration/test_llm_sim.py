"""The LLM simulator against a real Prometheus: tokens stream as server-sent events at the configured pace,
vLLM's metric names come out exactly, and the operator's own time-to-first-token PromQL (planned from a
vLLM-preset policy) reads the injected time to first token from the scraped series."""
from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

from e2e.harness.prometheus import PrometheusServer
from e2e.sim.llm_server import LLMServer
from e2e.sim.traffic import StaticSource, TrafficGenerator
from understudy.controller.compile import compile_policy
from understudy.controller.store import PolicySnapshot
from understudy.signals.promql import plan_queries, trigger_reads

VLLM_NAMES = (
    "vllm:time_to_first_token_seconds_bucket", "vllm:inter_token_latency_seconds_bucket",
    "vllm:e2e_request_latency_seconds_bucket", "vllm:request_success_total", "vllm:generation_tokens_total",
    "vllm:prompt_tokens_total", "vllm:num_requests_running", "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc",
)


def chat(url: str, tokens: int, stream: bool = True) -> tuple[float, float, list[str]]:
    """(seconds to the first event, seconds to the end, the event payloads)."""
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hello there"}],
                       "max_tokens": tokens, "stream": stream}).encode()
    request = urllib.request.Request(url + "/v1/chat/completions", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    started = time.perf_counter()
    first = None
    events: list[str] = []
    with urllib.request.urlopen(request, timeout=30) as response:
        for raw in response:
            line = raw.decode().strip()
            if line.startswith("data: "):
                first = first if first is not None else time.perf_counter() - started
                events.append(line[len("data: "):])
            elif line and not stream:
                events.append(line)
    return first or 0.0, time.perf_counter() - started, events


def test_tokens_stream_as_server_sent_events_at_the_configured_pace() -> None:
    with LLMServer("llm", ttft_ms=300, tokens_per_second=20) as server:
        first, total, events = chat(server.url, tokens=6)
        assert 0.3 <= first < 0.6 and 0.3 + 5 / 20 <= total < 1.2
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        assert [c["object"] for c in chunks] == ["chat.completion.chunk"] * 6
        assert [c["choices"][0]["finish_reason"] for c in chunks][-1] == "length"
        _, _, whole = chat(server.url, tokens=3, stream=False)
        assert json.loads(whole[0])["usage"]["completion_tokens"] == 3
        metrics = urllib.request.urlopen(server.metrics_url, timeout=5).read().decode()
        for name in VLLM_NAMES:
            assert f'{name}{{' in metrics, name
        assert 'vllm:request_success_total{finished_reason="length",model_name="llm"} 2.0' in metrics


def test_requests_beyond_the_concurrency_wait_in_the_queue() -> None:
    with LLMServer("llm", ttft_ms=400, tokens_per_second=50, concurrency=1) as server:
        generator = TrafficGenerator(StaticSource({"llm": 100}), {"llm": server.url}, rate=20, max_requests=4,
                                     duration=10, path="/v1/chat/completions",
                                     body={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
        generator.start()
        time.sleep(0.3)
        metrics = urllib.request.urlopen(server.metrics_url, timeout=5).read().decode()
        assert 'vllm:num_requests_waiting{model_name="llm"} 3.0' in metrics
        assert 'vllm:kv_cache_usage_perc{model_name="llm"} 1.0' in metrics
        stats = generator.wait(timeout=15)
        assert stats.statuses["llm"][200] == 4


def test_the_operators_ttft_query_reads_the_injected_time_to_first_token(prometheus: PrometheusServer) -> None:
    spec: dict[str, Any] = {
        "primary": {"deploymentName": "llm-large", "serviceName": "llm-large"},
        "fallbacks": [{"name": "small", "deploymentName": "llm-small", "serviceName": "llm-small",
                       "degradation": {"description": "short answers", "acceptedBy": "owner@example.com"}}],
        "routing": {"gatewayAPI": {"httpRouteName": "llm"}},
        "triggers": [{"name": "ttft", "timeToFirstToken": {"quantile": "0.5", "above": "1s"}}],
        "signals": {"preset": "vLLM", "minRequests": 1},
        "evaluation": {"interval": "1s", "window": "5s"},
    }
    namespace = f"llmsim{time.time_ns() % 10**8}"
    target = compile_policy(PolicySnapshot.of(namespace, "p", "", 0, "", spec, {})).target
    read = trigger_reads(plan_queries([target]), target.key)["ttft"]["primary"]
    with LLMServer("meta-llama/Llama-3.1-8B-Instruct", ttft_ms=1500, tokens_per_second=100) as server, \
            prometheus.target(server.metrics_url, {"namespace": namespace, "workload": "llm-large"}):
        prometheus.wait_for_targets_up([server.metrics_url])
        generator = TrafficGenerator(StaticSource({"llm": 100}), {"llm": server.url}, rate=4, max_requests=None,
                                     duration=12, path="/v1/chat/completions",
                                     body={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
        with generator:
            result = prometheus.wait_for(read.query, lambda r: bool(r) and float(r[0]["value"][1]) > 1000,
                                         timeout=30)
        value = float(result[0]["value"][1])
        # vLLM's buckets around 1.5 s are 1 s and 2.5 s: the median lies between them, in milliseconds.
        assert 1000 < value <= 2500
        assert result[0]["metric"] == {"namespace": namespace, "workload": "llm-large"}
