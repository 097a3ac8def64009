"""Reaction time: from the first scrape in which Prometheus can see a breach (or a recovery) to the routing
object carrying the new weights, and to the first request the traffic generator sends to the new tier.

The wired scenario (`e2e.scenario.Scenario`, Istio backend): real API server, real Prometheus scraping the
model-server simulators every second, the operator as a subprocess evaluating every second, and a traffic
generator that follows the VirtualService (polled every 50 ms). Each round injects errors into the primary
(every request answers 500), waits for the fallback, holds, resets the fault, waits for the restore, holds.

How the instants are found, after the run, from Prometheus's own raw samples:
- breach visible: the first scrape of the primary's `istio_requests_total` after the injection whose 5xx
  count grew; recovery visible: the first scrape after the reset whose interval held requests and no 5xx.
- signal crossing: the first instant, on a 100 ms grid, at which the operator's own error-ratio PromQL
  (planned by `signals.promql` from the policy) is past the threshold (breach) or back under it
  (restore). The gap between "visible" and "crossing" is what the rate() window costs.
- routing: the traffic generator's `route_changes` (the VirtualService as polled, 50 ms resolution).
- first request: the generator's first dispatch to the new tier after the change.

A prober sends a steady trickle straight to the primary (as the VirtualService's `canary-header` route
would), so the primary's recovery is visible in its metrics while it serves no routed traffic; without it
a recovery can only be learnt by the restore probe, and there would be no recovery scrape to time from.

Run alone: `python -m e2e.bench.reaction [ROUNDS]`.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from e2e.bench.common import (
    BenchUnavailable,
    Stack,
    fmt,
    machine_line,
    median,
    percentile,
    prom_query,
    prom_query_range,
    stack,
)

WINDOW = "3s"
THRESHOLD = 0.1
FAULT = {"error_ratio": 1.0}
POLICY = {
    "triggers": [{"name": "errors", "errorRatio": {"above": str(THRESHOLD)}}],
    "signals": {"minRequests": 5},
    "evaluation": {"interval": "1s", "window": WINDOW, "tripAfter": 1, "recoverAfter": 1,
                   "restoreSteps": [100], "minDwell": "1s"},
    "creep": {"maxFallbackRatio": "0.95", "window": "10m", "action": "Alert"},
}
HOLD = 2.0
ROUTED_RATE = 40.0
PROBE_RATE = 10.0


@dataclass
class Round:
    inject_wall: float
    inject_mono: float
    fallback_route: float | None = None
    reset_wall: float = 0.0
    reset_mono: float = 0.0
    restore_route: float | None = None
    breach_scrape: float | None = None
    breach_signal: float | None = None
    recovery_scrape: float | None = None
    recovery_signal: float | None = None
    fallback_request: float | None = None
    primary_request: float | None = None


@dataclass
class ReactionResult:
    rounds: list[Round] = field(default_factory=list)
    figures: dict[str, list[float]] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    missed: int = 0
    operator_log: str = ""

    def say(self, text: str) -> None:
        print(text, flush=True)
        self.lines.append(text)

    def stat(self, name: str) -> tuple[float, float, int]:
        values = self.figures.get(name, [])
        return median(values), percentile(values, 99), len(values)


def _change_after(traffic: Any, after: float, backend: str) -> float | None:
    for change in traffic.stats().route_changes:
        if change.at >= after and change.weights.get(backend, 0) == 100:
            return float(change.at)
    return None


def _wait_change(traffic: Any, after: float, backend: str, timeout: float = 30.0) -> float | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = _change_after(traffic, after, backend)
        if found is not None:
            return found
        time.sleep(0.05)
    return None


def _scrapes(prometheus_url: str, namespace: str, workload: str, start: float, end: float) -> list[tuple[float, float, float]]:
    """(scrape timestamp, all requests, 5xx requests) of one workload, from Prometheus's raw samples."""
    seconds = int(end - start) + 5
    series = prom_query(prometheus_url,
                        f'istio_requests_total{{destination_workload="{workload}",'
                        f'destination_workload_namespace="{namespace}"}}[{seconds}s]', at=end)
    totals: dict[float, list[float]] = {}
    for s in series:
        errors = s["metric"].get("response_code", "").startswith("5")
        for ts, value in s["values"]:
            row = totals.setdefault(float(ts), [0.0, 0.0])
            row[0] += float(value)
            if errors:
                row[1] += float(value)
    return [(ts, row[0], row[1]) for ts, row in sorted(totals.items())]


