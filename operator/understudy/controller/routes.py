"""The leader's bookkeeping of routes: who owns each (ownership.py) and whether the watched object still
carries what was written (drift.py). Makes no request and no write; the writer acts on what it says.

The cycle calls `RouteKeeper.observe` once per cycle. It recomputes ownership only when the policy
snapshots changed, and compares routing snapshots only when the routing watch saw a change, and then only
for objects whose resourceVersion moved: a steady state costs a counter comparison.

Per policy:
- a policy that does not own its route is `Ready=False, RouteConflict` (one Event per episode) and routes
  nothing; when it becomes the owner, `routed` is forgotten so its next evaluation writes its weights;
- a route whose managed weights differ from `routed` (what the operator wrote last) is due for a repair:
  the writer writes `routed` back (`repairs`), once, with one `RoutingDriftRepaired` Event if that
  changed anything;
- a routing object that disappeared makes the next evaluation route again, which reports TargetNotFound
  until it is back, and then counts as a repaired drift.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Hashable, Mapping, Protocol

from understudy.controller.drift import drift, routing_key
from understudy.controller.ownership import Claim, PolicyKey, conflict_message, conflicts, describe
from understudy.controller.watches import RoutingStore
from understudy.engine import AuditRecord
from understudy.engine.model import Mode
from understudy.routing import ServiceBackend, Weights

DRIFT_REASON = "RoutingDriftRepaired"
CONFLICT_REASON = "RouteConflict"


class _Snapshot(Protocol):
    created: float


@dataclass
class RouteState:
    """One policy's route bookkeeping (kept beside its runtime, dropped with it)."""

    owner: PolicyKey | None = None
    """The policy that owns this one's route, when it is not this one."""
    announced: bool = False
    """Whether the RouteConflict of the current episode has been recorded."""
    seen: str | None = None
    """resourceVersion of the routing object last compared."""
    drift: str | None = None
    """What the routing object carried instead of `routed`, until a write puts it right."""


class RouteKeeper:
    def __init__(self) -> None:
        self.states: dict[Hashable, RouteState] = {}
        self.repairs: list[Hashable] = []
        """Policies whose route drifted and that the writer should write back this cycle."""
        self._policies: object = None
        self._routing_changes = -1

    def reset(self) -> None:
        """Forget everything, with the Evaluator's runtimes (a new leadership starts afresh)."""
        self.states.clear()
        self.repairs = []
        self._policies, self._routing_changes = None, -1

    def observe(self, policies: Mapping[Hashable, _Snapshot], runtimes: Mapping[Hashable, Any],
                routing: RoutingStore | None) -> None:
        """Update ownership and find drifted routes; `runtimes` are the Evaluator's (compiled, routed, ...)."""
        for gone in set(self.states) - set(runtimes):
            del self.states[gone]
        owners_moved = policies is not self._policies
        if owners_moved:
            self._policies = policies
            self._own(policies, runtimes)
        self.repairs = []
        if routing is None or (routing.changes == self._routing_changes and not owners_moved):
            return
        self._routing_changes = routing.changes
        for key, rt in runtimes.items():
            state = self.states.setdefault(key, RouteState())
            if rt.compiled is None or state.owner is not None or rt.routed is None:
                continue
            namespace = key[0]  # type: ignore[index]
            snap = routing.objects.get(routing_key(namespace, rt.compiled.routing))
            if snap is None:
                if state.seen is not None:  # deleted: routing again reports it, and repairs a recreation
                    state.seen, state.drift, rt.routed = None, "nothing (it was deleted)", None
                continue
            if snap.resource_version == state.seen:
                continue
            state.seen = snap.resource_version
            selector = rt.backend.selector if isinstance(rt.backend, ServiceBackend) else None
            found = drift(snap, namespace, rt.compiled.routing, rt.compiled.policy.tiers, rt.routed, selector)
            if found is not None:
                state.drift = found
                self.repairs.append(key)

    def _own(self, policies: Mapping[Hashable, _Snapshot], runtimes: Mapping[Hashable, Any]) -> None:
        claims = [Claim(key, rt.compiled.routing, policies[key].created)  # type: ignore[arg-type]
                  for key, rt in runtimes.items()
                  if rt.compiled is not None and rt.compiled.policy.mode is Mode.ENFORCE and key in policies]
        losers = conflicts(claims)
        for key, rt in runtimes.items():
            state = self.states.setdefault(key, RouteState())
            owner = losers.get(key)  # type: ignore[call-overload]
            if owner == state.owner:
                continue
            if owner is None:  # the route is this policy's now: its next evaluation writes its weights
                state.announced = False
                rt.routed = None
            state.owner = owner
            rt.unchanged_by = None  # Ready changes: the next evaluation must build its status

    def drifted(self, key: Hashable) -> bool:
        """Whether a drift found for this policy still waits for a write."""
        state = self.states.get(key)
        return state is not None and state.drift is not None

    def conflict(self, key: Hashable, rt: Any) -> str | None:
        """Why this policy routes nothing (RouteConflict's message), or None when it owns its route."""
        state = self.states.get(key)
        if state is None or state.owner is None or rt.compiled is None:
            return None
        return conflict_message(state.owner, rt.compiled.routing)

    def announce(self, key: Hashable, rt: Any) -> AuditRecord | None:
        """The RouteConflict record, once per episode."""
        message = self.conflict(key, rt)
        state = self.states.get(key)
        if message is None or state is None or state.announced:
            return None
        state.announced = True
        return AuditRecord(reason=CONFLICT_REASON, message=message)

    def routed(self, key: Hashable, rt: Any, weights: Weights, changed: bool) -> AuditRecord | None:
        """After a successful routing write: the RoutingDriftRepaired record when it undid a drift."""
        state = self.states.get(key)
        if state is None or state.drift is None:
            return None
        carried, state.drift = state.drift, None
        if not changed:
            return None  # the object had been put right already (or the watch lagged behind a write)
        return AuditRecord(reason=DRIFT_REASON, message=(
            f"{describe(rt.compiled.routing)} carried {carried}, not what this policy decided; "
            f"wrote back {', '.join(f'{n}={w}' for n, w in weights)}"))
