"""Batched PromQL for every due policy, and the mapping of query results back to engine readings.

Pure: no I/O, no clock. The built-in signals (request count, error ratio, latency quantile) are read with
ONE query per (signal, window, metric names, quantile), grouped `by (namespace, workload)` the way
prometheus-adapter serves many objects from one query, so the number of queries per cycle does not grow
with the number of policies. Custom `query` triggers are the one exception: their PromQL is written per tier
(`$deployment`, `$namespace`, `$service`), so identical rendered queries are deduplicated but their count can
grow with the number of policies.
In the default, multi-tenant mode each rendered custom query is held to its policy's namespace
(`signals.confine`): one that cannot be is refused, reads MISSING and is listed in `QueryPlan.refused`.

Each batched query is restricted to the namespaces and workloads of the due policies with `=~` matchers:
Prometheus then selects only those series through its index instead of evaluating (for the latency
histogram, very high-cardinality) series of the whole mesh, and answers are as small as the batch. When a
batch is so large that the matchers would make the query longer than `max_matcher_chars` (URL length limits
of proxies in front of Prometheus), that query is sent unrestricted; results are always matched back by
exact (namespace, workload), so the extra series are harmless.

Missing data is never read as zero: an absent series, NaN, or a failed query is MISSING. Fewer requests in
the window than the trigger's minimum is INSUFFICIENT, and so is a running workload that has no request
series yet (see `_unseen_but_running`); an INSUFFICIENT reading carries the window's request count (0 for
a workload without series) and the value those few requests gave, if any.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from enum import Enum
from functools import lru_cache
from string import Template
from typing import Any, Hashable, Iterable, Mapping, Sequence

from understudy.engine.model import (
    MISSING,
    Policy,
    Reading,
    Samples,
    Series,
    SignalKind,
    Tier,
    Trigger,
)
from understudy.signals.confine import Confinement, PromQLError, confine

DEFAULT_MAX_MATCHER_CHARS = 4096

QueryResult = Sequence[Any] | None
"""A query's `data.result` as Prometheus returns it (a vector, or a scalar's `[time, "value"]`), or None
when the query failed (unreachable, timeout, HTTP or PromQL error)."""

ReadyReplicas = Mapping[tuple[str, str], tuple[int, int]]
"""(namespace, deployment) -> (ready replicas, desired replicas), read by the operator from Deployments."""


@dataclass(frozen=True)
class MetricNames:
    """Where the built-in signals live; the defaults are Istio's standard metrics."""

    requests_metric: str = "istio_requests_total"
    duration_metric: str = "istio_request_duration_milliseconds"
    workload_label: str = "destination_workload"
    namespace_label: str = "destination_workload_namespace"
    response_code_label: str = "response_code"
    duration_in_seconds: bool = False
    """The duration histogram counts seconds (vLLM, KServe) rather than Istio's milliseconds; latency
    readings are scaled to milliseconds in the query, so thresholds keep one unit."""
    min_requests: int = 20
    """Requests in the window below which latency and error triggers read INSUFFICIENT, unless the trigger
    sets its own `min_requests`."""


@dataclass(frozen=True)
class Target:
    """One due policy: what to read for it and where."""

    key: Hashable
    namespace: str
    policy: Policy
    metrics: MetricNames = MetricNames()
    window: float = 60.0
    """The rate() window of the built-in signals, in seconds."""
    prometheus_url: str | None = None
    """A per-policy Prometheus; None means the reader's default."""
    needs_load: bool = False
    """Also read the target's total request rate (a fallback has a capacity to check)."""


class _Shape(str, Enum):
    REQUESTS = "requests"
    ERROR_RATIO = "errorRatio"
    LATENCY = "latency"
    QUANTILE = "quantile"
    """A quantile of a model server's histogram (time to first token, time per output token)."""
    GAUGE = "gauge"
    """A model server's gauge, averaged over the tier's replicas (queue depth, KV-cache usage)."""
    RATE = "rate"
    """A model server's counter per second, summed over the tier's replicas (tokens per second)."""


_SHAPES = {
    SignalKind.LATENCY: _Shape.LATENCY,
    SignalKind.ERROR_RATIO: _Shape.ERROR_RATIO,
    SignalKind.TIME_TO_FIRST_TOKEN: _Shape.QUANTILE,
    SignalKind.TIME_PER_OUTPUT_TOKEN: _Shape.QUANTILE,
    SignalKind.QUEUE_DEPTH: _Shape.GAUGE,
    SignalKind.KV_CACHE_USAGE: _Shape.GAUGE,
    SignalKind.TOKENS_PER_SECOND: _Shape.RATE,
}
"""The batched query shape each kind read from Prometheus takes."""


