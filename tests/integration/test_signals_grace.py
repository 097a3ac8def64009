"""One failed batched query is bridged by its previous answer before its policies read MISSING.

A real Prometheus scrapes a real model-server simulator under traffic and is stopped and started again
to fail every query; the grace must bridge exactly one read, never hide the failure from the stats and
logs, and never apply to reads at an explicit instant.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Iterator

import pytest

from e2e.harness.prometheus import PrometheusServer
from e2e.sim.model_server import ModelServer
from tests.integration.test_signals_prometheus import (
    ERRORS,
    NS,
    P99,
    READY_ALL,
    Load,
    _drive,
    all_ok,
    read_until,
    statuses,
    target,
)
from understudy.engine.model import MISSING, ReadingStatus, Samples
from understudy.signals.promql import Target
from understudy.signals.reader import PLANS_KEPT, SignalReader

WORKLOAD = "rec-small"
SOLO = target("solo", WORKLOAD, WORKLOAD, (P99, ERRORS))
FAILED = "Prometheus query failed at"


@pytest.fixture(scope="module")
def sim() -> Iterator[ModelServer]:
    """One simulator under steady traffic; stopped afterwards, also on failure."""
    stop = threading.Event()
    server = ModelServer(WORKLOAD, NS, "small")
    driver = threading.Thread(target=_drive, args=(server.start(), Load(threads=1, pause=0.02), stop), daemon=True)
    driver.start()
    try:
        yield server
    finally:
        stop.set()
        driver.join(timeout=10)
        server.stop()


@pytest.fixture
def prom(sim: ModelServer, private_prometheus: PrometheusServer) -> PrometheusServer:
    """A private Prometheus (free to stop) that has scraped the simulator and answers every query."""
    private_prometheus.add_target(sim.metrics_url)
    private_prometheus.wait_for_targets_up(timeout=30)
    with SignalReader(private_prometheus.url, timeout=1.0, grace_reads=0) as probe:
        read_until(probe, [SOLO], all_ok("solo"))
    return private_prometheus


def missing(samples: Samples) -> bool:
    return statuses(samples) == {ReadingStatus.MISSING}


def read_solo(reader: SignalReader, at: float | None = None, targets: list[Target] | None = None) -> Samples:
    return reader.read(targets or [SOLO], READY_ALL, at=at)["solo"]


def test_one_failed_read_is_bridged_and_the_second_reads_missing(
    prom: PrometheusServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="understudy.signals.reader")
    with SignalReader(prom.url, timeout=1.0) as reader:
        ok = read_solo(reader)
        assert statuses(ok) == {ReadingStatus.OK}
        queries, errors = reader.stats.last_cycle_queries, reader.stats.query_errors
        assert queries > 0 and reader.stats.last_cycle_errors == 0

        prom.stop()
        assert read_solo(reader) == ok  # the previous readings, not MISSING
        assert reader.stats.last_cycle_errors == queries  # the grace hides nothing from the stats
        assert reader.stats.query_errors == errors + queries
        assert sum(FAILED in r.getMessage() for r in caplog.records) == 1  # and nothing from the log

        second = read_solo(reader)
        assert missing(second), second
        assert reader.stats.query_errors == errors + 2 * queries
        assert sum(FAILED in r.getMessage() for r in caplog.records) == 1  # still one warning per outage

        prom.start()
        recovered = read_until(reader, [SOLO], all_ok("solo"), timeout=30)["solo"]
        prom.stop()
        assert read_solo(reader) == recovered  # a success gives the grace back
        assert missing(read_solo(reader))


def test_a_success_after_a_bridged_failure_restores_the_grace(prom: PrometheusServer) -> None:
    with SignalReader(prom.url, timeout=1.0) as reader:
        ok = read_solo(reader)
        assert statuses(ok) == {ReadingStatus.OK}
        prom.stop()
        assert read_solo(reader) == ok
        prom.start()
        recovered = read_until(reader, [SOLO], all_ok("solo"), timeout=30)["solo"]
        prom.stop()
        assert read_solo(reader) == recovered


def test_no_grace_when_disabled(prom: PrometheusServer) -> None:
    with SignalReader(prom.url, timeout=1.0, grace_reads=0) as reader:
        assert statuses(read_solo(reader)) == {ReadingStatus.OK}
        prom.stop()
        first = read_solo(reader)
        assert first.readings["primary"] == {"p99": MISSING, "errors": MISSING}
        assert reader.stats.last_cycle_errors == reader.stats.last_cycle_queries


def test_reads_at_an_instant_neither_use_nor_feed_the_grace(prom: PrometheusServer) -> None:
    with SignalReader(prom.url, timeout=1.0) as reader:
        assert statuses(read_solo(reader, at=time.time())) == {ReadingStatus.OK}
        prom.stop()
        assert missing(read_solo(reader))  # the successful read at an instant left nothing to bridge with

        prom.start()
        ok = read_until(reader, [SOLO], all_ok("solo"), timeout=30)["solo"]
        prom.stop()
        assert missing(read_solo(reader, at=time.time()))  # history must not be answered from the present
        assert read_solo(reader) == ok  # and that failure did not use up the grace of the live reads


def test_batches_taking_turns_keep_their_grace_until_their_plan_is_evicted(prom: PrometheusServer) -> None:
    # PLANS_KEPT batches with other queries each (another window) push SOLO's plan out of the cache.
    others = [dataclasses.replace(SOLO, window=20.0 + 10 * i) for i in range(PLANS_KEPT)]
    with SignalReader(prom.url, timeout=1.0) as reader:
        assert statuses(read_solo(reader)) == {ReadingStatus.OK}
        for other in others:
            assert statuses(read_solo(reader, targets=[other])) == {ReadingStatus.OK}
        prom.stop()
        assert statuses(read_solo(reader, targets=others[-2:-1])) == {ReadingStatus.OK}  # cached, not latest
        assert statuses(read_solo(reader, targets=others[-1:])) == {ReadingStatus.OK}
        assert missing(read_solo(reader))  # its plan was evicted by newer batches, and its results with it


@pytest.mark.parametrize("bad", [-1, 1.5, True, "1"])
def test_grace_reads_is_validated(bad: object) -> None:
    with pytest.raises(ValueError, match="grace_reads"):
        SignalReader("http://127.0.0.1:9", grace_reads=bad)  # type: ignore[arg-type]
