"""Properties of `govern` over random policies, decisions, cluster facts and intent outcomes (hypothesis).

Each example runs a sequence of evaluations the way the operator does: the intents of one evaluation are
answered (done, failed for now, refused, or never) at the next, modes and pauses come and go with spec
changes, and loads include NaN, +Inf and negative numbers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TypeVar

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from understudy.engine import CreepAction, Decision, Mode, Policy, Samples, Tier, decide, initial_state
from understudy.engine.governance import (
    ROLLBACK_FAILED,
    SCALE_FAILED,
    Facts,
    Governance,
    TierCapacity,
    Workload,
    govern,
)
from understudy.engine.governance_state import GovernanceState, KnownGood, ScaledTier
from understudy.engine.intents import IntentOutcome, RollbackIntent, ScaleIntent

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
START = 1_800_000_000.0
NAMES = ("primary", "fb1", "fb2")
LOADS = (None, 0.0, 0.5, 3.0, 40.0, 1e6, 1e308, math.inf, -math.inf, math.nan, -1.0)
GAPS = (1.0, 5.0, 5.0, 30.0, 60.0, 600.0)
REVISIONS = (None, "1", "2", "2", "3")
T = TypeVar("T")


@dataclass(frozen=True)
class Step:
    gap: float
    primary: int
    creep: bool
    tripped: bool
    restoring: bool
    short: frozenset[str]
    revision: str | None
    desired: dict[str, int | None]
    load: float | None
    answer: str
    """How the shell answers this step's intents at the next one: done, transient, permanent or lost."""
    edit: str | None
    """A spec change before this step: observe, enforce, pause or resume."""


@st.composite
def capacities(draw: st.DrawFn) -> dict[str, TierCapacity]:
    out = {}
    for name in NAMES[1:]:
        if draw(st.booleans()):
            scale = draw(st.booleans())
            out[name] = TierCapacity(draw(st.sampled_from([0.2, 1.0, 5.0, 50.0])), scale,
                                     draw(st.sampled_from([1, 3, 12])) if scale else None)
    return out


def pick(options: tuple[T, ...], byte: int) -> T:
    return options[byte % len(options)]


ANSWERS = ("done", "transient", "permanent", "lost")
EDIT_CHOICES = (None,) * 8 + ("observe", "enforce", "pause", "resume")
WIDTH = 11


@st.composite
def steps(draw: st.DrawFn) -> list[Step]:
    """Steps decoded from one byte string: a single draw keeps generation cheap."""
    size = draw(st.integers(1, 40))
    raw = draw(st.binary(min_size=size * WIDTH, max_size=size * WIDTH))
    out = []
    for b in (raw[k:k + WIDTH] for k in range(0, len(raw), WIDTH)):
        out.append(Step(
            gap=pick(GAPS, b[0]),
            primary=pick((100, 100, 90, 50, 0), b[1]),
            creep=b[2] % 2 == 1,
            tripped=b[2] // 2 % 2 == 1,
            restoring=b[2] // 4 % 2 == 1,
            short=frozenset(n for k, n in enumerate(NAMES[1:]) if b[3] >> k & 1),
            revision=pick(REVISIONS, b[4]),
            desired={n: pick((None, 0, 1, 2, 5, 12, 20), b[5 + k]) for k, n in enumerate(NAMES[1:])},
            load=pick(LOADS, b[8]),
            answer=pick(ANSWERS, b[9]),
            edit=pick(EDIT_CHOICES, b[10]),
        ))
    return out


@st.composite
def starts(draw: st.DrawFn) -> GovernanceState:
    known = draw(st.sampled_from([None, "1", "2"]))
    scaled = tuple(ScaledTier(n, draw(st.sampled_from([0, 1, 2, 5000])), draw(st.sampled_from([None, 2, 8])))
                   for n in NAMES[1:] if draw(st.booleans()))
    return GovernanceState(known_good=None if known is None else KnownGood(known, int(START) * 1000 - 3_600_000),
                           scaled=scaled)


POLICY = Policy(tiers=tuple(Tier(n, f"{n}-deploy", n) for n in NAMES), triggers=(), creep_window=600.0)


def decision(policy: Policy, step: Step, base: Decision) -> Decision:
    rest = 100 - step.primary
    weights = (("primary", step.primary), ("fb1", rest), ("fb2", 0))
    tiers = tuple(replace(t, tripped=step.tripped and t.name == "primary", capacity_short=t.name in step.short)
                  for t in base.state.tiers)
    state = replace(base.state, weights=weights, tiers=tiers, creep_exceeded=step.creep,
                    active_tier="primary" if step.primary == 100 else "fb1",
                    restore_tier="primary" if step.restoring and step.primary < 100 else None)
    return replace(base, state=state, weights=weights, active_tier=state.active_tier, creep_exceeded=step.creep,
                   route=policy.mode is Mode.ENFORCE and not policy.paused)


def facts(step: Step, generation: int) -> Facts:
    workloads = {"primary": Workload(3, 3, step.revision)}
    workloads.update({n: Workload(d, d, "1") for n, d in step.desired.items() if d is not None})
    return Facts(workloads, step.load, generation)