@dataclass(frozen=True)
class _Group:
    """Everything that makes a batched query different except the workloads it is restricted to."""

    shape: _Shape
    metrics: MetricNames
    window: str
    quantile: float | None = None
    series: Series | None = None


@dataclass(frozen=True)
class _SeriesBinding:
    """A built-in signal: one series of a batched query, gated by the request count."""

    query: str
    labels: tuple[str, str]
    """The (namespace, workload) label names the query groups by."""
    series: tuple[str, str]
    count_query: str | None
    min_requests: int


@dataclass(frozen=True)
class _CustomBinding:
    query: str


@dataclass(frozen=True)
class _ReadyBinding:
    namespace: str
    deployment: str


_Binding = _SeriesBinding | _CustomBinding | _ReadyBinding | None
"""None marks a trigger that cannot be read (e.g. a latency trigger without a quantile): always MISSING."""


@dataclass(frozen=True)
class QueryPlan:
    """The queries to send for one batch and, per target, tier and trigger, where its reading comes from."""

    queries: tuple[str, ...]
    bindings: Mapping[Hashable, Mapping[str, Mapping[str, _Binding]]]
    loads: Mapping[Hashable, _LoadBinding] = field(default_factory=dict)
    """Per target, where its total request rate comes from (for the capacity check)."""
    refused: Mapping[Hashable, str] = field(default_factory=dict)
    """Per target, why one of its custom queries was not sent (it reads MISSING)."""
    custom: frozenset[str] = frozenset()
    """The queries written by policies (custom triggers), which must answer with a single value."""


@dataclass(frozen=True)
class _LoadBinding:
    """The request-count series of every tier of one target: their sum over the window is its load."""

    query: str
    labels: tuple[str, str]
    series: tuple[tuple[str, str], ...]
    window: float


def promql_duration(seconds: float) -> str:
    """A PromQL duration literal; whole seconds stay readable, anything finer goes to milliseconds."""
    ms = round(seconds * 1000)
    if ms <= 0:
        raise ValueError(f"window must be positive, got {seconds!r}")
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def render_custom(promql: str, namespace: str, tier: Tier, confine_label: str | None = None) -> str:
    """Fill a custom trigger's placeholders for one tier (unknown `$words` are left as written), then, with
    a `confine_label`, hold it to the namespace; raises PromQLError for a query that cannot be."""
    rendered = Template(promql).safe_substitute(
        deployment=tier.deployment, namespace=namespace, service=tier.service
    )
    return confine(rendered, confine_label, namespace) if confine_label else rendered


_RE2_SPECIAL = frozenset("\\.+*?()|[]{}^$")


def _regex_literal(value: str) -> str:
    """Escape a value for an RE2 alternation inside a double-quoted PromQL string."""
    escaped = "".join("\\" + c if c in _RE2_SPECIAL else c for c in value)
    return escaped.replace("\\", "\\\\").replace('"', '\\"')


def _matchers(metrics: MetricNames, series: Iterable[tuple[str, str]], limit: int) -> str:
    namespaces = sorted({ns for ns, _ in series})
    workloads = sorted({wl for _, wl in series})
    text = (
        f'{metrics.namespace_label}=~"{"|".join(map(_regex_literal, namespaces))}", '
        f'{metrics.workload_label}=~"{"|".join(map(_regex_literal, workloads))}"'
    )
    return text if len(text) <= limit else ""


def selector(metric: str, *matchers: str) -> str:
    """`metric` with `matchers` added: a metric name, or a selector that already has matchers of its own
    (`name{a="b"}`, `{__name__=~"x|y"}`: a preset may need two counters or one series of a gauge family)."""
    present = [m for m in matchers if m]
    name, brace, inner = metric.partition("{")
    own = [inner.rstrip().removesuffix("}").strip()] if brace else []
    every = [m for m in (*own, *present) if m]
    return f"{name}{{{', '.join(every)}}}" if every else name


def _bucket(histogram: str) -> str:
    """The `_bucket` series of a histogram named on its own or by a selector."""
    name, brace, rest = histogram.partition("{")
    return f"{name}_bucket{brace}{rest}"


