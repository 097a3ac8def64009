"""A report for people (an aligned table) and for programs (JSON).

Every figure that is not known is printed as such, with the reason, rather than as a zero.
"""
from __future__ import annotations

from typing import Any

from understudy.backtest.render import _columns, when
from understudy.backtest.render import span as _span
from understudy.report.assemble import Report

UNKNOWN = "-"


def span(seconds: float) -> str:
    """A duration to the whole second: a report's window ends at a fractional now."""
    return _span(round(seconds))


def _ms(value: float | None) -> str:
    return UNKNOWN if value is None else f"{value:.1f} ms"


def _pct(value: float | None) -> str:
    return UNKNOWN if value is None else f"{100 * value:.1f}%"


def _activations(r: Report) -> str:
    a = r.activations
    if a.count is None:
        return "unknown"
    text = f"{'>= ' if a.lower_bound else ''}{a.count} FallbackActivated (from {a.source}"
    if a.from_prometheus is not None and a.source != "prometheus":
        text += f"; Prometheus counted {a.from_prometheus}"
    if a.source == "prometheus":
        text += f"; status.history holds {a.from_history}"
    return text + ")"


def _time_in_fallback(r: Report) -> str:
    if r.fallback_seconds is None:
        return "unknown (no history and no understudy_active_tier series)"
    share = r.fallback_seconds / r.covered_seconds if r.covered_seconds > 0 else 0.0
    return f"{span(r.fallback_seconds)} ({100 * share:.1f}% of {span(r.covered_seconds)}, from {r.time_source})"


def _creep(r: Report) -> tuple[str, str]:
    ratio = (f"{r.fallback_ratio:.3f} over the creep window {span(r.creep_window)} (status)"
             if r.fallback_ratio is not None else "not in status yet")
    if r.creep_budget_used is None:
        used = "unknown" if r.fallback_ratio is None else "no budget (maxFallbackRatio 0)"
    else:
        used = f"{100 * r.creep_budget_used:.0f}% (fallbackRatio / maxFallbackRatio {r.max_fallback_ratio:g})"
    return ratio, used


def _latency(r: Report) -> str:
    lat = r.latency
    p = f"p{100 * lat.quantile:g}"
    if lat.periods == 0 or lat.gained_ms is None:
        reason = lat.note or lat.primary_basis
        return f"unknown: {reason}"
    return (f"{lat.gained_ms:+.1f} ms ({p} primary {_ms(lat.primary_ms)} {lat.primary_basis} vs fallback "
            f"{_ms(lat.fallback_ms)}, over {lat.periods} fallback period(s), {span(lat.seconds)})")


def table(r: Report, prometheus: str | None) -> str:
    """The plain-text report: the evaluation criteria first, then per tier, segments and conditions."""
    weights = ", ".join(f"{t} {w}%" for t, w in r.weights) or "none recorded"
    ratio, used = _creep(r)
    p = f"P{100 * r.latency.quantile:g} IN FALLBACK"
    lines = [
        f"Report of FallbackPolicy {r.namespace}/{r.name}",
        *_columns([
            ["window", f"{when(r.start)} .. {when(r.end)} ({span(r.end - r.start)})"],
            ["prometheus", prometheus or "not read"],
        ]),
        *(f"  note: {n}" for n in r.notes),
        "",
        *_columns([
            ["active tier", f"{r.active_tier or 'unknown'} ({weights})"],
            ["fallback activations", _activations(r)],
            ["time in fallback", _time_in_fallback(r)],
            ["fallback ratio", ratio],
            ["creep budget used", used],
            ["latency gained", _latency(r)],
            ["last known good rev", r.last_known_good_revision or "none on record"],
            ["last drill", r.last_drill],
        ]),
        "",
        "Per tier",
        *_columns([["TIER", "DEPLOYMENT", "TIME", "SHARE", p, "REQS THEN", "CONFIDENCE", "PREDICTIONS"]] + [
            [t.tier, t.deployment, span(t.seconds) if t.seconds is not None else UNKNOWN, _pct(t.share),
             _ms(t.latency_ms), f"{t.latency_requests:.0f}",
             UNKNOWN if t.confidence is None else f"{t.confidence:.3f}", f"{t.predictions:.0f}"]
            for t in r.tiers
        ], right=(2, 3, 4, 5, 6, 7)),
        "",
    ]
    s = r.segments
    if not s.found:
        lines.append(f"Fallback share per segment: {s.note}")
    else:
        lines.append(f"Fallback share per segment ({s.label}; all segments {_pct(s.overall_share)})")
        lines.extend(_columns([["SEGMENT", "REQUESTS", "FALLBACK", "SHARE", "VS ALL"]] + [
            [g.value, f"{g.requests:.0f}", f"{g.fallback_requests:.0f}", _pct(g.share),
             UNKNOWN if s.overall_share is None else f"{100 * (g.share - s.overall_share):+.1f} pt"]
            for g in s.segments
        ], right=(1, 2, 3, 4)))
    lines.append("")
    lines.append("Conditions")
    lines.extend(_columns([[c, st, reason] for c, st, reason in r.conditions])
                 if r.conditions else ["  none in status"])
    return "\n".join(lines) + "\n"


def to_json(r: Report, prometheus: str | None) -> dict[str, Any]:
    """The report for programs: camelCase keys as in the FallbackPolicy status, times in RFC 3339."""
    lat, seg, act = r.latency, r.segments, r.activations
    return {
        "policy": {"namespace": r.namespace, "name": r.name},
        "window": {"start": when(r.start), "end": when(r.end), "seconds": r.end - r.start},
        "prometheus": prometheus,
        "notes": list(r.notes),
        "activeTier": r.active_tier,
        "weights": [{"tier": t, "weight": w} for t, w in r.weights],
        "activations": {"count": act.count, "source": act.source, "lowerBound": act.lower_bound,
                        "fromHistory": act.from_history, "fromPrometheus": act.from_prometheus},
        "timeInFallback": {"seconds": r.fallback_seconds, "coveredSeconds": r.covered_seconds,
                           "source": r.time_source},
        "fallbackRatio": r.fallback_ratio,
        "creep": {"maxFallbackRatio": r.max_fallback_ratio, "windowSeconds": r.creep_window,
                  "budgetUsed": r.creep_budget_used},
        "latency": {"quantile": lat.quantile, "gainedMs": lat.gained_ms, "primaryMs": lat.primary_ms,
                    "fallbackMs": lat.fallback_ms, "primaryBasis": lat.primary_basis,
                    "fallbackPeriods": lat.periods, "fallbackSeconds": lat.seconds, "note": lat.note or None},
        "tiers": [
            {"tier": t.tier, "deployment": t.deployment, "seconds": t.seconds, "share": t.share,
             "latencyMs": t.latency_ms, "latencyRequests": t.latency_requests,
             "meanConfidence": t.confidence, "predictions": t.predictions}
            for t in r.tiers
        ],
        "lastKnownGoodRevision": r.last_known_good_revision,
        "lastDrill": None,
        "lastDrillNote": r.last_drill,
        "segments": {
            "label": seg.label, "found": seg.found, "note": seg.note or None, "overallShare": seg.overall_share,
            "segments": [{"value": g.value, "requests": g.requests, "fallbackRequests": g.fallback_requests,
                          "share": g.share} for g in seg.segments],
        },
        "conditions": [{"type": c, "status": st, "reason": reason} for c, st, reason in r.conditions],
    }
