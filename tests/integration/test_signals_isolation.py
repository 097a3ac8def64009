"""One policy's misbehaving Prometheus must not make other policies' readings late or MISSING.

The real Prometheus scrapes a real model-server simulator under traffic; fifty healthy policies read their
built-in and custom signals from it while, in the same `read_all`, one policy reads eight custom queries
(more than the operator's workers) from its own URL, which trickles a byte a second or never answers. The
call does not wait for that URL's deadline: the policy is deferred, and a later call collects its answer.
"""
from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Iterator

import pytest

from e2e.harness.hostile_prometheus import HostilePrometheus
from e2e.harness.prometheus import PrometheusServer
from e2e.sim.model_server import ModelServer
from tests.integration.test_signals_prometheus import ERRORS, NS, P99, Load, _drive, statuses
from understudy.engine.model import Comparison, Policy, ReadingStatus, SignalKind, Tier, Trigger
from understudy.signals.endpoints import EndpointPolicy, PolicyURLs
from understudy.signals.promql import Target
from understudy.signals.reader import POLICY_WAIT, PrometheusAccess, SignalReader

WORKLOAD = "iso-small"
POLICY_TIMEOUT = 3.0
# A custom query over series that carry the policy's namespace label, so confinement leaves it readable.
CONFIDENCE = Trigger("confidence", SignalKind.QUERY, Comparison.BELOW, 0.1,
                     promql='count(istio_requests_total{destination_workload="$deployment"}) * 0 + 1')
HEALTHY = [Target(key=f"healthy-{i}", namespace=NS, window=10.0,
                  policy=Policy(tiers=(Tier("primary", WORKLOAD, WORKLOAD),), triggers=(P99, ERRORS, CONFIDENCE)))
           for i in range(50)]
READY = {(NS, WORKLOAD): (1, 1)}


def hostile_target(url: str) -> Target:
    triggers = tuple(Trigger(f"q{i}", SignalKind.QUERY, Comparison.ABOVE, 0.5, promql=f"vector({i}) # $deployment")
                     for i in range(8))
    return Target(key="hostile", namespace="tenant", prometheus_url=url,
                  policy=Policy(tiers=(Tier("primary", "h", "h"),), triggers=triggers))


@pytest.fixture(scope="module")
def sim(prometheus: PrometheusServer) -> Iterator[ModelServer]:
    """One simulator under steady traffic, scraped by the session's Prometheus; all stopped afterwards."""
    stop = threading.Event()
    server = ModelServer(WORKLOAD, NS, "small")
    driver = threading.Thread(target=_drive, args=(server.start(), Load(threads=1, pause=0.02), stop), daemon=True)
    driver.start()
    try:
        prometheus.add_target(server.metrics_url)
        prometheus.wait_for_targets_up([server.metrics_url], timeout=30)
        yield server
    finally:
        stop.set()
        driver.join(timeout=10)
        prometheus.remove_target(server.metrics_url)
        server.stop()


def healthy_readings(reader: SignalReader, extra: list[Target]) -> tuple[float, dict[object, object]]:
    started = time.monotonic()
    readout = reader.read_all([*HEALTHY, *extra], READY)
    return time.monotonic() - started, {k: readout.samples[k] for k in (t.key for t in HEALTHY)}


@pytest.mark.parametrize("mode", ["trickle", "slow"], ids=["trickling", "black-holed"])
def test_a_hostile_policy_url_does_not_delay_or_blank_healthy_policies(
    sim: ModelServer, prometheus: PrometheusServer, mode: str
) -> None:
    access = PrometheusAccess(policy_urls=EndpointPolicy(PolicyURLs.ANY), policy_timeout=POLICY_TIMEOUT)
    with HostilePrometheus(mode, delay=3600.0) as hostile, \
            SignalReader(prometheus.url, timeout=2.0, access=access) as reader:
        deadline = time.monotonic() + 60
        while statuses(reader.read_all(HEALTHY[:1], READY).samples[HEALTHY[0].key]) != {ReadingStatus.OK}:
            assert time.monotonic() < deadline, "the simulator's signals never became readable"
            time.sleep(1.0)
        normal = statistics.median(healthy_readings(reader, [])[0] for _ in range(5))

        # First contact: the healthy policies are read in full, and nobody waits for the hostile lane's
        # deadline (3 s): its policy is deferred, its read stays in flight.
        started = time.monotonic()
        readout = reader.read_all([*HEALTHY, hostile_target(hostile.url)], READY)
        elapsed = time.monotonic() - started
        assert readout.deferred == {"hostile"} and "hostile" not in readout.samples
        assert all(statuses(readout.samples[t.key]) == {ReadingStatus.OK} for t in HEALTHY), readout.samples
        assert elapsed < normal + POLICY_WAIT + 0.5 < POLICY_TIMEOUT, f"{elapsed:.2f}s (normal {normal:.3f}s)"
        asked = len(hostile.requests)
        assert asked >= 2  # it was really asked, and held its requests

        # Until its deadline, later reads neither wait for it nor ask it again.
        readout = reader.read_all([*HEALTHY, hostile_target(hostile.url)], READY)
        assert readout.deferred == {"hostile"} and len(hostile.requests) == asked
        time.sleep(POLICY_TIMEOUT)
        # Past its deadline the read is collected: MISSING, and the lane backs off.
        readout = reader.read_all([*HEALTHY, hostile_target(hostile.url)], READY)
        assert readout.deferred == frozenset()
        assert statuses(readout.samples["hostile"]) == {ReadingStatus.MISSING}

        # From then on nobody waits for it, and it is not asked again.
        for _ in range(3):
            readout = reader.read_all([*HEALTHY, hostile_target(hostile.url)], READY)
            assert statuses(readout.samples["hostile"]) == {ReadingStatus.MISSING}
            elapsed, later = healthy_readings(reader, [hostile_target(hostile.url)])
            assert all(statuses(s) == {ReadingStatus.OK} for s in later.values()), later
            assert elapsed < 3 * normal + 0.2, f"{elapsed:.2f}s while the hostile lane backs off (normal {normal:.3f}s)"
        assert len(hostile.requests) == asked
