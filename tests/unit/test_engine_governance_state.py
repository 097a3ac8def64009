"""The governance state's status form: an exact round trip, and distrust of what comes back from status."""
from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from understudy.engine.governance_state import (
    GOVERNANCE_FIELDS,
    Attempt,
    GovernanceState,
    KnownGood,
    Phase,
    PrimaryRevision,
    Rollback,
    ScaledTier,
    Scaling,
    governance_from_status,
    governance_to_status,
)

NOW = 1_800_000_000.0
NOW_MS = int(NOW) * 1000
TIERS = ("fb1", "fb2", "fb3")

times = st.integers(0, NOW_MS // 1000).map(lambda s: s * 1000)
revisions = st.integers(1, 10**6).map(str)
counts = st.integers(0, 1000)


@st.composite
def attempts(draw: st.DrawFn) -> Attempt:
    return Attempt(draw(st.sampled_from(list(Phase))), draw(times), draw(st.integers(0, 10**9)), draw(counts),
                   draw(st.one_of(st.none(), times)), draw(st.text(max_size=40)))


@st.composite
def states(draw: st.DrawFn) -> GovernanceState:
    seen = None
    if draw(st.booleans()):
        since = draw(times)
        serving = draw(st.one_of(st.none(), st.integers(since // 1000, NOW_MS // 1000).map(lambda s: s * 1000)))
        seen = PrimaryRevision(draw(revisions), since, serving)
    good = draw(st.one_of(st.none(), st.builds(KnownGood, revisions, times)))
    scaled = []
    for tier in draw(st.lists(st.sampled_from(TIERS), unique=True)):
        to = draw(st.one_of(st.none(), counts))
        scaled.append(ScaledTier(tier, draw(counts) if to is None else draw(st.integers(0, to)), to))
    rollback = draw(st.one_of(st.none(), st.builds(Rollback, st.one_of(st.none(), revisions), attempts())))
    scaling = [Scaling(t, draw(counts), draw(counts), draw(attempts()))
               for t in draw(st.lists(st.sampled_from(TIERS), unique=True))]
    return GovernanceState(seen, good, tuple(scaled), rollback, tuple(scaling))


@settings(max_examples=300, deadline=None)
@given(states())
def test_the_status_round_trip_is_exact(state: GovernanceState) -> None:
    status = governance_to_status(state)
    assert set(status) == set(GOVERNANCE_FIELDS)
    written = {k: v for k, v in status.items() if v is not None}  # a merge patch stores null as absent
    assert governance_from_status(written, NOW) == (state, ())


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**15) | st.floats(allow_nan=True) | st.text(max_size=30)
    | st.sampled_from(["2026-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "Pending", "7"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["revision", "since", "servingSince", "tier", "replicas", "scaledTo", "phase", "expected",
                         "observedGeneration", "failedAttempts", "retryAt", "message", "x"]), children, max_size=6),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(GOVERNANCE_FIELDS), json_values))
def test_any_status_content_is_read_without_raising(status: dict[str, Any]) -> None:
    state, problems = governance_from_status(status, NOW)
    assert isinstance(state, GovernanceState) and all(isinstance(p, str) for p in problems)
    again = governance_to_status(state)  # whatever was kept can be written back
    assert governance_from_status({k: v for k, v in again.items() if v is not None}, NOW)[0] == state


def test_a_known_good_revision_recorded_on_first_sight_is_not_trusted() -> None:
    """An older operator recorded lastKnownGoodRevision at first sight, without knownGoodSince (review S7)."""
    state, problems = governance_from_status({"lastKnownGoodRevision": "4"}, NOW)
    assert state.known_good is None
    assert problems == ("status.lastKnownGoodRevision 4 has no knownGoodSince: it was recorded on first sight by "
                        "an older operator, not after a whole creep window, so it is not trusted as a rollback "
                        "target",)


def test_an_older_scaled_tier_without_scaled_to_is_kept() -> None:
    state, problems = governance_from_status({"scaledTiers": [{"tier": "fb1", "replicas": 2}]}, NOW)
    assert state.scaled == (ScaledTier("fb1", 2, None),) and problems == ()


def test_times_in_the_future_are_taken_as_now() -> None:
    """A future time would block the count towards known-good, or make a revision known-good at once."""
    status = {"primaryRevision": {"revision": "3", "since": "2099-01-01T00:00:00Z",
                                  "servingSince": "2099-01-01T00:00:00Z"},
              "lastKnownGoodRevision": "2", "knownGoodSince": "2099-01-01T00:00:00Z"}
    state, problems = governance_from_status(status, NOW)
    assert state.primary_revision == PrimaryRevision("3", NOW_MS, NOW_MS)
    assert state.known_good == KnownGood("2", NOW_MS)
    assert len(problems) == 3 and all("in the future: taken as now" in p for p in problems)


def test_replica_counts_are_clamped() -> None:
    """status.scaledTiers[].replicas: 5000 must never become a scale to 5000 replicas (security review M2)."""
    status = {"scaledTiers": [{"tier": "fb1", "replicas": 5000, "scaledTo": 8},
                              {"tier": "fb2", "replicas": 3, "scaledTo": 99999}]}
    state, problems = governance_from_status(status, NOW)
    assert state.scaled == (ScaledTier("fb1", 8, 8), ScaledTier("fb2", 3, 1000))
    assert problems == ("status.scaledTiers[0].replicas 5000 is above 1000: taken as 1000",
                        "status.scaledTiers[0].replicas 1000 is above scaledTo 8: taken as 8",
                        "status.scaledTiers[1].scaledTo 99999 is above 1000: taken as 1000")


def test_what_cannot_be_read_is_dropped_field_by_field_and_reported() -> None:
    status = {
        "primaryRevision": {"revision": "three", "since": "2026-01-01T00:00:00Z"},
        "lastKnownGoodRevision": "2", "knownGoodSince": "2026-01-01T00:00:00Z",
        "scaledTiers": [{"tier": "fb1", "replicas": -1}, {"tier": "fb2", "replicas": 2, "scaledTo": 6},
                        {"tier": "fb2", "replicas": 1, "scaledTo": 6}],
        "rollback": {"phase": "Sideways", "since": "2026-01-01T00:00:00Z", "observedGeneration": 1,
                     "failedAttempts": 0},
        "scaling": "lots",
    }
    state, problems = governance_from_status(status, NOW)
    assert state == GovernanceState(known_good=KnownGood("2", 1_767_225_600_000),
                                    scaled=(ScaledTier("fb2", 2, 6),))
    assert [p.split(" dropped")[0] for p in problems] == [
        "status.primaryRevision", "status.scaledTiers[0]", "status.scaledTiers[2]", "status.rollback",
        "status.scaling"]


def test_a_retry_further_away_than_the_longest_back_off_is_taken_as_now() -> None:
    status = {"rollback": {"phase": "Retrying", "since": "2026-01-01T00:00:00Z", "observedGeneration": 1,
                           "failedAttempts": 1, "retryAt": "2099-01-01T00:00:00Z", "revision": "1"}}
    state, problems = governance_from_status(status, NOW)
    assert state.rollback is not None and state.rollback.attempt.retry_ms == NOW_MS
    assert problems == ("status.rollback.retryAt is further away than the longest back-off: taken as now",)
