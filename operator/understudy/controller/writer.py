"""Carries out a cycle's plan, per policy in this order: status (the fence) -> routing -> workload writes
(the engine's scale and rollback intents) -> Events.

1. status (with the engine's state) is written first, guarded by the policy's resourceVersion. It is the
   fencing token: a replica acting on stale state gets a 409, drops its decision and reloads.
2. routing is written next (itself guarded by the routing object's resourceVersion). A crash between 1
   and 2 is repaired on restart, because a fresh runtime re-applies the recorded weights.
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
from typing import Any, Hashable

from kubernetes.client import ApiClient, AppsV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from understudy.audit.events import EventRecorder, ObjectRef
from understudy.audit.metrics import OperatorMetrics
from understudy.audit.status import build_status, status_patch
from understudy.controller.runtime import (
    CycleReport,
    Effects,
    InvalidStatus,
    Plan,
    Runtime,
    must_route,
    readiness,
    settle,
)
from understudy.controller.store import GROUP, PLURAL, VERSION, PolicySnapshot
from understudy.controller.workloads import carry_out
from understudy.engine import AuditRecord, Decision
from understudy.routing import RoutingTargetError, backend_for

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
    _writers: ThreadPoolExecutor = field(init=False)

    def __post_init__(self) -> None:
        self._custom = CustomObjectsApi(self.api)
        self._apps = AppsV1Api(self.api)
        self._writers = ThreadPoolExecutor(max_workers=self.write_workers, thread_name_prefix="understudy-write")

    def close(self) -> None:
        self._writers.shutdown(wait=True)

    def carry_out(self, plan: Plan, report: CycleReport) -> None:
        for invalid in plan.invalid:
            self._write_invalid(invalid, report)
        self._apply_all(plan.effects, report)

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
        for e in group:
            try:
                self._apply(e, report)
            except Exception:  # one policy's unexpected API error must not cost the others their writes
                log.exception("writing the decision for %s/%s failed; the next evaluation retries",
                              e.snap.namespace, e.snap.name)
                self.runtimes.pop(e.key, None)

    def _apply(self, e: Effects, report: CycleReport) -> None:
        rt, snap, decision = e.rt, e.snap, e.decision
        if not self._write_patch(e.key, rt, snap, e.patch, report):
            return  # someone else moved the policy on: forget this decision, reload next cycle
        settle(rt, decision, e.governance, e.essential, e.checkpoint, e.now)
        later = self._route(rt, snap, e.routed, report)
        rt.outcomes = carry_out(self._apps, snap.namespace, e.intents, time.time,
                                on_write=lambda: self.metrics.api_write("Deployment"))
        if later:
            retry = build_status(rt.status, replace(decision, audit=tuple(later)), rt.generation,
                                 e.moment, readiness(rt), None)
            self._write_status(e.key, rt, snap, retry, report)
        ref = ObjectRef(snap.name, snap.namespace, snap.uid)
        for record in (*decision.audit, *later):
            self.recorder.record(ref, record, e.moment)
            report.events += 1
        assert rt.compiled is not None
        self.metrics.observe_policy(snap.namespace, snap.name, rt.compiled.policy.tier_names,
                                    decision.active_tier, decision.fallback_ratio, (*decision.audit, *later))

    def _route(self, rt: Runtime, snap: PolicySnapshot, decision: Decision, report: CycleReport) -> list[AuditRecord]:
        """Apply the weights when they differ from what the routing is known to carry."""
        assert rt.compiled is not None
        if not must_route(rt, decision):
            return []
        if rt.backend is None:
            rt.backend = backend_for(self.api, rt.compiled.routing, rt.compiled.policy.tiers)
        try:
            changed = rt.backend.apply(snap.namespace, decision.weights)
        except RoutingTargetError as err:
            first = rt.routing_error != str(err)
            rt.routing_error = str(err)
            if not first:
                return []
            return [AuditRecord(reason="RoutingFailed", message=f"{err.reason}: {err.message}")]
        except ApiException as err:
            log.warning("routing write for %s/%s failed: %s", snap.namespace, snap.name, err.reason)
            return []
        recovered = rt.routing_error is not None
        rt.routing_error = None
        rt.routed = decision.weights
        if changed:
            report.routing_writes += 1
            self.metrics.api_write(type(rt.backend).__name__)
        if recovered:
            return [AuditRecord(reason="RoutingRestored", message="The routing target accepts weights again.")]
        return []

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
        return True
