"""The I/O shell around `promql`: sends one cycle's batched queries and maps the answers to Samples.

Every query is bounded three ways: Prometheus's own `timeout` parameter (the server stops evaluating), a
wall-clock deadline enforced while the answer is read (`transport`: a server trickling bytes cannot hold a
worker past it), and a byte cap (64 KiB for a custom query, which must yield one value; 8 MiB for a batched
built-in). An answer that is not a well-formed vector or scalar fails its query. A failed query reads
MISSING for the policies that asked it and no one else; nothing a server sends raises out of `read_all`.

Each Prometheus URL is a `Lane` with its own workers, so a policy's own URL can never occupy the workers
of the operator's Prometheus, nor of another policy's (see `lane`). A policy's own URL is contacted only
when `PrometheusAccess.policy_urls` allows it; a refused one is never contacted, all its policy's triggers
read MISSING (the policy is misconfigured) and `Readout.errors` says why, for its Ready condition. Every
lane plans with the operator's `Confinement`: a custom query that cannot be held to its policy's namespace
is not sent, that trigger reads MISSING and `Readout.errors` says why (`QueryPlan.refused`).
Credentials go to the operator's own URL only. A lane is closed, with its connections, plans and bridged
results, as soon as no policy reads from its URL any more (a policy moved to another URL, or not read for
`idle_seconds`).

Retries are off, but one batched query serves every policy, so a single slow answer would flap thousands of
them: a query that fails right after succeeding reuses its last result for up to `grace_reads` consecutive
reads (one by default) before it reads MISSING. The failure still counts in `ReaderStats` and is logged.
Reads at an explicit instant (`at`, backtests) get no grace: a stale answer would be wrong history.
`read` blocks; the operator calls it from a worker thread, never from the event loop.

A policy's own Prometheus never holds up anyone else's read: `read_all` waits for the operator's
Prometheus, and for a policy URL's answers only as long as that takes or `POLICY_WAIT`, whichever is
longer. An answer not in by then stays in flight (one read per URL at a time), and the targets waiting on
it are listed in `Readout.deferred`; a later call collects the answer once it is complete or its deadline
has passed. Reads at an explicit instant wait for everything.
"""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from typing import Hashable, Iterable, Mapping

from understudy.engine.model import MISSING, Samples
from understudy.signals.answer import AnswerError
from understudy.signals.confine import QUERY_REFUSED, Confinement
from understudy.signals.endpoints import URL_NOT_ALLOWED, EndpointPolicy, PrometheusURL, parse_url
from understudy.signals.lane import PLANS_KEPT, Lane
from understudy.signals.promql import (
    DEFAULT_MAX_MATCHER_CHARS,
    QueryPlan,
    QueryResult,
    ReadyReplicas,
    Target,
    map_loads,
    map_results,
)
from understudy.signals.transport import Credentials, Endpoint, QueryFailed, Watchdog

__all__ = ["PLANS_KEPT", "PrometheusAccess", "ReaderStats", "Readout", "SignalError", "SignalReader"]

_LOG = logging.getLogger(__name__)

POLICY_WAIT = 0.25
"""Seconds a read waits for a policy's own Prometheus beyond the operator's own before deferring its targets."""


@dataclass(frozen=True)
class PrometheusAccess:
    """Whom the reader may ask, with which credentials, within which bounds (the operator's flags)."""

    policy_urls: EndpointPolicy = EndpointPolicy()
    """Which of the policies' own prometheusURLs may be contacted: none by default."""
    credentials: Credentials | None = None
    """Sent to the operator's own Prometheus only."""
    max_answer_bytes: int = 8 << 20
    """Cap of an answer to a batched built-in query (a vector of every due workload)."""
    max_custom_answer_bytes: int = 64 << 10
    """Cap of an answer to a custom query, which must be a single value."""
    policy_timeout: float = 1.0
    """Time for a whole read of a policy's own Prometheus."""
    policy_workers: int = 2
    """Concurrent requests to one policy's own Prometheus."""
    idle_seconds: float = 900.0
    """A policy not read for this long releases its own Prometheus's lane."""

    def __post_init__(self) -> None:
        if min(self.max_answer_bytes, self.max_custom_answer_bytes, self.policy_workers) < 1:
            raise ValueError("answer caps and policy workers must be at least 1")
        if self.policy_timeout <= 0 or self.idle_seconds <= 0:
            raise ValueError("policy_timeout and idle_seconds must be positive")


