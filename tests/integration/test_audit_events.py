"""The audit trail on a real API server: Events read back through `kubectl events --for`, and status
writes that the CRD accepts and that a round trip through the server does not turn into a new diff."""
from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from understudy.audit.events import EventRecorder, ObjectRef, note_for
from understudy.audit.metrics import OperatorMetrics
from understudy.audit.status import build_status, status_patch
from understudy.engine.model import AuditRecord

CRDS = Path(__file__).resolve().parents[2] / "crds"
GROUP, VERSION, PLURAL = "understudy.dev", "v1alpha1", "fallbackpolicies"
READY = (True, "Reconciled", "routing matches the decision")

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def fallbackpolicy_crd(kube_api: Any) -> None:
    """The project's CRDs, created once (tolerating another test having created them) and Established."""
    ext = client.ApiextensionsV1Api(kube_api)
    names = []
    for path in sorted(CRDS.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            names.append(doc["metadata"]["name"])
            with contextlib.suppress(ApiException):
                ext.create_custom_resource_definition(doc)
    assert f"{PLURAL}.{GROUP}" in names, f"no FallbackPolicy CRD in {CRDS}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        crds = [ext.read_custom_resource_definition(n) for n in names]
        if all(any(c.type == "Established" and c.status == "True" for c in (crd.status.conditions or []))
               for crd in crds):
            return
        time.sleep(0.2)
    pytest.fail(f"CRDs not Established: {names}")


@pytest.fixture
def policy(kube_api: Any, namespace: str, fallbackpolicy_crd: None) -> Iterator[dict[str, Any]]:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "FallbackPolicy",
        "metadata": {"name": "recommender", "namespace": namespace},
        "spec": {
            "primary": {"deploymentName": "recommender-large", "serviceName": "recommender-large"},
            "fallbacks": [{"name": "distilled", "deploymentName": "recommender-small",
                           "serviceName": "recommender-small",
                           "degradation": {"description": "top-10 recall drops about 4 points",
                                           "acceptedBy": "ml-product@example.com"}}],
            "routing": {"service": {"name": "recommender"}},
            "triggers": [{"name": "errors", "errorRatio": {"above": "0.05"}}],
        },
    }
    yield client.CustomObjectsApi(kube_api).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)


def ref_of(obj: dict[str, Any]) -> ObjectRef:
    meta = obj["metadata"]
    return ObjectRef(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])


TRAIL = (
    AuditRecord("FallbackActivated", "primary breached errors; moving to distilled", tier="primary",
                trigger="errors", observed=0.124, threshold=0.05, from_tier="primary", to_tier="distilled"),
    AuditRecord("MetricsMissing", "no data for distilled/errors (onMissingData=Hold)", tier="distilled",
                trigger="errors"),
    AuditRecord("RestoreStep", "10% back to primary", from_tier="distilled", to_tier="primary"),
    AuditRecord("Restored", "all traffic on primary again", from_tier="distilled", to_tier="primary"),
)


def test_kubectl_events_lists_the_trail_in_order(control_plane: Any, kube_api: Any, namespace: str,
                                                 policy: dict[str, Any]) -> None:
    metrics = OperatorMetrics()
    recorder = EventRecorder(client.EventsV1Api(kube_api), instance="understudy-test", metrics=metrics)
    # Whole seconds on purpose: the API server needs eventTime's six-digit fraction even when it is zero.
    start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=len(TRAIL))
    for i, record in enumerate(TRAIL):
        recorder.record(ref_of(policy), record, start + timedelta(minutes=i))
    assert metrics.registry.get_sample_value("understudy_events_failed_total", {"reason": "FallbackActivated"}) is None

    out = control_plane.run_kubectl("events", "--for", "fallbackpolicy/recommender", "-n", namespace).stdout
    header, *rows = out.strip().splitlines()
    assert header.split() == ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    assert len(rows) == len(TRAIL), out
    for row, record, kind in zip(rows, TRAIL, ("Warning", "Warning", "Normal", "Normal")):
        assert row.split()[1:4] == [kind, record.reason, "FallbackPolicy/recommender"], row
        assert row.endswith(note_for(record)), row
    assert "observed=0.124 threshold=0.05 from=primary to=distilled" in rows[0]

    stored = client.EventsV1Api(kube_api).list_namespaced_event(namespace).items
    first = min(stored, key=lambda e: e.event_time)
    assert (first.action, first.reporting_controller, first.reporting_instance) == (
        "Route", "understudy.dev/operator", "understudy-test")
    assert first.regarding.uid == policy["metadata"]["uid"]
    assert first.regarding.api_version == f"{GROUP}/{VERSION}"
    assert first.event_time == start


