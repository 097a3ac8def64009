"""`understudy backtest` against a real Prometheus whose history the test writes itself.

The history is OpenMetrics text with timestamps, turned into TSDB blocks by promtool's backfill and served
by a Prometheus started on that data directory. It uses Istio's metric names, so the policies' default
signals apply, and kube-state-metrics' names for one namespace only, so both ways of knowing readiness
are exercised:

- namespace `ml`: the primary's latency spikes between two known times (no kube-state-metrics);
- namespace `shop`: the primary's ready replicas drop to a quarter between two known times.

Every answer below is derived from those times and the policy's rules (see `expected_ml`), not read
back from the code under test. Regenerate the docs picture with
`python -m tests.integration.test_backtest_prometheus docs/backtest.png`.
"""
from __future__ import annotations

import io
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.harness.prometheus import PrometheusServer, free_port
from understudy.backtest.render import when
from understudy.backtest.source import PrometheusHistory, step_times
from understudy.cli import backtest, build_parser
from understudy.controller.compile import compile_policy
from understudy.controller.store import PolicySnapshot
from understudy.signals.promql import Target
from understudy.signals.reader import SignalReader

T0 = 1_767_571_200  # 2026-01-05T00:00:00Z: fixed, so the history (and the docs picture) never changes
SCRAPE = 5  # seconds between two samples of the written history
HISTORY_END = T0 + 90 * 60
START, END, STEP = T0 + 5 * 60, T0 + 90 * 60, 5  # the backtest's range: every rate() window is full
SPIKE = (T0 + 30 * 60, T0 + 40 * 60)
"""Requests counted in samples at SPIKE[0] < t <= SPIKE[1] all take 500-1000 ms on the primary of `ml`."""
OUTAGE = (T0 + 50 * 60, T0 + 60 * 60)
"""kube-state-metrics reports 1 of 4 replicas ready for the primary of `shop` at OUTAGE[0] <= t < OUTAGE[1]."""
BUCKETS = ("50", "100", "250", "500", "1000", "+Inf")
FAST = {"50": 0.8, "100": 1.0, "250": 1.0, "500": 1.0, "1000": 1.0, "+Inf": 1.0}
"""Cumulative share of requests per bucket: 80% within 50 ms, the rest within 100 ms (p99 97.5 ms)."""
SLOW = {"50": 0.0, "100": 0.0, "250": 0.0, "500": 0.0, "1000": 1.0, "+Inf": 1.0}
"""Everything between 500 and 1000 ms (p99 995 ms)."""

POLICY_ML = f"""\
apiVersion: understudy.dev/v1alpha1
kind: FallbackPolicy
metadata: {{name: recommender, namespace: ml}}
spec:
  primary: {{deploymentName: rec-large, serviceName: rec-large}}
  fallbacks:
  - name: distilled
    deploymentName: rec-small
    serviceName: rec-small
    degradation: {{description: top-10 recall drops about 4 points, acceptedBy: ml-product@example.com}}
  routing: {{istio: {{virtualServiceName: recommender}}}}
  triggers:
  - {{name: p99-latency, latency: {{quantile: "0.99", above: 250ms}}}}
  - {{name: errors, errorRatio: {{above: "0.05"}}}}
  evaluation: {{interval: {STEP}s, window: 1m, tripAfter: 2, recoverAfter: 6, restoreSteps: [10, 50, 100],
               minDwell: 30s}}
  creep: {{maxFallbackRatio: "0.1", window: 1h, action: Alert}}
"""

POLICY_SHOP = """\
apiVersion: understudy.dev/v1alpha1
kind: FallbackPolicy
metadata: {name: ranker, namespace: shop}
spec:
  primary: {deploymentName: ranker-large, serviceName: ranker-large}
  fallbacks:
  - name: small
    deploymentName: ranker-small
    serviceName: ranker-small
    degradation: {description: coarser ranking, acceptedBy: ml-product@example.com}
  routing: {istio: {virtualServiceName: ranker}}
  triggers:
  - {name: errors, errorRatio: {above: "0.05"}}
  - {name: availability, readyReplicas: {belowRatio: "0.5"}}
  evaluation: {interval: 5s, window: 1m, tripAfter: 2, recoverAfter: 6, minDwell: 30s}
"""


@dataclass(frozen=True)
class Workload:
    namespace: str
    name: str
    per_scrape: int
    """Requests between two samples."""
    errors: int
    """Of which answered 5xx."""


WORKLOADS = (
    Workload("ml", "rec-large", 100, 1),
    Workload("ml", "rec-small", 25, 0),
    Workload("shop", "ranker-large", 60, 0),
    Workload("shop", "ranker-small", 30, 0),
)


