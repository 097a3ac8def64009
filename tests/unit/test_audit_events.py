"""The Event recorder: the events.k8s.io/v1 shape, a note that reads on one line, and no raising."""
from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

import pytest
import urllib3
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from understudy.audit.events import NOTE_LIMIT, EventRecorder, ObjectRef, event_name, note_for
from understudy.audit.metrics import OperatorMetrics
from understudy.audit.reasons import REASONS, TRANSITION_REASONS, UNKNOWN_REASON, event_kind
from understudy.engine.model import AuditRecord

NOW = datetime(2026, 11, 25, 18, 0, 0, tzinfo=timezone.utc)
REF = ObjectRef(name="recommender", namespace="ml", uid="0b4c6c1e-1111-2222-3333-444455556666")
TRIP = AuditRecord("FallbackActivated", "primary breached p99-latency; moving to distilled", tier="primary",
                   trigger="p99-latency", observed=312.4, threshold=250.0, from_tier="primary",
                   to_tier="distilled")


class FakeEventsApi:
    """Stands in for EventsV1Api: records bodies, or fails the way the real client does."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.created: list[tuple[str, Any]] = []

    def create_namespaced_event(self, namespace: str, body: Any, **kwargs: Any) -> Any:
        if self.error is not None:
            raise self.error
        self.created.append((namespace, body))
        return body


def wire(body: Any) -> dict[str, Any]:
    """The JSON the client would send."""
    return ApiClient().sanitize_for_serialization(body)


def test_event_has_the_events_v1_shape() -> None:
    api = FakeEventsApi()
    EventRecorder(api, instance="understudy-0").record(REF, TRIP, NOW)  # type: ignore[arg-type]
    [(namespace, body)] = api.created
    sent = wire(body)
    assert namespace == "ml"
    assert sent["metadata"]["namespace"] == "ml"
    assert re.fullmatch(r"recommender\.[0-9a-f]+\.[0-9a-f]{6}", sent["metadata"]["name"])
    assert sent["regarding"] == {"apiVersion": "understudy.dev/v1alpha1", "kind": "FallbackPolicy",
                                 "name": "recommender", "namespace": "ml", "uid": REF.uid}
    assert (sent["type"], sent["reason"], sent["action"]) == ("Warning", "FallbackActivated", "Route")
    assert sent["reportingController"] == "understudy.dev/operator"
    assert sent["reportingInstance"] == "understudy-0"
    assert sent["eventTime"] == "2026-11-25T18:00:00.000000+00:00"
    assert sent["note"] == ("primary breached p99-latency; moving to distilled | trigger=p99-latency "
                            "tier=primary observed=312.4 threshold=250 from=primary to=distilled")


def test_note_is_one_line_and_fits_the_limit() -> None:
    long = AuditRecord("MetricsMissing", "line one\nline two\t" + "é" * 2000, tier="primary")
    note = note_for(long)
    assert "\n" not in note and "\t" not in note
    assert note.startswith("line one line two ")
    assert len(note.encode()) <= NOTE_LIMIT and note.endswith("…")


def test_naive_time_is_taken_as_utc() -> None:
    api = FakeEventsApi()
    EventRecorder(api, instance="i").record(REF, TRIP, datetime(2026, 1, 2, 3, 4, 5, 6))  # type: ignore[arg-type]
    assert wire(api.created[0][1])["eventTime"] == "2026-01-02T03:04:05.000006+00:00"


@pytest.mark.parametrize("error", [
    ApiException(status=404, reason="Not Found"),
    urllib3.exceptions.MaxRetryError(None, "/", "connection refused"),  # type: ignore[arg-type]
])
def test_api_errors_are_counted_not_raised(error: Exception) -> None:
    metrics = OperatorMetrics()
    recorder = EventRecorder(FakeEventsApi(error), instance="i", metrics=metrics)  # type: ignore[arg-type]
    recorder.record(REF, TRIP, NOW)
    assert metrics.registry.get_sample_value(
        "understudy_events_failed_total", {"reason": "FallbackActivated"}) == 1


def test_posted_events_are_counted() -> None:
    metrics = OperatorMetrics()
    recorder = EventRecorder(FakeEventsApi(), instance="i", metrics=metrics)  # type: ignore[arg-type]
    recorder.record(REF, TRIP, NOW)
    recorder.record(REF, TRIP, NOW)
    assert metrics.registry.get_sample_value(
        "understudy_events_posted_total", {"type": "Warning", "reason": "FallbackActivated"}) == 2


def test_every_reason_is_camel_case_with_a_valid_type_and_a_verb() -> None:
    for reason, kind in REASONS.items():
        assert reason[0].isupper() and reason.isalnum(), reason
        assert kind.type in ("Normal", "Warning")
        assert kind.action.isalpha() and kind.action[0].isupper()
    assert TRANSITION_REASONS <= REASONS.keys()


def test_degradations_are_warnings() -> None:
    for reason in ("FallbackActivated", "AllTiersBreached", "MetricsMissing", "CreepBudgetExceeded",
                   "RestoreAborted", "CapacityInsufficient", "RollbackFailed"):
        assert event_kind(reason).type == "Warning", reason
    for reason in ("RestoreStep", "Restored", "Pinned", "Unpinned"):
        assert event_kind(reason).type == "Normal", reason


def test_unknown_reason_is_published_not_dropped() -> None:
    assert event_kind("SomethingNew") == UNKNOWN_REASON


def test_every_engine_reason_has_a_published_kind() -> None:
    from understudy.engine.reasons import AUDIT_REASONS

    assert set(AUDIT_REASONS) <= REASONS.keys()


def test_event_names_are_valid_unique_and_fit() -> None:
    dns_subdomain = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
    long_name = "a" * 229 + "-" + "b" * 23
    names = {event_name(name, NOW) for name in ("recommender", long_name) for _ in range(50)}
    assert len(names) == 100
    for name in names:
        assert len(name) <= 253 and dns_subdomain.fullmatch(name), name


# ---- the Event budget per policy ------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def reasons(api: FakeEventsApi) -> list[str]:
    return [body.reason for _, body in api.created]


FLAP = AuditRecord("TierTripped", "primary breached flap", tier="primary", trigger="flap", observed=1, threshold=0.5)
CALM = AuditRecord("TierRecovered", "primary is clear of flap", tier="primary", trigger="flap")


def test_a_flapping_policy_gets_its_burst_then_one_summary_with_the_count() -> None:
    from understudy.audit.events import EventBudget

    api, clock, metrics = FakeEventsApi(), Clock(), OperatorMetrics()
    recorder = EventRecorder(api, instance="u", budget=EventBudget(burst=3, refill_seconds=30), clock=clock,  # type: ignore[arg-type]
                             metrics=metrics)
    neighbour = ObjectRef(name="neighbour", namespace="ml")
    for i in range(10):
        recorder.record(REF, FLAP if i % 2 == 0 else CALM, NOW)
    recorder.record(neighbour, TRIP, NOW)  # another policy's budget is its own
    assert reasons(api) == ["TierTripped", "TierRecovered", "TierTripped", "FallbackActivated"]
    assert metrics.events_suppressed.labels("TierTripped")._value.get() == 3
    assert metrics.events_suppressed.labels("TierRecovered")._value.get() == 4

    clock.now += 9.9  # not quite one token (3 per 30 s)
    recorder.record(REF, FLAP, NOW)
    assert len(api.created) == 4
    clock.now += 0.2
    recorder.record(REF, CALM, NOW)  # one token: the summary takes it, the record is counted
    assert reasons(api)[4:] == ["EventsSuppressed"]
    summary = api.created[4][1]
    assert summary.type == "Warning" and summary.regarding.name == "recommender"
    assert summary.note.startswith("8 Events of this policy were not posted since 2026-11-25T18:00:00Z: more "
                                   "than 3 within 30s (TierRecovered 4, TierTripped 4);")
    clock.now += 30
    recorder.record(REF, FLAP, NOW)  # the record counted above is summarised before the next one
    assert reasons(api)[5:] == ["EventsSuppressed", "TierTripped"]
    assert "1 Events of this policy were not posted" in api.created[5][1].note


def test_flush_posts_the_summary_of_a_policy_that_went_quiet_and_forgets_idle_buckets() -> None:
    from understudy.audit.events import EventBudget

    api, clock = FakeEventsApi(), Clock()
    recorder = EventRecorder(api, instance="u", budget=EventBudget(burst=2, refill_seconds=10), clock=clock)  # type: ignore[arg-type]
    for _ in range(5):
        recorder.record(REF, FLAP, NOW)
    recorder.flush(NOW)
    assert reasons(api) == ["TierTripped", "TierTripped"]
    clock.now += 5
    recorder.flush(NOW)
    assert reasons(api) == ["TierTripped", "TierTripped", "EventsSuppressed"]
    recorder.flush(NOW)
    assert len(api.created) == 3  # once
    clock.now += 60
    recorder.flush(NOW)
    assert recorder._buckets == {}


def test_a_budget_needs_room_for_an_event_and_its_summary() -> None:
    from understudy.audit.events import EventBudget

    with pytest.raises(ValueError):
        EventBudget(burst=1)
    with pytest.raises(ValueError):
        EventBudget(refill_seconds=0)
