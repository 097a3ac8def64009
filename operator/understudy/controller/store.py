"""Snapshots of the watched objects, as the kopf handlers keep them between cycles."""
from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from typing import Any, Mapping

from understudy.api.models import API_VERSION

GROUP, VERSION = API_VERSION.split("/")
PLURAL = "fallbackpolicies"


@dataclass(frozen=True, slots=True)
class PolicySnapshot:
    """What the kopf index keeps of one FallbackPolicy.

    Spec is kept as JSON text and status as compressed JSON (see `pack`): the loop parses them only when a
    policy is new or its generation changes, and at thousands of policies the nested dicts would cost ten
    times the memory.
    """

    namespace: str
    name: str
    uid: str
    generation: int
    resource_version: str
    spec_json: str
    status_packed: bytes
    created: float = 0.0
    """metadata.creationTimestamp as epoch seconds: a drill's first period counts from it."""
    deleting: bool = False
    """metadata.deletionTimestamp is set: the policy waits on its finalizers (see controller.release)."""
    finalizers: tuple[str, ...] = ()

    @classmethod
    def of(cls, namespace: str, name: str, uid: str, generation: int, resource_version: str,
           spec: Mapping[str, Any], status: Mapping[str, Any], created: float = 0.0, deleting: bool = False,
           finalizers: tuple[str, ...] = ()) -> PolicySnapshot:
        return cls(namespace, name, uid, generation, resource_version, _compact(spec), pack(status), created,
                   deleting, finalizers)

    @property
    def spec(self) -> dict[str, Any]:
        return dict(json.loads(self.spec_json))

    @property
    def status(self) -> dict[str, Any]:
        return unpack(self.status_packed)


def _compact(value: Mapping[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"))


def pack(value: Mapping[str, Any]) -> bytes:
    """Compressed JSON: a status with a full history and creep window is about 7.8 KB of text, 0.9 KB packed."""
    return zlib.compress(_compact(value).encode(), 1)


def unpack(packed: bytes) -> dict[str, Any]:
    return dict(json.loads(zlib.decompress(packed)))


@dataclass(frozen=True)
class DeploymentSnapshot:
    """What the kopf index keeps of one Deployment: enough for readiness, capacity and rollback."""

    ready: int
    desired: int
    revision: str | None


class Store:
    """The latest snapshot of every watched object, and a counter that moves whenever one changes."""

    def __init__(self) -> None:
        self.policies: dict[tuple[str, str], PolicySnapshot] = {}
        self.deployments: dict[tuple[str, str], DeploymentSnapshot] = {}
        self.changes = 0

    def put(self, into: dict[tuple[str, str], Any], key: tuple[str, str], value: Any, deleted: bool) -> None:
        if deleted:
            into.pop(key, None)
        else:
            into[key] = value
        self.changes += 1
