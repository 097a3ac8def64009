"""How fast is `decide`? Decisions per second on one core, and the cost of a status round trip.

The engine runs once per policy per evaluation interval inside one loop, so its cost bounds how many
policies one operator can evaluate; the status round trip is paid on every status write and restart.
Run: `python -m e2e.bench.engine [N]`.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time

from understudy.engine import (
    Comparison,
    Policy,
    Reading,
    Samples,
    SignalKind,
    State,
    Tier,
    Trigger,
    decide,
    initial_state,
    state_from_status,
    state_to_status,
)

RUNS = 5

POLICY = Policy(
    tiers=(Tier("primary", "large", "large"), Tier("distilled", "small", "small"),
           Tier("popular", "baseline", "baseline")),
    triggers=(
        Trigger("p99-latency", SignalKind.LATENCY, Comparison.ABOVE, 250.0, quantile=0.99),
        Trigger("errors", SignalKind.ERROR_RATIO, Comparison.ABOVE, 0.05),
        Trigger("availability", SignalKind.READY_REPLICAS, Comparison.BELOW, 0.5),
        Trigger("confidence", SignalKind.QUERY, Comparison.BELOW, 0.6, promql="avg(model_confidence)"),
    ),
    trip_after=2,
    recover_after=6,
    min_dwell=30.0,
    interval=5.0,
)


def stream(n: int) -> list[Samples]:
    """A repeating day in the life: healthy, a latency incident on the primary, recovery; every rule runs."""
    healthy = {"p99-latency": 120.0, "errors": 0.01, "availability": 1.0, "confidence": 0.8}
    out = []
    for k in range(n):
        phase = k % 200
        primary = {**healthy, "p99-latency": 400.0} if 20 <= phase < 60 else healthy
        distilled = {**healthy, "errors": 0.2} if 40 <= phase < 50 else healthy
        readings = {
            "primary": {t: Reading.ok(v) for t, v in primary.items()},
            "distilled": {t: Reading.ok(v) for t, v in distilled.items()},
            "popular": {t: Reading.ok(v) for t, v in healthy.items()},
        }
        out.append(Samples(readings))
    return out


def time_decisions(samples: list[Samples]) -> tuple[float, State]:
    state, now = initial_state(POLICY), 1_700_000_000.0
    start = time.perf_counter()
    for s in samples:
        state = decide(POLICY, s, state, now).state
        now += 5.0
    return time.perf_counter() - start, state


def time_round_trips(state: State, n: int) -> tuple[float, float]:
    start = time.perf_counter()
    for _ in range(n):
        state_from_status(state_to_status(state))
    plain = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(n):
        state_from_status(json.loads(json.dumps(state_to_status(state))))
    return plain, time.perf_counter() - start


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, as one evaluation loop has
    samples = stream(n)
    runs, state = [], initial_state(POLICY)
    for _ in range(RUNS):
        elapsed, state = time_decisions(samples)
        runs.append(elapsed)
    rt = [time_round_trips(state, n // 4) for _ in range(RUNS)]
    per_decision = statistics.median(runs) / n
    print(f"machine: {platform.platform()}, Python {platform.python_version()}, "
          f"CPU {cpu_model()}, {os.cpu_count()} cores (pinned to one)")
    print(f"decide: 3 tiers x 4 triggers, {n} decisions x {RUNS} runs, median "
          f"{1 / per_decision:,.0f} decisions/s ({per_decision * 1e6:.1f} us each)")
    print(f"status round trip (creep buckets: {len(state.creep_buckets)}): median "
          f"{statistics.median(p for p, _ in rt) / (n // 4) * 1e6:.1f} us in memory, "
          f"{statistics.median(j for _, j in rt) / (n // 4) * 1e6:.1f} us through JSON; "
          f"status is {len(json.dumps(state_to_status(state)))} bytes of JSON")


if __name__ == "__main__":
    main()