def _slow(w: Workload, t: int) -> bool:
    return w.name == "rec-large" and SPIKE[0] < t <= SPIKE[1]


def _ready(deployment: str, t: int) -> tuple[int, int]:
    if deployment == "ranker-large":
        return (1 if OUTAGE[0] <= t < OUTAGE[1] else 4), 4
    return 2, 2


def openmetrics() -> str:
    """The whole history as OpenMetrics text: Istio counters and histograms, kube-state-metrics gauges."""
    stamps = range(T0, HISTORY_END + 1, SCRAPE)
    lines = ["# TYPE istio_requests counter"]
    for w in WORKLOADS:
        base = f'destination_workload="{w.name}",destination_workload_namespace="{w.namespace}"'
        for code, share in (("200", w.per_scrape - w.errors), ("503", w.errors)):
            if share:
                lines += [f'istio_requests_total{{{base},response_code="{code}"}} {share * i} {t}'
                          for i, t in enumerate(stamps)]
    lines.append("# TYPE istio_request_duration_milliseconds histogram")
    for w in WORKLOADS:
        base = f'destination_workload="{w.name}",destination_workload_namespace="{w.namespace}"'
        cumulative = dict.fromkeys(BUCKETS, 0)
        total_ms = 0.0
        for i, t in enumerate(stamps):
            if i:
                profile = SLOW if _slow(w, t) else FAST
                for le in BUCKETS:
                    cumulative[le] += round(w.per_scrape * profile[le])
                total_ms += w.per_scrape * (750.0 if _slow(w, t) else 45.0)
            for le in BUCKETS:
                lines.append(f'istio_request_duration_milliseconds_bucket{{{base},le="{le}"}} {cumulative[le]} {t}')
            lines.append(f"istio_request_duration_milliseconds_count{{{base}}} {cumulative['+Inf']} {t}")
            lines.append(f"istio_request_duration_milliseconds_sum{{{base}}} {total_ms} {t}")
    for metric, index in (("kube_deployment_status_replicas_ready", 0), ("kube_deployment_spec_replicas", 1)):
        lines.append(f"# TYPE {metric} gauge")
        for w in WORKLOADS:
            if w.namespace == "shop":
                lines += [f'{metric}{{namespace="shop",deployment="{w.name}"}} {_ready(w.name, t)[index]} {t}'
                          for t in stamps]
    return "\n".join(lines) + "\n# EOF\n"


def backfilled_prometheus(workdir: Path) -> PrometheusServer:
    """A started Prometheus serving the history above from blocks written by promtool."""
    workdir.mkdir(parents=True, exist_ok=True)
    source = workdir / "history.om"
    source.write_text(openmetrics())
    data = workdir / "data"
    data.mkdir(parents=True, exist_ok=True)
    subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", "--quiet", str(source), str(data)],
                   check=True, capture_output=True, timeout=120)
    server = PrometheusServer(workdir=workdir, retention="100y")
    server.start()
    return server


@pytest.fixture(scope="module")
def history_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    server = backfilled_prometheus(tmp_path_factory.mktemp("backtest-prometheus"))
    try:
        yield server
    finally:
        server.close()


def run_cli(policy: str, tmp: Path, *extra: str, start: float = START, end: float = END) -> tuple[int, str]:
    """`understudy backtest` over the range (RFC 3339 start, Unix end: both forms are exercised)."""
    manifest = tmp / "policy.yaml"
    manifest.write_text(policy)
    args = build_parser().parse_args(["backtest", "-f", str(manifest), "--start", when(start),
                                      "--end", str(end), "-q", *extra])
    out = io.StringIO()
    return backtest(args, out), out.getvalue()


def expected_ml() -> dict[str, float]:
    """Times of the `ml` answer, from the history and the policy's rules alone.

    A step at t reads rate()s over the samples at t-60..t (Prometheus 2.x; 3.x leaves out t-60, one step
    less, which the tests' one-step tolerance covers), so it sees a slow increment counted at k when
    t-55 <= k <= t, and any slow increment puts p99 in the 500-1000 ms bucket. Breaches therefore run from
    SPIKE[0]+5 to SPIKE[1]+55. tripAfter=2 falls back on the second breach; recoverAfter=6 clear steps
    later the primary recovers and the first restore step goes out at once; each further step waits
    minDwell.
    """
    first_breach, last_breach = SPIKE[0] + SCRAPE, SPIKE[1] + 55
    recovered = last_breach + 6 * STEP
    return {
        "breached": (last_breach - first_breach) // STEP + 1,
        "activated": first_breach + STEP,
        "recovered": recovered,
        "restored": recovered + 60,
        # the budget is 10% of the 1h window (360 s); off-primary time is credited step by step
        "creep_exceeded": first_breach + STEP + 360 + STEP,
    }


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def at(report: dict[str, Any], reason: str) -> list[float]:
    """When the replay recorded `reason`, in Unix seconds."""
    return [_ts(e["time"]) for e in report["timeline"] if e["reason"] == reason]


