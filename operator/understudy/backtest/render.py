"""A backtest's answer for people (an aligned table, a plot) and for programs (JSON), plus a progress line.

matplotlib is imported only when a plot is asked for: the table and JSON need nothing beyond the operator's
own dependencies.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence, TextIO

from understudy.backtest.replay import Replay, Summary


@dataclass(frozen=True)
class Context:
    """What was replayed, where it came from, and the caveats a reader must know."""

    namespace: str
    name: str
    prometheus: str
    requests: int
    readiness_known: bool
    notes: tuple[str, ...] = ()

    @property
    def readiness(self) -> str:
        if self.readiness_known:
            return "from kube-state-metrics"
        return "assumed full: no kube-state-metrics series for these Deployments (readyReplicas triggers cannot fire)"


def when(seconds: float) -> str:
    """RFC 3339 in UTC, to the second unless the time has a fraction."""
    moment = datetime.fromtimestamp(seconds, timezone.utc)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond // 1000:03d}"
    return text + "Z"


def span(seconds: float) -> str:
    """A duration the way the policy writes them: 1h2m5s, 30s, 0s."""
    whole = round(seconds)
    if abs(seconds - whole) > 1e-6 and seconds < 60:
        return f"{seconds:g}s"
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{v}{u}" for v, u in ((days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")) if v]
    return "".join(parts) or "0s"


def _columns(rows: Sequence[Sequence[str]], right: Sequence[int] = (), indent: str = "  ") -> list[str]:
    """Rows as lines with aligned columns; column indexes in `right` are right-aligned (numbers)."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(row)]
        lines.append((indent + "  ".join(cells)).rstrip())
    return lines


def table(summary: Summary, context: Context) -> str:
    """The plain-text report: outcome first, then time per tier, triggers and the audit timeline."""
    s = summary
    total = s.end - s.start
    moves = ", ".join(f"{r} {n}" for r, n in s.transitions_by_reason.items()) or "none"
    budget = f"budget {s.creep_max_ratio:g} of any {span(s.creep_window)} window, peak {s.peak_window_ratio:.3f}"
    if s.peak_at is not None:
        budget += f" at {when(s.peak_at)}"
    if s.creep_exceeded:
        creep = f"EXCEEDED at {when(s.creep_exceeded_at[0])} ({len(s.creep_exceeded_at)}x): {budget}"
    else:
        creep = f"within budget: {budget}"
    lines = [
        f"Backtest of FallbackPolicy {context.namespace}/{context.name}",
        *_columns([
            ["range", f"{when(s.start)} .. {when(s.end)} ({span(total)}), step {span(s.step)}, "
                      f"{s.evaluations} evaluations"],
            ["prometheus", f"{context.prometheus} ({context.requests} range requests)"],
            ["readiness", context.readiness],
        ]),
        *(f"  note: {n}" for n in context.notes),
        "",
        "Outcome",
        *_columns([
            ["fallback activations", f"{s.activations} ({s.episodes} episode(s) off the primary)"],
            ["transitions (flaps)", f"{s.transitions} ({moves})"],
            ["fallback ratio", f"{s.fallback_ratio:.3f} of the traffic was off the primary over the range"],
            ["creep budget", creep],
            ["evaluations w/o data", f"{s.unavailable_evaluations} (a signal of a serving tier had no data)"],
        ]),
        "",
        "Governance (what the policy would have done besides routing; assumptions in the notes above)",
        *_columns(_governance(s)),
        "",
        "Time per tier",
        *_columns([["TIER", "ACTIVE", "TRAFFIC", "SHARE"]] + [
            [t.tier, span(t.active_seconds), span(t.traffic_seconds),
             f"{100 * t.traffic_seconds / total:.1f}%" if total else "-"]
            for t in s.tiers
        ], right=(1, 2, 3)),
        "",
        "Triggers (trips, and evaluations past the threshold)",
        *(_columns([["TIER", "TRIGGER", "TRIPS", "BREACHED"]]
                   + [[t.tier, t.trigger, str(t.trips), str(t.breached)] for t in s.triggers],
                   right=(2, 3)) if s.triggers else ["  none breached"]),
        "",
        "Timeline",
        *(_columns([[when(e.at), e.record.reason, e.record.message] for e in s.timeline])
          if s.timeline else ["  no decision recorded: the policy would have left all traffic on the primary"]),
    ]
    return "\n".join(lines) + "\n"


