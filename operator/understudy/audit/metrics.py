"""The operator's own Prometheus metrics, in a registry of their own.

A private registry keeps the exposition free of client-library defaults that a test or a second
operator instance in the same process would otherwise share, and lets tests build a fresh set at will.
Per-policy series are tracked so that deleting a policy (or dropping a tier from it) removes its series
instead of leaving a stale `understudy_active_tier` at 1 forever.
"""
from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Final
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from understudy.audit.reasons import is_transition
from understudy.engine.model import AuditRecord
from understudy.signals.reader import ReaderStats
from understudy.version import PYTHON_VERSION, VERSION

CYCLE_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Seconds: one cycle for all policies should take well under the default 5 s evaluation interval."""
LATENESS_BUCKETS: Final = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
"""Seconds: a policy evaluated more than a second after its due time has lost a scrape's worth of reaction."""


class OperatorMetrics:
    """Every collector the operator exports, with helpers that keep per-policy series tidy."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.build_info = Gauge(
            "understudy_build_info", "Always 1; its labels name the running operator's version.",
            ["version", "python_version"], registry=r)
        self.build_info.labels(VERSION, PYTHON_VERSION).set(1)
        self.active_tier = Gauge(
            "understudy_active_tier", "1 for the tier that serves the policy's traffic, 0 for its other tiers.",
            ["namespace", "policy", "tier"], registry=r)
        self.transitions = Counter(
            "understudy_transitions", "Changes of the serving tier, overrides and rollbacks, by reason.",
            ["namespace", "policy", "reason"], registry=r)
        self.fallback_ratio = Gauge(
            "understudy_fallback_ratio", "Share of the creep window spent off the primary (0..1).",
            ["namespace", "policy"], registry=r)
        self.cycle_duration = Histogram(
            "understudy_evaluation_cycle_duration_seconds",
            "Wall time of one evaluation cycle over every due policy.", buckets=CYCLE_BUCKETS, registry=r)
        self.evaluation_lateness = Histogram(
            "understudy_evaluation_lateness_seconds",
            "How long after its due time a policy's evaluation finished (its reading, decision and writes): "
            "the part of the reaction time the operator adds beyond the interval.",
            buckets=LATENESS_BUCKETS, registry=r)
        self.prometheus_queries = Counter(
            "understudy_prometheus_queries",
            "PromQL queries sent, by source: the operator's own Prometheus (default) or policies' own URLs (policy).",
            ["source"], registry=r)
        self.prometheus_query_errors = Counter(
            "understudy_prometheus_query_errors",
            "PromQL queries that failed (timeout, connection, HTTP, PromQL error, an answer too large or "
            "malformed), by source (default or policy).", ["source"], registry=r)
        for source in ("default", "policy"):  # both series exist from the start, so rate() sees the first error
            self.prometheus_queries.labels(source)
            self.prometheus_query_errors.labels(source)
        self.api_writes = Counter(
            "understudy_api_writes", "Writes to the Kubernetes API, by kind of object written.",
            ["kind"], registry=r)
        self.events_posted = Counter(
            "understudy_events_posted", "Audit Events accepted by the API server.", ["type", "reason"],
            registry=r)
        self.events_failed = Counter(
            "understudy_events_failed", "Audit Events that could not be posted.", ["reason"], registry=r)
        self.events_suppressed = Counter(
            "understudy_events_suppressed", "Audit Events not posted because their policy's Event budget ran out.",
            ["reason"], registry=r)
        self._lock = threading.Lock()
        self._tiers: dict[tuple[str, str], frozenset[str]] = {}
        self._reasons: dict[tuple[str, str], set[str]] = {}
        self._published: dict[tuple[str, str], tuple[str, float]] = {}

    def observe_policy(
        self,
        namespace: str,
        policy: str,
        tiers: Iterable[str],
        active_tier: str,
        fallback_ratio: float,
        audit: Iterable[AuditRecord] = (),
    ) -> None:
        """Publish one policy's decision: which tier serves, the creep ratio, and its transitions."""
        key = (namespace, policy)
        current = frozenset(tiers) | {active_tier}
        audit = tuple(audit)
        with self._lock:
            # A steady policy republishes nothing: thousands of label lookups per cycle are not free.
            if not audit and self._published.get(key) == (active_tier, fallback_ratio) \
                    and self._tiers.get(key) == current:
                return
            self._published[key] = (active_tier, fallback_ratio)
            for stale in self._tiers.get(key, frozenset()) - current:
                self.active_tier.remove(namespace, policy, stale)
            self._tiers[key] = current
            for tier in current:
                self.active_tier.labels(namespace, policy, tier).set(1 if tier == active_tier else 0)
            self.fallback_ratio.labels(namespace, policy).set(fallback_ratio)
            for record in audit:
                if is_transition(record):
                    self._reasons.setdefault(key, set()).add(record.reason)
                    self.transitions.labels(namespace, policy, record.reason).inc()

    def forget_policy(self, namespace: str, policy: str) -> None:
        """Remove every series of a deleted policy."""
        key = (namespace, policy)
        with self._lock:
            self._published.pop(key, None)
            for tier in self._tiers.pop(key, frozenset()):
                self.active_tier.remove(namespace, policy, tier)
            for reason in self._reasons.pop(key, set()):
                self.transitions.remove(namespace, policy, reason)
            self.fallback_ratio.remove(namespace, policy)

    def count_queries(self, before: ReaderStats, after: ReaderStats) -> None:
        """Publish what the reader sent between two of its stats, split by source: a tenant's dead URL must
        not page whoever runs the operator's Prometheus."""
        policy_sent = after.policy_queries_sent - before.policy_queries_sent
        policy_failed = after.policy_query_errors - before.policy_query_errors
        self.prometheus_queries.labels("default").inc(after.queries_sent - before.queries_sent - policy_sent)
        self.prometheus_queries.labels("policy").inc(policy_sent)
        self.prometheus_query_errors.labels("default").inc(after.query_errors - before.query_errors - policy_failed)
        self.prometheus_query_errors.labels("policy").inc(policy_failed)

    def api_write(self, kind: str) -> None:
        self.api_writes.labels(kind).inc()

    def event_posted(self, event_type: str, reason: str) -> None:
        self.events_posted.labels(event_type, reason).inc()

    def event_failed(self, reason: str) -> None:
        self.events_failed.labels(reason).inc()

    def event_suppressed(self, reason: str) -> None:
        self.events_suppressed.labels(reason).inc()

    def serve(self, port: int, addr: str = "0.0.0.0") -> tuple[WSGIServer, threading.Thread]:
        """Serve /metrics from a daemon thread; returns the server so tests can shut it down."""
        return start_http_server(port, addr, registry=self.registry)
