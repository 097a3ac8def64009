"""One Prometheus URL's share of the reader: its connections, its own workers, its query plans, the results
that bridge a failed read, and, for a URL that is not the operator's own, its back-off.

Lanes never share workers, so a server that holds its requests until their deadline delays only the
policies that read from it. A policy's own Prometheus also gets a shorter time budget than the operator's
(its whole read, not each request), and a lane whose answers ran out of time or bytes is not asked again
for a while (5 s, doubling up to 5 minutes): its policies read MISSING meanwhile, without anyone waiting.
"""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Hashable, Sequence
from urllib.parse import urlencode

from understudy.signals.answer import instant_result
from understudy.signals.confine import Confinement
from understudy.signals.endpoints import PrometheusURL
from understudy.signals.promql import QueryPlan, QueryResult, Target, plan_queries
from understudy.signals.transport import Endpoint

PLANS_KEPT = 4
"""Query plans cached per Prometheus: policies of different intervals fall due in a few recurring mixes."""
BACKOFF_FIRST = 5.0
BACKOFF_MAX = 300.0


class Lane:
    """Everything the reader keeps for one Prometheus base URL."""

    def __init__(self, url: PrometheusURL, endpoint: Endpoint, workers: int, timeout: float, own: bool) -> None:
        self.url = url
        self.endpoint = endpoint
        self.workers = workers
        self.timeout = timeout
        self.own = own
        """The operator's own Prometheus: the budget grows with the batch, and it is never backed off."""
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="understudy-promql")
        self.plans: list[tuple[tuple[Target, ...], QueryPlan]] = []
        self.held: dict[str, tuple[Sequence[Any], int]] = {}
        """query -> (last successful result, failed reads since): only the cached plans' queries."""
        self.users: set[Hashable] = set()
        """Keys of the policies last read from this URL (not kept for the operator's own lane)."""
        self.costly_failures = 0
        self.resume_at = 0.0

    def plan(self, batch: list[Target], max_matcher_chars: int, confinement: Confinement) -> QueryPlan:
        """The batch's plan, reused while the same Target objects come due together.

        The operator builds a Target once per spec generation and policies of one interval fall due
        together, so cycles keep passing the very same batches (one per mix of intervals due at once):
        an identity check is far cheaper than planning thousands of policies again.
        """
        for i, (targets, plan) in enumerate(self.plans):
            if len(targets) == len(batch) and all(a is b for a, b in zip(targets, batch)):
                self.plans.insert(0, self.plans.pop(i))
                return plan
        plan = plan_queries(batch, max_matcher_chars, confinement)
        self.plans.insert(0, (tuple(batch), plan))
        del self.plans[PLANS_KEPT:]
        return plan

    def bridge(self, results: dict[str, QueryResult], grace_reads: int) -> None:
        """Bridge failed queries with their last success; remembering only the queries of the plans still
        cached bounds memory."""
        planned = {q for _, plan in self.plans for q in plan.queries}
        kept = {q: entry for q, entry in self.held.items() if q in planned and q not in results}
        for q, result in results.items():
            if result is not None:
                kept[q] = (result, 0)
            elif q in self.held and self.held[q][1] < grace_reads:
                results[q] = self.held[q][0]
                kept[q] = (self.held[q][0], self.held[q][1] + 1)
        self.held = kept

    def deadline(self, started: float, queries: int) -> float:
        """When this read of the lane ends: the operator's own Prometheus gets a request timeout per wave of
        its workers (plus one), any other URL one timeout for everything."""
        if not self.own:
            return started + self.timeout
        return started + self.timeout * (math.ceil(queries / self.workers) + 1)

    def backing_off(self, now: float) -> bool:
        return not self.own and now < self.resume_at

    def settle(self, costly: bool, now: float) -> bool:
        """Record how the read went; True when the lane starts backing off now."""
        if self.own:
            return False
        if not costly:
            self.costly_failures = 0
            return False
        self.costly_failures += 1
        self.resume_at = now + min(BACKOFF_FIRST * 2 ** (self.costly_failures - 1), BACKOFF_MAX)
        return True

    def query(self, promql: str, at: float | None, deadline: float, max_bytes: int) -> Sequence[Any]:
        """One instant query; raises QueryFailed or AnswerError (a malformed answer)."""
        params = {"query": promql, "timeout": f"{self.timeout:g}"}  # plain seconds: Prometheus rejects "0.5s"
        if at is not None:
            params["time"] = f"{at:.3f}"
        return instant_result(self.endpoint.get("/api/v1/query?" + urlencode(params), deadline, max_bytes))

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.endpoint.close()
