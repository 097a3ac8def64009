"""The governance rules' memory between evaluations, and its status form.

Like engine/state.py: frozen dataclasses of ints and strings, times as epoch milliseconds. Every time is a
whole second, because status shows it as an RFC 3339 time to the second; that keeps the round trip
through status exact. Unlike the engine's opaque status.engine, these are documented status fields:
people read them to see which revision is known-good and since when, what the operator scaled, and what
a rollback is waiting for.

Status is input from outside: whoever may write fallbackpolicies/status can edit it. So reading it back
never raises. What is malformed is dropped, what is implausible is clamped (a time in the future, a
replica count above the CRD's ceiling), and each repair is returned as a sentence for the shell to report.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable, Mapping, TypeVar

from understudy.engine.times import from_rfc3339, to_rfc3339, whole_second_ms

MAX_REPLICAS = 1000
"""The CRD's ceiling for capacity.maxReplicas: no replica count the operator records can be above it."""
RETRY_CAP_MS = 300_000
"""The longest back-off between two attempts of one intent (see governance.py)."""
MESSAGE_LIMIT = 1024
REVISION = re.compile(r"^[0-9]{1,20}$")

GOVERNANCE_FIELDS = ("primaryRevision", "lastKnownGoodRevision", "knownGoodSince", "scaledTiers", "rollback",
                     "scaling")
"""The status fields `governance_to_status` owns (a None value there means: remove the field)."""


class Phase(str, Enum):
    """Where one intent's episode stands."""

    PENDING = "Pending"
    """Handed to the shell; its outcome has not come back yet."""
    RETRYING = "Retrying"
    """Failed for a reason that may pass; tried again at retryAt."""
    REFUSED = "Refused"
    """Refused for good: not tried again in this episode, unless the spec changes."""
    DONE = "Done"
    NO_TARGET = "NoTarget"
    """A rollback was due but no known-good revision other than the current one is on record."""
    WITHHELD = "Withheld"
    """Observe mode or spec.override.paused: what would have been done was reported instead."""


@dataclass(frozen=True, slots=True)
class Attempt:
    """The bookkeeping of one episode of an intent: retries, back-off, and whether a failure was reported."""

    phase: Phase
    since_ms: int
    """When this phase began (the intent was issued, failed, was refused, ...)."""
    generation: int
    """The spec's metadata.generation the phase was decided under: a new spec re-arms a refusal."""
    failures: int = 0
    """Failed attempts in this episode; the first one was reported, later ones are not."""
    retry_ms: int | None = None
    message: str = ""


@dataclass(frozen=True, slots=True)
class PrimaryRevision:
    revision: str
    since_ms: int
    """When this policy first saw the primary Deployment at this revision."""
    serving_since_ms: int | None = None
    """Since when this revision has carried all traffic without falling back (None: it does not now)."""


@dataclass(frozen=True, slots=True)
class KnownGood:
    revision: str
    since_ms: int
    """When it became known-good: a whole creep window after it started carrying all traffic."""


@dataclass(frozen=True, slots=True)
class ScaledTier:
    """A fallback Deployment the operator scaled up, and what to return it to."""

    tier: str
    replicas: int
    """The Deployment's replicas before the operator scaled it up."""
    scaled_to: int | None
    """The replicas the operator set; None when recorded by an operator that did not keep it."""


@dataclass(frozen=True, slots=True)
class Rollback:
    """The rollback of the current creep episode."""

    revision: str | None
    """The known-good revision rolled back to (None: there is none)."""
    attempt: Attempt


@dataclass(frozen=True, slots=True)
class Scaling:
    """A scale of one fallback that is under way, failing, refused or withheld."""

    tier: str
    replicas: int
    expected: int
    """The replicas the Deployment had when the scale was decided; the write only goes through on them."""
    attempt: Attempt


