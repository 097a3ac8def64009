"""Isolation: 1,000 FallbackPolicies on one operator, then the same plus one policy whose own Prometheus
trickles its answer one byte a second (`e2e.harness.hostile_prometheus`, mode ``trickle``).

One operator subprocess (`understudy run --policy-prometheus-urls any`, the default query timeout) watches
a namespace of its own with the synthetic mesh and one VirtualService per policy, as in the scale
benchmark. After the warm-up (every policy evaluated, writes stopped), two steady windows in one run:
*without* the bad policy, then *with* it (created at the start of the window). Lateness is the operator's
own `understudy_evaluation_lateness_seconds` histogram: how long after its due time each evaluation
finished (reading, decision and writes). The goal: every policy is still evaluated within its interval
plus 1 s, i.e. p99 lateness <= 1 s, with the bad policy as without it.

Run alone: `python -m e2e.bench.isolation [POLICIES [SECONDS]]` (default 1000 60).
"""
from __future__ import annotations

import sys
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Sequence

from e2e.bench.common import BenchUnavailable, Stack, fmt, machine_line, read_operator_metrics, stack
from e2e.bench.mesh import GROUPS, MeshExporter, create_group_deployments, fleet_policy, virtual_service
from e2e.bench.scale import INTERVAL, metrics_when_up, create_policies
from e2e.harness.hostile_prometheus import HostilePrometheus

NAMESPACE = "bench-isolation"
PREFIX = "iso"
POLICIES = 1000
STEADY = 60.0
GOAL = 1.0
"""Seconds of lateness: evaluated within interval + 1 s."""
LATENESS = "understudy_evaluation_lateness_seconds"


@dataclass
class Window:
    label: str
    seconds: float = 0.0
    buckets: list[tuple[float, float]] = field(default_factory=list)
    """(upper bound, evaluations that finished at most that late) over the window, cumulative."""
    query_errors: float = 0.0

    @property
    def evaluations(self) -> float:
        return self.buckets[-1][1] if self.buckets else 0.0

    def quantile(self, q: float) -> float:
        """Prometheus's histogram_quantile over the window: linear within the bucket that holds the rank."""
        total = self.evaluations
        if not total:
            return float("nan")
        rank, lower, below = q * total, 0.0, 0.0
        for bound, count in self.buckets:
            if count >= rank:
                if bound == float("inf"):
                    return lower
                return lower + (bound - lower) * ((rank - below) / max(count - below, 1e-9))
            lower, below = bound, count
        return lower


@dataclass
class IsolationResult:
    policies: int
    windows: list[Window] = field(default_factory=list)
    bad_policy_ready: str = ""
    lines: list[str] = field(default_factory=list)

    def say(self, text: str) -> None:
        print(text, flush=True)
        self.lines.append(text)


