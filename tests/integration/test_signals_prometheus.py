"""The signal reader against a real Prometheus scraping real model-server simulators on loopback.

Traffic is real HTTP to the simulators; their Istio-named metrics are scraped every second, and the
reader's batched PromQL must tell a slow tier from a healthy one, count errors, refuse to judge too few
requests, and read an unreachable or silent Prometheus as MISSING without raising.
"""
from __future__ import annotations

import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import pytest

from e2e.harness.prometheus import PrometheusServer, free_port
from e2e.sim.model_server import ModelServer
from understudy.engine.model import (
    MISSING,
    Comparison,
    Policy,
    Reading,
    ReadingStatus,
    Samples,
    SignalKind,
    Tier,
    Trigger,
)
from understudy.signals.endpoints import EndpointPolicy, PolicyURLs
from understudy.signals.promql import MetricNames, Target, plan_queries
from understudy.signals.reader import PrometheusAccess, SignalReader

NS = "ml"
WINDOW = 10.0
P99 = Trigger("p99", SignalKind.LATENCY, Comparison.ABOVE, 250.0, quantile=0.99)
ERRORS = Trigger("errors", SignalKind.ERROR_RATIO, Comparison.ABOVE, 0.05)
READY = Trigger("availability", SignalKind.READY_REPLICAS, Comparison.BELOW, 0.5)
CONFIDENCE = Trigger(
    "confidence",
    SignalKind.QUERY,
    Comparison.BELOW,
    0.6,
    promql=(
        "histogram_quantile(0.5, sum by (le) (rate(model_prediction_confidence_bucket"
        '{workload="$deployment", namespace="$namespace"}[10s])))'
    ),
)
BUILTIN = (P99, ERRORS)


@dataclass(frozen=True)
class Load:
    """Closed-loop traffic to one simulator: `threads` clients, each pausing `pause` seconds between calls."""

    threads: int
    pause: float


# workload -> (faults, load): the slow primary, a healthy fallback, a flaky tier and a nearly idle one
WORKLOADS: dict[str, tuple[dict[str, float], Load]] = {
    "rec-large": ({"latency_ms": 400.0}, Load(threads=4, pause=0.0)),
    "rec-small": ({}, Load(threads=2, pause=0.02)),
    "rec-flaky": ({"error_ratio": 0.2}, Load(threads=2, pause=0.02)),
    "rec-quiet": ({}, Load(threads=1, pause=2.0)),
}
READY_ALL = {(NS, w): (2, 2) for w in WORKLOADS}


def policy(primary: str, fallback: str, triggers: tuple[Trigger, ...] = BUILTIN) -> Policy:
    return Policy(tiers=(Tier("primary", primary, primary), Tier("fallback", fallback, fallback)), triggers=triggers)


def target(key: str, primary: str, fallback: str, triggers: tuple[Trigger, ...] = BUILTIN, **kw: object) -> Target:
    return Target(key=key, namespace=NS, policy=policy(primary, fallback, triggers), window=WINDOW, **kw)  # type: ignore[arg-type]


def _drive(url: str, load: Load, stop: threading.Event) -> None:
    while not stop.is_set():
        req = urllib.request.Request(url + "/predict", data=b"{}", headers={"Content-Type": "application/json"})
        try:
            urllib.request.urlopen(req, timeout=5).close()
        except OSError:  # injected 5xx raise HTTPError, an OSError: that is the point
            pass
        stop.wait(load.pause)


@pytest.fixture(scope="module")
def sims(prometheus: PrometheusServer) -> Iterator[dict[str, ModelServer]]:
    """Every simulator running, scraped and under traffic; all of it stopped afterwards, also on failure."""
    stop = threading.Event()
    servers: dict[str, ModelServer] = {}
    threads: list[threading.Thread] = []
    try:
        for name, (faults, load) in WORKLOADS.items():
            server = ModelServer(name, NS, "small")
            servers[name] = server
            server.start()
            server.inject(**faults)
            prometheus.add_target(server.metrics_url)
            for i in range(load.threads):
                t = threading.Thread(target=_drive, args=(server.url, load, stop), name=f"load-{name}-{i}", daemon=True)
                t.start()
                threads.append(t)
        prometheus.wait_for_targets_up([s.metrics_url for s in servers.values()], timeout=30)
        yield servers
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
        for server in servers.values():
            prometheus.remove_target(server.metrics_url)
            server.stop()


