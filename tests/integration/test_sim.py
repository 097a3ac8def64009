"""The simulators, Prometheus and the traffic generator, against each other and a real API server.

Everything here is a real process on loopback: Debian's Prometheus, model servers as
subprocesses (one per tier, like pods), and the control plane from ``e2e.harness``. These tests
check the ground the operator's own end-to-end tests stand on: that PromQL sees Istio-shaped
series, that injected faults show up in the queries the operator uses, and that traffic follows
the routing objects it rewrites.
"""

from __future__ import annotations

import secrets
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import pytest

from e2e.harness.prometheus import PrometheusServer, PrometheusUnavailable
from e2e.sim.model_server import ModelServer, ModelServerProcess, spawn_model_server
from e2e.sim.traffic import (
    HTTPRouteSource,
    ServiceSelectorSource,
    SmoothWeightedRoundRobin,
    StaticSource,
    TrafficGenerator,
    TrafficStats,
    VirtualServiceSource,
)

Tier = ModelServer | ModelServerProcess


class SpawnTiers(Protocol):
    def __call__(self, namespace: str, specs: Mapping[str, str], *, in_process: bool = False) -> dict[str, Tier]: ...

P99 = (
    "histogram_quantile(0.99, sum by (le, destination_workload) "
    "(rate(istio_request_duration_milliseconds_bucket{{destination_workload_namespace=\"{ns}\"}}[5s])))"
)
# A workload with no 5xx has no 5xx series; "or 0 * total" keeps it in the result as 0.
ERROR_RATIO = (
    "(sum by (destination_workload) "
    "(rate(istio_requests_total{{destination_workload_namespace=\"{ns}\",response_code=~\"5..\"}}[{w}]))"
    " or 0 * sum by (destination_workload) "
    "(rate(istio_requests_total{{destination_workload_namespace=\"{ns}\"}}[{w}])))"
    " / sum by (destination_workload) "
    "(rate(istio_requests_total{{destination_workload_namespace=\"{ns}\"}}[{w}]))"
)


def _sim_namespace() -> str:
    """A label value no other test uses, for tests that need no API server."""
    return f"sim-{secrets.token_hex(3)}"


def _by_workload(result: list[dict[str, Any]]) -> dict[str, float]:
    return {s["metric"].get("destination_workload", ""): float(s["value"][1]) for s in result}


def _start_in_process(name: str, namespace: str, kind: str) -> ModelServer:
    server = ModelServer(name, namespace, kind)
    server.start()
    return server


@pytest.fixture
def spawn_tiers(prometheus: PrometheusServer) -> Iterator[SpawnTiers]:
    """Start model servers, scrape them, and stop/unscrape them after the test (also on failure).

    By default each tier is its own process, as a pod would be, so latency is measured without
    sharing this process's GIL; ``in_process=True`` is cheaper where only routing matters.
    """
    started: list[Tier] = []
    scraped: list[str] = []

    def spawn(namespace: str, specs: Mapping[str, str], *, in_process: bool = False) -> dict[str, Tier]:
        start: Callable[[str, str, str], Tier] = _start_in_process if in_process else spawn_model_server
        with ThreadPoolExecutor(max_workers=len(specs)) as pool:
            futures = {name: pool.submit(start, name, namespace, kind) for name, kind in specs.items()}
        tiers: dict[str, Tier] = {}
        failures: list[BaseException] = []
        for name, future in futures.items():
            try:
                tiers[name] = future.result()
                started.append(tiers[name])
            except Exception as err:  # keep collecting, so every started server is stopped
                failures.append(err)
        if failures:
            raise failures[0]
        for tier in tiers.values():
            prometheus.add_target(tier.metrics_url, {"pod": f"{tier.workload}-0"})
            scraped.append(tier.metrics_url)
        prometheus.wait_for_targets_up([t.metrics_url for t in tiers.values()], timeout=30)
        return tiers

    try:
        yield spawn
    finally:
        for url in scraped:
            prometheus.remove_target(url)
        for tier in started:
            tier.stop()


