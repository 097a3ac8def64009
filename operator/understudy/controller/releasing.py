"""The controller's side of letting go (see `release`): when a policy lets go, the releases still to be
carried out, and the finalizer kept in step with what the policy holds.

The controller calls this module at four points, all in the writing phase: `deleting` for a policy whose
deletion waits on our finalizer; `letting_go` when a new generation switches a policy to Observe or to
another routing object; `run` once per cycle for releases still due; and `finalizer_write` after each
status write, so the finalizer is added before traffic leaves the primary and removed only once nothing
is held any more.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Hashable, Mapping, Sequence

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
    finalizer_due,
    holds,
    routed_weights,
    scaled_tiers,
)
from understudy.controller.releaser import GROUP, PLURAL, VERSION, Letting, Releaser, set_finalizer
from understudy.engine.model import AuditRecord, Mode
from understudy.routing import backend_for

log = logging.getLogger(__name__)


@dataclass
class Releases:
    """Releases in progress, by policy key; a deleted policy's by uid until its finalizer is gone."""

    api: ApiClient
    recorder: EventRecorder
    pending: dict[Hashable, Letting] = field(default_factory=dict)
    released: set[str] = field(default_factory=set)
    """uids of deleted policies released whose finalizer is still to be removed."""
    forbidden: set[Hashable] = field(default_factory=set)
    """Policies whose finalizer the operator may not write (its Role lacks patch on fallbackpolicies):
    failover goes on without it, and nobody is asked again until the operator restarts."""

    def __post_init__(self) -> None:
        self.releaser = Releaser(self.api)
        self._custom = CustomObjectsApi(self.api)

    def holding(self, key: Hashable) -> bool:
        """Whether a release for this policy is still to be carried out (the finalizer must stay)."""
        return key in self.pending

    def finalizer_due(self, key: Hashable, finalizers: Sequence[str], status: Mapping[str, Any], enforce: bool,
                      settled: bool) -> bool:
        """Whether `finalizer_write` has something to write: lets a quiet policy skip building its status."""
        return key not in self.forbidden and finalizer_due(finalizers, status, enforce, settled, self.holding(key))

    def deleting(self, who: Holder | None, namespace: str, name: str, uid: str, finalizers: Sequence[str],
                 resource_version: str, status: Mapping[str, Any], now: float) -> None:
        """A deleted policy held by our finalizer: release as its spec says, then let the deletion finish.

        `who` None: a spec the models reject; nothing can be restored, the finalizer just goes.
        """
        if FINALIZER not in finalizers:
            return
        if who is not None and uid not in self.released:
            if not self.releaser.due(uid, now):
                return
            enforce = who.policy.mode is Mode.ENFORCE  # an Observe policy never routed: its routing stays
            backend = backend_for(self.api, who.routing, who.policy.tiers) if enforce else None
            job = Letting(namespace, name, uid, who.release, DELETED, who.routing, backend,
                          who.policy.tiers, routed_weights(status), scaled_tiers(status))
            outcome = self.releaser.release(job, now)
            if outcome.post:
                self._post(namespace, name, uid, outcome.record, now)
            if not outcome.done:
                return
            self.released.add(uid)
        try:
            set_finalizer(self._custom, namespace, name, finalizers, False, resource_version)
        except (ApiException, HTTPError) as err:
            status = err.status if isinstance(err, ApiException) else None
            if status not in (404, 409):  # 409: a newer snapshot is on its way; 404: already gone
                log.warning("removing the finalizer of %s/%s failed: %s", namespace, name, err)
            if status != 404:
                return
        self.released.discard(uid)

    def letting_go(self, key: Hashable, old: Holder, new: Holder, status: Mapping[str, Any]) -> None:
        """A new generation: queue the release of what the old one routed, if it lets go of something."""
        why = cause(old, new)
        if why is None or not holds(status, enforce=True):
            return
        scaled = scaled_tiers(status) if why == OBSERVE else {}
        backend = backend_for(self.api, old.routing, old.policy.tiers)
        self.pending[key] = Letting(new.namespace, new.name, new.uid, new.release, why, old.routing, backend,
                                    old.policy.tiers, routed_weights(status), scaled)

    def run(self, now: float) -> list[Hashable]:
        """Carry out the releases due; returns the keys of policies whose scaled tiers were let go of
        (their status.scaledTiers is to be cleared, see `clear_scaled`)."""
        cleared: list[Hashable] = []
        for key, job in list(self.pending.items()):
            if not self.releaser.due(job.uid, now):
                continue
            outcome = self.releaser.release(job, now)
            if outcome.post:
                self._post(job.namespace, job.name, job.uid, outcome.record, now)
            if outcome.done:
                del self.pending[key]
                if job.scaled:
                    cleared.append(key)
        return cleared

    def forget(self, key: Hashable) -> None:
        """The policy is gone, deleting or replaced: no release of a new generation of it is pending any more
        (a deletion's own release goes on through `deleting`)."""
        job = self.pending.pop(key, None)
        if job is not None:
            self.releaser.forget(job.uid)

    def finalizer_write(self, key: Hashable, namespace: str, name: str, finalizers: Sequence[str],
                        status: Mapping[str, Any], enforce: bool, settled: bool,
                        resource_version: str) -> dict[str, Any] | None:
        """Add the finalizer when the policy holds something, remove it once it holds nothing and its routing
        is settled (`settled`: the routing carries the decision). Returns the written object, or None."""
        want = holds(status, enforce) or self.holding(key)
        if (not want and not settled) or key in self.forbidden:
            return None
        try:
            return set_finalizer(self._custom, namespace, name, finalizers, want, resource_version)
        except ApiException as err:
            if err.status != 403:
                raise
        log.warning("the operator may not patch FallbackPolicy %s/%s, so it cannot hold the finalizer %s: "
                    "traffic is still moved, but a deletion will not wait for its release (grant patch on "
                    "fallbackpolicies, as the chart does)", namespace, name, FINALIZER)
        self.forbidden.add(key)
        return None

    def clear_scaled(self, namespace: str, name: str, resource_version: str) -> dict[str, Any]:
        """Drop status.scaledTiers after their release (guarded; the written object is returned)."""
        patch = {"status": {"scaledTiers": None}, "metadata": {"resourceVersion": resource_version}}
        written = self._custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, name, patch)
        return written if isinstance(written, dict) else dict(written.to_dict())

    def _post(self, namespace: str, name: str, uid: str, record: AuditRecord, now: float) -> None:
        self.recorder.record(ObjectRef(name, namespace, uid), record, datetime.fromtimestamp(now, timezone.utc))