@dataclass(frozen=True, slots=True)
class GovernanceState:
    primary_revision: PrimaryRevision | None = None
    known_good: KnownGood | None = None
    scaled: tuple[ScaledTier, ...] = ()
    rollback: Rollback | None = None
    scaling: tuple[Scaling, ...] = ()


def governance_to_status(state: GovernanceState) -> dict[str, Any]:
    """Every field of GOVERNANCE_FIELDS, None where the state has nothing (remove it from status)."""
    seen, good = state.primary_revision, state.known_good
    return {
        "primaryRevision": None if seen is None else _without_none({
            "revision": seen.revision,
            "since": to_rfc3339(seen.since_ms),
            "servingSince": _time(seen.serving_since_ms),
        }),
        "lastKnownGoodRevision": None if good is None else good.revision,
        "knownGoodSince": None if good is None else to_rfc3339(good.since_ms),
        "scaledTiers": [_without_none({"tier": s.tier, "replicas": s.replicas, "scaledTo": s.scaled_to})
                        for s in state.scaled] or None,
        "rollback": None if state.rollback is None else _without_none({
            "revision": state.rollback.revision, **_attempt_to_status(state.rollback.attempt)}),
        "scaling": [{"tier": s.tier, "replicas": s.replicas, "expected": s.expected,
                     **_attempt_to_status(s.attempt)} for s in state.scaling] or None,
    }


def governance_from_status(status: Mapping[str, Any], now: float) -> tuple[GovernanceState, tuple[str, ...]]:
    """The state recorded in `status`, and what had to be dropped or clamped to trust it (never raises)."""
    reader = _Reader(whole_second_ms(now))
    seen = reader.field(status, "primaryRevision", reader.primary_revision)
    good = _known_good(reader, status)
    scaled = reader.items(status, "scaledTiers", reader.scaled_tier)
    rollback = reader.field(status, "rollback", reader.rollback)
    scaling = reader.items(status, "scaling", reader.scaling)
    state = GovernanceState(seen, good, scaled, rollback, scaling)
    return state, tuple(reader.problems)


def _known_good(reader: _Reader, status: Mapping[str, Any]) -> KnownGood | None:
    revision = reader.field(status, "lastKnownGoodRevision", _revision)
    since = reader.field(status, "knownGoodSince", reader.past)
    if revision is None:
        return None
    if since is None:
        reader.problems.append(
            f"status.lastKnownGoodRevision {revision} has no knownGoodSince: it was recorded on first sight by an "
            "older operator, not after a whole creep window, so it is not trusted as a rollback target")
        return None
    return KnownGood(revision, since)


def _time(ms: int | None) -> str | None:
    return None if ms is None else to_rfc3339(ms)


def _without_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def _attempt_to_status(attempt: Attempt) -> dict[str, Any]:
    return _without_none({
        "phase": attempt.phase.value,
        "since": to_rfc3339(attempt.since_ms),
        "observedGeneration": attempt.generation,
        "failedAttempts": attempt.failures,
        "retryAt": _time(attempt.retry_ms),
        "message": attempt.message,
    })


T = TypeVar("T")


