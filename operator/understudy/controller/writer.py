"""Carries out a cycle's plan, per policy in this order: status (the fence) -> routing -> workload writes
(the engine's scale and rollback intents) -> Events.

1. status (with the engine's state) is written first, guarded by the policy's resourceVersion. It is the
   fencing token: a replica acting on stale state gets a 409, drops its decision and reloads.
2. routing is written next (itself guarded by the routing object's resourceVersion). A crash between 1
   and 2 is repaired on restart, because a fresh runtime re-applies the recorded weights. A failed routing
   write keeps Ready=False and is retried with back-off (controller.retry); the Events that announce the
   move wait for it. The release finalizer (controller.releasing) is added before the routing write and
   removed after it. A cycle's releases (deleted policies, a switch to Observe or to another routing
   object) are made before its decisions.
3. Deployment writes (scale a fallback, roll the primary back: the intents `govern` returned) follow, in
   workloads.carry_out; their outcomes go to the next `govern`, which audits them. A routing failure or
   recovery is added to status.history in one more status write.
4. Events are posted last: they are the human-readable trail, status.history is the durable one.
"""
from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Callable, Hashable

from kubernetes.client import ApiClient, AppsV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from understudy.audit.events import EventRecorder, ObjectRef
from understudy.audit.metrics import OperatorMetrics
from understudy.audit.status import build_status, status_patch
from understudy.controller.boundary import Boundary, Failed, Failure, Stage, report_failure
from understudy.controller.releasing import Releases
from understudy.controller.routes import routed
from understudy.controller.runtime import (
    CycleReport,
    Effects,
    InvalidStatus,
    Plan,
    Runtime,
    must_route,
    readiness,
    ready_changed,
    settle,
)
from understudy.controller.store import GROUP, PLURAL, VERSION, PolicySnapshot
from understudy.controller.workloads import carry_out
from understudy.engine import AuditRecord, Decision
from understudy.routing import backend_for
from understudy.routing.base import WRITE_ERRORS, write_failure

log = logging.getLogger(__name__)


