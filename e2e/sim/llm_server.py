"""An LLM model-server simulator: an OpenAI-compatible ``/v1/chat/completions`` that streams tokens, and
vLLM's metrics under vLLM's own names.

Each ``LLMServer`` stands in for the pods of one model tier. A request waits for one of ``concurrency``
slots (the queue, ``vllm:num_requests_waiting``), then its first token comes after ``ttft_ms`` and each
next one after ``1000 / tokens_per_second`` ms, as server-sent events (``data: {chunk}`` lines, then
``data: [DONE]``), or as one JSON completion when the request does not ask to stream. The KV cache in use
is the share of slots running.

Metrics (https://docs.vllm.ai/en/stable/usage/metrics/, V1 names, labelled ``model_name``):
``vllm:time_to_first_token_seconds``, ``vllm:inter_token_latency_seconds``,
``vllm:e2e_request_latency_seconds`` (histograms, seconds), ``vllm:request_success_total`` (by
``finished_reason``), ``vllm:generation_tokens_total``, ``vllm:prompt_tokens_total`` (counters),
``vllm:num_requests_running``, ``vllm:num_requests_waiting``, ``vllm:kv_cache_usage_perc`` (gauges). The
pod's namespace and Deployment are the scrape's to attach, as a PodMonitor's relabelling would.

Faults at runtime through ``POST /admin`` (JSON) or ``LLMServer.inject()``: ``ttft_ms``,
``tokens_per_second``, ``concurrency``; ``reset`` restores the values the server started with.
"""
from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LOOPBACK = "127.0.0.1"
# vLLM's own bucket boundaries for time to first token and inter-token latency (seconds).
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
               40.0, 80.0)
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
               480.0, 960.0, 1920.0, 7680.0)


