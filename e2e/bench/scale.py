"""Scale: 100, 1,000 and 5,000 FallbackPolicies on one operator (a subprocess, `understudy run`).

The policies share 30 three-tier workload groups of the synthetic mesh (`mesh.MeshExporter`, scraped by the real
Prometheus); each has an Istio VirtualService of its own (created with it), since a route has one owner; evaluation interval 5 s, window 1 m, two
built-in triggers (p99 latency, error ratio). The policies are created cumulatively (a thread pool of
concurrent creates), and the operator is started afresh for each size, so its RSS is that of one size.

Per size: the warm-up (until the operator has evaluated every policy and its writes have stopped), then a
steady-state window in which everything is healthy. Counters come from the operator's own /metrics
(`understudy_prometheus_queries_total`, `understudy_api_writes_total`,
`understudy_evaluation_cycle_duration_seconds`, `understudy_events_posted_total`), CPU from
/proc/<pid>/stat and memory from /proc/<pid>/status.

"Per interval" figures cover one evaluation interval (5 s): every policy is evaluated exactly once in it,
possibly over several loop cycles (policies that became known at different moments are due at different
moments). Per-cycle figures divide by the loop's cycles, including the cycles in which nothing was due.

Run alone: `python -m e2e.bench.scale [SIZE:SECONDS ...]` (default 100:30 1000:60 5000:180).
"""
from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Sequence

from e2e.bench.common import (
    BenchUnavailable,
    OperatorMetricsSnapshot,
    Stack,
    cpu_seconds,
    fmt,
    machine_line,
    memory_mib,
    read_operator_metrics,
    stack,
)
from e2e.bench.mesh import GROUPS, MeshExporter, create_group_deployments, fleet_policy, virtual_service

NAMESPACE = "bench-scale"
PREFIX = "wl"
QUERY_TIMEOUT = "2"
"""The operator's default query timeout (the wired scenario's OperatorProcess uses 1 s)."""
INTERVAL = 5.0
CREATE_WORKERS = 16
DEFAULT_PLAN = ((100, 30.0), (1000, 60.0), (5000, 180.0))


@dataclass
class SizeResult:
    policies: int
    create_seconds: float = 0.0
    created: int = 0
    warmup_seconds: float = float("nan")
    warmup_writes: dict[str, float] = field(default_factory=dict)
    warmup_events: float = 0.0
    window: float = 0.0
    cycles: float = 0.0
    queries: float = 0.0
    query_errors: float = 0.0
    cycle_seconds: float = 0.0
    cpu: float = 0.0
    writes: dict[str, float] = field(default_factory=dict)
    events: float = 0.0
    rss_mib: float = float("nan")
    peak_rss_mib: float = float("nan")
    observed: int = 0

    @property
    def per_interval(self) -> float:
        return INTERVAL / self.window if self.window else float("nan")

    @property
    def steady_writes(self) -> float:
        return sum(self.writes.values())


@dataclass
class ScaleResult:
    sizes: list[SizeResult] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    operator_log_tail: str = ""

    def say(self, text: str) -> None:
        print(text, flush=True)
        self.lines.append(text)


def create_policies(api: Any, start: int, end: int, namespace: str = NAMESPACE, prefix: str = PREFIX) -> int:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    custom = client.CustomObjectsApi(api)

    def make(plural: str, group: str, version: str, body: dict[str, Any]) -> None:
        for attempt in range(5):
            try:
                custom.create_namespaced_custom_object(group, version, namespace, plural, body)
                return
            except ApiException as err:
                if err.status == 409:
                    return
                if err.status not in (429, 500, 503, 504) or attempt == 4:
                    raise
                time.sleep(0.5 * (attempt + 1))

    def create(i: int) -> int:
        """Policy p-i and its own VirtualService p-i (one owner per route: see `mesh.virtual_service`)."""
        name, group = f"p-{i}", i % GROUPS
        make("virtualservices", "networking.istio.io", "v1", virtual_service(namespace, prefix, group, name))
        make("fallbackpolicies", "understudy.dev", "v1alpha1",
             fleet_policy(name, namespace, prefix, group, interval=f"{INTERVAL:g}s", virtual_service=name))
        return 1

    with ThreadPoolExecutor(max_workers=CREATE_WORKERS) as pool:
        return sum(pool.map(create, range(start, end)))


