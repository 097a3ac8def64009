"""`kubectl understudy get` as text (a tree per policy) and as JSON: a PolicyView in, text out (pure).

On a terminal the text has colour and symbols; piped, it is plain ASCII with the same words, so nothing a
person or a script needs is carried by a colour or a symbol alone.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from understudy.backtest.render import _columns, span, when
from understudy.engine import PRIMARY
from understudy.kubectl.timeline import Entry
from understudy.kubectl.view import PolicyView, TierView, TriggerView

Cell = tuple[str, str | None]
"""Text and its tone (a key of TONES, or None)."""
TONES = {"bad": "31", "good": "32", "warn": "33", "serving": "1;36", "dim": "2", "head": "1"}
"""ANSI SGR codes: red, green, yellow, bold cyan, faint, bold."""


@dataclass(frozen=True)
class Style:
    color: bool = False
    symbols: bool = False

    def paint(self, text: str, tone: str | None) -> str:
        if not self.color or tone is None or not text:
            return text
        return f"\x1b[{TONES[tone]}m{text}\x1b[0m"

    def mark(self, symbol: str, word: str) -> str:
        return f"{symbol} {word}" if self.symbols else word

    @property
    def branches(self) -> tuple[str, str, str, str]:
        """(branch, last branch, continued, blank) of the tree."""
        return ("├─ ", "└─ ", "│  ", "   ") if self.symbols else ("+- ", "`- ", "|  ", "   ")


PLAIN = Style()
TERMINAL = Style(color=True, symbols=True)


def ago(moment: float | None, now: float) -> str:
    """How long ago, to the whole second."""
    if moment is None:
        return "-"
    return f"{span(round(max(now - moment, 0.0)))} ago"


def at(moment: float) -> str:
    """A time to the whole second, as status writes them."""
    return when(math.floor(moment))


def reading(trigger: TriggerView, value: str | None) -> str:
    """A recorded value in the trigger's unit: 2412ms, 0.6."""
    if value is None:
        return "-"
    try:
        number = float(value)
    except ValueError:
        return value
    text = f"{number:.4g}" if abs(number) < 1e4 else f"{number:.0f}"
    return text + trigger.unit


def get(view: PolicyView, now: float, style: Style = PLAIN) -> str:
    """The whole `get` rendering: a header of what matters now, the tier tree, the recent transitions."""
    lines = [style.paint(f"FallbackPolicy {view.namespace}/{view.name}", "head") + f"  mode {view.mode}"]
    lines += [f"  {label:<11} {text}" for label, text in header(view, now, style)]
    lines += ["", *tree(view, now, style), "", "Recent transitions"]
    lines += [f"  {line}" for line in transitions(view, view.recent, now, style)] or ["  none"]
    return "\n".join(lines) + "\n"


def header(view: PolicyView, now: float, style: Style) -> list[tuple[str, str]]:
    rows = [("Serving", serving(view, now, style))]
    rows += [("Cause", style.paint(c, "bad")) for c in causes(view)]
    if view.restore is not None:
        tier, step = view.restore
        rows.append(("Restore", f"to {tier}: step {step + 1} of {len(view.restore_steps)} "
                                f"({view.restore_steps[step]}% on {tier})"))
    if view.held is not None:
        tier, since = view.held
        rows.append(("Restore", style.paint(
            f"to {tier} held for approval since {at(since)} ({ago(since, now)}): "
            f"kubectl understudy approve {view.name} -n {view.namespace}", "warn")))
    if view.manual_approval:
        rows.append(("Approval", "Manual: a restore waits for kubectl understudy approve"))
    override = overrides(view)
    if override:
        rows.append(("Override", style.paint(override, "warn")))
    rows.append(("Creep", creep(view, style)))
    drill = drills(view)
    if drill:
        rows.append(("Drill", drill))
    rows.append(("Conditions", "  ".join(conditions(view, style)) or "none yet"))
    if view.generation is not None and view.observed_generation is not None and (
            view.observed_generation < view.generation):
        rows.append(("Note", f"the operator has not evaluated generation {view.generation} yet "
                             f"(the status is of generation {view.observed_generation})"))
    rows += [("Note", f"status.engine: {r}") for r in view.repaired]
    return rows


