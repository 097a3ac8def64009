"""History from Prometheus: the operator's own batched PromQL, read with range queries.

`plan_queries` gives the exact query strings the operator sends each cycle. Each is read once over the
whole range with /api/v1/query_range (in chunks below Prometheus's 11,000 points per series), and every
step's answer is rebuilt as the instant vector the operator would have received at that moment, then
mapped by the same `map_results`. So a step costs no request of its own, and the readings are the ones
the operator would have computed, including INSUFFICIENT and MISSING.

Readiness has no history in Kubernetes. It is read from kube-state-metrics when Prometheus has it, and the
engine gets each step's ready replicas (a tier without a series at a step has unknown readiness, never 0);
otherwise every tier is taken as fully ready for the mapping, which the report says: readyReplicas
triggers then never fire, a tier without request series reads as idle (INSUFFICIENT), as it would for a
running Deployment, and the engine's readiness is unknown.

Unlike the operator, a failed query is an error here, not MISSING: a backtest that silently judged an
outage of its own reads would answer a different question.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, Callable, Iterator, Mapping

import requests
from prometheus_api_client import PrometheusConnect
from urllib3.util.retry import Retry

from understudy.api.durations import parse_duration
from understudy.backtest.cluster import Step
from understudy.engine import Samples
from understudy.signals.endpoints import redact
from understudy.signals.promql import ReadyReplicas, Target, map_loads, map_results, plan_queries
from understudy.signals.transport import Credentials, QueryFailed

MAX_POINTS = 10_000
"""Steps per range request: below Prometheus's limit of 11,000 points per series."""

READY_METRIC = "kube_deployment_status_replicas_ready"
DESIRED_METRIC = "kube_deployment_spec_replicas"

_SPAN = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?(?:ms|s|m|h|d|w))+")
_UNIT = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d|w)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


class SourceError(RuntimeError):
    """Prometheus could not answer a query the backtest needs."""


def parse_span(text: str) -> float:
    """Seconds in a span such as `7d`, `1h30m` or `15s` (Go durations plus d and w)."""
    if not _SPAN.fullmatch(text.strip()):
        raise ValueError(f"not a duration: {text!r} (e.g. 15s, 1h30m, 7d)")
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in _UNIT.findall(text))


def parse_time(text: str, now: float) -> float:
    """Unix seconds from RFC 3339, Unix seconds, `now`, or a time relative to now (`-7d`, `now-1h`)."""
    text = text.strip()
    if text == "now":
        return now
    for prefix in ("now-", "-"):
        if text.startswith(prefix):
            return now - parse_span(text[len(prefix):])
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"not a time: {text!r} (RFC 3339, Unix seconds, now, or relative like -7d)") from None
    if moment.tzinfo is None:
        raise ValueError(f"time {text!r} needs a UTC offset (e.g. Z) to be unambiguous")
    return moment.timestamp()


def parse_step(text: str) -> float:
    """A step as a duration (`15s`) or in plain seconds (`15`)."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = parse_duration(text)
    if seconds < 0.001 or not math.isfinite(seconds):
        raise ValueError(f"step must be at least 1ms, got {text!r}")
    return seconds


def step_times(start: float, end: float, step: float) -> list[int]:
    """Evaluation times in epoch milliseconds, the way Prometheus spaces a range query's points."""
    start_ms, end_ms, step_ms = round(start * 1000), round(end * 1000), round(step * 1000)
    if end_ms < start_ms:
        raise ValueError("the end of the range is before its start")
    return list(range(start_ms, end_ms + 1, step_ms))


Vector = list[dict[str, Any]]


@dataclass(frozen=True)
class History:
    """Per-step answers of every planned query, ready to be turned into Samples step by step."""

    target: Target
    times_ms: tuple[int, ...]
    vectors: Mapping[str, Mapping[int, Vector]]
    """query -> step time (ms) -> the instant vector at that step."""
    ready: Mapping[int, ReadyReplicas] | None
    """Step time -> readiness from kube-state-metrics; None when Prometheus has none for these tiers."""
    requests: int
    """Range requests sent."""

    @property
    def readiness_known(self) -> bool:
        return self.ready is not None

    def steps(self) -> Iterator[Step]:
        """One Step per evaluation time, built lazily so a week of steps never sits in memory at once.

        The load is read when the policy has a capacity to check; replicas by tier only when
        kube-state-metrics recorded them.
        """
        plan = plan_queries([self.target])
        namespace, key = self.target.namespace, self.target.key
        tiers = self.target.policy.tiers
        assumed: ReadyReplicas = {(namespace, t.deployment): (1, 1) for t in tiers}
        for ms in self.times_ms:
            results = {q: list(self.vectors.get(q, {}).get(ms, ())) for q in plan.queries}
            ready = assumed if self.ready is None else self.ready.get(ms, {})
            samples = map_results(plan, results, ready).get(key, Samples({}))
            replicas = None
            if self.ready is not None:  # what kube-state-metrics reported; a tier without a series: unknown
                replicas = {t.name: ready[(namespace, t.deployment)] for t in tiers if (namespace, t.deployment) in ready}
                samples = replace(samples, ready={tier: counts[0] for tier, counts in replicas.items()})
            yield Step(ms / 1000, samples, map_loads(plan, results).get(key), replicas)


Progress = Callable[[int], None]
"""Told how many more range requests have completed."""


