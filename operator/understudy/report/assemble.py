"""The report's figures from a policy's status and the answers to a fixed set of PromQL queries.

Pure: no I/O, no clock. `plan_queries` names every query (with the time it is evaluated at) and
`assemble` turns the answers, keyed the same way, into a `Report`. A query that failed or returned
nothing is a figure that is *not known*, never a zero.

Where status and Prometheus can both answer, the more complete one wins and the report says which:
status.history keeps only the last 20 transitions, and the operator's own metrics exist only where
Prometheus scrapes the operator.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from understudy.backtest.source import parse_time
from understudy.engine.model import PRIMARY
from understudy.signals.promql import MetricNames, promql_duration, selector

HISTORY_LIMIT = 20
"""status.history's maxItems: with this many entries, older transitions may have been dropped."""

ACTIVATED = "FallbackActivated"
RESTORE_STEP = "RestoreStep"
TRANSITIONS_METRIC = "understudy_transitions_total"
ACTIVE_TIER_METRIC = "understudy_active_tier"
DEFAULT_CONFIDENCE_METRIC = "model_prediction_confidence"
NO_DRILL = "no drill on record"

QueryAnswer = Sequence[Mapping[str, Any]] | None
"""An instant query's `data.result` (a vector), or None when the query failed."""


@dataclass(frozen=True)
class TierRef:
    name: str
    deployment: str


@dataclass(frozen=True)
class ReportInputs:
    """Everything the report is computed from, except the query answers."""

    namespace: str
    name: str
    tiers: tuple[TierRef, ...]
    """The primary first, then the fallbacks in chain order."""
    status: Mapping[str, Any]
    metrics: MetricNames
    max_fallback_ratio: float
    creep_window: float
    evaluation_window: float
    start: float
    end: float
    created: float | None = None
    """The policy's creationTimestamp: before it, no tier served under this policy."""
    confidence_metric: str = DEFAULT_CONFIDENCE_METRIC
    confidence_workload_label: str = "workload"
    confidence_namespace_label: str = "namespace"
    segment_label: str | None = None
    quantile: float = 0.99

    @property
    def fallbacks(self) -> tuple[TierRef, ...]:
        return self.tiers[1:]


@dataclass(frozen=True)
class Query:
    promql: str
    at: float
    """Evaluation time, Unix seconds."""


@dataclass(frozen=True)
class Period:
    """A stretch of time during which one tier served (was the active tier)."""

    tier: str
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Activations:
    count: int | None
    source: str
    """"status.history", "prometheus", or "unknown"."""
    lower_bound: bool
    """True when older transitions may have been dropped from status.history and nothing better is known."""
    from_history: int
    from_prometheus: int | None


@dataclass(frozen=True)
class TierFigures:
    tier: str
    deployment: str
    seconds: float | None
    """Time as the serving tier within the window; None when not derivable."""
    share: float | None
    """`seconds` as a share of the part of the window that is covered."""
    latency_ms: float | None
    """The latency quantile over the fallback periods (the primary's may be from before each activation)."""
    latency_requests: float
    confidence: float | None
    predictions: float


@dataclass(frozen=True)
class Latency:
    gained_ms: float | None
    primary_ms: float | None
    fallback_ms: float | None
    quantile: float
    periods: int
    seconds: float
    primary_basis: str
    """"during fallback", "before each activation", or why it is not known."""
    note: str = ""


@dataclass(frozen=True)
class Segment:
    value: str
    requests: float
    fallback_requests: float

    @property
    def share(self) -> float:
        return self.fallback_requests / self.requests if self.requests > 0 else 0.0


@dataclass(frozen=True)
class Segments:
    label: str | None
    found: bool
    segments: tuple[Segment, ...] = ()
    overall_share: float | None = None
    note: str = ""


@dataclass(frozen=True)
class Report:
    namespace: str
    name: str
    start: float
    end: float
    active_tier: str | None
    weights: tuple[tuple[str, int], ...]
    activations: Activations
    time_source: str
    """Where time per tier comes from: "prometheus", "status.history", or "unknown"."""
    covered_seconds: float
    """How much of the window time per tier accounts for."""
    fallback_seconds: float | None
    tiers: tuple[TierFigures, ...]
    latency: Latency
    fallback_ratio: float | None
    max_fallback_ratio: float
    creep_window: float
    creep_budget_used: float | None
    last_known_good_revision: str | None
    last_drill: str
    segments: Segments
    conditions: tuple[tuple[str, str, str], ...]
    """(type, status, reason) of every condition in status."""
    notes: tuple[str, ...] = field(default=())


