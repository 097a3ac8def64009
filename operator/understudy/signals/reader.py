"""The I/O shell around `promql`: sends one cycle's batched queries and maps the answers to Samples.

prometheus-api-client is synchronous and has no timeout of its own, so every query carries three bounds:
the HTTP client timeout (connect and each read), Prometheus's own `timeout` parameter (the server stops
evaluating), and a deadline on the whole batch (a server trickling bytes cannot hold a cycle). Retries are
off, but one batched query serves every policy, so a single slow answer would flap thousands of them:
a query that fails right after succeeding reuses its last result for up to `grace_reads` consecutive
reads (one by default) before it reads MISSING. The failure still counts in `ReaderStats` and is logged.
Reads at an explicit instant (`at`, backtests) get no grace: a stale answer would be wrong history.
`read` blocks; the operator calls it from a worker thread, never from the event loop.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Hashable, Iterable, Sequence

from prometheus_api_client import PrometheusConnect
from urllib3.util.retry import Retry

from understudy.engine.model import Samples
from understudy.signals.confine import Confinement
from understudy.signals.promql import (
    DEFAULT_MAX_MATCHER_CHARS,
    QueryPlan,
    QueryResult,
    ReadyReplicas,
    Target,
    map_loads,
    map_results,
    plan_queries,
)

_LOG = logging.getLogger(__name__)

PLANS_KEPT = 4
"""Query plans cached per Prometheus: policies of different intervals fall due in a few recurring mixes."""


@dataclass(frozen=True)
class ReaderStats:
    """Counters since the reader was made, for the operator's own metrics and the benchmarks."""

    cycles: int = 0
    queries_sent: int = 0
    query_errors: int = 0
    last_cycle_queries: int = 0
    last_cycle_errors: int = 0
    last_cycle_seconds: float = 0.0


@dataclass(frozen=True)
class Readout:
    samples: dict[Hashable, Samples]
    loads: dict[Hashable, float | None]
    """Requests per second per target over its window, summed across its tiers (None: unknown)."""


