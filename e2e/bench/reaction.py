"""Reaction time: from the first scrape in which Prometheus can see a breach (or a recovery) to the routing
object carrying the new weights, and to the first request the traffic generator sends to the new tier.

Two variants on one stack, same method, same bound:

* classic: the wired scenario (`e2e.scenario.Scenario`, Istio backend): every request to the primary answers
  500; an `errorRatio` trigger reads `istio_requests_total`.
* llm: the LLM platform (`e2e.llm_scenario.LLMScenario`): two language models behind InferencePools of one
  HTTPRoute rule, LLM simulators with vLLM's metrics; the primary's time to first token goes to 2.5 s; a
  `timeToFirstToken` trigger (vLLM preset, p90 above 1 s) reads `vllm:time_to_first_token_seconds`.

Real API server, real Prometheus scraping the simulators every second, the operator as a subprocess
evaluating every second, a traffic generator following the routing object (polled every 50 ms). Each round
injects the fault into the primary, waits for the fallback, holds, resets, waits for the restore, holds.

How the instants are found, after the run, from Prometheus's own raw samples:
- breach visible: the first scrape of the primary after the injection in which its count of bad events grew
  (5xx requests; first tokens slower than the limit, i.e. `_count` minus the `le` bucket of the limit);
  recovery visible: the first scrape after the reset whose interval held events and no bad one.
- signal crossing: the first instant, on a 100 ms grid, at which the operator's own PromQL for the trigger
  (planned by `signals.promql` from the policy) is past the threshold (breach) or back under it (restore).
  The gap between "visible" and "crossing" is what the rate() window costs.
- routing: the traffic generator's `route_changes` (the routing object as polled, 50 ms resolution).
- first request: the generator's first dispatch to the new tier after the change.

A prober sends a steady trickle straight to the primary (as a header-matched route would), so the
primary's recovery is visible in its metrics while it serves no routed traffic; without it a recovery can
only be learnt by the restore probe, and there would be no recovery scrape to time from. A time-to-first-
token breach is visible only once a slow first token has come out, so its *visible scrape* is at least the
injected time to first token after the injection: the bound is on what the operator adds after that.

Run alone: `python -m e2e.bench.reaction [ROUNDS] [classic|llm]`.
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
WINDOW_SECONDS = 3.0
THRESHOLD = 0.1
FAULT = {"error_ratio": 1.0}
EVALUATION = {"interval": "1s", "window": WINDOW, "tripAfter": 1, "recoverAfter": 1, "restoreSteps": [100],
              "minDwell": "1s"}
CREEP = {"maxFallbackRatio": "0.95", "window": "10m", "action": "Alert"}
POLICY = {
    "triggers": [{"name": "errors", "errorRatio": {"above": str(THRESHOLD)}}],
    "signals": {"minRequests": 5},
    "evaluation": EVALUATION,
    "creep": CREEP,
}
HOLD = 2.0
ROUTED_RATE = 40.0
PROBE_RATE = 10.0
GOAL = 1.0 + 1.0 + 0.5
"""Breach visible in a scrape -> new weights: one scrape interval, one evaluation interval, 0.5 s of work."""

TTFT_LIMIT_MS = 1000.0
LLM_FAULT = {"ttft_ms": 2500.0}
LLM_POLICY = {
    "triggers": [{"name": "ttft", "timeToFirstToken": {"quantile": "0.9", "above": "1s"}}],
    "signals": {"preset": "vLLM", "minRequests": 2},
    "evaluation": EVALUATION,
    "creep": CREEP,
}
LLM_ROUTED_RATE = 6.0
LLM_PROBE_RATE = 2.0


@dataclass(frozen=True)
class Variant:
    """One scenario the reaction is measured on: its fault, its trigger and where its evidence lies."""

    name: str
    describe: str
    policy: dict[str, Any]
    trigger: str
    threshold: float
    fault: dict[str, float]
    primary: str
    fallback: str
    labels: tuple[str, str]
    """The (namespace, workload) labels of the scraped series and of the trigger's query."""
    routed_rate: float
    probe_rate: float


CLASSIC = Variant("classic", "errors: every request 500", POLICY, "errors", THRESHOLD, FAULT, "recommender-large",
                  "recommender-small", ("destination_workload_namespace", "destination_workload"), ROUTED_RATE,
                  PROBE_RATE)
LLM = Variant("llm", "time to first token 2.5 s against a p90 limit of 1 s, vLLM preset, InferencePools",
              LLM_POLICY, "ttft", TTFT_LIMIT_MS, LLM_FAULT, "llm-large", "llm-small", ("namespace", "workload"),
              LLM_ROUTED_RATE, LLM_PROBE_RATE)
