"""Leader election on a coordination.k8s.io Lease.

kopf's peering only pauses other replicas; it does not elect one. Two replicas of Understudy therefore
both watch (a hot standby keeps its indexes warm) but only the holder of the Lease evaluates and writes.
Every write the leader makes is also guarded by resourceVersion, so a brief overlap of two leaders —
a paused holder that has not noticed it lost the Lease — cannot corrupt routing.
"""
from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from kubernetes.client import ApiClient, CoordinationV1Api
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeaseConfig:
    name: str
    namespace: str
    identity: str
    lease_seconds: int = 15
    renew_every: float = 2.0


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _rfc3339_micro(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(value: object) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


class LeaderElector:
    """Holds or waits for the Lease; `is_leader` is what the evaluation loop consults each cycle."""

    def __init__(self, api: ApiClient, config: LeaseConfig) -> None:
        self._api = CoordinationV1Api(api)
        self._config = config
        self._held_until: datetime | None = None

    @property
    def is_leader(self) -> bool:
        return self._held_until is not None and _now() < self._held_until

    def try_acquire_or_renew(self) -> bool:
        """One round of the protocol; returns whether this replica holds the Lease afterwards."""
        cfg = self._config
        now = _now()
        spec = {
            "holderIdentity": cfg.identity,
            "leaseDurationSeconds": cfg.lease_seconds,
            "renewTime": _rfc3339_micro(now),
        }
        try:
            lease = self._api.read_namespaced_lease(cfg.name, cfg.namespace, _preload_content=False)
        except ApiException as err:
            if err.status != 404:
                raise
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": cfg.name, "namespace": cfg.namespace},
                "spec": {**spec, "acquireTime": spec["renewTime"], "leaseTransitions": 0},
            }
            return self._write(lambda: self._api.create_namespaced_lease(cfg.namespace, body), now)
        current = json.loads(lease.data)
        held = current.get("spec") or {}
        holder = held.get("holderIdentity")
        renewed = _parse_time(held.get("renewTime"))
        duration = held.get("leaseDurationSeconds") or cfg.lease_seconds
        expired = renewed is None or renewed + timedelta(seconds=duration) < now
        if holder not in (cfg.identity, None, "") and not expired:
            self._held_until = None
            return False
        new_spec = dict(held)
        new_spec.update(spec)
        if holder != cfg.identity:
            new_spec["acquireTime"] = spec["renewTime"]
            new_spec["leaseTransitions"] = int(held.get("leaseTransitions") or 0) + 1
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": cfg.name,
                "namespace": cfg.namespace,
                "resourceVersion": current["metadata"]["resourceVersion"],
            },
            "spec": new_spec,
        }
        return self._write(lambda: self._api.replace_namespaced_lease(cfg.name, cfg.namespace, body), now)

    def _write(self, call: object, now: datetime) -> bool:
        try:
            call()  # type: ignore[operator]
        except ApiException as err:
            if err.status in (409, 422):
                # Someone else wrote first: we are not the leader this round.
                self._held_until = None
                return False
            raise
        # Stop acting a little before the Lease could be taken over, so two leaders never overlap by design.
        margin = max(self._config.renew_every, self._config.lease_seconds / 3)
        self._held_until = now + timedelta(seconds=self._config.lease_seconds - margin)
        return True

    async def run(self, stopped: asyncio.Event) -> None:
        while not stopped.is_set():
            was = self.is_leader
            try:
                now_leader = await asyncio.to_thread(self.try_acquire_or_renew)
            except Exception:  # the API server may be briefly unreachable; keep trying
                log.exception("leader election round failed")
                now_leader = self.is_leader
            if now_leader != was:
                log.info("leadership %s (identity %s)", "acquired" if now_leader else "lost", self._config.identity)
            try:
                await asyncio.wait_for(stopped.wait(), timeout=self._config.renew_every)
            except asyncio.TimeoutError:
                pass

    def release(self) -> None:
        """Give the Lease up on a clean shutdown so the standby takes over at once."""
        if not self.is_leader:
            return
        cfg = self._config
        try:
            self._api.patch_namespaced_lease(
                cfg.name, cfg.namespace, {"spec": {"holderIdentity": None, "renewTime": None}}
            )
        except ApiException:
            log.warning("could not release the Lease %s/%s", cfg.namespace, cfg.name)
        self._held_until = None