def _delta(a: OperatorMetricsSnapshot, b: OperatorMetricsSnapshot) -> dict[str, float]:
    kinds = set(a.writes) | set(b.writes)
    return {k: b.writes.get(k, 0.0) - a.writes.get(k, 0.0) for k in kinds if b.writes.get(k, 0.0) != a.writes.get(k, 0.0)}


def metrics_when_up(port: int, timeout: float = 60.0) -> OperatorMetricsSnapshot:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return read_operator_metrics(port)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def measure_size(st: Stack, r: SizeResult, steady: float, log_dir: Any) -> str:
    from e2e.scenario import OperatorProcess

    op = OperatorProcess(st.cp, st.prometheus.url, NAMESPACE, log_dir / f"operator-scale-{r.policies}.log",
                         ("--query-timeout", QUERY_TIMEOUT)).start()
    try:
        assert op.proc is not None
        pid = op.proc.pid
        started = time.monotonic()
        first = metrics_when_up(op.metrics_port)
        # Warm-up: every policy evaluated once, then two polls more than an interval apart without writes.
        previous, quiet_since = first, None
        deadline = started + max(150.0, r.policies * 0.15)
        while time.monotonic() < deadline:
            time.sleep(2.0)
            now = metrics_when_up(op.metrics_port)
            if now.policies_observed >= r.policies and now.total_writes == previous.total_writes:
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since >= INTERVAL + 1:
                    break
            else:
                quiet_since = None
            previous = now
        r.observed = previous.policies_observed
        r.warmup_seconds = (quiet_since or time.monotonic()) - started
        r.warmup_writes = _delta(first, previous)
        r.warmup_events = previous.events - first.events
        # Steady state.
        a, cpu_a, t_a = metrics_when_up(op.metrics_port), cpu_seconds(pid), time.monotonic()
        peak = 0.0
        while time.monotonic() - t_a < steady:
            time.sleep(min(5.0, max(0.1, steady - (time.monotonic() - t_a))))
            peak = max(peak, memory_mib(pid).get("VmRSS", 0.0))
        b, cpu_b, t_b = metrics_when_up(op.metrics_port), cpu_seconds(pid), time.monotonic()
        mem = memory_mib(pid)
        r.window = t_b - t_a
        r.cycles = b.cycles - a.cycles
        r.queries = b.queries - a.queries
        r.query_errors = b.query_errors - a.query_errors
        r.cycle_seconds = b.cycle_seconds - a.cycle_seconds
        r.cpu = cpu_b - cpu_a
        r.writes = _delta(a, b)
        r.events = b.events - a.events
        r.rss_mib = mem.get("VmRSS", float("nan"))
        r.peak_rss_mib = mem.get("VmHWM", peak)
        r.observed = b.policies_observed
    finally:
        op.stop()
    return op.log_tail(30)


def run(st: Stack, exporter: MeshExporter, plan: Sequence[tuple[int, float]] = DEFAULT_PLAN) -> ScaleResult:
    result = ScaleResult()
    result.say(f"== Scale: FallbackPolicies on one operator, interval {INTERVAL:g}s, {GROUPS} workload groups "
               f"of the synthetic mesh, steady-state windows {', '.join(f'{n}: {s:g}s' for n, s in plan)}")
    api = st.pooled_client(CREATE_WORKERS * 2)
    try:
        create_group_deployments(api, NAMESPACE, PREFIX, GROUPS)
        created = 0
        for n, steady in plan:
            r = SizeResult(n)
            t0 = time.monotonic()
            r.created = create_policies(api, created, n)
            r.create_seconds = time.monotonic() - t0
            created = n
            result.say(f"  {n:>5} policies: created {r.created} more in {r.create_seconds:.1f} s "
                       f"({r.created / max(r.create_seconds, 1e-9):.0f}/s with their VirtualServices, "
                       f"{CREATE_WORKERS} concurrent creates)")
            result.operator_log_tail = measure_size(st, r, steady, st.workdir)
            result.sizes.append(r)
            k = r.per_interval
            result.say(
                f"  {n:>5} policies: warm-up {r.warmup_seconds:.1f} s (all {r.observed} evaluated; writes "
                f"{dict(r.warmup_writes)}, events {r.warmup_events:.0f}); steady {r.window:.0f} s: "
                f"per interval {r.queries * k:.1f} queries, {r.cpu * k:.3f} CPU s, "
                f"{r.cycle_seconds * k:.3f} s in cycles over {r.cycles * k:.1f} cycles; per cycle "
                f"{r.queries / max(r.cycles, 1):.2f} queries, {r.cycle_seconds / max(r.cycles, 1) * 1000:.0f} ms, "
                f"{r.cpu / max(r.cycles, 1):.3f} CPU s; writes {r.steady_writes:.0f} {dict(r.writes)}, "
                f"events {r.events:.0f}, query errors {r.query_errors:.0f}; RSS {r.rss_mib:.0f} MiB "
                f"(peak {r.peak_rss_mib:.0f} MiB)")
    finally:
        api.close()
    result.say(machine_line())
    return result


