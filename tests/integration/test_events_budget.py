"""The per-policy Event budget against a real API server (security review M3, T11): a flapping policy
leaves its burst of Events and then one EventsSuppressed summary, not one Event per flap."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest
from kubernetes import client

from understudy.audit.events import EventBudget, EventRecorder, ObjectRef
from understudy.audit.metrics import OperatorMetrics
from understudy.engine.model import AuditRecord

pytestmark = pytest.mark.cluster

FLAP = (AuditRecord("TierTripped", "primary breached flap", tier="primary", trigger="flap", observed=1.0,
                    threshold=0.5),
        AuditRecord("TierRecovered", "primary is clear of flap", tier="primary", trigger="flap"))


def posted(kube_api: Any, namespace: str, name: str) -> list[client.EventsV1Event]:
    events = client.EventsV1Api(kube_api).list_namespaced_event(
        namespace, field_selector=f"regarding.name={name}").items
    return sorted(events, key=lambda e: e.event_time)


def test_a_flapping_policy_posts_its_burst_then_one_summary(kube_api: Any, namespace: str) -> None:
    now = [0.0]
    metrics = OperatorMetrics()
    recorder = EventRecorder(client.EventsV1Api(kube_api), instance="understudy-test", metrics=metrics,
                             budget=EventBudget(burst=4, refill_seconds=40), clock=lambda: now[0])
    flapper, neighbour = ObjectRef("flapper", namespace), ObjectRef("neighbour", namespace)
    for i in range(50):  # 50 decisions in one budget window
        recorder.record(flapper, FLAP[i % 2], datetime.now(timezone.utc))
    recorder.record(neighbour, FLAP[0], datetime.now(timezone.utc))
    assert [e.reason for e in posted(kube_api, namespace, "flapper")] == ["TierTripped", "TierRecovered"] * 2
    assert [e.reason for e in posted(kube_api, namespace, "neighbour")] == ["TierTripped"]

    now[0] += 10.0  # one token back: the policy went quiet, the next cycle's flush reports what was dropped
    recorder.flush(datetime.now(timezone.utc))
    trail = posted(kube_api, namespace, "flapper")
    assert [e.reason for e in trail] == ["TierTripped", "TierRecovered"] * 2 + ["EventsSuppressed"]
    summary = trail[-1]
    assert summary.type == "Warning" and summary.reporting_controller == "understudy.dev/operator"
    assert "46 Events of this policy were not posted" in summary.note
    assert "(TierRecovered 23, TierTripped 23)" in summary.note
    assert metrics.registry.get_sample_value("understudy_events_suppressed_total", {"reason": "TierTripped"}) == 23
    assert metrics.registry.get_sample_value("understudy_events_posted_total",
                                             {"type": "Warning", "reason": "EventsSuppressed"}) == 1