@dataclass(frozen=True)
class ReaderStats:
    """Counters since the reader was made, for the operator's own metrics and the benchmarks."""

    cycles: int = 0
    queries_sent: int = 0
    query_errors: int = 0
    policy_queries_sent: int = 0
    """Of queries_sent, those sent to policies' own Prometheus URLs."""
    policy_query_errors: int = 0
    """Of query_errors, those of policies' own Prometheus URLs."""
    last_cycle_queries: int = 0
    last_cycle_errors: int = 0
    last_cycle_seconds: float = 0.0


@dataclass(frozen=True)
class SignalError:
    """Why a policy's signals could not be read at all, for its Ready condition."""

    reason: str
    message: str


@dataclass(frozen=True)
class Readout:
    samples: dict[Hashable, Samples]
    loads: dict[Hashable, float | None]
    """Requests per second per target over its window, summed across its tiers (None: unknown)."""
    errors: Mapping[Hashable, SignalError] = field(default_factory=dict)
    """Per target key, why its signals (all, or one custom query's) were not read: reason
    PrometheusURLNotAllowed or CustomQueryRefused."""
    deferred: frozenset[Hashable] = frozenset()
    """Keys of targets whose own Prometheus has not answered yet: no readings this time; ask again soon."""


@dataclass
class _InFlight:
    """A read of a policy's own Prometheus that outlived the call that started it."""

    plan: QueryPlan
    futures: dict[str, Future[tuple[QueryResult, bool]]]
    deadline: float
    keys: frozenset[Hashable]


