"""Signal presets: where each trigger kind reads its value on a mesh or model server, by their own names.

Pure data. Every name below is the one the server's own documentation gives (the page is cited next to
each preset); a kind a server does not measure is None, and a policy asking for it is refused
(`unsupported`). The namespace and workload labels are not the server's: a model server labels its
series with its model (vLLM's `model_name`, Triton's `model`), so the scrape has to attach the pod's
namespace and Deployment (see README "LLM platforms"); the model-server presets expect `namespace` and
`workload`, as the project's own quality metrics use.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Preset(str, Enum):
    ISTIO = "Istio"
    VLLM = "vLLM"
    TGI = "TGI"
    TRITON = "Triton"
    KSERVE = "KServe"


@dataclass(frozen=True)
class Histogram:
    """A Prometheus histogram (its `_bucket` series are read) and the unit its buckets count."""

    metric: str
    seconds: bool
    """True: buckets count seconds (readings become milliseconds); False: milliseconds."""


@dataclass(frozen=True)
class Errors:
    """How a server counts failed requests: a response-code label on the request counter (5xx is an error),
    a counter of failures, or a counter of successes (every other request failed). Exactly one is set."""

    response_code_label: str | None = None
    failures: str | None = None
    successes: str | None = None


@dataclass(frozen=True)
class ServerMetrics:
    requests: str
    """A counter of the requests the server handled (a selector where it takes two series), failed ones
    included where the server counts them: the request-count gate and the load of the capacity check."""
    latency: Histogram | None
    errors: Errors | None
    time_to_first_token: Histogram | None
    time_per_output_token: Histogram | None
    queue_depth: str | None
    """A gauge of the requests waiting to be served, per replica."""
    kv_cache_usage: str | None
    """A gauge of the share (0..1) of the KV cache in use, per replica."""
    generated_tokens: str | None
    """A counter of the tokens generated: its rate is tokens per second."""
    workload_label: str = "workload"
    namespace_label: str = "namespace"


PRESETS: dict[Preset, ServerMetrics] = {
    # https://istio.io/latest/docs/reference/config/metrics/ (Istio Standard Metrics: istio_requests_total,
    # istio_request_duration_milliseconds, labels destination_workload, destination_workload_namespace,
    # response_code). A mesh measures requests, not tokens.
    Preset.ISTIO: ServerMetrics(
        requests="istio_requests_total",
        latency=Histogram("istio_request_duration_milliseconds", seconds=False),
        errors=Errors(response_code_label="response_code"),
        time_to_first_token=None, time_per_output_token=None, queue_depth=None, kv_cache_usage=None,
        generated_tokens=None,
        workload_label="destination_workload", namespace_label="destination_workload_namespace",
    ),
    # https://docs.vllm.ai/en/stable/usage/metrics/ and https://docs.vllm.ai/en/stable/design/metrics/ (V1
    # metrics): vllm:request_success_total counts finished requests by finished_reason (vLLM counts no failed
    # request, so errorRatio has no source), vllm:e2e_request_latency_seconds, vllm:time_to_first_token_seconds,
    # vllm:inter_token_latency_seconds ("Time Per Output Token, TPOT"), vllm:num_requests_waiting,
    # vllm:kv_cache_usage_perc (0-1), vllm:generation_tokens_total.
    Preset.VLLM: ServerMetrics(
        requests="vllm:request_success_total",
        latency=Histogram("vllm:e2e_request_latency_seconds", seconds=True),
        errors=None,
        time_to_first_token=Histogram("vllm:time_to_first_token_seconds", seconds=True),
        time_per_output_token=Histogram("vllm:inter_token_latency_seconds", seconds=True),
        queue_depth="vllm:num_requests_waiting",
        kv_cache_usage="vllm:kv_cache_usage_perc",
        generated_tokens="vllm:generation_tokens_total",
    ),
    # https://huggingface.co/docs/text-generation-inference/reference/metrics: tgi_request_count (all
    # requests), tgi_request_success, tgi_request_duration (seconds, e2e latency),
    # tgi_request_mean_time_per_token_duration (seconds, inter-token latency), tgi_queue_size,
    # tgi_request_generated_tokens (a histogram of tokens per request: its _sum counts every token). TGI
    # exports no time-to-first-token and no KV-cache metric.
    Preset.TGI: ServerMetrics(
        requests="tgi_request_count",
        latency=Histogram("tgi_request_duration", seconds=True),
        errors=Errors(successes="tgi_request_success"),
        time_to_first_token=None,
        time_per_output_token=Histogram("tgi_request_mean_time_per_token_duration", seconds=True),
        queue_depth="tgi_queue_size",
        kv_cache_usage=None,
        generated_tokens="tgi_request_generated_tokens_sum",
    ),
    # https://docs.nvidia.com/deeplearning/triton-inference-server/user-guide/docs/user_guide/metrics.html:
    # nv_inference_request_success and nv_inference_request_failure (every request counted once),
    # nv_inference_first_response_histogram_ms (request to first response of a decoupled, i.e. streaming,
    # model; --metrics-config histogram_latencies=true). Request latency is a cumulative counter, not a
    # histogram, so no quantile can be read. The TensorRT-LLM backend's own gauges,
    # https://docs.nvidia.com/deeplearning/triton-inference-server/user-guide/docs/tensorrtllm_backend/README.html#triton-metrics:
    # nv_trt_llm_request_metrics{request_type="waiting"} and
    # nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="fraction"}. No counter of generated tokens.
    Preset.TRITON: ServerMetrics(
        requests='{__name__=~"nv_inference_request_success|nv_inference_request_failure"}',
        latency=None,
        errors=Errors(failures="nv_inference_request_failure"),
        time_to_first_token=Histogram("nv_inference_first_response_histogram_ms", seconds=False),
        time_per_output_token=None,
        queue_depth='nv_trt_llm_request_metrics{request_type="waiting"}',
        kv_cache_usage='nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="fraction"}',
        generated_tokens=None,
    ),
    # https://kserve.github.io/website/docs/model-serving/predictive-inference/observability/prometheus-metrics:
    # KServe's model servers emit request_predict_seconds (a histogram, seconds; its _count counts predictions)
    # and no failure or token metric. An LLM on KServe's Hugging Face runtime is served by vLLM and exposes
    # vLLM's metrics (https://kserve.github.io/website/docs/model-serving/generative-inference/overview): use
    # the vLLM preset for it.
    Preset.KSERVE: ServerMetrics(
        requests="request_predict_seconds_count",
        latency=Histogram("request_predict_seconds", seconds=True),
        errors=None,
        time_to_first_token=None, time_per_output_token=None, queue_depth=None, kv_cache_usage=None,
        generated_tokens=None,
    ),
}

KIND_FIELDS = {
    "latency": "latency",
    "errorRatio": "errors",
    "timeToFirstToken": "time_to_first_token",
    "timePerOutputToken": "time_per_output_token",
    "queueDepth": "queue_depth",
    "kvCacheUsage": "kv_cache_usage",
    "tokensPerSecond": "generated_tokens",
}
"""Trigger kinds (their spec field) that read a preset's metric, and the ServerMetrics field they read."""


def presets_measuring(kind: str) -> tuple[Preset, ...]:
    """The presets whose server measures a trigger kind (`KIND_FIELDS`), in declaration order."""
    return tuple(p for p, m in PRESETS.items() if getattr(m, KIND_FIELDS[kind]) is not None)