LISTED = 3
"""Occurrences a table row spells out before it only counts the rest."""


def _listed(items: Sequence[str]) -> str:
    if not items:
        return "none"
    shown = ", ".join(items[:LISTED])
    return f"{len(items)}: {shown}" + (", ..." if len(items) > LISTED else "")


def _governance(s: Summary) -> list[list[str]]:
    return [
        ["rollbacks", _listed([f"to revision {r} at {when(t)}" for t, r in s.rollbacks])],
        ["freezes", _listed([when(t) for t in s.freezes])],
        ["scale-ups", _listed([f"{tier} to {n} replicas at {when(t)}" for t, tier, n in s.scale_ups])],
        ["scale-backs", _listed([f"{tier} to {n} replicas at {when(t)}" for t, tier, n in s.scale_downs])],
        ["drills", ", ".join(f"{n} {result.lower()}" for result, n in s.drills.items()) or "none"],
        *([["approvals", _listed([f"restore to {a.tier} held at {when(a.held_at)}, " + (
            f"approved at {when(a.approved_at)}" if a.approved_at is not None else "not approved")
            for a in s.approvals])]] if s.manual_approval else []),
    ]


def to_json(summary: Summary, context: Context) -> dict[str, Any]:
    """The report for programs: camelCase keys as in the FallbackPolicy status, times in RFC 3339."""
    s = summary
    total = s.end - s.start
    return {
        "policy": {"namespace": context.namespace, "name": context.name},
        "range": {"start": when(s.start), "end": when(s.end), "stepSeconds": s.step, "evaluations": s.evaluations},
        "prometheus": {"url": context.prometheus, "rangeRequests": context.requests},
        "readiness": "kube-state-metrics" if context.readiness_known else "assumed",
        "notes": list(context.notes),
        "activations": s.activations,
        "episodes": s.episodes,
        "transitions": s.transitions,
        "transitionsByReason": s.transitions_by_reason,
        "tiers": [
            {"tier": t.tier, "activeSeconds": t.active_seconds, "trafficSeconds": t.traffic_seconds,
             "trafficShare": t.traffic_seconds / total if total else 0.0}
            for t in s.tiers
        ],
        "triggers": [{"tier": t.tier, "trigger": t.trigger, "trips": t.trips, "breachedEvaluations": t.breached}
                     for t in s.triggers],
        "creep": {
            "fallbackRatio": s.fallback_ratio,
            "maxFallbackRatio": s.creep_max_ratio,
            "windowSeconds": s.creep_window,
            "peakWindowRatio": s.peak_window_ratio,
            "peakAt": when(s.peak_at) if s.peak_at is not None else None,
            "exceeded": s.creep_exceeded,
            "exceededAt": [when(t) for t in s.creep_exceeded_at],
        },
        "unavailableEvaluations": s.unavailable_evaluations,
        "governance": {
            "rollbacks": [{"time": when(t), "revision": r} for t, r in s.rollbacks],
            "freezes": [when(t) for t in s.freezes],
            "scaleUps": [{"time": when(t), "tier": tier, "replicas": n} for t, tier, n in s.scale_ups],
            "scaleBacks": [{"time": when(t), "tier": tier, "replicas": n} for t, tier, n in s.scale_downs],
            "drills": dict(s.drills),
            "approvals": [{"heldAt": when(a.held_at), "tier": a.tier,
                           "approvedAt": when(a.approved_at) if a.approved_at is not None else None}
                          for a in s.approvals],
        },
        "timeline": [
            {"time": when(e.at), "reason": e.record.reason, "message": e.record.message,
             **{k: v for k, v in (("tier", e.record.tier), ("trigger", e.record.trigger),
                                  ("observed", e.record.observed), ("threshold", e.record.threshold),
                                  ("fromTier", e.record.from_tier), ("toTier", e.record.to_tier)) if v is not None}}
            for e in s.timeline
        ],
    }


