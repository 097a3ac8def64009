"""Carrying out one release (see `release`): the routing object back to the primary and the scaled-up
fallbacks back to their replicas, or nothing at all for `Leave`; and the finalizer's guarded patch."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from kubernetes.client import ApiClient, AppsV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from understudy.api.models import API_VERSION, Release
from understudy.controller.release import DELETED, all_primary, describe, finalizers_with
from understudy.engine.model import AuditRecord, Tier
from understudy.kube.scale import set_replicas
from understudy.routing import RoutingBackend, RoutingTarget, RoutingTargetError

log = logging.getLogger(__name__)

GROUP, VERSION = API_VERSION.split("/")
PLURAL = "fallbackpolicies"
MAX_ATTEMPTS = 3
"""Failed releases of a deleted policy before its finalizer is removed anyway."""
RETRY_SECONDS = 2.0
"""Pause after the first failed attempt to release, doubled after each further one, at most MAX_RETRY_SECONDS."""
MAX_RETRY_SECONDS = 300.0


def set_finalizer(custom: CustomObjectsApi, namespace: str, name: str, finalizers: Sequence[str], present: bool,
                  resource_version: str) -> dict[str, Any] | None:
    """Add or remove ours, guarded by the resourceVersion last seen (a 409 means: read again).

    Returns the policy as written, or None when nothing had to be written.
    """
    wanted = finalizers_with(finalizers, present)
    if wanted is None:
        return None
    body = {"metadata": {"finalizers": wanted, "resourceVersion": resource_version}}
    written = custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, body)
    return written if isinstance(written, dict) else dict(written.to_dict())


@dataclass(frozen=True)
class Letting:
    """One policy letting go of one routing object and of the replicas it scaled up."""

    namespace: str
    name: str
    uid: str
    choice: Release
    cause: str
    target: RoutingTarget
    backend: RoutingBackend | None
    """None: the routing is not to be touched (the policy did not route, e.g. it was in Observe)."""
    tiers: tuple[Tier, ...]
    routed: tuple[tuple[str, int], ...]
    """The weights the policy last routed (status.weights), for the message."""
    scaled: Mapping[str, tuple[int, int | None]]
    """Tier name -> (the replicas it had before the policy scaled it up, the replicas the policy set), from
    status.scaledTiers (see `scaled_tiers`)."""


@dataclass(frozen=True)
class Outcome:
    record: AuditRecord
    done: bool
    """True: nothing more will be tried (released, left, or given up): the finalizer may go."""
    post: bool = True
    """False for a repeated failure: one ReleaseFailed Event per episode (and one when giving up)."""


@dataclass
class Releaser:
    """Carries out releases and counts each policy's failed attempts (by uid) so it can give up."""

    api: ApiClient
    failures: dict[str, tuple[int, float]] = field(default_factory=dict)
    """uid -> (failed attempts, when the next one is due)."""

    def __post_init__(self) -> None:
        self._apps = AppsV1Api(self.api)

    def due(self, uid: str, now: float) -> bool:
        return self.failures.get(uid, (0, 0.0))[1] <= now

    def release(self, job: Letting, now: float) -> Outcome:
        if job.choice is Release.LEAVE:
            self.failures.pop(job.uid, None)
            return Outcome(AuditRecord(reason="Released", message=self._left(job)), True)
        done: list[str] = []
        try:
            if job.backend is not None:
                job.backend.apply(job.namespace, all_primary(job.tiers))
                done.append(f"routed 100 % to the primary on {describe(job.target)}")
            done += self._scale_back(job)
        except (RoutingTargetError, ApiException, HTTPError) as err:
            return self._failed(job, err, done, now)
        self.failures.pop(job.uid, None)
        what = "; ".join(done) or "nothing was moved any more"
        return Outcome(AuditRecord(reason="Released", message=f"{job.cause.capitalize()} (spec.release: "
                                                               f"RestorePrimary): {what}."), True)

    def forget(self, uid: str) -> None:
        self.failures.pop(uid, None)

    def _scale_back(self, job: Letting) -> list[str]:
        done: list[str] = []
        for tier in job.tiers:
            if tier.name not in job.scaled:
                continue
            replicas, scaled_to = job.scaled[tier.name]
            try:
                set_replicas(self._apps, job.namespace, tier.deployment, replicas, scaled_to)
            except ApiException as err:
                if err.status == 404:
                    done.append(f"{tier.deployment} is gone")
                    continue
                if err.status == 422:  # the guard failed: someone else set the replicas since; theirs stand
                    done.append(f"left {tier.deployment} as someone else changed its replicas")
                    continue
                raise
            done.append(f"scaled {tier.deployment} back to {replicas} replicas")
        return done

    def _left(self, job: Letting) -> str:
        shares = ", ".join(f"{tier} {weight} %" for tier, weight in job.routed if weight) or "as it is"
        scaled = "; scaled-up Deployments keep their replicas" if job.scaled else ""
        return (f"{job.cause.capitalize()} (spec.release: Leave): traffic stays on {describe(job.target)} "
                f"({shares}){scaled}; nothing was changed.")

    def _failed(self, job: Letting, err: Exception, done: list[str], now: float) -> Outcome:
        attempts = self.failures.get(job.uid, (0, 0.0))[0] + 1
        why = str(err) if isinstance(err, RoutingTargetError) else _api_error(err)
        partial = f" (done so far: {'; '.join(done)})" if done else ""
        log.warning("release of %s/%s failed (attempt %d): %s", job.namespace, job.name, attempts, why)
        if job.cause == DELETED and attempts >= MAX_ATTEMPTS:
            self.failures.pop(job.uid, None)
            return Outcome(AuditRecord(reason="ReleaseFailed", message=(
                f"{job.cause.capitalize()}, but the primary could not be restored after {attempts} attempts: "
                f"{why}{partial}. The finalizer is removed so the deletion completes; traffic and replicas "
                f"may still be on the fallbacks.")), True)
        self.failures[job.uid] = (attempts, now + min(MAX_RETRY_SECONDS, RETRY_SECONDS * 2 ** (attempts - 1)))
        return Outcome(AuditRecord(reason="ReleaseFailed", message=(
            f"{job.cause.capitalize()}; restoring the primary failed (attempt {attempts}): {why}{partial}. "
            f"It is tried again with back-off.")), False, post=attempts == 1)


def _api_error(err: Exception) -> str:
    if isinstance(err, ApiException):
        return f"the API server answered {err.status} {err.reason}"
    return f"the API server could not be reached: {err}"