def _urls(tiers: Mapping[str, Tier]) -> dict[str, str]:
    return {name: tier.url for name, tier in tiers.items()}


# -- Prometheus and the simulators ---------------------------------------------------------------


def test_promql_returns_simulator_series_with_istio_labels(
    prometheus: PrometheusServer, spawn_tiers: SpawnTiers
) -> None:
    ns = _sim_namespace()
    tiers = spawn_tiers(ns, {"primary": "large", "fallback-1": "small", "fallback-2": "baseline"})

    stats = TrafficGenerator(
        StaticSource({"primary": 2, "fallback-1": 1, "fallback-2": 1}), _urls(tiers), rate=100, max_requests=200
    ).run()
    assert stats.errors() == 0, stats.statuses
    assert dict(stats.sent) == {"primary": 100, "fallback-1": 50, "fallback-2": 50}

    query = (
        "sum by (reporter, destination_workload, destination_workload_namespace, destination_service_name,"
        f' response_code) (istio_requests_total{{destination_workload_namespace="{ns}"}})'
    )
    result = prometheus.wait_for(query, lambda r: _by_workload(r) == {k: float(v) for k, v in stats.sent.items()})
    for sample in result:
        labels = sample["metric"]
        assert labels["destination_workload_namespace"] == ns
        assert labels["destination_service_name"] == labels["destination_workload"]
        assert labels["response_code"] == "200"
        assert labels["reporter"] == "destination"

    buckets = prometheus.query(
        f'count by (destination_workload) (istio_request_duration_milliseconds_bucket{{destination_workload_namespace="{ns}"}})'
    )
    assert {s["metric"]["destination_workload"] for s in buckets} == set(tiers)

    # The quality signal orders the tiers: the stump is barely confident in anything.
    confidence = prometheus.query(
        f'sum by (workload) (model_prediction_confidence_sum{{namespace="{ns}"}})'
        f' / sum by (workload) (model_prediction_confidence_count{{namespace="{ns}"}})'
    )
    mean = {s["metric"]["workload"]: float(s["value"][1]) for s in confidence}
    assert set(mean) == set(tiers)
    assert mean["fallback-2"] < 0.4 < min(mean["primary"], mean["fallback-1"])


def test_injected_latency_shows_in_p99(prometheus: PrometheusServer, spawn_tiers: SpawnTiers) -> None:
    ns = _sim_namespace()
    tiers = spawn_tiers(ns, {"primary": "small", "fallback-1": "baseline"})
    query = P99.format(ns=ns)
    # 1 s lands in Envoy's (1000, 2500] bucket, far above a healthy tier even on a busy machine.
    slow_ms = 1000.0
    with TrafficGenerator(
        StaticSource({"primary": 1, "fallback-1": 1}), _urls(tiers), rate=20, max_requests=None, duration=90,
        workers=32,
    ) as gen:
        healthy = prometheus.wait_for(query, lambda r: set(_by_workload(r)) == set(tiers), timeout=20)
        assert all(v < slow_ms for v in _by_workload(healthy).values()), healthy

        tiers["primary"].inject(latency_ms=slow_ms)
        t0 = time.monotonic()
        slow = prometheus.wait_for(query, lambda r: _by_workload(r).get("primary", 0) >= slow_ms, timeout=20)
        seen_after = time.monotonic() - t0
        assert _by_workload(slow)["fallback-1"] < slow_ms, slow

        tiers["primary"].reset()
        prometheus.wait_for(query, lambda r: 0 < _by_workload(r).get("primary", 1e9) < slow_ms, timeout=20)
    stats = gen.stats()
    assert stats.errors() == 0, stats.statuses
    print(f"p99 >= {slow_ms:.0f} ms seen {seen_after:.1f}s after injecting {slow_ms:.0f} ms; healthy p99 {healthy}")