# ---- the timeline from status.history --------------------------------------------------------------------------


def _history(status: Mapping[str, Any], now: float) -> list[tuple[float, Mapping[str, Any]]]:
    """(time, entry) of every history entry with a readable time, oldest first (stable for equal times)."""
    entries = []
    for entry in status.get("history") or ():
        try:
            entries.append((parse_time(str(entry.get("time", "")), now), entry))
        except ValueError:
            continue
    return sorted(entries, key=lambda pair: pair[0])


def _serving_after(entry: Mapping[str, Any]) -> str:
    """The active tier after a transition: a restore step only lends part of the traffic to `toTier`."""
    if entry.get("reason") == RESTORE_STEP:
        return str(entry.get("fromTier", ""))
    return str(entry.get("toTier", ""))


def history_complete(inputs: ReportInputs) -> bool:
    """True when status.history holds every transition of the window (none can have been dropped)."""
    entries = _history(inputs.status, inputs.end)
    return len(inputs.status.get("history") or ()) < HISTORY_LIMIT or (bool(entries) and entries[0][0] <= inputs.start)


def serving_periods(inputs: ReportInputs) -> list[Period]:
    """Who served when within the window, as far as status.history tells.

    With a complete history the tier before the first entry is that entry's fromTier (the primary when
    there is none: the policy starts on it), back to the policy's creation. With a truncated one, the time
    before the oldest entry kept is not covered.
    """
    everything = _history(inputs.status, inputs.end)
    entries = [(t, e) for t, e in everything if t <= inputs.end]
    complete = history_complete(inputs)
    cursor = inputs.start
    if everything:
        tier = str(everything[0][1].get("fromTier") or PRIMARY)
        if not complete:
            cursor = max(inputs.start, everything[0][0])
    else:
        tier = str(inputs.status.get("activeTier") or PRIMARY)
    if inputs.created is not None:
        cursor = max(cursor, inputs.created)
    periods: list[Period] = []
    for moment, entry in entries:
        if moment > cursor:
            periods.append(Period(tier, cursor, moment))
            cursor = moment
        tier = _serving_after(entry)
    if inputs.end > cursor:
        periods.append(Period(tier, cursor, inputs.end))
    merged: list[Period] = []
    for p in periods:
        if merged and merged[-1].tier == p.tier and merged[-1].end == p.start:
            merged[-1] = Period(p.tier, merged[-1].start, p.end)
        else:
            merged.append(p)
    return merged


def fallback_periods(inputs: ReportInputs) -> list[Period]:
    """The stretches when any fallback served, consecutive fallbacks merged into one."""
    out: list[Period] = []
    for p in serving_periods(inputs):
        if p.tier == PRIMARY:
            continue
        if out and out[-1].end == p.start:
            out[-1] = Period("fallback", out[-1].start, p.end)
        else:
            out.append(Period("fallback", p.start, p.end))
    return out


# ---- queries ----------------------------------------------------------------------------------------------------


