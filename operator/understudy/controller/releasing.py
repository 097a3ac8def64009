"""The controller's side of letting go (see `release`): when a policy lets go, the releases still to be
carried out, and the finalizer kept in step with what the policy holds.

The writer calls it twice: `carry_out` once per cycle, before the decisions are written (the deleted
policies our finalizer holds, the new generations that switch a policy to Observe or to another routing
object, and the releases still due after a failure); and `keep_finalizer` around each policy's routing
write, so the finalizer is added before traffic leaves the primary and removed only once nothing is held
and the routing carries the decision.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Hashable, Mapping

from kubernetes.client import ApiClient, CustomObjectsApi
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from understudy.audit.events import EventRecorder, ObjectRef
from understudy.controller.release import (
    DELETED,
    FINALIZER,
    OBSERVE,
    Holder,
    cause,
    holds,
    routed_weights,
    scaled_tiers,
)
from understudy.controller.compile import Compiled
from understudy.controller.releaser import GROUP, PLURAL, VERSION, Letting, Releaser, set_finalizer
from understudy.controller.runtime import Plan, Runtime
from understudy.controller.store import PolicySnapshot
from understudy.engine.model import AuditRecord, Mode
from understudy.routing import backend_for

log = logging.getLogger(__name__)


def holder(snap: PolicySnapshot, compiled: Compiled) -> Holder:
    return Holder(snap.namespace, snap.name, snap.uid, compiled.policy, compiled.routing, compiled.release)


@dataclass
class Releases:
    """Releases in progress: of a new generation by policy key, of a deleted policy by uid."""

    api: ApiClient
    recorder: EventRecorder
    runtimes: dict[Hashable, Runtime]
    pending: dict[Hashable, Letting] = field(default_factory=dict)
    released: set[str] = field(default_factory=set)
    """uids of deleted policies released whose finalizer is still to be removed."""

    def __post_init__(self) -> None:
        self.releaser = Releaser(self.api)
        self._custom = CustomObjectsApi(self.api)

    def carry_out(self, plan: Plan, now: float) -> None:
        """One cycle's releases, made before its decisions are written."""
        for _, snap, compiled in plan.deleting:
            self._deleting(snap, compiled, now)
        for key, snap, old, new in plan.lettings:
            self._letting_go(key, holder(snap, old), holder(snap, new), snap.status)
        for key in [k for k in self.pending if k not in self.runtimes]:  # gone, or being deleted
            self.releaser.forget(self.pending.pop(key).uid)
        self._run(now)

    def keep_finalizer(self, key: Hashable, rt: Runtime, namespace: str, name: str, settled: bool) -> bool:
        """Add the finalizer while the policy holds something (or a release of it is pending); remove it once
        it holds nothing and its routing is `settled`. False: the policy changed underneath (404/409), the
        caller drops this decision."""
        assert rt.compiled is not None
        if rt.finalizer_forbidden:
            return True
        # a policy that does not own its route (RouteConflict) never routed: it holds nothing to give back
        enforcing = rt.compiled.policy.mode is Mode.ENFORCE and rt.route.conflict is None
        want = holds(rt.status, enforcing) or key in self.pending
        if not want and not settled:
            return True
        try:
            written = set_finalizer(self._custom, namespace, name, rt.finalizers, want, rt.resource_version)
        except ApiException as err:
            if err.status in (404, 409):
                return False
            if err.status != 403:
                raise
            log.warning("the operator may not patch FallbackPolicy %s/%s, so it cannot hold the finalizer %s: "
                        "traffic is still moved, but a deletion will not wait for its release (grant patch on "
                        "fallbackpolicies, as the chart does)", namespace, name, FINALIZER)
            rt.finalizer_forbidden = True
            return True
        if written is not None:
            rt.finalizers = tuple(written["metadata"].get("finalizers") or ())
            rt.resource_version = written["metadata"]["resourceVersion"]
        return True

    def _deleting(self, snap: PolicySnapshot, compiled: Compiled | None, now: float) -> None:
        """A deleted policy held by our finalizer: release as its spec says, then let the deletion finish.
        A spec the models reject (`compiled` None) cannot be restored: the finalizer just goes."""
        if compiled is not None and snap.uid not in self.released:
            if not self.releaser.due(snap.uid, now):
                return
            who = holder(snap, compiled)
            status = snap.status
            enforce = who.policy.mode is Mode.ENFORCE  # an Observe policy never routed: its routing stays
            backend = backend_for(self.api, who.routing, who.policy.tiers) if enforce else None
            job = Letting(snap.namespace, snap.name, snap.uid, who.release, DELETED, who.routing, backend,
                          who.policy.tiers, routed_weights(status), scaled_tiers(status))
            outcome = self.releaser.release(job, now)
            if outcome.post:
                self._post(job, outcome.record, now)
            if not outcome.done:
                return
            self.released.add(snap.uid)
        try:
            set_finalizer(self._custom, snap.namespace, snap.name, snap.finalizers, False, snap.resource_version)
        except (ApiException, HTTPError) as err:
            status_code = err.status if isinstance(err, ApiException) else None
            if status_code not in (404, 409):  # 409: a newer snapshot is on its way; 404: already gone
                log.warning("removing the finalizer of %s/%s failed: %s", snap.namespace, snap.name, err)
            if status_code != 404:
                return
        self.released.discard(snap.uid)

    def _letting_go(self, key: Hashable, old: Holder, new: Holder, status: Mapping[str, Any]) -> None:
        """A new generation: queue the release of what the old one routed, if it lets go of something."""
        why = cause(old, new)
        if why is None or not holds(status, enforce=True):
            return
        scaled = scaled_tiers(status) if why == OBSERVE else {}
        backend = backend_for(self.api, old.routing, old.policy.tiers)
        self.pending[key] = Letting(new.namespace, new.name, new.uid, new.release, why, old.routing, backend,
                                    old.policy.tiers, routed_weights(status), scaled)

    def _run(self, now: float) -> None:
        """Carry out the releases due; a policy that let go of its scaled tiers forgets them in status."""
        for key, job in list(self.pending.items()):
            if not self.releaser.due(job.uid, now):
                continue
            outcome = self.releaser.release(job, now)
            if outcome.post:
                self._post(job, outcome.record, now)
            if not outcome.done:
                continue
            del self.pending[key]
            rt = self.runtimes.get(key)
            if job.scaled and rt is not None and not self._clear_scaled(job, rt):
                self.runtimes.pop(key, None)

    def _clear_scaled(self, job: Letting, rt: Runtime) -> bool:
        """Drop status.scaledTiers after their release (guarded by the resourceVersion; False on 404/409)."""
        patch = {"status": {"scaledTiers": None}, "metadata": {"resourceVersion": rt.resource_version}}
        try:
            written = self._custom.patch_namespaced_custom_object_status(GROUP, VERSION, job.namespace, PLURAL,
                                                                         job.name, patch)
        except ApiException as err:
            if err.status in (404, 409):
                return False
            raise
        body = written if isinstance(written, dict) else dict(written.to_dict())
        rt.set_status(body.get("status") or {})
        rt.resource_version = body["metadata"]["resourceVersion"]
        rt.governance = replace(rt.governance, scaled=(), scaling=())  # given back: nothing left to scale back
        return True

    def _post(self, job: Letting, record: AuditRecord, now: float) -> None:
        self.recorder.record(ObjectRef(job.name, job.namespace, job.uid), record,
                             datetime.fromtimestamp(now, timezone.utc))