def serving(view: PolicyView, now: float, style: Style) -> str:
    if not view.evaluated:
        return style.paint("not evaluated yet: the operator has written no status", "warn")
    shares = ", ".join(f"{t.name} {t.weight}%" for t in view.tiers if t.weight)
    tone = "good" if view.active_tier == PRIMARY and view.restore is None else "serving"
    since = f" since {at(view.last_move)} ({ago(view.last_move, now)})" if view.last_move is not None else ""
    return style.paint(shares, tone) + since


def causes(view: PolicyView) -> list[str]:
    """Why each tier better than the one that serves does not serve (empty when the primary serves all)."""
    active = [t.name for t in view.tiers].index(view.active_tier)
    out = []
    for tier in view.tiers[:active]:
        if view.restore is not None and tier.name == view.restore[0]:
            continue
        why = unfit(tier)
        if why:
            out.append(f"{tier.name} {why}")
    return out


def unfit(tier: TierView) -> str:
    if tier.tripped:
        trigger = next((t for t in tier.triggers if t.name == tier.trip_trigger), None)
        if trigger is None:
            return f"tripped on {tier.trip_trigger}" if tier.trip_trigger else "tripped"
        value = f"{reading(trigger, trigger.observed)}, " if trigger.observed is not None else ""
        return f"tripped on {trigger.name} ({value}{trigger.limit})"
    if tier.ready is None:
        return f"has no Deployment ({tier.deployment} not found)"
    if tier.unready or tier.ready == 0:
        return "has no ready replicas"
    if tier.capacity_short:
        return "cannot carry the load on its ready replicas"
    return ""


def overrides(view: PolicyView) -> str:
    said = [text for text, on in ((f"pinned to {view.pinned}", view.pinned), ("paused", view.paused)) if on]
    text = ", ".join(said) + (f" (override by {view.override_by})" if said and view.override_by else "")
    return "; ".join(t for t in (text, "frozen by creep.action Freeze" if view.frozen else "") if t)


def creep(view: PolicyView, style: Style) -> str:
    ratio = view.fallback_ratio if view.fallback_ratio is not None else "-"
    text = (f"fallback ratio {ratio} (window {view.creep_window}), budget {view.creep_budget} of the window, "
            f"{view.creep_action}")
    return text + (" " + style.paint("EXCEEDED", "bad") if view.creep_exceeded else "")


def drills(view: PolicyView) -> str:
    if view.drill:
        d = view.drill
        return f"{d.get('tier')} at {d.get('share')}% until {d.get('endsAt')}"
    if view.last_drills:
        return "last: " + ", ".join(f"{d.get('tier')} {d.get('result')} at {d.get('time')}" for d in view.last_drills)
    return ""


def tree(view: PolicyView, now: float, style: Style) -> list[str]:
    """The tiers with their triggers beneath, in two aligned groups of rows."""
    branch, last, cont, blank = style.branches
    tier_rows: list[tuple[int, list[Cell]]] = []
    trigger_rows: list[tuple[int, list[Cell]]] = []
    for k, tier in enumerate(view.tiers):
        final = k == len(view.tiers) - 1
        tier_rows.append((len(tier_rows) + len(trigger_rows), [((last if final else branch) + tier.name, None),
                                                               *tier_cells(view, tier, style)]))
        for m, trigger in enumerate(tier.triggers):
            inner = last if m == len(tier.triggers) - 1 else branch
            trigger_rows.append((len(tier_rows) + len(trigger_rows), [
                ((blank if final else cont) + inner + trigger.name, None), *trigger_cells(trigger, now, style)]))
    width = max(len(cells[0][0]) for _, cells in tier_rows + trigger_rows)
    rows = sorted(_aligned(tier_rows, width, style, right=(1,)) + _aligned(trigger_rows, width, style))
    return [style.paint(view.name, "head"), *(line for _, line in rows)]