def test_injected_errors_show_in_error_ratio(prometheus: PrometheusServer, spawn_tiers: SpawnTiers) -> None:
    ns = _sim_namespace()
    tiers = spawn_tiers(ns, {"primary": "small", "fallback-1": "baseline"})
    tiers["primary"].inject(error_ratio=0.25)
    stats = TrafficGenerator(
        StaticSource({"primary": 1, "fallback-1": 1}), _urls(tiers), rate=100, max_requests=400
    ).run()
    assert stats.statuses["primary"] == {200: 150, 500: 50}
    assert stats.errors("fallback-1") == 0

    # Lifetime ratio from the counters is exact; the operator's rate() form must agree.
    totals = (
        'sum by (destination_workload) (istio_requests_total{{destination_workload_namespace="{ns}"{extra}}})'
    )
    prometheus.wait_for(
        totals.format(ns=ns, extra=""), lambda r: _by_workload(r) == {"primary": 200.0, "fallback-1": 200.0}
    )
    errors = _by_workload(prometheus.query(totals.format(ns=ns, extra=',response_code=~"5.."')))
    assert errors == {"primary": 50.0}

    with TrafficGenerator(
        StaticSource({"primary": 1, "fallback-1": 1}), _urls(tiers), rate=40, max_requests=None, duration=60
    ):
        ratio = ERROR_RATIO.format(ns=ns, w="10s")
        got = prometheus.wait_for(ratio, lambda r: "fallback-1" in _by_workload(r), timeout=15)
        assert 0.15 <= _by_workload(got)["primary"] <= 0.35, got
        assert _by_workload(got)["fallback-1"] == 0.0

        tiers["primary"].inject(outage="503")
        prometheus.wait_for(
            ERROR_RATIO.format(ns=ns, w="3s"), lambda r: _by_workload(r).get("primary", 0) > 0.95, timeout=20
        )


def test_refused_outage_keeps_sidecar_metrics_up(
    prometheus: PrometheusServer, spawn_tiers: SpawnTiers
) -> None:
    ns = _sim_namespace()
    tiers = spawn_tiers(ns, {"primary": "small"})
    primary = tiers["primary"]
    primary.inject(outage="refuse")
    with pytest.raises(urllib.error.URLError) as refused:
        urllib.request.urlopen(urllib.request.Request(primary.url + "/predict", data=b"{}"), timeout=2)
    assert isinstance(refused.value.reason, ConnectionRefusedError)

    stats = TrafficGenerator(StaticSource({"primary": 1}), _urls(tiers), rate=100, max_requests=50).run()
    assert stats.statuses["primary"] == {0: 50}

    primary.reset()
    stats = TrafficGenerator(StaticSource({"primary": 1}), _urls(tiers), rate=100, max_requests=50).run()
    assert stats.statuses["primary"] == {200: 50}
    # The scrape never failed: the stats port stayed up through the outage.
    up = prometheus.query(f'min_over_time(up{{pod="primary-0",instance="{primary.metrics_url.split("/")[2]}"}}[1m])')
    assert [float(s["value"][1]) for s in up] == [1.0]


def test_prometheus_outage_and_restart_keep_port_and_data(private_prometheus: PrometheusServer) -> None:
    prom = private_prometheus
    ns = _sim_namespace()
    with ModelServer("primary", ns, "baseline") as sim:
        prom.add_target(sim.metrics_url)
        prom.wait_for_targets_up()
        instance = sim.metrics_url.split("/")[2]
        samples = f'count_over_time(up{{instance="{instance}"}}[10m])'
        before = prom.wait_for(samples, lambda r: bool(r) and float(r[0]["value"][1]) >= 3, timeout=20)
        url, pid = prom.url, prom.pid

        prom.stop()
        with pytest.raises(PrometheusUnavailable):
            prom.query("up")
        with socket.socket() as probe:  # nothing listens: an outage, not a slow server
            assert probe.connect_ex(("127.0.0.1", prom.port)) != 0

        assert prom.start() == url
        assert prom.pid != pid
        count_before = float(before[0]["value"][1])
        after = prom.wait_for(samples, lambda r: bool(r) and float(r[0]["value"][1]) > count_before + 2, timeout=30)
        assert float(after[0]["value"][1]) > count_before