TIER_COLOURS = ("#2b7bba", "#e8a33d", "#c0392b", "#7d3c98", "#16a085", "#7f8c8d", "#d35400", "#2c3e50", "#27ae60")


def plot(result: Replay, context: Context, path: str | Path) -> None:
    """Each trigger's readings per tier against its threshold, the active tier shaded behind them, and the
    primary's share of traffic underneath (restore steps show as a staircase)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    policy = result.policy
    names = policy.tier_names
    colour = {n: TIER_COLOURS[i % len(TIER_COLOURS)] for i, n in enumerate(names)}
    times = [datetime.fromtimestamp(t, timezone.utc) for t in result.times]
    triggers = list(policy.triggers)
    fig, axes = plt.subplots(len(triggers) + 1, 1, sharex=True, squeeze=False,
                             figsize=(10, 1.9 * len(triggers) + 1.8),
                             gridspec_kw={"height_ratios": [3] * len(triggers) + [1.6]})
    panels = [a[0] for a in axes]
    runs = _runs(result.active)
    for ax, trigger in zip(panels, triggers):
        for tier in names:
            values = result.signals.get((tier, trigger.name))
            if values is not None:
                ax.plot(times, [float("nan") if v is None else v for v in values], color=colour[tier],
                        linewidth=1.3, label=tier)
        ax.axhline(trigger.threshold, color="black", linestyle="--", linewidth=1,
                   label=f"{trigger.comparison.value} {trigger.threshold:g}")
        unit = " (ms)" if trigger.kind.value in ("latency", "timeToFirstToken", "timePerOutputToken") else ""
        ax.set_ylabel(f"{trigger.name}{unit}", fontsize=9)
        ax.legend(loc="upper left", fontsize=8, ncol=len(names) + 1, frameon=False)
        ax.grid(alpha=0.3)
    weights = panels[-1]
    weights.step(times, [w[0] for w in result.weights], where="post", color=colour[names[0]], linewidth=1.5)
    weights.set_ylim(-5, 105)
    weights.set_ylabel(f"% on {names[0]}", fontsize=9)
    weights.grid(alpha=0.3)
    for ax in panels:
        for tier, first, last in runs:
            if tier != names[0]:
                end = result.times[min(last + 1, len(result.times) - 1)]
                ax.axvspan(times[first], datetime.fromtimestamp(end, timezone.utc), color=colour[tier],
                           alpha=0.15, linewidth=0)
    shaded = [Patch(color=colour[n], alpha=0.3, label=f"{n} active") for n in names[1:] if any(r[0] == n for r in runs)]
    if shaded:
        weights.legend(handles=shaded, loc="lower left", fontsize=8, frameon=False, ncol=len(shaded))
    weights.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M", tz=timezone.utc))
    weights.set_xlabel("time (UTC)", fontsize=9)
    first_at, last_at = (when(result.times[0]), when(result.times[-1])) if result.times else ("", "")
    fig.suptitle(f"Backtest of {context.namespace}/{context.name}: {first_at} .. {last_at}, step {span(result.step)}",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _runs(active: Sequence[str]) -> list[tuple[str, int, int]]:
    """(tier, first index, last index) of each stretch with the same active tier."""
    runs: list[tuple[str, int, int]] = []
    for i, tier in enumerate(active):
        if runs and runs[-1][0] == tier:
            runs[-1] = (tier, runs[-1][1], i)
        else:
            runs.append((tier, i, i))
    return runs


class ProgressLine:
    """A progress display on stderr: tqdm's bar when installed, else one rewritten line; silent when off."""

    def __init__(self, total: int, label: str, enabled: bool, stream: TextIO | None = None) -> None:
        self.total, self.label, self.enabled = total, label, enabled and total > 0
        self.stream = stream or sys.stderr
        self.done = 0
        self._bar: Any = None
        if self.enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                return
            self._bar = tqdm(total=total, desc=label, file=self.stream, leave=False)

    def __call__(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(n)
        else:
            print(f"\r{self.label}: {self.done}/{self.total} ({100 * self.done // self.total}%)",
                  end="", file=self.stream, flush=True)

    def close(self) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
        else:
            print("\r\033[K", end="", file=self.stream, flush=True)
