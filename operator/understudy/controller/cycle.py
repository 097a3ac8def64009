"""One evaluation cycle: due policies -> one batched read -> capacity fit, decide, drills and govern, as
the backtest replays them (see governance.govern_one) -> a `Plan` of effects.

It makes no writes and imports nothing that writes (an import-linter contract in pyproject.toml holds it
to that): the writer carries the plan out, status first. It keeps each runtime in line with kopf's
snapshots and decides which writes a decision needs; a decision that changes nothing costs no write.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Callable, Hashable, Mapping

from pydantic import ValidationError

from understudy.audit.metrics import OperatorMetrics
from understudy.audit.status import build_status, format_ratio, format_time, status_patch
from understudy.controller.boundary import Boundary, Failed, Failure, Stage, merge_readouts
from understudy.controller.compile import Compiled, compile_policy
from understudy.controller.drift import RoutingStore
from understudy.controller.governance import facts_for, governance_status, govern_one
from understudy.controller.memory import load_memory, with_engine_conditions
from understudy.controller.routes import RouteKeeper, announce
from understudy.controller.release import FINALIZER
from understudy.controller.retry import RoutingRetry
from understudy.controller.runtime import (
    CycleReport,
    Effects,
    InvalidStatus,
    NewGeneration,
    Plan,
    Runtime,
    epoch,
    essential,
    finalizer_out_of_step,
    must_route,
    readiness,
    schedule_next,
    settle,
)
from understudy.controller.status import drill_run, record_drill
from understudy.controller.store import DeploymentSnapshot, PolicySnapshot
from understudy.engine import Decision, Policy, Samples, state_to_status
from understudy.engine.drills import DrillStep, step_drills
from understudy.engine.governance_state import GovernanceState
from understudy.signals.reader import SignalReader

DEFERRED_POLL_SECONDS = 0.1
"""How soon a policy whose own Prometheus has not answered yet is looked at again (`Readout.deferred`)."""


@dataclass
class Cycle:
    """Decides for the leader's due policies; the runtimes it keeps are shared with the writer."""

    reader: SignalReader
    metrics: OperatorMetrics
    runtimes: dict[Hashable, Runtime]
    checkpoint_seconds: float = 60.0
    """How often the creep accounting is written while the window holds time off the primary."""
    waiting: dict[Hashable, float] = field(default_factory=dict)
    """Policies waiting on their own Prometheus -> when their evaluation was due (for the lateness metric)."""
    routes: RouteKeeper = field(default_factory=RouteKeeper)
    """Who owns each route, and which drifted (fed by the routing watches)."""
    boundary: Boundary = field(default_factory=Boundary)
    observe: Callable[[Compiled, str], Mapping[str, int] | None] = lambda compiled, namespace: None
    """Reads a routing object's weights (injected: this module holds no client); used only when status
    holds no weights that can be trusted."""
    started: float = 0.0
    """When the operator started (epoch seconds): Deployments not listed yet are of unknown readiness for
    governance.READINESS_GRACE_SECONDS after it."""

    def plan(
        self,
        policies: Mapping[Hashable, PolicySnapshot],
        deployments: Mapping[tuple[str, str], DeploymentSnapshot],
        now: float,
        report: CycleReport,
        routing: RoutingStore | None = None,
    ) -> Plan:
        deleting = [(k, s, self._compiled(k, s)) for k, s in policies.items()
                    if s.deleting and FINALIZER in s.finalizers]  # released by the writer (controller.releasing)
        observed, policies = policies, {k: s for k, s in policies.items() if not s.deleting}  # routes: see observe
        lettings = self._sync(policies, now)
        due = [(k, r) for k, r in self.runtimes.items() if r.next_due <= now]
        report.due = len(due)
        valid = [(k, r) for k, r in due if r.compiled is not None]
        plan = Plan([], [], {k: self.waiting.pop(k, rt.next_due) for k, rt in valid}, deleting, lettings,
                    repairs=self.routes.observe(observed, self.runtimes, routing))
        for key, rt in due:
            rt.next_due = schedule_next(rt.compiled.interval if rt.compiled else 30.0, now)
            if rt.compiled is None:
                invalid = self._invalid(key, rt, policies[key], now)
                if invalid is not None:
                    plan.invalid.append(invalid)
        if valid:
            ready = {k: (d.ready, d.desired) for k, d in deployments.items()}
            before = self.reader.stats
            readout, failures = self.boundary.read_isolated(
                lambda targets: self.reader.read_all(targets, ready), merge_readouts,
                [rt.compiled.target for _, rt in valid if rt.compiled], key=lambda t: t.key)
            plan.failed += [Failed(f, policies[f.key], now) for f in failures]
            unread = {f.key for f in failures}
            valid = [(k, rt) for k, rt in valid if k not in unread]
            report.queries = self.reader.stats.queries_sent - before.queries_sent
            self.metrics.count_queries(before, self.reader.stats)
            for key, rt in valid:
                if key in readout.deferred:  # its own Prometheus has not answered yet: look again shortly
                    rt.next_due, self.waiting[key] = now + DEFERRED_POLL_SECONDS, plan.due_at.pop(key)
                else:
                    rt.signal_error = readout.errors.get(key)
            for key, rt in valid:
                if key not in readout.deferred:
                    snap = policies[key]
                    effects = self.boundary.call(key, Stage.DECIDE, lambda: self._evaluate(
                        key, rt, snap, readout.samples.get(key, Samples({})), readout.loads.get(key), deployments,
                        now, report), f"{snap.namespace}/{snap.name}")
                    if isinstance(effects, Failure):
                        plan.failed.append(Failed(effects, snap, now))
                    elif effects is None:
                        self.boundary.succeeded(key)  # nothing to write: the evaluation is complete
                    else:
                        plan.effects.append(effects)
        return plan

    # -- keeping runtimes in line with the index -------------------------------------------------------

    def _sync(self, policies: Mapping[Hashable, PolicySnapshot], now: float) -> list[NewGeneration]:
        """Runtimes in line with the snapshots; returns the new generations that may let go of something."""
        lettings: list[NewGeneration] = []
        for gone in set(self.runtimes) - set(policies):
            del self.runtimes[gone]
            self.waiting.pop(gone, None)
            self.boundary.forget(gone)
            namespace, name = gone  # type: ignore[misc]
            self.metrics.forget_policy(namespace, name)
        for key, snap in policies.items():
            rt = self.runtimes.get(key)
            if rt is None or rt.uid != snap.uid or rt.generation != snap.generation:
                # A status or spec the shell cannot load stops no one else: that policy is left out (and
                # logged, once per episode) until it loads.
                if isinstance(self.boundary.call(key, Stage.DECIDE, lambda: self._resync(key, rt, snap, lettings, now),
                                                 f"{snap.namespace}/{snap.name}"), Failure):
                    self.runtimes.pop(key, None)
            elif rt.resource_version == snap.resource_version:
                rt.finalizers = snap.finalizers
        return lettings

    def _resync(self, key: Hashable, rt: Runtime | None, snap: PolicySnapshot,
                lettings: list[NewGeneration], now: float) -> None:
        if rt is None or rt.uid != snap.uid:
            self.runtimes[key] = self._load(snap, now)
            return
        old = rt.compiled
        self._recompile(rt, snap, now)
        if old is not None and rt.compiled is not None and rt.route.conflict is None:  # a RouteConflict never routed
            lettings.append((key, snap, old, rt.compiled))

    def _compiled(self, key: Hashable, snap: PolicySnapshot) -> Compiled | None:
        rt = self.runtimes.get(key)
        return rt.compiled if rt is not None and rt.uid == snap.uid else self._compile(snap)[0]

    def _load(self, snap: PolicySnapshot, now: float) -> Runtime:
        compiled, invalid = self._compile(snap)
        rt = Runtime(uid=snap.uid, generation=snap.generation, compiled=compiled, invalid=invalid, state=None,
                     status_packed=b"", hot={}, resource_version=snap.resource_version, finalizers=snap.finalizers)
        rt.set_status(dict(snap.status or {}))
        self._remember(rt, snap, now)
        return rt

    def _remember(self, rt: Runtime, snap: PolicySnapshot, now: float) -> None:
        """The engine and governance state from status, read through the engine's repair (memory.py)."""
        compiled = rt.compiled
        if compiled is None:
            return
        status = rt.status
        memory = load_memory(compiled.policy, status, now, lambda: self.observe(compiled, snap.namespace))
        rt.state, rt.governance = memory.state, memory.governance
        rt.repaired = () if memory.repaired is None else (memory.repaired,)
        sound = status.get("engine") is not None and memory.repaired is None
        rt.persisted_essential = essential(memory.state) if sound else None

    def _recompile(self, rt: Runtime, snap: PolicySnapshot, now: float) -> None:
        """A spec change keeps the engine's memory: `decide` carries it over to a new tier list by tier name,
        so adding a fallback mid-incident leaves traffic where it is."""
        compiled, invalid = self._compile(snap)
        rt.generation, rt.compiled, rt.invalid = snap.generation, compiled, invalid
        rt.resource_version = snap.resource_version
        rt.set_status(snap.status)
        rt.next_due = 0.0
        rt.retry, rt.finalizers = RoutingRetry(), snap.finalizers
        if compiled is None:
            return
        if rt.state is None:  # the previous spec was invalid: start from status
            self._remember(rt, snap, now)
        rt.backend = None  # the writer makes one for the new routing target
        rt.routed = None

    @staticmethod
    def _compile(snap: PolicySnapshot) -> tuple[Compiled | None, str | None]:
        try:
            return compile_policy(snap), None
        except (ValidationError, ValueError) as err:
            return None, " ".join(str(err).split())[:1000]

    # -- one decision ------------------------------------------------------------------------------------

    def _evaluate(
        self,
        key: Hashable,
        rt: Runtime,
        snap: PolicySnapshot,
        samples: Samples,
        load: float | None,
        deployments: Mapping[tuple[str, str], DeploymentSnapshot],
        now: float,
        report: CycleReport,
    ) -> Effects | None:
        """Decide for one policy; returns the writes it needs, or None when it needs none."""
        assert rt.compiled is not None and rt.state is not None
        report.evaluated += 1
        policy = rt.compiled.policy
        facts, replicas = facts_for(policy, snap.namespace, deployments, load, rt.generation, now - self.started)
        decision, drill, governed = govern_one(
            policy, rt.compiled.capacities, samples, rt.state, rt.governance, rt.outcomes, facts, replicas, now,
            lambda d, s: self._drill(rt, snap, policy, d, s, now))
        announced = announce(rt)
        if rt.repaired or announced is not None:
            decision = replace(decision, audit=(*rt.repaired, *decision.audit, *((announced,) if announced else ())))

        moment = datetime.fromtimestamp(now, timezone.utc)
        kept = essential(decision.state)
        window_has_fallback = any(b.off_primary_ms for b in decision.state.creep_buckets)
        checkpoint = kept != rt.persisted_essential or (
            window_has_fallback and now - rt.last_checkpoint >= self.checkpoint_seconds)
        ready = readiness(rt)
        routed = replace(decision, weights=drill.weights) if drill.weights else decision
        # Everything the new status depends on besides the previous status: when it matches the last
        # evaluation that needed no write, neither does this one, and building the status is skipped.
        inputs = (rt.generation, decision.active_tier, decision.weights, format_ratio(decision.fallback_ratio),
                  decision.creep_exceeded, decision.metrics_available, ready, governed.state, decision.frozen,
                  decision.restore_stalled, decision.state.held_tier, drill.running, drill.outcome)
        quiet = (not decision.audit and not governed.intents and not checkpoint
                 and not must_route(rt, routed, now) and not finalizer_out_of_step(rt))
        if quiet and rt.unchanged_by == inputs:
            self._settle_quietly(rt, snap, decision, governed.state, kept, now)
            return None
        previous = rt.status
        status = build_status(previous, decision, rt.generation, moment, ready, None,
                              engine=state_to_status(decision.state) if checkpoint else None)
        status.update(governance_status(previous, governed.state))
        status["conditions"] = with_engine_conditions(status["conditions"], decision, rt.generation,
                                                      format_time(moment))
        record_drill(previous, status, drill, moment)
        patch = status_patch(previous, status)
        effects = Effects(key, rt, snap, decision, routed, patch, moment, kept, checkpoint, now, governed.state,
                          governed.intents)
        if not quiet or patch is not None:
            return effects
        rt.unchanged_by = inputs
        self._settle_quietly(rt, snap, decision, governed.state, kept, now)
        return None

    def _settle_quietly(self, rt: Runtime, snap: PolicySnapshot, decision: Decision, governance: GovernanceState,
                        kept: tuple[Any, ...], now: float) -> None:
        """The steady state: nothing to write, only the decision to adopt."""
        settle(rt, decision, governance, kept, False, now)
        assert rt.compiled is not None
        self.metrics.observe_policy(snap.namespace, snap.name, rt.compiled.policy.tier_names,
                                    decision.active_tier, decision.fallback_ratio)

    @staticmethod
    def _drill(rt: Runtime, snap: PolicySnapshot, policy: Policy, decision: Decision, samples: Samples,
               now: float) -> DrillStep:
        assert rt.compiled is not None
        if not rt.compiled.drills and not rt.hot.get("drill"):
            return DrillStep(None, None, None, ())
        running = rt.hot.get("drill")
        run = None if not running else drill_run(running)
        last = {o["tier"]: epoch(o["time"]) for o in rt.hot.get("lastDrills") or []}
        return step_drills(rt.compiled.drills, policy, decision, samples, run, last, snap.created, now)

    @staticmethod
    def _invalid(key: Hashable, rt: Runtime, snap: PolicySnapshot, now: float) -> InvalidStatus | None:
        """A spec the models reject gets Ready=False and one Event per generation; it never stops others."""
        ready = {"type": "Ready", "status": "False", "reason": "InvalidPolicy", "message": rt.invalid or "",
                 "observedGeneration": rt.generation}
        current = rt.status
        conditions = [c for c in current.get("conditions") or [] if c.get("type") != "Ready"]
        previous = next((c for c in current.get("conditions") or [] if c.get("type") == "Ready"), None)
        if previous and all(previous.get(k) == v for k, v in ready.items()):
            return None
        stamp = datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        status = {**current, "observedGeneration": rt.generation,
                  "conditions": [*conditions, {**ready, "lastTransitionTime": stamp}]}
        return InvalidStatus(key, rt, snap, status, now)