def tier_cells(view: PolicyView, tier: TierView, style: Style) -> list[Cell]:
    ready = "no Deployment" if tier.ready is None else f"{tier.ready}/{tier.desired} ready"
    word = condition(tier)
    symbol, tone = HEALTH.get(word, ("✖", "bad"))
    state: Cell = (style.mark(symbol, word), tone)
    role = ""
    if tier.name == view.active_tier:
        role = style.mark("●", "active")
    elif view.restore is not None and tier.name == view.restore[0]:
        role = style.mark("◐", "restoring")
    elif view.held is not None and tier.name == view.held[0]:
        role = style.mark("◷", "held for approval")
    return [(f"{tier.weight}%", "serving" if tier.weight else "dim"), (ready, "bad" if tier.ready == 0 else None),
            state, (f"breach {tier.breach_streak}/{view.trip_after}", None),
            (f"clear {tier.clear_streak}/{tier.clear_needed}", None), (role, "serving")]


HEALTH = {"healthy": ("✔", "good"), "breaching": ("!", "warn")}
"""Symbol and tone of a tier's condition word; every other word is a reason it cannot serve."""


def condition(tier: TierView) -> str:
    """One word or two for a tier's health, as the tree shows it."""
    if tier.tripped:
        return "tripped"
    if tier.ready is None:
        return "no Deployment"
    if tier.unready or tier.ready == 0:
        return "no ready pods"
    if tier.capacity_short:
        return "short of capacity"
    return "breaching" if tier.breach_streak else "healthy"


def trigger_cells(trigger: TriggerView, now: float, style: Style) -> list[Cell]:
    if trigger.state == "breached":
        value = reading(trigger, trigger.observed) if trigger.observed is not None else "value not recorded"
        source = f"{trigger.source} {ago(trigger.observed_at, now)}" if trigger.source else ""
        return [(trigger.limit, None), (style.mark("✖", "breached"), "bad"), (value, "bad"), (source, "dim")]
    if trigger.state == "no data":
        return [(trigger.limit, None), (style.mark("?", "no data"), "warn"), ("", None), ("MetricsMissing", "dim")]
    if trigger.state == "ok":
        return [(trigger.limit, None), (style.mark("✔", "ok"), "good"), ("", None), ("", None)]
    return [(trigger.limit, None), ("-", "dim"), ("", None), ("", None)]


def _aligned(rows: list[tuple[int, list[Cell]]], first: int, style: Style,
             right: Sequence[int] = ()) -> list[tuple[int, str]]:
    if not rows:
        return []
    count = max(len(cells) for _, cells in rows)
    widths = [first] + [max(len(cells[i][0]) for _, cells in rows if i < len(cells)) for i in range(1, count)]
    out = []
    for order, cells in rows:
        parts = []
        for i, (text, tone) in enumerate(cells):
            pad = " " * (widths[i] - len(text))
            parts.append(pad + style.paint(text, tone) if i in right else style.paint(text, tone) + pad)
        out.append((order, "  ".join(parts).rstrip()))
    return out


def transitions(view: PolicyView, entries: Sequence[Entry], now: float, style: Style) -> list[str]:
    units = {t.name: t for tier in view.tiers for t in tier.triggers}
    lines = []
    for e in entries:
        move = f"{e.from_tier} -> {e.to_tier}" if e.from_tier and e.to_tier and e.from_tier != e.to_tier else (
            e.to_tier or e.tier or "")
        facts = ""
        if e.trigger and e.observed is not None and e.trigger in units:
            facts = f"  {e.trigger} {reading(units[e.trigger], e.observed)} ({units[e.trigger].limit})"
        tone = "bad" if e.type == "Warning" else None
        lines.append(f"{ago(e.time, now):>12}  {style.paint(e.reason, tone)}  {move}{facts}")
    return lines


