"""Leader election on the real API server, with clocks that disagree, and the writer that asks it first.

Expiry is judged by when this replica saw the Lease record change, on its own clock, never by the holder's
renewTime (as client-go does), so a replica whose clock is 30 s off neither steals a live Lease nor keeps
a dead one from being taken. Each elector is driven round by round on the test's thread, with its clock
injected: the real clock, or the real clock shifted by 30 s.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import pytest
from kubernetes import client

from e2e.harness.cluster import ControlPlane
from e2e.harness.prometheus import PrometheusServer
from understudy.audit.events import EventRecorder
from understudy.audit.metrics import OperatorMetrics
from understudy.controller.evaluator import Evaluator
from understudy.controller.leader import LeaderElector, LeaseConfig
from understudy.controller.store import PolicySnapshot
from understudy.signals.reader import SignalReader

SHIFT = 30.0
LEASE = 3
RENEW = 0.5


def clock(shift: float) -> Callable[[], float]:
    return lambda: time.time() + shift


def electors(kube_api: Any, namespace: str, shifted: str) -> tuple[LeaderElector, LeaderElector]:
    """The holder-to-be `a` and the standby `b`; the one named by `shifted` runs SHIFT seconds ahead."""
    made = []
    for name in ("a", "b"):
        config = LeaseConfig("understudy-test", namespace, f"replica-{name}", lease_seconds=LEASE, renew_every=RENEW)
        made.append(LeaderElector(kube_api, config, clock=clock(SHIFT if name == shifted else 0.0)))
    return made[0], made[1]


def rounds(seconds: float, *electing: LeaderElector, check: Callable[[], None]) -> None:
    """Election rounds of every elector, RENEW apart, checking after each one."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        for elector in electing:
            elector.try_acquire_or_renew()
            check()
        time.sleep(RENEW)


@pytest.mark.parametrize("shifted", ["b", "a"], ids=["standby-ahead", "holder-ahead"])
def test_a_clock_30s_off_never_makes_two_leaders_nor_keeps_a_dead_one(kube_api: Any, namespace: str,
                                                                      shifted: str) -> None:
    a, b = electors(kube_api, namespace, shifted)
    assert a.try_acquire_or_renew() and a.is_leader and a.may_write()

    def never_both() -> None:
        assert not (a.is_leader and b.is_leader), "two leaders at once"
        assert not b.is_leader, "the standby took a Lease that is renewed"

    rounds(3 * LEASE, a, b, check=never_both)

    # The holder stops renewing (a paused or dead pod): it stops acting on its own clock, and the standby
    # takes over once it has seen the record unchanged for a whole lease, whatever the renewTime says.
    stopped = time.monotonic()

    def one_at_most() -> None:
        assert not (a.is_leader and b.is_leader), "two leaders at once"

    while not b.is_leader:
        assert time.monotonic() - stopped < LEASE + 5, "the standby never took the Lease of a dead holder"
        b.try_acquire_or_renew()
        one_at_most()
        time.sleep(RENEW)
    assert time.monotonic() - stopped >= LEASE - RENEW, "taken before the lease could have run out"
    assert not a.is_leader and not a.may_write()
    a.try_acquire_or_renew()
    assert not a.is_leader, "the old holder, back, sees the new one's renewals and waits"


CRD = Path(__file__).resolve().parents[2] / "crds" / "understudy.dev_fallbackpolicies.yaml"


def test_the_writer_asks_may_write_before_each_policys_writes(control_plane: ControlPlane, kube_api: Any,
                                                              namespace: str, prometheus: PrometheusServer) -> None:
    """A replica that lost its Lease after the cycle began writes nothing; once it may, it writes."""
    control_plane.run_kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    control_plane.run_kubectl("wait", "--for=condition=Established", "--timeout=60s",
                              "crd/fallbackpolicies.understudy.dev")
    custom = client.CustomObjectsApi(kube_api)
    tier = {"deploymentName": "model-a", "serviceName": "model-a"}
    body = custom.create_namespaced_custom_object("understudy.dev", "v1alpha1", namespace, "fallbackpolicies", {
        "apiVersion": "understudy.dev/v1alpha1", "kind": "FallbackPolicy", "metadata": {"name": "p"},
        "spec": {"primary": tier,
                 "fallbacks": [{"name": "small", "deploymentName": "model-b", "serviceName": "model-b",
                                "degradation": {"description": "a smaller model", "acceptedBy": "ml@example.com"}}],
                 "routing": {"service": {"name": "model"}},
                 "triggers": [{"name": "errors", "errorRatio": {"above": "0.1"}}]}})
    meta = body["metadata"]
    snapshot = PolicySnapshot.of(namespace, "p", meta["uid"], meta["generation"], meta["resourceVersion"],
                                 body["spec"], {})
    allowed = [False]
    metrics = OperatorMetrics()
    with SignalReader(prometheus.url) as reader:
        evaluator = Evaluator(kube_api, reader, EventRecorder(client.EventsV1Api(kube_api), instance="test",
                                                              metrics=metrics), metrics,
                              may_write=lambda: allowed[0])
        try:
            report = evaluator.cycle({(namespace, "p"): snapshot}, {}, time.time())
            assert report.evaluated == 1 and report.status_writes == 0
            assert not custom.get_namespaced_custom_object("understudy.dev", "v1alpha1", namespace,
                                                           "fallbackpolicies", "p").get("status")
            allowed[0] = True
            evaluator.reset()
            report = evaluator.cycle({(namespace, "p"): snapshot}, {}, time.time())
            assert report.status_writes >= 1
            status = custom.get_namespaced_custom_object("understudy.dev", "v1alpha1", namespace,
                                                         "fallbackpolicies", "p")["status"]
            assert any(c["type"] == "Ready" for c in status["conditions"])
        finally:
            evaluator.close()