@pytest.fixture(scope="module")
def reader(prometheus: PrometheusServer) -> Iterator[SignalReader]:
    with SignalReader(prometheus.url, timeout=5.0) as r:
        yield r


def read_until(
    reader: SignalReader,
    targets: list[Target],
    done: Callable[[dict[object, Samples]], bool],
    ready: Mapping[tuple[str, str], tuple[int, int]] = READY_ALL,
    timeout: float = 60.0,
) -> dict[object, Samples]:
    """Poll like the evaluation loop does, until `done` holds; fail with the last readings otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        samples = reader.read(targets, ready)
        if done(samples):
            return samples
        if time.monotonic() > deadline:
            pytest.fail(f"readings never settled: {samples!r}")
        time.sleep(1.0)


def statuses(samples: Samples) -> set[ReadingStatus]:
    return {r.status for tier in samples.readings.values() for r in tier.values()}


def all_ok(*keys: str) -> Callable[[dict[object, Samples]], bool]:
    return lambda samples: all(statuses(samples[k]) == {ReadingStatus.OK} for k in keys)


def test_latency_breach_shows_only_on_the_slow_workload(sims: dict[str, ModelServer], reader: SignalReader) -> None:
    samples = read_until(reader, [target("rec", "rec-large", "rec-small")], all_ok("rec"))
    primary, fallback = samples["rec"].readings["primary"], samples["rec"].readings["fallback"]
    assert primary["p99"].value is not None and P99.breached_by(primary["p99"].value)
    assert primary["p99"].value > 400.0  # the injected 400 ms, interpolated inside the (250, 500] bucket
    assert fallback["p99"].value is not None and not P99.breached_by(fallback["p99"].value)
    assert primary["errors"].value == 0.0 and fallback["errors"].value == 0.0  # real zeros, no 5xx series
    assert reader.stats.last_cycle_queries == 3
    assert reader.stats.last_cycle_errors == 0


def test_error_ratio(sims: dict[str, ModelServer], reader: SignalReader) -> None:
    samples = read_until(reader, [target("flaky", "rec-flaky", "rec-small", (ERRORS,))], all_ok("flaky"))
    flaky = samples["flaky"].readings["primary"]["errors"].value
    assert flaky is not None and 0.12 <= flaky <= 0.28  # exactly one in five fail; rate() extrapolates
    assert ERRORS.breached_by(flaky)
    assert samples["flaky"].readings["fallback"]["errors"].value == 0.0


def test_too_few_requests_read_insufficient(sims: dict[str, ModelServer], reader: SignalReader) -> None:
    quiet = target("quiet", "rec-quiet", "rec-small")

    def served_a_few(s: dict[object, Samples]) -> bool:
        primary = s["quiet"].readings["primary"].values()
        return statuses(s["quiet"]) == {ReadingStatus.OK, ReadingStatus.INSUFFICIENT} and all(
            r.requests for r in primary)

    samples = read_until(reader, [quiet], served_a_few)
    primary = samples["quiet"].readings["primary"]
    assert {r.status for r in primary.values()} == {ReadingStatus.INSUFFICIENT}
    # The few requests are counted (rec-quiet gets one about every 2 s: about 5 in the 10 s window), the
    # same count for both triggers, so a restore step can add them up over evaluations.
    counts = {r.requests for r in primary.values()}
    assert len(counts) == 1 and 0 < (counts.pop() or 0) < 20
    assert primary["p99"].value is not None and primary["p99"].value < 250  # the few requests' own p99
    assert statuses(Samples(readings={"f": samples["quiet"].readings["fallback"]})) == {ReadingStatus.OK}


def test_never_served_workload(sims: dict[str, ModelServer], reader: SignalReader) -> None:
    fresh = target("fresh", "rec-small", "rec-unused")
    ready = {**READY_ALL, (NS, "rec-unused"): (1, 1)}
    samples = read_until(reader, [fresh], lambda s: statuses(s["fresh"]) != {ReadingStatus.MISSING}, ready=ready)
    assert samples["fresh"].readings["fallback"] == {"p99": Reading.insufficient(0.0), "errors": Reading.insufficient(0.0)}
    gone = reader.read([fresh], READY_ALL)["fresh"].readings["fallback"]  # no Deployment either: unknown
    assert gone == {"p99": MISSING, "errors": MISSING}


def test_custom_query_and_ready_replicas(sims: dict[str, ModelServer], reader: SignalReader) -> None:
    # The simulator's confidence histogram carries the namespace in `namespace`: custom queries are held
    # to the policy's namespace label, so the policy names that label (spec.signals.namespaceLabel).
    custom = target("custom", "rec-small", "rec-flaky", (CONFIDENCE, READY),
                    metrics=MetricNames(namespace_label="namespace"))
    ready = {(NS, "rec-small"): (1, 4), (NS, "rec-flaky"): (0, 0)}
    samples = read_until(
        reader, [custom], lambda s: s["custom"].readings["primary"]["confidence"].status is ReadingStatus.OK, ready=ready
    )
    readings = samples["custom"].readings
    confidence = readings["primary"]["confidence"].value
    assert confidence is not None and 0.0 < confidence <= 1.0
    assert readings["primary"]["availability"].value == 0.25
    assert readings["fallback"]["availability"] == MISSING  # desired 0: no ratio to judge
    assert reader.stats.last_cycle_queries == 2  # one rendered query per deployment


def test_hundreds_of_policies_cost_the_same_three_queries(
    sims: dict[str, ModelServer], reader: SignalReader, prometheus: PrometheusServer
) -> None:
    """Batching changes the cost, never the answer: one policy alone, inside 300, or read unrestricted."""
    names = list(WORKLOADS)
    fleet = [target(f"p{i}", names[i % 4], names[(i + 1) % 4]) for i in range(300)]  # p0: rec-large -> rec-small
    one = [target("p0", "rec-large", "rec-small")]
    read_until(reader, one, all_ok("p0"))
    at = time.time()  # one instant for every read below, so the values must agree exactly
    alone = reader.read(one, READY_ALL, at=at)
    assert reader.stats.last_cycle_queries == 3
    batched = reader.read(fleet, READY_ALL, at=at)
    assert reader.stats.last_cycle_queries == 3
    assert len(batched) == 300
    with SignalReader(prometheus.url, timeout=5.0, max_matcher_chars=0) as unrestricted:
        mesh_wide = unrestricted.read(fleet, READY_ALL, at=at)
        assert unrestricted.stats.last_cycle_queries == 3
        assert all("destination_workload=~" not in q for q in plan_queries(fleet, max_matcher_chars=0).queries)
    assert batched["p0"] == alone["p0"] == mesh_wide["p0"]
    assert batched == mesh_wide
    slow = batched["p0"].readings["primary"]["p99"]
    assert slow.status is ReadingStatus.OK and P99.breached_by(slow.value or 0.0)


def test_prometheus_stopped_reads_missing_and_recovers(
    sims: dict[str, ModelServer], private_prometheus: PrometheusServer
) -> None:
    private_prometheus.add_target(sims["rec-small"].metrics_url)
    private_prometheus.wait_for_targets_up(timeout=30)
    policy_target = target("solo", "rec-small", "rec-small", (P99, ERRORS, READY))
    with SignalReader(private_prometheus.url, timeout=1.0, grace_reads=0) as solo:  # grace: test_signals_grace.py
        read_until(solo, [policy_target], all_ok("solo"))
        private_prometheus.stop()
        started = time.monotonic()
        samples = solo.read([policy_target], READY_ALL)
        assert time.monotonic() - started < 3.0
        for tier in samples["solo"].readings.values():
            assert tier["p99"] == MISSING and tier["errors"] == MISSING
            assert tier["availability"].status is ReadingStatus.OK  # from the Deployment, not Prometheus
        assert solo.stats.last_cycle_errors == solo.stats.last_cycle_queries == 3
        private_prometheus.start()
        read_until(solo, [policy_target], all_ok("solo"), timeout=30)


def test_query_timeout_is_honoured() -> None:
    """A loopback socket that accepts connections but never answers: every query must give up in time."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        targets = [target("a", "rec-large", "rec-small"), target("b", "rec-flaky", "rec-quiet", (P99,))]
        with SignalReader(url, timeout=0.3, max_workers=4) as slow:
            started = time.monotonic()
            samples = slow.read(targets, {})
            elapsed = time.monotonic() - started
    assert elapsed < 1.5, f"took {elapsed:.2f}s with a 0.3s timeout"
    assert all(statuses(s) == {ReadingStatus.MISSING} for s in samples.values())
    assert slow.stats.last_cycle_errors == slow.stats.last_cycle_queries == 3