# -- the generator's own choices --------------------------------------------------------------------


def test_smooth_wrr_is_exact_per_cycle_and_interleaved() -> None:
    picker = SmoothWeightedRoundRobin({"primary": 70, "fallback-1": 30, "off": 0})
    picks = [picker.pick() for _ in range(1000)]
    assert picks.count("primary") == 700 and picks.count("fallback-1") == 300
    assert "off" not in picks
    # Interleaved, not bursty: any 10 consecutive picks hold exactly 7 and 3.
    assert all(picks[i : i + 10].count("primary") == 7 for i in range(0, 990, 10))
    assert SmoothWeightedRoundRobin({"a": 0}).pick() is None


def test_unmapped_destination_keeps_its_share_as_failures() -> None:
    with ModelServer("primary", _sim_namespace(), "baseline") as sim:
        stats = TrafficGenerator(
            StaticSource({"primary.ns.svc.cluster.local": 1, "ghost": 1}), {"primary": sim.url},
            rate=200, max_requests=100,
        ).run()
        nothing = TrafficGenerator(StaticSource({}), {"primary": sim.url}, rate=200, max_requests=10).run()
    assert dict(stats.sent) == {"primary": 50, "ghost": 50}
    assert stats.statuses == {"primary": {200: 50}, "ghost": {0: 50}}
    assert dict(nothing.sent) == {"<unrouted>": 10}


# -- traffic that follows routing objects in a real API server -----------------------------------


def _run_until(gen: TrafficGenerator, n: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while gen.stats().total < n:
        assert time.monotonic() < deadline, f"generator stuck at {gen.stats().total} requests"
        time.sleep(0.02)


def _assert_switch(stats: TrafficStats, patched_at: float, new_weights: Mapping[str, int], to: str) -> float:
    """All requests after the generator saw the change went to ``to``; returns detection delay."""
    change = next(c for c in stats.route_changes if dict(c.weights) == dict(new_weights))
    assert change.at_monotonic >= patched_at
    after = stats.sent_between(change.at_monotonic)
    assert set(after) == {to}, after
    return change.at_monotonic - patched_at


def test_virtualservice_70_30_split_is_honoured(
    kube_api: Any, namespace: str, prometheus: PrometheusServer, spawn_tiers: SpawnTiers
) -> None:
    from kubernetes import client

    tiers = spawn_tiers(namespace, {"primary": "small", "fallback-1": "baseline"}, in_process=True)
    custom = client.CustomObjectsApi(kube_api)
    vs = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "model"},
        "spec": {
            "hosts": ["model"],
            "http": [
                {"name": "health", "route": [{"destination": {"host": "health-check"}}]},
                {
                    "name": "inference",
                    "route": [
                        {"destination": {"host": f"primary.{namespace}.svc.cluster.local"}, "weight": 70},
                        {"destination": {"host": "fallback-1"}, "weight": 30},
                    ],
                },
            ],
        },
    }
    custom.create_namespaced_custom_object("networking.istio.io", "v1", namespace, "virtualservices", vs)
    source = VirtualServiceSource(kube_api, namespace, "model", http_route="inference")

    stats = TrafficGenerator(source, _urls(tiers), rate=100, max_requests=1000).run()
    assert stats.total == 1000
    assert stats.errors() == 0, stats.statuses
    assert abs(stats.share("primary") - 0.70) <= 0.05, stats.sent
    assert abs(stats.share("fallback-1") - 0.30) <= 0.05, stats.sent
    # What Prometheus counted on the servers' side agrees with what was sent.
    prometheus.wait_for(
        f'sum by (destination_workload) (istio_requests_total{{destination_workload_namespace="{namespace}"}})',
        lambda r: _by_workload(r) == {k: float(v) for k, v in stats.sent.items()},
    )

    # A re-weight (what the operator does on fallback) is followed within a poll interval.
    with TrafficGenerator(source, _urls(tiers), rate=100, max_requests=600, duration=30) as gen:
        _run_until(gen, 100)
        patched_at = time.monotonic()
        custom.patch_namespaced_custom_object(
            "networking.istio.io", "v1", namespace, "virtualservices", "model",
            [{"op": "replace", "path": "/spec/http/1/route/0/weight", "value": 0},
             {"op": "replace", "path": "/spec/http/1/route/1/weight", "value": 100}],
            _content_type="application/json-patch+json",
        )
        stats = gen.wait(timeout=30)
    delay = _assert_switch(stats, patched_at, {"primary": 0, "fallback-1": 100}, "fallback-1")
    assert delay < 1.0
    print(f"VirtualService re-weight seen by the generator after {delay * 1000:.0f} ms")


