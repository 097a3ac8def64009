"""Engine state that comes from elsewhere: carried across a spec edit, or read back from status.

Status is input like any other: anyone with `patch` on fallbackpolicies/status (or a leader whose clock
runs ahead) can write it. `restore_state` therefore checks every field against the policy and the clock,
repairs or drops what it cannot trust, and says so in plain sentences; it never raises for bad content,
and a damaged accounting field never costs the routing. Only when the routing fields themselves are
unusable does it say so (`routing_known`), so the shell can read the weights off the routing object.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from operator import attrgetter, itemgetter
from typing import Any, Callable, Mapping, TypeVar

from understudy.engine import reasons
from understudy.engine.model import AuditRecord, Policy
from understudy.engine.plan import CREEP_BUCKETS, PROBE_BACKOFF_CAP, Plan, plan_for
from understudy.engine.state import CreepBucket, State, TierState, initial_state

T = TypeVar("T")


@dataclass(frozen=True)
class Restored:
    state: State
    """Always usable by `decide`: tiers and weights in the policy's order, weights summing to 100."""
    repaired: tuple[str, ...]
    """What could not be trusted and was repaired or dropped, one plain sentence each; empty when the
    status was sound (a tier the spec no longer has, or a field older statuses lack, is not damage)."""
    routing_known: bool
    """False when the status held no usable weights (and no `observed` weights were given): the state then
    routes everything to the primary as a placeholder. Read the weights off the routing object and call
    again with `observed`, rather than writing the placeholder."""

    @property
    def record(self) -> AuditRecord | None:
        """One StateRepaired warning for the shell to post, or None when nothing was repaired."""
        if not self.repaired:
            return None
        return AuditRecord(reasons.STATE_REPAIRED, "status.engine could not be trusted: " + "; ".join(self.repaired))


def restore_state(policy: Policy, status: Any, now: float, observed: Mapping[str, int] | None = None) -> Restored:
    """The engine state recorded in `status` (status.engine, as read from the API), checked against
    `policy` and `now` (epoch seconds).

    `observed` is the weights the routing object carries, by tier name: used only when the status's own
    weights are unusable. None status is a new policy: the initial state.
    """
    plan = plan_for(policy)
    if status is None:
        return Restored(initial_state(policy), (), True)
    fields = _Fields(status, round(now * 1000), plan)
    tiers = fields.tiers(policy)
    routing = fields.routing(max((t.min_requests for t in policy.triggers), default=1))
    known = routing is not None
    if routing is None and observed is not None:
        routing = _routing_from(plan, _weights(plan, [{"tier": n, "weight": w} for n, w in observed.items()]))
        fields.note("weights taken from the routing object" if routing is not None
                    else f"the routing object's weights {dict(observed)} are unusable too")
        known = routing is not None
    if routing is None:
        fresh = initial_state(policy)
        routing = (fresh.weights, fresh.active_tier, None, 0, 0)
    weights, active, restore, step, evidence = routing
    state = State(
        weights=weights,
        active_tier=active,
        tiers=tiers,
        restore_tier=restore,
        restore_step=step,
        restore_evidence=evidence,
        # A restarted routing is no move of the engine's: the next one need not wait for minDwell.
        last_transition_ms=fields.time("lastTransitionMs") if known else None,
        last_evaluation_ms=fields.time("lastEvaluationMs"),
        pinned_tier=fields.tier_name("pinnedTier"),
        paused=fields.flag("paused"),
        all_tiers_breached=fields.flag("allTiersBreached"),
        metrics_missing=fields.flag("metricsMissing"),
        creep_exceeded=fields.flag("creepExceeded"),
        creep_buckets=fields.buckets(),
        frozen=fields.flag("frozen", since_first_release=False),
        restore_stalled=fields.flag("restoreStalled", since_first_release=False),
    )
    held = fields.hold(policy, state)
    if held is not None:
        state = replace(state, held_tier=held[0], held_since_ms=held[1])
    return Restored(state, tuple(fields.notes), known)