def _signal(prometheus_url: str, query: str, namespace: str, workload: str, start: float,
            end: float) -> list[tuple[float, float]]:
    """The operator's error-ratio query for one workload, every 100 ms over [start, end]."""
    out: list[tuple[float, float]] = []
    chunk = 1000 * 0.1  # Prometheus caps a range query at 11,000 points
    t = start
    while t < end:
        stop = min(end, t + chunk)
        for s in prom_query_range(prometheus_url, query, t, stop, 0.1):
            m = s["metric"]
            if m.get("destination_workload") == workload and m.get("destination_workload_namespace") == namespace:
                out.extend((float(ts), float(v)) for ts, v in s["values"])
        t = stop + 0.1
    return sorted(out)


def _error_ratio_query(body: dict[str, Any]) -> str:
    from understudy.loop import PolicySnapshot, compile_policy
    from understudy.signals.promql import plan_queries

    meta = body["metadata"]
    target = compile_policy(PolicySnapshot.of(meta["namespace"], meta["name"], "x", 1, "1", body["spec"], {})).target
    return next(q for q in plan_queries([target]).queries if '=~"5.."' in q)


def analyse(result: ReactionResult, prometheus_url: str, namespace: str, primary: str, query: str,
            stats: Any, start: float, end: float) -> None:
    scrapes = _scrapes(prometheus_url, namespace, primary, start, end)
    signal = _signal(prometheus_url, query, namespace, primary, start, end)
    offset = None
    for r in result.rounds:
        offset = r.inject_wall - r.inject_mono
        following = [(i, s) for i, s in enumerate(scrapes) if i and s[0] >= r.inject_wall]
        r.breach_scrape = next((s[0] for i, s in following if s[2] > scrapes[i - 1][2]), None)
        after_reset = [(i, s) for i, s in enumerate(scrapes) if i and s[0] >= r.reset_wall]
        r.recovery_scrape = next((s[0] for i, s in after_reset
                                  if s[2] == scrapes[i - 1][2] and s[1] > scrapes[i - 1][1]), None)
        r.breach_signal = next((t for t, v in signal if t >= r.inject_wall and v > THRESHOLD), None)
        r.recovery_signal = next((t for t, v in signal if t >= r.reset_wall and v <= THRESHOLD), None)
        if r.fallback_route is not None:
            r.fallback_request = next((offset + m for m, b in stats.dispatches
                                       if b == "recommender-small" and offset + m >= r.fallback_route - 0.06), None)
        if r.restore_route is not None:
            r.primary_request = next((offset + m for m, b in stats.dispatches
                                      if b == "recommender-large" and offset + m >= r.restore_route - 0.06), None)

    def add(name: str, a: float | None, b: float | None) -> None:
        if a is not None and b is not None:
            result.figures.setdefault(name, []).append(b - a)

    for r in result.rounds:
        add("breach: injection -> routing", r.inject_wall, r.fallback_route)
        add("breach: visible scrape -> signal crossing", r.breach_scrape, r.breach_signal)
        add("breach: visible scrape -> routing", r.breach_scrape, r.fallback_route)
        add("breach: visible scrape -> first request to fallback", r.breach_scrape, r.fallback_request)
        add("breach: signal crossing -> routing", r.breach_signal, r.fallback_route)
        add("restore: reset -> routing", r.reset_wall, r.restore_route)
        add("restore: visible scrape -> signal crossing", r.recovery_scrape, r.recovery_signal)
        add("restore: visible scrape -> routing", r.recovery_scrape, r.restore_route)
        add("restore: visible scrape -> first request to primary", r.recovery_scrape, r.primary_request)
        add("restore: signal crossing -> routing", r.recovery_signal, r.restore_route)