@dataclass(frozen=True)
class Behaviour:
    """How the model serves now."""

    ttft_ms: float = 100.0
    tokens_per_second: float = 50.0
    concurrency: int = 4

    def validate(self) -> None:
        if self.ttft_ms < 0 or self.tokens_per_second <= 0 or self.concurrency < 1:
            raise ValueError("ttft_ms >= 0, tokens_per_second > 0 and concurrency >= 1 are required")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], sim: LLMServer) -> None:
        self.sim = sim
        super().__init__(addr, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up mid-stream is not a server error."""
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # the stream ends when the connection closes, as SSE over HTTP/1.0 does
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def _send(self, code: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        sim = self.server.sim
        if self.path == "/metrics":
            self._send(200, generate_latest(sim.registry), CONTENT_TYPE_LATEST)
        elif self.path in ("/health", "/admin"):
            self._send(200, json.dumps(asdict(sim.behaviour)).encode())
        else:
            self._send(404, b'{"error": "not found"}')

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        sim = self.server.sim
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}") if length else {}
        except ValueError as err:
            self._send(400, json.dumps({"error": f"bad JSON: {err}"}).encode())
            return
        if self.path == "/admin":
            try:
                self._send(200, json.dumps(sim.inject(**body)).encode())
            except (TypeError, ValueError) as err:
                self._send(400, json.dumps({"error": str(err)}).encode())
        elif self.path == "/v1/chat/completions":
            sim.complete(body if isinstance(body, dict) else {}, self)
        else:
            self._send(404, b'{"error": "not found"}')


class LLMServer:
    """One model tier on loopback: ``start()`` returns its URL; ``stop()`` closes it."""

    def __init__(self, model_name: str, *, ttft_ms: float = 100.0, tokens_per_second: float = 50.0,
                 concurrency: int = 4, host: str = LOOPBACK, port: int = 0) -> None:
        self.model_name = model_name
        self.initial = Behaviour(ttft_ms, tokens_per_second, concurrency)
        self.initial.validate()
        self.behaviour = self.initial
        self.host, self._port = host, port
        self._lock = threading.Condition()
        self._running = 0
        self._waiting = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ("model_name",)
        self._ttft = Histogram("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.",
                               labels, buckets=TTFT_BUCKETS, registry=self.registry)
        self._itl = Histogram("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.",
                              labels, buckets=ITL_BUCKETS, registry=self.registry)
        self._e2e = Histogram("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.",
                              labels, buckets=E2E_BUCKETS, registry=self.registry)
        self._success = Counter("vllm:request_success", "Count of successfully processed requests.",
                                (*labels, "finished_reason"), registry=self.registry)
        self._generated = Counter("vllm:generation_tokens", "Number of generation tokens processed.", labels,
                                  registry=self.registry)
        self._prompt = Counter("vllm:prompt_tokens", "Number of prefill tokens processed.", labels,
                               registry=self.registry)
        self._running_gauge = Gauge("vllm:num_requests_running", "Number of requests in model execution batches.",
                                    labels, registry=self.registry)
        self._waiting_gauge = Gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.",
                                    labels, registry=self.registry)
        self._kv = Gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", labels,
                         registry=self.registry)
        for gauge in (self._running_gauge, self._waiting_gauge, self._kv):
            gauge.labels(model_name).set(0)

    # -- lifecycle -----------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("not started")
        return f"http://{self.host}:{self._server.server_address[1]}"

    @property
    def metrics_url(self) -> str:
        return self.url + "/metrics"

    def start(self) -> str:
        self._server = _Server((self.host, self._port), self)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"llm-{self.model_name}", daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> LLMServer:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- faults --------------------------------------------------------------------------------------

    def inject(self, *, reset: bool = False, **changes: Any) -> dict[str, Any]:
        """Change ``Behaviour`` fields; ``reset=True`` first returns to the values the server started with."""
        with self._lock:
            new = replace(self.initial if reset else self.behaviour, **changes)
            new.validate()
            self.behaviour = new
            self._lock.notify_all()  # more slots may be free now
        return asdict(new)

    # -- serving -------------------------------------------------------------------------------------

    def _gauges(self) -> None:
        self._running_gauge.labels(self.model_name).set(self._running)
        self._waiting_gauge.labels(self.model_name).set(self._waiting)
        self._kv.labels(self.model_name).set(min(1.0, self._running / self.behaviour.concurrency))

    def complete(self, body: dict[str, Any], handler: _Handler) -> None:
        """Serve one chat completion: queue for a slot, then the tokens, streamed or at once."""
        arrived = time.perf_counter()
        tokens = max(1, int(body.get("max_tokens") or 16))
        prompt = sum(len(str(m.get("content", "")).split()) for m in body.get("messages") or []
                     if isinstance(m, dict))
        with self._lock:
            self._waiting += 1
            self._gauges()
            while self._running >= self.behaviour.concurrency:
                self._lock.wait()
            self._waiting -= 1
            self._running += 1
            self._gauges()
            behaviour = self.behaviour
        try:
            self._generate(body, handler, arrived, tokens, prompt, behaviour)
        finally:
            with self._lock:
                self._running -= 1
                self._gauges()
                self._lock.notify()

    def _generate(self, body: dict[str, Any], handler: _Handler, arrived: float, tokens: int, prompt: int,
                  behaviour: Behaviour) -> None:
        stream = bool(body.get("stream"))
        ident = f"chatcmpl-{uuid.uuid4().hex[:12]}"
        if stream:
            handler.send_response(200)
            handler.send_header("Content-Type", "text/event-stream")
            handler.send_header("Cache-Control", "no-cache")
            handler.end_headers()
        time.sleep(behaviour.ttft_ms / 1000.0)
        first = time.perf_counter()
        self._ttft.labels(self.model_name).observe(first - arrived)
        self._prompt.labels(self.model_name).inc(prompt)
        words, previous = [], first
        for i in range(tokens):
            if i:
                time.sleep(1.0 / behaviour.tokens_per_second)
                now = time.perf_counter()
                self._itl.labels(self.model_name).observe(now - previous)
                previous = now
            word = f"token{i}"
            words.append(word)
            self._generated.labels(self.model_name).inc()
            if stream:
                chunk = {"id": ident, "object": "chat.completion.chunk", "model": self.model_name,
                         "choices": [{"index": 0, "delta": {"content": word + " "},
                                      "finish_reason": "length" if i == tokens - 1 else None}]}
                handler.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                handler.wfile.flush()
        self._e2e.labels(self.model_name).observe(time.perf_counter() - arrived)
        self._success.labels(self.model_name, "length").inc()
        if stream:
            handler.wfile.write(b"data: [DONE]\n\n")
            handler.wfile.flush()
            return
        answer = {"id": ident, "object": "chat.completion", "model": self.model_name,
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": " ".join(words)},
                               "finish_reason": "length"}],
                  "usage": {"prompt_tokens": prompt, "completion_tokens": tokens, "total_tokens": prompt + tokens}}
        handler._send(200, json.dumps(answer).encode())


__all__ = ["Behaviour", "LLMServer"]