class _Reader:
    """Parses status fields one by one; a field or list item that fails is dropped and noted, never raised."""

    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms
        self.problems: list[str] = []

    def field(self, status: Mapping[str, Any], name: str, parse: Callable[[Any, str], T]) -> T | None:
        value = status.get(name)
        if value is None:
            return None
        try:
            return parse(value, f"status.{name}")
        except ValueError as err:
            self.problems.append(f"status.{name} dropped: {err}")
            return None

    def items(self, status: Mapping[str, Any], name: str, parse: Callable[[Any, str], T]) -> tuple[T, ...]:
        value = status.get(name)
        if value is None:
            return ()
        if not isinstance(value, list):
            self.problems.append(f"status.{name} dropped: expected a list")
            return ()
        out: list[T] = []
        tiers: set[str] = set()
        for k, item in enumerate(value):
            where = f"status.{name}[{k}]"
            try:
                parsed = parse(item, where)
            except ValueError as err:
                self.problems.append(f"{where} dropped: {err}")
                continue
            tier = getattr(parsed, "tier")
            if tier in tiers:
                self.problems.append(f"{where} dropped: tier {tier} is listed twice")
                continue
            tiers.add(tier)
            out.append(parsed)
        return tuple(out)

    def past(self, value: Any, where: str) -> int:
        """A time that has happened: one in the future (a clock ahead, or a hand edit) is taken as now."""
        ms = from_rfc3339(value)
        if ms > self.now_ms:
            self.problems.append(f"{where} {value} is in the future: taken as now")
            return self.now_ms
        return ms

    def replicas(self, d: Mapping[str, Any], key: str, where: str) -> int:
        value = _int(d, key)
        if value > MAX_REPLICAS:
            self.problems.append(f"{where}.{key} {value} is above {MAX_REPLICAS}: taken as {MAX_REPLICAS}")
            return MAX_REPLICAS
        return value

    def primary_revision(self, value: Any, where: str) -> PrimaryRevision:
        d = _mapping(value)
        since = self.past(d.get("since"), f"{where}.since")
        serving = None if d.get("servingSince") is None else self.past(d["servingSince"], f"{where}.servingSince")
        if serving is not None and serving < since:
            self.problems.append(f"{where}.servingSince is before since: taken as since")
            serving = since
        return PrimaryRevision(_revision(d.get("revision"), f"{where}.revision"), since, serving)

    def scaled_tier(self, value: Any, where: str) -> ScaledTier:
        d = _mapping(value)
        replicas = self.replicas(d, "replicas", where)
        scaled_to = None if d.get("scaledTo") is None else self.replicas(d, "scaledTo", where)
        if scaled_to is not None and replicas > scaled_to:
            # Scaling back is only ever a decrease: a larger "former size" cannot be one the operator recorded.
            self.problems.append(f"{where}.replicas {replicas} is above scaledTo {scaled_to}: taken as {scaled_to}")
            replicas = scaled_to
        return ScaledTier(_str(d, "tier"), replicas, scaled_to)

    def attempt(self, d: Mapping[str, Any], where: str) -> Attempt:
        try:
            phase = Phase(d.get("phase"))
        except ValueError:
            raise ValueError(f"unknown phase {d.get('phase')!r}") from None
        retry = None if d.get("retryAt") is None else from_rfc3339(d["retryAt"])
        if retry is not None and retry > self.now_ms + RETRY_CAP_MS:
            self.problems.append(f"{where}.retryAt is further away than the longest back-off: taken as now")
            retry = self.now_ms
        message = d.get("message", "")
        if not isinstance(message, str):
            raise ValueError("message: expected a string")
        return Attempt(phase, self.past(d.get("since"), f"{where}.since"), _int(d, "observedGeneration"),
                       _int(d, "failedAttempts"), retry, message[:MESSAGE_LIMIT])

    def rollback(self, value: Any, where: str) -> Rollback:
        d = _mapping(value)
        revision = None if d.get("revision") is None else _revision(d["revision"], f"{where}.revision")
        return Rollback(revision, self.attempt(d, where))

    def scaling(self, value: Any, where: str) -> Scaling:
        d = _mapping(value)
        return Scaling(_str(d, "tier"), self.replicas(d, "replicas", where), self.replicas(d, "expected", where),
                       self.attempt(d, where))


def _mapping(value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError("expected an object")
    return value


def _int(d: Mapping[str, Any], key: str) -> int:
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"{key}: expected a non-negative integer, got {v!r}")
    return v


def _str(d: Mapping[str, Any], key: str) -> str:
    v = d.get(key)
    if not isinstance(v, str) or not v:
        raise ValueError(f"{key}: expected a name, got {v!r}")
    return v


def _revision(value: Any, where: str) -> str:
    if not isinstance(value, str) or not REVISION.match(value):
        raise ValueError(f"{where}: expected a revision number such as \"3\", got {value!r}")
    return value
