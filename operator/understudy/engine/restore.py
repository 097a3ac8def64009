"""Engine state that comes from elsewhere: carried across a spec change of the tier list."""
from __future__ import annotations

from dataclasses import replace

from understudy.engine.model import Policy
from understudy.engine.plan import Plan
from understudy.engine.state import State, TierState, initial_state


def fit(policy: Policy, plan: Plan, state: State) -> State:
    """Carry a state across a spec change of the tier list: health by tier name, routing if it still fits.

    When a tier that carries traffic is removed (or a hand-edited status does not add up), routing
    restarts from the primary; the tiers' health carries over, so the next transition moves on from
    there without relearning.
    """
    index = plan.index
    routing_fits = (
        state.active_tier in index
        and (state.restore_tier is None or state.restore_tier in index)
        and all(w >= 0 and (w == 0 or n in index) for n, w in state.weights)
        and sum(w for _, w in state.weights) == 100
    )
    names_fit = (tuple(t.name for t in state.tiers) == plan.names
                 and tuple(n for n, _ in state.weights) == plan.names)
    if names_fit and routing_fits:
        return state
    by_name = {t.name: t for t in state.tiers}
    tiers = tuple(by_name.get(n, TierState(n)) for n in plan.names)
    pinned = state.pinned_tier if state.pinned_tier in index else None
    if routing_fits:
        old = dict(state.weights)
        return replace(state, tiers=tiers, pinned_tier=pinned,
                       weights=tuple((n, old.get(n, 0)) for n in plan.names))
    fresh = initial_state(policy)
    return replace(state, tiers=tiers, pinned_tier=pinned, weights=fresh.weights,
                   active_tier=fresh.active_tier, restore_tier=None, restore_step=0)