def _session(credentials: Credentials | None) -> tuple[requests.Session, dict[str, str]]:
    """A session that follows no redirect and takes nothing from the environment (proxies, netrc), and the
    headers that carry the operator's credentials (the same settings as `understudy run`'s)."""
    session = requests.Session()
    session.trust_env = False
    session.max_redirects = 0
    headers: dict[str, str] = {}
    if credentials is not None:
        session.verify = credentials.ca_file or True
        if credentials.cert_file and credentials.key_file:
            session.cert = (credentials.cert_file, credentials.key_file)
        headers.update(credentials.headers)
        try:
            authorization = credentials.authorization()
        except QueryFailed as error:
            raise SourceError(str(error)) from None
        if authorization:
            headers["Authorization"] = authorization
    return session, headers


class PrometheusHistory:
    """Reads a target's signals over a range from one Prometheus."""

    def __init__(self, url: str, timeout: float = 30.0, max_points: int = MAX_POINTS,
                 credentials: Credentials | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.max_points = max_points
        session, headers = _session(credentials)
        self._client = PrometheusConnect(url=self.url, retry=Retry(total=0), timeout=timeout, session=session,
                                         headers=headers)

    def requests_needed(self, target: Target, times_ms: list[int]) -> int:
        chunks = math.ceil(len(times_ms) / self.max_points)
        return (len(plan_queries([target]).queries) + 2) * chunks

    def read(self, target: Target, times_ms: list[int], progress: Progress | None = None) -> History:
        """Every planned query and the readiness series over `times_ms` (evenly spaced, from `step_times`)."""
        if not times_ms:
            raise ValueError("no step in the range")
        step_ms = times_ms[1] - times_ms[0] if len(times_ms) > 1 else 1000
        chunks = [times_ms[i:i + self.max_points] for i in range(0, len(times_ms), self.max_points)]
        requests = 0

        def matrix(query: str) -> list[dict[str, Any]]:
            nonlocal requests
            series: list[dict[str, Any]] = []
            for chunk in chunks:
                series.extend(self._range(query, chunk[0], chunk[-1], step_ms))
                requests += 1
                if progress is not None:
                    progress(1)
            return series

        vectors = {q: _by_step(matrix(q)) for q in plan_queries([target]).queries}
        deployments = sorted({t.deployment for t in target.policy.tiers})
        selector = f'namespace="{_string(target.namespace)}", deployment=~"{"|".join(map(_regex, deployments))}"'
        ready_series = matrix(f"max by (namespace, deployment) ({READY_METRIC}{{{selector}}})")
        desired_series = matrix(f"max by (namespace, deployment) ({DESIRED_METRIC}{{{selector}}})")
        ready = _readiness(ready_series, desired_series) if ready_series and desired_series else None
        return History(target, tuple(times_ms), vectors, ready, requests)

    def _range(self, query: str, start_ms: int, end_ms: int, step_ms: int) -> list[dict[str, Any]]:
        # The exact start and end also go in `params`, which win over the client's own: it rounds them to
        # whole seconds, which would shift every point of a range that is not aligned to a second.
        params = {"start": f"{start_ms / 1000:.3f}", "end": f"{end_ms / 1000:.3f}", "timeout": f"{self.timeout:g}"}
        try:
            result: list[dict[str, Any]] = self._client.custom_query_range(
                query, _utc(start_ms), _utc(end_ms), f"{step_ms / 1000:g}", params=params, timeout=self.timeout)
        except Exception as exc:  # connection, timeout, HTTP or PromQL error: the answer would be wrong
            raise SourceError(f"range query failed at {redact(self.url)}: {exc}\n  query: {query}") from exc
        return result

    def close(self) -> None:
        self._client.close()


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, timezone.utc)


def _by_step(matrix: list[dict[str, Any]]) -> dict[int, Vector]:
    """A range query's matrix as the instant vectors the same query would have returned at each step."""
    vectors: dict[int, Vector] = {}
    for series in matrix:
        metric = series.get("metric", {})
        for stamp, value in series.get("values", ()):
            vectors.setdefault(round(float(stamp) * 1000), []).append({"metric": metric, "value": [stamp, value]})
    return vectors


def _readiness(ready: list[dict[str, Any]], desired: list[dict[str, Any]]) -> dict[int, ReadyReplicas]:
    """Step -> (namespace, deployment) -> (ready, desired), where both series have a value at that step."""
    def index(matrix: list[dict[str, Any]]) -> dict[tuple[int, tuple[str, str]], int]:
        out: dict[tuple[int, tuple[str, str]], int] = {}
        for series in matrix:
            key = (series["metric"].get("namespace", ""), series["metric"].get("deployment", ""))
            for stamp, value in series.get("values", ()):
                number = float(value)
                if math.isfinite(number):
                    out[(round(float(stamp) * 1000), key)] = int(number)
        return out

    have, want = index(ready), index(desired)
    by_step: dict[int, dict[tuple[str, str], tuple[int, int]]] = {}
    for (ms, key), count in have.items():
        if (ms, key) in want:
            by_step.setdefault(ms, {})[key] = (count, want[(ms, key)])
    return dict(by_step)


def _string(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _regex(value: str) -> str:
    """A literal inside an RE2 alternation inside a double-quoted PromQL string."""
    return _string(re.sub(r"([\\.+*?()|\[\]{}^$])", r"\\\1", value))