class SignalReader:
    """Reads the signals of many policies per cycle with a constant number of queries per Prometheus."""

    def __init__(
        self,
        url: str,
        timeout: float = 2.0,
        max_workers: int = 4,
        max_matcher_chars: int = DEFAULT_MAX_MATCHER_CHARS,
        grace_reads: int = 1,
        access: PrometheusAccess = PrometheusAccess(),
        confinement: Confinement = Confinement(),
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if isinstance(grace_reads, bool) or not isinstance(grace_reads, int) or grace_reads < 0:
            raise ValueError("grace_reads must be a non-negative int")
        self.default = parse_url(url)
        self.url = str(self.default)
        self.timeout = timeout
        self.max_matcher_chars = max_matcher_chars
        self.max_workers = max_workers
        self.grace_reads = grace_reads
        self.access = access
        self.confinement = confinement
        self._watchdog = Watchdog()
        self._lanes: dict[PrometheusURL, Lane] = {
            self.default: Lane(self.default, Endpoint(self.default, self._watchdog, access.credentials),
                               max_workers, timeout, own=True)}
        self._readers: dict[Hashable, tuple[PrometheusURL, float]] = {}
        """Key of a policy read from its own URL -> (that URL, when it was last read)."""
        self._swept = time.monotonic()
        self._lock = threading.Lock()
        self._stats = ReaderStats()
        self._failing: set[PrometheusURL] = set()
        self._inflight: dict[PrometheusURL, _InFlight] = {}

    @property
    def stats(self) -> ReaderStats:
        return self._stats

    @property
    def policy_lanes(self) -> int:
        """Policies' own Prometheus URLs with a lane open (connections, workers, plans)."""
        return len(self._lanes) - 1

    def _plan(self, url: PrometheusURL, batch: list[Target]) -> QueryPlan:
        return self._lane(url).plan(batch, self.max_matcher_chars, self.confinement)

    def _lane(self, url: PrometheusURL) -> Lane:
        lane = self._lanes.get(url)
        if lane is None:
            lane = Lane(url, Endpoint(url, self._watchdog), self.access.policy_workers, self.access.policy_timeout,
                        own=False)
            self._lanes[url] = lane
        return lane

    def _route(self, target: Target) -> PrometheusURL | SignalError:
        """The URL to read a target from, or why its own URL is refused."""
        if not target.prometheus_url:
            return self.default
        try:
            if parse_url(target.prometheus_url) == self.default:
                return self.default
        except ValueError:
            pass
        verdict = self.access.policy_urls.check(target.prometheus_url)
        return verdict if isinstance(verdict, PrometheusURL) else SignalError(URL_NOT_ALLOWED, verdict)

    def _claim(self, key: Hashable, url: PrometheusURL | None, now: float) -> None:
        """Note which policy URL a key reads from now (None: the operator's own, or none at all)."""
        previous = self._readers.get(key)
        if previous is not None and previous[0] != url:
            self._release(key)
        if url is not None:
            self._readers[key] = (url, now)
            self._lane(url).users.add(key)

    def _release(self, key: Hashable) -> None:
        url, _ = self._readers.pop(key)
        lane = self._lanes.get(url)
        if lane is not None:
            lane.users.discard(key)
            if not lane.users:
                del self._lanes[url]
                self._failing.discard(url)
                self._inflight.pop(url, None)
                lane.close()

    def _sweep(self, now: float) -> None:
        """Release the URLs of policies not read for `idle_seconds` (deleted ones, mostly), at most once a minute."""
        if now - self._swept < min(60.0, self.access.idle_seconds):
            return
        self._swept = now
        for key in [k for k, (_, seen) in self._readers.items() if now - seen > self.access.idle_seconds]:
            self._release(key)

    def _query(self, lane: Lane, promql: str, at: float | None, deadline: float,
               max_bytes: int) -> tuple[QueryResult, bool]:
        """(result, costly): the result is None when the query failed, `costly` when it ran out of time or bytes."""
        try:
            result = lane.query(promql, at, min(deadline, time.monotonic() + lane.timeout), max_bytes)
        except (QueryFailed, AnswerError) as failure:
            # One warning per outage of a Prometheus, not one per query and cycle; never a body or credential.
            with self._lock:
                first = lane.url not in self._failing
                self._failing.add(lane.url)
            _LOG.log(logging.WARNING if first else logging.DEBUG, "Prometheus query failed at %s: %s",
                     lane.url, failure)
            return None, isinstance(failure, QueryFailed) and failure.costly
        with self._lock:
            if lane.url in self._failing:
                self._failing.discard(lane.url)
                _LOG.warning("Prometheus at %s answers again", lane.url)
        return result, False

    def read(
        self, targets: Iterable[Target], ready: ReadyReplicas, at: float | None = None
    ) -> dict[Hashable, Samples]:
        """Readings of every target; see `read_all`."""
        return self.read_all(targets, ready, at).samples

    def read_all(self, targets: Iterable[Target], ready: ReadyReplicas, at: float | None = None) -> Readout:
        """Readings and loads of every target; never raises for Prometheus trouble, which reads as MISSING.

        Target keys must be unique across the call. `ready` should hold every tier's Deployment (see
        `map_results`). `at` evaluates every query at one instant (Unix seconds), e.g. for a backtest; None
        means now, and only such reads bridge a failed query (see the module docstring). Every lane's read
        ends at its deadline (`Lane.deadline`), so the call returns by the latest of them.
        """
        started = time.monotonic()
        batches: dict[PrometheusURL, list[Target]] = {}
        refused: list[Target] = []
        errors: dict[Hashable, SignalError] = {}
        for target in targets:
            route = self._route(target)
            if isinstance(route, SignalError):
                errors[target.key] = route
                refused.append(target)
                self._claim(target.key, None, started)
            else:
                batches.setdefault(route, []).append(target)
                self._claim(target.key, None if route == self.default else route, started)
        self._sweep(started)

        plans: dict[PrometheusURL, QueryPlan] = {}
        deferred: set[Hashable] = set()
        futures: dict[tuple[PrometheusURL, str], Future[tuple[QueryResult, bool]]] = {}
        deadlines: dict[PrometheusURL, float] = {}
        started_now: set[PrometheusURL] = set()
        for url, batch in batches.items():
            flight = self._inflight.get(url)
            if flight is not None:  # an earlier call's read: its targets are answered by it, the rest wait
                plans[url], deadlines[url] = flight.plan, flight.deadline
                errors.update((key, SignalError(QUERY_REFUSED, message)) for key, message in flight.plan.refused.items())
                futures.update(((url, q), f) for q, f in flight.futures.items())
                deferred.update(t.key for t in batch if t.key not in flight.keys)
                continue
            plan = plans[url] = self._plan(url, batch)
            errors.update((key, SignalError(QUERY_REFUSED, message)) for key, message in plan.refused.items())
            lane = self._lanes[url]
            if lane.backing_off(started):
                continue
            deadlines[url] = lane.deadline(started, len(plan.queries))
            started_now.add(url)
            for q in plan.queries:
                cap = self.access.max_custom_answer_bytes if q in plan.custom else self.access.max_answer_bytes
                futures[(url, q)] = lane.pool.submit(self._query, lane, q, at, deadlines[url], cap)
        # The watchdog ends every request by its deadline; the margin covers the thread's hand-over.
        own = [f for (url, _), f in futures.items() if url == self.default]
        wait(own, timeout=max(deadlines.get(self.default, started) - time.monotonic(), 0.0) + 0.25)
        if at is None:
            patience = max(time.monotonic(), started + POLICY_WAIT)
            fresh = [f for (url, _), f in futures.items() if url in started_now and url != self.default]
            wait(fresh, timeout=max(min(patience, max(deadlines.values(), default=started)) - time.monotonic(), 0))
        else:
            wait(futures.values(), timeout=max(max(deadlines.values(), default=started) - time.monotonic(), 0) + 0.25)
        now = time.monotonic()
        for url in list(plans):
            if url == self.default or url not in deadlines:
                continue
            mine = [f for (u, _), f in futures.items() if u == url]
            if all(f.done() for f in mine) or now >= deadlines[url] + 0.25:
                self._inflight.pop(url, None)
                continue
            plan = plans.pop(url)
            keys = frozenset(t.key for t in batches[url]) if url in started_now else self._inflight[url].keys
            self._inflight[url] = _InFlight(plan, {q: futures.pop((url, q)) for q in plan.queries}, deadlines[url],
                                            keys)
            deferred.update(keys)

        results: dict[PrometheusURL, dict[str, QueryResult]] = {url: {} for url in plans}
        costly: set[PrometheusURL] = set()
        errors_by_lane: dict[PrometheusURL, int] = {}
        for (url, q), future in futures.items():
            result, expensive = (None, True) if not future.done() else future.result()
            future.cancel()
            results[url][q] = result
            errors_by_lane[url] = errors_by_lane.get(url, 0) + (result is None)
            if expensive:
                costly.add(url)
        for url in plans:
            lane = self._lanes[url]
            if not lane.backing_off(started) and lane.settle(url in costly, time.monotonic()):
                _LOG.warning("Prometheus at %s ran out of time or bytes; not asked again for %.0fs",
                             url, lane.resume_at - time.monotonic())
            if at is None:
                lane.bridge(results[url], self.grace_reads)

        samples: dict[Hashable, Samples] = {}
        loads: dict[Hashable, float | None] = {}
        for url, plan in plans.items():
            samples.update(map_results(plan, results[url], ready))
            loads.update(map_loads(plan, results[url]))
        for target in refused:  # nothing was asked: every trigger of every tier is MISSING, the load unknown
            samples[target.key] = Samples({tier.name: {t.name: MISSING for t in target.policy.triggers
                                                       if t.applies(tier.name)} for tier in target.policy.tiers})
            loads[target.key] = None
        self._count(futures, errors_by_lane, started)
        for key in deferred:
            samples.pop(key, None)
            loads.pop(key, None)
        return Readout(samples, loads, errors, frozenset(deferred))

    def _count(self, futures: Mapping[tuple[PrometheusURL, str], object], errors_by_lane: Mapping[PrometheusURL, int],
               started: float) -> None:
        sent = len(futures)
        policy_sent = sum(1 for url, _ in futures if url != self.default)
        failed = sum(errors_by_lane.values())
        policy_failed = failed - errors_by_lane.get(self.default, 0)
        with self._lock:
            previous = self._stats
            self._stats = ReaderStats(
                cycles=previous.cycles + 1,
                queries_sent=previous.queries_sent + sent,
                query_errors=previous.query_errors + failed,
                policy_queries_sent=previous.policy_queries_sent + policy_sent,
                policy_query_errors=previous.policy_query_errors + policy_failed,
                last_cycle_queries=sent,
                last_cycle_errors=failed,
                last_cycle_seconds=time.monotonic() - started,
            )

    def close(self) -> None:
        """Stop the worker threads and close every connection."""
        for lane in self._lanes.values():
            lane.close()
        self._watchdog.close()

    def __enter__(self) -> SignalReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