def carry_over(policy: Policy, plan: Plan, state: State) -> State:
    """Carry a state across a spec change of the tier list: health by tier name, routing if it still fits.

    When a tier that carries traffic is removed (or the state does not add up), routing restarts from the
    primary, with no minDwell to wait for; the tiers' health carries over, so the next transition moves on
    from there without relearning.
    """
    index = plan.index
    restore = state.restore_tier
    shares = tuple(map(itemgetter(1), state.weights))
    routing_fits = (
        state.active_tier in index
        and (restore is None or restore in index and index[restore] < index[state.active_tier])
        and sum(shares) == 100 and min(shares) >= 0
        and all(w == 0 or n in index for n, w in state.weights)
    )
    # map() with the C getters: this runs on every evaluation, and almost always finds the state fits.
    names_fit = (tuple(map(attrgetter("name"), state.tiers)) == plan.names
                 and tuple(map(itemgetter(0), state.weights)) == plan.names)
    step_fits = 0 <= state.restore_step < len(plan.steps)
    if names_fit and routing_fits and step_fits:
        return state
    by_name = {t.name: t for t in state.tiers}
    tiers = tuple(by_name.get(n, TierState(n)) for n in plan.names)
    pinned = state.pinned_tier if state.pinned_tier in index else None
    if routing_fits:
        old = dict(state.weights)
        return replace(state, tiers=tiers, pinned_tier=pinned, weights=tuple((n, old.get(n, 0)) for n in plan.names),
                       restore_step=min(max(state.restore_step, 0), len(plan.steps) - 1),
                       **_hold_kept(state, index))
    fresh = initial_state(policy)
    return replace(state, tiers=tiers, pinned_tier=pinned, weights=fresh.weights, active_tier=fresh.active_tier,
                   restore_tier=None, restore_step=0, restore_evidence=0, last_transition_ms=None,
                   held_tier=None, held_since_ms=None)


def _hold_kept(state: State, index: Mapping[str, int]) -> dict[str, Any]:
    """A held restore survives an edit of the tier list while its tier is still better than the anchor."""
    tier = state.held_tier
    if tier in index and state.active_tier in index and index[tier] < index[state.active_tier]:
        return {}
    return {"held_tier": None, "held_since_ms": None}


Routing = tuple[tuple[tuple[str, int], ...], str, str | None, int, int]
"""(weights in policy order, active tier, restore tier, restore step, restore evidence)."""


def _weights(plan: Plan, raw: Any) -> dict[str, int] | str:
    """Weights by tier name, or why they are unusable. A tier the spec no longer has may keep 0%."""
    if not isinstance(raw, list):
        return f"weights is {_shown(raw)}, not a list"
    weights: dict[str, int] = {}
    for item in raw:
        tier = item.get("tier") if isinstance(item, Mapping) else None
        weight = item.get("weight") if isinstance(item, Mapping) else None
        if not isinstance(tier, str) or not _is_int(weight) or tier in weights:
            return f"weights entry {_shown(item)} is not a tier's percent"
        if not 0 <= weight <= 100:
            return f"weights give {tier} {weight}%"
        if tier in plan.index:
            weights[tier] = weight
        elif weight:
            return f"weights give {weight}% to {tier}, which is not a tier of this policy"
    if sum(weights.values()) != 100:
        return f"weights add up to {sum(weights.values())}%, not 100%"
    return weights


def _routing_from(plan: Plan, weights: dict[str, int] | str) -> Routing | None:
    """Anchor and restore as the weights show them: all on one tier, or a restore from the worse of two
    tiers to the better one at the largest step not above its share. None for unusable weights."""
    if isinstance(weights, str):
        return None
    carrying = sorted((plan.index[n] for n, w in weights.items() if w), reverse=True)
    ordered = tuple((n, weights.get(n, 0)) for n in plan.names)
    active = plan.names[carrying[0]]
    if len(carrying) == 1:
        return ordered, active, None, 0, 0
    better = plan.names[carrying[-1]]
    step = max((k for k, s in enumerate(plan.steps) if s <= weights[better]), default=0)
    return ordered, active, better, step, 0