def goals(result: ScaleResult) -> list[tuple[str, bool, str]]:
    out: list[tuple[str, bool, str]] = []
    if not result.sizes:
        return out
    q = [r.queries * r.per_interval for r in result.sizes]
    out.append(("PromQL queries per interval do not grow with policies", max(q) <= min(q) * 1.5 + 0.5,
                " / ".join(f"{v:.1f}" for v in q)))
    big = max(result.sizes, key=lambda r: r.policies)
    cpu = big.cpu * big.per_interval
    out.append((f"operator CPU per interval <= 1 s at {big.policies:,} policies", cpu <= 1.0, f"{cpu:.2f} s"))
    rss = max(r.peak_rss_mib for r in result.sizes)
    out.append(("operator RSS <= 300 MiB", rss <= 300, f"peak {rss:.0f} MiB"))
    writes = sum(r.steady_writes for r in result.sizes)
    out.append(("no API writes in steady state", writes == 0,
                ", ".join(f"{r.policies:,}: {r.steady_writes:.0f} in {r.window:.0f} s" for r in result.sizes)))
    return out


def markdown(result: ScaleResult) -> str:
    rows = ["| Policies | Create (per s) | Warm-up | Warm-up writes | Steady window | Queries / interval | "
            "CPU / interval | Cycle wall (mean) | Cycles / interval | Steady writes | RSS (peak) |",
            "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result.sizes:
        k = r.per_interval
        warm = ", ".join(f"{kind} {v:.0f}" for kind, v in sorted(r.warmup_writes.items())) or "0"
        rows.append(
            f"| {r.policies:,} | {r.created / max(r.create_seconds, 1e-9):.0f} | {fmt(r.warmup_seconds, 0)} s | "
            f"{warm} | {r.window:.0f} s | {r.queries * k:.1f} | {r.cpu * k:.3f} s | "
            f"{fmt(r.cycle_seconds / max(r.cycles, 1) * 1000, 0)} ms | {r.cycles * k:.1f} | "
            f"{r.steady_writes:.0f} | {fmt(r.rss_mib, 0)} MiB ({fmt(r.peak_rss_mib, 0)} MiB) |")
    return "\n".join(rows)


def parse_plan(args: Sequence[str]) -> tuple[tuple[int, float], ...]:
    plan = []
    for a in args:
        size, _, seconds = a.partition(":")
        plan.append((int(size), float(seconds or 60)))
    return tuple(plan) or DEFAULT_PLAN


def with_mesh(st: Stack) -> Any:
    """The synthetic mesh in the scale namespace, scraped by the stack's Prometheus."""
    st.namespace(NAMESPACE)
    exporter = MeshExporter(NAMESPACE, GROUPS, PREFIX).start()
    st.prometheus.add_target(exporter.url)
    st.prometheus.wait_for_targets_up([exporter.url], timeout=60)
    return exporter


def main(argv: Sequence[str] | None = None) -> int:
    plan = parse_plan(list(sys.argv[1:] if argv is None else argv))
    try:
        with stack() as st:
            exporter = with_mesh(st)
            try:
                run(st, exporter, plan)
            finally:
                st.prometheus.remove_target(exporter.url)
                exporter.stop()
    except BenchUnavailable as err:
        print(f"could not run: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