def test_fractional_timeout_is_accepted_by_prometheus(sims: dict[str, ModelServer], prometheus: PrometheusServer) -> None:
    """The timeout is also sent to Prometheus, which must understand a sub-second one."""
    with SignalReader(prometheus.url, timeout=0.75) as quick:
        read_until(quick, [target("quick", "rec-large", "rec-small")], all_ok("quick"))
        assert quick.stats.last_cycle_errors == 0


def test_request_deadline_bounds_a_trickling_server() -> None:
    """A server that sends a byte every 0.1 s never trips a 0.3 s read timeout; each request's wall-clock
    deadline (the timeout, enforced while reading) must."""
    stop = threading.Event()
    listener = socket.create_server(("127.0.0.1", 0))

    def trickle() -> None:
        conns = []
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
                conns.append(conn)
            except TimeoutError:
                pass
            for conn in conns:
                try:
                    conn.sendall(b" ")
                except OSError:
                    pass
        for conn in conns:
            conn.close()

    server = threading.Thread(target=trickle, daemon=True)
    server.start()
    try:
        with SignalReader(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=0.3) as slow:
            started = time.monotonic()
            samples = slow.read([target("a", "rec-large", "rec-small")], {})
            elapsed = time.monotonic() - started
    finally:
        stop.set()
        server.join(timeout=5)
        listener.close()
    assert 0.25 < elapsed < 0.9, f"took {elapsed:.2f}s"  # the request's deadline (0.3 s), not a read timeout
    assert statuses(samples["a"]) == {ReadingStatus.MISSING}
    assert slow.stats.last_cycle_errors == 3


