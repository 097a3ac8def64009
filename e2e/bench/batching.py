"""Batched reading vs one query per trigger per policy, side by side against the same real Prometheus.

Ours: `SignalReader.read` over every policy at once (one PromQL per signal template and window, grouped
`by (namespace, workload)`). Baseline: the way Flagger or KEDA poll, each policy asks for its own signals
every interval: the same PromQL, planned for that one policy alone (so restricted to its own workloads),
sent through the same client with the same concurrency (4 in flight). Both read the synthetic mesh
(`mesh.MeshExporter`); the readings of both are compared, so the ratio is between equal answers.

Run alone: `python -m e2e.bench.batching` (starts its own Prometheus; no control plane needed).
"""
from __future__ import annotations

import dataclasses
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Sequence

from e2e.bench.common import fmt, machine_line, median
from e2e.bench.mesh import GROUPS, MeshExporter, fleet_policy

CONCURRENCY = 4
NAMESPACE = "bench-scale"
PREFIX = "wl"


def fleet_targets(n: int, groups: int, namespace: str = NAMESPACE, prefix: str = PREFIX) -> list[Any]:
    """`n` policies over `groups` groups of the mesh, as the operator compiles them (one compile per group)."""
    from understudy.controller.compile import compile_policy
    from understudy.controller.store import PolicySnapshot

    compiled = {}
    for g in range(min(n, groups)):
        body = fleet_policy(f"p-{g}", namespace, prefix, g)
        snap = PolicySnapshot.of(namespace, body["metadata"]["name"], f"uid-{g}", 1, "1", body["spec"], {})
        compiled[g] = compile_policy(snap).target
    return [dataclasses.replace(compiled[i % groups], key=(namespace, f"p-{i}")) for i in range(n)]


@dataclass
class SizeResult:
    policies: int
    ours_queries: float
    ours_seconds: float
    base_queries: float
    base_seconds: float
    ours_errors: int = 0
    base_errors: int = 0
    same_readings: bool = True
    cycles: tuple[int, int] = (0, 0)


@dataclass
class BatchingResult:
    sizes: list[SizeResult] = field(default_factory=list)
    series: int = 0
    lines: list[str] = field(default_factory=list)

    def say(self, text: str) -> None:
        print(text, flush=True)
        self.lines.append(text)


def _readings(samples: dict[Any, Any]) -> dict[Any, Any]:
    return {k: {t: {n: (r.status, None if r.value is None else round(r.value, 6)) for n, r in trig.items()}
                for t, trig in s.readings.items()} for k, s in samples.items()}


def measure(prometheus_url: str, n: int, groups: int, cycles: int, base_cycles: int) -> SizeResult:
    from understudy.signals.reader import SignalReader

    targets = fleet_targets(n, groups)
    ours = SignalReader(prometheus_url, timeout=10.0, max_workers=CONCURRENCY)
    base = SignalReader(prometheus_url, timeout=10.0, max_workers=CONCURRENCY)
    outer = ThreadPoolExecutor(max_workers=CONCURRENCY, thread_name_prefix="baseline")
    try:
        ours.read(targets[:1], {})  # warm the HTTP sessions of both
        base.read(targets[:1], {})
        ours_times, ours_q, ours_err = [], [], 0
        for _ in range(cycles):
            before = ours.stats
            t0 = time.perf_counter()
            ours.read(targets, {})
            ours_times.append(time.perf_counter() - t0)
            ours_q.append(ours.stats.queries_sent - before.queries_sent)
            ours_err += ours.stats.query_errors - before.query_errors
        base_times, base_q, base_err = [], [], 0
        for _ in range(base_cycles):
            before = base.stats
            t0 = time.perf_counter()
            list(outer.map(lambda t: base.read([t], {}), targets))
            base_times.append(time.perf_counter() - t0)
            base_q.append(base.stats.queries_sent - before.queries_sent)
            base_err += base.stats.query_errors - before.query_errors
        # Compare both ways of reading at one instant: a cycle later the windows hold newer scrapes.
        at = time.time() - 1.0
        same_ours = ours.read(targets, {}, at=at)
        same_base: dict[Any, Any] = {}
        for part in outer.map(lambda t: base.read([t], {}, at=at), targets):
            same_base.update(part)
        same = _readings(same_ours) == _readings(same_base)
        return SizeResult(n, median(ours_q), median(ours_times), median(base_q), median(base_times),
                          ours_err, base_err, same, (cycles, base_cycles))
    finally:
        outer.shutdown(wait=True)
        ours.close()
        base.close()


def run(prometheus_url: str, exporter: MeshExporter, sizes: Sequence[int] = (100, 1000, 5000),
        cycles: int = 3) -> BatchingResult:
    result = BatchingResult(series=exporter.series)
    result.say(f"== Batched reader vs one query per trigger per policy ({exporter.groups * 3} workloads, "
               f"{exporter.series} series in Prometheus, {CONCURRENCY} queries in flight for both)")
    result.say(machine_line())
    for n in sizes:
        base_cycles = cycles if n <= 100 else 2 if n <= 1000 else 1  # the baseline is slow: 3 queries/policy
        r = measure(prometheus_url, n, exporter.groups, cycles, base_cycles)
        result.sizes.append(r)
        result.say(
            f"  {n:>5} policies: batched {r.ours_queries:.0f} queries, {r.ours_seconds * 1000:.0f} ms/cycle | "
            f"per-policy {r.base_queries:.0f} queries, {r.base_seconds * 1000:.0f} ms/cycle | "
            f"ratio {r.base_queries / max(r.ours_queries, 1):.0f}x queries, "
            f"{r.base_seconds / max(r.ours_seconds, 1e-9):.1f}x wall | errors {r.ours_errors}/{r.base_errors} | "
            f"same readings: {r.same_readings} (median of {r.cycles[0]}/{r.cycles[1]} cycles)")
    return result


def markdown(result: BatchingResult) -> str:
    rows = ["| Policies | Batched: queries / cycle | Batched: wall / cycle | Per-policy: queries / cycle | "
            "Per-policy: wall / cycle | Ratio (queries) | Ratio (wall) | Same readings |",
            "|---:|---:|---:|---:|---:|---:|---:|:---:|"]
    for r in result.sizes:
        rows.append(f"| {r.policies:,} | {r.ours_queries:.0f} | {fmt(r.ours_seconds * 1000, 0)} ms | "
                    f"{r.base_queries:,.0f} | {fmt(r.base_seconds * 1000, 0)} ms | "
                    f"{r.base_queries / max(r.ours_queries, 1):,.0f}x | "
                    f"{r.base_seconds / max(r.ours_seconds, 1e-9):.1f}x | {'yes' if r.same_readings else 'NO'} |")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    from e2e.harness.prometheus import PrometheusError, PrometheusServer

    args = list(sys.argv[1:] if argv is None else argv)
    sizes = tuple(int(a) for a in args) or (100, 1000, 5000)
    try:
        with PrometheusServer() as prometheus, MeshExporter(NAMESPACE, GROUPS, PREFIX) as exporter:
            prometheus.add_target(exporter.url)
            prometheus.wait_for_targets_up([exporter.url])
            time.sleep(3)  # a few scrapes, so rate() has samples
            run(prometheus.url, exporter, sizes)
    except PrometheusError as err:
        print(f"could not run: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