def test_api_error_is_counted_not_raised(kube_api: Any) -> None:
    metrics = OperatorMetrics()
    recorder = EventRecorder(client.EventsV1Api(kube_api), instance="understudy-test", metrics=metrics)
    nowhere = ObjectRef(name="recommender", namespace="no-such-namespace-for-audit")
    recorder.record(nowhere, TRAIL[0], datetime.now(timezone.utc))
    assert metrics.registry.get_sample_value(
        "understudy_events_failed_total", {"reason": "FallbackActivated"}) == 1


def test_a_namespace_being_deleted_is_not_an_error(kube_api: Any, namespace: str,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """A policy's namespace is deleted while its decision is written: the API server refuses the Event
    (403, NamespaceTerminating). That is the namespace going away, not a permission problem or a bug, so it
    is counted and logged in one line, without a traceback that alerts and log scans would take for one."""
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "hold", "finalizers": ["understudy.dev/hold"]}})
    core.delete_namespace(namespace)
    try:
        metrics = OperatorMetrics()
        recorder = EventRecorder(client.EventsV1Api(kube_api), instance="understudy-test", metrics=metrics)
        with caplog.at_level("DEBUG", logger="understudy.audit.events"):
            recorder.record(ObjectRef(name="recommender", namespace=namespace), TRAIL[0], datetime.now(timezone.utc))
        assert metrics.registry.get_sample_value(
            "understudy_events_failed_total", {"reason": "FallbackActivated"}) == 1
        assert [r for r in caplog.records if r.levelname in ("ERROR", "WARNING") or r.exc_info] == []
        assert any("being deleted" in r.getMessage() for r in caplog.records)
    finally:
        core.patch_namespaced_config_map("hold", namespace, {"metadata": {"finalizers": None}})


@dataclass(frozen=True)
class _Decision:
    active_tier: str
    weights: tuple[tuple[str, int], ...]
    audit: tuple[AuditRecord, ...]
    fallback_ratio: float
    creep_exceeded: bool = False
    metrics_available: bool = True


def test_status_is_accepted_and_a_steady_state_writes_nothing(kube_api: Any, namespace: str,
                                                              policy: dict[str, Any]) -> None:
    api = client.CustomObjectsApi(kube_api)
    now = datetime.now(timezone.utc)
    tripped = _Decision("distilled", (("primary", 0), ("distilled", 100)), TRAIL[:1], 0.0304)
    status = build_status(policy.get("status"), tripped, policy["metadata"]["generation"], now, READY, "3",
                          engine={"activeTier": "distilled", "tiers": [{"streak": 2}], "paused": False})
    patch = status_patch(policy.get("status"), status)
    assert patch is not None
    api.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, "recommender", patch)

    stored = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "recommender")["status"]
    assert stored["activeTier"] == "distilled" and stored["fallbackRatio"] == "0.030"
    assert stored["history"][0]["observed"] == "0.124"
    steady = _Decision("distilled", (("primary", 0), ("distilled", 100)), (), 0.0304)
    again = build_status(stored, steady, policy["metadata"]["generation"], now + timedelta(seconds=5), READY,
                         None, engine={"activeTier": "distilled", "tiers": [{"streak": 2}], "paused": False})
    assert status_patch(stored, again) is None