VARIANTS = {v.name: v for v in (CLASSIC, LLM)}


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
    variant: str = "classic"
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


def _raw(prometheus_url: str, selector: str, start: float, end: float) -> list[dict[str, Any]]:
    return prom_query(prometheus_url, f"{selector}[{int(end - start) + 5}s]", at=end)


def _scrapes(variant: Variant, prometheus_url: str, namespace: str, start: float,
             end: float) -> list[tuple[float, float, float]]:
    """(scrape timestamp, events, bad events) of the primary, from Prometheus's raw samples: requests and 5xx
    requests (classic), or first tokens and first tokens slower than the limit (llm)."""
    where = f'{variant.labels[0]}="{namespace}", {variant.labels[1]}="{variant.primary}"'
    totals: dict[float, list[float]] = {}
    if variant is CLASSIC:
        for s in _raw(prometheus_url, f"istio_requests_total{{{where}}}", start, end):
            bad = s["metric"].get("response_code", "").startswith("5")
            for ts, value in s["values"]:
                row = totals.setdefault(float(ts), [0.0, 0.0])
                row[0] += float(value)
                row[1] += float(value) if bad else 0.0
    else:
        fast = {float(ts): float(v) for s in _raw(
            prometheus_url, f'vllm:time_to_first_token_seconds_bucket{{{where}, le="{TTFT_LIMIT_MS / 1000:.1f}"}}',
            start, end) for ts, v in s["values"]}
        for s in _raw(prometheus_url, f"vllm:time_to_first_token_seconds_count{{{where}}}", start, end):
            for ts, value in s["values"]:
                totals[float(ts)] = [float(value), float(value) - fast.get(float(ts), 0.0)]
    return [(ts, row[0], row[1]) for ts, row in sorted(totals.items())]


def _signal(variant: Variant, prometheus_url: str, query: str, namespace: str, start: float,
            end: float) -> list[tuple[float, float]]:
    """The operator's query for the trigger on the primary, every 100 ms over [start, end]."""
    out: list[tuple[float, float]] = []
    chunk = 1000 * 0.1  # Prometheus caps a range query at 11,000 points
    t = start
    while t < end:
        stop = min(end, t + chunk)
        for s in prom_query_range(prometheus_url, query, t, stop, 0.1):
            m = s["metric"]
            if m.get(variant.labels[1]) == variant.primary and m.get(variant.labels[0]) == namespace:
                out.extend((float(ts), float(v)) for ts, v in s["values"])
        t = stop + 0.1
    return sorted(out)


def trigger_query(body: dict[str, Any], trigger: str) -> str:
    """The PromQL the operator runs for `trigger` of the policy `body`, as it plans it."""
    from understudy.controller.compile import compile_policy
    from understudy.controller.store import PolicySnapshot
    from understudy.signals.promql import plan_queries, trigger_reads

    meta = body["metadata"]
    target = compile_policy(PolicySnapshot.of(meta["namespace"], meta["name"], "x", 1, "1", body["spec"], {})).target
    query = trigger_reads(plan_queries([target]), target.key)[trigger]["primary"].query
    assert query is not None, f"trigger {trigger} reads no PromQL"
    return query


def analyse(result: ReactionResult, variant: Variant, prometheus_url: str, namespace: str, query: str,
            stats: Any, start: float, end: float) -> None:
    scrapes = _scrapes(variant, prometheus_url, namespace, start, end)
    signal = _signal(variant, prometheus_url, query, namespace, start, end)
    offset = None
    for r in result.rounds:
        offset = r.inject_wall - r.inject_mono
        following = [(i, s) for i, s in enumerate(scrapes) if i and s[0] >= r.inject_wall]
        r.breach_scrape = next((s[0] for i, s in following if s[2] > scrapes[i - 1][2]), None)
        after_reset = [(i, s) for i, s in enumerate(scrapes) if i and s[0] >= r.reset_wall]
        r.recovery_scrape = next((s[0] for i, s in after_reset
                                  if s[2] == scrapes[i - 1][2] and s[1] > scrapes[i - 1][1]), None)
        r.breach_signal = next((t for t, v in signal if t >= r.inject_wall and v > variant.threshold), None)
        r.recovery_signal = next((t for t, v in signal if t >= r.reset_wall and v <= variant.threshold), None)
        if r.fallback_route is not None:
            r.fallback_request = next((offset + m for m, b in stats.dispatches
                                       if b == variant.fallback and offset + m >= r.fallback_route - 0.06), None)
        if r.restore_route is not None:
            r.primary_request = next((offset + m for m, b in stats.dispatches
                                      if b == variant.primary and offset + m >= r.restore_route - 0.06), None)

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


