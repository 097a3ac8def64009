"""Leader election on a coordination.k8s.io Lease, trusting no clock but this replica's own.

kopf's peering only pauses other replicas; it does not elect one. Two replicas of Understudy therefore
both watch (a hot standby keeps its indexes warm) but only the holder of the Lease evaluates and writes.

Whether another replica's Lease has expired is judged as client-go judges it: by when THIS replica saw the
Lease record last change, on its own clock, plus the lease duration, never by the holder's `renewTime`
(written on the holder's clock, which may be off by any amount). A holder stops acting a margin before its
own lease could run out, also on its own clock, and the writer asks `may_write` before each batch of writes;
so two replicas act at once only if one clock runs faster than the other by more than that margin per lease
duration, not when they merely disagree on the time of day. Every write is also guarded by resourceVersion.
The clock is injected (`clock`, Unix seconds) so the rule is tested with clocks that disagree.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

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


def _rfc3339_micro(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _record(spec: dict[str, Any]) -> tuple[Any, ...]:
    """The parts of the Lease a holder changes when it renews (client-go's LeaderElectionRecord)."""
    return tuple(spec.get(k) for k in ("holderIdentity", "leaseDurationSeconds", "acquireTime", "renewTime",
                                       "leaseTransitions"))


class LeaderElector:
    """Holds or waits for the Lease; `may_write` is what the evaluation loop and the writer consult."""

    def __init__(self, api: ApiClient, config: LeaseConfig, clock: Callable[[], float] = time.time) -> None:
        self._api = CoordinationV1Api(api)
        self._config = config
        self._clock = clock
        self._held_until: float | None = None
        self._observed: tuple[tuple[Any, ...], float] | None = None
        """The Lease record last seen, and when (on this replica's clock) it was first seen so."""

    @property
    def is_leader(self) -> bool:
        return self._held_until is not None and self._clock() < self._held_until

    def may_write(self) -> bool:
        """Whether this replica may write now: asked before every batch of writes, not once per cycle."""
        return self.is_leader

    def _observe(self, spec: dict[str, Any], now: float) -> float:
        """When the record `spec` was first seen unchanged, noting it if it is new."""
        record = _record(spec)
        if self._observed is None or self._observed[0] != record:
            self._observed = (record, now)
        return self._observed[1]

    def try_acquire_or_renew(self) -> bool:
        """One round of the protocol; returns whether this replica holds the Lease afterwards."""
        cfg = self._config
        now = self._clock()
        spec = {"holderIdentity": cfg.identity, "leaseDurationSeconds": cfg.lease_seconds,
                "renewTime": _rfc3339_micro(now)}
        try:
            lease = self._api.read_namespaced_lease(cfg.name, cfg.namespace, _preload_content=False)
        except ApiException as err:
            if err.status != 404:
                raise
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": cfg.name, "namespace": cfg.namespace},
                    "spec": {**spec, "acquireTime": spec["renewTime"], "leaseTransitions": 0}}
            return self._write(lambda: self._api.create_namespaced_lease(cfg.namespace, body), body["spec"], now)
        current = json.loads(lease.data)
        held = current.get("spec") or {}
        holder = held.get("holderIdentity")
        seen_since = self._observe(held, now)
        duration = held.get("leaseDurationSeconds") or cfg.lease_seconds
        if holder not in (cfg.identity, None, "") and now < seen_since + duration:
            self._held_until = None
            return False
        new_spec = {**held, **spec}
        if holder != cfg.identity:
            new_spec["acquireTime"] = spec["renewTime"]
            new_spec["leaseTransitions"] = int(held.get("leaseTransitions") or 0) + 1
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": cfg.name, "namespace": cfg.namespace,
                             "resourceVersion": current["metadata"]["resourceVersion"]},
                "spec": new_spec}
        return self._write(lambda: self._api.replace_namespaced_lease(cfg.name, cfg.namespace, body), new_spec, now)

    def _write(self, call: Callable[[], object], spec: dict[str, Any], now: float) -> bool:
        try:
            call()
        except ApiException as err:
            if err.status in (409, 422):  # someone else wrote first: not the leader this round
                self._held_until = None
                return False
            raise
        self._observe(spec, now)
        # Stop acting a margin before the Lease could be taken over (counted from before the write was sent).
        margin = max(self._config.renew_every, self._config.lease_seconds / 3)
        self._held_until = now + self._config.lease_seconds - margin
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
            self._api.patch_namespaced_lease(cfg.name, cfg.namespace, {"spec": {"holderIdentity": None,
                                                                               "renewTime": None}})
        except ApiException:
            log.warning("could not release the Lease %s/%s", cfg.namespace, cfg.name)
        self._held_until = None