def _string(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _alternation(values: Sequence[str]) -> str:
    special = set("\\.+*?()|[]{}^$")
    return _string("|".join("".join("\\" + c if c in special else c for c in v) for v in values))


def _selector(inputs: ReportInputs, metric: str, tiers: Sequence[TierRef], extra: str = "") -> str:
    """`metric` restricted to the policy's namespace and the given tiers' workloads (mesh labels)."""
    m = inputs.metrics
    matchers = [f'{m.namespace_label}="{_string(inputs.namespace)}"',
                f'{m.workload_label}=~"{_alternation([t.deployment for t in tiers])}"']
    return selector(metric, *matchers, extra)


def _subquery_step(inputs: ReportInputs) -> str:
    """About a thousand points over the window, never finer than a second."""
    return promql_duration(max(1.0, round((inputs.end - inputs.start) / 1000)))


def plan_queries(inputs: ReportInputs) -> dict[str, Query]:
    """Every PromQL query the report needs, by key; `assemble` reads the answers under the same keys."""
    m = inputs.metrics
    window = promql_duration(max(inputs.end - inputs.start, 1.0))
    policy = f'namespace="{_string(inputs.namespace)}", policy="{_string(inputs.name)}"'
    end = inputs.end
    queries = {
        "activations": Query(
            f'sum(increase({TRANSITIONS_METRIC}{{{policy}, reason="{ACTIVATED}"}}[{window}]))', end),
        "active_tier": Query(f"avg by (tier) (avg_over_time({ACTIVE_TIER_METRIC}{{{policy}}}[{window}]))", end),
        # The first sample of the window: the shares above are of the time since then, not of the window.
        "active_tier_since": Query(
            f"min(min_over_time(timestamp({ACTIVE_TIER_METRIC}{{{policy}}})[{window}:{_subquery_step(inputs)}]))",
            end),
    }
    c = inputs.confidence_metric
    confidence = (f'{inputs.confidence_namespace_label}="{_string(inputs.namespace)}", '
                  f'{inputs.confidence_workload_label}=~"{_alternation([t.deployment for t in inputs.tiers])}"')
    for part in ("sum", "count"):
        queries[f"confidence_{part}"] = Query(
            f"sum by ({inputs.confidence_workload_label}) (increase({c}_{part}{{{confidence}}}[{window}]))", end)

    by = f"le, {m.workload_label}"
    bucket = _selector(inputs, f"{m.duration_metric}_bucket", inputs.tiers)
    primary_bucket = _selector(inputs, f"{m.duration_metric}_bucket", inputs.tiers[:1])
    before = promql_duration(inputs.evaluation_window)
    for i, p in enumerate(fallback_periods(inputs)):
        length = promql_duration(max(p.seconds, 1.0))
        queries[f"latency_during:{i}"] = Query(f"sum by ({by}) (increase({bucket}[{length}]))", p.end)
        queries[f"latency_before:{i}"] = Query(f"sum by ({by}) (increase({primary_bucket}[{before}]))", p.start)

    if inputs.segment_label:
        label = inputs.segment_label
        requests = m.requests_metric
        labelled = _selector(inputs, requests, inputs.tiers, label + '!=""')
        everyone = _selector(inputs, requests, inputs.tiers)
        queries["segment_present"] = Query(f"count(last_over_time({labelled}[{window}]))", end)
        queries["segment_total"] = Query(f"sum by ({label}) (increase({everyone}[{window}]))", end)
        if inputs.fallbacks:
            fallbacks = _selector(inputs, requests, inputs.fallbacks)
            queries["segment_fallback"] = Query(f"sum by ({label}) (increase({fallbacks}[{window}]))", end)
    return queries


# ---- reading answers --------------------------------------------------------------------------------------------


def _value(sample: Mapping[str, Any]) -> float | None:
    try:
        number = float(sample["value"][1])
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _by_label(answer: QueryAnswer, label: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for sample in answer or ():
        number = _value(sample)
        if number is not None:
            key = str(sample.get("metric", {}).get(label, ""))
            out[key] = out.get(key, 0.0) + number
    return out


def _scalar(answer: QueryAnswer) -> float | None:
    values = [v for v in (_value(s) for s in answer or ()) if v is not None]
    return sum(values) if values else None


Buckets = dict[float, float]
"""Upper bound (le) -> cumulative count."""


def _buckets(answer: QueryAnswer, workload_label: str) -> dict[str, Buckets]:
    out: dict[str, Buckets] = {}
    for sample in answer or ():
        number = _value(sample)
        metric = sample.get("metric", {})
        try:
            le = float(metric.get("le", ""))
        except ValueError:
            continue
        if number is None:
            continue
        per = out.setdefault(str(metric.get(workload_label, "")), {})
        per[le] = per.get(le, 0.0) + number
    return out


def _add(into: Buckets, more: Buckets) -> None:
    for le, count in more.items():
        into[le] = into.get(le, 0.0) + count


def total(buckets: Buckets) -> float:
    return buckets.get(math.inf, 0.0)


def histogram_quantile(q: float, buckets: Buckets) -> float | None:
    """Prometheus's histogram_quantile on cumulative buckets: linear within the bucket holding the rank.

    None without observations or without a +Inf bucket; the highest finite bound when the rank falls in +Inf.
    """
    if math.inf not in buckets:
        return None
    bounds = sorted(buckets)
    counts = [buckets[b] for b in bounds]
    for i in range(1, len(counts)):  # increase() over buckets can be slightly non-monotonic
        counts[i] = max(counts[i], counts[i - 1])
    observed = counts[-1]
    if observed <= 0:
        return None
    rank = q * observed
    for i, (bound, count) in enumerate(zip(bounds, counts)):
        if count >= rank:
            if bound == math.inf:
                return bounds[-2] if len(bounds) > 1 else None
            lower = bounds[i - 1] if i > 0 else 0.0
            below = counts[i - 1] if i > 0 else 0.0
            if i == 0 and bound <= 0:
                return bound
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
    return bounds[-2] if len(bounds) > 1 else None


# ---- assembly ---------------------------------------------------------------------------------------------------


def _activations(inputs: ReportInputs, answers: Mapping[str, QueryAnswer]) -> Activations:
    entries = _history(inputs.status, inputs.end)
    counted = sum(1 for t, e in entries if inputs.start < t <= inputs.end and e.get("reason") == ACTIVATED)
    scraped = _scalar(answers.get("activations"))
    from_prometheus = None if scraped is None else round(scraped)
    if history_complete(inputs):
        return Activations(counted, "status.history", False, counted, from_prometheus)
    if from_prometheus is not None:
        return Activations(max(counted, from_prometheus), "prometheus", False, counted, from_prometheus)
    return Activations(counted, "status.history", True, counted, None)


def _latency(inputs: ReportInputs, answers: Mapping[str, QueryAnswer], periods: list[Period],
             ) -> tuple[Latency, dict[str, Buckets]]:
    """The quantile per tier over the fallback periods, and primary minus fallbacks."""
    label = inputs.metrics.workload_label
    scale = 1000.0 if inputs.metrics.duration_in_seconds else 1.0
    during: dict[str, Buckets] = {}
    before: Buckets = {}
    answered = False
    for i in range(len(periods)):
        answer = answers.get(f"latency_during:{i}")
        answered = answered or answer is not None
        for workload, b in _buckets(answer, label).items():
            _add(during.setdefault(workload, {}), b)
        _add(before, _buckets(answers.get(f"latency_before:{i}"), label).get(inputs.tiers[0].deployment, {}))
    seconds = sum(p.seconds for p in periods)
    q = inputs.quantile
    if not periods:
        return Latency(None, None, None, q, 0, 0.0, "no fallback period in the window"), during
    if not answered:
        return Latency(None, None, None, q, len(periods), seconds, "latency histogram not read"), during
    fallback: Buckets = {}
    for t in inputs.fallbacks:
        _add(fallback, during.get(t.deployment, {}))
    primary_during = during.get(inputs.tiers[0].deployment, {})
    if total(primary_during) >= 1:
        primary, basis = primary_during, "during fallback"
    elif total(before) >= 1:
        primary, basis = before, "before each activation"
    else:
        primary, basis = {}, "no primary requests during or just before the fallback periods"
    p_ms = histogram_quantile(q, primary)
    f_ms = histogram_quantile(q, fallback)
    p_ms = None if p_ms is None else p_ms * scale
    f_ms = None if f_ms is None else f_ms * scale
    gained = p_ms - f_ms if p_ms is not None and f_ms is not None else None
    note = "" if f_ms is not None else "no fallback requests in the latency histogram during the fallback periods"
    per_tier = {**during, inputs.tiers[0].deployment: primary}
    return Latency(gained, p_ms, f_ms, q, len(periods), seconds, basis, note), per_tier


def _segments(inputs: ReportInputs, answers: Mapping[str, QueryAnswer]) -> Segments:
    label = inputs.segment_label
    if not label:
        return Segments(None, False, note="no --segment-label given")
    present = answers.get("segment_present")
    if present is None:
        return Segments(label, False, note="segment query failed")
    if not _scalar(present):
        return Segments(label, False, note=(
            f"label {label!r} not found on {inputs.metrics.requests_metric} for this policy's workloads in the window"))
    totals = _by_label(answers.get("segment_total"), label)
    fallback = _by_label(answers.get("segment_fallback"), label)
    segments = tuple(Segment(value or "(unset)", totals[value], fallback.get(value, 0.0))
                     for value in sorted(totals))
    everyone = sum(totals.values())
    overall = sum(fallback.get(v, 0.0) for v in totals) / everyone if everyone > 0 else None
    return Segments(label, True, segments, overall)


def _ratio(text: Any) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def assemble(inputs: ReportInputs, answers: Mapping[str, QueryAnswer]) -> Report:
    """The report from the inputs and the answers to `plan_queries(inputs)` (missing keys: not read)."""
    status = inputs.status
    notes: list[str] = []
    window = inputs.end - inputs.start

    shares = {t: v for t, v in _by_label(answers.get("active_tier"), "tier").items() if t}
    since = _scalar(answers.get("active_tier_since"))
    periods = serving_periods(inputs)
    complete = history_complete(inputs)
    seconds: dict[str, float]
    if shares and since is not None and not (complete and periods):
        # A complete history is exact; the operator's gauge is sampled, so it only fills in a truncated one.
        time_source, covered = "prometheus", inputs.end - max(inputs.start, since)
        seconds = {t: v * covered for t, v in shares.items()}
        if covered < window - 1:
            notes.append(f"the operator's metrics cover only the last {covered:.0f}s of the window")
    elif periods:
        time_source = "status.history"
        covered = sum(p.seconds for p in periods)
        seconds = {}
        for p in periods:
            seconds[p.tier] = seconds.get(p.tier, 0.0) + p.seconds
        if inputs.created is not None and inputs.created > inputs.start:
            notes.append(f"the policy was created {inputs.created - inputs.start:.0f}s into the window: "
                         "time per tier covers its lifetime only")
        if not complete:
            notes.append(f"status.history keeps the last {HISTORY_LIMIT} transitions: time per tier covers "
                         f"only the last {covered:.0f}s of the window")
    else:
        time_source, covered, seconds = "unknown", 0.0, {}
    fallback_seconds = sum(v for t, v in seconds.items() if t != PRIMARY) if seconds else None

    activations = _activations(inputs, answers)
    if activations.lower_bound:
        notes.append(f"status.history keeps the last {HISTORY_LIMIT} transitions; "
                     "scrape the operator's metrics for a complete count")
    fb_periods = fallback_periods(inputs)
    latency, during = _latency(inputs, answers, fb_periods)

    sums = _by_label(answers.get("confidence_sum"), inputs.confidence_workload_label)
    counts = _by_label(answers.get("confidence_count"), inputs.confidence_workload_label)
    tiers = []
    for t in inputs.tiers:
        n = counts.get(t.deployment, 0.0)
        confidence = sums[t.deployment] / n if n > 0 and t.deployment in sums else None
        secs = seconds.get(t.name) if seconds else None
        if seconds and secs is None:
            secs = 0.0
        buckets = during.get(t.deployment, {})
        lat = histogram_quantile(inputs.quantile, buckets)
        if lat is not None and inputs.metrics.duration_in_seconds:
            lat *= 1000.0
        tiers.append(TierFigures(
            t.name, t.deployment, secs, (secs / covered) if secs is not None and covered > 0 else None,
            lat, total(buckets), confidence, n))
    if answers.get("confidence_count") is not None and not counts:
        notes.append(f"no {inputs.confidence_metric} series for this policy's workloads in the window")

    ratio = _ratio(status.get("fallbackRatio"))
    used = ratio / inputs.max_fallback_ratio if ratio is not None and inputs.max_fallback_ratio > 0 else None
    weights = tuple((str(w.get("tier", "")), int(w.get("weight", 0))) for w in status.get("weights") or ())
    conditions = tuple((str(c.get("type", "")), str(c.get("status", "")), str(c.get("reason", "")))
                       for c in status.get("conditions") or ())
    return Report(
        namespace=inputs.namespace, name=inputs.name, start=inputs.start, end=inputs.end,
        active_tier=status.get("activeTier"), weights=weights, activations=activations,
        time_source=time_source, covered_seconds=covered, fallback_seconds=fallback_seconds,
        tiers=tuple(tiers), latency=latency, fallback_ratio=ratio, max_fallback_ratio=inputs.max_fallback_ratio,
        creep_window=inputs.creep_window, creep_budget_used=used,
        last_known_good_revision=status.get("lastKnownGoodRevision"), last_drill=_last_drill(status),
        segments=_segments(inputs, answers), conditions=conditions, notes=tuple(notes),
    )


def _last_drill(status: Mapping[str, Any]) -> str:
    """The most recent drill outcome recorded in status.lastDrills, in one line."""
    outcomes = sorted(status.get("lastDrills") or (), key=lambda o: str(o.get("time", "")))
    if not outcomes:
        return NO_DRILL
    last = outcomes[-1]
    return f"{last.get('result')} at {last.get('time')} ({last.get('tier')}): {last.get('message')}"
