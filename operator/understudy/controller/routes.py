"""The leader's bookkeeping of routes: who owns each (ownership.py) and whether the watched object still
carries what was written (drift.py). Makes no request and no write; the writer acts on what it says.

The cycle calls `RouteKeeper.observe` once per cycle. It recomputes ownership only when the policy
snapshots changed, and compares routing snapshots only when the routing watch saw a change, and then only
for objects whose resourceVersion moved: a steady state costs two comparisons per cycle.

Per policy (its runtime's `route`, a `RouteState`):
- a policy that does not own its route is `Ready=False, RouteConflict` (one Event per episode) and routes
  nothing; when it becomes the owner, `routed` is forgotten so its next evaluation writes its weights;
- a route whose managed weights differ from `routed` (what the operator wrote last) is due for a repair:
  the writer writes `routed` back, with one `RoutingDriftRepaired` Event if that changed anything;
- a routing object that disappeared makes the next evaluation route again, which reports TargetNotFound
  until it is back, and then counts as a repaired drift.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Hashable, Mapping, Protocol

from understudy.controller.drift import RoutingStore, drift, routing_key
from understudy.controller.ownership import Claim, PolicyKey, conflict_message, conflicts, describe
from understudy.engine import AuditRecord
from understudy.engine.model import Mode
from understudy.routing.targets import Weights

DRIFT_REASON = "RoutingDriftRepaired"
CONFLICT_REASON = "RouteConflict"


class _Snapshot(Protocol):
    created: float


@dataclass
class RouteState:
    """One policy's route bookkeeping, kept on its runtime (`Runtime.route`)."""

    judged: bool = False
    """Whether ownership has been decided for this runtime (a reloaded runtime starts undecided)."""
    conflict: str | None = None
    """Why this policy routes nothing: an older policy owns its route (RouteConflict's message)."""
    owner: PolicyKey | None = None
    announced: bool = False
    """Whether the RouteConflict of the current episode has been recorded."""
    seen: str | None = None
    """resourceVersion of the routing object last compared."""
    drift: str | None = None
    """What the routing object carried instead of `routed`, until a write puts it right."""


class RouteKeeper:
    """Ownership and drift across all runtimes (each runtime has `compiled`, `routed`, `backend`, `route`)."""

    def __init__(self) -> None:
        self._policies: object = None
        self._routing_changes = -1

    def reset(self) -> None:
        """Start afresh with the Evaluator's runtimes (a new leadership reloads them all)."""
        self._policies, self._routing_changes = None, -1

    def observe(self, policies: Mapping[Hashable, _Snapshot], runtimes: Mapping[Hashable, Any],
                routing: RoutingStore | None) -> list[Hashable]:
        """Update ownership; return the policies whose route drifted and should be written back now."""
        owners_moved = policies is not self._policies or any(not rt.route.judged for rt in runtimes.values())
        if owners_moved:
            self._policies = policies
            _own(policies, runtimes)
        if routing is None or (routing.changes == self._routing_changes and not owners_moved):
            return []
        self._routing_changes = routing.changes
        repairs: list[Hashable] = []
        for key, rt in runtimes.items():
            state: RouteState = rt.route
            if rt.compiled is None or state.conflict is not None or rt.routed is None:
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
            # Service routing: the selector the backend last wrote (the backend exists once it has written)
            selector = getattr(rt.backend, "selector", None)
            found = drift(snap, namespace, rt.compiled.routing, rt.compiled.policy.tiers, rt.routed, selector)
            if found is not None:
                state.drift = found
                repairs.append(key)
        return repairs


def _own(policies: Mapping[Hashable, _Snapshot], runtimes: Mapping[Hashable, Any]) -> None:
    """Give each route to its oldest Enforce-mode claimant; mark the others."""
    claims = [Claim(key, rt.compiled.routing, policies[key].created)  # type: ignore[arg-type]
              for key, rt in runtimes.items()
              if rt.compiled is not None and rt.compiled.policy.mode is Mode.ENFORCE and key in policies]
    losers = conflicts(claims)
    for key, rt in runtimes.items():
        state: RouteState = rt.route
        owner = losers.get(key)  # type: ignore[call-overload]
        fresh, state.judged = not state.judged, True
        if owner == state.owner:
            continue
        if owner is None:  # the route is this policy's now: its next evaluation writes its weights
            state.conflict, state.announced = None, False
            rt.routed = None
        else:
            state.conflict = conflict_message(owner, rt.compiled.routing)
            # a runtime reloaded from status (a new leader, a 409) does not announce the episode again
            state.announced = fresh and _reported(rt.status)
        state.owner = owner
        rt.unchanged_by = None  # Ready changes: the next evaluation must build its status


def _reported(status: Mapping[str, Any]) -> bool:
    """Whether status already says RouteConflict (so its Event was posted)."""
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
    return bool(ready.get("status") == "False" and ready.get("reason") == CONFLICT_REASON)


def announce(rt: Any) -> AuditRecord | None:
    """The RouteConflict record, once per episode."""
    state: RouteState = rt.route
    if state.conflict is None or state.announced:
        return None
    state.announced = True
    return AuditRecord(reason=CONFLICT_REASON, message=state.conflict)


def routed(rt: Any, weights: Weights, changed: bool) -> AuditRecord | None:
    """After a successful routing write: the RoutingDriftRepaired record when it undid a drift."""
    state: RouteState = rt.route
    if state.drift is None:
        return None
    carried, state.drift = state.drift, None
    if not changed:
        return None  # the object had been put right already (or the watch lagged behind a write)
    return AuditRecord(reason=DRIFT_REASON, message=(
        f"{describe(rt.compiled.routing)} carried {carried}, not what this policy decided; "
        f"wrote back {', '.join(f'{n}={w}' for n, w in weights)}"))
