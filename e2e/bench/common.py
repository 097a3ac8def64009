"""What every benchmark shares: the machine line, percentiles, /proc readings, the operator's /metrics,
plain Prometheus HTTP calls, and one control plane + Prometheus stack for a whole `python -m e2e.bench`.

Benchmarks report medians and ratios and always print the machine and its load average, because the
machines they run on are often shared.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import statistics
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD = REPO_ROOT / "crds" / "understudy.dev_fallbackpolicies.yaml"


class BenchUnavailable(RuntimeError):
    """The benchmark could not run (a binary is missing, the control plane did not start, ...)."""


# -- the machine ---------------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:
        return (math.nan, math.nan, math.nan)


def machine() -> dict[str, Any]:
    one, five, fifteen = load_average()
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count() or 0,
        "load": f"{one:.2f} {five:.2f} {fifteen:.2f}",
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def machine_line() -> str:
    m = machine()
    return (f"machine: {m['cpu']}, {m['cores']} cores, load average {m['load']} (1/5/15 min), "
            f"Python {m['python']}, {m['platform']}")


# -- numbers -------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def fmt(value: float, digits: int = 2) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


# -- a process, from /proc -----------------------------------------------------------------------------


CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime (fields 14 and 15)


def memory_mib(pid: int) -> dict[str, float]:
    """VmRSS (resident now) and VmHWM (peak resident) in MiB."""
    out: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) / 1024.0
    return out


# -- the operator's /metrics ---------------------------------------------------------------------------


@dataclass(frozen=True)
class OperatorMetricsSnapshot:
    """The counters the benchmarks read from the operator's /metrics."""

    queries: float
    query_errors: float
    writes: dict[str, float]
    events: float
    cycles: float
    cycle_seconds: float
    policies_observed: int

    @property
    def total_writes(self) -> float:
        return sum(self.writes.values())


def read_operator_metrics(port: int, timeout: float = 10.0) -> OperatorMetricsSnapshot:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as resp:
        text = resp.read().decode()
    queries = errors = events = cycles = cycle_seconds = 0.0
    writes: dict[str, float] = {}
    policies: set[tuple[str, str]] = set()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "understudy_prometheus_queries_total":
                queries += s.value  # one series per source
            elif s.name == "understudy_prometheus_query_errors_total":
                errors += s.value
            elif s.name == "understudy_api_writes_total":
                writes[s.labels.get("kind", "")] = s.value
            elif s.name == "understudy_events_posted_total":
                events += s.value
            elif s.name == "understudy_evaluation_cycle_duration_seconds_count":
                cycles = s.value
            elif s.name == "understudy_evaluation_cycle_duration_seconds_sum":
                cycle_seconds = s.value
            elif s.name == "understudy_active_tier":
                policies.add((s.labels.get("namespace", ""), s.labels.get("policy", "")))
    return OperatorMetricsSnapshot(queries, errors, writes, events, cycles, cycle_seconds, len(policies))


# -- Prometheus over plain HTTP ------------------------------------------------------------------------


def prom_get(url: str, path: str, params: dict[str, str], timeout: float = 30.0) -> Any:
    data = urllib.parse.urlencode(params).encode()
    req = urllib.request.Request(url.rstrip("/") + path, data=data, method="POST")
    req.add_header("Content-Type", "application/x-www-form-urlencoded")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        payload = json.loads(resp.read())
    if payload.get("status") != "success":
        raise RuntimeError(f"{path}: {payload}")
    return payload["data"]


def prom_query(url: str, promql: str, at: float | None = None) -> list[dict[str, Any]]:
    params = {"query": promql}
    if at is not None:
        params["time"] = f"{at:.3f}"
    return list(prom_get(url, "/api/v1/query", params)["result"])


def prom_query_range(url: str, promql: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
    params = {"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"}
    return list(prom_get(url, "/api/v1/query_range", params)["result"])


# -- one stack for the whole run -----------------------------------------------------------------------


@dataclass
class Stack:
    """A control plane with the FallbackPolicy CRD, and a Prometheus scraping every second."""

    cp: Any
    prometheus: Any
    api: Any
    workdir: Path
    timings: dict[str, float] = field(default_factory=dict)

    def pooled_client(self, connections: int = 32) -> Any:
        """An ApiClient whose connection pool lets a thread pool of `connections` share it (caller closes)."""
        from kubernetes import client, config

        cfg = client.Configuration()
        config.load_kube_config(config_file=str(self.cp.kubeconfig), client_configuration=cfg)
        cfg.connection_pool_maxsize = connections
        return client.ApiClient(cfg)

    def namespace(self, name: str) -> str:
        from kubernetes import client

        client.CoreV1Api(self.api).create_namespace(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        return name

    def delete_namespace(self, name: str) -> None:
        from kubernetes import client

        with contextlib.suppress(Exception):
            client.CoreV1Api(self.api).delete_namespace(name, propagation_policy="Background")


@contextlib.contextmanager
def stack() -> Iterator[Stack]:
    """Start everything, yield, stop everything; BenchUnavailable when a piece cannot start."""
    from e2e.harness.cluster import ControlPlane, ControlPlaneError
    from e2e.harness.prometheus import PrometheusError, PrometheusServer

    with tempfile.TemporaryDirectory(prefix="understudy-bench-") as tmp, contextlib.ExitStack() as stack_:
        started = time.monotonic()
        try:
            cp = stack_.enter_context(ControlPlane(nodes=2))  # 110 pods each: scale and isolation keep 90 apiece
        except (ControlPlaneError, FileNotFoundError, OSError) as err:
            raise BenchUnavailable(f"control plane: {err}") from err
        cp_seconds = time.monotonic() - started
        cp.run_kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
        cp.run_kubectl("wait", "--for=condition=Established", "--timeout=60s",
                       "crd/fallbackpolicies.understudy.dev")
        try:
            prometheus = stack_.enter_context(
                PrometheusServer(workdir=Path(tmp) / "prometheus", scrape_interval="1s", evaluation_interval="1s"))
        except PrometheusError as err:
            raise BenchUnavailable(f"prometheus: {err}") from err
        api = cp.api_client()
        stack_.callback(api.close)
        yield Stack(cp, prometheus, api, Path(tmp),
                    {"control plane start (s)": cp_seconds, "stack ready (s)": time.monotonic() - started})