def test_latency_spike_is_one_fallback_and_one_restore(history_prometheus: PrometheusServer, tmp_path: Path) -> None:
    png = tmp_path / "backtest.png"
    status, output = run_cli(POLICY_ML, tmp_path, "--prometheus", history_prometheus.url, "--json",
                             "--plot", str(png))
    assert status == 0, output
    report = json.loads(output)
    expect = expected_ml()

    assert report["readiness"] == "assumed"
    assert report["range"]["evaluations"] == (END - START) // STEP + 1
    assert report["activations"] == 1 and report["episodes"] == 1
    assert report["transitions"] == 4
    assert report["transitionsByReason"] == {"FallbackActivated": 1, "RestoreStep": 2, "Restored": 1}
    ((tier, trigger, trips, breached),) = [tuple(t.values()) for t in report["triggers"]]
    assert (tier, trigger, trips) == ("primary", "p99-latency", 1)
    assert abs(breached - expect["breached"]) <= 1
    assert report["unavailableEvaluations"] == 0

    (activated,) = at(report, "FallbackActivated")
    (recovered,) = at(report, "TierRecovered")
    (restored,) = at(report, "Restored")
    assert abs(activated - expect["activated"]) <= STEP
    assert abs(recovered - expect["recovered"]) <= STEP
    assert at(report, "RestoreStep") == [recovered, recovered + 30]
    assert restored == recovered + 60
    distilled = next(t for t in report["tiers"] if t["tier"] == "distilled")
    assert abs(distilled["activeSeconds"] - (expect["restored"] - expect["activated"])) <= STEP
    # full fallback until the first restore step, then 90% and 50% for one minDwell each
    assert abs(distilled["trafficSeconds"] - (recovered - activated + 0.9 * 30 + 0.5 * 30)) <= STEP

    assert report["creep"]["exceeded"] is True
    assert abs(_ts(report["creep"]["exceededAt"][0]) - expect["creep_exceeded"]) <= STEP
    off = distilled["trafficSeconds"]
    assert report["creep"]["fallbackRatio"] == pytest.approx(off / (END - START), abs=1e-9)
    assert report["creep"]["peakWindowRatio"] == pytest.approx(off / 3600, abs=STEP / 3600)

    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_readiness_drop_from_kube_state_metrics(history_prometheus: PrometheusServer, tmp_path: Path) -> None:
    status, output = run_cli(POLICY_SHOP, tmp_path, "--prometheus", history_prometheus.url, "--json")
    assert status == 0, output
    report = json.loads(output)
    assert report["readiness"] == "kube-state-metrics"
    assert report["activations"] == 1
    assert report["triggers"] == [{"tier": "primary", "trigger": "availability", "trips": 1,
                                   "breachedEvaluations": (OUTAGE[1] - OUTAGE[0]) // STEP}]
    # ready 1/4 is read at the steps OUTAGE[0] <= t < OUTAGE[1]: trip on the second, recover 6 steps after
    assert at(report, "FallbackActivated") == [OUTAGE[0] + STEP]
    assert at(report, "TierRecovered") == [OUTAGE[1] + 5 * STEP]
    assert at(report, "Restored") == [OUTAGE[1] + 5 * STEP + 60]
    assert report["creep"]["exceeded"] is False


def test_table_names_the_outcome(history_prometheus: PrometheusServer, tmp_path: Path) -> None:
    status, output = run_cli(POLICY_ML, tmp_path, "--prometheus", history_prometheus.url)
    assert status == 0, output
    assert "Backtest of FallbackPolicy ml/recommender" in output
    assert "readiness   assumed full" in output
    lines = output.splitlines()
    assert any(line.split()[:3] == ["fallback", "activations", "1"] for line in lines)
    assert any(line.split()[:3] == ["primary", "p99-latency", "1"] for line in lines)
    assert any("FallbackActivated" in line and "p99-latency" in line for line in lines)


def test_steps_equal_the_operators_instant_reads(history_prometheus: PrometheusServer) -> None:
    """Each step rebuilt from range queries is exactly what the operator's reader gets at that instant."""
    document = yaml.safe_load(POLICY_ML)
    compiled = compile_policy(PolicySnapshot.of("ml", "recommender", "", 0, "", document["spec"], {}))
    target: Target = compiled.target
    chosen = [START, SPIKE[0], SPIKE[0] + 5, SPIKE[0] + 60, SPIKE[1] + 55, SPIKE[1] + 60, END]
    times = step_times(START, END, STEP)
    source = PrometheusHistory(history_prometheus.url, max_points=97)  # many chunks, none aligned to the spike
    try:
        history = source.read(target, times)
    finally:
        source.close()
    assert history.requests == (3 + 2) * -(-len(times) // 97)
    by_time = {s.at: s.samples for s in history.steps()}
    ready = {("ml", "rec-large"): (1, 1), ("ml", "rec-small"): (1, 1)}
    with SignalReader(history_prometheus.url, timeout=10) as reader:
        for moment in chosen:
            instant = reader.read([target], ready, at=moment)[target.key]
            assert by_time[moment] == instant, when(moment)
    assert by_time[SPIKE[0]].readings["primary"]["p99-latency"].value == pytest.approx(97.5)
    # one slow scrape interval in the window puts p99 in the slow bucket; a window full of them at 995 ms
    assert (by_time[SPIKE[0] + 5].readings["primary"]["p99-latency"].value or 0) > 500
    assert by_time[SPIKE[0] + 60].readings["primary"]["p99-latency"].value == pytest.approx(995.0)
    assert by_time[SPIKE[1] + 60].readings["primary"]["p99-latency"].value == pytest.approx(97.5)


def test_unreachable_prometheus_fails_with_status_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, output = run_cli(POLICY_ML, tmp_path, "--prometheus", f"http://127.0.0.1:{free_port()}",
                             "--timeout", "2")
    assert status == 1 and output == ""
    assert "range query failed" in capsys.readouterr().err


def write_docs_picture(path: str) -> None:
    """Render the `ml` scenario's plot (used for docs/backtest.png)."""
    with tempfile.TemporaryDirectory() as tmp:
        server = backfilled_prometheus(Path(tmp) / "prometheus")
        try:
            status, output = run_cli(POLICY_ML, Path(tmp), "--prometheus", server.url,
                                     "--plot", str(Path(path).resolve()),
                                     start=SPIKE[0] - 10 * 60, end=SPIKE[1] + 20 * 60)
        finally:
            server.close()
    print(output)
    if status:
        raise SystemExit(status)


if __name__ == "__main__":
    write_docs_picture(sys.argv[1] if len(sys.argv) > 1 else "docs/backtest.png")


def test_governance_reports_the_rollback_a_creeping_primary_would_get(history_prometheus: PrometheusServer,
                                                                      tmp_path: Path) -> None:
    policy = POLICY_ML.replace("action: Alert", "action: RollbackPrimary")
    status, output = run_cli(policy, tmp_path, "--prometheus", history_prometheus.url, "--json")
    assert status == 0, output
    report = json.loads(output)
    (rollback,) = report["governance"]["rollbacks"]
    assert rollback["revision"] == "1"
    assert abs(_ts(rollback["time"]) - expected_ml()["creep_exceeded"]) <= STEP
    assert at(report, "RolledBack") == [_ts(rollback["time"]) + STEP]  # its outcome, at the next evaluation
    assert any("revision 1 known-good when the range began" in note for note in report["notes"])


def test_governance_scales_a_short_fallback_from_recorded_replicas(history_prometheus: PrometheusServer,
                                                                   tmp_path: Path) -> None:
    """`shop` serves 12 + 6 = 18 requests/s; its fallback's 2 replicas at 5 each carry 10, so it is scaled
    to ceil(18 / 5) = 4 when the primary falls back, and back to 2 once traffic is restored."""
    policy = POLICY_SHOP.replace(
        "    degradation: {description: coarser ranking, acceptedBy: ml-product@example.com}\n",
        "    degradation: {description: coarser ranking, acceptedBy: ml-product@example.com}\n"
        "    capacity: {requestsPerReplica: \"5\", scaleOnActivate: true, maxReplicas: 20}\n")
    status, output = run_cli(policy, tmp_path, "--prometheus", history_prometheus.url, "--json")
    assert status == 0, output
    report = json.loads(output)
    fallback, restored = OUTAGE[0] + STEP, OUTAGE[1] + 5 * STEP + 60
    assert at(report, "CapacityInsufficient") == [fallback]
    assert report["governance"]["scaleUps"] == [{"time": when(fallback), "tier": "small", "replicas": 4}]
    assert report["governance"]["scaleBacks"] == [{"time": when(restored), "tier": "small", "replicas": 2}]
    assert at(report, "ScaledUp") == [fallback + STEP] and at(report, "ScaledDown") == [restored + STEP]
    assert any("scale-ups are assumed to succeed at once" in note for note in report["notes"])