def test_reading_at_an_instant(sims: dict[str, ModelServer], reader: SignalReader) -> None:
    """`at` evaluates the whole batch at one past instant, as a backtest does; before any traffic: MISSING."""
    rec = [target("rec", "rec-large", "rec-small")]
    read_until(reader, rec, all_ok("rec"))
    now = time.time()
    assert statuses(reader.read(rec, READY_ALL, at=now)["rec"]) == {ReadingStatus.OK}
    assert statuses(reader.read(rec, READY_ALL, at=now - 3600)["rec"]) == {ReadingStatus.MISSING}


def test_per_policy_prometheus_is_its_own_batch(sims: dict[str, ModelServer], prometheus: PrometheusServer) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: connection refused
    targets = [target("here", "rec-large", "rec-small"), target("there", "rec-large", "rec-small", prometheus_url=dead)]
    access = PrometheusAccess(policy_urls=EndpointPolicy(PolicyURLs.ANY))
    with SignalReader(prometheus.url, timeout=5.0, access=access) as reader:
        samples = read_until(reader, targets, all_ok("here"))
        assert statuses(samples["there"]) == {ReadingStatus.MISSING}
        assert reader.stats.last_cycle_queries == 6
        assert reader.stats.last_cycle_errors == 3
        assert reader.stats.policy_queries_sent == reader.stats.policy_query_errors == 3 * reader.stats.cycles


def test_prometheus_error_answer_reads_missing(sims: dict[str, ModelServer], reader: SignalReader) -> None:
    """A query Prometheus rejects (an error answer) is MISSING for what it served, and the rest still reads.

    The query parses, so confinement sends it; Prometheus refuses its regular expression. (One that does not
    parse, or cannot be held to the namespace, is never sent: tests/integration/test_tenancy_promql.py.)"""
    broken = Trigger("broken", SignalKind.QUERY, Comparison.ABOVE, 1.0,
                     promql='label_replace(vector(1), "x", "$1", "y", "(")')
    samples = read_until(
        reader,
        [target("mixed", "rec-large", "rec-small", (P99, broken))],
        lambda s: s["mixed"].readings["primary"]["p99"].status is ReadingStatus.OK,
    )
    assert samples["mixed"].readings["primary"]["broken"] == MISSING
    assert reader.stats.last_cycle_errors == 1


def test_metrics_names_match_the_simulator(sims: dict[str, ModelServer]) -> None:
    """Guards the test's premise: the simulator exports the Istio names the default MetricNames expect."""
    with urllib.request.urlopen(sims["rec-small"].metrics_url, timeout=5) as resp:
        text = resp.read().decode()
    assert "istio_requests_total{" in text and "istio_request_duration_milliseconds_bucket{" in text
    assert sims["rec-large"].describe()["faults"]["latency_ms"] == 400.0