def history(view: PolicyView) -> str:
    """`kubectl understudy history`: every transition and observation on record, oldest first."""
    if not view.transitions:
        return "no transitions recorded yet\n"
    units = {t.name: t for tier in view.tiers for t in tier.triggers}
    rows = [["TIME", "TYPE", "REASON", "TIERS", "OBSERVED", "MESSAGE"]]
    for e in view.transitions:
        tiers = f"{e.from_tier} -> {e.to_tier}" if e.from_tier and e.to_tier and e.from_tier != e.to_tier else (
            e.tier or e.to_tier or "")
        trigger = units.get(e.trigger or "")
        observed = f"{e.trigger} {reading(trigger, e.observed)} ({trigger.limit})" if trigger is not None and (
            e.observed is not None) else ""
        note = " (status.history only: its Event has expired)" if e.source == "history" else ""
        rows.append([when(e.time), e.type, e.reason, tiers, observed, e.message + note])
    return "\n".join(_columns(rows, indent="")) + "\n"


HEALTHY = {"Ready": "True", "MetricsAvailable": "True", "FallbackActive": "False", "CreepBudgetExceeded": "False",
           "LastDrillPassed": "True"}
"""Each condition's status when all is well; any other status shows its reason, in red, except a fallback
serving (yellow: degraded, as designed) and conditions of other owners."""


def conditions(view: PolicyView, style: Style) -> list[str]:
    out = []
    for c in view.conditions:
        well = HEALTHY.get(c.type) == c.status
        said = well or c.type == "FallbackActive"  # the Serving line says who serves
        text = f"{c.type}={c.status}" + ("" if said else f" ({c.reason})")
        tone = "good" if well else "bad" if c.type in HEALTHY and c.type != "FallbackActive" else "warn"
        out.append(style.paint(text, tone))
    return out


def entry_json(e: Entry) -> dict[str, Any]:
    """One transition for programs; unset fields are left out."""
    fields = {"time": when(e.time), "reason": e.reason, "type": e.type, "message": e.message, "tier": e.tier,
              "trigger": e.trigger, "observed": e.observed, "threshold": e.threshold, "fromTier": e.from_tier,
              "toTier": e.to_tier, "source": e.source}
    return {k: v for k, v in fields.items() if v is not None}


def to_json(view: PolicyView) -> dict[str, Any]:
    """The view for programs: the same facts as the text, camelCase keys, times in RFC 3339."""
    return {
        "namespace": view.namespace, "name": view.name, "mode": view.mode, "evaluated": view.evaluated,
        "activeTier": view.active_tier,
        "weights": [{"tier": t.name, "weight": t.weight} for t in view.tiers],
        "lastMove": when(view.last_move) if view.last_move is not None else None,
        "causes": causes(view),
        "tiers": [{
            "name": t.name, "deployment": t.deployment, "weight": t.weight, "readyReplicas": t.ready,
            "replicas": t.desired, "tripped": t.tripped, "tripTrigger": t.trip_trigger,
            "breachStreak": t.breach_streak, "tripAfter": view.trip_after, "clearStreak": t.clear_streak,
            "recoverAfter": view.recover_after, "failedProbes": t.failed_probes,
            "clearNeeded": t.clear_needed,
            "triggers": [{"name": g.name, "limit": g.limit, "unit": g.unit, "state": g.state, "observed": g.observed,
                          "observedAt": when(g.observed_at) if g.observed_at is not None else None,
                          "source": g.source} for g in t.triggers],
        } for t in view.tiers],
        "restore": None if view.restore is None else {
            "tier": view.restore[0], "step": view.restore[1] + 1, "steps": list(view.restore_steps)},
        "restoreApproval": "Manual" if view.manual_approval else "Automatic",
        "held": None if view.held is None else {"tier": view.held[0], "since": when(view.held[1])},
        "override": {"pinTier": view.pinned, "paused": view.paused, "restoreApprovedAt": view.approved_at,
                     "by": view.override_by},
        "frozen": view.frozen,
        "creep": {"fallbackRatio": view.fallback_ratio, "maxFallbackRatio": view.creep_budget,
                  "window": view.creep_window, "action": view.creep_action, "exceeded": view.creep_exceeded},
        "drill": view.drill, "lastDrills": list(view.last_drills),
        "conditions": [asdict(c) | {"since": when(c.since) if c.since is not None else None}
                       for c in view.conditions],
        "recent": [entry_json(e) for e in view.recent],
        "repaired": list(view.repaired),
    }