def _scaled(scale: float, expression: str) -> str:
    return expression if scale == 1.0 else f"{scale:g} * {expression}"


def _render(group: _Group, matchers: str) -> str:
    m = group.metrics
    by = f"{m.namespace_label}, {m.workload_label}"
    w = group.window
    if group.shape is _Shape.REQUESTS:
        return f"sum by ({by}) (increase({selector(m.requests_metric, matchers)}[{w}]))"
    series = group.series
    if group.shape is _Shape.ERROR_RATIO:
        # A workload with no 5xx yet has no 5xx series at all; `or 0 * total` gives it a true zero, but
        # only where the total exists, so a workload without traffic data still reads as absent.
        total = f"sum by ({by}) (rate({selector(m.requests_metric, matchers)}[{w}]))"
        if series is None:
            errors = selector(m.requests_metric, matchers, f'{m.response_code_label}=~"5.."')
        else:
            errors = selector(series.selector, matchers)
        counted = f"(sum by ({by}) (rate({errors}[{w}])) or 0 * {total})"
        if series is not None and series.counts_successes:
            return f"({total} - {counted}) / {total}"
        return f"{counted} / {total}"
    if group.shape is _Shape.LATENCY:
        bucket = selector(f"{m.duration_metric}_bucket", matchers)
        quantile = f"histogram_quantile({group.quantile!r}, sum by (le, {by}) (rate({bucket}[{w}])))"
        return f"1000 * {quantile}" if m.duration_in_seconds else quantile
    assert series is not None, "a model server's signal names its series"
    if group.shape is _Shape.QUANTILE:
        bucket = selector(_bucket(series.selector), matchers)
        quantile = f"histogram_quantile({group.quantile!r}, sum by (le, {by}) (rate({bucket}[{w}])))"
        return _scaled(series.scale, quantile)
    if group.shape is _Shape.GAUGE:
        return _scaled(series.scale, f"avg by ({by}) ({selector(series.selector, matchers)})")
    return _scaled(series.scale, f"sum by ({by}) (rate({selector(series.selector, matchers)}[{w}]))")


@lru_cache(maxsize=1024)
def _builtin(metrics: MetricNames, window: float, trigger: Trigger) -> tuple[_Group, _Group | None, int] | None:
    """The batched query a built-in trigger reads, its request-count gate and the gate's minimum.

    Cached: a fleet has few distinct (metric names, window, trigger) combinations, and planning a
    thousand policies should not rebuild the same groups for each of them.
    """
    shape = _SHAPES.get(trigger.kind)
    if shape is None:
        return None
    if shape in (_Shape.LATENCY, _Shape.QUANTILE) and trigger.quantile is None:
        return None
    if shape in (_Shape.QUANTILE, _Shape.GAUGE, _Shape.RATE) and trigger.series is None:
        return None
    names = replace(metrics, min_requests=0)
    duration = promql_duration(window)
    group = _Group(shape, names, duration, trigger.quantile if shape in (_Shape.LATENCY, _Shape.QUANTILE) else None,
                   trigger.series)
    # A gauge is the server's state now, not a statistic of the window's requests: no request minimum.
    gate = 0 if shape is _Shape.GAUGE else trigger.min_requests or metrics.min_requests
    return group, (_Group(_Shape.REQUESTS, names, duration) if gate > 0 else None), gate