class _Fields:
    """Reads status.engine field by field, noting each one it cannot trust."""

    def __init__(self, status: Any, now_ms: int, plan: Plan) -> None:
        self.notes: list[str] = []
        self.plan, self.now_ms = plan, now_ms
        self.tolerance_ms = plan.credit_cap_ms
        """How far ahead of `now` a time may be without comment: a clock a little behind the writer's."""
        if isinstance(status, Mapping) and status:
            self.status: Mapping[str, Any] = status
        else:
            self.status = {}
            self.note(f"status.engine is {_shown(status)}, not an object with the engine's state: started afresh")

    def note(self, text: str) -> None:
        self.notes.append(text)

    def _get(self, d: Mapping[str, Any], key: str, where: str, ok: Callable[[Any], bool], default: T,
             required: bool = True) -> T:
        if key not in d or d[key] is None:
            if required and self.status:
                self.note(f"{where}{key} is missing")
            return default
        value = d[key]
        if not ok(value):
            self.note(f"{where}{key} is {_shown(value)}: dropped")
            return default
        return value  # type: ignore[no-any-return]

    def flag(self, key: str, since_first_release: bool = True) -> bool:
        return self._get(self.status, key, "", lambda v: isinstance(v, bool), False, since_first_release)

    def tier_name(self, key: str) -> str | None:
        name = self._get(self.status, key, "", lambda v: isinstance(v, str), None, required=False)
        return name if name in self.plan.index else None

    def time(self, key: str) -> int | None:
        value = self._get(self.status, key, "", _is_int, None, required=False)
        if value is None:
            return None
        if value < 0:
            self.note(f"{key} is {value}: dropped")
            return None
        if value > self.now_ms + self.tolerance_ms:
            self.note(f"{key} was {(value - self.now_ms) / 1000:.0f}s in the future: set to now")
        return min(value, self.now_ms)

    def tiers(self, policy: Policy) -> tuple[TierState, ...]:
        raw = self._get(self.status, "tiers", "", lambda v: isinstance(v, list), [])
        by_name: dict[str, TierState] = {}
        for item in raw:
            name = item.get("name") if isinstance(item, Mapping) else None
            if not isinstance(name, str):
                self.note(f"tiers entry {_shown(item)} has no name: dropped")
            elif name in by_name:
                self.note(f"tiers lists {name} twice: the first kept")
            elif name in self.plan.index:
                by_name[name] = self._tier(item, name, policy)
        return tuple(by_name.get(n, TierState(n)) for n in self.plan.names)

    def hold(self, policy: Policy, state: State) -> tuple[str, int] | None:
        """status.engine.restoreHeld: kept only for a better tier than the anchor, outside a restore, and
        while the policy asks for approval (a spec edit to Automatic, or a removed tier, is no damage)."""
        raw = self._get(self.status, "restoreHeld", "", lambda v: isinstance(v, Mapping), None, required=False)
        if raw is None:
            return None
        tier = self._get(raw, "tier", "restoreHeld.", lambda v: isinstance(v, str), None)
        since = self._get(raw, "sinceMs", "restoreHeld.", _is_int, None)
        if tier is None or since is None or tier not in self.plan.index or not self.plan.manual_restore:
            return None
        index = self.plan.index
        if state.restore_tier is not None or index[tier] >= index[state.active_tier]:
            self.note(f"restoreHeld names {tier}, which the routing gives no restore to wait for: dropped")
            return None
        if since < 0:
            self.note(f"restoreHeld.sinceMs is {since}: set to now")
            since = self.now_ms
        elif since > self.now_ms + self.tolerance_ms:
            self.note(f"restoreHeld.sinceMs was {(since - self.now_ms) / 1000:.0f}s in the future: set to now")
        return tier, min(since, self.now_ms)

    def _tier(self, d: Mapping[str, Any], name: str, policy: Policy) -> TierState:
        where = f"tiers[{name}]."
        triggers = {t.name for t in policy.triggers}
        trigger = self._get(d, "tripTrigger", where, lambda v: isinstance(v, str), None, required=False)
        # Absent in statuses written before the probe backoff: no failed probes, no probe under way.
        failed = self._streak(d, "failedProbes", where, PROBE_BACKOFF_CAP, required=False)
        return TierState(
            name=name,
            breach_streak=self._streak(d, "breachStreak", where, policy.trip_after),
            clear_streak=self._streak(d, "clearStreak", where, self.plan.clear_needed(failed)),
            tripped=self._get(d, "tripped", where, lambda v: isinstance(v, bool), False),
            trip_trigger=trigger if trigger in triggers else None,
            capacity_short=self._get(d, "capacityShort", where, lambda v: isinstance(v, bool), False),
            unready=self._get(d, "unready", where, lambda v: isinstance(v, bool), False, required=False),
            failed_probes=failed,
            probing=self._get(d, "probing", where, lambda v: isinstance(v, bool), False, required=False),
        )

    def _streak(self, d: Mapping[str, Any], key: str, where: str, cap: int, required: bool = True) -> int:
        value = self._get(d, key, where, _is_int, 0, required)
        if not 0 <= value <= cap:
            self.note(f"{where}{key} {value} is outside 0..{cap}: clamped")
        return min(max(value, 0), cap)

    def routing(self, min_requests: int) -> Routing | None:
        """The routing fields, made consistent; None (noted) when the weights are unusable."""
        weights = _weights(self.plan, self.status.get("weights"))
        if isinstance(weights, str):
            if self.status:
                self.note(weights)
            return None
        names, index = self.plan.names, self.plan.index
        active = _name(self.status.get("activeTier"))
        raw = self.status.get("restore")
        if raw is not None and not isinstance(raw, Mapping):
            self.note(f"restore is {_shown(raw)}, not an object: taken from the weights")
            raw = {}
        restore = _name((raw or {}).get("tier"))
        step, evidence = self._step(raw or {}), self._evidence(raw or {}, max(min_requests, 1) * 1000)
        carrying = {n for n, w in weights.items() if w}
        consistent = active in index and (
            carrying == {active} and restore is None
            or restore in index and index[restore] < index[active] and carrying == {active, restore})
        if consistent:
            return tuple((n, weights.get(n, 0)) for n in names), active, restore, step, evidence
        self.note(f"activeTier {_shown(active)} and restore {_shown(restore)} do not match the weights: "
                  f"taken from the weights")
        return _routing_from(self.plan, weights)

    def _step(self, raw: Mapping[str, Any]) -> int:
        if "step" not in raw:
            return 0
        last = len(self.plan.steps) - 1
        value = self._get(raw, "step", "restore.", _is_int, 0)
        if not 0 <= value <= last:
            self.note(f"restore.step {value} is outside 0..{last}: clamped")
        return min(max(value, 0), last)

    def _evidence(self, raw: Mapping[str, Any], cap: int) -> int:
        """Requests credited to the restore step: never more than a step can need, or a forged count would
        advance a restore that proved nothing."""
        value = self._get(raw, "evidenceMilli", "restore.", _is_int, 0, required=False)
        if not 0 <= value <= cap:
            self.note(f"restore.evidenceMilli {value} is outside 0..{cap}: clamped")
        return min(max(value, 0), cap)

    def buckets(self) -> tuple[CreepBucket, ...]:
        """Creep buckets of the current window: none dated ahead of now, none observing more than its
        width (plus the credit of one evaluation), none off the primary longer than observed."""
        raw = self._get(self.status, "creepBuckets", "", lambda v: isinstance(v, list), [])
        plan = self.plan
        ceiling = plan.bucket_ms + plan.credit_cap_ms
        kept: dict[int, CreepBucket] = {}
        dropped = 0
        for item in raw:
            values = [item.get(k) for k in ("bucket", "offPrimaryMs", "observedMs")] if isinstance(
                item, Mapping) else []
            if len(values) != 3 or not all(_is_int(v) for v in values):
                dropped += 1
                continue
            index, off, seen = values
            if index * plan.bucket_ms > self.now_ms + self.tolerance_ms or not 0 <= off <= seen <= ceiling \
                    or index in kept:
                dropped += 1
            else:
                kept[index] = CreepBucket(index, off, seen)
        newest = sorted(kept)[-CREEP_BUCKETS:]  # the engine keeps no more; those past the window it drops itself
        dropped += len(kept) - len(newest)
        if dropped:
            self.note(f"creepBuckets: {dropped} dated in the future, duplicated, impossible or too many: dropped")
        return tuple(kept[i] for i in newest)


def _name(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
