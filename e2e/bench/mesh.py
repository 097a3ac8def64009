"""A synthetic mesh: one loopback /metrics endpoint exposing Istio's standard metrics for many workloads.

The scale and batching benchmarks need Prometheus to hold the series of hundreds of workloads, more than
it is sensible to run model-server simulators for on a shared machine. This exporter plays the sidecars
of `groups` three-tier workloads (`<prefix>-<g>-large`, `-small`, `-base`) with steady, healthy traffic:
counters grow with the wall clock (RATE requests/s per workload, 1% 5xx, latencies mostly under 50 ms), so
every scrape is consistent and every built-in signal of a policy has a reading.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

RATE = 20.0
ERROR_SHARE = 0.01
# Envoy's default buckets up to 10 s, and the share of requests at or below each.
BUCKETS_MS = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
CUMULATIVE = (0.0, 0.0, 0.05, 0.30, 0.80, 0.985, 0.998, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
MEAN_MS = 22.0
TIER_SUFFIXES = ("large", "small", "base")
GROUPS = 30
"""Workload groups the scale and batching benchmarks use: their names fit the batched queries' matchers."""


@dataclass(frozen=True)
class Workload:
    namespace: str
    name: str


def group_workloads(prefix: str, group: int) -> tuple[str, str, str]:
    return tuple(f"{prefix}-{group}-{s}" for s in TIER_SUFFIXES)  # type: ignore[return-value]


class MeshExporter:
    """Serves the metrics of `groups` x 3 workloads in `namespace`; start()/stop() or a context manager."""

    def __init__(self, namespace: str, groups: int, prefix: str = "wl") -> None:
        self.namespace = namespace
        self.groups = groups
        self.prefix = prefix
        self.workloads = [Workload(namespace, w) for g in range(groups) for w in group_workloads(prefix, g)]
        self._started = time.time()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def series(self) -> int:
        return len(self.workloads) * (2 + len(BUCKETS_MS) + 3)

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/metrics"

    def render(self) -> bytes:
        """The exposition text of every workload at this instant (about 20 ms for 300 workloads)."""
        elapsed = max(0.0, time.time() - self._started) + 60.0  # as if serving for a minute already
        total = RATE * elapsed
        lines = ["# TYPE istio_requests_total counter",
                 "# TYPE istio_request_duration_milliseconds histogram"]
        for w in self.workloads:
            base = (f'reporter="destination",destination_workload="{w.name}",'
                    f'destination_workload_namespace="{w.namespace}",destination_service_name="{w.name}"')
            ok = total * (1 - ERROR_SHARE)
            lines.append(f'istio_requests_total{{{base},response_code="200"}} {ok:.0f}')
            lines.append(f'istio_requests_total{{{base},response_code="500"}} {total - ok:.0f}')
            hist = f'{base},response_code="200"'
            for le, share in zip(BUCKETS_MS, CUMULATIVE):
                lines.append(f'istio_request_duration_milliseconds_bucket{{{hist},le="{le}"}} {ok * share:.0f}')
            lines.append(f'istio_request_duration_milliseconds_bucket{{{hist},le="+Inf"}} {ok:.0f}')
            lines.append(f'istio_request_duration_milliseconds_sum{{{hist}}} {ok * MEAN_MS:.0f}')
            lines.append(f'istio_request_duration_milliseconds_count{{{hist}}} {ok:.0f}')
        return ("\n".join(lines) + "\n").encode()

    def start(self) -> MeshExporter:
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                body = exporter.render()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except OSError:  # the scraper gave up (scrape timeout on a busy machine)
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="mesh-exporter", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> MeshExporter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def fleet_policy(name: str, namespace: str, prefix: str, group: int, interval: str = "5s",
                 virtual_service: str | None = None, trip_after: int = 2, recover_after: int = 6) -> dict[str, Any]:
    """A FallbackPolicy over group `group` of the synthetic mesh: two built-in triggers, Istio routing."""
    large, small, base = group_workloads(prefix, group)
    return {
        "apiVersion": "understudy.dev/v1alpha1", "kind": "FallbackPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "primary": {"deploymentName": large, "serviceName": large},
            "fallbacks": [
                {"name": tier, "deploymentName": wl, "serviceName": wl,
                 "degradation": {"description": f"answers from {wl}", "acceptedBy": "ml-product@example.com"}}
                for tier, wl in (("distilled", small), ("baseline", base))],
            "routing": {"istio": {"virtualServiceName": virtual_service or f"{prefix}-{group}", "routeName": "default"}},
            "triggers": [
                {"name": "p99-latency", "latency": {"quantile": "0.99", "above": "200ms"}},
                {"name": "errors", "errorRatio": {"above": "0.05"}},
            ],
            "evaluation": {"interval": interval, "window": "1m", "tripAfter": trip_after, "recoverAfter": recover_after,
                           "restoreSteps": [10, 50, 100], "minDwell": "30s"},
            "creep": {"maxFallbackRatio": "0.10", "window": "24h", "action": "Alert"},
        },
    }


def virtual_service(namespace: str, prefix: str, group: int, name: str | None = None) -> dict[str, Any]:
    """A VirtualService over a group's workloads (named `name`, by default after the group), all traffic on
    the primary. Each benchmark policy gets one of its own: the operator gives a route to one policy only
    (the others would be RouteConflict and write nothing, which would flatter the figures)."""
    hosts = group_workloads(prefix, group)
    return {
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": name or f"{prefix}-{group}", "namespace": namespace},
        "spec": {"hosts": [name or f"{prefix}-{group}"], "http": [{"name": "default", "route": [
            {"destination": {"host": h}, "weight": 100 if i == 0 else 0} for i, h in enumerate(hosts)]}]},
    }


def create_group_deployments(api: Any, namespace: str, prefix: str, groups: int, timeout: float = 180.0) -> None:
    """One single-replica Deployment per workload of the mesh, waited on until KWOK has made them ready.

    A policy's tier is eligible only while its Deployment has ready replicas, so a benchmark whose
    workloads had no Deployments would measure a fleet that cannot fall back anywhere.
    """
    from kubernetes import client

    apps = client.AppsV1Api(api)
    names = [w for g in range(groups) for w in group_workloads(prefix, g)]
    for name in names:
        labels = {"app": name}
        apps.create_namespaced_deployment(namespace, {
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
                "metadata": {"labels": labels}, "spec": {"containers": [{"name": "model", "image": f"{name}:v1"}]}}},
        })
    deadline = time.monotonic() + timeout
    while True:
        listed = apps.list_namespaced_deployment(namespace).items
        ready = {d.metadata.name for d in listed if (d.status.ready_replicas or 0) >= 1}
        if ready >= set(names):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(set(names) - ready)} of the mesh's Deployments never became ready")
        time.sleep(0.5)