class SignalReader:
    """Reads the signals of many policies per cycle with a constant number of queries per Prometheus."""

    def __init__(
        self,
        url: str,
        timeout: float = 2.0,
        max_workers: int = 4,
        max_matcher_chars: int = DEFAULT_MAX_MATCHER_CHARS,
        grace_reads: int = 1,
        confinement: Confinement = Confinement(),
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if isinstance(grace_reads, bool) or not isinstance(grace_reads, int) or grace_reads < 0:
            raise ValueError("grace_reads must be a non-negative int")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.max_matcher_chars = max_matcher_chars
        self.max_workers = max_workers
        self.grace_reads = grace_reads
        self.confinement = confinement
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="understudy-promql")
        self._local = threading.local()
        self._clients: list[PrometheusConnect] = []
        self._lock = threading.Lock()
        self._stats = ReaderStats()
        self._failing: set[str] = set()
        self._plans: dict[str, list[tuple[tuple[Target, ...], QueryPlan]]] = {}
        # url -> query -> (last successful result, failed reads since): only the latest plan's queries.
        self._held: dict[str, dict[str, tuple[Sequence[Any], int]]] = {}

    @property
    def stats(self) -> ReaderStats:
        return self._stats

    def _client(self, url: str) -> PrometheusConnect:
        """One client per worker thread and URL: requests sessions are not documented as thread-safe."""
        clients: dict[str, PrometheusConnect] = getattr(self._local, "clients", None) or {}
        self._local.clients = clients
        if url not in clients:
            clients[url] = PrometheusConnect(url=url, retry=Retry(total=0), timeout=self.timeout)
            with self._lock:
                self._clients.append(clients[url])
        return clients[url]

    def _query(self, url: str, promql: str, at: float | None) -> QueryResult:
        params = {"timeout": f"{self.timeout:g}"}  # plain seconds: Prometheus rejects "0.5s"
        if at is not None:
            params["time"] = f"{at:.3f}"
        try:
            result: list[Any] = self._client(url).custom_query(promql, params=params, timeout=self.timeout)
        except Exception as exc:  # unreachable, timeout, HTTP or PromQL error: all read as MISSING
            # One warning per outage of a Prometheus, not one per query and cycle.
            with self._lock:
                first = url not in self._failing
                self._failing.add(url)
            _LOG.log(logging.WARNING if first else logging.DEBUG, "Prometheus query failed at %s: %s",
                     url, str(exc)[:300])
            return None
        with self._lock:
            if url in self._failing:
                self._failing.discard(url)
                _LOG.warning("Prometheus at %s answers again", url)
        return result

    def _plan(self, url: str, batch: list[Target]) -> QueryPlan:
        """The batch's plan, reused while the same Target objects come due together.

        The operator builds a Target once per spec generation and policies of one interval fall due
        together, so cycles keep passing the very same batches (one per mix of intervals due at once):
        an identity check is far cheaper than planning thousands of policies again.
        """
        cached = self._plans.setdefault(url, [])
        for i, (targets, plan) in enumerate(cached):
            if len(targets) == len(batch) and all(a is b for a, b in zip(targets, batch)):
                cached.insert(0, cached.pop(i))
                return plan
        plan = plan_queries(batch, self.max_matcher_chars, self.confinement)
        cached.insert(0, (tuple(batch), plan))
        del cached[PLANS_KEPT:]
        return plan

    def _bridge(self, url: str, results: dict[str, QueryResult]) -> None:
        """Bridge failed queries with their last success; remembering only the queries of the plans still
        cached for this Prometheus bounds memory."""
        held = self._held.get(url, {})
        planned = {q for _, plan in self._plans.get(url, ()) for q in plan.queries}
        kept = {q: entry for q, entry in held.items() if q in planned and q not in results}
        for q, result in results.items():
            if result is not None:
                kept[q] = (result, 0)
            elif q in held and held[q][1] < self.grace_reads:
                results[q] = held[q][0]
                kept[q] = (held[q][0], held[q][1] + 1)
        self._held[url] = kept

    def read(
        self, targets: Iterable[Target], ready: ReadyReplicas, at: float | None = None
    ) -> dict[Hashable, Samples]:
        """Readings of every target; see `read_all`."""
        return self.read_all(targets, ready, at).samples

    def read_all(self, targets: Iterable[Target], ready: ReadyReplicas, at: float | None = None) -> Readout:
        """Readings and loads of every target; never raises for Prometheus trouble, which reads as MISSING.

        Target keys must be unique across the call. `ready` should hold every tier's Deployment (see
        `map_results`). `at` evaluates every query at one instant (Unix seconds), e.g. for a backtest; None
        means now, and only such reads bridge a failed query (see the module docstring). A query still
        running at the batch deadline (a server trickling bytes defeats the per-read client timeout) keeps
        its worker until the connection ends; later cycles may queue behind it and read MISSING, as a
        misbehaving Prometheus deserves.
        """
        started = time.monotonic()
        by_url: dict[str, list[Target]] = {}
        for target in targets:
            by_url.setdefault((target.prometheus_url or self.url).rstrip("/"), []).append(target)

        plans = {url: self._plan(url, batch) for url, batch in by_url.items()}
        futures: dict[tuple[str, str], Future[QueryResult]] = {
            (url, q): self._pool.submit(self._query, url, q, at)
            for url, plan in plans.items()
            for q in plan.queries
        }
        # Each query has its own client timeout; this deadline bounds the batch should one trickle.
        waves = math.ceil(len(futures) / self.max_workers)
        wait(futures.values(), timeout=self.timeout * (waves + 1))
        results: dict[str, dict[str, QueryResult]] = {url: {} for url in plans}
        errors = 0
        for (url, q), future in futures.items():
            if not future.done():
                future.cancel()  # still queued behind a stuck query: not worth sending any more
            result = future.result() if future.done() and not future.cancelled() else None
            errors += result is None
            results[url][q] = result
        if at is None:
            for url in plans:
                self._bridge(url, results[url])

        samples: dict[Hashable, Samples] = {}
        loads: dict[Hashable, float | None] = {}
        for url, plan in plans.items():
            samples.update(map_results(plan, results[url], ready))
            loads.update(map_loads(plan, results[url]))
        with self._lock:
            previous = self._stats
            self._stats = ReaderStats(
                cycles=previous.cycles + 1,
                queries_sent=previous.queries_sent + len(futures),
                query_errors=previous.query_errors + errors,
                last_cycle_queries=len(futures),
                last_cycle_errors=errors,
                last_cycle_seconds=time.monotonic() - started,
            )
        return Readout(samples, loads)

    def close(self) -> None:
        """Stop the worker threads and close every HTTP session."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            for client in self._clients:
                client.close()
            self._clients.clear()

    def __enter__(self) -> SignalReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