def plan_queries(
    targets: Iterable[Target],
    max_matcher_chars: int = DEFAULT_MAX_MATCHER_CHARS,
    confinement: Confinement = Confinement(),
) -> QueryPlan:
    """Group every trigger of every target into the fewest queries; see the module docstring."""
    targets = list(targets)
    refused: dict[Hashable, str] = {}
    members: dict[_Group, set[tuple[str, str]]] = {}
    planned: list[tuple[Target, Tier, Trigger, tuple[_Group, _Group | None, int] | None]] = []
    for target in targets:
        builtins = {t.name: _builtin(target.metrics, target.window, t) for t in target.policy.triggers}
        for tier in target.policy.tiers:
            series = (target.namespace, tier.deployment)
            for trigger in target.policy.triggers:
                if not trigger.applies(tier.name):
                    continue
                builtin = builtins[trigger.name]
                if builtin is not None:
                    members.setdefault(builtin[0], set()).add(series)
                    if builtin[1] is not None:
                        members.setdefault(builtin[1], set()).add(series)
                planned.append((target, tier, trigger, builtin))
    load_groups: dict[Hashable, _Group] = {}
    for target in (t for t in targets if t.needs_load):
        group = _Group(_Shape.REQUESTS, replace(target.metrics, min_requests=0), promql_duration(target.window))
        members.setdefault(group, set()).update((target.namespace, t.deployment) for t in target.policy.tiers)
        load_groups[target.key] = group
    rendered = {g: _render(g, _matchers(g.metrics, s, max_matcher_chars)) for g, s in members.items()}

    queries = set(rendered.values())
    bindings: dict[Hashable, dict[str, dict[str, _Binding]]] = {
        t.key: {tier.name: {} for tier in t.policy.tiers} for t in targets
    }
    for target, tier, trigger, builtin in planned:
        binding: _Binding = None
        if builtin is not None:
            group, count, gate = builtin
            binding = _SeriesBinding(
                query=rendered[group],
                labels=(target.metrics.namespace_label, target.metrics.workload_label),
                series=(target.namespace, tier.deployment),
                count_query=rendered[count] if count else None,
                min_requests=gate,
            )
        elif trigger.kind is SignalKind.READY_REPLICAS:
            binding = _ReadyBinding(target.namespace, tier.deployment)
        elif trigger.kind is SignalKind.QUERY and trigger.promql:
            label = (confinement.label or target.metrics.namespace_label) if confinement.enabled else None
            try:
                binding = _CustomBinding(render_custom(trigger.promql, target.namespace, tier, label))
                queries.add(binding.query)
            except PromQLError as error:
                refused[target.key] = f"trigger {trigger.name}: {error}"
        bindings[target.key][tier.name][trigger.name] = binding
    loads = {
        t.key: _LoadBinding(
            query=rendered[load_groups[t.key]],
            labels=(t.metrics.namespace_label, t.metrics.workload_label),
            series=tuple((t.namespace, tier.deployment) for tier in t.policy.tiers),
            window=t.window,
        )
        for t in targets
        if t.needs_load
    }
    builtin = set(rendered.values())
    return QueryPlan(queries=tuple(sorted(queries)), bindings=bindings, loads=loads, refused=refused,
                     custom=frozenset(q for q in queries if q not in builtin))


@dataclass(frozen=True)
class TriggerRead:
    """How one trigger is read on one tier, for a person (`understudy validate`)."""

    query: str | None
    """The PromQL sent (batched over every tier of the batch); None: read from the Deployment, or unreadable."""
    count_query: str | None = None
    """The request count that gates it, if any."""
    min_requests: int = 0
    from_deployment: bool = False


def trigger_reads(plan: QueryPlan, key: Hashable) -> dict[str, dict[str, TriggerRead]]:
    """trigger name -> tier name -> how it is read, for one planned target."""
    reads: dict[str, dict[str, TriggerRead]] = {}
    for tier, triggers in plan.bindings.get(key, {}).items():
        for trigger, b in triggers.items():
            if isinstance(b, _SeriesBinding):
                read = TriggerRead(b.query, b.count_query, b.min_requests if b.count_query else 0)
            elif isinstance(b, _CustomBinding):
                read = TriggerRead(b.query)
            else:
                read = TriggerRead(None, from_deployment=isinstance(b, _ReadyBinding))
            reads.setdefault(trigger, {})[tier] = read
    return reads


def _number(raw: Any) -> float | None:
    """A sample value as Prometheus sends it (a string, maybe "NaN"); NaN and garbage read as None."""
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def _sample(item: Any) -> float | None:
    """The value of one vector element `{"metric": ..., "value": [time, "v"]}`; None if it is not one."""
    value = item.get("value") if isinstance(item, Mapping) else None
    return _number(value[1]) if isinstance(value, (list, tuple)) and len(value) == 2 else None


def _by_series(result: QueryResult, labels: tuple[str, str]) -> dict[tuple[str, str], float | None]:
    """A vector indexed by two labels; elements of any other shape are skipped (the reader refuses such
    answers whole, this keeps a stray one from raising wherever a result comes from)."""
    indexed: dict[tuple[str, str], float | None] = {}
    for item in result if isinstance(result, (list, tuple)) else ():
        metric = item.get("metric", {}) if isinstance(item, Mapping) else None
        if isinstance(metric, Mapping):
            indexed[(str(metric.get(labels[0], "")), str(metric.get(labels[1], "")))] = _sample(item)
    return indexed