@dataclass
class Writer:
    """Makes the leader's writes; shares the runtimes with the cycle and forgets one on a 404/409."""

    api: ApiClient
    recorder: EventRecorder
    metrics: OperatorMetrics
    runtimes: dict[Hashable, Runtime]
    write_workers: int = 8
    """Concurrent writers: a write waits on the API server far longer than it keeps a core busy."""
    boundary: Boundary = field(default_factory=Boundary)
    may_write: Callable[[], bool] = lambda: True
    """Asked before each policy's writes: a replica that lost its Lease mid-cycle writes nothing more."""
    _writers: ThreadPoolExecutor = field(init=False)

    def __post_init__(self) -> None:
        self._custom = CustomObjectsApi(self.api)
        self._apps = AppsV1Api(self.api)
        self._writers = ThreadPoolExecutor(max_workers=self.write_workers, thread_name_prefix="understudy-write")
        self.releases = Releases(self.api, self.recorder, self.runtimes)

    def close(self) -> None:
        self._writers.shutdown(wait=True)

    def carry_out(self, plan: Plan, report: CycleReport, now: float) -> None:
        if self.may_write():
            try:
                self.releases.carry_out(plan, now)
            except Exception:  # noqa: BLE001 - a release gone wrong must not stop every policy's writes
                log.exception("releases failed this cycle; they are tried again next cycle")
        for invalid in plan.invalid:
            self._guarded(invalid.key, invalid.snap, invalid.now, lambda: self._write_invalid(invalid, report), report)
        self._apply_all(plan.effects, report)
        for failed in plan.failed:
            if self.may_write():
                self._report(failed, report)
        for key in plan.repairs:
            if self.may_write():
                self._repair(key, report)

    def _guarded(self, key: Hashable, snap: PolicySnapshot, now: float, write: Callable[[], None],
                 report: CycleReport) -> None:
        """One policy's writes inside the error boundary (controller.boundary), if this replica may write."""
        if not self.may_write():
            return
        failure = self.boundary.call(key, Stage.WRITE, write, f"{snap.namespace}/{snap.name}")
        if isinstance(failure, Failure):
            self._report(Failed(failure, snap, now), report)
            self.runtimes.pop(key, None)  # reloaded from its status next cycle
        else:
            self.boundary.succeeded(key)

    def _report(self, failed: Failed, report: CycleReport) -> None:
        """Ready=False, reason EvaluationFailed, and its Warning Event once per episode."""
        failure, snap = failed.failure, failed.snap
        rt = self.runtimes.get(failure.key)
        if rt is None:
            return
        moment = datetime.fromtimestamp(failed.now, timezone.utc)
        report_failure(failure, rt.status, rt.generation, failed.now,
                       lambda status: self._write_status(failure.key, rt, snap, status, report),
                       lambda record: self.recorder.record(ObjectRef(snap.name, snap.namespace, snap.uid), record,
                                                           moment))

    def _write_invalid(self, e: InvalidStatus, report: CycleReport) -> None:
        if self._write_status(e.key, e.rt, e.snap, e.status, report):
            self.recorder.record(ObjectRef(e.snap.name, e.snap.namespace, e.snap.uid),
                                 AuditRecord(reason="InvalidPolicy", message=e.rt.invalid or ""),
                                 datetime.fromtimestamp(e.now, timezone.utc))

    def _apply_all(self, pending: list[Effects], report: CycleReport) -> None:
        """Write the decisions of one cycle, several routing objects at a time.

        Policies that share a routing object are written one after another in one worker, so they
        never race each other's resourceVersion; per policy the order stays status, routing, Events.
        """
        groups: dict[Hashable, list[Effects]] = {}
        for e in pending:
            assert e.rt.compiled is not None
            groups.setdefault((e.snap.namespace, e.rt.compiled.routing), []).append(e)
        if len(groups) <= 1:
            for group in groups.values():
                self._apply_group(group, report)
            return
        reports = [CycleReport() for _ in groups]
        futures = [self._writers.submit(self._apply_group, group, r) for group, r in zip(groups.values(), reports)]
        for future, r in zip(futures, reports):
            future.result()
            report.add(r)

    def _apply_group(self, group: list[Effects], report: CycleReport) -> None:
        for e in group:  # one policy's failure must not cost the others their writes
            self._guarded(e.key, e.snap, e.now, lambda: self._apply(e, report), report)

    def _apply(self, e: Effects, report: CycleReport) -> None:
        rt, snap, decision = e.rt, e.snap, e.decision
        if not self._write_patch(e.key, rt, snap, e.patch, report):
            return  # someone else moved the policy on: forget this decision, reload next cycle
        settle(rt, decision, e.governance, e.essential, e.checkpoint, e.now)
        if not self._finalizer(e, settled=False):  # held before traffic leaves the primary
            return
        later, held = self._route(rt, snap, e.routed, report, e.now)
        rt.outcomes = carry_out(self._apps, snap.namespace, e.intents, time.time,
                                on_write=lambda: self.metrics.api_write("Deployment"))
        if later or ready_changed(rt):
            retry = build_status(rt.status, replace(decision, audit=tuple(later)), rt.generation,
                                 e.moment, readiness(rt), None)
            self._write_status(e.key, rt, snap, retry, report)
        self._finalizer(e, settled=not rt.retry.failing)
        audit = rt.retry.hold(decision.audit, e.moment) if rt.retry.failing else decision.audit
        ref = ObjectRef(snap.name, snap.namespace, snap.uid)
        for record, moment in [*held, *((r, e.moment) for r in (*audit, *later))]:
            self.recorder.record(ref, record, moment)
            report.events += 1
        assert rt.compiled is not None
        self.metrics.observe_policy(snap.namespace, snap.name, rt.compiled.policy.tier_names,
                                    decision.active_tier, decision.fallback_ratio, (*decision.audit, *later))

    def _finalizer(self, e: Effects, settled: bool) -> bool:
        if self.releases.keep_finalizer(e.key, e.rt, e.snap.namespace, e.snap.name, settled):
            return True
        self.runtimes.pop(e.key, None)  # the policy changed underneath: reload next cycle
        return False

    def _route(self, rt: Runtime, snap: PolicySnapshot, decision: Decision, report: CycleReport, now: float,
               ) -> tuple[list[AuditRecord], list[tuple[AuditRecord, datetime]]]:
        """Apply the weights when they differ from what the routing is known to carry; a failed write is
        retried with back-off. Returns what to audit, and the Events held while the writes failed."""
        assert rt.compiled is not None
        if not must_route(rt, decision, now):
            return [], []
        if rt.backend is None:
            rt.backend = backend_for(self.api, rt.compiled.routing, rt.compiled.policy.tiers)
        try:
            changed = rt.backend.apply(snap.namespace, decision.weights)
        except WRITE_ERRORS as err:
            log.warning("routing write for %s/%s failed: %s", snap.namespace, snap.name, err)
            if not rt.retry.failed(*write_failure(err), now):
                return [], []
            return [AuditRecord(reason="RoutingFailed", message=f"{rt.retry.reason}: {rt.retry.message}")], []
        recovered = rt.retry.failing
        held = rt.retry.succeeded()
        rt.routed = decision.weights
        records = [r for r in (routed(rt, decision.weights, changed),) if r is not None]
        if changed:
            report.routing_writes += 1
            self.metrics.api_write(type(rt.backend).__name__)
        if recovered:
            records.append(AuditRecord(reason="RoutingRestored", message="The routing target accepts weights again."))
        return records, held

    def _repair(self, key: Hashable, report: CycleReport) -> None:
        """Write back the weights a drifted routing object lost (controller.routes). A failure is left to
        the policy's next evaluation, which routes again and reports it; the Event follows the write."""
        rt = self.runtimes.get(key)
        if rt is None or rt.backend is None or rt.routed is None or rt.route.drift is None or rt.retry.failing:
            return  # gone, put right by this cycle's own routing write, or left to the routing retry
        namespace, name = key  # type: ignore[misc]
        weights, rt.routed = rt.routed, None
        try:
            changed = rt.backend.apply(namespace, weights)
        except Exception as err:  # any failure: the next evaluation routes again, inside the error boundary
            log.warning("writing back the drifted routing of %s/%s failed: %s", namespace, name, err)
            return
        rt.routed = weights
        if changed:
            report.routing_writes += 1
            self.metrics.api_write(type(rt.backend).__name__)
        record = routed(rt, weights, changed)
        if record is not None:
            self.recorder.record(ObjectRef(name, namespace, rt.uid), record, datetime.now(timezone.utc))
            report.events += 1

    def _write_status(self, key: Hashable, rt: Runtime, snap: PolicySnapshot, status: dict[str, Any],
                      report: CycleReport) -> bool:
        return self._write_patch(key, rt, snap, status_patch(rt.status, status), report)

    def _write_patch(self, key: Hashable, rt: Runtime, snap: PolicySnapshot, patch: dict[str, Any] | None,
                     report: CycleReport) -> bool:
        if patch is None:
            return True
        patch["metadata"] = {"resourceVersion": rt.resource_version}
        try:
            written = self._custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, snap.namespace, PLURAL, snap.name, patch)
        except ApiException as err:
            if err.status in (404, 409):
                report.conflicts += 1
                self.runtimes.pop(key, None)
                return False
            raise
        report.status_writes += 1
        self.metrics.api_write("FallbackPolicyStatus")
        body = written if isinstance(written, dict) else written.to_dict()
        rt.set_status(body.get("status") or {})  # the API server answers a status patch with the object
        rt.resource_version = body["metadata"]["resourceVersion"]
        rt.finalizers = tuple(body["metadata"].get("finalizers") or ())
        return True