def run(st: Stack, rounds: int = 20) -> ReactionResult:
    from e2e.scenario import Scenario, wait_until
    from e2e.sim.traffic import StaticSource, TrafficGenerator

    result = ReactionResult()
    result.say(f"== Reaction time: {rounds} injected breaches of the primary (errors: every request 500), "
               f"scrape 1s, evaluation 1s, window {WINDOW}, tripAfter 1, recoverAfter 1, minDwell 1s, "
               f"restoreSteps [100]")
    namespace = st.namespace("bench-reaction")
    try:
        with Scenario(st.cp, st.prometheus, namespace, st.api, "istio", st.workdir) as sc:
            traffic = sc.start_traffic(rate=ROUTED_RATE, duration=rounds * 40 + 120)
            prober = TrafficGenerator(StaticSource({"recommender-large": 100}),
                                      {"recommender-large": sc.servers["primary"].url}, rate=PROBE_RATE,
                                      max_requests=None, duration=rounds * 40 + 120, workers=4,
                                      source_workload="prober")
            prober.start()
            try:
                sc.start_operator()
                body = sc.policy(**POLICY)
                sc.apply_policy(body)
                wait_until(lambda: (c := sc.condition("Ready")) and c["status"] == "True", 90, "policy Ready")
                time.sleep(WINDOW_SECONDS + 2)
                start = time.time()
                for i in range(rounds):
                    r = Round(time.time(), time.monotonic())
                    sc.inject("primary", **FAULT)
                    r.fallback_route = _wait_change(traffic, r.inject_wall, "recommender-small")
                    time.sleep(HOLD)
                    r.reset_wall, r.reset_mono = time.time(), time.monotonic()
                    sc.inject("primary")
                    r.restore_route = _wait_change(traffic, r.reset_wall, "recommender-large")
                    result.rounds.append(r)
                    if r.fallback_route is None or r.restore_route is None:
                        result.missed += 1
                        time.sleep(5)
                    time.sleep(HOLD)
                    print(f"  round {i + 1}/{rounds}: fallback after "
                          f"{fmt((r.fallback_route or float('nan')) - r.inject_wall)} s, restore after "
                          f"{fmt((r.restore_route or float('nan')) - r.reset_wall)} s", flush=True)
                end = time.time()
                time.sleep(1.5)  # the last scrape lands
                stats = traffic.stats()
                analyse(result, st.prometheus.url, namespace, "recommender-large", _error_ratio_query(body),
                        stats, start - 5, end + 1)
                result.operator_log = sc.operator_logs()
            finally:
                prober.stop()
    finally:
        st.delete_namespace(namespace)
    result.say(machine_line())
    for name in result.figures:
        med, p99, n = result.stat(name)
        result.say(f"  {name:<52} median {med:5.2f} s   p99 {p99:5.2f} s   (n={n})")
    goal = 1.0 + 1.0 + 0.5
    _, p99, _ = result.stat("breach: visible scrape -> routing")
    result.say(f"  goal: breach p99 <= scrape + evaluation + 0.5 s = {goal:.1f} s: "
               f"{'met' if p99 <= goal else 'NOT met'} ({p99:.2f} s); missed rounds: {result.missed}")
    return result


WINDOW_SECONDS = 3.0


def markdown(result: ReactionResult) -> str:
    rows = ["| Interval | Median | p99 | n |", "|---|---:|---:|---:|"]
    for name in result.figures:
        med, p99, n = result.stat(name)
        rows.append(f"| {name} | {fmt(med)} s | {fmt(p99)} s | {n} |")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    rounds = int(args[0]) if args else 20
    try:
        with stack() as st:
            run(st, rounds)
    except BenchUnavailable as err:
        print(f"could not run: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