def _single(result: QueryResult) -> Reading:
    """A custom query must yield exactly one value; none, several (ambiguous) or a malformed one read MISSING."""
    if not isinstance(result, (list, tuple)):
        return MISSING
    if len(result) == 2 and not isinstance(result[0], Mapping):  # a scalar: [time, "value"]
        value = _number(result[1])
    elif len(result) == 1:
        value = _sample(result[0])
    else:
        return MISSING
    return MISSING if value is None else Reading.ok(value)


def _ready(binding: _ReadyBinding, ready: ReadyReplicas) -> Reading:
    counts = ready.get((binding.namespace, binding.deployment))
    if counts is None or counts[1] <= 0:
        return MISSING
    return Reading.ok(counts[0] / counts[1])


def _unseen_but_running(count_result: QueryResult, series: tuple[str, str], ready: ReadyReplicas) -> bool:
    """Whether a workload without request series has simply served nothing yet.

    Istio creates request series on a workload's first request, so a fallback that never took traffic, or
    a primary whose pods were just replaced (a rollback) and get no traffic, has none. When its Deployment
    has ready pods and Prometheus does hold request series for other workloads of the batch, that reads
    INSUFFICIENT (so the engine can probe it). An answer without any series at all looks like wrong metric
    names or a broken scrape, and stays MISSING, as does a workload with no ready pods.
    """
    counts = ready.get(series)
    return bool(count_result) and counts is not None and counts[0] > 0


def map_results(
    plan: QueryPlan, results: Mapping[str, QueryResult], ready: ReadyReplicas
) -> dict[Hashable, Samples]:
    """Turn raw query results into `Samples.readings[tier][trigger]` for every planned target.

    A query absent from `results`, or mapped to None, failed: every reading it served is MISSING.
    `ready` should hold every tier's Deployment, not only those with readyReplicas triggers: it also tells
    a running workload that has served no requests yet (INSUFFICIENT) from one that is unknown (MISSING).
    """
    indexes: dict[tuple[str, tuple[str, str]], dict[tuple[str, str], float | None]] = {}

    def lookup(query: str, labels: tuple[str, str], series: tuple[str, str]) -> float | None:
        if (query, labels) not in indexes:
            indexes[(query, labels)] = _by_series(results.get(query), labels)
        return indexes[(query, labels)].get(series)

    def series_reading(b: _SeriesBinding) -> Reading:
        if results.get(b.query) is None:
            return MISSING
        if b.count_query is not None:
            if results.get(b.count_query) is None:
                return MISSING
            count = lookup(b.count_query, b.labels, b.series)
            if count is None:
                unseen = _unseen_but_running(results[b.count_query], b.series, ready)
                return Reading.insufficient(0.0) if unseen else MISSING
            if count < b.min_requests:
                return Reading.insufficient(count, lookup(b.query, b.labels, b.series))
        value = lookup(b.query, b.labels, b.series)
        return MISSING if value is None else Reading.ok(value)

    def reading(binding: _Binding) -> Reading:
        if isinstance(binding, _SeriesBinding):
            return series_reading(binding)
        if isinstance(binding, _CustomBinding):
            return _single(results.get(binding.query))
        if isinstance(binding, _ReadyBinding):
            return _ready(binding, ready)
        return MISSING

    return {
        key: Samples(
            readings={
                tier: {trigger: reading(b) for trigger, b in triggers.items()}
                for tier, triggers in tiers.items()
            }
        )
        for key, tiers in plan.bindings.items()
    }


def map_loads(plan: QueryPlan, results: Mapping[str, QueryResult]) -> dict[Hashable, float | None]:
    """Requests per second each target receives across all its tiers; None when it cannot be known.

    A failed query, or no request series for any tier, is unknown rather than zero: a capacity check
    must not conclude that a fallback can carry a load nobody measured. So is a count no counter can have
    (infinite or negative): it would size a scale-up.
    """
    loads: dict[Hashable, float | None] = {}
    for key, binding in plan.loads.items():
        indexed = _by_series(results.get(binding.query), binding.labels)
        values = [v for v in (indexed.get(s) for s in binding.series) if v is not None]
        total = sum(values) / binding.window if values and results.get(binding.query) is not None else None
        loads[key] = total if total is not None and math.isfinite(total) and total >= 0 else None
    return loads