def lateness(port: int) -> tuple[list[tuple[float, float]], float]:
    """The lateness histogram's cumulative buckets and the count of failed queries, from /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    buckets: list[tuple[float, float]] = []
    errors = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == f"{LATENESS}_bucket":
                buckets.append((float(s.labels["le"]), s.value))
            elif s.name == "understudy_prometheus_query_errors_total":
                errors += s.value
    return sorted(buckets), errors


def _window(label: str, port: int, seconds: float) -> Window:
    before, errors_before = lateness(port)
    t0 = time.monotonic()
    time.sleep(seconds)
    after, errors_after = lateness(port)
    start = dict(before)
    return Window(label, time.monotonic() - t0, [(b, c - start.get(b, 0.0)) for b, c in after],
                  errors_after - errors_before)


def _warm_up(port: int, policies: int) -> None:
    """Until every policy has been evaluated and writes have stopped for more than an interval."""
    deadline = time.monotonic() + max(150.0, policies * 0.15)
    previous, quiet_since = metrics_when_up(port), None
    while time.monotonic() < deadline:
        time.sleep(2.0)
        now = read_operator_metrics(port)
        if now.policies_observed >= policies and now.total_writes == previous.total_writes:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= INTERVAL + 1:
                return
        else:
            quiet_since = None
        previous = now


def _ready_condition(api: Any, name: str) -> str:
    from kubernetes import client

    body = client.CustomObjectsApi(api).get_namespaced_custom_object(
        "understudy.dev", "v1alpha1", NAMESPACE, "fallbackpolicies", name)
    for c in (body.get("status") or {}).get("conditions", []):
        if c.get("type") == "MetricsAvailable":
            return f"MetricsAvailable={c.get('status')} ({c.get('reason')})"
    return "no MetricsAvailable condition yet"


def run(st: Stack, policies: int = POLICIES, steady: float = STEADY) -> IsolationResult:
    from kubernetes import client

    from e2e.scenario import OperatorProcess

    result = IsolationResult(policies)
    result.say(f"== Isolation: {policies:,} policies (interval {INTERVAL:g}s) on one operator, steady windows of "
               f"{steady:g} s without and with one policy whose Prometheus trickles a byte a second")
    st.namespace(NAMESPACE)
    exporter = MeshExporter(NAMESPACE, GROUPS, PREFIX).start()
    hostile = HostilePrometheus("trickle", trickle_every=1.0)
    hostile.start()
    api = st.pooled_client(32)
    op = None
    try:
        st.prometheus.add_target(exporter.url)
        st.prometheus.wait_for_targets_up([exporter.url], timeout=60)
        custom = client.CustomObjectsApi(api)
        create_group_deployments(api, NAMESPACE, PREFIX, GROUPS)
        created = create_policies(api, 0, policies, namespace=NAMESPACE, prefix=PREFIX)
        result.say(f"  created {created} policies")
        op = OperatorProcess(st.cp, st.prometheus.url, NAMESPACE, st.workdir / "operator-isolation.log",
                             ("--query-timeout", "2", "--policy-prometheus-urls", "any")).start()
        _warm_up(op.metrics_port, policies)
        result.windows.append(_window("without the bad policy", op.metrics_port, steady))
        custom.create_namespaced_custom_object("networking.istio.io", "v1", NAMESPACE, "virtualservices",
                                               virtual_service(NAMESPACE, PREFIX, 0, "trickler"))
        bad = fleet_policy("trickler", NAMESPACE, PREFIX, 0, interval=f"{INTERVAL:g}s", virtual_service="trickler")
        bad["spec"]["signals"] = {"prometheusURL": hostile.url}
        custom.create_namespaced_custom_object("understudy.dev", "v1alpha1", NAMESPACE, "fallbackpolicies", bad)
        result.windows.append(_window("with the bad policy", op.metrics_port, steady))
        result.bad_policy_ready = _ready_condition(api, "trickler")
        result.say(f"  the bad policy: {result.bad_policy_ready}; its server accepted {hostile.connections} "
                   "connections")
        for w in result.windows:
            result.say(f"  {w.label}: {w.evaluations:,.0f} evaluations in {w.seconds:.0f} s, lateness median "
                       f"{fmt(w.quantile(0.5), 2)} s, p99 {fmt(w.quantile(0.99), 2)} s, failed queries "
                       f"{w.query_errors:.0f}")
    finally:
        if op is not None:
            op.stop()
        hostile.stop()
        st.prometheus.remove_target(exporter.url)
        exporter.stop()
        api.close()
    result.say(machine_line())
    return result


def goals(result: IsolationResult) -> list[tuple[str, bool, str]]:
    if len(result.windows) < 2:
        return []
    without, with_bad = result.windows
    worst = max(without.quantile(0.99), with_bad.quantile(0.99))
    return [(f"isolation: {result.policies:,} policies evaluated within interval + 1 s (p99 lateness <= "
             f"{GOAL:g} s) beside a policy whose Prometheus trickles", worst <= GOAL,
             f"p99 {fmt(without.quantile(0.99), 2)} s without, {fmt(with_bad.quantile(0.99), 2)} s with")]


def markdown(result: IsolationResult) -> str:
    rows = ["| Window | Evaluations | Seconds | Lateness median | Lateness p99 | Failed queries |",
            "|---|---:|---:|---:|---:|---:|"]
    rows += [f"| {w.label} | {w.evaluations:,.0f} | {w.seconds:.0f} | {fmt(w.quantile(0.5), 2)} s | "
             f"{fmt(w.quantile(0.99), 2)} s | {w.query_errors:.0f} |" for w in result.windows]
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    policies = int(args[0]) if args else POLICIES
    steady = float(args[1]) if len(args) > 1 else STEADY
    try:
        with stack() as st:
            result = run(st, policies, steady)
    except BenchUnavailable as err:
        print(f"could not run: {err}", file=sys.stderr)
        return 1
    print(markdown(result))
    for goal, ok, measured in goals(result):
        print(f"{goal}: {'met' if ok else 'NOT met'} ({measured})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