def test_service_selector_switch_moves_all_traffic(
    kube_api: Any, namespace: str, spawn_tiers: SpawnTiers
) -> None:
    from kubernetes import client

    tiers = spawn_tiers(
        namespace, {"primary": "small", "fallback-1": "baseline", "fallback-2": "baseline"}, in_process=True
    )
    pod_labels = {name: {"app": "model", "tier": name} for name in tiers}
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_service(namespace, client.V1Service(
        metadata=client.V1ObjectMeta(name="model"),
        spec=client.V1ServiceSpec(
            selector={"app": "model", "tier": "primary"}, ports=[client.V1ServicePort(port=8080)]
        ),
    ))
    source = ServiceSelectorSource(kube_api, namespace, "model", pod_labels)

    with TrafficGenerator(source, _urls(tiers), rate=100, max_requests=800, duration=30) as gen:
        _run_until(gen, 200)
        patched_at = time.monotonic()
        core.patch_namespaced_service("model", namespace, {"spec": {"selector": {"tier": "fallback-1"}}})
        stats = gen.wait(timeout=30)
    assert stats.total == 800
    assert stats.errors() == 0, stats.statuses
    assert set(stats.sent_between(0, patched_at)) == {"primary"}
    delay = _assert_switch(stats, patched_at, {"fallback-1": 1}, "fallback-1")
    assert delay < 1.0
    assert "fallback-2" not in stats.sent
    print(f"Service selector switch seen after {delay * 1000:.0f} ms; sent {dict(stats.sent)}")


def test_httproute_weights_and_reweight_are_followed(
    kube_api: Any, namespace: str, spawn_tiers: SpawnTiers
) -> None:
    from kubernetes import client

    tiers = spawn_tiers(namespace, {"primary": "small", "fallback-1": "baseline"}, in_process=True)
    custom = client.CustomObjectsApi(kube_api)
    route = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "model"},
        "spec": {
            "rules": [
                {
                    "backendRefs": [
                        {"name": "primary", "port": 8080, "weight": 80},
                        {"name": "fallback-1", "port": 8080, "weight": 20},
                    ]
                }
            ]
        },
    }
    custom.create_namespaced_custom_object("gateway.networking.k8s.io", "v1", namespace, "httproutes", route)
    source = HTTPRouteSource(kube_api, namespace, "model")

    with TrafficGenerator(source, _urls(tiers), rate=100, max_requests=1000, duration=30) as gen:
        _run_until(gen, 500)
        patched_at = time.monotonic()
        custom.patch_namespaced_custom_object(
            "gateway.networking.k8s.io", "v1", namespace, "httproutes", "model",
            [{"op": "replace", "path": "/spec/rules/0/backendRefs/0/weight", "value": 0},
             {"op": "replace", "path": "/spec/rules/0/backendRefs/1/weight", "value": 1}],
            _content_type="application/json-patch+json",
        )
        stats = gen.wait(timeout=30)
    assert stats.errors() == 0, stats.statuses
    before = stats.sent_between(0, patched_at)
    assert abs(before["primary"] / sum(before.values()) - 0.80) <= 0.05, before
    delay = _assert_switch(stats, patched_at, {"primary": 0, "fallback-1": 1}, "fallback-1")
    assert delay < 1.0