def _scenario(variant: Variant, st: Stack, namespace: str) -> Any:
    from e2e.llm_scenario import LLMScenario
    from e2e.scenario import Scenario

    if variant is LLM:
        return LLMScenario(st.cp, st.prometheus, namespace, st.api, workdir=st.workdir)
    return Scenario(st.cp, st.prometheus, namespace, st.api, "istio", st.workdir)


def _prober(variant: Variant, sc: Any, duration: float) -> Any:
    """Steady requests straight to the primary, whatever the route says (a header-matched route's share)."""
    from e2e.llm_scenario import CHAT
    from e2e.sim.traffic import StaticSource, TrafficGenerator

    llm = variant is LLM
    return TrafficGenerator(StaticSource({variant.primary: 100}), {variant.primary: sc.servers["primary"].url},
                            rate=variant.probe_rate, max_requests=None, duration=duration, workers=8 if llm else 4,
                            source_workload="prober", timeout=15.0 if llm else 5.0,
                            **({"path": "/v1/chat/completions", "body": CHAT} if llm else {}))


def run(st: Stack, rounds: int = 20, variant: Variant = CLASSIC) -> ReactionResult:
    from e2e.scenario import wait_until

    result = ReactionResult(variant.name)
    result.say(f"== Reaction time ({variant.name}): {rounds} injected breaches of the primary ({variant.describe}), "
               f"scrape 1s, evaluation 1s, window {WINDOW}, tripAfter 1, recoverAfter 1, minDwell 1s, "
               f"restoreSteps [100]")
    namespace = st.namespace(f"bench-reaction-{variant.name}")
    duration = rounds * 40 + 120
    try:
        with _scenario(variant, st, namespace) as sc:
            traffic = sc.start_traffic(rate=variant.routed_rate, duration=duration)
            prober = _prober(variant, sc, duration)
            prober.start()
            try:
                sc.start_operator()
                body = sc.policy(**variant.policy)
                name = body["metadata"]["name"]
                sc.apply_policy(body)
                wait_until(lambda: (c := sc.condition("Ready", name)) and c["status"] == "True", 90, "policy Ready")
                time.sleep(WINDOW_SECONDS + 2)
                start = time.time()
                for i in range(rounds):
                    r = Round(time.time(), time.monotonic())
                    sc.inject("primary", **variant.fault)
                    r.fallback_route = _wait_change(traffic, r.inject_wall, variant.fallback)
                    time.sleep(HOLD)
                    r.reset_wall, r.reset_mono = time.time(), time.monotonic()
                    sc.inject("primary")
                    r.restore_route = _wait_change(traffic, r.reset_wall, variant.primary)
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
                analyse(result, variant, st.prometheus.url, namespace, trigger_query(body, variant.trigger), stats,
                        start - 5, end + 1)
                result.operator_log = sc.operator_logs()
            finally:
                prober.stop()
    finally:
        st.delete_namespace(namespace)
    result.say(machine_line())
    for figure in result.figures:
        med, p99, n = result.stat(figure)
        result.say(f"  {figure:<52} median {med:5.2f} s   p99 {p99:5.2f} s   (n={n})")
    _, p99, _ = result.stat("breach: visible scrape -> routing")
    result.say(f"  goal: breach p99 <= scrape + evaluation + 0.5 s = {GOAL:.1f} s: "
               f"{'met' if p99 <= GOAL else 'NOT met'} ({p99:.2f} s); missed rounds: {result.missed}")
    return result


def markdown(result: ReactionResult) -> str:
    rows = ["| Interval | Median | p99 | n |", "|---|---:|---:|---:|"]
    for name in result.figures:
        med, p99, n = result.stat(name)
        rows.append(f"| {name} | {fmt(med)} s | {fmt(p99)} s | {n} |")
    return "\n".join(rows)


def side_by_side(results: Sequence[ReactionResult]) -> str:
    """Each interval's median and p99 for every variant of the same run, in columns."""
    names = [r.variant for r in results]
    rows = ["| Interval | " + " | ".join(f"{n} median | {n} p99" for n in names) + " |",
            "|---|" + "---:|---:|" * len(names)]
    for figure in dict.fromkeys(f for r in results for f in r.figures):
        cells = []
        for r in results:
            med, p99, n = r.stat(figure)
            cells += [f"{fmt(med)} s", f"{fmt(p99)} s (n={n})"]
        rows.append(f"| {figure} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    rounds = int(args[0]) if args else 20
    chosen = [VARIANTS[a] for a in args[1:]] or list(VARIANTS.values())
    try:
        with stack() as st:
            results = [run(st, rounds, v) for v in chosen]
        print(side_by_side(results), flush=True)
    except BenchUnavailable as err:
        print(f"could not run: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