EDITS = {"observe": {"mode": Mode.OBSERVE}, "enforce": {"mode": Mode.ENFORCE},
         "pause": {"paused": True}, "resume": {"paused": False}}


@dataclass(frozen=True)
class Evaluation:
    policy: Policy
    step: Step
    facts: Facts
    before: GovernanceState
    result: Governance


def run(action: CreepAction, caps: dict[str, TierCapacity], start: GovernanceState, plan: list[Step],
        mode: Mode) -> list[Evaluation]:
    policy = replace(POLICY, creep_action=action, mode=mode)
    base = decide(policy, Samples({}), initial_state(policy), START)
    state, now, generation = start, START, 1
    outcomes: list[IntentOutcome] = []
    out: list[Evaluation] = []
    for step in plan:
        if step.edit is not None:
            policy = replace(policy, **EDITS[step.edit])  # type: ignore[arg-type]
            generation += 1
        now += step.gap
        known = facts(step, generation)
        result = govern(policy, caps, decision(policy, step, base), known, state, outcomes, now)
        out.append(Evaluation(policy, step, known, state, result))
        state = result.state
        outcomes = [] if step.answer == "lost" else [
            IntentOutcome(i, step.answer == "done", step.answer == "permanent", "no", now + 0.5)
            for i in result.intents]
    return out


RUNS = dict(action=st.sampled_from(list(CreepAction)), caps=capacities(), start=starts(), plan=steps(),
            mode=st.sampled_from(list(Mode)))


@SETTINGS
@given(**RUNS)
def test_observe_mode_and_pause_never_yield_an_intent(action: CreepAction, caps: dict[str, TierCapacity],
                                                     start: GovernanceState, plan: list[Step], mode: Mode) -> None:
    for e in run(action, caps, start, plan, mode):
        if e.policy.mode is Mode.OBSERVE or e.policy.paused:
            assert e.result.intents == ()


@SETTINGS
@given(**RUNS)
def test_never_a_scale_above_max_replicas_or_from_an_unknown_load(
        action: CreepAction, caps: dict[str, TierCapacity], start: GovernanceState, plan: list[Step],
        mode: Mode) -> None:
    for e in run(action, caps, start, plan, mode):
        for intent in e.result.intents:
            if not isinstance(intent, ScaleIntent):
                continue
            if intent.replicas > intent.expected:
                capacity = caps[intent.tier]
                assert capacity.scale_on_activate and capacity.max_replicas is not None
                assert intent.replicas <= capacity.max_replicas
                load = e.step.load
                assert load is not None and math.isfinite(load) and load >= 0
            else:
                assert intent.replicas < intent.expected  # a scale-back only ever decreases


@SETTINGS
@given(**RUNS)
def test_a_rollback_target_was_known_good(action: CreepAction, caps: dict[str, TierCapacity],
                                         start: GovernanceState, plan: list[Step], mode: Mode) -> None:
    for e in run(action, caps, start, plan, mode):
        known = {k.revision for k in (e.before.known_good, e.result.state.known_good) if k is not None}
        for intent in e.result.intents:
            if isinstance(intent, RollbackIntent):
                assert intent.revision in known
                assert intent.revision != e.step.revision


@SETTINGS
@given(**RUNS)
def test_at_most_one_failure_record_per_episode(action: CreepAction, caps: dict[str, TierCapacity],
                                               start: GovernanceState, plan: list[Step], mode: Mode) -> None:
    """An episode: a run of evaluations with the same need (a rollback due; a fallback short of capacity;
    traffic settled on the primary) under one spec generation. A failed outcome belongs to the episode in
    which its intent was issued: the evaluation before, whose intents the shell answers."""
    episodes: dict[str, int] = {}
    issued_in: dict[str, int] = {}
    needed: dict[str, bool] = {}
    failures: dict[tuple[str, int], int] = {}
    generation = 0
    for e in run(action, caps, start, plan, mode):
        issued_in = dict(episodes)
        step = e.step
        now_needed = {
            "rollback": step.creep and e.policy.creep_action is CreepAction.ROLLBACK_PRIMARY,
            **{f"up:{n}": n in step.short for n in NAMES[1:]},
            **{f"down:{n}": step.primary == 100 for n in NAMES[1:]},
        }
        for key, need in now_needed.items():
            if need and (not needed.get(key) or e.facts.generation != generation):
                episodes[key] = episodes.get(key, 0) + 1
            needed[key] = need
        generation = e.facts.generation
        for record in e.result.audit:
            if record.reason == ROLLBACK_FAILED:
                key = "rollback"
            elif record.reason == SCALE_FAILED:
                key = f"{'up' if _scaled_up(record.message) else 'down'}:{record.tier}"
            else:
                continue
            outcome = " failed: " in record.message or record.reason == SCALE_FAILED
            episode = (key, (issued_in if outcome else episodes).get(key, 0))
            failures[episode] = failures.get(episode, 0) + 1
            assert failures[episode] == 1, f"a second failure record in episode {episode}: {record.message}"


def _scaled_up(message: str) -> bool:
    """Whether a ScaleFailed note is about a scale-up: 'could not scale d from A to B replicas: ...'."""
    numbers = message.split(" from ", 1)[1].split(" replicas", 1)[0].split(" to ")
    return int(numbers[1]) > int(numbers[0])
